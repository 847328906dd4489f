-- Idempotent claims (DESIGN §3.2). A claim erases its code; to recognise the same app
-- repeating a claim whose answer it never heard, the row keeps a keyed hash of the code:
-- HMAC-SHA-256 under the `claim-code` secret of `submit_secrets` (created on first use,
-- apart from the client-identity secret), never the code in clear. Rows claimed before
-- this column existed have none, and their claims are not repeatable. The hash is only
-- used while the code would still be valid (created + ONE_TIME_CODE_EXPIRY_MINUTES) and is
-- deleted with its keypair by retention; nothing else reads it.
--
-- The check is added NOT VALID: every existing row holds NULL, which passes it, and a
-- validating scan would hold the table's exclusive lock (and every claim and upload) for
-- as long as it reads the table. New and updated rows are checked all the same.
ALTER TABLE encryption_keys
    ADD COLUMN claimed_code_hash BYTEA,
    ADD CONSTRAINT encryption_keys_claimed_code_hash_length
        CHECK (octet_length(claimed_code_hash) = 32) NOT VALID;

-- The submit service writes the hash on claim and compares it on a repeat: its grant on the
-- whole table (sql/V4__roles.sql), restated here, covers the new column. The exporter's
-- retention reads only the columns it was granted one by one (its table-wide privileges were
-- revoked by sql/V4__roles.sql), so it cannot read the hash; the revoke says so.
GRANT SELECT, INSERT, UPDATE, DELETE ON encryption_keys TO diagnosis_submit;
REVOKE ALL (claimed_code_hash) ON encryption_keys FROM diagnosis_exporter;
