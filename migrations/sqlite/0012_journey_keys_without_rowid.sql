-- journey_keys becomes a WITHOUT ROWID table: its rows live in one B-tree
-- ordered by sid, instead of a rowid table beside an index on sid. Every
-- key written (three a reservation: its task, itself, the leg we place)
-- dirtied a leaf of the index at a random place (SIDs are random) and the
-- rowid table's last page besides, and every lookup of a webhook's SID went
-- through both. Under the bench the rowid table was 1.2 of the ~25 pages a
-- batch's COMMIT wrote, and the server's CPU per reservation fell ~5%
-- without it (docs/bench-history.md). PostgreSQL has no rowid: nothing
-- changes there.
CREATE TABLE journey_keys_by_sid (
    sid        TEXT PRIMARY KEY,
    journey_id BIGINT NOT NULL
) WITHOUT ROWID;
INSERT INTO journey_keys_by_sid (sid, journey_id) SELECT sid, journey_id FROM journey_keys;
DROP TABLE journey_keys;
ALTER TABLE journey_keys_by_sid RENAME TO journey_keys;
