-- Client identity (DESIGN §3.2): the submit service's secrets. The key of the
-- HMAC-SHA-256 that turns a client's address (its /64 for IPv6) into the
-- identifier of `failed_key_claim_attempts` is created on first start, shared by
-- every replica, and never leaves the database, so a stored identifier cannot be
-- reversed by hashing the IPv4 space.
CREATE TABLE submit_secrets (
    name    TEXT        PRIMARY KEY,
    secret  BYTEA       NOT NULL CHECK (octet_length(secret) >= 32),
    created TIMESTAMPTZ NOT NULL
);
