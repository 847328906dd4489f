//! What a pass takes from the submit service's recorded settings (`submit_settings`, DESIGN
//! §6): the limits database retention deletes codes, keypairs and failed claims by, and the
//! statement timeouts `EXPORT_GRACE_SECONDS` must exceed (DESIGN §2). The exporter has no
//! configuration of its own for either, so the two services cannot disagree about them.
//!
//! This module only reads and reports; it never changes a setting, and its logs name variables
//! and values, nothing else.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diagnosis_core::store::RetentionReport;
use diagnosis_core::store::submit_settings::{
    longest_live_statement_timeout, retention_policy, stale_before,
};

use super::{ExportError, Exporter};

/// A setting of the exporter that does not fit what a live submit replica records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsMismatch {
    /// `EXPORT_GRACE_SECONDS` does not exceed the `DATABASE_STATEMENT_TIMEOUT_MS` a live replica's
    /// uploads run under: an upload that began inside an hour may still be running when the
    /// hour is read.
    StatementTimeout {
        grace_seconds: i64,
        statement_timeout: Duration,
    },
}

impl SettingsMismatch {
    /// Every value of the `setting` label of `exporter_settings_mismatch`.
    pub const SETTINGS: [&'static str; 1] = ["statement_timeout"];

    /// The value of the `setting` label of `exporter_settings_mismatch`.
    pub fn setting(&self) -> &'static str {
        match self {
            SettingsMismatch::StatementTimeout { .. } => "statement_timeout",
        }
    }
}

/// The mismatch of `grace_seconds` with the longest statement timeout of a live replica, if the
/// grace does not exceed it.
fn grace_mismatch(grace_seconds: i64, longest: Option<Duration>) -> Option<SettingsMismatch> {
    let statement_timeout = longest?;
    let grace = Duration::from_secs(u64::try_from(grace_seconds).unwrap_or(0));
    (grace <= statement_timeout).then_some(SettingsMismatch::StatementTimeout {
        grace_seconds,
        statement_timeout,
    })
}

impl Exporter {
    /// The start-up check of every pass, locked or not: compares `EXPORT_GRACE_SECONDS` with the
    /// statement timeouts the live submit replicas record, sets `exporter_settings_mismatch` (1
    /// for a mismatch, 0 otherwise) and logs a mismatch. Settings that cannot be read leave the
    /// gauge as it was.
    pub(super) async fn check_settings(&self, now: DateTime<Utc>) -> Vec<SettingsMismatch> {
        let recorded = match self.store.recorded_submit_settings().await {
            Ok(recorded) => recorded,
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot read the submit service's recorded settings to check \
                     EXPORT_GRACE_SECONDS against its statement timeout"
                );
                return Vec::new();
            }
        };
        let longest = longest_live_statement_timeout(&recorded, self.database_now_or(now).await);
        let mismatches: Vec<SettingsMismatch> =
            grace_mismatch(self.settings.grace_seconds, longest)
                .into_iter()
                .collect();
        for setting in SettingsMismatch::SETTINGS {
            let found = mismatches.iter().any(|m| m.setting() == setting);
            metrics::gauge!("exporter_settings_mismatch", "setting" => setting).set(if found {
                1.0
            } else {
                0.0
            });
        }
        for mismatch in &mismatches {
            let SettingsMismatch::StatementTimeout {
                grace_seconds,
                statement_timeout,
            } = mismatch;
            tracing::warn!(
                export_grace_seconds = grace_seconds,
                submit_statement_timeout_ms =
                    u64::try_from(statement_timeout.as_millis()).unwrap_or(u64::MAX),
                "EXPORT_GRACE_SECONDS ({grace_seconds} s) does not exceed the \
                 DATABASE_STATEMENT_TIMEOUT_MS ({} ms) a live submit replica's uploads run under: \
                 an upload may still commit into an hour already read; raise \
                 EXPORT_GRACE_SECONDS or lower the submit service's DATABASE_STATEMENT_TIMEOUT_MS",
                statement_timeout.as_millis()
            );
        }
        mismatches
    }

    /// The database's clock, which stamps the replicas' refreshes; `now` when it cannot be read
    /// (the pass's own clock differs from it by less than the grace, [`Exporter::check_clock`]).
    async fn database_now_or(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.store.database_now().await.unwrap_or(now)
    }

    /// Step (4): database retention, by the most lenient limits of the live submit replicas (the
    /// latest recorded ones when none is live); with none recorded yet, codes, keypairs and
    /// failed claims are left alone and only diagnosis keys are deleted. Then the rows of
    /// replicas gone for a day are deleted.
    pub(super) async fn purge(&self, now: DateTime<Utc>) -> Result<RetentionReport, ExportError> {
        let recorded = self.store.recorded_submit_settings().await?;
        // Which replicas are live is judged by the clock their refreshes are stamped with.
        let database_now = self.database_now_or(now).await;
        let policy = retention_policy(&recorded, database_now);
        match &policy {
            Some(policy) => tracing::debug!(
                one_time_code_expiry_minutes = policy.one_time_code_expiry.num_minutes(),
                encryption_key_validity_days = policy.keypair_validity_days,
                claim_key_ban_duration_minutes = policy.claim_ban_duration.num_minutes(),
                "retention goes by the submit service's recorded settings"
            ),
            None => tracing::warn!(
                "no submit replica has recorded its settings in submit_settings yet: unclaimed \
                 codes, keypairs and failed claims are kept until one has; diagnosis keys are \
                 deleted as usual"
            ),
        }
        // Ages are judged by the earlier of the two clocks: an exporter whose clock runs ahead
        // of the database's (by less than the grace, or the pass would have stopped) must not
        // delete a code, a keypair or a ban that much early.
        let report = self
            .store
            .purge_expired(now.min(database_now), policy)
            .await?;
        if let Some(before) = stale_before(&recorded, database_now) {
            self.store.delete_stale_submit_settings(before).await?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grace_must_exceed_the_longest_live_statement_timeout() {
        let ms = Duration::from_millis;
        assert_eq!(grace_mismatch(600, None), None);
        assert_eq!(grace_mismatch(600, Some(ms(599_999))), None);
        for timeout in [ms(600_000), ms(600_001), ms(3_600_000)] {
            assert_eq!(
                grace_mismatch(600, Some(timeout)),
                Some(SettingsMismatch::StatementTimeout {
                    grace_seconds: 600,
                    statement_timeout: timeout,
                })
            );
        }
    }
}
