//! Reading the keys back out of a published export file (DESIGN §4.2: daily files and the
//! retrieval objects are merged from the hourly files already published): the zip's local
//! header, the streamed inflate of `export.bin` with its CRC-32 and size, and each key.
//!
//! [`KeyReader`] does no I/O: it is handed the object's bytes in order, in pieces of any size,
//! and says when it needs more. The exporter's merge feeds it from ranged reads of the bucket
//! (checking every read against the file's ledger row); the fuzz targets (DESIGN §7) feed it
//! hostile bytes in pieces of every size through [`read_keys`]. What it yields never depends on
//! how the bytes were split. Only the exporter's own layout is read (first entry `export.bin`,
//! deflated); anything unexpected is an error, never a guess, and no input may panic.

use std::num::NonZeroU64;
use std::ops::Range;

use bytes::Bytes;
use diagnosis_domain::domain::{DiagnosisKey, KeyData, ReportType};
use diagnosis_proto::EXPORT_BIN_HEADER;
use diagnosis_proto::export_bin::{self, KeyFields};
use flate2::{Decompress, FlushDecompress, Status};
use thiserror::Error;

use crate::archive::{EntryError, read_first_entry};

/// Bytes fetched per ranged read when the exporter reads a published file back.
pub const CHUNK_BYTES: u64 = 64 * 1024;

/// The first read of an object is at least this long, whatever the chunk size: enough for the
/// zip's local header and the name `export.bin`.
pub const FIRST_READ_MIN: u64 = 64;

/// Room made for inflated bytes at each inflate step: memory per file read stays this order
/// of size, whatever the size of the file.
const INFLATE_STEP_BYTES: usize = 2 * CHUNK_BYTES as usize;

/// Why a published file's keys could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReadError {
    #[error("{0}")]
    Entry(EntryError),
    #[error("entry larger than the object")]
    EntryLargerThanObject,
    #[error("deflate stream ends early")]
    DeflateEndsEarly,
    #[error("corrupt deflate stream")]
    CorruptDeflate,
    #[error("export.bin fails its CRC-32 or size")]
    CrcOrSize,
    #[error("{0}")]
    Malformed(export_bin::DecodeError),
    #[error("malformed key")]
    MalformedKey,
    #[error("export.bin ends mid-field")]
    EndsMidField,
}

/// What [`KeyReader::step`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The next key of `export.bin`.
    Key(DiagnosisKey),
    /// More of the object is needed ([`KeyReader::push`]) before anything else can be said.
    NeedBytes,
    /// `export.bin` is read to its end and its CRC-32 and size hold. The rest of the object
    /// (`export.sig`, the central directory) is not the reader's business.
    End,
}

/// The bytes that read number `index` of an object of `size` bytes fetches, in chunks of
/// `chunk`, or `None` past the object's end: the first read holds the local header.
pub fn read_range(index: u64, chunk: u64, size: u64) -> Option<Range<u64>> {
    let first = chunk.max(FIRST_READ_MIN);
    if index == 0 {
        return Some(0..first.min(size));
    }
    let start = (index - 1).checked_mul(chunk)?.checked_add(first)?;
    (start < size).then(|| start..start.saturating_add(chunk).min(size))
}

/// Every key of `object`, handed to a [`KeyReader`] in the reads of [`read_range`] at `chunk`
/// bytes, as the exporter's merge reads a file from the bucket.
pub fn read_keys(object: &[u8], chunk: NonZeroU64) -> Result<Vec<DiagnosisKey>, ReadError> {
    let size = object.len() as u64;
    let mut reader = KeyReader::new(size);
    let mut reads = (0..).map_while(|index| read_range(index, chunk.get(), size));
    let mut keys = Vec::new();
    loop {
        match reader.step()? {
            Step::Key(key) => keys.push(key),
            Step::End => return Ok(keys),
            Step::NeedBytes => {
                let range = reads.next().ok_or(ReadError::DeflateEndsEarly)?;
                let start = usize::try_from(range.start).unwrap_or(usize::MAX);
                let end = usize::try_from(range.end).unwrap_or(usize::MAX);
                let read = object.get(start..end).unwrap_or_default();
                reader.push(Bytes::copy_from_slice(read));
            }
        }
    }
}

/// Where `export.bin` ends in the object, and what it must inflate to (the local header's word).
#[derive(Debug)]
struct Entry {
    data_end: u64,
    expected_crc: u32,
    expected_len: u64,
}

/// The keys of one published file, read from its bytes as they are handed in.
pub struct KeyReader {
    /// The object's size (the ledger's word, or the bytes at hand).
    size: u64,
    /// Bytes handed in so far.
    received: u64,
    /// The bytes handed in before the local header could be read.
    pending: Vec<u8>,
    entry: Option<Entry>,
    /// Deflated bytes of `export.bin` not inflated yet start at `input_pos`.
    input: Bytes,
    input_pos: usize,
    inflate: Decompress,
    inflated_all: bool,
    crc: libdeflater::Crc,
    /// Inflated bytes of `export.bin` not parsed yet start at `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    header_checked: bool,
}

impl std::fmt::Debug for KeyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyReader")
            .field("size", &self.size)
            .field("received", &self.received)
            .field("entry", &self.entry)
            .field("inflated_all", &self.inflated_all)
            .finish_non_exhaustive()
    }
}

impl KeyReader {
    /// A reader of an object of `size` bytes, nothing handed in yet.
    pub fn new(size: u64) -> KeyReader {
        KeyReader {
            size,
            received: 0,
            pending: Vec::new(),
            entry: None,
            input: Bytes::new(),
            input_pos: 0,
            inflate: Decompress::new(false),
            inflated_all: false,
            crc: libdeflater::Crc::new(),
            out: Vec::new(),
            out_pos: 0,
            header_checked: false,
        }
    }

    /// Hands the reader the object's next bytes, right after those handed in so far.
    pub fn push(&mut self, bytes: Bytes) {
        let start = self.received;
        self.received = start.saturating_add(bytes.len() as u64);
        let Some(entry) = &self.entry else {
            self.pending.extend_from_slice(&bytes);
            return;
        };
        // Bytes past `export.bin` (`export.sig`, the central directory) are never inflated.
        let deflated = usize::try_from(entry.data_end.saturating_sub(start))
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let fresh = bytes.slice(..deflated);
        self.input = if self.input_pos < self.input.len() {
            Bytes::from([&self.input[self.input_pos..], &fresh[..]].concat())
        } else {
            fresh
        };
        self.input_pos = 0;
    }

    /// The next key, or what stands in its way.
    pub fn step(&mut self) -> Result<Step, ReadError> {
        if self.entry.is_none() && !self.read_entry()? {
            return Ok(Step::NeedBytes);
        }
        loop {
            match self.parse_field()? {
                Some(Some(key)) => return Ok(Step::Key(key)),
                Some(None) => continue,
                None if self.inflated_all => {
                    if self.out_pos != self.out.len() {
                        return Err(ReadError::EndsMidField);
                    }
                    return Ok(Step::End);
                }
                None => {
                    if !self.inflate_more()? {
                        return Ok(Step::NeedBytes);
                    }
                }
            }
        }
    }

    /// Reads the zip's local header once enough of the object is in, which must be the
    /// exporter's own: `export.bin`, deflated. `false` while more bytes are needed.
    fn read_entry(&mut self) -> Result<bool, ReadError> {
        if self.received < self.size.min(FIRST_READ_MIN) {
            return Ok(false);
        }
        let first = read_first_entry(&self.pending).map_err(ReadError::Entry)?;
        if first.data_end > self.size {
            return Err(ReadError::EntryLargerThanObject);
        }
        // A local header longer than the first read (a long extra field; the exporter writes
        // none) is read on, so that how the bytes are split never changes what is read.
        if self.received < first.data_start {
            return Ok(false);
        }
        let start = usize::try_from(first.data_start).unwrap_or(usize::MAX);
        let end = usize::try_from(first.data_end)
            .unwrap_or(usize::MAX)
            .min(self.pending.len());
        self.input = Bytes::from(self.pending.get(start..end).unwrap_or_default().to_vec());
        self.input_pos = 0;
        self.pending = Vec::new();
        self.entry = Some(Entry {
            data_end: first.data_end,
            expected_crc: first.crc32,
            expected_len: first.size,
        });
        Ok(true)
    }

    /// Inflates more of `export.bin` and checks the entry's CRC-32 and size once the stream
    /// ends. `false` when the deflated bytes at hand are spent and more are to come.
    fn inflate_more(&mut self) -> Result<bool, ReadError> {
        let data_end = self.entry.as_ref().map_or(0, |entry| entry.data_end);
        if self.input_pos >= self.input.len() {
            if self.received >= data_end {
                return Err(ReadError::DeflateEndsEarly);
            }
            return Ok(false);
        }
        // Keep only the unparsed tail.
        self.out.drain(..self.out_pos);
        self.out_pos = 0;
        let before_in = self.inflate.total_in();
        let before_out = self.out.len();
        self.out.reserve(INFLATE_STEP_BYTES);
        let status = self
            .inflate
            .decompress_vec(
                &self.input[self.input_pos..],
                &mut self.out,
                FlushDecompress::None,
            )
            .map_err(|_| ReadError::CorruptDeflate)?;
        self.input_pos += usize::try_from(self.inflate.total_in() - before_in).unwrap_or(0);
        self.crc.update(&self.out[before_out..]);
        if status == Status::StreamEnd {
            let expected = self
                .entry
                .as_ref()
                .map(|entry| (entry.expected_crc, entry.expected_len));
            if expected != Some((self.crc.sum(), self.inflate.total_out())) {
                return Err(ReadError::CrcOrSize);
            }
            self.inflated_all = true;
        }
        Ok(true)
    }

    /// Parses the next field of `export.bin` from the inflated bytes: `Some(Some(key))` for a
    /// key, `Some(None)` for any other field, `None` when the bytes end before the field does.
    fn parse_field(&mut self) -> Result<Option<Option<DiagnosisKey>>, ReadError> {
        let bytes = &self.out[self.out_pos..];
        if !self.header_checked {
            if !export_bin::check_header(bytes).map_err(ReadError::Malformed)? {
                return Ok(None);
            }
            self.out_pos += EXPORT_BIN_HEADER.len();
            self.header_checked = true;
            return Ok(Some(None));
        }
        let Some((field, used)) = export_bin::next_field(bytes).map_err(ReadError::Malformed)?
        else {
            return Ok(None);
        };
        let key = match field {
            export_bin::Field::Key(body) => Some(
                export_bin::decode_key(body)
                    .ok()
                    .and_then(|key| diagnosis_key(&key))
                    .ok_or(ReadError::MalformedKey)?,
            ),
            export_bin::Field::Other => None,
        };
        self.out_pos += used;
        Ok(Some(key))
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

#[cfg(test)]
mod tests {
    use diagnosis_domain::domain::Region;

    use super::*;
    use crate::archive::zip_export;
    use crate::render::{ExportWindow, SignerInfo, render_window};

    fn keys(count: usize) -> Vec<DiagnosisKey> {
        (0..count)
            .map(|i| {
                let mut data = [5; 16];
                data[..8]
                    .copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
                DiagnosisKey {
                    key_data: KeyData::from_array(data),
                    rolling_start_interval_number: 2_940_480 - 144 * (i % 14) as i32,
                    rolling_period: if i % 7 == 0 { 100 } else { 144 },
                    transmission_risk_level: (i % 9) as i32,
                    report_type: ReportType::ConfirmedTest,
                    days_since_onset: (i % 3 != 0).then_some((i % 29) as i32 - 14),
                }
            })
            .collect()
    }

    /// A published file of `keys`, and the keys in the order it holds them.
    fn published(mut keys: Vec<DiagnosisKey>) -> (Vec<u8>, Vec<DiagnosisKey>) {
        let window = ExportWindow::new(Region::parse("CA").unwrap(), 1_000_000, 1_003_600).unwrap();
        let signer = [SignerInfo::new("v1", "302").unwrap()];
        let parts = render_window(window, &signer, 10_000, &mut keys).unwrap();
        let zip = zip_export(&parts[0].export_bin, b"not checked here").unwrap();
        (zip, keys)
    }

    fn chunk(bytes: u64) -> NonZeroU64 {
        NonZeroU64::new(bytes).unwrap()
    }

    /// However the bytes are split, even one at a time, the same keys come out: fields and
    /// varints straddle every kind of boundary.
    #[test]
    fn the_keys_read_never_depend_on_how_the_bytes_are_split() {
        let (zip, expected) = published(keys(700));
        for bytes in [1, 7, 64, 1_000, CHUNK_BYTES] {
            assert!(
                read_keys(&zip, chunk(bytes)).unwrap() == expected,
                "chunk {bytes}"
            );
        }
    }

    #[test]
    fn the_reads_of_an_object_cover_it_once_in_order() {
        for size in [1_u64, 63, 64, 65, 1_000, 70_000, 3 * CHUNK_BYTES + 64] {
            for chunk in [1_u64, 7, 64, 1_000, CHUNK_BYTES] {
                let ranges: Vec<Range<u64>> = (0..)
                    .map_while(|index| read_range(index, chunk, size))
                    .collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[ranges.len() - 1].end, size);
                assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
                assert!(ranges.iter().all(|r| r.start < r.end));
                assert!(
                    ranges[0].end >= size.min(FIRST_READ_MIN),
                    "the local header in one read"
                );
            }
        }
    }

    #[test]
    fn a_damaged_or_cut_file_is_an_error_never_a_guess() {
        let (zip, _) = published(keys(300));
        let mut damaged = zip.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        damaged[middle + 1] ^= 0xff;
        assert!(read_keys(&damaged, chunk(64)).is_err());
        let data_end =
            30 + 10 + u64::from(u32::from_le_bytes([zip[18], zip[19], zip[20], zip[21]]));
        let cut = &zip[..usize::try_from(data_end).unwrap() - 1];
        assert_eq!(
            read_keys(cut, chunk(64)),
            Err(ReadError::EntryLargerThanObject)
        );
        assert_eq!(
            read_keys(&zip[..20], chunk(64)),
            Err(ReadError::Entry(EntryError::Truncated))
        );
        assert_eq!(
            read_keys(b"", chunk(64)),
            Err(ReadError::Entry(EntryError::Truncated))
        );
    }

    fn decode_key(body: &[u8]) -> Option<DiagnosisKey> {
        export_bin::decode_key(body)
            .ok()
            .and_then(|key| diagnosis_key(&key))
    }

    #[test]
    fn keys_decode_as_prost_decodes_them() {
        use diagnosis_proto::{Message as _, TemporaryExposureKey};
        for key in keys(300) {
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
    #[test]
    fn a_key_length_near_2_pow_64_is_a_malformed_key() {
        let key = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(decode_key(&key), None);

        let mut export_bin = EXPORT_BIN_HEADER.to_vec();
        export_bin.extend_from_slice(&[0x3a, key.len() as u8]);
        export_bin.extend_from_slice(&key);
        let zip = zip_export(&export_bin, b"").unwrap();
        assert_eq!(
            read_keys(&zip, chunk(CHUNK_BYTES)),
            Err(ReadError::MalformedKey)
        );
    }
}
