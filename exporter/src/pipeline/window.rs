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
    ExportWindow, RenderedPart, WindowRenderer, canonical_cmp, daily_object_key, object_key,
};
use crate::sign::sign_export;
use crate::storage::ObjectKind;

/// Hourly or daily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Hourly,
    Daily,
}

impl WindowKind {
    /// The ledger's name for the kind (also the manifest's `kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Hourly => "hourly",
            WindowKind::Daily => "daily",
        }
    }
}

/// A window to publish: its kind and its hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kind: WindowKind,
    pub first_hour: i64,
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

    pub fn start(&self) -> i64 {
        self.first_hour * 3600
    }

    pub fn end(&self) -> i64 {
        (self.last_hour + 1) * 3600
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
        let stream = self
            .store
            .stream_publishable_keys(&settings.key_region, window.first_hour, window.last_hour)
            .await?;
        let mut keys = Merged::new(stream, fakes).await?;
        let export_window = ExportWindow::new(
            settings.export_region.clone(),
            u64::try_from(window.start()).map_err(|_| ExportError::Window(window.start()))?,
            u64::try_from(window.end()).map_err(|_| ExportError::Window(window.end()))?,
        )?;
        let mut renderer = WindowRenderer::new(
            export_window,
            &self.signing.signer_infos(),
            settings.max_keys_per_file,
        )?;
        let mut records = Vec::new();
        while let Some(key) = keys.next().await? {
            if let Some(part) = renderer.push(&key)? {
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
        let key = match window.kind {
            WindowKind::Hourly => object_key(region, start, end, part.part),
            WindowKind::Daily => daily_object_key(region, start, end, part.part),
        };
        let signature = sign_export(&part.export_bin, &self.signing)?;
        let zip = zip_export(&part.export_bin, &signature)?;
        drop(part.export_bin);
        let sha256 = hex::encode(Sha256::digest(&zip));
        let bytes = i64::try_from(zip.len()).unwrap_or(i64::MAX);
        self.bucket
            .put(&key, Bytes::from(zip), ObjectKind::ExportFile)
            .await?;
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
