//! The sources of derived files are the ledger's bytes (DESIGN §4.2): a daily file or a
//! retrieval object is merged only from published hourly and daily objects whose size and
//! SHA-256 are those their ledger rows record. An object that differs, or is missing, is built
//! again from Postgres by the rendering that published it (so with the same bytes: canonical
//! order, RFC 6979 signatures, fixed zip metadata, padding from the stored secret), checked
//! against its ledger row, uploaded again under its key with its headers, and only then merged.
//! Whoever can write into the bucket therefore cannot get keys signed into a derived file.
//!
//! A rebuild that does not give the recorded bytes (the database no longer holds the keys, the
//! signing keys changed) fails the window with an error naming the object: the object is left
//! as it is and nothing derived from it is published. Each repair is logged (the object key;
//! keys are never logged) and counted in `exporter_sources_repaired_total{kind}`, each failure
//! in `exporter_source_repair_failures_total`.
//!
//! How the merge holds a source to its ledger row while reading it is `derive::Check`; this
//! module verifies sources whole before a merge and repairs them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use diagnosis_core::store::ExportRecord;
use diagnosis_core::time::UnixSeconds;
use diagnosis_format::names::ObjectKind;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::derive::{CHUNK_BYTES, Check, SourceObject, ledger_bytes, ledger_sha256, read_digests};
use super::window::{PartJob, SealedPart};
use super::{ExportError, Exporter, Window, WindowKind};

/// The sources of a derived window (one list of objects per source, from
/// `Exporter::published_sources`) as the merge reads them when each is hashed as it is
/// streamed.
pub(super) fn streamed_sources(
    records: &[Vec<ExportRecord>],
) -> Result<Vec<Vec<SourceObject>>, ExportError> {
    records
        .iter()
        .map(|source| {
            source
                .iter()
                .map(|record| SourceObject::of_record(record, Check::Streaming))
                .collect()
        })
        .collect()
}

/// Whether `bytes` are the object `record` describes: its size and its SHA-256.
fn matches_ledger(record: &ExportRecord, bytes: &[u8]) -> Result<bool, ExportError> {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    Ok(bytes.len() as u64 == ledger_bytes(record)? && digest == ledger_sha256(record)?)
}

/// What the bucket holds under a ledger row's key.
enum Found {
    /// The bytes the row records.
    AsRecorded(Bytes),
    /// Another size or another SHA-256.
    Differs,
    Missing,
}

/// A rebuilt future, boxed: rebuilding a daily file merges its hourly files, which may need
/// rebuilding in turn.
type Rebuild<'a> =
    Pin<Box<dyn Future<Output = Result<(Vec<u8>, ObjectKind), ExportError>> + Send + 'a>>;

impl Exporter {
    /// Every source of a derived window verified whole before its merge reads a byte of it:
    /// each object is fetched in one request (one object in memory at a time, never more than
    /// its recorded size: at most one part), hashed, compared with its ledger row, and repaired
    /// when it differs or is missing. The merge then holds each read to the digest of the same
    /// read of the verified bytes ([`Check::Verified`]), so no byte merged differs from the
    /// ledger's.
    pub(super) async fn verified_sources(
        &self,
        records: &[Vec<ExportRecord>],
        memory: &Arc<Semaphore>,
    ) -> Result<Vec<Vec<SourceObject>>, ExportError> {
        let mut sources = Vec::with_capacity(records.len());
        for source in records {
            let mut objects = Vec::with_capacity(source.len());
            for record in source {
                let bytes = match self.fetch_as_recorded(record).await? {
                    Found::AsRecorded(bytes) => bytes,
                    Found::Differs => {
                        self.repair(record, "differs from its ledger row", memory)
                            .await?
                    }
                    Found::Missing => self.repair(record, "is missing", memory).await?,
                };
                let digests = read_digests(&bytes, CHUNK_BYTES);
                objects.push(SourceObject::of_record(
                    record,
                    Check::Verified(digests.into()),
                )?);
            }
            sources.push(objects);
        }
        Ok(sources)
    }

    /// What the bucket holds under `record`'s key, compared with the row. At most the recorded
    /// size is fetched, whatever the object's size.
    async fn fetch_as_recorded(&self, record: &ExportRecord) -> Result<Found, ExportError> {
        let key = &record.object_key;
        let size = ledger_bytes(record)?;
        if size == 0 {
            return Err(ExportError::Derive(format!(
                "{key}: the ledger records an empty object"
            )));
        }
        let read = match self.bucket.get_range_and_size(key, 0..size).await {
            Ok(read) => read,
            // A range the object cannot serve (an empty object) says nothing by itself: its
            // size does.
            Err(error) => match self.bucket.size(key).await? {
                None => return Ok(Found::Missing),
                Some(actual) if actual != size => return Ok(Found::Differs),
                Some(_) => return Err(error.into()),
            },
        };
        Ok(match read {
            None => Found::Missing,
            Some((bytes, actual)) if actual == size && matches_ledger(record, &bytes)? => {
                Found::AsRecorded(bytes)
            }
            Some(_) => Found::Differs,
        })
    }

    /// Rebuilds the object of `record` from Postgres, checks the bytes against the ledger row
    /// and uploads them again under the same key, with the same headers; returns them. The
    /// object stays as it is when that fails.
    async fn repair(
        &self,
        record: &ExportRecord,
        problem: &'static str,
        memory: &Arc<Semaphore>,
    ) -> Result<Bytes, ExportError> {
        let key = &record.object_key;
        let reason = match self.rebuild(record, memory).await {
            Ok((zip, object_kind)) if matches_ledger(record, &zip)? => {
                let zip = Bytes::from(zip);
                match self.put_fenced(key, zip.clone(), object_kind).await {
                    Ok(()) => {
                        let kind = source_kind(record);
                        tracing::warn!(
                            object = %key,
                            kind,
                            "a source of a derived file {problem}; rebuilt it from the database with the bytes its ledger row records and uploaded it again"
                        );
                        metrics::counter!("exporter_sources_repaired_total", "kind" => kind)
                            .increment(1);
                        return Ok(zip);
                    }
                    Err(error) if error.lost_lock() => return Err(error),
                    Err(error) => error.to_string(),
                }
            }
            Ok((zip, _)) => format!(
                "rebuilding it from the database gave other bytes ({} bytes, SHA-256 {})",
                zip.len(),
                hex::encode(Sha256::digest(&zip))
            ),
            // A pass that lost its lock stops at once: that is not a failure to repair.
            Err(error) if error.lost_lock() => return Err(error),
            Err(error) => error.to_string(),
        };
        tracing::error!(
            object = %key,
            %reason,
            "a source of a derived file {problem} and could not be rebuilt with the bytes its ledger row records; files derived from it are not published"
        );
        metrics::counter!("exporter_source_repair_failures_total").increment(1);
        Err(ExportError::SourceNotRepaired {
            key: key.clone(),
            problem,
            reason,
        })
    }

    /// The bytes and kind of the object of `record`, rendered again as it was published: its
    /// whole window (an hour from Postgres, a day from its verified hourly files or Postgres),
    /// of which only the part under the record's key is signed and zipped.
    fn rebuild<'a>(&'a self, record: &'a ExportRecord, memory: &'a Arc<Semaphore>) -> Rebuild<'a> {
        Box::pin(async move {
            let key = &record.object_key;
            let start = UnixSeconds::new(record.start_ts);
            let window = if record.kind == WindowKind::Hourly.as_str() {
                Window::hour(start.hour())
            } else if record.kind == WindowKind::Daily.as_str() {
                Window::day(start.day())
            } else {
                return Err(ExportError::Derive(format!(
                    "{key}: a {} object is never a source of derived files",
                    record.kind
                )));
            };
            if (window.start().get(), window.end().get()) != (record.start_ts, record.end_ts) {
                return Err(ExportError::Derive(format!(
                    "{key}: its ledger row's window is not one {}",
                    if window.kind == WindowKind::Hourly {
                        "hour"
                    } else {
                        "UTC day"
                    }
                )));
            }
            let (parts, mut queue) = tokio::sync::mpsc::channel::<PartJob>(1);
            // Moved in, so that the queue closes when the rendering ends, even on an error.
            let render = async move { self.render_window(window, &parts, memory).await };
            let find = async move {
                let mut found = None;
                while let Some(job) = queue.recv().await {
                    let (name, _) = self.object_name(job.window, job.part.part)?;
                    if name == *key {
                        let SealedPart {
                            object_kind, zip, ..
                        } = self.seal(job).await?;
                        found = Some((zip, object_kind));
                    }
                }
                Ok::<_, ExportError>(found)
            };
            let (rendered, found) = tokio::join!(render, find);
            // The search's own error explains a rendering stopped by it.
            let found = found?;
            rendered?;
            found.ok_or_else(|| {
                ExportError::Derive(format!(
                    "{key}: its window, rendered again, has no part under that key"
                ))
            })
        })
    }
}

/// The `kind` label of a repaired source: the ledger's kind, from the kinds a source can be.
fn source_kind(record: &ExportRecord) -> &'static str {
    if record.kind == WindowKind::Daily.as_str() {
        WindowKind::Daily.as_str()
    } else {
        WindowKind::Hourly.as_str()
    }
}
