-- A waiting caller's place in the queue; as migrations/sqlite/0007_waiting.sql:
-- when each journey's caller began to wait, out of state_json
-- (src/journey/state.rs, Waiting), STORED as PostgreSQL requires, and an
-- index over the open journeys of a location by caller state and that time.
ALTER TABLE journeys ADD COLUMN waiting_since_ms BIGINT
    GENERATED ALWAYS AS ((((state_json::jsonb) -> 'wait') ->> 'since_ms')::bigint) STORED;
CREATE INDEX journeys_waiting ON journeys (location, caller_state, waiting_since_ms) WHERE closed = 0;
