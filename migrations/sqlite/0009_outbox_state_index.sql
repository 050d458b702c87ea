-- outbox_claim (state, kind, not_before_ms) serves every lookup by state
-- (its first column), so outbox_state (state) only cost each insert and
-- each change of state one more index entry to write.
DROP INDEX outbox_state;
