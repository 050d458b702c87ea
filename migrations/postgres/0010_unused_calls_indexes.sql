-- Nothing looks a call up by its task or by the leg we placed: the history
-- reads `calls` by start, location, outcome and caller, and a SID finds its
-- journey through `journey_keys`. Each of these two indexes cost every new
-- call one more index entry to write, and every dial's result another, both
-- at random places (SIDs are random), so each dirtied a page of its own in
-- the batch's COMMIT.
DROP INDEX calls_outbound;
DROP INDEX calls_task;
