-- Several instances on one database; as migrations/sqlite/0004_leases.sql.
--
-- An outbox row being sent belongs to the instance that claimed it until
-- lease_until_ms; after that another instance takes it over (an update is
-- sent again, a dial is looked up, never re-sent). Rows from before this
-- migration have no owner and count as expired.
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN lease_until_ms BIGINT;
CREATE INDEX outbox_sending ON outbox (lease_until_ms) WHERE state = 'sending';

-- Work that one instance at a time does (the reconciler): held by `owner`
-- until `until_ms`, renewed by its holder, taken over once it has expired.
CREATE TABLE leases (
    name     TEXT PRIMARY KEY,
    owner    TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
