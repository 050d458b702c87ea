-- The journeys' location, caller_state and waiting_since_ms (migrations 0003
-- and 0007) become ordinary columns, written with state_json by the store
-- (src/store/journeys.rs, from the journey itself) instead of generated from
-- it: as VIRTUAL columns under the partial index journeys_waiting, every
-- write of an open journey parsed its whole state_json three times for the
-- new index entry, and an update three times more for the old one, on the
-- writer's thread. Rows already here keep the values they had.
DROP INDEX journeys_waiting;
ALTER TABLE journeys DROP COLUMN waiting_since_ms;
ALTER TABLE journeys DROP COLUMN caller_state;
ALTER TABLE journeys DROP COLUMN location;
ALTER TABLE journeys ADD COLUMN location TEXT;
ALTER TABLE journeys ADD COLUMN caller_state TEXT;
ALTER TABLE journeys ADD COLUMN waiting_since_ms BIGINT;
UPDATE journeys SET
    location = json_extract(state_json, '$.location'),
    caller_state = json_extract(state_json, '$.caller.state'),
    waiting_since_ms = json_extract(state_json, '$.wait.since_ms');
CREATE INDEX journeys_waiting ON journeys (location, caller_state, waiting_since_ms) WHERE closed = 0;
