-- Callback requests in the voicemail list: a callback still waiting at
-- closing time, by the location's policy (`at_closing = "voicemail_list"`),
-- ends there for staff to call back by hand. Such a row has no recording
-- (recording_url is empty); its id is `CB` and the caller's call SID's hex,
-- and `waiting_since_ms` says since when the caller waited.
ALTER TABLE voicemails ADD COLUMN kind TEXT NOT NULL DEFAULT 'recording';
ALTER TABLE voicemails ADD COLUMN waiting_since_ms BIGINT;
