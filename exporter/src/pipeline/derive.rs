//! Files built from published files (DESIGN §4, §4.3): a daily file is exactly the union of its
//! hourly files, and the retrieval objects are unions of hourly and daily files, so once those
//! are uploaded the bigger windows are merged from them instead of being read from Postgres
//! again. Each source file is already in canonical order, so a k-way merge of their keys is in
//! canonical order too; the renderer still checks every key.
//!
//! A source is read in chunks of [`CHUNK_BYTES`] with ranged reads and inflated as it goes:
//! memory is a few hundred kilobytes per source, whatever the size of the files. Only files the
//! exporter wrote itself are read, at the sizes its ledger recorded; anything unexpected in
//! them is an error, never a guess.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::num::NonZeroU64;

use diagnosis_core::domain::{DiagnosisKey, KeyData, ReportType};
use diagnosis_core::store::ExportRecord;
use diagnosis_core::time;
use diagnosis_format::archive::read_first_entry;
use diagnosis_proto::EXPORT_BIN_HEADER;
use diagnosis_proto::export_bin::{self, KeyFields};
use flate2::{Decompress, FlushDecompress, Status};

use super::ExportError;
use crate::storage::Bucket;

/// Bytes fetched per ranged read.
pub const CHUNK_BYTES: u64 = 64 * 1024;

/// Why a published file could not be read back.
fn unreadable(key: &str, what: &str) -> ExportError {
    ExportError::Derive(format!("{key}: {what}"))
}

/// One object to read: its key and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SourceObject {
    pub key: String,
    pub bytes: u64,
}

impl From<&ExportRecord> for SourceObject {
    fn from(record: &ExportRecord) -> SourceObject {
        SourceObject {
            key: record.object_key.clone(),
            bytes: u64::try_from(record.bytes).unwrap_or(0),
        }
    }
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
    /// Next byte of the object to fetch.
    offset: u64,
    /// Where the deflated `export.bin` ends in the object.
    data_end: u64,
    input: bytes::Bytes,
    input_pos: usize,
    inflate: Decompress,
    inflated_all: bool,
    crc: libdeflater::Crc,
    expected_crc: u32,
    expected_len: u64,
    /// Inflated bytes of `export.bin` not parsed yet start at `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    header_checked: bool,
}

/// One protobuf field read from the inflated bytes.
enum Field {
    Key(DiagnosisKey),
    Other,
}

impl FileKeys {
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
                self.current = Some(OpenFile::open(&self.bucket, object, self.chunk).await?);
                continue;
            };
            match file.parse_field()? {
                Some(Field::Key(key)) => return Ok(Some(key)),
                Some(Field::Other) => continue,
                None if file.inflated_all => {
                    if file.out_pos != file.out.len() {
                        return Err(unreadable(&file.object.key, "export.bin ends mid-field"));
                    }
                    self.current = None;
                }
                None => file.inflate_more(&self.bucket, self.chunk).await?,
            }
        }
    }
}

impl OpenFile {
    /// Reads the zip's local header, which must be the exporter's own: `export.bin`, deflated.
    async fn open(
        bucket: &Bucket,
        object: SourceObject,
        chunk: u64,
    ) -> Result<OpenFile, ExportError> {
        let first = bucket
            .get_range(&object.key, 0..object.bytes.min(chunk.max(64)))
            .await?;
        let entry =
            read_first_entry(&first).map_err(|e| unreadable(&object.key, &e.to_string()))?;
        let data_end = entry.data_end;
        let data_start = usize::try_from(entry.data_start).unwrap_or(usize::MAX);
        if data_end > object.bytes || data_start > first.len() {
            return Err(unreadable(&object.key, "entry larger than the object"));
        }
        let expected_crc = entry.crc32;
        let expected_len = entry.size;
        let fetched = first.len() as u64;
        let input = first.slice(
            data_start
                ..first
                    .len()
                    .min(usize::try_from(data_end).unwrap_or(usize::MAX)),
        );
        Ok(OpenFile {
            object,
            offset: fetched.min(data_end),
            data_end,
            input,
            input_pos: 0,
            inflate: Decompress::new(false),
            inflated_all: false,
            crc: libdeflater::Crc::new(),
            expected_crc,
            expected_len,
            out: Vec::new(),
            out_pos: 0,
            header_checked: false,
        })
    }

    /// Inflates more of `export.bin`, fetching the next chunk when the current one is spent,
    /// and checks the entry's CRC-32 and size once the stream ends.
    async fn inflate_more(&mut self, bucket: &Bucket, chunk: u64) -> Result<(), ExportError> {
        // Keep only the unparsed tail.
        self.out.drain(..self.out_pos);
        self.out_pos = 0;
        if self.input_pos >= self.input.len() {
            if self.offset >= self.data_end {
                return Err(unreadable(&self.object.key, "deflate stream ends early"));
            }
            let end = (self.offset + chunk).min(self.data_end);
            self.input = bucket.get_range(&self.object.key, self.offset..end).await?;
            self.input_pos = 0;
            self.offset = end;
        }
        let before_in = self.inflate.total_in();
        let before_out = self.out.len();
        self.out.reserve(2 * chunk as usize);
        let status = self
            .inflate
            .decompress_vec(
                &self.input[self.input_pos..],
                &mut self.out,
                FlushDecompress::None,
            )
            .map_err(|_| unreadable(&self.object.key, "corrupt deflate stream"))?;
        self.input_pos += usize::try_from(self.inflate.total_in() - before_in).unwrap_or(0);
        self.crc.update(&self.out[before_out..]);
        if status == Status::StreamEnd {
            if self.crc.sum() != self.expected_crc || self.inflate.total_out() != self.expected_len
            {
                return Err(unreadable(
                    &self.object.key,
                    "export.bin fails its CRC-32 or size",
                ));
            }
            self.inflated_all = true;
        }
        Ok(())
    }

    /// Parses the next field of `export.bin` from the inflated bytes; `None` when they end
    /// before the field does.
    fn parse_field(&mut self) -> Result<Option<Field>, ExportError> {
        let bytes = &self.out[self.out_pos..];
        let malformed = |e: export_bin::DecodeError| unreadable(&self.object.key, &e.to_string());
        if !self.header_checked {
            if !export_bin::check_header(bytes).map_err(malformed)? {
                return Ok(None);
            }
            self.out_pos += EXPORT_BIN_HEADER.len();
            self.header_checked = true;
            return Ok(Some(Field::Other));
        }
        let Some((field, used)) = export_bin::next_field(bytes).map_err(malformed)? else {
            return Ok(None);
        };
        let field = match field {
            export_bin::Field::Key(body) => Field::Key(
                export_bin::decode_key(body)
                    .ok()
                    .and_then(|key| diagnosis_key(&key))
                    .ok_or_else(|| unreadable(&self.object.key, "malformed key"))?,
            ),
            export_bin::Field::Other => Field::Other,
        };
        self.out_pos += used;
        Ok(Some(field))
    }
}

/// The domain key of a decoded `TemporaryExposureKey`: `None` when its key data is not 16
/// bytes or its report type is not one the domain knows.
fn diagnosis_key(key: &KeyFields<'_>) -> Option<DiagnosisKey> {
    Some(DiagnosisKey {
        key_data: KeyData::try_from(key.key_data).ok()?,
        rolling_start_interval_number: key.rolling_start_interval_number,
        rolling_period: key.rolling_period,
        transmission_risk_level: key.transmission_risk_level,
        report_type: ReportType::from_i32(key.report_type)?,
        days_since_onset: key.days_since_onset_of_symptoms,
    })
}

/// Reads back every key of one published object with the reader the merges use: its zip
/// local header, the inflated `export.bin` and each key, fetched in ranged reads of
/// `chunk_bytes`. `bytes` is the object's size as the ledger recorded it.
///
/// The pipeline only merges; this entry point exists so that the fuzz targets (DESIGN §7) can
/// hand the reader arbitrary bytes at any chunk size.
pub async fn read_published_keys(
    bucket: &Bucket,
    key: &str,
    bytes: u64,
    chunk_bytes: NonZeroU64,
) -> Result<Vec<DiagnosisKey>, ExportError> {
    let source = vec![SourceObject {
        key: key.to_owned(),
        bytes,
    }];
    let mut merged = MergedFiles::with_chunk(bucket, vec![source], None, chunk_bytes.get());
    let mut keys = Vec::new();
    while let Some(key) = merged.next().await? {
        keys.push(key);
    }
    Ok(keys)
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
        MergedFiles {
            sources: sources
                .into_iter()
                .map(|objects| FileKeys::new(bucket.clone(), objects, chunk))
                .collect(),
            heap: BinaryHeap::new(),
            relevant_at,
            started: false,
        }
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
    use diagnosis_core::domain::Region;

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
            objects.push(SourceObject {
                key: key.clone(),
                bytes: zip.len() as u64,
            });
            bucket
                .put(&key, Bytes::from(zip), ObjectKind::ExportFile)
                .await
                .unwrap();
        }
        objects
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

    fn decode_key(body: &[u8]) -> Option<DiagnosisKey> {
        export_bin::decode_key(body)
            .ok()
            .and_then(|key| diagnosis_key(&key))
    }

    #[test]
    fn keys_decode_as_prost_decodes_them() {
        use diagnosis_proto::{Message as _, TemporaryExposureKey};
        for key in keys(9, 300, 2_940_480) {
            let wire = TemporaryExposureKey {
                key_data: Some(key.key_data.as_bytes().to_vec()),
                transmission_risk_level: Some(key.transmission_risk_level),
                rolling_start_interval_number: Some(key.rolling_start_interval_number),
                rolling_period: (key.rolling_period != 144).then_some(key.rolling_period),
                report_type: Some(key.report_type.as_i32()),
                days_since_onset_of_symptoms: key.days_since_onset,
            }
            .encode_to_vec();
            assert_eq!(decode_key(&wire), Some(key));
        }
        assert_eq!(decode_key(&[0x0a, 0x02, 1, 2]), None, "a short key");
        assert_eq!(
            decode_key(&[0x0a, 0x00, 0x18, 0x01, 0x28, 0x01]),
            None,
            "key data that is not 16 bytes"
        );
        let mut unknown_report = vec![0x0a, 0x10];
        unknown_report.extend([0_u8; 16]);
        unknown_report.extend([0x18, 0x01, 0x28, 0x09]);
        assert_eq!(decode_key(&unknown_report), None, "report type 9");
        unknown_report[21] = 0x01;
        assert!(decode_key(&unknown_report).is_some(), "report type 1");
        assert_eq!(
            decode_key(&[0x18, 0x01, 0x38, 0x01]),
            None,
            "an unknown field"
        );
    }

    /// Regression: a `key_data` length varint near 2^64 overflowed the bounds arithmetic of
    /// `decode_key` (a panic with overflow checks on) instead of being a malformed key. Input
    /// from the `derive_reader` fuzz target's corpus (`regression-key-length-overflow`).
    #[tokio::test]
    async fn a_key_length_near_2_pow_64_is_a_malformed_key() {
        let key = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(decode_key(&key), None);

        let mut export_bin = EXPORT_BIN_HEADER.to_vec();
        export_bin.extend_from_slice(&[0x3a, key.len() as u8]);
        export_bin.extend_from_slice(&key);
        let zip = zip_export(&export_bin, b"").unwrap();
        let bucket = Bucket::in_memory();
        bucket
            .put("CA/k.zip", Bytes::from(zip.clone()), ObjectKind::ExportFile)
            .await
            .unwrap();
        let chunk = NonZeroU64::new(CHUNK_BYTES).unwrap();
        let read = read_published_keys(&bucket, "CA/k.zip", zip.len() as u64, chunk).await;
        assert!(
            matches!(&read, Err(ExportError::Derive(why)) if why.ends_with("malformed key")),
            "{read:?}"
        );
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
        let source = vec![SourceObject {
            key: "CA/damaged.zip".into(),
            bytes: zip.len() as u64,
        }];
        let mut merged = MergedFiles::new(&bucket, vec![source], None);
        let mut result = Ok(Some(a[0].clone()));
        while let Ok(Some(_)) = result {
            result = merged.next().await;
        }
        assert!(result.is_err(), "a flipped byte went unnoticed");

        let mut not_zip = MergedFiles::new(
            &bucket,
            vec![vec![SourceObject {
                key: objects[0].key.clone(),
                bytes: 20,
            }]],
            None,
        );
        assert!(not_zip.next().await.is_err());
    }
}
