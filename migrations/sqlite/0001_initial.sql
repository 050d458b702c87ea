-- call-router schema, SQLite flavour. Types are limited to what sqlx's Any
-- driver maps (integer, text), and times are milliseconds since the Unix
-- epoch, so the queries run unchanged on PostgreSQL.

CREATE TABLE locations (
    name          TEXT PRIMARY KEY,
    spec_json     TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Which Twilio numbers serve which locations.
CREATE TABLE location_numbers (
    number   TEXT NOT NULL,
    location TEXT NOT NULL REFERENCES locations(name) ON DELETE CASCADE,
    PRIMARY KEY (number, location)
);

-- SIDs of the Twilio resources provision created or adopted: kind is
-- workspace, workflow, activity, queue, worker or number; key names it.
CREATE TABLE twilio_resources (
    kind          TEXT NOT NULL,
    key           TEXT NOT NULL,
    sid           TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);

-- One row per inbound call: the caller's journey and how it ended.
CREATE TABLE calls (
    call_sid          TEXT PRIMARY KEY,
    from_number       TEXT NOT NULL,
    to_number         TEXT NOT NULL,
    location          TEXT,
    task_sid          TEXT,
    reservation_sid   TEXT,
    outbound_call_sid TEXT,
    answered_by       TEXT,
    recording_url     TEXT,
    outcome           TEXT NOT NULL,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL
);
CREATE INDEX calls_outbound ON calls (outbound_call_sid);
CREATE INDEX calls_task ON calls (task_sid);

-- Every status callback of an outbound leg.
CREATE TABLE call_statuses (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    call_sid          TEXT NOT NULL,
    inbound_call_sid  TEXT,
    status            TEXT NOT NULL,
    sequence_number   BIGINT,
    call_duration     BIGINT,
    answered_by       TEXT,
    sip_response_code BIGINT,
    received_at_ms    BIGINT NOT NULL
);
CREATE INDEX call_statuses_call ON call_statuses (call_sid);

-- Raw webhook events, for audit.
CREATE TABLE events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    source         TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    resource_sid   TEXT,
    payload        TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL
);

-- Intents to call Twilio, written in the same transaction as the event that
-- caused them and carried out afterwards. dedupe_key makes each intent
-- happen at most once (one dial per reservation).
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key    TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    result        TEXT,
    last_error    TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX outbox_state ON outbox (state);
