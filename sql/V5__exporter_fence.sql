-- The exporter lock's fencing generation (DESIGN §4.2). A pass takes the
-- session advisory lock, then increments its region's generation on the same
-- session; every later write of the pass (ledger rows, bucket objects) is made
-- while a transaction holds this row FOR SHARE, checks the generation is still
-- the pass's own and that the lock session still holds the lock. A new holder's
-- increment waits for such a write to end, so a pass that lost its lock can
-- never write after, or interleave with, the pass that took it over.
CREATE TABLE exporter_fence (
    region     TEXT   PRIMARY KEY,
    generation BIGINT NOT NULL CHECK (generation > 0)
);

-- Only the exporter takes the lock (sql/V4__roles.sql: one role per table).
GRANT SELECT, INSERT, UPDATE ON exporter_fence TO diagnosis_exporter;
