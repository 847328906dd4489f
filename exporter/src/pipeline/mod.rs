//! The export pipeline (DESIGN §4, STYLE 6): select closed windows → stream keys
//! from Postgres → render `export.bin` → sign → zip → upload → record in the
//! `exports` ledger → rewrite indexes, plus object and database retention and
//! the exposure configurations.
//!
//! Object keys and file bytes are deterministic (canonical order, RFC 6979
//! signatures, fixed zip metadata, padding derived from a stored secret), so a
//! rerun after a crash rewrites identical objects and finishes the work. Only
//! one exporter works at a time (a Postgres advisory lock). This module must
//! never log key material.

mod configs;
mod derive;
mod indexes;
mod plan;
mod retrieval;
mod window;

use std::sync::Arc;

use bytes::Bytes;
use diagnosis_core::store::{PoolMetricsTask, RetentionReport, Store, StoreError};
use diagnosis_core::time::{Clock, HourNumber, RELEVANCE_DAYS, UnixSeconds};
use diagnosis_format::archive::ArchiveError;
use diagnosis_format::names::{ObjectKind, daily_index_key, hourly_index_key, manifest_key};
use diagnosis_format::render::RenderError;
use diagnosis_format::sign::{SignError, SigningKeys};

pub use configs::RefusedConfig;
pub use derive::{CHUNK_BYTES, read_published_keys};
pub use indexes::{index_txt, manifest_json};
pub use plan::{complete_days, hours_to_publish, oldest_indexed_hour};
pub use window::{Window, WindowKind};

use crate::config::ExportSettings;
use crate::padding::Padding;
use crate::storage::{Bucket, StorageError};

/// Why a pass failed. Whatever was published before the failure is consistent:
/// indexes only ever name objects that exist.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("window boundary {0} is out of range")]
    Window(i64),
    #[error("EXPOSURE_CONFIG_DIR: cannot read {0}: {1}")]
    ConfigDir(String, std::io::Error),
    /// A published file could not be read back to build a bigger window from it.
    #[error("reading back a published file: {0}")]
    Derive(String),
    /// The upload step ended (after an error of its own).
    #[error("the upload step stopped before every part was published")]
    UploadStopped,
    /// The thread signing and compressing a part panicked or was cancelled; the message is
    /// the panic's own.
    #[error("signing and compressing a part failed: {0}")]
    SigningThread(String),
}

/// A pass's result once its lock is released: the pass's own error explains more than a
/// failure to unlock after it, so it wins and the release error is only logged (the lock goes
/// all the same: a session that fails to unlock is closed). A pass that succeeded fails when
/// the release does.
fn after_release<T>(
    result: Result<T, ExportError>,
    released: Result<(), StoreError>,
) -> Result<T, ExportError> {
    match (result, released) {
        (result, Ok(())) => result,
        (Err(e), Err(release)) => {
            tracing::warn!(error = %release, "cannot release the exporter lock after a failed pass");
            Err(e)
        }
        (Ok(_), Err(release)) => Err(release.into()),
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The hours published, oldest first.
    pub hours: Vec<i64>,
    /// The UTC days whose daily file was published.
    pub days: Vec<i64>,
    pub files: usize,
    pub keys: i64,
    pub bytes: i64,
    /// Objects deleted because they left the indexes in an earlier pass.
    pub deleted_objects: usize,
    pub retention: RetentionReport,
    pub configs_published: usize,
    /// Retrieval objects for the deployed apps rebuilt (§4.3).
    pub retrieval_objects: usize,
    pub refused_configs: Vec<RefusedConfig>,
}

/// The result of [`Exporter::run_once`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Another exporter holds the lock; this one did nothing.
    Skipped,
    Completed(RunReport),
}

/// Everything a pass needs.
pub struct Exporter {
    store: Store,
    bucket: Bucket,
    clock: Arc<dyn Clock>,
    settings: ExportSettings,
    signing: SigningKeys,
    padding: Option<Padding>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("bucket", &self.bucket)
            .field("settings", &self.settings)
            .field("signers", &self.signing.len())
            .finish()
    }
}

/// The name of the padding secret in `exporter_secrets`.
const PADDING_SECRET: &str = "padding";

impl Exporter {
    /// Builds an exporter; with padding on, reads (or creates) the padding secret.
    pub async fn new(
        store: Store,
        bucket: Bucket,
        clock: Arc<dyn Clock>,
        settings: ExportSettings,
        signing: SigningKeys,
    ) -> Result<Exporter, ExportError> {
        let padding = if settings.pad_min_keys > 0 {
            let secret = store.exporter_secret(PADDING_SECRET, clock.now()).await?;
            Some(Padding::new(secret, settings.pad_min_keys))
        } else {
            None
        };
        Ok(Exporter {
            store,
            bucket,
            clock,
            settings,
            signing,
            padding,
        })
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The clock passes read "now" from; the scheduled mode waits for its ticks on it too.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Samples the connection-pool gauges (`db_pool_*`) until the returned guard is dropped.
    pub fn spawn_pool_metrics(&self) -> PoolMetricsTask {
        self.store.spawn_pool_metrics()
    }

    /// One full pass: retention, exposure configurations, every closed hour not
    /// yet published (in order), every completed day, then the indexes. Skips
    /// when another exporter is at work.
    pub async fn run_once(&self) -> Result<RunOutcome, ExportError> {
        let started = std::time::Instant::now();
        let region = self.settings.export_region.as_str().to_owned();
        let Some(lock) = self.store.try_lock_exporter(&region).await? else {
            tracing::info!("another exporter holds the lock; skipping this run");
            metrics::counter!("exporter_runs_total", "outcome" => "skipped").increment(1);
            metrics::histogram!("exporter_run_duration_seconds", "outcome" => "skipped")
                .record(started.elapsed().as_secs_f64());
            self.record_export_lag(&region).await;
            return Ok(RunOutcome::Skipped);
        };
        let result = self.run_locked(&region).await;
        let result = after_release(result, lock.release().await);
        let outcome = if result.is_ok() {
            "completed"
        } else {
            "failed"
        };
        metrics::counter!("exporter_runs_total", "outcome" => outcome).increment(1);
        metrics::histogram!("exporter_run_duration_seconds", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        if result.is_ok() {
            metrics::gauge!("exporter_last_success_timestamp_seconds")
                .set(self.clock.now().timestamp() as f64);
        }
        self.record_export_lag(&region).await;
        result.map(RunOutcome::Completed)
    }

    /// Sets `exporter_last_published_hour` and `exporter_export_lag_hours` (the last closed
    /// hour minus the last published one) from the ledger, whoever published: a pass that
    /// failed or skipped reports the lag too. Leaves both as they were when the ledger cannot
    /// be read or holds no hour yet.
    async fn record_export_lag(&self, region: &str) {
        let last_published = match self
            .store
            .last_published_end(region, WindowKind::Hourly.as_str())
            .await
        {
            Ok(Some(end)) => HourNumber::ending_at(end),
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the ledger for the export lag");
                return;
            }
        };
        let last_closed =
            HourNumber::last_closed(self.clock.unix_now(), self.settings.grace_seconds);
        metrics::gauge!("exporter_last_published_hour").set(last_published.get() as f64);
        metrics::gauge!("exporter_export_lag_hours")
            .set(last_closed.since(last_published).max(0) as f64);
    }

    async fn run_locked(&self, region: &str) -> Result<RunReport, ExportError> {
        let now = self.clock.now();
        let now_unix = UnixSeconds::from(now);
        let mut report = RunReport {
            retention: self
                .store
                .purge_expired(now, self.settings.retention)
                .await?,
            ..RunReport::default()
        };

        // Objects that left the indexes in an earlier pass (index first, object later).
        for key in self
            .store
            .exports_to_delete(region, now - self.settings.delete_unindexed_after)
            .await?
        {
            self.bucket.delete(&key).await?;
            self.store.mark_deleted(&key, now).await?;
            report.deleted_objects += 1;
        }

        if let Some(dir) = &self.settings.exposure_config_dir {
            let (published, refused) = self.publish_exposure_configs(dir).await?;
            report.configs_published = published;
            report.refused_configs = refused;
        }

        let hourly = WindowKind::Hourly.as_str();
        let last_published_hour = self
            .store
            .last_published_end(region, hourly)
            .await?
            .map(HourNumber::ending_at);
        let earliest_key_hour = match last_published_hour {
            Some(_) => None,
            None => {
                self.store
                    .earliest_publish_hour(
                        &self.settings.key_region,
                        oldest_indexed_hour(now_unix),
                        HourNumber::last_closed(now_unix, self.settings.grace_seconds),
                    )
                    .await?
            }
        };
        let hours: Vec<HourNumber> = hours_to_publish(
            now_unix,
            self.settings.grace_seconds,
            last_published_hour,
            earliest_key_hour,
        )
        .collect();
        let windows: Vec<Window> = hours.iter().copied().map(Window::hour).collect();
        self.publish_all(&windows, &mut report).await?;
        report.hours = hours.iter().map(|hour| hour.get()).collect();

        let hourly_indexed = self
            .store
            .indexed_exports(region, hourly, oldest_indexed_hour(now_unix).start())
            .await?;
        if let (Some(first), Some(last)) = (hourly_indexed.first(), hourly_indexed.last()) {
            let first_hour = UnixSeconds::new(first.start_ts).hour();
            let last_hour = UnixSeconds::new(last.start_ts).hour();
            let mut days = Vec::new();
            for day in complete_days(now_unix, first_hour, last_hour) {
                if !self
                    .store
                    .is_published(region, WindowKind::Daily.as_str(), day.start())
                    .await?
                {
                    days.push(day);
                }
            }
            // The days and the retrieval objects go through one pipeline: both are merged
            // from the hourly files published above, and none of them needs another.
            let mut windows: Vec<Window> = days.iter().copied().map(Window::day).collect();
            let retrieval = self
                .stale_retrieval(now_unix.day(), first_hour, last_hour)
                .await?;
            report.retrieval_objects = retrieval.len();
            windows.extend(retrieval);
            self.publish_all(&windows, &mut report).await?;
            report.days = days.iter().map(|day| day.get()).collect();
        }

        self.write_indexes(region, now).await?;
        tracing::info!(
            hours = report.hours.len(),
            days = report.days.len(),
            files = report.files,
            keys = report.keys,
            bytes = report.bytes,
            deleted_objects = report.deleted_objects,
            refused_configs = report.refused_configs.len(),
            "export run completed"
        );
        Ok(report)
    }

    /// Publishes `windows` in order, as two concurrent steps joined by a one-part queue: one
    /// streams keys and renders parts, the other signs, compresses (on a blocking thread) and
    /// uploads them, and writes a window's ledger rows once all its parts are uploaded. So the
    /// database read, the rendering and the compression overlap, and at most two parts are in
    /// memory, within `PART_MEMORY_MIB` together unless one part alone is larger. When either step fails, the other stops after its current part: nothing
    /// after a failed part is uploaded, and the ledger names only uploaded windows.
    async fn publish_all(
        &self,
        windows: &[Window],
        report: &mut RunReport,
    ) -> Result<(), ExportError> {
        let (parts, mut queue) = tokio::sync::mpsc::channel::<window::PartJob>(1);
        let memory = Arc::new(tokio::sync::Semaphore::new(
            window::PART_MEMORY_MIB as usize,
        ));
        let render = async move {
            for &window in windows {
                self.render_window(window, &parts, &memory).await?;
            }
            Ok::<(), ExportError>(())
        };
        // Moved in, so that the queue closes when this step ends, even on an error.
        let upload = async move {
            let mut records = Vec::new();
            while let Some(job) = queue.recv().await {
                let last = job.last;
                records.push(self.upload_job(job).await?);
                if last {
                    // The ledger is written after every part of the window is uploaded.
                    self.store
                        .record_exports(&records, self.clock.now())
                        .await?;
                    for record in records.drain(..) {
                        report.files += 1;
                        report.keys += record.key_count;
                        report.bytes += record.bytes;
                    }
                }
            }
            Ok::<(), ExportError>(())
        };
        let (rendered, uploaded) = tokio::join!(render, upload);
        // The upload step's own error explains a render step stopped by it.
        uploaded.and(rendered)
    }

    /// Rewrites the indexes from the ledger, then marks the files that fell out
    /// of the 14-day window as unindexed (their objects go in a later pass).
    async fn write_indexes(
        &self,
        region: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ExportError> {
        let now_unix = UnixSeconds::from(now);
        let hourly_since = oldest_indexed_hour(now_unix).start();
        let daily_since = now_unix.day().plus(-RELEVANCE_DAYS).start();
        let hourly = self
            .store
            .indexed_exports(region, WindowKind::Hourly.as_str(), hourly_since)
            .await?;
        let daily = self
            .store
            .indexed_exports(region, WindowKind::Daily.as_str(), daily_since)
            .await?;
        self.bucket
            .put(
                &hourly_index_key(region),
                Bytes::from(index_txt(&hourly)),
                ObjectKind::Index,
            )
            .await?;
        self.bucket
            .put(
                &daily_index_key(region),
                Bytes::from(index_txt(&daily)),
                ObjectKind::Index,
            )
            .await?;
        self.bucket
            .put(
                &manifest_key(region),
                manifest_json(region, now_unix.get(), &hourly, &daily),
                ObjectKind::Manifest,
            )
            .await?;
        self.store
            .mark_unindexed(region, WindowKind::Hourly.as_str(), hourly_since, now)
            .await?;
        self.store
            .mark_unindexed(region, WindowKind::Daily.as_str(), daily_since, now)
            .await?;
        // The apps' per-day objects go with the daily files (the edge answers
        // 410 for those days anyway); the 00000 bundle is rewritten, never retired.
        self.store
            .mark_unindexed(region, WindowKind::RetrieveDay.as_str(), daily_since, now)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pass_error_wins_over_the_release_error() {
        let pass = || Err::<(), _>(ExportError::Window(7));
        let release = || Err(StoreError::Config("unlock failed".to_owned()));
        let error = after_release(pass(), release()).unwrap_err();
        assert!(matches!(error, ExportError::Window(7)), "{error}");
        let error = after_release(Ok(()), release()).unwrap_err();
        assert!(error.to_string().contains("unlock failed"), "{error}");
        assert!(matches!(
            after_release(pass(), Ok(())),
            Err(ExportError::Window(7))
        ));
        assert!(after_release(Ok(3), Ok(())).is_ok_and(|n| n == 3));
    }
}
