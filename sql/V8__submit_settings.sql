-- The limits each running submit replica enforces (DESIGN §5, §6): the one source the
-- exporter's retention and grace check read, so that a mismatch between the services'
-- configurations can never delete a live keypair or lift a ban. A replica writes its own row
-- (a random instance id made at start) when it starts and refreshes it every minute while it
-- runs; the exporter goes by the rows refreshed in the last few minutes, or by the latest ones
-- when no replica is running, and deletes rows nobody has refreshed for a day.
CREATE TABLE submit_settings (
    instance_id                    TEXT        PRIMARY KEY,
    one_time_code_expiry_minutes   INTEGER     NOT NULL CHECK (one_time_code_expiry_minutes > 0),
    encryption_key_validity_days   INTEGER     NOT NULL CHECK (encryption_key_validity_days > 0),
    claim_key_ban_duration_minutes INTEGER     NOT NULL CHECK (claim_key_ban_duration_minutes > 0),
    statement_timeout_ms           INTEGER     NOT NULL CHECK (statement_timeout_ms > 0),
    started                        TIMESTAMPTZ NOT NULL,
    refreshed                      TIMESTAMPTZ NOT NULL
);

-- submit: records and refreshes its own row (an upsert, whose conflict check reads the key).
GRANT SELECT, INSERT, UPDATE ON submit_settings TO diagnosis_submit;
-- exporter: reads every row, and deletes the rows nobody has refreshed for a day.
GRANT SELECT, DELETE ON submit_settings TO diagnosis_exporter;
