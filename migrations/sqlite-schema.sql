-- The schema the migrations in migrations/sqlite make, as SQLite keeps it:
-- what a new database file gets in one step (src/store/lite.rs) while the
-- migrations are exactly those listed below. Generated; do not edit. After
-- adding or changing a migration, make it again with
--   CALL_ROUTER_WRITE_SCHEMA=1 cargo test --lib squashed_schema
-- migration 1 d57d980dda887eda3ba2f9b92b389bf6745512af78e0cff42b8cb8714168e551be615fe25516d95e826d18c9a4b9b024
-- migration 2 e7dbb5a9e9f5b8f3576ba719468a7bed99d623dca7cb4b5feb99e6ab30b6a1091013a423925bb884317c3043aff476b4
-- migration 3 b31dcf9d8237d69ce0188d1094a69ad63769d804468ad4419c7259eb0bddfcf4cc59864d3adc6ff46ad5bcc5ac321209
-- migration 4 ff11e8adfe5ec54df8a52d2598abdd555050574cdd20396bf1e78aefef7ed1455a39a73644adfd9c528b3b5331cb2cc1
-- migration 5 8cb3b6f2d43d011c7e45964e2171c2929c1c0ea73ec266cf6522837d1e0aaec6b58207dc043abc03e81ddb8da4601d50
-- migration 6 7155c715116ad9e77e3336188c874fedf1846ba4375dd96891b01f7fb418cdb1e3b4ebccf1f315ed635c8badf4d54218
-- migration 7 03625df4400220d1e7fac021482e31e5fc0da8a66182458829d33a1bf616a9b9cbd83c1cb49639d5377dcc2b25a88aab
-- migration 8 b4070cefcdb51c293afdc8411b3ea67d644d871f565256695704d5eafdaf6dc389ef3f62c8098b6481cc6c1a793a77b2
-- migration 9 b5cd72b4a16db4821a4f1382f7e3921d941d96766915393da999dbfcb4c705024b0e559b740e0dcf28d3888218b329b6
-- migration 10 fe3738fb09ef6a0cdfb358eb7c5580c16b3ad43730767e38db436257a72eb538bbe26f67455797dc7a6733999e7d11bd
-- migration 11 9c74090ea5fd26f36bf0a252881b39e893e58caef4023c0ff2853bf58f863af849aa113817130abba70f558ad29757cb
-- migration 12 89b3c3c91c7b85202665b0c711637a39a0f2ccac1e1a90665cd9870abfd8fbd77af4324f9746108fa54ab26530a57667

CREATE TABLE locations (
    name          TEXT PRIMARY KEY,
    spec_json     TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE location_numbers (
    number   TEXT NOT NULL,
    location TEXT NOT NULL REFERENCES locations(name) ON DELETE CASCADE,
    PRIMARY KEY (number, location)
);

CREATE TABLE twilio_resources (
    kind          TEXT NOT NULL,
    key           TEXT NOT NULL,
    sid           TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);

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

CREATE TABLE events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    source         TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    resource_sid   TEXT,
    payload        TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL
);

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
, not_before_ms BIGINT NOT NULL DEFAULT 0, journey_id BIGINT, lease_owner TEXT, lease_until_ms BIGINT);

CREATE TABLE journeys (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    state_json    TEXT NOT NULL,
    version       BIGINT NOT NULL,
    wake_at_ms    BIGINT,
    closed        BIGINT NOT NULL DEFAULT 0,
    degraded      BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
, location TEXT, caller_state TEXT, waiting_since_ms BIGINT);

CREATE TABLE leases (
    name     TEXT PRIMARY KEY,
    owner    TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);

CREATE TABLE voicemails (
    recording_sid        TEXT PRIMARY KEY,
    call_sid             TEXT NOT NULL,
    caller               TEXT NOT NULL,
    location             TEXT,
    duration_secs        BIGINT,
    recorded_at_ms       BIGINT NOT NULL,
    recording_url        TEXT NOT NULL,
    transcription        TEXT,
    transcription_status TEXT,
    listened_at_ms       BIGINT
, kind TEXT NOT NULL DEFAULT 'recording', waiting_since_ms BIGINT);

CREATE TABLE "journey_keys" (
    sid        TEXT PRIMARY KEY,
    journey_id BIGINT NOT NULL
) WITHOUT ROWID;

CREATE INDEX call_statuses_call ON call_statuses (call_sid);

CREATE INDEX journeys_wake ON journeys (wake_at_ms);

CREATE INDEX journeys_open ON journeys (closed, updated_at_ms);

CREATE INDEX outbox_claim ON outbox (state, kind, not_before_ms);

CREATE INDEX outbox_sending ON outbox (lease_until_ms) WHERE state = 'sending';

CREATE INDEX calls_started ON calls (created_at_ms, call_sid);

CREATE INDEX calls_location_started ON calls (location, created_at_ms);

CREATE INDEX events_resource ON events (resource_sid);

CREATE INDEX outbox_journey ON outbox (journey_id);

CREATE INDEX voicemails_recorded ON voicemails (recorded_at_ms, recording_sid);

CREATE INDEX voicemails_location ON voicemails (location, recorded_at_ms);

CREATE INDEX voicemails_call ON voicemails (call_sid);

CREATE INDEX journeys_waiting ON journeys (location, caller_state, waiting_since_ms) WHERE closed = 0;
