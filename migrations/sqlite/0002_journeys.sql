-- The journey of each inbound call (src/journey.rs), kept between events.
-- state_json is the whole state machine; version counts its writes (an
-- optimistic check for several writers later); wake_at_ms is when it wants
-- a Tick; closed journeys expect nothing more; degraded ones owe a command
-- the dispatcher gave up on.
CREATE TABLE journeys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    state_json    TEXT NOT NULL,
    version       BIGINT NOT NULL,
    wake_at_ms    BIGINT,
    closed        BIGINT NOT NULL DEFAULT 0,
    degraded      BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX journeys_wake ON journeys (wake_at_ms);
CREATE INDEX journeys_open ON journeys (closed, updated_at_ms);

-- Every SID that routes an event to a journey: the caller's call, the task,
-- each reservation and each location leg.
CREATE TABLE journey_keys (
    sid        TEXT PRIMARY KEY,
    journey_id BIGINT NOT NULL
);

-- Retries wait in the outbox instead of in a dispatcher slot.
ALTER TABLE outbox ADD COLUMN not_before_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN journey_id BIGINT;
CREATE INDEX outbox_claim ON outbox (state, kind, not_before_ms);
