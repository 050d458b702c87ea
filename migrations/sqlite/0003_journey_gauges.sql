-- What the metrics' live gauges count, readable without loading journeys:
-- the location and the caller's state (src/journey/state.rs, CallerState, in
-- snake_case) out of state_json. VIRTUAL: computed when read, so writing a
-- journey costs nothing more; no index, so nothing is kept up to date either.
ALTER TABLE journeys ADD COLUMN location TEXT
    GENERATED ALWAYS AS (json_extract(state_json, '$.location')) VIRTUAL;
ALTER TABLE journeys ADD COLUMN caller_state TEXT
    GENERATED ALWAYS AS (json_extract(state_json, '$.caller.state')) VIRTUAL;
