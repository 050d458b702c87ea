-- What the metrics' live gauges count, readable without loading journeys;
-- as migrations/sqlite/0003_journey_gauges.sql: the location and the
-- caller's state (src/journey/state.rs, CallerState, in snake_case) out of
-- state_json. PostgreSQL has only STORED generated columns: computed when a
-- journey is written.
ALTER TABLE journeys ADD COLUMN location TEXT
    GENERATED ALWAYS AS ((state_json::jsonb) ->> 'location') STORED;
ALTER TABLE journeys ADD COLUMN caller_state TEXT
    GENERATED ALWAYS AS ((state_json::jsonb) -> 'caller' ->> 'state') STORED;
