-- The history API's reads (src/store/history.rs), each on an index: calls
-- newest first (filters are checked along that scan), today's calls of a
-- location, a call's webhooks by the SIDs they name, a journey's commands.
CREATE INDEX calls_started ON calls (created_at_ms, call_sid);
CREATE INDEX calls_location_started ON calls (location, created_at_ms);
CREATE INDEX events_resource ON events (resource_sid);
CREATE INDEX outbox_journey ON outbox (journey_id);
