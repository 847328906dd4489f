//! Files built from published files (DESIGN §4, §4.3): a daily file is exactly the union of its
//! hourly files, and the retrieval objects are unions of hourly and daily files, so once those
//! are uploaded the bigger windows are merged from them instead of being read from Postgres
//! again. Each source file is already in canonical order, so a k-way merge of their keys is in
//! canonical order too; the renderer still checks every key.
//!
//! A source is read in chunks of [`CHUNK_BYTES`] with ranged reads and handed to
//! `diagnosis_format::reader::KeyReader`, which inflates as it goes and parses the keys (pure
//! code, the same the fuzz targets run): memory is a few hundred kilobytes per source, whatever
//! the size of the files. This module does the I/O around it. Only files the
//! exporter wrote itself are read, and every byte read is checked against the file's ledger row
//! (DESIGN §4.2: a derived file is merged only from objects whose bytes match the ledger's
//! SHA-256), in one of two ways ([`Check`]): hashed as it is read, the tail after `export.bin`
//! included, and compared once the object's last byte is in; or compared read by read with the
//! digests of bytes already verified whole (module `sources`). Anything unexpected — a size, a
//! digest, a key count the ledger does not record, a malformed field — is an error, never a
//! guess.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use diagnosis_core::domain::DiagnosisKey;
use diagnosis_core::store::ExportRecord;
use diagnosis_core::time;
use diagnosis_format::reader::{KeyReader, Step};
use sha2::{Digest, Sha256};

use super::ExportError;
use crate::storage::Bucket;

pub use diagnosis_format::reader::CHUNK_BYTES;

/// Why a published file could not be read back.
fn unreadable(key: &str, what: &str) -> ExportError {
    ExportError::Derive(format!("{key}: {what}"))
}

// Every reader of a source follows the one plan of `read_range`, so the digest of each read
// taken when an object is verified whole is the digest of the same read during the merge.
pub(super) use diagnosis_format::reader::read_range;

/// The SHA-256 of each read of `object` ([`read_range`]), in order.
pub(super) fn read_digests(object: &[u8], chunk: u64) -> Vec<[u8; 32]> {
    let size = object.len() as u64;
    (0..)
        .map_while(|index| read_range(index, chunk, size))
        .map(|range| {
            let start = usize::try_from(range.start).unwrap_or(usize::MAX);
            let end = usize::try_from(range.end).unwrap_or(usize::MAX);
            Sha256::digest(object.get(start..end).unwrap_or_default()).into()
        })
        .collect()
}

/// How the bytes of a source are checked against its ledger row while the merge reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Check {
    /// Hashed as they are read; the object is read to its last byte (the `export.sig` entry
    /// and the central directory, which the merge does not need, included) and its SHA-256
    /// compared with the ledger's before the merge moves past it. The merge must therefore
    /// publish nothing before every source is read to its end.
    Streaming,
    /// The object was verified whole before the merge: these are the SHA-256 of each of its
    /// reads, and a read that differs (the object changed since) is an error at once.
    Verified(Arc<[[u8; 32]]>),
}

/// One object to read, with what its ledger row says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SourceObject {
    pub key: String,
    pub bytes: u64,
    pub sha256: [u8; 32],
    /// More keys than this in the object is an error (the merge of a window stays within the
    /// sum of its sources' counts).
    pub max_keys: u64,
    pub check: Check,
}

impl SourceObject {
    /// The object of a ledger row, to be checked as `check` says.
    pub(super) fn of_record(
        record: &ExportRecord,
        check: Check,
    ) -> Result<SourceObject, ExportError> {
        let sha256 = ledger_sha256(record)?;
        Ok(SourceObject {
            key: record.object_key.clone(),
            bytes: ledger_bytes(record)?,
            sha256,
            max_keys: u64::try_from(record.key_count).map_err(|_| {
                unreadable(&record.object_key, "the ledger's key count is negative")
            })?,
            check,
        })
    }
}

/// The SHA-256 a ledger row records (lowercase hex in the ledger).
pub(super) fn ledger_sha256(record: &ExportRecord) -> Result<[u8; 32], ExportError> {
    let mut sha256 = [0_u8; 32];
    hex::decode_to_slice(&record.sha256, &mut sha256).map_err(|_| {
        unreadable(
            &record.object_key,
            "the ledger's sha256 is not 64 hexadecimal digits",
        )
    })?;
    Ok(sha256)
}

/// The size a ledger row records.
pub(super) fn ledger_bytes(record: &ExportRecord) -> Result<u64, ExportError> {
    u64::try_from(record.bytes)
        .map_err(|_| unreadable(&record.object_key, "the ledger's size is negative"))
}

/// The keys of one or more published files read one after the other (the parts of one window,
/// which are consecutive stretches of the canonical order).
struct FileKeys {
    bucket: Bucket,
    chunk: u64,
    pending: VecDeque<SourceObject>,
    current: Option<OpenFile>,
}

/// The state of the file being read.
struct OpenFile {
    object: SourceObject,
    /// The number of the next read ([`read_range`]).
    next_read: u64,
    /// The keys of `export.bin`, from the bytes fetched so far.
    reader: KeyReader,
    /// The SHA-256 of the bytes fetched so far ([`Check::Streaming`]).
    digest: Sha256,
    /// Keys parsed so far.
    keys: u64,
}

impl FileKeys {
    /// Checks the bytes of this source that no key was taken from yet — the rest of the open
    /// file and every file after it — without inflating them: for a merge that stops early
    /// (a retrieval object at the platform ceiling) yet must check every source to its end.
    async fn check_rest(&mut self) -> Result<(), ExportError> {
        if let Some(mut file) = self.current.take() {
            file.finish(&self.bucket, self.chunk).await?;
        }
        while let Some(object) = self.pending.pop_front() {
            OpenFile::unread(object)
                .finish(&self.bucket, self.chunk)
                .await?;
        }
        Ok(())
    }

    fn new(bucket: Bucket, objects: Vec<SourceObject>, chunk: u64) -> FileKeys {
        FileKeys {
            bucket,
            chunk,
            pending: objects.into(),
            current: None,
        }
    }

    /// The next key, or `None` after the last key of the last file.
    async fn next(&mut self) -> Result<Option<DiagnosisKey>, ExportError> {
        loop {
            let Some(file) = self.current.as_mut() else {
                let Some(object) = self.pending.pop_front() else {
                    return Ok(None);
                };
                self.current = Some(OpenFile::open(object)?);
                continue;
            };
            let step = file
                .reader
                .step()
                .map_err(|e| unreadable(&file.object.key, &e.to_string()))?;
            match step {
                Step::Key(key) => return file.count(key).map(Some),
                Step::NeedBytes => {
                    let bytes = file.fetch(&self.bucket, self.chunk).await?.ok_or_else(|| {
                        unreadable(&file.object.key, "the object ends before export.bin")
                    })?;
                    file.reader.push(bytes);
                }
                Step::End => {
                    file.finish(&self.bucket, self.chunk).await?;
                    self.current = None;
                }
            }
        }
    }
}

impl OpenFile {
    /// An object of which nothing is read yet.
    fn unread(object: SourceObject) -> OpenFile {
        OpenFile {
            reader: KeyReader::new(object.bytes),
            object,
            next_read: 0,
            digest: Sha256::new(),
            keys: 0,
        }
    }

    /// An object to take keys from; the ledger must record bytes for it.
    fn open(object: SourceObject) -> Result<OpenFile, ExportError> {
        if object.bytes == 0 {
            return Err(unreadable(
                &object.key,
                "the ledger records an empty object",
            ));
        }
        Ok(OpenFile::unread(object))
    }

    /// `key`, counted against the most keys the ledger row allows.
    fn count(&mut self, key: DiagnosisKey) -> Result<DiagnosisKey, ExportError> {
        self.keys += 1;
        if self.keys > self.object.max_keys {
            return Err(unreadable(
                &self.object.key,
                "more keys than its ledger row records",
            ));
        }
        Ok(key)
    }

    /// The next read of the object ([`read_range`]), checked as [`Check`] says, or `None` after
    /// its last byte. The object must still have the size the ledger records.
    async fn fetch(&mut self, bucket: &Bucket, chunk: u64) -> Result<Option<Bytes>, ExportError> {
        let Some(range) = read_range(self.next_read, chunk, self.object.bytes) else {
            return Ok(None);
        };
        let key = &self.object.key;
        let Some((bytes, size)) = bucket.get_range_and_size(key, range.clone()).await? else {
            return Err(unreadable(key, "the object is missing"));
        };
        if size != self.object.bytes {
            return Err(unreadable(
                key,
                &format!(
                    "the object has {size} bytes, the ledger records {}",
                    self.object.bytes
                ),
            ));
        }
        if bytes.len() as u64 != range.end - range.start {
            return Err(unreadable(
                key,
                "a read returned another length than asked for",
            ));
        }
        match &self.object.check {
            Check::Streaming => self.digest.update(&bytes),
            Check::Verified(digests) => {
                let expected = usize::try_from(self.next_read)
                    .ok()
                    .and_then(|index| digests.get(index));
                let digest: [u8; 32] = Sha256::digest(&bytes).into();
                if expected != Some(&digest) {
                    return Err(unreadable(key, "the object changed after it was verified"));
                }
            }
        }
        self.next_read += 1;
        Ok(Some(bytes))
    }

    /// After the last key (or when the merge needs no more keys from it): a streamed object is
    /// read to its end and its SHA-256 compared with the ledger's (a verified one was compared
    /// whole before the merge began).
    async fn finish(&mut self, bucket: &Bucket, chunk: u64) -> Result<(), ExportError> {
        if self.object.check != Check::Streaming {
            return Ok(());
        }
        while self.fetch(bucket, chunk).await?.is_some() {}
        let digest: [u8; 32] = std::mem::take(&mut self.digest).finalize().into();
        if digest != self.object.sha256 {
            return Err(unreadable(
                &self.object.key,
                "the object's SHA-256 is not the one its ledger row records",
            ));
        }
        Ok(())
    }
}

/// A key at the head of one source, ordered canonically (then by source, for a total order).
struct Head {
    key: DiagnosisKey,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .canonical_cmp(&other.key)
            .then(self.source.cmp(&other.source))
    }
}

/// The canonical-order merge of several sources, optionally keeping only keys still relevant
/// at an instant (the `00000` bundle, DESIGN §4.3).
pub(super) struct MergedFiles {
    sources: Vec<FileKeys>,
    heap: BinaryHeap<Reverse<Head>>,
    relevant_at: Option<i64>,
    started: bool,
    /// The most keys the merge can yield: the sum of its sources' ledger counts.
    max_keys: u64,
}

impl MergedFiles {
    /// Each inner list is one source: objects read one after the other.
    pub(super) fn new(
        bucket: &Bucket,
        sources: Vec<Vec<SourceObject>>,
        relevant_at: Option<i64>,
    ) -> MergedFiles {
        Self::with_chunk(bucket, sources, relevant_at, CHUNK_BYTES)
    }

    fn with_chunk(
        bucket: &Bucket,
        sources: Vec<Vec<SourceObject>>,
        relevant_at: Option<i64>,
        chunk: u64,
    ) -> MergedFiles {
        let max_keys = sources
            .iter()
            .flatten()
            .fold(0_u64, |sum, object| sum.saturating_add(object.max_keys));
        MergedFiles {
            max_keys,
            sources: sources
                .into_iter()
                .map(|objects| FileKeys::new(bucket.clone(), objects, chunk))
                .collect(),
            heap: BinaryHeap::new(),
            relevant_at,
            started: false,
        }
    }

    /// The most keys the merge can yield (the sum of its sources' ledger counts).
    pub(super) fn max_keys(&self) -> u64 {
        self.max_keys
    }

    pub(super) async fn next(&mut self) -> Result<Option<DiagnosisKey>, ExportError> {
        if !self.started {
            self.started = true;
            for source in 0..self.sources.len() {
                self.refill(source).await?;
            }
        }
        let Some(Reverse(Head { key, source })) = self.heap.pop() else {
            return Ok(None);
        };
        self.refill(source).await?;
        Ok(Some(key))
    }

    /// Checks every source to its end without taking more keys from them ([`Check`]): what
    /// a merge that stops early owes before anything merged is published.
    pub(super) async fn check_rest(&mut self) -> Result<(), ExportError> {
        self.heap.clear();
        for source in &mut self.sources {
            source.check_rest().await?;
        }
        Ok(())
    }

    /// Pushes the next relevant key of `source`, if any.
    async fn refill(&mut self, source: usize) -> Result<(), ExportError> {
        while let Some(key) = self.sources[source].next().await? {
            let relevant = self
                .relevant_at
                .is_none_or(|at| time::is_relevant(key.expiry_unix(), at));
            if relevant {
                self.heap.push(Reverse(Head { key, source }));
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    use bytes::Bytes;
    use diagnosis_core::domain::{KeyData, Region, ReportType};

    use diagnosis_format::archive::zip_export;
    use diagnosis_format::names::ObjectKind;
    use diagnosis_format::render::{ExportWindow, SignerInfo, render_window};

    use super::*;

    fn keys(seed: u8, count: usize, start: i32) -> Vec<DiagnosisKey> {
        (0..count)
            .map(|i| {
                let mut data = [seed; 16];
                data[..8]
                    .copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
                DiagnosisKey {
                    key_data: KeyData::from_array(data),
                    rolling_start_interval_number: start - 144 * (i % 14) as i32,
                    rolling_period: if i % 7 == 0 { 100 } else { 144 },
                    transmission_risk_level: (i % 9) as i32,
                    report_type: ReportType::ConfirmedTest,
                    days_since_onset: (i % 3 != 0).then_some((i % 29) as i32 - 14),
                }
            })
            .collect()
    }

    /// Publishes `keys` as files of at most `max` keys; returns the source objects in order.
    async fn publish(
        bucket: &Bucket,
        name: &str,
        keys: &mut [DiagnosisKey],
        max: usize,
    ) -> Vec<SourceObject> {
        let window = ExportWindow::new(Region::parse("CA").unwrap(), 1_000_000, 1_003_600).unwrap();
        let parts =
            render_window(window, &[SignerInfo::new("v1", "302").unwrap()], max, keys).unwrap();
        let mut objects = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let zip = zip_export(&part.export_bin, b"not checked here").unwrap();
            let key = format!("CA/{name}-{i}.zip");
            objects.push(source(&key, &zip, part.key_count as u64));
            bucket
                .put(&key, Bytes::from(zip), ObjectKind::ExportFile)
                .await
                .unwrap();
        }
        objects
    }

    /// The source the ledger would describe for `zip`, checked as it is streamed.
    fn source(key: &str, zip: &[u8], keys: u64) -> SourceObject {
        SourceObject {
            key: key.to_owned(),
            bytes: zip.len() as u64,
            sha256: Sha256::digest(zip).into(),
            max_keys: keys,
            check: Check::Streaming,
        }
    }

    async fn drain(mut merged: MergedFiles) -> Vec<DiagnosisKey> {
        let mut out = Vec::new();
        while let Some(key) = merged.next().await.unwrap() {
            out.push(key);
        }
        out
    }

    #[tokio::test]
    async fn the_merge_of_published_files_is_the_sorted_union_of_their_keys() {
        let bucket = Bucket::in_memory();
        let mut a = keys(1, 3_000, 2_940_480);
        let mut b = keys(2, 2_000, 2_940_480);
        let mut c = keys(3, 10, 2_940_480 - 144);
        let sources = vec![
            publish(&bucket, "a", &mut a, 1_000).await,
            publish(&bucket, "b", &mut b, 2_000).await,
            publish(&bucket, "c", &mut c, 5).await,
            Vec::new(),
        ];
        assert_eq!(sources[0].len(), 3);
        // Small chunks, so that fields and varints straddle every kind of boundary.
        for chunk in [7, 64, 1_000, CHUNK_BYTES] {
            let merged = MergedFiles::with_chunk(&bucket, sources.clone(), None, chunk);
            let mut expected: Vec<DiagnosisKey> = a.iter().chain(&b).chain(&c).cloned().collect();
            expected.sort_unstable_by(DiagnosisKey::canonical_cmp);
            assert!(drain(merged).await == expected, "chunk {chunk}");
        }
        // The bundle keeps only the keys still relevant at its end.
        let at = (2_940_480_i64 - 144 * 5) * 600 + time::RELEVANCE_SECONDS;
        let kept = drain(MergedFiles::new(&bucket, sources, Some(at))).await;
        assert!(!kept.is_empty() && kept.len() < 5_010);
        assert!(kept.iter().all(|k| time::is_relevant(k.expiry_unix(), at)));
    }

    #[tokio::test]
    async fn a_damaged_file_is_an_error_never_a_guess() {
        let bucket = Bucket::in_memory();
        let mut a = keys(1, 500, 2_940_480);
        let objects = publish(&bucket, "a", &mut a, 1_000).await;
        let zip = bucket.get(&objects[0].key).await.unwrap().unwrap();
        let mut damaged = zip.to_vec();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        damaged[middle + 1] ^= 0xff;
        bucket
            .put(
                "CA/damaged.zip",
                Bytes::from(damaged),
                ObjectKind::ExportFile,
            )
            .await
            .unwrap();
        let damaged_source = SourceObject {
            key: "CA/damaged.zip".into(),
            ..objects[0].clone()
        };
        let mut merged = MergedFiles::new(&bucket, vec![vec![damaged_source]], None);
        let mut result = Ok(Some(a[0].clone()));
        while let Ok(Some(_)) = result {
            result = merged.next().await;
        }
        assert!(result.is_err(), "a flipped byte went unnoticed");

        let mut not_zip = MergedFiles::new(
            &bucket,
            vec![vec![SourceObject {
                bytes: 20,
                ..objects[0].clone()
            }]],
            None,
        );
        assert!(not_zip.next().await.is_err());
    }

    /// Reads `objects[0]` as the merge would, to its first error.
    async fn read_to_error(bucket: &Bucket, object: SourceObject, chunk: u64) -> String {
        let mut merged = MergedFiles::with_chunk(bucket, vec![vec![object]], None, chunk);
        loop {
            match merged.next().await {
                Ok(Some(_)) => {}
                Ok(None) => return "read to the end without an error".to_owned(),
                Err(error) => return error.to_string(),
            }
        }
    }

    /// The merge never reads the `export.sig` entry or the central directory, yet a file whose
    /// bytes there differ from the ledger's is refused: a streamed source is hashed to its end.
    #[tokio::test]
    async fn a_source_whose_tail_differs_from_the_ledger_is_refused() {
        let bucket = Bucket::in_memory();
        let mut a = keys(1, 300, 2_940_480);
        let objects = publish(&bucket, "a", &mut a, 1_000).await;
        let zip = bucket.get(&objects[0].key).await.unwrap().unwrap();
        assert_eq!(
            read_to_error(&bucket, objects[0].clone(), CHUNK_BYTES).await,
            "read to the end without an error"
        );
        let mut tail_changed = zip.to_vec();
        let last = tail_changed.len() - 30; // inside the central directory
        tail_changed[last] ^= 0x20;
        bucket
            .put(
                &objects[0].key,
                Bytes::from(tail_changed),
                ObjectKind::ExportFile,
            )
            .await
            .unwrap();
        for chunk in [64, 1_000, CHUNK_BYTES] {
            let error = read_to_error(&bucket, objects[0].clone(), chunk).await;
            assert!(
                error.ends_with("is not the one its ledger row records"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn a_source_of_another_size_or_with_more_keys_than_its_ledger_row_is_refused() {
        let bucket = Bucket::in_memory();
        let mut a = keys(1, 300, 2_940_480);
        let objects = publish(&bucket, "a", &mut a, 1_000).await;
        let object = &objects[0];

        let fewer = SourceObject {
            max_keys: 299,
            ..object.clone()
        };
        let error = read_to_error(&bucket, fewer, CHUNK_BYTES).await;
        assert!(
            error.ends_with("more keys than its ledger row records"),
            "{error}"
        );

        let zip = bucket.get(&object.key).await.unwrap().unwrap();
        let mut longer = zip.to_vec();
        longer.extend_from_slice(b"appended");
        bucket
            .put(&object.key, Bytes::from(longer), ObjectKind::ExportFile)
            .await
            .unwrap();
        let error = read_to_error(&bucket, object.clone(), CHUNK_BYTES).await;
        assert!(error.contains("the ledger records"), "{error}");

        bucket.delete(&object.key).await.unwrap();
        let error = read_to_error(&bucket, object.clone(), CHUNK_BYTES).await;
        assert!(error.ends_with("the object is missing"), "{error}");
    }

    /// A source verified whole before the merge is held to the digests of its reads: a change
    /// after the verification is refused at the read that carries it, before it is inflated.
    #[tokio::test]
    async fn a_verified_source_that_changes_before_it_is_merged_is_refused_at_once() {
        let bucket = Bucket::in_memory();
        let mut a = keys(1, 3_000, 2_940_480);
        let objects = publish(&bucket, "a", &mut a, 5_000).await;
        let zip = bucket.get(&objects[0].key).await.unwrap().unwrap();
        let chunk = 1_000;
        let verified = SourceObject {
            check: Check::Verified(read_digests(&zip, chunk).into()),
            ..objects[0].clone()
        };
        let mut expected = a.clone();
        expected.sort_unstable_by(DiagnosisKey::canonical_cmp);
        let merged = MergedFiles::with_chunk(&bucket, vec![vec![verified.clone()]], None, chunk);
        assert!(drain(merged).await == expected);

        let mut changed = zip.to_vec();
        let middle = changed.len() / 2;
        changed[middle] ^= 0x01;
        bucket
            .put(
                &objects[0].key,
                Bytes::from(changed),
                ObjectKind::ExportFile,
            )
            .await
            .unwrap();
        let error = read_to_error(&bucket, verified, chunk).await;
        assert!(
            error.ends_with("the object changed after it was verified"),
            "{error}"
        );
    }

    /// A merge that stops early (a retrieval object at the platform ceiling) still checks
    /// what it did not read: the rest of the open file and the files after it.
    #[tokio::test]
    async fn a_merge_that_stops_early_still_checks_every_source_to_its_end() {
        let bucket = Bucket::in_memory();
        let mut a = keys(1, 300, 2_940_480);
        let objects = publish(&bucket, "a", &mut a, 100).await;
        assert_eq!(objects.len(), 3);
        let stop_after_one = |bucket: Bucket, objects: Vec<SourceObject>| async move {
            let mut merged = MergedFiles::with_chunk(&bucket, vec![objects], None, 64);
            assert!(merged.next().await.unwrap().is_some());
            merged.check_rest().await
        };
        assert!(
            stop_after_one(bucket.clone(), objects.clone())
                .await
                .is_ok()
        );

        let last = objects[2].key.clone();
        let mut changed = bucket.get(&last).await.unwrap().unwrap().to_vec();
        let end = changed.len() - 1;
        changed[end] ^= 0x01;
        bucket
            .put(&last, Bytes::from(changed), ObjectKind::ExportFile)
            .await
            .unwrap();
        let error = stop_after_one(bucket, objects)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("{last}: ")), "{error}");
        assert!(
            error.ends_with("is not the one its ledger row records"),
            "{error}"
        );
    }

    /// Regression: a local header whose extra field ran past the first read failed at small
    /// chunk sizes and not at the production one (the `derive_reader` fuzz target's corpus,
    /// `regression-long-extra-field`). The chunk size never changes what is read.
    #[tokio::test]
    async fn a_long_extra_field_reads_the_same_at_every_chunk_size() {
        let bucket = Bucket::in_memory();
        let mut a = keys(1, 20, 2_940_480);
        let objects = publish(&bucket, "a", &mut a, 100).await;
        let zip = bucket.get(&objects[0].key).await.unwrap().unwrap();
        // The local header's extra field length (offset 28) and 128 bytes of extra field
        // after the name: the central directory is left pointing nowhere, which the reader
        // never looks at.
        let name_end = 30 + usize::from(u16::from_le_bytes([zip[26], zip[27]]));
        let mut long = zip[..name_end].to_vec();
        long[28..30].copy_from_slice(&128_u16.to_le_bytes());
        long.extend_from_slice(&[0xe9; 128]);
        long.extend_from_slice(&zip[name_end..]);
        bucket
            .put(
                "CA/long.zip",
                Bytes::from(long.clone()),
                ObjectKind::ExportFile,
            )
            .await
            .unwrap();
        let object = source("CA/long.zip", &long, 20);
        let mut expected = a.clone();
        expected.sort_unstable_by(DiagnosisKey::canonical_cmp);
        for chunk in [1, 8, 64, CHUNK_BYTES] {
            let merged = MergedFiles::with_chunk(&bucket, vec![vec![object.clone()]], None, chunk);
            assert!(drain(merged).await == expected, "chunk {chunk}");
        }
    }
}
