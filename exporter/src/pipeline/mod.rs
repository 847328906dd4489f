//! The export pipeline (DESIGN §4, STYLE 6): select closed windows → stream keys
//! from Postgres → render `export.bin` → sign → zip → upload → record in the
//! `exports` ledger → rewrite indexes, plus object and database retention and
//! the exposure configurations.
//!
//! Object keys and file bytes are deterministic (canonical order, RFC 6979
//! signatures, fixed zip metadata, padding derived from a stored secret), so a
//! rerun after a crash rewrites identical objects and finishes the work.
//!
//! A pass runs isolated steps, publication first (DESIGN §4.2): the closed hours,
//! then the indexes; the daily and retrieval files, then the indexes again; then
//! the exposure configurations, database retention and the deletion of objects
//! that left the indexes. A failing step is logged and counted
//! (`exporter_step_failures_total{step}`) and fails the pass, but the steps after
//! it still run, so nothing that goes wrong after publication can keep new hours
//! from being indexed, in this pass or the next.
//!
//! Only one exporter works at a time (a Postgres advisory lock), and the lock is
//! fenced: every bucket write and ledger write of a pass is made under a
//! [`FenceHold`] that checks the pass still holds the lock and keeps a successor
//! from taking it over until the write is done. A pass that lost its lock stops
//! at its next write. This module must never log key material.

mod configs;
mod derive;
mod indexes;
mod plan;
mod retrieval;
mod settings;
mod sources;
mod window;

use std::sync::Arc;

use bytes::Bytes;
use diagnosis_core::store::{
    ExportRecord, Fence, FenceHold, PoolMetricsTask, RetentionReport, Store, StoreError,
};
use diagnosis_core::time::{Clock, HourNumber, RELEVANCE_DAYS, UnixSeconds};
use diagnosis_format::archive::ArchiveError;
use diagnosis_format::names::{ObjectKind, daily_index_key, hourly_index_key, manifest_key};
use diagnosis_format::render::RenderError;
use diagnosis_format::sign::{SignError, SigningKeys};

pub use configs::RefusedConfig;
pub use derive::CHUNK_BYTES;
pub use indexes::{index_txt, manifest_for, manifest_json};
pub use plan::{complete_days, hours_to_publish, oldest_indexed_hour};
pub use settings::SettingsMismatch;
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
    /// A published object a derived file is merged from differs from its ledger row or is
    /// missing, and could not be rebuilt with the bytes the ledger records: nothing is merged
    /// from it (DESIGN §4.2).
    #[error(
        "{key} {problem} and could not be rebuilt with the bytes its ledger row records ({reason}); files derived from it are not published"
    )]
    SourceNotRepaired {
        key: String,
        problem: &'static str,
        reason: String,
    },
    /// The upload step ended (after an error of its own).
    #[error("the upload step stopped before every part was published")]
    UploadStopped,
    /// The thread signing and compressing a part panicked or was cancelled; the message is
    /// the panic's own.
    #[error("signing and compressing a part failed: {0}")]
    SigningThread(String),
    /// This exporter's clock and the database's differ by more than the grace: the pass
    /// publishes nothing (DESIGN §4.2).
    #[error(
        "this exporter's clock ({exporter}) differs from the database's ({database}) by more than EXPORT_GRACE_SECONDS ({grace_seconds} s); nothing is published until the clocks agree"
    )]
    ClockSkew {
        exporter: chrono::DateTime<chrono::Utc>,
        database: chrono::DateTime<chrono::Utc>,
        grace_seconds: i64,
    },
    /// One or more steps of a pass failed; the report says what the pass did all the same
    /// and which steps failed, and why.
    #[error("{}", describe_failures(&.0.failures))]
    StepsFailed(Box<RunReport>),
}

impl ExportError {
    /// Whether the pass lost its lock: nothing more may be written.
    fn lost_lock(&self) -> bool {
        matches!(self, ExportError::Store(StoreError::LostLock))
    }
}

fn describe_failures(failures: &[StepFailure]) -> String {
    let steps: Vec<String> = failures
        .iter()
        .map(|failure| format!("step {}: {}", failure.step.as_str(), failure.error))
        .collect();
    format!("export pass failed in {}", steps.join("; "))
}

/// The isolated steps of a pass (DESIGN §4.2), in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every closed hour not yet published.
    Hours,
    /// `index.txt`, `daily/index.txt` and `index.json`, rewritten from the ledger.
    Indexes,
    /// Daily files and the retrieval objects of the deployed apps.
    Derived,
    /// Exposure configurations.
    Configs,
    /// Database retention.
    Retention,
    /// Objects deleted once they have been out of the indexes long enough.
    Deletions,
}

impl Step {
    /// The value of the `step` label of `exporter_step_failures_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Hours => "hours",
            Step::Indexes => "indexes",
            Step::Derived => "derived",
            Step::Configs => "configs",
            Step::Retention => "retention",
            Step::Deletions => "deletions",
        }
    }
}

/// A step that failed, and why (the error's text: no key material, DESIGN §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub step: Step,
    pub error: String,
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

/// How long a [`FenceHold`] may stay idle in its transaction: one store operation, retries
/// included, and a margin for the round trips around it (DESIGN §4.2: a slow store is not a
/// broken one).
fn fence_idle_limit(bucket: &Bucket) -> std::time::Duration {
    bucket
        .request_budget()
        .saturating_add(std::time::Duration::from_secs(30))
}

/// What a pipeline of windows does when one of them fails ([`Exporter::publish_windows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failures {
    /// The pipeline stops: the hours are published without a gap or not at all.
    StopAll,
    /// The window is given up and the next one goes on: derived files are independent.
    PerWindow,
}

/// Whether an error ends a pipeline even when its windows fail one by one: the lock is lost,
/// or the other step ended.
fn stops_pipeline(error: &ExportError) -> bool {
    error.lost_lock() || matches!(error, ExportError::UploadStopped)
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
    /// The exporter's settings that do not fit the live submit replicas' recorded ones, found
    /// when the pass started (logged, and `exporter_settings_mismatch`); the pass goes on.
    pub settings_mismatches: Vec<SettingsMismatch>,
    /// The steps that failed; the pass then fails with [`ExportError::StepsFailed`].
    pub failures: Vec<StepFailure>,
}

impl RunReport {
    /// Counts the files of a window whose ledger rows were just written.
    fn count_published(&mut self, records: impl Iterator<Item = ExportRecord>) {
        for record in records {
            self.files += 1;
            self.keys += record.key_count;
            self.bytes += record.bytes;
        }
    }
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
    /// The fence of the pass at work, if any: every write is checked against it.
    fence: std::sync::Mutex<Option<Fence>>,
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

/// A part on its way from the seal step to the upload step of [`Exporter::publish_windows`]:
/// zipped, or the error that stopped it.
struct SealedJob {
    window: Window,
    last: bool,
    part: Result<window::SealedPart, ExportError>,
}

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
            fence: std::sync::Mutex::new(None),
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

    /// One full pass (the steps of [`Step`], in order). Skips when another exporter is at
    /// work; fails with [`ExportError::StepsFailed`] when a step failed.
    pub async fn run_once(&self) -> Result<RunOutcome, ExportError> {
        let started = std::time::Instant::now();
        let region = self.settings.export_region.as_str().to_owned();
        let mismatches = self.check_settings(self.clock.now()).await;
        let Some(lock) = self.store.try_lock_exporter(&region).await? else {
            tracing::info!("another exporter holds the lock; skipping this run");
            metrics::counter!("exporter_runs_total", "outcome" => "skipped").increment(1);
            metrics::histogram!("exporter_run_duration_seconds", "outcome" => "skipped")
                .record(started.elapsed().as_secs_f64());
            self.record_export_lag(&region).await;
            return Ok(RunOutcome::Skipped);
        };
        self.set_fence(Some(lock.fence().clone()));
        let result = self.run_locked(&region, mismatches).await;
        self.set_fence(None);
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

    fn set_fence(&self, fence: Option<Fence>) {
        match self.fence.lock() {
            Ok(mut current) => *current = fence,
            Err(poisoned) => *poisoned.into_inner() = fence,
        }
    }

    /// Opens a [`FenceHold`] for the pass at work: fails with [`StoreError::LostLock`] when
    /// the pass no longer holds the lock (or none is at work).
    pub(super) async fn hold_fence(&self) -> Result<FenceHold, ExportError> {
        let fence = match self.fence.lock() {
            Ok(fence) => fence.clone(),
            Err(_) => None,
        };
        let fence = fence.ok_or(StoreError::LostLock)?;
        Ok(self
            .store
            .hold_fence(&fence, fence_idle_limit(&self.bucket))
            .await?)
    }

    /// Writes one object while the pass provably holds the lock (a [`FenceHold`]).
    pub(super) async fn put_fenced(
        &self,
        key: &str,
        bytes: Bytes,
        kind: ObjectKind,
    ) -> Result<(), ExportError> {
        let hold = self.hold_fence().await?;
        self.bucket.put(key, bytes, kind).await?;
        hold.commit().await?;
        Ok(())
    }

    /// Compares this exporter's clock with the database's, which files every upload under
    /// its hour (DESIGN §4.2): a pass whose clock is off by more than the grace would seal
    /// and read hours that are not closed by the database's clock, or hold closed ones back,
    /// so it publishes nothing and names both times. The difference (this clock minus the
    /// database's, in seconds, round trip included) is `exporter_clock_skew_seconds`.
    async fn check_clock(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(), ExportError> {
        let database = self.store.database_now().await?;
        let skew = (now - database).num_milliseconds() as f64 / 1000.0;
        metrics::gauge!("exporter_clock_skew_seconds").set(skew);
        if skew.abs() > self.settings.grace_seconds as f64 {
            return Err(ExportError::ClockSkew {
                exporter: now,
                database,
                grace_seconds: self.settings.grace_seconds,
            });
        }
        Ok(())
    }

    /// Records a step's outcome: a failure is logged, counted and kept in the report. Returns
    /// `false` when the pass must stop because it lost its lock.
    fn settle(&self, step: Step, result: Result<(), ExportError>, report: &mut RunReport) -> bool {
        let Err(error) = result else {
            return true;
        };
        let lost_lock = error.lost_lock();
        tracing::error!(step = step.as_str(), error = %error, "export step failed");
        metrics::counter!("exporter_step_failures_total", "step" => step.as_str()).increment(1);
        report.failures.push(StepFailure {
            step,
            error: error.to_string(),
        });
        !lost_lock
    }

    async fn run_locked(
        &self,
        region: &str,
        settings_mismatches: Vec<SettingsMismatch>,
    ) -> Result<RunReport, ExportError> {
        let now = self.clock.now();
        self.check_clock(now).await?;
        let mut report = RunReport {
            settings_mismatches,
            ..RunReport::default()
        };
        let finished = self.run_steps(region, now, &mut report).await;
        if !report.failures.is_empty() {
            if !finished {
                tracing::error!("the pass lost the exporter lock and stopped");
            }
            return Err(ExportError::StepsFailed(Box::new(report)));
        }
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

    /// Runs the steps in order (DESIGN §4.2); returns `false` when the pass stopped early
    /// because it lost its lock.
    async fn run_steps(
        &self,
        region: &str,
        now: chrono::DateTime<chrono::Utc>,
        report: &mut RunReport,
    ) -> bool {
        // (1) Every closed hour, then the indexes, whatever happened before.
        let result = self.publish_hours(region, now, report).await;
        if !self.settle(Step::Hours, result, report) {
            return false;
        }
        let result = self.write_indexes(region, now).await;
        let indexed = result.is_ok();
        if !self.settle(Step::Indexes, result, report) {
            return false;
        }

        // (2) Daily and retrieval files, then the indexes again when they changed.
        let result = self.publish_derived(region, now, report).await;
        if !self.settle(Step::Derived, result, report) {
            return false;
        }
        if !report.days.is_empty() || !indexed {
            let result = self.write_indexes(region, now).await;
            if !self.settle(Step::Indexes, result, report) {
                return false;
            }
        }

        // (3) Configurations, retention, deletions.
        if let Some(dir) = &self.settings.exposure_config_dir {
            let result = self
                .publish_exposure_configs(dir)
                .await
                .map(|(published, refused)| {
                    report.configs_published = published;
                    report.refused_configs = refused;
                });
            if !self.settle(Step::Configs, result, report) {
                return false;
            }
        }
        let result = self
            .purge(now)
            .await
            .map(|retention| report.retention = retention);
        if !self.settle(Step::Retention, result, report) {
            return false;
        }
        let result = self.delete_unindexed(region, now, report).await;
        self.settle(Step::Deletions, result, report)
    }

    /// Step (1): every closed hour not yet published, in order.
    async fn publish_hours(
        &self,
        region: &str,
        now: chrono::DateTime<chrono::Utc>,
        report: &mut RunReport,
    ) -> Result<(), ExportError> {
        let now_unix = UnixSeconds::from(now);
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
        if let Some(last) = hours.last() {
            // No upload can file a key under these hours once they are sealed (DESIGN §4.2).
            self.store
                .seal_hours(self.settings.key_region.as_str(), *last)
                .await?;
        }
        let windows: Vec<Window> = hours.iter().copied().map(Window::hour).collect();
        self.publish_all(&windows, report).await?;
        report.hours = hours.iter().map(|hour| hour.get()).collect();
        Ok(())
    }

    /// Step (2): the daily file of every complete day not yet published, and the retrieval
    /// objects that are out of date, in one pipeline. A window that fails does not keep the
    /// others back ([`Failures::PerWindow`]).
    async fn publish_derived(
        &self,
        region: &str,
        now: chrono::DateTime<chrono::Utc>,
        report: &mut RunReport,
    ) -> Result<(), ExportError> {
        let Some(windows) = self.derived_windows(region, UnixSeconds::from(now)).await? else {
            return Ok(());
        };
        let failed = self
            .publish_windows(&windows, Failures::PerWindow, report)
            .await?;
        for window in windows {
            if failed.iter().any(|(w, _)| *w == window) {
                continue;
            }
            match window.kind {
                WindowKind::Daily => report.days.push(window.first_hour.day().get()),
                WindowKind::RetrieveDay | WindowKind::RetrieveBundle => {
                    report.retrieval_objects += 1;
                }
                WindowKind::Hourly => {}
            }
        }
        let mut first_error = None;
        for (window, e) in failed {
            tracing::error!(
                kind = window.kind.as_str(),
                start = window.start().get(),
                error = %e,
                "a derived file could not be published"
            );
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The windows of step (2): the complete days among the indexed hours whose daily file is
    /// not published yet, then the retrieval objects that are out of date; `None` while no hour
    /// is indexed.
    async fn derived_windows(
        &self,
        region: &str,
        now: UnixSeconds,
    ) -> Result<Option<Vec<Window>>, ExportError> {
        let hourly_indexed = self
            .store
            .indexed_exports(
                region,
                WindowKind::Hourly.as_str(),
                oldest_indexed_hour(now).start(),
            )
            .await?;
        let (Some(first), Some(last)) = (hourly_indexed.first(), hourly_indexed.last()) else {
            return Ok(None);
        };
        let first_hour = UnixSeconds::new(first.start_ts).hour();
        let last_hour = UnixSeconds::new(last.start_ts).hour();
        let days: Vec<_> = complete_days(now, first_hour, last_hour).collect();
        let starts: Vec<i64> = days.iter().map(|day| day.start().get()).collect();
        let published = self
            .store
            .published_starts(region, WindowKind::Daily.as_str(), &starts)
            .await?;
        let mut windows: Vec<Window> = days
            .into_iter()
            .filter(|day| !published.contains(&day.start().get()))
            .map(Window::day)
            .collect();
        windows.extend(
            self.stale_retrieval(now.day(), first_hour, last_hour)
                .await?,
        );
        Ok(Some(windows))
    }

    /// Step (3): deletes the objects that left the indexes at least
    /// `DELETE_UNINDEXED_AFTER_HOURS` ago (index first, object later), each under the fence. A refused delete is retried by the next pass; the
    /// others go on.
    async fn delete_unindexed(
        &self,
        region: &str,
        now: chrono::DateTime<chrono::Utc>,
        report: &mut RunReport,
    ) -> Result<(), ExportError> {
        let mut first_error = None;
        let unindexed_before = now - self.settings.delete_unindexed_after;
        for key in self
            .store
            .exports_to_delete(region, unindexed_before)
            .await?
        {
            let deleted = async {
                let hold = self.hold_fence().await?;
                self.bucket.delete(&key).await?;
                hold.mark_deleted(&key, now).await?;
                hold.commit().await?;
                Ok::<(), ExportError>(())
            }
            .await;
            match deleted {
                Ok(()) => report.deleted_objects += 1,
                Err(e) if e.lost_lock() => return Err(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Publishes `windows` in order as one pipeline ([`Exporter::publish_windows`]); the first
    /// failure stops it.
    async fn publish_all(
        &self,
        windows: &[Window],
        report: &mut RunReport,
    ) -> Result<(), ExportError> {
        let failures = self
            .publish_windows(windows, Failures::StopAll, report)
            .await?;
        failures.into_iter().next().map_or(Ok(()), |(_, e)| Err(e))
    }

    /// Publishes `windows` in order, as three concurrent steps joined by one-part queues: one
    /// streams keys and renders parts, one signs and compresses them (on a blocking thread),
    /// and one uploads them and writes a window's ledger rows once all its parts are uploaded.
    /// So the database read, the rendering, the compression and the upload overlap, also from
    /// one window to the next, and the parts' buffers stay within `PART_MEMORY_MIB` together
    /// unless one part alone is larger ([`window::PART_MEMORY_MIB`]).
    ///
    /// With [`Failures::StopAll`], when either step fails the other stops after its current
    /// part: nothing after a failed part is uploaded. With [`Failures::PerWindow`], a window
    /// that fails (other than by losing the lock) is given up — its remaining parts are not
    /// uploaded, its ledger rows not written — and the pipeline goes on with the next window;
    /// the failed windows are returned with their errors. Either way the ledger names only
    /// windows whose every part was uploaded.
    ///
    /// A `00000` bundle is merged from the daily files (DESIGN §4.3), so it starts rendering
    /// only once the ledger rows of the daily windows before it are written (or those windows
    /// failed); the retrieval objects in between overlap with the daily file's last part.
    async fn publish_windows(
        &self,
        windows: &[Window],
        failures: Failures,
        report: &mut RunReport,
    ) -> Result<Vec<(Window, ExportError)>, ExportError> {
        // Each queue is moved into the step that sends on it, so it closes when that step
        // ends, even on an error: the steps after it then stop too.
        let (parts, queue) = tokio::sync::mpsc::channel::<window::PartJob>(1);
        let (sealed_tx, sealed) = tokio::sync::mpsc::channel::<SealedJob>(1);
        // The windows the upload step is done with: published, or failed.
        let (settled_tx, settled) = tokio::sync::watch::channel(Vec::<Window>::new());
        let (rendered, (), uploaded) = tokio::join!(
            self.render_step(windows, failures, parts, settled),
            self.seal_step(queue, sealed_tx),
            self.upload_step(sealed, failures, report, settled_tx),
        );
        // No export session outlives the windows it read (a scheduled exporter idles between
        // passes).
        self.store.close_idle_long_sessions();
        // The upload step's own error explains a render step stopped by it.
        Ok(merge_failures(windows, uploaded?, rendered?))
    }

    /// The first step of [`Exporter::publish_windows`]: renders each window into parts, in
    /// order, holding at most [`window::PART_MEMORY_MIB`] of parts in flight.
    async fn render_step(
        &self,
        windows: &[Window],
        failures: Failures,
        parts: tokio::sync::mpsc::Sender<window::PartJob>,
        settled: tokio::sync::watch::Receiver<Vec<Window>>,
    ) -> Result<Vec<(Window, ExportError)>, ExportError> {
        let memory = Arc::new(tokio::sync::Semaphore::new(
            window::PART_MEMORY_MIB as usize,
        ));
        let mut failed = Vec::new();
        // The next hour's keys are read while this one renders ([`Exporter::open_hour`]).
        let mut opened = windows.first().and_then(|&w| self.open_hour(w));
        for (index, &window) in windows.iter().enumerate() {
            let this = opened.take();
            opened = windows.get(index + 1).and_then(|&w| self.open_hour(w));
            if window.kind == WindowKind::RetrieveBundle {
                await_dailies_settled(&windows[..index], &failed, settled.clone()).await?;
            }
            match self.render_window_from(window, this, &parts, &memory).await {
                Ok(()) => {}
                Err(e) if failures == Failures::StopAll || stops_pipeline(&e) => return Err(e),
                Err(e) => failed.push((window, e)),
            }
        }
        Ok(failed)
    }

    /// The second step of [`Exporter::publish_windows`]: signs and compresses each part.
    async fn seal_step(
        &self,
        mut queue: tokio::sync::mpsc::Receiver<window::PartJob>,
        sealed: tokio::sync::mpsc::Sender<SealedJob>,
    ) {
        while let Some(job) = queue.recv().await {
            let (window, last) = (job.window, job.last);
            let part = self.seal(job).await;
            if sealed.send(SealedJob { window, last, part }).await.is_err() {
                break;
            }
        }
    }

    /// The last step of [`Exporter::publish_windows`]: uploads each sealed part, and writes a
    /// window's ledger rows once its last part is uploaded.
    async fn upload_step(
        &self,
        mut sealed: tokio::sync::mpsc::Receiver<SealedJob>,
        failures: Failures,
        report: &mut RunReport,
        settled: tokio::sync::watch::Sender<Vec<Window>>,
    ) -> Result<Vec<(Window, ExportError)>, ExportError> {
        let mut failed = Vec::new();
        let mut records = Vec::new();
        // The window whose parts `records` holds, and one whose upload failed.
        let mut open: Option<Window> = None;
        let mut given_up: Option<Window> = None;
        while let Some(SealedJob { window, last, part }) = sealed.recv().await {
            if open.is_some_and(|w| w != window) {
                // The render step gave up the open window before its last part.
                records.clear();
            }
            open = Some(window);
            if given_up == Some(window) {
                continue;
            }
            match self.upload_part(part, last, &mut records).await {
                Ok(()) if last => {
                    report.count_published(records.drain(..));
                    settled.send_modify(|done| done.push(window));
                }
                Ok(()) => {}
                Err(e) if failures == Failures::StopAll || stops_pipeline(&e) => return Err(e),
                Err(e) => {
                    records.clear();
                    given_up = Some(window);
                    failed.push((window, e));
                    settled.send_modify(|done| done.push(window));
                }
            }
        }
        Ok(failed)
    }

    /// Uploads one part of a window; after its last part, writes the window's ledger rows
    /// (DESIGN §4.2: the ledger names only windows whose every part was uploaded).
    async fn upload_part(
        &self,
        part: Result<window::SealedPart, ExportError>,
        last: bool,
        records: &mut Vec<ExportRecord>,
    ) -> Result<(), ExportError> {
        records.push(self.put_sealed(part?).await?);
        if last {
            let hold = self.hold_fence().await?;
            hold.record_exports(records, self.clock.now()).await?;
            hold.commit().await?;
        }
        Ok(())
    }

    /// Rewrites the indexes from the ledger, then marks the files that fell out of the 14-day
    /// window as unindexed (their objects go later), all under one [`FenceHold`]: no successor
    /// can write an index between these writes, and none of them happens once the lock is lost.
    async fn write_indexes(
        &self,
        region: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ExportError> {
        let now_unix = UnixSeconds::from(now);
        let hourly_since = oldest_indexed_hour(now_unix).start();
        let daily_since = now_unix.day().plus(-RELEVANCE_DAYS).start();
        let hold = self.hold_fence().await?;
        // Read under the hold, on its connection: a predecessor's last ledger rows are
        // committed by now, and the pass needs no second connection for it.
        let hourly = hold
            .indexed_exports(region, WindowKind::Hourly.as_str(), hourly_since)
            .await?;
        let daily = hold
            .indexed_exports(region, WindowKind::Daily.as_str(), daily_since)
            .await?;
        self.put_indexes(&hold, region, now_unix, &hourly, &daily)
            .await?;
        hold.mark_unindexed(region, WindowKind::Hourly.as_str(), hourly_since, now)
            .await?;
        hold.mark_unindexed(region, WindowKind::Daily.as_str(), daily_since, now)
            .await?;
        // The apps' per-day objects go with the daily files (the edge answers
        // 410 for those days anyway); the 00000 bundle is rewritten, never retired.
        hold.mark_unindexed(region, WindowKind::RetrieveDay.as_str(), daily_since, now)
            .await?;
        hold.commit().await?;
        Ok(())
    }

    /// Writes the manifest and the two indexes of `region` that differ from the bucket's.
    async fn put_indexes(
        &self,
        hold: &FenceHold,
        region: &str,
        now: UnixSeconds,
        hourly: &[ExportRecord],
        daily: &[ExportRecord],
    ) -> Result<(), ExportError> {
        // The manifest first and the phones' index.txt last: once index.txt exists the other
        // two do, and a crash between the three leaves each naming only complete, verified
        // files, at most one pass apart (DESIGN §4.2). An index whose bytes would not change is
        // not written again: most passes publish nothing new, and an unchanged object keeps its
        // ETag and Last-Modified for the CDN and the phones' conditional requests.
        let (manifest_key, daily_key, hourly_key) = (
            manifest_key(region),
            daily_index_key(region),
            hourly_index_key(region),
        );
        let (old_manifest, old_daily, old_hourly) = tokio::try_join!(
            self.bucket.get(&manifest_key),
            self.bucket.get(&daily_key),
            self.bucket.get(&hourly_key),
        )?;
        let manifest = manifest_for(region, now.get(), hourly, daily, old_manifest.as_ref());
        for (key, old, new, kind) in [
            (&manifest_key, old_manifest, manifest, ObjectKind::Manifest),
            (
                &daily_key,
                old_daily,
                Bytes::from(index_txt(daily)),
                ObjectKind::Index,
            ),
            (
                &hourly_key,
                old_hourly,
                Bytes::from(index_txt(hourly)),
                ObjectKind::Index,
            ),
        ] {
            if old.as_ref() != Some(&new) {
                hold.renew().await?;
                self.bucket.put(key, new, kind).await?;
            }
        }
        Ok(())
    }
}

/// A `00000` bundle is merged from the daily files before it (DESIGN §4.3): waits until the
/// upload step is done with each of them that has not already failed to render.
async fn await_dailies_settled(
    before: &[Window],
    render_failed: &[(Window, ExportError)],
    mut settled: tokio::sync::watch::Receiver<Vec<Window>>,
) -> Result<(), ExportError> {
    let dailies: Vec<Window> = before
        .iter()
        .filter(|w| w.kind == WindowKind::Daily)
        .filter(|w| !render_failed.iter().any(|(f, _)| f == *w))
        .copied()
        .collect();
    settled
        .wait_for(|done| dailies.iter().all(|w| done.contains(w)))
        .await
        .map_err(|_| ExportError::UploadStopped)?;
    Ok(())
}

/// The failed windows of both steps, in the order of `windows`; a window that failed in both
/// keeps the upload step's error.
fn merge_failures(
    windows: &[Window],
    mut failed: Vec<(Window, ExportError)>,
    rendered: Vec<(Window, ExportError)>,
) -> Vec<(Window, ExportError)> {
    for (window, error) in rendered {
        if !failed.iter().any(|(w, _)| *w == window) {
            failed.push((window, error));
        }
    }
    failed.sort_by_key(|(w, _)| windows.iter().position(|x| x == w));
    failed
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
