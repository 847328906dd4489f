//! Steps 2–7 for one window (DESIGN §4.1): stream its keys from Postgres,
//! merge in the padding, render `export.bin` part by part, sign, zip, upload,
//! and return the ledger records. Only one part's bytes are in memory at a
//! time, whatever the number of keys.

use std::cmp::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use diagnosis_core::domain::DiagnosisKey;
use diagnosis_core::store::{ExportRecord, KeyStream, StoreError};
use diagnosis_core::time::{DayNumber, HourNumber, UnixSeconds, is_relevant};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use diagnosis_format::archive::zip_export;
use diagnosis_format::names::{
    ObjectKind, daily_file_key, hourly_file_key, retrieval_bundle_key, retrieval_day_key,
};
use diagnosis_format::render::{
    ExportWindow, PLATFORM_MAX_KEYS_PER_FILE, PartNumber, RenderedPart, WindowRenderer,
    canonical_cmp,
};
use diagnosis_format::sign::sign_export;

use super::derive::MergedFiles;
use super::sources::streamed_sources;
use super::{ExportError, Exporter};

/// What a window is published as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `{region}/{start}-{end}-{nnnnn}.zip`: one closed hour.
    Hourly,
    /// `{region}/daily/{start}-{end}-{nnnnn}.zip`: one closed UTC day.
    Daily,
    /// `retrieve/{MCC}/{DDDDD}`: one UTC day so far, for the deployed apps (§4.3).
    RetrieveDay,
    /// `retrieve/{MCC}/00000`: the 15 days before today, for the apps' first run (§4.3).
    RetrieveBundle,
}

impl WindowKind {
    /// The ledger's name for the kind (also the manifest's `kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Hourly => "hourly",
            WindowKind::Daily => "daily",
            WindowKind::RetrieveDay => "retrieve-day",
            WindowKind::RetrieveBundle => "retrieve-00000",
        }
    }
}

/// A window to publish: its kind, the publish hours of its keys, and the
/// start and end written into the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kind: WindowKind,
    pub first_hour: HourNumber,
    /// May be `first_hour − 1`: a window with no hour yet (today at 00:00).
    pub last_hour: HourNumber,
}

impl Window {
    /// Whether the window is published as one object, never split into parts: the deployed
    /// apps fetch one object per retrieval path (§4.3).
    fn is_single_object(self) -> bool {
        match self.kind {
            WindowKind::Hourly | WindowKind::Daily => false,
            WindowKind::RetrieveDay | WindowKind::RetrieveBundle => true,
        }
    }

    pub fn hour(hour: HourNumber) -> Window {
        Window {
            kind: WindowKind::Hourly,
            first_hour: hour,
            last_hour: hour,
        }
    }

    pub fn day(day: DayNumber) -> Window {
        Window {
            kind: WindowKind::Daily,
            first_hour: day.first_hour(),
            last_hour: day.last_hour(),
        }
    }

    /// The day `day` as far as `through_hour` (its end is the end of the last
    /// hour it holds, so each version has a distinct end).
    pub fn retrieve_day(day: DayNumber, through_hour: HourNumber) -> Window {
        Window {
            kind: WindowKind::RetrieveDay,
            first_hour: day.first_hour(),
            last_hour: through_hour
                .min(day.last_hour())
                .max(day.first_hour().plus(-1)),
        }
    }

    /// From day `today − 15` 00:00 up to today 00:00, as far as `through_hour`.
    pub fn retrieve_bundle(today: DayNumber, through_hour: HourNumber) -> Window {
        let first_hour = today.plus(-15).first_hour();
        Window {
            kind: WindowKind::RetrieveBundle,
            first_hour,
            last_hour: through_hour
                .min(today.first_hour().plus(-1))
                .max(first_hour.plus(-1)),
        }
    }

    pub fn start(&self) -> UnixSeconds {
        self.first_hour.start()
    }

    pub fn end(&self) -> UnixSeconds {
        self.last_hour.end()
    }

    /// The start and end as the unsigned seconds of a file's header.
    fn header_bounds(&self) -> Result<(u64, u64), ExportError> {
        let start = self.start();
        let end = self.end();
        let start = start.to_u64().ok_or(ExportError::Window(start.get()))?;
        let end = end.to_u64().ok_or(ExportError::Window(end.get()))?;
        Ok((start, end))
    }
}

/// The real keys (sorted by Postgres) merged with the sorted fake keys, in
/// canonical order.
struct Merged {
    real: KeyStream,
    next_real: Option<DiagnosisKey>,
    fakes: std::vec::IntoIter<DiagnosisKey>,
    next_fake: Option<DiagnosisKey>,
}

impl Merged {
    async fn new(mut real: KeyStream, mut fakes: Vec<DiagnosisKey>) -> Result<Merged, StoreError> {
        fakes.sort_by(canonical_cmp);
        let next_real = real.next().await.transpose()?;
        let mut fakes = fakes.into_iter();
        let next_fake = fakes.next();
        Ok(Merged {
            real,
            next_real,
            fakes,
            next_fake,
        })
    }

    async fn next(&mut self) -> Result<Option<DiagnosisKey>, StoreError> {
        let take_real = match (&self.next_real, &self.next_fake) {
            (None, None) => return Ok(None),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(real), Some(fake)) => canonical_cmp(real, fake) != Ordering::Greater,
        };
        if take_real {
            let key = self.next_real.take();
            self.next_real = self.real.next().await.transpose()?;
            Ok(key)
        } else {
            let key = self.next_fake.take();
            self.next_fake = self.fakes.next();
            Ok(key)
        }
    }
}

/// Where a window's keys come from.
enum Keys {
    /// Postgres, merged with the window's padding.
    Database(Box<Merged>),
    /// Files already published, which carry their padding (module `derive`).
    Files(MergedFiles),
}

impl Keys {
    async fn next(&mut self) -> Result<Option<DiagnosisKey>, ExportError> {
        match self {
            Keys::Database(merged) => Ok(merged.next().await?),
            Keys::Files(merged) => merged.next().await,
        }
    }
}

/// Keys per batch handed from a window's reader task to its renderer ([`KeysAhead`]).
const BATCH_KEYS: usize = 2_048;

/// Batches a reader task may have ready ahead of the renderer: with the batch being filled
/// and the one being rendered, at most `BATCH_KEYS × (BATCHES_AHEAD + 2)` keys (about half a
/// megabyte) are between the two.
const BATCHES_AHEAD: usize = 4;

/// What a window's reader task hands its renderer.
enum Batch {
    Keys(Vec<DiagnosisKey>),
    End,
    Failed(ExportError),
}

/// A window's keys read on a task of their own, so that reading and decoding them — the rows
/// of Postgres's `COPY` sorted in each run, or the merged source files inflated, checked and
/// decoded — runs on one core while the window renders on the other. The keys arrive in the
/// order the source gives them, in batches, and an error arrives where it happened in that
/// order. Dropping this stops the task.
struct KeysAhead {
    batches: tokio::sync::mpsc::Receiver<Batch>,
    /// The batch being rendered, and the position of its next key.
    current: Vec<DiagnosisKey>,
    next: usize,
    /// Spent batches, handed back to the task to fill again ([`SpentBatches`]).
    spent: SpentBatches,
    task: Option<tokio::task::JoinHandle<Keys>>,
    ended: bool,
}

/// Batches the renderer has emptied, for the reader task to fill again: the same few buffers
/// go back and forth instead of one allocation per batch, each of which the allocator (which
/// returns freed pages at once) would have to fault in again. At most `BATCHES_AHEAD + 2`
/// exist.
type SpentBatches = Arc<std::sync::Mutex<Vec<Vec<DiagnosisKey>>>>;

impl KeysAhead {
    fn spawn(keys: Keys) -> KeysAhead {
        let (sender, batches) = tokio::sync::mpsc::channel(BATCHES_AHEAD);
        let spent = SpentBatches::default();
        KeysAhead {
            batches,
            current: Vec::new(),
            next: 0,
            spent: spent.clone(),
            task: Some(tokio::spawn(read_ahead(keys, sender, spent))),
            ended: false,
        }
    }

    async fn next(&mut self) -> Result<Option<DiagnosisKey>, ExportError> {
        loop {
            if let Some(key) = self.current.get(self.next) {
                self.next += 1;
                return Ok(Some(key.clone()));
            }
            if self.ended {
                return Ok(None);
            }
            match self.batches.recv().await {
                Some(Batch::Keys(keys)) => {
                    let mut spent = std::mem::replace(&mut self.current, keys);
                    self.next = 0;
                    if spent.capacity() > 0
                        && let Ok(mut batches) = self.spent.lock()
                    {
                        spent.clear();
                        batches.push(spent);
                    }
                }
                Some(Batch::End) => self.ended = true,
                Some(Batch::Failed(error)) => {
                    self.ended = true;
                    return Err(error);
                }
                None => {
                    self.ended = true;
                    return Err(match self.stop().await {
                        Err(error) => error,
                        Ok(_) => ExportError::Derive("a window's key reader stopped early".into()),
                    });
                }
            }
        }
    }

    /// Stops the task after the batch it is reading and returns its source, to check the
    /// rest of the source files ([`MergedFiles::check_rest`]).
    async fn stop(&mut self) -> Result<Keys, ExportError> {
        self.batches.close();
        let task = self.task.take().ok_or_else(|| {
            ExportError::Derive("a window's key reader was already stopped".into())
        })?;
        task.await.map_err(|e| {
            ExportError::Derive(format!(
                "reading a window's keys: {}",
                join_error_message(e)
            ))
        })
    }
}

impl Drop for KeysAhead {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The reader task of [`KeysAhead`]: sends `keys` in batches, then the end or the error, and
/// returns the source once everything is sent or the renderer stopped listening.
async fn read_ahead(
    mut keys: Keys,
    batches: tokio::sync::mpsc::Sender<Batch>,
    spent: SpentBatches,
) -> Keys {
    loop {
        let mut batch = spent
            .lock()
            .ok()
            .and_then(|mut spent| spent.pop())
            .unwrap_or_else(|| Vec::with_capacity(BATCH_KEYS));
        let end = loop {
            match keys.next().await {
                Ok(Some(key)) => {
                    batch.push(key);
                    if batch.len() == BATCH_KEYS {
                        break None;
                    }
                }
                Ok(None) => break Some(Batch::End),
                Err(error) => break Some(Batch::Failed(error)),
            }
        };
        if !batch.is_empty() && batches.send(Batch::Keys(batch)).await.is_err() {
            return keys;
        }
        if let Some(end) = end {
            // A renderer that stopped listening no longer needs the end.
            let _ = batches.send(end).await;
            return keys;
        }
    }
}

/// The keys of an hourly window whose `COPY` was started ahead of its rendering
/// ([`Exporter::open_hour`]).
pub(super) struct OpenedHour {
    window: Window,
    stream: tokio::task::JoinHandle<Result<KeyStream, StoreError>>,
}

impl Exporter {
    /// Starts reading the keys of the hourly window `window` from Postgres on a connection of
    /// its own, so that Postgres selects and sorts them while the window before it is
    /// rendered: the hours of a pass are read one `COPY` ahead. Until the rendering reads it,
    /// the `COPY` waits on its connection (at most its socket's buffers are filled), so memory
    /// does not grow; dropped unread, it is closed.
    pub(super) fn open_hour(&self, window: Window) -> Option<OpenedHour> {
        if window.kind != WindowKind::Hourly {
            return None;
        }
        let store = self.store.clone();
        let region = self.settings.key_region.clone();
        let stream = tokio::spawn(async move {
            store
                .stream_publishable_keys(&region, window.first_hour, window.last_hour, None)
                .await
        });
        Some(OpenedHour { window, stream })
    }
}

/// What a signing thread that did not return says: its panic message, when it has one.
fn join_error_message(error: tokio::task::JoinError) -> String {
    if !error.is_panic() {
        return error.to_string();
    }
    let payload = error.into_panic();
    if let Some(message) = payload.downcast_ref::<&str>() {
        format!("panicked: {message}")
    } else if let Some(message) = payload.downcast_ref::<String>() {
        format!("panicked: {message}")
    } else {
        "panicked with a payload that is not a message".to_owned()
    }
}

/// Where the keys of a window being rendered come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sources {
    /// Postgres.
    Database,
    /// Published files, each hashed as it is read (`Check::Streaming`).
    Streamed,
    /// Published files verified whole before the merge (`Check::Verified`).
    Verified,
}

/// A rendered part on its way to the bucket; `last` closes its window.
pub(super) struct PartJob {
    pub(super) window: Window,
    pub(super) part: RenderedPart,
    pub(super) last: bool,
    /// The part's share of [`PART_MEMORY_MIB`], given back once it is uploaded.
    memory: Option<OwnedSemaphorePermit>,
}

/// Part buffers in memory at once, in MiB: `export.bin` from its rendering until it is signed
/// and zipped, then the zip until it is uploaded. The parts being rendered, zipped and uploaded
/// share it, so rendering waits while big parts are still being zipped or uploaded. A single
/// part larger than this is rendered alone. 48 lets a 750 000-key retrieval part (about
/// 23 MiB) render while the part before it is zipped and uploaded; measured on 1 000 000 keys
/// (tests/bench/README.md): 24 MiB gave a peak RSS of 54.6 MiB, 48 gave 58.1 MiB and 0.94 × the
/// wall time, 72 no faster (the one-part queues bound the overlap).
pub(super) const PART_MEMORY_MIB: u32 = 48;

impl Exporter {
    /// Renders every part of `window` in order and hands each to the upload step
    /// ([`Exporter::publish_all`]), the last one marked as closing the window.
    ///
    /// A window merged from published files (DESIGN §4.2) hands on nothing read from a source
    /// that was not checked against its ledger row. When the window fits in one object, its
    /// sources are hashed as the merge streams them, and the object goes out only after the
    /// merge has read every source to its end. A daily file of several parts is sent part by
    /// part, so its sources are verified whole first (module `sources`), and so is any window
    /// whose streamed merge failed: a source that differs from its ledger row, or is missing,
    /// is rebuilt from Postgres with its recorded bytes before the merge starts again.
    pub(super) async fn render_window(
        &self,
        window: Window,
        parts: &tokio::sync::mpsc::Sender<PartJob>,
        memory: &Arc<Semaphore>,
    ) -> Result<(), ExportError> {
        self.render_window_from(window, None, parts, memory).await
    }

    /// [`Exporter::render_window`], with the window's keys already being read from Postgres
    /// when `opened` is given (an hourly window, see [`Exporter::open_hour`]).
    pub(super) async fn render_window_from(
        &self,
        window: Window,
        opened: Option<OpenedHour>,
        parts: &tokio::sync::mpsc::Sender<PartJob>,
        memory: &Arc<Semaphore>,
    ) -> Result<(), ExportError> {
        // A file spanning many days keeps only keys still relevant at its end.
        let relevant_at = (window.kind == WindowKind::RetrieveBundle).then(|| window.end());
        let Some(records) = self.published_sources(window).await? else {
            let fakes = self.padding_for(window, relevant_at).await?;
            let stream = match opened {
                Some(opened) if opened.window == window => opened
                    .stream
                    .await
                    .map_err(|e| ExportError::Derive(format!("opening an hour's keys: {e}")))??,
                _ => {
                    self.store
                        .stream_publishable_keys(
                            &self.settings.key_region,
                            window.first_hour,
                            window.last_hour,
                            relevant_at,
                        )
                        .await?
                }
            };
            let keys = Keys::Database(Box::new(Merged::new(stream, fakes).await?));
            return self
                .render_keys(window, keys, Sources::Database, parts, memory)
                .await;
        };
        let relevant_at = relevant_at.map(UnixSeconds::get);
        if self.fits_one_object(window, &records) {
            let sources = streamed_sources(&records)?;
            let keys = Keys::Files(MergedFiles::new(&self.bucket, sources, relevant_at));
            match self
                .render_keys(window, keys, Sources::Streamed, parts, memory)
                .await
            {
                Err(ExportError::UploadStopped) => return Err(ExportError::UploadStopped),
                Err(error) => tracing::info!(
                    kind = window.kind.as_str(),
                    start = window.start().get(),
                    %error,
                    "merging a derived file failed; verifying each of its sources before merging it again"
                ),
                Ok(()) => return Ok(()),
            }
        }
        let sources = self.verified_sources(&records, memory).await?;
        let keys = Keys::Files(MergedFiles::new(&self.bucket, sources, relevant_at));
        self.render_keys(window, keys, Sources::Verified, parts, memory)
            .await
    }

    /// Whether a window merged from `records` is published as a single object: a retrieval
    /// object always is (it stops at the platform ceiling), a daily file when its sources hold
    /// no more keys together than one part takes (the merge checks that no source holds more
    /// than its ledger row records).
    fn fits_one_object(&self, window: Window, records: &[Vec<ExportRecord>]) -> bool {
        match window.kind {
            WindowKind::RetrieveDay | WindowKind::RetrieveBundle => true,
            WindowKind::Hourly | WindowKind::Daily => {
                let keys = records.iter().flatten().fold(0_u64, |sum, r| {
                    sum.saturating_add(r.key_count.unsigned_abs())
                });
                usize::try_from(keys).is_ok_and(|keys| keys <= self.settings.max_keys_per_file)
            }
        }
    }

    /// Renders `keys` as `window`'s parts and hands them to the upload step. From
    /// [`Sources::Streamed`] nothing is handed on before every source has been read to its end
    /// (and so checked): the window must fit in one object, and a retrieval object cut at the
    /// platform ceiling still checks the rest of its sources first.
    async fn render_keys(
        &self,
        window: Window,
        keys: Keys,
        sources: Sources,
        parts: &tokio::sync::mpsc::Sender<PartJob>,
        memory: &Arc<Semaphore>,
    ) -> Result<(), ExportError> {
        let stopped = |_| ExportError::UploadStopped;
        let mut renderer = self.window_renderer(window, &keys)?;
        // A part is rendered only once the queue has room, and grows only within the memory
        // it holds: the parts in memory stay within PART_MEMORY_MIB together.
        let mut permit = parts.reserve().await.map_err(stopped)?;
        let mut held: Option<OwnedSemaphorePermit> = None;
        let mut keys = KeysAhead::spawn(keys);
        while let Some(key) = keys.next().await? {
            hold_part_memory(&renderer, &mut held, memory).await?;
            let Some(part) = renderer.push(&key)? else {
                continue;
            };
            let memory = held.take();
            if window.is_single_object() {
                cut_at_platform_ceiling(window, &mut keys).await?;
                let last = true;
                permit.send(PartJob {
                    window,
                    part,
                    last,
                    memory,
                });
                return Ok(());
            }
            if sources == Sources::Streamed {
                // Unreachable while no source holds more keys than its ledger row records
                // (fits_one_object); kept so that no part leaves before its sources are
                // checked whatever the counts say.
                return Err(ExportError::Derive(format!(
                    "{} window starting at {}: its sources hold more keys than their ledger rows record",
                    window.kind.as_str(),
                    window.start().get()
                )));
            }
            let last = false;
            permit.send(PartJob {
                window,
                part,
                last,
                memory,
            });
            permit = parts.reserve().await.map_err(stopped)?;
        }
        let (part, last, memory) = (renderer.finish(), true, held);
        permit.send(PartJob {
            window,
            part,
            last,
            memory,
        });
        Ok(())
    }

    /// The renderer of `window`'s parts: a retrieval object is one object that grows to the
    /// platform ceiling (the apps fetch one object per path, §4.3); the hourly and daily files
    /// are cut into parts of `MAX_KEYS_PER_FILE`.
    fn window_renderer(&self, window: Window, keys: &Keys) -> Result<WindowRenderer, ExportError> {
        let (start, end) = window.header_bounds()?;
        let region = self.settings.export_region.clone();
        let (export_window, max_keys) = if window.is_single_object() {
            (
                ExportWindow::growing(region, start, end)?,
                PLATFORM_MAX_KEYS_PER_FILE,
            )
        } else {
            (
                ExportWindow::new(region, start, end)?,
                self.settings.max_keys_per_file,
            )
        };
        let mut renderer =
            WindowRenderer::new(export_window, &self.signing.signer_infos(), max_keys)?;
        if let Keys::Files(merged) = keys {
            renderer.expect_keys(usize::try_from(merged.max_keys()).unwrap_or(usize::MAX));
        }
        Ok(renderer)
    }

    /// The published files a window is the union of (DESIGN §4, §4.3), one source per hour or
    /// per day, or `None` when it must be read from Postgres: an hourly window, or one with an
    /// hour the ledger shows no live file for. Without padding, hours before the first hour ever
    /// published hold no key (publishing starts at the earliest hour holding one, §4.2) and
    /// are skipped. The `00000` bundle
    /// starts with day today − 15, whose keys can no longer be relevant at its end (every key
    /// is published after it expires), so its sources start a day later; each of its days is
    /// read from the daily file when there is one.
    async fn published_sources(
        &self,
        window: Window,
    ) -> Result<Option<Vec<Vec<ExportRecord>>>, ExportError> {
        let region = self.settings.export_region.as_str();
        let hourly = WindowKind::Hourly.as_str();
        let first_hour = match window.kind {
            WindowKind::Hourly => return Ok(None),
            WindowKind::Daily | WindowKind::RetrieveDay => window.first_hour,
            WindowKind::RetrieveBundle => window.first_hour.plus(24),
        };
        if window.last_hour < first_hour {
            return Ok(Some(Vec::new()));
        }
        let Some(first_published) = self.store.first_published_start(region, hourly).await? else {
            return Ok(None);
        };
        let hours = self
            .store
            .live_exports(region, hourly, first_hour.start(), window.end())
            .await?;
        let dailies = if window.kind == WindowKind::RetrieveBundle {
            self.store
                .live_exports(
                    region,
                    WindowKind::Daily.as_str(),
                    first_hour.start(),
                    window.end(),
                )
                .await?
        } else {
            Vec::new()
        };
        let ledger = Ledger {
            hours,
            dailies,
            first_published_hour: first_published.hour(),
            padded: self.padding.is_some(),
        };
        Ok(ledger.sources(first_hour, window.last_hour))
    }

    /// The fake keys of every hour of the window that has its hourly file (each hour's own,
    /// so a daily file or a retrieval object carries exactly the fake keys of its hourly
    /// files, DESIGN §4.1, §4.3); those of a window that keeps only the keys still relevant
    /// at `relevant_at` (`00000`) are held to it as its real keys are, and as its merge from
    /// files holds them.
    async fn padding_for(
        &self,
        window: Window,
        relevant_at: Option<UnixSeconds>,
    ) -> Result<Vec<DiagnosisKey>, StoreError> {
        let Some(padding) = &self.padding else {
            return Ok(Vec::new());
        };
        let mut first_hour = window.first_hour;
        if window.kind != WindowKind::Hourly {
            // Hours before the first one published have no file (DESIGN §4.2).
            let region = self.settings.export_region.as_str();
            let hourly = WindowKind::Hourly.as_str();
            if let Some(first) = self.store.first_published_start(region, hourly).await? {
                first_hour = first_hour.max(first.hour());
            }
        }
        let mut fakes = Vec::new();
        for hour in first_hour.through(window.last_hour) {
            let histogram = self
                .store
                .key_metadata_histogram(&self.settings.key_region, hour, hour)
                .await?;
            fakes.extend(padding.fake_keys(hour.get(), &histogram));
        }
        if let Some(at) = relevant_at {
            fakes.retain(|key| is_relevant(key.expiry_unix(), at.get()));
        }
        Ok(fakes)
    }

    /// The object key a part of `window` is published under, and what kind of object it is.
    pub(super) fn object_name(
        &self,
        window: Window,
        part: PartNumber,
    ) -> Result<(String, ObjectKind), ExportError> {
        let region = &self.settings.export_region;
        let (start, end) = window.header_bounds()?;
        let compat = &self.settings.compat_region_path;
        Ok(match window.kind {
            WindowKind::Hourly => (
                hourly_file_key(region, start, end, part),
                ObjectKind::ExportFile,
            ),
            WindowKind::Daily => (
                daily_file_key(region, start, end, part),
                ObjectKind::ExportFile,
            ),
            WindowKind::RetrieveDay => {
                let day = window.first_hour.day().get();
                // The object holds the day's hours up to `last_hour`: it is final once that
                // is the day's last hour (DESIGN §4.3).
                let kind = ObjectKind::RetrievalDay {
                    day,
                    last_closed_hour: window.last_hour.get(),
                };
                (retrieval_day_key(compat, day), kind)
            }
            WindowKind::RetrieveBundle => {
                (retrieval_bundle_key(compat), ObjectKind::RetrievalBundle)
            }
        })
    }

    /// Sign → zip one part: the object's bytes, its name and its ledger record. The part's
    /// memory is given back once it is zipped, all but the zip's share ([`SealedPart`]).
    pub(super) async fn seal(&self, job: PartJob) -> Result<SealedPart, ExportError> {
        let PartJob {
            window,
            part,
            mut memory,
            ..
        } = job;
        let (key, object_kind) = self.object_name(window, part.part)?;
        let signing = self.signing.clone();
        let export_bin = part.export_bin;
        // Signing and compressing are the costly steps: they run on a blocking thread while
        // the next part is read and rendered.
        let zip = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ExportError> {
            let signature = sign_export(&export_bin, &signing)?;
            Ok(zip_export(&export_bin, &signature)?)
        })
        .await
        .map_err(|e| ExportError::SigningThread(join_error_message(e)))??;
        let record = ExportRecord {
            object_key: key,
            kind: window.kind.as_str().to_owned(),
            region: self.settings.export_region.as_str().to_owned(),
            start_ts: window.start().get(),
            end_ts: window.end().get(),
            part: i32::try_from(part.part.get()).unwrap_or(i32::MAX),
            key_count: i64::try_from(part.key_count).unwrap_or(i64::MAX),
            bytes: i64::try_from(zip.len()).unwrap_or(i64::MAX),
            sha256: hex::encode(Sha256::digest(&zip)),
        };
        if let Some(permits) = memory.as_mut() {
            let zip_mib = (zip.len() >> 20).saturating_add(1);
            drop(permits.split(permits.num_permits().saturating_sub(zip_mib)));
        }
        Ok(SealedPart {
            object_kind,
            zip,
            record,
            kind: window.kind.as_str(),
            memory,
        })
    }

    /// Uploads one sealed part; its record is returned for the ledger, and its memory given
    /// back once the object is written.
    pub(super) async fn put_sealed(&self, sealed: SealedPart) -> Result<ExportRecord, ExportError> {
        let SealedPart {
            object_kind,
            zip,
            record,
            kind,
            memory: _memory,
        } = sealed;
        self.put_fenced(&record.object_key, Bytes::from(zip), object_kind)
            .await?;
        metrics::counter!("exporter_files_published_total", "kind" => kind).increment(1);
        metrics::counter!("exporter_keys_published_total", "kind" => kind)
            .increment(u64::try_from(record.key_count).unwrap_or(0));
        metrics::counter!("exporter_bytes_published_total", "kind" => kind)
            .increment(u64::try_from(record.bytes).unwrap_or(0));
        Ok(record)
    }
}

/// A part signed and zipped, ready to upload.
pub(super) struct SealedPart {
    pub(super) object_kind: ObjectKind,
    pub(super) zip: Vec<u8>,
    /// Its ledger row (the object key among it).
    pub(super) record: ExportRecord,
    /// The window's kind, the metrics' label.
    kind: &'static str,
    /// The zip's share of [`PART_MEMORY_MIB`] (one MiB more than its size, at most what its
    /// `export.bin` held), given back once it is uploaded.
    memory: Option<OwnedSemaphorePermit>,
}

/// Grows the memory `held` for the part being rendered to its size plus one MiB (at most
/// [`PART_MEMORY_MIB`]), waiting until the other parts in memory give enough back.
async fn hold_part_memory(
    renderer: &WindowRenderer,
    held: &mut Option<OwnedSemaphorePermit>,
    memory: &Arc<Semaphore>,
) -> Result<(), ExportError> {
    let needed = u32::try_from(renderer.part_bytes() >> 20)
        .unwrap_or(u32::MAX)
        .saturating_add(1)
        .min(PART_MEMORY_MIB);
    let holding = held
        .as_ref()
        .map_or(0, |p| u32::try_from(p.num_permits()).unwrap_or(0));
    if needed > holding {
        let more = memory
            .clone()
            .acquire_many_owned(needed - holding)
            .await
            .map_err(|_| ExportError::UploadStopped)?;
        match held.as_mut() {
            Some(permits) => permits.merge(more),
            None => *held = Some(more),
        }
    }
    Ok(())
}

/// A retrieval object reached the platform ceiling (§4.3): the rest of its keys are left out
/// (the hourly and daily files carry them all), but the rest of its published sources are
/// still read to their end, so a damaged one fails the window.
async fn cut_at_platform_ceiling(window: Window, keys: &mut KeysAhead) -> Result<(), ExportError> {
    if let Keys::Files(mut merged) = keys.stop().await? {
        merged.check_rest().await?;
    }
    tracing::error!(
        kind = window.kind.as_str(),
        "a retrieval object reached the platform ceiling of 750 000 keys; the rest are left out of it"
    );
    metrics::counter!("exporter_retrieval_keys_left_out_total").increment(1);
    Ok(())
}

/// The live ledger rows a window's sources are chosen from (DESIGN §4.2, §4.3).
struct Ledger {
    hours: Vec<ExportRecord>,
    /// Only for the `00000` bundle, which reads a whole day from its daily file.
    dailies: Vec<ExportRecord>,
    first_published_hour: HourNumber,
    padded: bool,
}

impl Ledger {
    /// The sources of the hours from `first_hour` to `last_hour`: a whole day's daily file where
    /// there is one, else each hour's file; `None` when an hour that may hold keys has none.
    fn sources(
        &self,
        first_hour: HourNumber,
        last_hour: HourNumber,
    ) -> Option<Vec<Vec<ExportRecord>>> {
        let mut sources = Vec::new();
        let mut hour = first_hour;
        while hour <= last_hour {
            let day = hour.day();
            let daily = covering(&self.dailies, hour.start(), day.last_hour().end());
            if hour == day.first_hour() && day.last_hour() <= last_hour && !daily.is_empty() {
                sources.push(daily);
                hour = day.plus(1).first_hour();
                continue;
            }
            let parts = covering(&self.hours, hour.start(), hour.end());
            if parts.is_empty() {
                // Padding puts fake keys in every hour, published or not: only a window whose
                // every hour has its file can be merged, or a rebuild would differ.
                if hour >= self.first_published_hour || self.padded {
                    return None;
                }
            } else {
                sources.push(parts);
            }
            hour = hour.plus(1);
        }
        Some(sources)
    }
}

/// The rows of the file (all its parts) that covers exactly `start` to `end`.
fn covering(records: &[ExportRecord], start: UnixSeconds, end: UnixSeconds) -> Vec<ExportRecord> {
    records
        .iter()
        .filter(|r| r.start_ts == start.get() && r.end_ts == end.get())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_signing_thread_reports_its_message() {
        let formatted = tokio::task::spawn_blocking(|| -> u8 { panic!("part {} broke", 3) })
            .await
            .unwrap_err();
        assert_eq!(join_error_message(formatted), "panicked: part 3 broke");
        let literal = tokio::task::spawn_blocking(|| -> u8 { panic!("no key") })
            .await
            .unwrap_err();
        assert_eq!(join_error_message(literal), "panicked: no key");
        let error = ExportError::SigningThread(join_error_message(
            tokio::task::spawn_blocking(|| -> u8 { std::panic::panic_any(5_u32) })
                .await
                .unwrap_err(),
        ));
        assert_eq!(
            error.to_string(),
            "signing and compressing a part failed: panicked with a payload that is not a message"
        );
    }
}
