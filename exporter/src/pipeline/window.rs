//! Steps 2–7 for one window (DESIGN §4.1): stream its keys from Postgres,
//! merge in the padding, render `export.bin` part by part, sign, zip, upload,
//! and return the ledger records. Only one part's bytes are in memory at a
//! time, whatever the number of keys.

use std::cmp::Ordering;

use bytes::Bytes;
use diagnosis_core::domain::DiagnosisKey;
use diagnosis_core::store::{ExportRecord, KeyStream, StoreError};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{ExportError, Exporter};
use crate::archive::zip_export;
use crate::render::{
    ExportWindow, PLATFORM_MAX_KEYS_PER_FILE, RenderedPart, WindowRenderer, canonical_cmp,
    daily_object_key, object_key,
};
use crate::sign::sign_export;
use crate::storage::ObjectKind;

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
    pub first_hour: i64,
    /// May be `first_hour − 1`: a window with no hour yet (today at 00:00).
    pub last_hour: i64,
}

impl Window {
    pub fn hour(hour: i64) -> Window {
        Window {
            kind: WindowKind::Hourly,
            first_hour: hour,
            last_hour: hour,
        }
    }

    pub fn day(day: i64) -> Window {
        Window {
            kind: WindowKind::Daily,
            first_hour: day * 24,
            last_hour: day * 24 + 23,
        }
    }

    /// The day `day` as far as `through_hour` (its end is the end of the last
    /// hour it holds, so each version has a distinct end).
    pub fn retrieve_day(day: i64, through_hour: i64) -> Window {
        Window {
            kind: WindowKind::RetrieveDay,
            first_hour: day * 24,
            last_hour: through_hour.min(day * 24 + 23).max(day * 24 - 1),
        }
    }

    /// From day `today − 15` 00:00 up to today 00:00, as far as `through_hour`.
    pub fn retrieve_bundle(today: i64, through_hour: i64) -> Window {
        let first_hour = (today - 15) * 24;
        Window {
            kind: WindowKind::RetrieveBundle,
            first_hour,
            last_hour: through_hour.min(today * 24 - 1).max(first_hour - 1),
        }
    }

    pub fn start(&self) -> i64 {
        self.first_hour * 3600
    }

    pub fn end(&self) -> i64 {
        (self.last_hour + 1) * 3600
    }

    /// Whether the window holds every hour it ever will.
    pub fn is_complete(&self) -> bool {
        match self.kind {
            WindowKind::Hourly | WindowKind::Daily => true,
            WindowKind::RetrieveDay => self.last_hour == self.first_hour + 23,
            WindowKind::RetrieveBundle => false,
        }
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

impl Exporter {
    /// Publishes every part of `window` and returns their ledger records.
    pub(super) async fn publish_window(
        &self,
        window: Window,
    ) -> Result<Vec<ExportRecord>, ExportError> {
        let settings = &self.settings;
        let fakes = self.padding_for(window).await?;
        // A file spanning many days keeps only keys still relevant at its end.
        let relevant_at = (window.kind == WindowKind::RetrieveBundle).then(|| window.end());
        let stream = self
            .store
            .stream_publishable_keys(
                &settings.key_region,
                window.first_hour,
                window.last_hour,
                relevant_at,
            )
            .await?;
        let mut keys = Merged::new(stream, fakes).await?;
        let start =
            u64::try_from(window.start()).map_err(|_| ExportError::Window(window.start()))?;
        let end = u64::try_from(window.end()).map_err(|_| ExportError::Window(window.end()))?;
        let region = settings.export_region.clone();
        let (export_window, max_keys) = match window.kind {
            WindowKind::Hourly | WindowKind::Daily => (
                ExportWindow::new(region, start, end)?,
                settings.max_keys_per_file,
            ),
            // The apps fetch one object per path, so it cannot be split (§4.3).
            WindowKind::RetrieveDay | WindowKind::RetrieveBundle => (
                ExportWindow::growing(region, start, end)?,
                PLATFORM_MAX_KEYS_PER_FILE,
            ),
        };
        let single_object = match window.kind {
            WindowKind::Hourly | WindowKind::Daily => false,
            WindowKind::RetrieveDay | WindowKind::RetrieveBundle => true,
        };
        let mut renderer =
            WindowRenderer::new(export_window, &self.signing.signer_infos(), max_keys)?;
        let mut records = Vec::new();
        while let Some(key) = keys.next().await? {
            if let Some(part) = renderer.push(&key)? {
                if single_object {
                    // More keys than the platforms accept in one file: publish
                    // the first part (the hourly and daily files carry them all).
                    tracing::error!(
                        kind = window.kind.as_str(),
                        "a retrieval object reached the platform ceiling of 750 000 keys; the rest are left out of it"
                    );
                    metrics::counter!("exporter_retrieval_keys_left_out_total").increment(1);
                    records.push(self.upload_part(window, part).await?);
                    return Ok(records);
                }
                records.push(self.upload_part(window, part).await?);
            }
        }
        records.push(self.upload_part(window, renderer.finish()).await?);
        Ok(records)
    }

    /// The fake keys of every hour of the window (each hour's own, so a daily
    /// file carries exactly the fake keys of its hourly files).
    async fn padding_for(&self, window: Window) -> Result<Vec<DiagnosisKey>, StoreError> {
        let Some(padding) = &self.padding else {
            return Ok(Vec::new());
        };
        let mut fakes = Vec::new();
        for hour in window.first_hour..=window.last_hour {
            let histogram = self
                .store
                .key_metadata_histogram(&self.settings.key_region, hour, hour)
                .await?;
            fakes.extend(padding.fake_keys(hour, &histogram));
        }
        Ok(fakes)
    }

    /// Sign → zip → upload one part; the record is returned for the ledger.
    async fn upload_part(
        &self,
        window: Window,
        part: RenderedPart,
    ) -> Result<ExportRecord, ExportError> {
        let region = &self.settings.export_region;
        let start =
            u64::try_from(window.start()).map_err(|_| ExportError::Window(window.start()))?;
        let end = u64::try_from(window.end()).map_err(|_| ExportError::Window(window.end()))?;
        let compat = &self.settings.compat_region_path;
        let (key, object_kind) = match window.kind {
            WindowKind::Hourly => (
                object_key(region, start, end, part.part),
                ObjectKind::ExportFile,
            ),
            WindowKind::Daily => (
                daily_object_key(region, start, end, part.part),
                ObjectKind::ExportFile,
            ),
            WindowKind::RetrieveDay => {
                let kind = if window.is_complete() {
                    ObjectKind::ExportFile
                } else {
                    ObjectKind::GrowingExport
                };
                (
                    format!("retrieve/{compat}/{:05}", window.first_hour.div_euclid(24)),
                    kind,
                )
            }
            WindowKind::RetrieveBundle => (
                format!("retrieve/{compat}/00000"),
                ObjectKind::GrowingExport,
            ),
        };
        let signature = sign_export(&part.export_bin, &self.signing)?;
        let zip = zip_export(&part.export_bin, &signature)?;
        drop(part.export_bin);
        let sha256 = hex::encode(Sha256::digest(&zip));
        let bytes = i64::try_from(zip.len()).unwrap_or(i64::MAX);
        self.bucket.put(&key, Bytes::from(zip), object_kind).await?;
        metrics::counter!("exporter_files_published_total", "kind" => window.kind.as_str())
            .increment(1);
        metrics::counter!("exporter_keys_published_total", "kind" => window.kind.as_str())
            .increment(u64::try_from(part.key_count).unwrap_or(0));
        metrics::counter!("exporter_bytes_published_total", "kind" => window.kind.as_str())
            .increment(u64::try_from(bytes).unwrap_or(0));
        Ok(ExportRecord {
            object_key: key,
            kind: window.kind.as_str().to_owned(),
            region: region.as_str().to_owned(),
            start_ts: window.start(),
            end_ts: window.end(),
            part: i32::try_from(part.part.get()).unwrap_or(i32::MAX),
            key_count: i64::try_from(part.key_count).unwrap_or(i64::MAX),
            bytes,
            sha256,
        })
    }
}
