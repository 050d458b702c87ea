-- The journeys' location, caller_state and waiting_since_ms become ordinary
-- columns, written with state_json by the store (src/store/journeys.rs, from
-- the journey itself) instead of generated from it; as
-- migrations/sqlite/0011_journey_columns_written.sql. STORED, each write cast
-- the whole of state_json to jsonb three times. Rows keep their values, and
-- journeys_waiting its entries.
ALTER TABLE journeys ALTER COLUMN location DROP EXPRESSION;
ALTER TABLE journeys ALTER COLUMN caller_state DROP EXPRESSION;
ALTER TABLE journeys ALTER COLUMN waiting_since_ms DROP EXPRESSION;
