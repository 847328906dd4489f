-- Diagnosis Server schema, version 1 (DESIGN §5).
--
-- Rules for every later migration: expand → backfill → contract. A release of
-- `submit` or `exporter` must run against both this schema and the next one,
-- because the two binaries deploy separately.

-- One row per issued one-time code and its NaCl keypair.
CREATE TABLE encryption_keys (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region             TEXT        NOT NULL,
    originator         TEXT        NOT NULL,            -- the portal's label, never its token
    hash_id            TEXT        UNIQUE,              -- portal's hash of the patient record
    one_time_code      TEXT        UNIQUE,              -- erased on claim
    app_public_key     BYTEA       UNIQUE CHECK (octet_length(app_public_key) = 32),
    server_public_key  BYTEA       NOT NULL UNIQUE CHECK (octet_length(server_public_key) = 32),
    server_private_key BYTEA       NOT NULL CHECK (octet_length(server_private_key) = 32),
    remaining_keys     INTEGER     NOT NULL CHECK (remaining_keys >= 0),
    created            TIMESTAMPTZ NOT NULL,
    claimed            TIMESTAMPTZ,
    uploaded           BOOLEAN     NOT NULL DEFAULT false, -- for OTKExpiredNoUploads
    CHECK (one_time_code IS NULL OR app_public_key IS NULL)
);
-- Purge of unclaimed codes and of expired keypairs scans by age.
CREATE INDEX encryption_keys_created ON encryption_keys (created);

-- The published material. No link to the keypair that uploaded a key.
CREATE TABLE diagnosis_keys (
    key_data                      BYTEA    PRIMARY KEY CHECK (octet_length(key_data) = 16),
    rolling_start_interval_number INTEGER  NOT NULL CHECK (rolling_start_interval_number > 0),
    rolling_period                SMALLINT NOT NULL CHECK (rolling_period BETWEEN 1 AND 144),
    transmission_risk_level       SMALLINT NOT NULL CHECK (transmission_risk_level BETWEEN 0 AND 8),
    report_type                   SMALLINT NOT NULL CHECK (report_type BETWEEN 1 AND 5),
    days_since_onset              SMALLINT CHECK (days_since_onset BETWEEN -14 AND 14),
    region                        TEXT     NOT NULL,
    originator                    TEXT     NOT NULL,
    hour_of_submission            INTEGER  NOT NULL,
    publish_hour                  INTEGER  NOT NULL
);
-- The exporter reads one region's closed hours; retention deletes by age.
CREATE INDEX diagnosis_keys_region_publish_hour ON diagnosis_keys (region, publish_hour);
CREATE INDEX diagnosis_keys_hour_of_submission ON diagnosis_keys (hour_of_submission);

-- Brute-force protection of /claim-key, shared by every replica. The identifier
-- is a SHA-256 of the client address, never the address itself.
CREATE TABLE failed_key_claim_attempts (
    identifier   TEXT        PRIMARY KEY,
    failures     INTEGER     NOT NULL CHECK (failures > 0),
    last_failure TIMESTAMPTZ NOT NULL
);
CREATE INDEX failed_key_claim_attempts_last_failure ON failed_key_claim_attempts (last_failure);

-- The publication ledger: one row per object the exporter published.
CREATE TABLE exports (
    object_key     TEXT        PRIMARY KEY,
    kind           TEXT        NOT NULL,
    region         TEXT        NOT NULL,
    start_ts       BIGINT      NOT NULL,
    end_ts         BIGINT      NOT NULL,
    part           INTEGER     NOT NULL CHECK (part >= 1),
    key_count      INTEGER     NOT NULL CHECK (key_count >= 0),
    bytes          BIGINT      NOT NULL CHECK (bytes >= 0),
    sha256         TEXT        NOT NULL,
    published_at   TIMESTAMPTZ NOT NULL,
    unindexed_at   TIMESTAMPTZ,
    deleted_at     TIMESTAMPTZ
);
CREATE INDEX exports_kind_window ON exports (region, kind, start_ts);

-- Aggregate server events per originator and UTC day (no personal data).
CREATE TABLE events (
    identifier  TEXT    NOT NULL,
    device_type TEXT    NOT NULL DEFAULT 'server',
    source      TEXT    NOT NULL,
    date        DATE    NOT NULL,
    count       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (identifier, device_type, source, date)
);
CREATE INDEX events_date ON events (date);

-- One row per accepted upload: how many keys it carried.
CREATE TABLE tek_upload_count (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    originator TEXT    NOT NULL,
    date       DATE    NOT NULL,
    count      INTEGER NOT NULL CHECK (count >= 0)
);
CREATE INDEX tek_upload_count_date ON tek_upload_count (date);

-- How long codes took to be claimed, in whole hours, per originator and day.
CREATE TABLE otk_life_duration (
    originator TEXT    NOT NULL,
    date       DATE    NOT NULL,
    hours      INTEGER NOT NULL CHECK (hours >= 0),
    count      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (originator, date, hours)
);
