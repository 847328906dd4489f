//! Database retention (DESIGN §4.2): unclaimed codes after their expiry, keypairs
//! after their validity or once their quota is spent, diagnosis keys after 15
//! days, failed-claim rows once their window has passed. The exporter runs it on
//! every pass, so no personal data outlives 21 days.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::encryption_keys::keypair_valid_since;
use super::events::{Event, record_event};
use super::{Store, StoreError, utc_date};
use crate::time::hour_number;

/// Diagnosis keys are deleted this many days after their publish hour.
pub const DIAGNOSIS_KEY_RETENTION_DAYS: i64 = 15;

/// The limits retention enforces; they mirror the submit service's settings.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    pub one_time_code_expiry: Duration,
    pub keypair_validity_days: u32,
    pub claim_ban_duration: Duration,
}

/// How many rows each rule removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub unclaimed_codes: u64,
    pub keypairs: u64,
    pub diagnosis_keys: u64,
    pub failed_claims: u64,
}

impl Store {
    /// Deletes what DESIGN §4.2 says must not be kept any longer, and counts the
    /// code life-cycle events (unclaimed, expired, expired without uploads) that
    /// the deletions mean. One transaction: a failure leaves everything in place.
    pub async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        policy: RetentionPolicy,
    ) -> Result<RetentionReport, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let today = utc_date(now);
        let mut events: BTreeMap<(String, Event), i32> = BTreeMap::new();

        // A row is an unclaimed code until its claim erases the code and stamps
        // `claimed` in the same UPDATE, so `claimed` tells the two states apart
        // without reading codes: the exporter's role may not (sql/V4__roles.sql).
        let unclaimed = tx
            .query(
                "DELETE FROM encryption_keys
                  WHERE claimed IS NULL AND created <= $1
              RETURNING originator",
                &[&(now - policy.one_time_code_expiry)],
            )
            .await?;
        for row in &unclaimed {
            *events
                .entry((row.try_get(0)?, Event::OtkUnclaimed))
                .or_default() += 1;
        }

        let keypairs = tx
            .query(
                "DELETE FROM encryption_keys
                  WHERE claimed IS NOT NULL
                    AND (created < $1 OR remaining_keys = 0)
              RETURNING originator, uploaded, remaining_keys = 0",
                &[&keypair_valid_since(now, policy.keypair_validity_days)],
            )
            .await?;
        for row in &keypairs {
            let uploaded: bool = row.try_get(1)?;
            let exhausted: bool = row.try_get(2)?;
            // An exhausted keypair was already counted as OTKExhausted at upload.
            let event = match (exhausted, uploaded) {
                (true, _) => continue,
                (false, true) => Event::OtkExpired,
                (false, false) => Event::OtkExpiredNoUploads,
            };
            *events.entry((row.try_get(0)?, event)).or_default() += 1;
        }

        let oldest_hour = hour_number(now.timestamp()) - DIAGNOSIS_KEY_RETENTION_DAYS * 24;
        let oldest_hour = i32::try_from(oldest_hour).unwrap_or(i32::MIN);
        let diagnosis_keys = tx
            .execute(
                "DELETE FROM diagnosis_keys WHERE publish_hour < $1",
                &[&oldest_hour],
            )
            .await?;

        let failed_claims = tx
            .execute(
                "DELETE FROM failed_key_claim_attempts WHERE last_failure <= $1",
                &[&(now - policy.claim_ban_duration)],
            )
            .await?;

        for ((source, event), count) in events {
            record_event(&tx, event, &source, today, count).await?;
        }
        tx.commit().await?;
        Ok(RetentionReport {
            unclaimed_codes: unclaimed.len() as u64,
            keypairs: keypairs.len() as u64,
            diagnosis_keys,
            failed_claims,
        })
    }
}
