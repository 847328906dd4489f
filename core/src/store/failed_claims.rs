//! `failed_key_claim_attempts`: the brute-force ban of `/claim-key` (DESIGN §3.2),
//! kept in Postgres so that every replica enforces the same ban.
//!
//! Clients are identified by a SHA-256 of their address ([`ClientIdentifier`]);
//! the address itself is never stored or logged.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// How many wrong codes a client may send, and for how long it is then banned.
#[derive(Debug, Clone, Copy)]
pub struct BanPolicy {
    pub max_failures: u32,
    pub ban_duration: Duration,
}

/// The stored identity of a claiming client: a hash of its address.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentifier(String);

impl ClientIdentifier {
    pub fn from_ip(ip: IpAddr) -> ClientIdentifier {
        // An IPv4-mapped IPv6 address is the same client as the IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let digest = Sha256::digest(ip.to_string().as_bytes());
        ClientIdentifier(hex::encode(digest))
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientIdentifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentifier(..)")
    }
}

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

impl Store {
    /// The time left on the client's ban, if it is banned now.
    pub async fn active_ban(
        &self,
        client: &ClientIdentifier,
        now: DateTime<Utc>,
        policy: BanPolicy,
    ) -> Result<Option<Duration>, StoreError> {
        let db = self.pool.get().await?;
        let statement = db
            .prepare_cached(
                "SELECT failures, last_failure FROM failed_key_claim_attempts WHERE identifier = $1",
            )
            .await?;
        let Some(row) = db.query_opt(&statement, &[&client.as_str()]).await? else {
            return Ok(None);
        };
        let failures: i32 = row.try_get(0)?;
        let last_failure: DateTime<Utc> = row.try_get(1)?;
        Ok(ban_remaining(failures, last_failure, now, policy))
    }

    /// Counts one wrong code for the client and returns its failures so far
    /// (within the current window).
    pub async fn record_failed_claim(
        &self,
        client: &ClientIdentifier,
        now: DateTime<Utc>,
        policy: BanPolicy,
    ) -> Result<u32, StoreError> {
        let db = self.pool.get().await?;
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

    #[test]
    fn client_identifier_hides_the_address_and_folds_mapped_ipv4() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let id = ClientIdentifier::from_ip(v4);
        assert_eq!(id, ClientIdentifier::from_ip(mapped));
        assert!(!id.as_str().contains("192"));
        assert_eq!(id.as_str().len(), 64);
        assert_eq!(format!("{id:?}"), "ClientIdentifier(..)");
    }
}
