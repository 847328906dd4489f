-- Claimed keypairs for tests/bench/upload.sql: 100 000 rows whose quota never runs out, so
-- every transaction of the pgbench run does the whole upload.
INSERT INTO encryption_keys
    (region, originator, app_public_key, server_public_key, server_private_key,
     remaining_keys, created, claimed)
SELECT '302', 'BENCH', sha256(('bench-app-' || i)::bytea), sha256(('bench-server-' || i)::bytea),
       sha256(('bench-private-' || i)::bytea), 2000000000, now(), now()
  FROM generate_series(1, 100000) AS i;
ANALYZE encryption_keys;
