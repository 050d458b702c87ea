-- Voicemails: one row per recording a caller left (the <Record> action's
-- RecordingSid), with the transcription when the location asks for one.
-- recording_url stays on the server: the API streams the audio through
-- with the account's credentials and never shows the URL.
-- (0005 is another change's number; sqlx applies versions it has not seen
-- whatever their order.)
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
);
-- Newest first, by location, unlistened: the API's lists.
CREATE INDEX voicemails_recorded ON voicemails (recorded_at_ms, recording_sid);
CREATE INDEX voicemails_location ON voicemails (location, recorded_at_ms);
CREATE INDEX voicemails_call ON voicemails (call_sid);
