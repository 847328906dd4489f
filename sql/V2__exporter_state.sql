-- Exporter state (DESIGN §4.1 padding): secrets the exporter derives
-- deterministic material from. Created on first use, never rotated in place, so
-- a rebuilt file reproduces its fake keys byte for byte.
CREATE TABLE exporter_secrets (
    name    TEXT        PRIMARY KEY,
    secret  BYTEA       NOT NULL CHECK (octet_length(secret) >= 32),
    created TIMESTAMPTZ NOT NULL
);

-- The ledger is read by kind and window; retention by its two marks.
CREATE INDEX exports_unindexed ON exports (region, unindexed_at) WHERE deleted_at IS NULL;
