//! Database retention (DESIGN §4.2): unclaimed codes after their expiry, keypairs
//! after their validity or once their quota is spent, diagnosis keys after 15
//! days, failed-claim rows once their window has passed. The exporter runs it on
//! every pass, so no personal data outlives 21 days. The limits of codes, keypairs
//! and failed claims are the submit service's, as its replicas record them
//! ([`super::submit_settings::retention_policy`]); without them those rules do not
//! run, and diagnosis keys are deleted all the same.
//!
//! Each rule deletes in batches of at most `RETENTION_BATCH_ROWS` rows, each batch
//! one statement in a transaction of its own that also counts the batch's events, so
//! a backlog of millions of rows never holds one statement past the statement
//! timeout, and a batch that fails leaves the batches before it deleted and counted.
//! Every batch statement repeats its rule's condition in the `DELETE` itself, so a
//! row that a concurrent request changed after the batch was chosen (a code claimed,
//! a client failing again) is deleted only if it still matches.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use tokio_postgres::types::ToSql;

use super::encryption_keys::keypair_valid_since;
use super::events::{Event, record_event};
use super::{Store, StoreError, utc_date};
use crate::time::hour_number;

/// Diagnosis keys are deleted this many days after their publish hour.
pub const DIAGNOSIS_KEY_RETENTION_DAYS: i64 = 15;

/// The rows one retention statement deletes: a batch takes tens of milliseconds,
/// far below the statement timeout, and a backlog of a million keys a hundred
/// batches. Codes, keypairs and failed claims are batched by time
/// (`PURGE_UNCLAIMED_CODES`, `PURGE_KEYPAIRS`, `PURGE_FAILED_CLAIMS`), so their batches also
/// take the rows written in the same microsecond as the last.
pub const RETENTION_BATCH_ROWS: i64 = 10_000;

/// The limits retention deletes codes, keypairs and failed claims by: the submit service's
/// settings as its replicas record them (DESIGN §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

// The statements of the rules batched by time delete the oldest batch of their table's rows
// matching the rule's condition: the `$1` rows with the earliest time, plus those sharing the
// last one's time (several rows share a time only when they were written in the same
// microsecond). The batch is a range of an indexed time column rather than a set of row ids: the
// exporter's role may read only the columns its rules test (sql/V4__roles.sql), and the range
// is one index scan wherever the backlog sits. Each returns how many rows it deleted per value
// of the columns its events are counted by.

/// One batch of unclaimed codes created at `$2` or before, counted per originator.
const PURGE_UNCLAIMED_CODES: &str = "WITH gone AS (
         DELETE FROM encryption_keys
          WHERE claimed IS NULL AND created <= $2
            AND created <= coalesce(
                    (SELECT created FROM encryption_keys
                      WHERE claimed IS NULL AND created <= $2
                      ORDER BY created
                     OFFSET $1::bigint - 1 LIMIT 1),
                    'infinity')
      RETURNING originator)
     SELECT originator, count(*) FROM gone GROUP BY originator";

/// One batch of claimed keypairs created before `$2` or out of keys, counted per originator,
/// whether they uploaded, and whether they were exhausted.
const PURGE_KEYPAIRS: &str = "WITH gone AS (
         DELETE FROM encryption_keys
          WHERE claimed IS NOT NULL AND (created < $2 OR remaining_keys = 0)
            AND created <= coalesce(
                    (SELECT created FROM encryption_keys
                      WHERE claimed IS NOT NULL AND (created < $2 OR remaining_keys = 0)
                      ORDER BY created
                     OFFSET $1::bigint - 1 LIMIT 1),
                    'infinity')
      RETURNING originator, uploaded, remaining_keys = 0 AS exhausted)
     SELECT originator, uploaded, exhausted, count(*) FROM gone
      GROUP BY originator, uploaded, exhausted";

/// One batch of `$1` diagnosis keys of region `$3` published before hour `$2`. Keys share
/// their publish hour by the thousand, so their batches are sets of row ids, chosen per
/// region along the (region, publish_hour) index; the exporter's role reads the whole table.
const PURGE_DIAGNOSIS_KEYS: &str = "WITH gone AS (
         DELETE FROM diagnosis_keys
          WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM diagnosis_keys
                     WHERE region = $3 AND publish_hour < $2
                     ORDER BY publish_hour
                     LIMIT $1))
            AND region = $3 AND publish_hour < $2
      RETURNING 1)
     SELECT count(*) FROM gone";

/// The next region holding diagnosis keys after `$1` (`NULL` past the last).
const NEXT_KEY_REGION: &str = "SELECT min(region) FROM diagnosis_keys WHERE region > $1";

/// One batch of failed-claim rows whose last failure is at `$2` or before.
const PURGE_FAILED_CLAIMS: &str = "WITH gone AS (
         DELETE FROM failed_key_claim_attempts
          WHERE last_failure <= $2
            AND last_failure <= coalesce(
                    (SELECT last_failure FROM failed_key_claim_attempts
                      WHERE last_failure <= $2
                      ORDER BY last_failure
                     OFFSET $1::bigint - 1 LIMIT 1),
                    'infinity')
      RETURNING last_failure)
     SELECT count(*) FROM gone";

/// What a batch of one rule deleted, per the events it means.
type EventOf = fn(&tokio_postgres::Row) -> Result<Option<(String, Event)>, StoreError>;

fn no_event(_: &tokio_postgres::Row) -> Result<Option<(String, Event)>, StoreError> {
    Ok(None)
}

// A row is an unclaimed code until its claim erases the code and stamps `claimed`
// in the same UPDATE, so `claimed` tells the two states apart without reading
// codes: the exporter's role may not (sql/V4__roles.sql).
fn unclaimed_code_event(row: &tokio_postgres::Row) -> Result<Option<(String, Event)>, StoreError> {
    Ok(Some((row.try_get(0)?, Event::OtkUnclaimed)))
}

fn keypair_event(row: &tokio_postgres::Row) -> Result<Option<(String, Event)>, StoreError> {
    let uploaded: bool = row.try_get(1)?;
    let exhausted: bool = row.try_get(2)?;
    // An exhausted keypair was already counted as OTKExhausted at upload.
    let event = match (exhausted, uploaded) {
        (true, _) => return Ok(None),
        (false, true) => Event::OtkExpired,
        (false, false) => Event::OtkExpiredNoUploads,
    };
    Ok(Some((row.try_get(0)?, event)))
}

impl Store {
    /// Deletes what DESIGN §4.2 says must not be kept any longer, and counts the
    /// code life-cycle events (unclaimed, expired, expired without uploads) that
    /// the deletions mean. Each batch of `RETENTION_BATCH_ROWS` is a transaction
    /// of its own with its events: a failure leaves the batches before it deleted
    /// and counted, and the rest for the next pass. Without a `policy` (no submit
    /// replica has recorded its settings yet) codes, keypairs and failed claims are
    /// left alone and only diagnosis keys are deleted.
    pub async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        policy: Option<RetentionPolicy>,
    ) -> Result<RetentionReport, StoreError> {
        self.purge_in_batches(now, policy, RETENTION_BATCH_ROWS)
            .await
    }

    /// [`Store::purge_expired`] in batches of `batch_rows` instead of
    /// `RETENTION_BATCH_ROWS`, so that a test reaches several batches with few
    /// rows. Only with the `test-support` feature.
    #[cfg(feature = "test-support")]
    pub async fn purge_expired_in_batches_of(
        &self,
        now: DateTime<Utc>,
        policy: Option<RetentionPolicy>,
        batch_rows: i64,
    ) -> Result<RetentionReport, StoreError> {
        self.purge_in_batches(now, policy, batch_rows).await
    }

    async fn purge_in_batches(
        &self,
        now: DateTime<Utc>,
        policy: Option<RetentionPolicy>,
        batch_rows: i64,
    ) -> Result<RetentionReport, StoreError> {
        if batch_rows < 1 {
            return Err(StoreError::Config(format!(
                "retention batches need at least one row, not {batch_rows}"
            )));
        }
        let mut client = self.pool.get().await?;
        let batches = Batches {
            rows: batch_rows,
            today: utc_date(now),
        };
        let mut report = RetentionReport::default();
        if let Some(policy) = policy {
            report.unclaimed_codes =
                purge_unclaimed_codes(&mut client, batches, now - policy.one_time_code_expiry)
                    .await?;
            report.keypairs = purge_keypairs(
                &mut client,
                batches,
                keypair_valid_since(now, policy.keypair_validity_days),
            )
            .await?;
        }
        report.diagnosis_keys = purge_diagnosis_keys(&mut client, batches, now).await?;
        if let Some(policy) = policy {
            report.failed_claims =
                purge_failed_claims(&mut client, batches, now - policy.claim_ban_duration).await?;
        }
        Ok(report)
    }
}

/// How retention batches its deletions, and the day their events are counted under.
#[derive(Debug, Clone, Copy)]
struct Batches {
    rows: i64,
    today: NaiveDate,
}

async fn purge_unclaimed_codes(
    client: &mut deadpool_postgres::Object,
    batches: Batches,
    expired_at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    delete_in_batches(
        client,
        PURGE_UNCLAIMED_CODES,
        &[&batches.rows, &expired_at],
        batches,
        unclaimed_code_event,
    )
    .await
}

async fn purge_keypairs(
    client: &mut deadpool_postgres::Object,
    batches: Batches,
    valid_since: DateTime<Utc>,
) -> Result<u64, StoreError> {
    delete_in_batches(
        client,
        PURGE_KEYPAIRS,
        &[&batches.rows, &valid_since],
        batches,
        keypair_event,
    )
    .await
}

async fn purge_diagnosis_keys(
    client: &mut deadpool_postgres::Object,
    batches: Batches,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let oldest_hour = hour_number(now.timestamp()) - DIAGNOSIS_KEY_RETENTION_DAYS * 24;
    let oldest_hour = i32::try_from(oldest_hour).unwrap_or(i32::MIN);
    let mut deleted = 0;
    let mut region = String::new();
    while let Some(next) = client
        .query_one(NEXT_KEY_REGION, &[&region])
        .await?
        .try_get::<_, Option<String>>(0)?
    {
        region = next;
        deleted += delete_in_batches(
            client,
            PURGE_DIAGNOSIS_KEYS,
            &[&batches.rows, &oldest_hour, &region],
            batches,
            no_event,
        )
        .await?;
    }
    Ok(deleted)
}

async fn purge_failed_claims(
    client: &mut deadpool_postgres::Object,
    batches: Batches,
    ban_ended_at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    delete_in_batches(
        client,
        PURGE_FAILED_CLAIMS,
        &[&batches.rows, &ban_ended_at],
        batches,
        no_event,
    )
    .await
}

/// Runs `statement` (a batch of one rule; `$1` is the batch size, and it returns
/// rows that end with a count of deleted rows) until a batch deletes fewer than
/// `batches.rows` rows, each batch in a transaction of its own together with the
/// events `event_of` reads from its rows. Returns how many rows were deleted.
async fn delete_in_batches(
    client: &mut deadpool_postgres::Object,
    statement: &str,
    params: &[&(dyn ToSql + Sync)],
    batches: Batches,
    event_of: EventOf,
) -> Result<u64, StoreError> {
    let Batches { rows, today } = batches;
    let batch_rows = u64::try_from(rows).unwrap_or(0);
    let mut deleted = 0_u64;
    loop {
        let tx = client.transaction().await?;
        let mut batch = 0_u64;
        let mut events: BTreeMap<(String, Event), i32> = BTreeMap::new();
        for row in tx.query(statement, params).await? {
            let last = row
                .len()
                .checked_sub(1)
                .ok_or(StoreError::InvalidRow("retention count"))?;
            let count: i64 = row.try_get(last)?;
            let count =
                u64::try_from(count).map_err(|_| StoreError::InvalidRow("retention count"))?;
            batch += count;
            if let Some(key) = event_of(&row)? {
                let count = i32::try_from(count)
                    .map_err(|_| StoreError::InvalidRow("retention event count"))?;
                let total = events.entry(key).or_default();
                *total = total.saturating_add(count);
            }
        }
        // In the map's order, so that two purges at once (exporters of two export
        // regions) cannot wait on each other's `events` rows in opposite orders.
        for ((source, event), count) in events {
            record_event(&tx, event, &source, today, count).await?;
        }
        tx.commit().await?;
        deleted += batch;
        if batch < batch_rows {
            return Ok(deleted);
        }
    }
}
