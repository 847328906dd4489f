//! What a pass takes from the submit service's recorded settings (`submit_settings`, DESIGN
//! §6): the limits database retention deletes codes, keypairs and failed claims by. The
//! exporter has no configuration of its own for them, so the two services cannot disagree
//! about them.
//!
//! This module only reads; it never changes a setting, and its logs name variables and values,
//! nothing else.

use chrono::{DateTime, Utc};
use diagnosis_core::store::RetentionReport;
use diagnosis_core::store::submit_settings::{retention_policy, stale_before};

use super::{ExportError, Exporter};

impl Exporter {
    /// Step (4): database retention, by the most lenient limits of the live submit replicas (the
    /// latest recorded ones when none is live); with none recorded yet, codes, keypairs and
    /// failed claims are left alone and only diagnosis keys are deleted. Then the rows of
    /// replicas gone for a day are deleted.
    pub(super) async fn purge(&self, now: DateTime<Utc>) -> Result<RetentionReport, ExportError> {
        let recorded = self.store.recorded_submit_settings().await?;
        let policy = retention_policy(&recorded, now);
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
        let report = self.store.purge_expired(now, policy).await?;
        if let Some(before) = stale_before(&recorded, now) {
            self.store.delete_stale_submit_settings(before).await?;
        }
        Ok(report)
    }
}
