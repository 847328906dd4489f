-- One clock for publication (DESIGN §2, §4.2). Before it reads any hour, a pass
-- seals the hours up to the last closed one: in a transaction of its own it takes
-- the region's seal lock (a two-key advisory lock) exclusively and records the
-- hour here. Every upload holds the same lock shared while it stores its keys and
-- places them no earlier than the hour after the one recorded here, so no key can
-- land in an hour that has already been read, whatever the replicas' clocks say.
CREATE TABLE publication_seal (
    region              TEXT    PRIMARY KEY,
    sealed_through_hour INTEGER NOT NULL CHECK (sealed_through_hour >= 0)
);

-- The submit service reads the seal for every upload; only the exporter moves it
-- (sql/V4__roles.sql: each table's grants in the migration that makes it).
GRANT SELECT ON publication_seal TO diagnosis_submit;
GRANT SELECT, INSERT, UPDATE ON publication_seal TO diagnosis_exporter;
