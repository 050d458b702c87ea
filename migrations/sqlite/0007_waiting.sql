-- A waiting caller's place in the queue (src/store/waiting.rs): when each
-- journey's caller began to wait, out of state_json (src/journey/state.rs,
-- Waiting), and an index over the open journeys of a location by caller
-- state and that time, so counting the callers ahead of one reads only
-- those.
ALTER TABLE journeys ADD COLUMN waiting_since_ms BIGINT
    GENERATED ALWAYS AS (json_extract(state_json, '$.wait.since_ms')) VIRTUAL;
CREATE INDEX journeys_waiting ON journeys (location, caller_state, waiting_since_ms) WHERE closed = 0;
