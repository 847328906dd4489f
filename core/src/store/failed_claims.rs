//! `failed_key_claim_attempts`: the brute-force ban of `/claim-key` (DESIGN §3.2),
//! kept in Postgres so that every replica enforces the same ban.
//!
//! Clients are identified by a keyed hash of their address ([`ClientIdentifier`]);
//! the address itself is never stored or logged. Rows written before the hash was
//! keyed (an unkeyed SHA-256 of the address) match no client any more and simply
//! expire: retention deletes every row one hour after its last failure.
//!
//! The claims of one client are serialised by [`lock_claim_attempts`], so the ban
//! holds however many of its requests run at once.

use std::net::{IpAddr, Ipv6Addr};

use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::GenericClient;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Store, StoreError};
use crate::redacted::Redacted;

/// How many wrong codes a client may send, and for how long it is then banned.
#[derive(Debug, Clone, Copy)]
pub struct BanPolicy {
    pub max_failures: u32,
    pub ban_duration: Duration,
}

/// The key of the HMAC-SHA-256 that turns a client address into its
/// [`ClientIdentifier`]. It lives in `submit_secrets`, shared by every replica
/// ([`Store::client_identity_key`]); an unkeyed hash would not do, because the
/// whole IPv4 space can be hashed in minutes and every identifier reversed.
#[derive(Debug, Clone)]
pub struct ClientIdentityKey(Redacted<Hmac<Sha256>>);

impl ClientIdentityKey {
    /// The shortest secret accepted: as long as the hash, as RFC 2104 advises
    /// (and as the `submit_secrets` table checks).
    pub const MIN_SECRET_BYTES: usize = 32;

    /// A key from its secret bytes; `None` when the secret is too short.
    pub fn from_secret(secret: &[u8]) -> Option<ClientIdentityKey> {
        if secret.len() < Self::MIN_SECRET_BYTES {
            return None;
        }
        Hmac::<Sha256>::new_from_slice(secret)
            .ok()
            .map(|mac| ClientIdentityKey(Redacted::new(mac)))
    }
}

/// The stored identity of a claiming client: lowercase hex of
/// HMAC-SHA-256(key, canonical form of its address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentifier(Redacted<String>);

impl ClientIdentifier {
    /// The identifier of the client at `ip`. One client is one IPv4 address or
    /// one IPv6 /64 (DESIGN §3.2): a single IPv6 subscriber is usually handed a
    /// whole /64 and could otherwise reset its count by changing address. An
    /// IPv4-mapped IPv6 address is the IPv4 client it maps.
    pub fn new(key: &ClientIdentityKey, ip: IpAddr) -> ClientIdentifier {
        let mut mac = key.0.expose().clone();
        mac.update(canonical_client(ip).as_bytes());
        ClientIdentifier(Redacted::new(hex::encode(mac.finalize().into_bytes())))
    }

    fn as_str(&self) -> &str {
        self.0.expose()
    }
}

/// The network a client is identified by, written as a CIDR so that the IPv4
/// and IPv6 forms can never coincide: `192.0.2.7/32`, `2001:db8:1:2::/64`.
fn canonical_client(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => {
            let prefix = Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX));
            format!("{prefix}/64")
        }
    }
}

/// The class of the two-key advisory locks that serialise one client's claims
/// ([`lock_claim_attempts`]). Two-key advisory locks never collide with the
/// one-key locks of migrations, exports and hash IDs (Postgres keeps the two key
/// spaces apart).
const CLAIM_LOCK_CLASS: i32 = 0x636c_6169; // "clai"

/// A failure count whose window has passed starts afresh: a ban that expired
/// does not leave the client one failure away from the next ban.
const FRESH_OR_INCREMENT: &str =
    "INSERT INTO failed_key_claim_attempts (identifier, failures, last_failure)
     VALUES ($1, 1, $2)
     ON CONFLICT (identifier) DO UPDATE SET
         failures = CASE WHEN failed_key_claim_attempts.last_failure <= $3 THEN 1
                         ELSE failed_key_claim_attempts.failures + 1 END,
         last_failure = $2
     RETURNING failures";

const SELECT_ATTEMPTS: &str =
    "SELECT failures, last_failure FROM failed_key_claim_attempts WHERE identifier = $1";

impl Store {
    /// The time left on the client's ban, if it is banned now. A read without
    /// a lock: `/claim-key` uses it to refuse a banned client before reading its
    /// body; the decision that counts is taken under [`lock_claim_attempts`].
    pub async fn active_ban(
        &self,
        client: &ClientIdentifier,
        now: DateTime<Utc>,
        policy: BanPolicy,
    ) -> Result<Option<Duration>, StoreError> {
        let db = self.pool.get().await?;
        ban_of(&db, client, now, policy).await
    }

    /// Counts one wrong code for the client and returns its failures so far
    /// (within the current window), outside any claim: `/claim-key` counts inside
    /// its transaction, under the claim lock. Only with the `test-support` feature,
    /// for the tests of the ban window.
    #[cfg(feature = "test-support")]
    pub async fn record_failed_claim(
        &self,
        client: &ClientIdentifier,
        now: DateTime<Utc>,
        policy: BanPolicy,
    ) -> Result<u32, StoreError> {
        let db = self.pool.get().await?;
        count_failed_claim(&db, client, now, policy).await
    }
}

async fn ban_of(
    db: &impl GenericClient,
    client: &ClientIdentifier,
    now: DateTime<Utc>,
    policy: BanPolicy,
) -> Result<Option<Duration>, StoreError> {
    let statement = db.prepare_cached(SELECT_ATTEMPTS).await?;
    let Some(row) = db.query_opt(&statement, &[&client.as_str()]).await? else {
        return Ok(None);
    };
    let failures: i32 = row.try_get(0)?;
    let last_failure: DateTime<Utc> = row.try_get(1)?;
    Ok(ban_remaining(failures, last_failure, now, policy))
}

/// Takes the client's claim lock for the rest of the transaction `tx` and
/// returns the time left on its ban, if it is banned.
///
/// This is how the ban holds under concurrency (DESIGN §3.2): a claim locks,
/// reads the ban, checks the code and then counts the failure or clears the
/// count, all before it commits and lets the next claim of the same client in.
/// So every claim sees the failures of all earlier ones, and no more than
/// `max_failures` wrong codes are ever checked per ban period. A right code
/// is never refused on account of a concurrent attempt that is not yet
/// decided, and a request that fails before its code is checked rolls back
/// having counted nothing. Claims of different clients do not wait on each
/// other (unless their identifiers share a 32-bit hash, which only delays).
///
/// An advisory lock rather than a row lock: a client without failures has no
/// row to lock, and a placeholder row would break `failures > 0`.
pub(super) async fn lock_claim_attempts(
    tx: &impl GenericClient,
    client: &ClientIdentifier,
    now: DateTime<Utc>,
    policy: BanPolicy,
) -> Result<Option<Duration>, StoreError> {
    claim_lock(tx, client).await?;
    ban_of(tx, client, now, policy).await
}

async fn claim_lock(tx: &impl GenericClient, client: &ClientIdentifier) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .await?;
    tx.execute(&statement, &[&CLAIM_LOCK_CLASS, &client.as_str()])
        .await?;
    Ok(())
}

/// Takes the client's claim lock for the rest of the transaction `tx`, as a claim
/// of that client in progress on another replica holds it. Only with the
/// `test-support` feature, for the tests of what waits on the lock.
#[cfg(feature = "test-support")]
pub async fn take_claim_lock(
    tx: &impl GenericClient,
    client: &ClientIdentifier,
) -> Result<(), StoreError> {
    claim_lock(tx, client).await
}

/// Counts one wrong code for the client and returns its failures within the
/// current window.
pub(super) async fn count_failed_claim(
    db: &impl GenericClient,
    client: &ClientIdentifier,
    now: DateTime<Utc>,
    policy: BanPolicy,
) -> Result<u32, StoreError> {
    let statement = db.prepare_cached(FRESH_OR_INCREMENT).await?;
    let row = db
        .query_one(
            &statement,
            &[&client.as_str(), &now, &(now - policy.ban_duration)],
        )
        .await?;
    let failures: i32 = row.try_get(0)?;
    Ok(u32::try_from(failures).unwrap_or(0))
}

/// A successful claim clears the client's failures.
pub(super) async fn clear_failed_claims(
    db: &impl GenericClient,
    client: &ClientIdentifier,
) -> Result<(), StoreError> {
    let statement = db
        .prepare_cached("DELETE FROM failed_key_claim_attempts WHERE identifier = $1")
        .await?;
    db.execute(&statement, &[&client.as_str()]).await?;
    Ok(())
}

/// A client is banned from its `max_failures`-th failure until `ban_duration`
/// after its last failure.
pub fn ban_remaining(
    failures: i32,
    last_failure: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: BanPolicy,
) -> Option<Duration> {
    let banned = i64::from(failures) >= i64::from(policy.max_failures);
    let ends = last_failure + policy.ban_duration;
    (banned && ends > now).then(|| ends - now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> BanPolicy {
        BanPolicy {
            max_failures: 50,
            ban_duration: Duration::hours(1),
        }
    }

    #[test]
    fn ban_starts_at_the_limit_and_ends_after_the_duration() {
        let last = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let check = |failures, now_offset_s: i64| {
            ban_remaining(
                failures,
                last,
                last + Duration::seconds(now_offset_s),
                policy(),
            )
        };
        assert_eq!(check(49, 0), None);
        assert_eq!(check(50, 0), Some(Duration::hours(1)));
        assert_eq!(check(50, 3599), Some(Duration::seconds(1)));
        assert_eq!(check(50, 3600), None);
        assert_eq!(check(73, 10), Some(Duration::seconds(3590)));
    }

    fn key(byte: u8) -> ClientIdentityKey {
        ClientIdentityKey::from_secret(&[byte; 32]).expect("32-byte secret")
    }

    fn id(key: &ClientIdentityKey, ip: &str) -> ClientIdentifier {
        ClientIdentifier::new(key, ip.parse().expect("test address"))
    }

    #[test]
    fn one_ipv6_slash_64_is_one_client() {
        let k = key(1);
        assert_eq!(
            id(&k, "2001:db8:1:2::1"),
            id(&k, "2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(id(&k, "2001:db8:1:2::1"), id(&k, "2001:db8:1:2:abcd::9"));
        assert_ne!(id(&k, "2001:db8:1:2::1"), id(&k, "2001:db8:1:3::1"));
        assert_ne!(id(&k, "2001:db8:1:2::1"), id(&k, "2001:db9:1:2::1"));
    }

    #[test]
    fn a_mapped_ipv4_address_is_the_ipv4_client_and_not_an_ipv6_one() {
        let k = key(1);
        assert_eq!(id(&k, "192.0.2.7"), id(&k, "::ffff:192.0.2.7"));
        assert_ne!(id(&k, "192.0.2.7"), id(&k, "192.0.2.8"));
        // Another address of the mapped range's /64 is not that client.
        assert_ne!(id(&k, "::ffff:192.0.2.7"), id(&k, "::ffff:192.0.2.8"));
        assert_eq!(
            canonical_client("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7/32"
        );
        assert_eq!(
            canonical_client("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn the_identifier_is_keyed_and_reveals_no_address() {
        let ip = "192.0.2.7";
        let identifier = id(&key(1), ip);
        assert_ne!(
            identifier,
            id(&key(2), ip),
            "a different secret gives a different identifier"
        );
        let expected = {
            let mut mac = Hmac::<Sha256>::new_from_slice(&[1; 32]).unwrap();
            mac.update(b"192.0.2.7/32");
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(identifier.as_str(), expected);
        let unkeyed = hex::encode(<Sha256 as sha2::Digest>::digest(ip.as_bytes()));
        assert_ne!(identifier.as_str(), unkeyed);
        assert!(!identifier.as_str().contains("192"));
        assert_eq!(identifier.as_str().len(), 64);
    }

    #[test]
    fn debug_output_redacts_identifiers_and_keys() {
        let k = key(1);
        assert_eq!(format!("{:?}", id(&k, "192.0.2.7")), "ClientIdentifier(..)");
        assert_eq!(format!("{k:?}"), "ClientIdentityKey(..)");
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert!(ClientIdentityKey::from_secret(&[0; 31]).is_none());
        assert!(ClientIdentityKey::from_secret(&[]).is_none());
        assert!(ClientIdentityKey::from_secret(&[0; 64]).is_some());
    }
}
