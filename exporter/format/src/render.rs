//! Render step: diagnosis keys of one window become the bytes of `export.bin` (DESIGN §4.1).
//!
//! `export.bin` is the 16-byte header `EK Export v1    ` followed by one serialized
//! `TemporaryExposureKeyExport`. It is written field by field by
//! [`diagnosis_proto::export_bin`], exactly as prost would emit the whole message, so keys can
//! be appended one at a time as they stream out of the database: the only memory a window
//! costs is the bytes of the file being built (DESIGN §4.1, STYLE 6).
//!
//! Why this streaming codec and not prost's `encode` of the whole message: prost needs every
//! key of a window in memory at once, and the exporter's peak RSS at 10 million keys is measured
//! (`export_peak_rss_mib_10m` in `tests/bench/results.json`) at a few tens of MiB because it
//! never does; `fixtures::committed_zips_are_reproduced_byte_for_byte` (exporter tests) holds the
//! bytes to the golden files.
//!
//! This module also owns the rules that make a rebuild reproduce the same bytes: the canonical
//! key order and the split into numbered parts. The names the parts are published under are in
//! [`crate::names`].
//!
//! It must never reorder, drop or invent keys, never hold more than one part in memory, and
//! never do I/O: it receives keys and returns bytes.

use std::cmp::Ordering;
use std::fmt;
use std::num::NonZeroUsize;

use diagnosis_domain::domain::{DiagnosisKey, Region};
use diagnosis_proto::export_bin::{self, ExportFields, KeyFields};
use diagnosis_proto::{SIGNATURE_ALGORITHM, SignatureInfo};
use thiserror::Error;

/// Default `MAX_KEYS_PER_FILE` (DESIGN §4.1, §6).
pub const DEFAULT_MAX_KEYS_PER_FILE: usize = 500_000;

/// Apple's ceiling on keys in one export file; `MAX_KEYS_PER_FILE` must not exceed it
/// (DESIGN §4.1).
pub const PLATFORM_MAX_KEYS_PER_FILE: usize = 750_000;

/// At most this many signing keys sign one file (DESIGN §4.1).
pub const MAX_SIGNERS: usize = 10;

/// Every export is a single batch: `batch_num = batch_size = 1` (DESIGN §4.1).
pub const BATCH_NUM: i32 = 1;
/// See [`BATCH_NUM`].
pub const BATCH_SIZE: i32 = 1;

/// Why a window could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RenderError {
    /// The window does not end after it starts.
    #[error("export window must end after it starts (start {start}, end {end})")]
    EmptyWindow {
        /// Window start, unix seconds.
        start: u64,
        /// Window end, unix seconds.
        end: u64,
    },
    /// No signer, or more than the platforms accept.
    #[error("an export needs 1 to {MAX_SIGNERS} signature infos, got {count}")]
    SignerCount {
        /// How many were given.
        count: usize,
    },
    /// Keys must arrive in canonical order (DESIGN §4.1); anything else would leak which keys
    /// were uploaded together, or put a duplicate in the file.
    #[error(
        "key {index} of the window is not after the previous key in canonical order \
         (DESIGN §4.1); the key source must sort them and never repeat one"
    )]
    OutOfOrder {
        /// 0-based position of the offending key in the window.
        index: usize,
    },
    /// `MAX_KEYS_PER_FILE` is outside 1..=750 000.
    #[error("MAX_KEYS_PER_FILE must be from 1 to {PLATFORM_MAX_KEYS_PER_FILE}, got {value}")]
    MaxKeysPerFile {
        /// The configured value.
        value: usize,
    },
    /// The window needs more parts than a five-digit part number can name.
    #[error("the window needs more than {} parts", PartNumber::MAX)]
    TooManyParts,
}

/// The verification key version and ID a signature is published under (DESIGN §4.1):
/// `verification_key_version` (default `v1`) and `verification_key_id` (the MCC, default
/// `302`), each 1 to 64 characters of `[A-Za-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignerInfo {
    key_version: String,
    key_id: String,
}

/// A signer's version or ID was not 1 to 64 characters of `[A-Za-z0-9_]`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} must be 1 to {max} characters of [A-Za-z0-9_], got {value:?}", max = SignerInfo::MAX_LEN)]
pub struct InvalidSignerInfo {
    /// `verification_key_version` or `verification_key_id`.
    pub field: &'static str,
    /// The rejected value (public, not secret).
    pub value: String,
}

impl SignerInfo {
    /// Longest version or ID accepted.
    pub const MAX_LEN: usize = 64;

    /// Checks both values against DESIGN §4.1 (`[A-Za-z0-9_]` only).
    pub fn new(key_version: &str, key_id: &str) -> Result<Self, InvalidSignerInfo> {
        fn check(field: &'static str, value: &str) -> Result<String, InvalidSignerInfo> {
            let well_formed = (1..=SignerInfo::MAX_LEN).contains(&value.len())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if well_formed {
                Ok(value.to_owned())
            } else {
                Err(InvalidSignerInfo {
                    field,
                    value: value.to_owned(),
                })
            }
        }
        Ok(Self {
            key_version: check("verification_key_version", key_version)?,
            key_id: check("verification_key_id", key_id)?,
        })
    }

    /// `verification_key_version`, such as `v1`.
    pub fn key_version(&self) -> &str {
        &self.key_version
    }

    /// `verification_key_id`, such as `302`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The wire form, shared by `export.bin` and `export.sig` so both always say the same.
    pub fn to_signature_info(&self) -> SignatureInfo {
        SignatureInfo {
            verification_key_version: Some(self.key_version.clone()),
            verification_key_id: Some(self.key_id.clone()),
            signature_algorithm: Some(SIGNATURE_ALGORITHM.to_owned()),
        }
    }
}

/// The time window one export covers: `[start, end)` in unix seconds, for one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportWindow {
    region: Region,
    start: u64,
    end: u64,
}

impl ExportWindow {
    /// A window for `region` from `start` (inclusive) to `end` (exclusive), unix seconds.
    pub fn new(region: Region, start: u64, end: u64) -> Result<Self, RenderError> {
        if end <= start {
            return Err(RenderError::EmptyWindow { start, end });
        }
        Ok(Self { region, start, end })
    }

    /// A window that may still be empty (`end == start`): the current day's
    /// retrieval object before any of its hours has closed (DESIGN §4.3).
    pub fn growing(region: Region, start: u64, end: u64) -> Result<Self, RenderError> {
        if end < start {
            return Err(RenderError::EmptyWindow { start, end });
        }
        Ok(Self { region, start, end })
    }

    /// The export region written into `export.bin` and the object key.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Window start, unix seconds.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Window end, unix seconds: the real end, as in the object key.
    pub fn end(&self) -> u64 {
        self.end
    }
}

/// The 1-based number of one part of a window's export (DESIGN §4.1): `00001`, `00002`, ….
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartNumber(u32);

impl PartNumber {
    /// The first part; a window with at most `MAX_KEYS_PER_FILE` keys has only this one.
    pub const FIRST: Self = Self(1);
    /// The largest number five digits can name.
    pub const MAX: u32 = 99_999;

    /// Accepts 1..=99 999.
    pub const fn new(number: u32) -> Option<Self> {
        if number >= 1 && number <= Self::MAX {
            Some(Self(number))
        } else {
            None
        }
    }

    /// The number, 1..=99 999.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The following part, if it can still be named.
    pub const fn next(self) -> Option<Self> {
        Self::new(self.0 + 1)
    }

    /// The `end_timestamp` written inside `export.bin` for this part: `end + (part − 1)`, so
    /// no two files of a window share (start, end, batch_num), which Android uses to
    /// de-duplicate (DESIGN §4.1). The object key keeps the real end.
    pub const fn end_timestamp(self, window_end: u64) -> u64 {
        // Saturating: unix times are nowhere near the limit, and this must never panic.
        window_end.saturating_add(self.0 as u64 - 1)
    }
}

impl fmt::Debug for PartNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartNumber({:05})", self.0)
    }
}

impl fmt::Display for PartNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05}", self.0)
    }
}

/// The canonical key order of DESIGN §4.1 ([`DiagnosisKey::canonical_cmp`]). The key source
/// must deliver keys in this order: the store sorts each window (`Store::stream_publishable_keys`
/// in `diagnosis-core`).
pub fn canonical_cmp(a: &DiagnosisKey, b: &DiagnosisKey) -> Ordering {
    a.canonical_cmp(b)
}

/// Sorts keys into the canonical order of DESIGN §4.1 (see [`canonical_cmp`]).
pub fn sort_canonical(keys: &mut [DiagnosisKey]) {
    keys.sort_unstable_by(canonical_cmp);
}

/// Builds one `export.bin` incrementally: header and fields 1–6 at creation, then one field-7
/// key per [`ExportBinWriter::push`].
///
/// The output is byte-for-byte what prost produces for the equivalent
/// `TemporaryExposureKeyExport` (keys' `rolling_period` left unset when it is 144), prefixed by
/// [`EXPORT_BIN_HEADER`].
#[derive(Debug)]
pub struct ExportBinWriter {
    buf: Vec<u8>,
    /// One key's encoding, reused so that pushing a key allocates nothing once warm.
    scratch: Vec<u8>,
    count: usize,
    /// Position of the next key in the whole window (across parts), for error messages.
    window_index: usize,
    last: Option<DiagnosisKey>,
}

impl ExportBinWriter {
    /// Starts `export.bin` for `part` of `window`, signed by `signers` (newest first).
    pub fn new(
        window: &ExportWindow,
        part: PartNumber,
        signers: &[SignerInfo],
    ) -> Result<Self, RenderError> {
        if signers.is_empty() || signers.len() > MAX_SIGNERS {
            return Err(RenderError::SignerCount {
                count: signers.len(),
            });
        }
        let mut buf = Vec::with_capacity(256);
        let fields = ExportFields {
            start_timestamp: window.start,
            end_timestamp: part.end_timestamp(window.end),
            region: window.region.as_str(),
            batch_num: BATCH_NUM,
            batch_size: BATCH_SIZE,
        };
        let infos: Vec<SignatureInfo> = signers.iter().map(SignerInfo::to_signature_info).collect();
        export_bin::encode_head(&fields, &infos, &mut buf);
        Ok(Self {
            buf,
            scratch: Vec::with_capacity(64),
            count: 0,
            window_index: 0,
            last: None,
        })
    }

    /// Appends one key. Keys must come in strictly ascending canonical order.
    pub fn push(&mut self, key: &DiagnosisKey) -> Result<(), RenderError> {
        if let Some(last) = &self.last
            && canonical_cmp(last, key) != Ordering::Less
        {
            return Err(RenderError::OutOfOrder {
                index: self.window_index,
            });
        }

        export_bin::encode_key(&key_fields(key), &mut self.scratch, &mut self.buf);

        self.count += 1;
        self.window_index += 1;
        self.last = Some(key.clone());
        Ok(())
    }

    /// Number of keys written so far.
    pub fn key_count(&self) -> usize {
        self.count
    }

    /// Bytes written so far, header included.
    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The finished `export.bin`.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    /// Carries the order check across a part boundary: the first key of the next part must
    /// still come after the last key of this one.
    fn continue_from(&mut self, previous: &Self) {
        self.window_index = previous.window_index;
        self.last.clone_from(&previous.last);
    }
}

/// The wire fields of a key, borrowed: what [`export_bin::encode_key`] writes.
pub fn key_fields(key: &DiagnosisKey) -> KeyFields<'_> {
    KeyFields {
        key_data: key.key_data.as_bytes(),
        transmission_risk_level: key.transmission_risk_level,
        rolling_start_interval_number: key.rolling_start_interval_number,
        rolling_period: key.rolling_period,
        report_type: key.report_type.as_i32(),
        days_since_onset_of_symptoms: key.days_since_onset,
    }
}

/// One finished part of a window: the bytes of its `export.bin` and what they hold.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedPart {
    /// Which part this is.
    pub part: PartNumber,
    /// Number of keys in it.
    pub key_count: usize,
    /// The complete `export.bin`.
    pub export_bin: Vec<u8>,
}

impl fmt::Debug for RenderedPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedPart")
            .field("part", &self.part)
            .field("key_count", &self.key_count)
            .field("bytes", &self.export_bin.len())
            .finish()
    }
}

/// Renders a whole window as one or more parts of at most `MAX_KEYS_PER_FILE` keys each
/// (DESIGN §4.1), from keys fed one at a time in canonical order.
///
/// A part is handed back as soon as the next key proves it full, so at most one part's bytes
/// are held. A window without keys still yields one (empty) part: a file is published for
/// every closed hour (DESIGN §4).
#[derive(Debug)]
pub struct WindowRenderer {
    window: ExportWindow,
    signers: Vec<SignerInfo>,
    max_keys_per_file: NonZeroUsize,
    part: PartNumber,
    current: ExportBinWriter,
    /// Keys the current part and the parts after it are expected to hold at most
    /// ([`WindowRenderer::expect_keys`]).
    expected_keys: usize,
}

/// The most bytes one key takes in `export.bin` with values the domain allows: field tag and
/// length, then `key_data` (18), transmission risk (2), start interval (at most 6), rolling
/// period (at most 3), report type (2) and days since onset (2).
const MAX_KEY_BYTES: usize = 2 + 18 + 2 + 6 + 3 + 2 + 2;

impl WindowRenderer {
    /// Starts rendering `window` for `signers` (newest first), splitting after
    /// `max_keys_per_file` keys (1..=750 000).
    pub fn new(
        window: ExportWindow,
        signers: &[SignerInfo],
        max_keys_per_file: usize,
    ) -> Result<Self, RenderError> {
        let max_keys_per_file = NonZeroUsize::new(max_keys_per_file)
            .filter(|max| max.get() <= PLATFORM_MAX_KEYS_PER_FILE)
            .ok_or(RenderError::MaxKeysPerFile {
                value: max_keys_per_file,
            })?;
        let current = ExportBinWriter::new(&window, PartNumber::FIRST, signers)?;
        Ok(Self {
            window,
            signers: signers.to_vec(),
            max_keys_per_file,
            part: PartNumber::FIRST,
            current,
            expected_keys: 0,
        })
    }

    /// Says, before the first key, how many keys the window will hold at most (the sum of its
    /// sources' counts), so
    /// that each part's buffer is sized once for its keys instead of doubling as it grows:
    /// no copy of a part's bytes, and no moment holding both the old and the new buffer. An
    /// estimate too small only means the buffer grows again; space reserved beyond what is
    /// written is never touched, so it costs no memory.
    pub fn expect_keys(&mut self, keys: usize) {
        self.expected_keys = keys;
        self.reserve_part();
    }

    fn reserve_part(&mut self) {
        let keys = self
            .expected_keys
            .min(self.max_keys_per_file.get())
            .saturating_sub(self.current.key_count());
        self.current.buf.reserve(keys.saturating_mul(MAX_KEY_BYTES));
    }

    /// Adds the next key. Returns the previous part when this key starts a new one.
    pub fn push(&mut self, key: &DiagnosisKey) -> Result<Option<RenderedPart>, RenderError> {
        if self.current.key_count() < self.max_keys_per_file.get() {
            self.current.push(key)?;
            return Ok(None);
        }
        let next_part = self.part.next().ok_or(RenderError::TooManyParts)?;
        let mut next = ExportBinWriter::new(&self.window, next_part, &self.signers)?;
        next.continue_from(&self.current);
        // The order is checked before the full part is handed out, so an error leaves the
        // renderer as it was.
        next.push(key)?;
        let full = std::mem::replace(&mut self.current, next);
        self.expected_keys = self.expected_keys.saturating_sub(full.key_count());
        if self.expected_keys > 0 {
            self.reserve_part();
        }
        let finished = RenderedPart {
            part: self.part,
            key_count: full.key_count(),
            export_bin: full.finish(),
        };
        self.part = next_part;
        Ok(Some(finished))
    }

    /// Bytes of the part being rendered so far.
    pub fn part_bytes(&self) -> usize {
        self.current.len_bytes()
    }

    /// The window being rendered.
    pub fn window(&self) -> &ExportWindow {
        &self.window
    }

    /// Finishes the last (or only) part.
    pub fn finish(self) -> RenderedPart {
        RenderedPart {
            part: self.part,
            key_count: self.current.key_count(),
            export_bin: self.current.finish(),
        }
    }
}

/// Renders a window whose keys are already in memory, sorting them first. For tests, tools
/// and small windows; the exporter streams keys through [`WindowRenderer`] instead.
pub fn render_window(
    window: ExportWindow,
    signers: &[SignerInfo],
    max_keys_per_file: usize,
    keys: &mut [DiagnosisKey],
) -> Result<Vec<RenderedPart>, RenderError> {
    sort_canonical(keys);
    let mut renderer = WindowRenderer::new(window, signers, max_keys_per_file)?;
    let mut parts = Vec::new();
    for key in keys.iter() {
        parts.extend(renderer.push(key)?);
    }
    parts.push(renderer.finish());
    Ok(parts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use diagnosis_domain::domain::{KeyData, ReportType};
    use diagnosis_proto::{Message as _, TemporaryExposureKeyExport};
    use proptest::prelude::*;

    use super::*;
    use crate::names::hourly_file_key;
    use crate::testing::{any_key, export_bin_in_order};

    fn region() -> Region {
        Region::parse("CA").unwrap()
    }

    fn window() -> ExportWindow {
        ExportWindow::new(region(), 1_764_280_800, 1_764_284_400).unwrap()
    }

    fn signers() -> Vec<SignerInfo> {
        vec![
            SignerInfo::new("v2", "302").unwrap(),
            SignerInfo::new("v1", "302").unwrap(),
        ]
    }

    fn key(n: u8, rsin: i32, period: i32, trl: i32, dso: Option<i32>) -> DiagnosisKey {
        DiagnosisKey {
            key_data: KeyData::from_array([n; 16]),
            rolling_start_interval_number: rsin,
            rolling_period: period,
            transmission_risk_level: trl,
            report_type: ReportType::ConfirmedTest,
            days_since_onset: dso,
        }
    }

    fn written(
        window: &ExportWindow,
        part: PartNumber,
        signers: &[SignerInfo],
        keys: &[DiagnosisKey],
    ) -> Vec<u8> {
        let mut writer = ExportBinWriter::new(window, part, signers).unwrap();
        for key in keys {
            writer.push(key).unwrap();
        }
        assert_eq!(writer.key_count(), keys.len());
        let len = writer.len_bytes();
        let bytes = writer.finish();
        assert_eq!(bytes.len(), len);
        bytes
    }

    #[test]
    fn empty_export_matches_prost() {
        let window = window();
        let expected = export_bin_in_order(&window, PartNumber::FIRST, &signers(), &[]);
        assert_eq!(
            written(&window, PartNumber::FIRST, &signers(), &[]),
            expected
        );
        assert!(expected.starts_with(b"EK Export v1    "));
    }

    #[test]
    fn one_key_export_matches_prost_and_omits_the_default_rolling_period() {
        let window = window();
        let keys = [key(7, 2_940_000, 144, 3, None)];
        let bytes = written(&window, PartNumber::FIRST, &signers()[..1], &keys);
        assert_eq!(
            bytes,
            export_bin_in_order(&window, PartNumber::FIRST, &signers()[..1], &keys)
        );
        let decoded = TemporaryExposureKeyExport::decode(&bytes[16..]).unwrap();
        assert_eq!(decoded.keys.len(), 1);
        assert_eq!(decoded.keys[0].rolling_period, None);
        assert_eq!(decoded.keys[0].rolling_period(), 144);
        assert_eq!(decoded.keys[0].days_since_onset_of_symptoms, None);
        assert_eq!(decoded.batch_num, Some(1));
        assert_eq!(decoded.batch_size, Some(1));
        assert_eq!(decoded.region.as_deref(), Some("CA"));
        assert_eq!(
            decoded.signature_infos[0].signature_algorithm.as_deref(),
            Some("1.2.840.10045.4.3.2")
        );
    }

    #[test]
    fn many_keys_export_matches_prost() {
        let window = window();
        let mut keys: Vec<DiagnosisKey> = (0..200_u8)
            .map(|n| {
                key(
                    n,
                    2_940_000 + i32::from(n % 5) * 144,
                    if n % 7 == 0 { 72 } else { 144 },
                    i32::from(n % 9),
                    (n % 3 != 0).then_some(i32::from(n % 29) - 14),
                )
            })
            .collect();
        sort_canonical(&mut keys);
        let part = PartNumber::new(3).unwrap();
        assert_eq!(
            written(&window, part, &signers(), &keys),
            export_bin_in_order(&window, part, &signers(), &keys)
        );
    }

    #[test]
    fn part_end_timestamp_is_shifted_inside_the_file_only() {
        let window = window();
        let part = PartNumber::new(3).unwrap();
        let bytes = written(&window, part, &signers(), &[]);
        let decoded = TemporaryExposureKeyExport::decode(&bytes[16..]).unwrap();
        assert_eq!(decoded.start_timestamp, Some(1_764_280_800));
        assert_eq!(decoded.end_timestamp, Some(1_764_284_402));
        assert_eq!(
            hourly_file_key(window.region(), window.start(), window.end(), part),
            "CA/1764280800-1764284400-00003.zip"
        );
    }

    #[test]
    fn part_numbers() {
        assert_eq!(PartNumber::new(0), None);
        assert_eq!(PartNumber::new(100_000), None);
        assert_eq!(PartNumber::FIRST.get(), 1);
        assert_eq!(PartNumber::FIRST.next(), PartNumber::new(2));
        assert_eq!(PartNumber::new(99_999).unwrap().next(), None);
        assert_eq!(PartNumber::new(42).unwrap().to_string(), "00042");
        assert_eq!(PartNumber::FIRST.end_timestamp(3600), 3600);
        assert_eq!(PartNumber::new(5).unwrap().end_timestamp(3600), 3604);
    }

    #[test]
    fn canonical_order_follows_design() {
        let base = key(5, 100, 144, 4, Some(0));
        let cases: Vec<(DiagnosisKey, DiagnosisKey)> = vec![
            // Each field decides before every later one.
            (key(9, 99, 144, 8, Some(14)), base.clone()),
            (key(9, 100, 143, 8, Some(14)), base.clone()),
            (key(9, 100, 144, 3, Some(14)), base.clone()),
            (
                DiagnosisKey {
                    report_type: ReportType::ConfirmedTest,
                    ..key(9, 100, 144, 4, Some(14))
                },
                DiagnosisKey {
                    report_type: ReportType::SelfReport,
                    ..base.clone()
                },
            ),
            // Unknown days since onset sorts before every known value, even −14.
            (key(9, 100, 144, 4, None), key(1, 100, 144, 4, Some(-14))),
            (key(9, 100, 144, 4, Some(-1)), base.clone()),
            (key(4, 100, 144, 4, Some(0)), base.clone()),
        ];
        for (smaller, larger) in cases {
            assert_eq!(canonical_cmp(&smaller, &larger), Ordering::Less);
            assert_eq!(canonical_cmp(&larger, &smaller), Ordering::Greater);
        }
        assert_eq!(canonical_cmp(&base, &base.clone()), Ordering::Equal);
    }

    #[test]
    fn out_of_order_and_duplicate_keys_are_refused() {
        let window = window();
        let mut writer = ExportBinWriter::new(&window, PartNumber::FIRST, &signers()).unwrap();
        writer.push(&key(2, 100, 144, 1, None)).unwrap();
        assert_eq!(
            writer.push(&key(1, 100, 144, 1, None)),
            Err(RenderError::OutOfOrder { index: 1 })
        );
        assert_eq!(
            writer.push(&key(2, 100, 144, 1, None)),
            Err(RenderError::OutOfOrder { index: 1 })
        );
        writer.push(&key(3, 100, 144, 1, None)).unwrap();
        assert_eq!(writer.key_count(), 2);
    }

    #[test]
    fn signer_count_and_window_are_checked() {
        let window = window();
        assert_eq!(
            ExportBinWriter::new(&window, PartNumber::FIRST, &[]).unwrap_err(),
            RenderError::SignerCount { count: 0 }
        );
        let eleven = vec![SignerInfo::new("v1", "302").unwrap(); 11];
        assert_eq!(
            ExportBinWriter::new(&window, PartNumber::FIRST, &eleven).unwrap_err(),
            RenderError::SignerCount { count: 11 }
        );
        assert_eq!(
            ExportWindow::new(region(), 3600, 3600),
            Err(RenderError::EmptyWindow {
                start: 3600,
                end: 3600
            })
        );
    }

    #[test]
    fn signer_info_values_are_restricted() {
        fn check(version: &str, id: &str, expected: Result<(), &'static str>) {
            assert_eq!(
                SignerInfo::new(version, id)
                    .map(|_| ())
                    .map_err(|e| e.field),
                expected,
                "version {version:?} id {id:?}"
            );
        }
        check("v1", "302", Ok(()));
        check("key_2024_B", "302", Ok(()));
        check(&"v".repeat(64), "302", Ok(()));
        check(&"v".repeat(65), "302", Err("verification_key_version"));
        check("", "302", Err("verification_key_version"));
        check("v1", "", Err("verification_key_id"));
        check("v-1", "302", Err("verification_key_version"));
        check("v1", "30 2", Err("verification_key_id"));
        check("v1", "3é2", Err("verification_key_id"));
        let error = SignerInfo::new("v1", "a/b").unwrap_err();
        assert_eq!(
            error.to_string(),
            "verification_key_id must be 1 to 64 characters of [A-Za-z0-9_], got \"a/b\""
        );
    }

    #[test]
    fn windows_split_into_parts_deterministically() {
        let window = window();
        let mut keys: Vec<DiagnosisKey> = (0..7_u8).map(|n| key(n, 100, 144, 1, None)).collect();
        let parts = render_window(window.clone(), &signers(), 3, &mut keys).unwrap();
        let summary: Vec<(u32, usize)> =
            parts.iter().map(|p| (p.part.get(), p.key_count)).collect();
        assert_eq!(summary, vec![(1, 3), (2, 3), (3, 1)]);
        for (index, part) in parts.iter().enumerate() {
            let chunk = &keys[index * 3..(index * 3 + 3).min(keys.len())];
            assert_eq!(
                part.export_bin,
                export_bin_in_order(&window, part.part, &signers(), chunk)
            );
        }

        // Exactly full: no empty trailing part.
        let mut six: Vec<DiagnosisKey> = keys[..6].to_vec();
        let parts = render_window(window.clone(), &signers(), 3, &mut six).unwrap();
        assert_eq!(parts.len(), 2);

        // No keys at all: still one (empty) file.
        let parts = render_window(window.clone(), &signers(), 3, &mut []).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].key_count, 0);
        assert_eq!(
            parts[0].export_bin,
            export_bin_in_order(&window, PartNumber::FIRST, &signers(), &[])
        );
    }

    #[test]
    fn order_is_checked_across_part_boundaries() {
        let mut renderer = WindowRenderer::new(window(), &signers(), 1).unwrap();
        assert_eq!(renderer.push(&key(5, 100, 144, 1, None)).unwrap(), None);
        assert_eq!(
            renderer.push(&key(4, 100, 144, 1, None)),
            Err(RenderError::OutOfOrder { index: 1 })
        );
        let first = renderer.push(&key(6, 100, 144, 1, None)).unwrap().unwrap();
        assert_eq!(first.part, PartNumber::FIRST);
        assert_eq!(first.key_count, 1);
        let last = renderer.finish();
        assert_eq!(last.part.get(), 2);
        assert_eq!(last.key_count, 1);
    }

    #[test]
    fn max_keys_per_file_is_bounded() {
        for value in [0, PLATFORM_MAX_KEYS_PER_FILE + 1] {
            assert_eq!(
                WindowRenderer::new(window(), &signers(), value).unwrap_err(),
                RenderError::MaxKeysPerFile { value }
            );
        }
        WindowRenderer::new(window(), &signers(), PLATFORM_MAX_KEYS_PER_FILE).unwrap();
    }

    #[test]
    fn rendered_part_debug_shows_no_bytes() {
        let part = render_window(window(), &signers(), 10, &mut [key(1, 1, 144, 1, None)])
            .unwrap()
            .remove(0);
        assert_eq!(
            format!("{part:?}"),
            format!(
                "RenderedPart {{ part: PartNumber(00001), key_count: 1, bytes: {} }}",
                part.export_bin.len()
            )
        );
    }

    proptest! {
        #[test]
        fn streamed_bytes_equal_prost_for_any_keys(
            mut keys in proptest::collection::vec(any_key(), 0..40),
            start in 0..u64::MAX / 2,
            length in 1..100_000_u64,
            part in 1..=PartNumber::MAX,
            region in "[A-Za-z0-9_]{1,16}",
            versions in proptest::collection::vec("[A-Za-z0-9_]{1,8}", 1..=MAX_SIGNERS),
        ) {
            sort_canonical(&mut keys);
            keys.dedup_by(|a, b| canonical_cmp(a, b) == Ordering::Equal);
            let window = ExportWindow::new(Region::parse(&region).unwrap(), start, start + length)
                .unwrap();
            let part = PartNumber::new(part).unwrap();
            let signers: Vec<SignerInfo> = versions
                .iter()
                .map(|v| SignerInfo::new(v, "302").unwrap())
                .collect();
            let streamed = written(&window, part, &signers, &keys);
            prop_assert_eq!(&streamed, &export_bin_in_order(&window, part, &signers, &keys));
            let decoded = TemporaryExposureKeyExport::decode(&streamed[16..]).unwrap();
            prop_assert_eq!(decoded.keys.len(), keys.len());
        }
    }
}
