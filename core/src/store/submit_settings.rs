//! `submit_settings`: the limits each running submit replica enforces (DESIGN §5, §6). The code
//! expiry, keypair validity and ban duration are the submit service's settings alone; the
//! exporter's retention and its grace check read them here instead of configuration of their
//! own, so a mismatch between the two services' configurations can never delete a live keypair
//! or lift a ban.
//!
//! A replica records its row (a random [`SubmitInstance`] id made at start) when it starts and
//! refreshes it every [`REFRESH_PERIOD`] while it runs. The refresh is stamped with the
//! database's clock, and the exporter judges which rows are live by the same clock, so a
//! replica whose own clock is off is neither taken for dead nor kept alive. Which rows the
//! exporter goes by is decided by the pure functions [`retention_policy`],
//! [`longest_live_statement_timeout`] and [`stale_before`], from the rows and the database's
//! clock.
//!
//! The rows hold settings only, never personal data; this module must never write a row of a
//! replica other than the caller's own.

use chrono::{DateTime, Duration, Utc};

use super::publication_seal::database_clock_sql;
use super::retention::RetentionPolicy;
use super::{Store, StoreError};

/// How often a running replica refreshes its row.
pub const REFRESH_PERIOD: Duration = Duration::minutes(1);

/// A row refreshed less than this long ago belongs to a live replica: five refresh periods, so a
/// replica that misses a few refreshes (a slow database, a clock a little behind the exporter's)
/// still counts.
pub const LIVE_FOR: Duration = Duration::minutes(5);

/// A row nobody has refreshed for this long before the newest row's refresh is deleted by
/// retention: a restarted replica leaves its old row behind, and a day of them is enough to see
/// which settings ran lately. Deleting the row of a replica that still runs is harmless, since
/// its next refresh writes it again.
pub const STALE_ROWS_KEPT_FOR: Duration = Duration::days(1);

/// The longest `ENCRYPTION_KEY_VALIDITY_DAYS`: a keypair is valid for that many days from UTC
/// midnight of its issue day and retention runs every pass, so none outlives 21 days (DESIGN §6).
pub const MAX_KEYPAIR_VALIDITY_DAYS: u32 = 20;

/// The longest `ONE_TIME_CODE_EXPIRY_MINUTES` and `CLAIM_KEY_BAN_DURATION_MINUTES`: a week.
pub const MAX_LIMIT_MINUTES: i64 = 10_080;

/// The limits a submit replica enforces, as it records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitLimits {
    /// `ONE_TIME_CODE_EXPIRY_MINUTES`.
    pub one_time_code_expiry: Duration,
    /// `ENCRYPTION_KEY_VALIDITY_DAYS`.
    pub encryption_key_validity_days: u32,
    /// `CLAIM_KEY_BAN_DURATION_MINUTES`.
    pub claim_ban_duration: Duration,
    /// `DATABASE_STATEMENT_TIMEOUT_MS`: the statement timeout its uploads run under.
    pub statement_timeout: std::time::Duration,
}

/// One running submit process: a random id and the moment it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitInstance {
    id: String,
    started: DateTime<Utc>,
}

impl SubmitInstance {
    /// A new instance id (128 random bits, hex) for a replica starting at `started`.
    pub fn new(started: DateTime<Utc>) -> SubmitInstance {
        SubmitInstance {
            id: hex::encode(rand::random::<[u8; 16]>()),
            started,
        }
    }

    /// The id its row is recorded under.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A row of `submit_settings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSettings {
    pub instance_id: String,
    pub limits: SubmitLimits,
    pub started: DateTime<Utc>,
    pub refreshed: DateTime<Utc>,
}

/// `Duration` as whole minutes, rounded up (a recorded limit is never shorter than the one
/// enforced), within the column's range.
fn whole_minutes(duration: Duration) -> i32 {
    let seconds = duration.num_seconds().max(1);
    let minutes = seconds.saturating_add(59) / 60;
    i32::try_from(minutes).unwrap_or(i32::MAX)
}

fn positive(value: i32, column: &'static str) -> Result<u32, StoreError> {
    u32::try_from(value)
        .ok()
        .filter(|value| *value > 0)
        .ok_or(StoreError::InvalidRow(column))
}

fn row_to_settings(row: &tokio_postgres::Row) -> Result<RecordedSettings, StoreError> {
    let minutes = |index: usize, column: &'static str| -> Result<Duration, StoreError> {
        Ok(Duration::minutes(i64::from(positive(
            row.try_get(index)?,
            column,
        )?)))
    };
    Ok(RecordedSettings {
        instance_id: row.try_get(0)?,
        limits: SubmitLimits {
            one_time_code_expiry: minutes(1, "submit_settings.one_time_code_expiry_minutes")?,
            encryption_key_validity_days: positive(
                row.try_get(2)?,
                "submit_settings.encryption_key_validity_days",
            )?,
            claim_ban_duration: minutes(3, "submit_settings.claim_key_ban_duration_minutes")?,
            statement_timeout: std::time::Duration::from_millis(u64::from(positive(
                row.try_get(4)?,
                "submit_settings.statement_timeout_ms",
            )?)),
        },
        started: row.try_get(5)?,
        refreshed: row.try_get(6)?,
    })
}

impl Store {
    /// Records (or refreshes) the row of `instance`: the limits it enforces, refreshed now by
    /// the database's clock. A row deleted meanwhile is written again.
    pub async fn record_submit_settings(
        &self,
        instance: &SubmitInstance,
        limits: &SubmitLimits,
    ) -> Result<(), StoreError> {
        let statement_timeout_ms =
            i32::try_from(limits.statement_timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        let validity_days = i32::try_from(limits.encryption_key_validity_days).unwrap_or(i32::MAX);
        self.pool
            .get()
            .await?
            .execute(
                &format!(
                    "INSERT INTO submit_settings (instance_id, one_time_code_expiry_minutes,
                                                  encryption_key_validity_days,
                                                  claim_key_ban_duration_minutes,
                                                  statement_timeout_ms, started, refreshed)
                     VALUES ($1, $2, $3, $4, $5, $6, {})
                 ON CONFLICT (instance_id) DO UPDATE SET
                     one_time_code_expiry_minutes = EXCLUDED.one_time_code_expiry_minutes,
                     encryption_key_validity_days = EXCLUDED.encryption_key_validity_days,
                     claim_key_ban_duration_minutes = EXCLUDED.claim_key_ban_duration_minutes,
                     statement_timeout_ms = EXCLUDED.statement_timeout_ms,
                     refreshed = EXCLUDED.refreshed",
                    database_clock_sql(7)
                ),
                &[
                    &instance.id,
                    &whole_minutes(limits.one_time_code_expiry),
                    &validity_days.max(1),
                    &whole_minutes(limits.claim_ban_duration),
                    &statement_timeout_ms,
                    &instance.started,
                    &self.database_clock_override(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Every row of `submit_settings`, the most recently refreshed first.
    pub async fn recorded_submit_settings(&self) -> Result<Vec<RecordedSettings>, StoreError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT instance_id, one_time_code_expiry_minutes, encryption_key_validity_days,
                        claim_key_ban_duration_minutes, statement_timeout_ms, started, refreshed
                   FROM submit_settings ORDER BY refreshed DESC, instance_id",
                &[],
            )
            .await?;
        rows.iter().map(row_to_settings).collect()
    }

    /// Deletes the rows last refreshed before `before` ([`stale_before`]); returns how many.
    pub async fn delete_stale_submit_settings(
        &self,
        before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Ok(self
            .pool
            .get()
            .await?
            .execute(
                "DELETE FROM submit_settings WHERE refreshed < $1",
                &[&before],
            )
            .await?)
    }
}

/// The rows of the replicas live at `now`: refreshed less than [`LIVE_FOR`] ago (or in the
/// future of a clock behind theirs).
pub fn live_settings(rows: &[RecordedSettings], now: DateTime<Utc>) -> Vec<&RecordedSettings> {
    rows.iter()
        .filter(|row| row.refreshed > now - LIVE_FOR)
        .collect()
}

/// The rows retention goes by: those of the live replicas; when none is live, those of the
/// replicas that were live when the newest row was last refreshed (the latest recorded
/// settings); none when no row was ever recorded.
fn governing_settings(rows: &[RecordedSettings], now: DateTime<Utc>) -> Vec<&RecordedSettings> {
    let live = live_settings(rows, now);
    if !live.is_empty() {
        return live;
    }
    match rows.iter().map(|row| row.refreshed).max() {
        Some(newest) => live_settings(rows, newest),
        None => Vec::new(),
    }
}

/// What retention deletes codes, keypairs and failed claims by (DESIGN §4.2, §6): the most
/// lenient limits of the governing rows, each within its cap, so that no replica's code, keypair
/// or ban is deleted while that replica still honours it, and no personal data outlives 21
/// days whatever a row says. `None` when no replica has ever recorded its settings.
pub fn retention_policy(rows: &[RecordedSettings], now: DateTime<Utc>) -> Option<RetentionPolicy> {
    let governing = governing_settings(rows, now);
    let limits = governing.iter().map(|row| row.limits);
    let cap = Duration::minutes(MAX_LIMIT_MINUTES);
    Some(RetentionPolicy {
        one_time_code_expiry: limits
            .clone()
            .map(|l| l.one_time_code_expiry)
            .max()?
            .min(cap),
        keypair_validity_days: limits
            .clone()
            .map(|l| l.encryption_key_validity_days)
            .max()?
            .min(MAX_KEYPAIR_VALIDITY_DAYS),
        claim_ban_duration: limits.map(|l| l.claim_ban_duration).max()?.min(cap),
    })
}

/// The longest statement timeout a live replica's uploads run under, if any replica is live: the
/// grace must exceed it (DESIGN §2).
pub fn longest_live_statement_timeout(
    rows: &[RecordedSettings],
    now: DateTime<Utc>,
) -> Option<std::time::Duration> {
    live_settings(rows, now)
        .iter()
        .map(|row| row.limits.statement_timeout)
        .max()
}

/// Rows last refreshed before this instant are deleted: [`STALE_ROWS_KEPT_FOR`] before the
/// newest refresh (or before `now`, if a row claims a later one), so the latest recorded
/// settings, which retention falls back on, are never deleted. `None` when there is no row.
pub fn stale_before(rows: &[RecordedSettings], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let newest = rows.iter().map(|row| row.refreshed).max()?;
    Some(newest.min(now) - STALE_ROWS_KEPT_FOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap() + Duration::minutes(minutes)
    }

    fn row(id: &str, validity: u32, expiry: i64, ban: i64, refreshed: i64) -> RecordedSettings {
        RecordedSettings {
            instance_id: id.to_owned(),
            limits: SubmitLimits {
                one_time_code_expiry: Duration::minutes(expiry),
                encryption_key_validity_days: validity,
                claim_ban_duration: Duration::minutes(ban),
                statement_timeout: std::time::Duration::from_millis(5_000),
            },
            started: at(-600),
            refreshed: at(refreshed),
        }
    }

    fn policy(validity: u32, expiry: i64, ban: i64) -> Option<RetentionPolicy> {
        Some(RetentionPolicy {
            one_time_code_expiry: Duration::minutes(expiry),
            keypair_validity_days: validity,
            claim_ban_duration: Duration::minutes(ban),
        })
    }

    #[test]
    fn retention_goes_by_the_most_lenient_live_replica() {
        // Two live replicas, each the most lenient in something; a stale one more lenient still.
        let rows = [
            row("a", 20, 60, 30, -1),
            row("b", 5, 1440, 120, -4),
            row("gone", 20, 10_080, 10_080, -6),
        ];
        assert_eq!(retention_policy(&rows, at(0)), policy(20, 1440, 120));
        // A minute later b's row is five minutes old: a alone is live.
        assert_eq!(retention_policy(&rows, at(1)), policy(20, 60, 30));
    }

    #[test]
    fn with_no_live_replica_retention_goes_by_the_latest_recorded_settings() {
        let rows = [
            row("last", 10, 60, 60, -120),
            row("with-it", 12, 30, 90, -123),
            row("before", 20, 1440, 1440, -200),
        ];
        // Those live when the newest row was refreshed: "last" and "with-it", not "before".
        assert_eq!(retention_policy(&rows, at(0)), policy(12, 60, 90));
        assert_eq!(retention_policy(&rows, at(100_000)), policy(12, 60, 90));
        assert_eq!(retention_policy(&[], at(0)), None);
    }

    #[test]
    fn no_row_can_keep_personal_data_past_its_cap() {
        let rows = [row("a", 30, 20_000, 50_000, 0)];
        assert_eq!(retention_policy(&rows, at(0)), policy(20, 10_080, 10_080));
    }

    #[test]
    fn only_live_replicas_count_for_the_statement_timeout() {
        let mut slow = row("slow", 15, 60, 60, -10);
        slow.limits.statement_timeout = std::time::Duration::from_secs(900);
        let mut live = row("live", 15, 60, 60, 0);
        live.limits.statement_timeout = std::time::Duration::from_secs(7);
        let rows = [slow, live];
        assert_eq!(
            longest_live_statement_timeout(&rows, at(0)),
            Some(std::time::Duration::from_secs(7))
        );
        assert_eq!(longest_live_statement_timeout(&rows, at(10)), None);
    }

    #[test]
    fn stale_rows_go_a_day_after_the_newest_refresh() {
        let rows = [row("a", 15, 60, 60, -3_000), row("b", 15, 60, 60, -10)];
        assert_eq!(
            stale_before(&rows, at(0)),
            Some(at(-10) - Duration::days(1))
        );
        // A row refreshed in the future of the exporter's clock does not move the cut.
        let ahead = [row("a", 15, 60, 60, 30)];
        assert_eq!(stale_before(&ahead, at(0)), Some(at(0) - Duration::days(1)));
        assert_eq!(stale_before(&[], at(0)), None);
    }

    #[test]
    fn recorded_minutes_are_never_shorter_than_the_limit() {
        assert_eq!(whole_minutes(Duration::minutes(60)), 60);
        assert_eq!(whole_minutes(Duration::seconds(61)), 2);
        assert_eq!(whole_minutes(Duration::seconds(0)), 1);
        assert_eq!(whole_minutes(Duration::days(100_000)), 144_000_000);
    }
}
