-- pgbench script: the SQL work of one accepted 14-key upload (core/src/store/diagnosis_keys.rs,
-- store_upload), for infra/dev/bench's upload_vs_pgbench_ratio. Run with -M prepared,
-- as the service prepares its statements. The keypairs come from tests/bench/keypairs.sql.
\set keypair random(1, 100000)
BEGIN;
SELECT server_private_key, app_public_key, remaining_keys, originator FROM encryption_keys
 WHERE server_public_key = sha256(('bench-server-' || :keypair)::bytea)
   AND app_public_key IS NOT NULL AND created >= now() - interval '15 days'
   FOR UPDATE;
INSERT INTO diagnosis_keys
    (key_data, rolling_start_interval_number, rolling_period, transmission_risk_level,
     report_type, days_since_onset, region, originator, hour_of_submission, publish_hour)
SELECT k, rsin, rp, trl, rt, dso, '302', 'BENCH', h, h
  FROM (SELECT substring(sha256((random()::text || clock_timestamp()::text || d::text)::bytea) FROM 1 FOR 16) AS k,
               ((extract(epoch FROM now())::int / 86400) - d) * 144 AS rsin,
               144::int2 AS rp, 1::int2 AS trl, 1::int2 AS rt, NULL::int2 AS dso,
               extract(epoch FROM now())::int / 3600 AS h
          FROM generate_series(1, 14) AS d) AS u
ON CONFLICT (key_data) DO NOTHING;
UPDATE encryption_keys SET remaining_keys = remaining_keys - 14, uploaded = true
 WHERE server_public_key = sha256(('bench-server-' || :keypair)::bytea);
INSERT INTO tek_upload_count (originator, date, count) VALUES ('BENCH', current_date, 14);
COMMIT;
