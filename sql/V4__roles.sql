-- Least-privilege roles (DESIGN §7): each binary can run as its own role, which
-- holds exactly what that binary's queries need and nothing else.
--
--   diagnosis_submit    the submit service. Codes, keypairs, uploads, the ban
--                       table, the aggregate events and its own secrets. No
--                       access at all to the publication ledger (`exports`) or
--                       to the exporter's secrets (`exporter_secrets`).
--   diagnosis_exporter  the exporter. Reads and deletes diagnosis keys, keeps the
--                       ledger and its own secrets, and runs retention. It never
--                       reads a server private key, a one-time code or an app
--                       key of `encryption_keys` (column privileges: retention
--                       sees only the columns its DELETEs test and return), and
--                       has no access to `submit_secrets`.
--
-- Both are NOLOGIN group roles. Operators create one LOGIN user per binary and
-- make it a member, e.g.
--     CREATE ROLE submit_app LOGIN PASSWORD '…' IN ROLE diagnosis_submit;
-- so passwords never appear in a migration and can be rotated by replacing the
-- user. Migrations run as the owner of the tables (`diagnosis-submit migrate` or
-- `diagnosis-exporter migrate` with the owner's DATABASE_URL); neither runtime
-- role may create, alter or drop anything, and both may read
-- `refinery_schema_history`, so that a binary started as its runtime role finds
-- the schema current and serves without trying to migrate.
--
-- Roles belong to the cluster, grants to the database. The roles are therefore
-- created only when missing, and a concurrent migration of another database of
-- the same cluster that creates them first is not an error: the migration can
-- run in every database of a cluster. A database owner without CREATEROLE (common
-- on managed services) cannot create them: an administrator creates the two
-- roles once, as NOLOGIN, before the first migration, which then only grants.
--
-- Rule for every later migration: a new table, or a new query of either binary,
-- comes with the GRANTs it needs in the same migration, to the one role whose
-- binary uses it, and never to both by default (no ALTER DEFAULT PRIVILEGES).
-- Privileges granted on a whole table also cover columns added later; column
-- privileges (encryption_keys and failed_key_claim_attempts for the exporter)
-- must be extended by hand when retention starts to read a new column.

DO $roles$
DECLARE
    role_name TEXT;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['diagnosis_submit', 'diagnosis_exporter'] LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        EXCEPTION
            -- Another database of the cluster is migrating at the same moment
            -- and created it first.
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % does not exist and % may not create roles', role_name, current_user
                    USING HINT = 'As an administrator, run once: CREATE ROLE diagnosis_submit NOLOGIN; '
                              || 'CREATE ROLE diagnosis_exporter NOLOGIN; then migrate again.';
        END;
    END LOOP;
END
$roles$;

-- PostgreSQL 14 and older let every role create tables in schema `public`; the
-- runtime roles must not. (From PostgreSQL 15 on, this is already the default.)
DO $schema$
BEGIN
    IF has_schema_privilege('public', 'public', 'CREATE') THEN
        REVOKE CREATE ON SCHEMA public FROM PUBLIC;
    END IF;
END
$schema$;

-- A role is granted only what it is given below, also when an earlier
-- installation granted more.
REVOKE ALL ON encryption_keys, diagnosis_keys, failed_key_claim_attempts, exports, events,
              tek_upload_count, otk_life_duration, exporter_secrets, submit_secrets,
              refinery_schema_history
    FROM diagnosis_submit, diagnosis_exporter;

-- submit: issue, regenerate (DELETE by hash ID), claim, open uploads (the server
-- private key) and count down the quota.
GRANT SELECT, INSERT, UPDATE, DELETE ON encryption_keys TO diagnosis_submit;
-- Uploads only insert; ON CONFLICT (key_data) DO NOTHING reads the key column.
GRANT INSERT, SELECT (key_data) ON diagnosis_keys TO diagnosis_submit;
GRANT SELECT, INSERT, UPDATE, DELETE ON failed_key_claim_attempts TO diagnosis_submit;
-- The events API (METRICS_ADDR) reads the three aggregate tables.
GRANT SELECT, INSERT, UPDATE ON events, otk_life_duration TO diagnosis_submit;
GRANT SELECT, INSERT ON tek_upload_count TO diagnosis_submit;
-- The client-identity key is created on first start and read afterwards.
GRANT SELECT, INSERT ON submit_secrets TO diagnosis_submit;
GRANT SELECT ON refinery_schema_history TO diagnosis_submit;

-- exporter: stream closed hours, and delete keys after 15 days.
GRANT SELECT, DELETE ON diagnosis_keys TO diagnosis_exporter;
-- Retention of codes and keypairs: the columns its DELETEs test and return.
GRANT DELETE, SELECT (originator, created, claimed, remaining_keys, uploaded)
    ON encryption_keys TO diagnosis_exporter;
GRANT DELETE, SELECT (last_failure) ON failed_key_claim_attempts TO diagnosis_exporter;
-- Retention counts OTKUnclaimed, OTKExpired and OTKExpiredNoUploads.
GRANT SELECT, INSERT, UPDATE ON events TO diagnosis_exporter;
-- The ledger is written and marked (unindexed, deleted), never deleted from.
GRANT SELECT, INSERT, UPDATE ON exports TO diagnosis_exporter;
-- The padding secret is created on first use and read afterwards.
GRANT SELECT, INSERT ON exporter_secrets TO diagnosis_exporter;
GRANT SELECT ON refinery_schema_history TO diagnosis_exporter;
