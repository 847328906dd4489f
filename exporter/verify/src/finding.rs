//! What `verify` finds wrong with a bucket: one [`Finding`] per broken rule, naming the object
//! and carrying the values that show the problem, so a test matches on the variant and an
//! operator reads its `Display` line.
//!
//! Findings are data, never errors: a bucket is evidence, and this module must never decide
//! whether to stop. It only says what was seen.

use std::fmt;

use diagnosis_proto::SignatureInfo;

use crate::names::Kind;
use crate::retrieval::RetrievalProblem;
use diagnosis_format::render::PartNumber;
use diagnosis_format::sign::PublicKey;

/// A key problem that can repeat for many keys of one file, reported once per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// The key does not come strictly after the previous one in canonical order.
    OutOfOrder,
    /// `key_data` is absent or not 16 bytes.
    BadKeyData,
    /// `rolling_start_interval_number` is absent.
    NoRollingStart,
    /// `rolling_period` 144 is written although it is the default.
    ExplicitDefaultPeriod,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutOfOrder => {
                "do not come after the previous key in canonical order \
                 (rolling_start_interval_number, rolling_period, transmission_risk_level, \
                 report_type, days_since_onset with unknown first, key_data), or repeat it"
            }
            Self::BadKeyData => "have key_data that is absent or not 16 bytes",
            Self::NoRollingStart => "have no rolling_start_interval_number",
            Self::ExplicitDefaultPeriod => {
                "write rolling_period 144 explicitly; the default must be omitted"
            }
        })
    }
}

/// A field of a manifest entry that disagrees with the name or the content of its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestField {
    /// `kind`, against the name.
    Kind,
    /// `start`, against the name.
    Start,
    /// `end`, against the name.
    End,
    /// `part`, against the name.
    Part,
    /// `bytes`, against the object.
    Bytes,
    /// `sha256`, against the object.
    Sha256,
    /// `keys`, against `export.bin`.
    Keys,
}

impl ManifestField {
    fn as_str(self) -> &'static str {
        match self {
            Self::Kind => "kind",
            Self::Start => "start",
            Self::End => "end",
            Self::Part => "part",
            Self::Bytes => "bytes",
            Self::Sha256 => "sha256",
            Self::Keys => "keys",
        }
    }

    /// How the true value is introduced.
    fn truth(self) -> &'static str {
        match self {
            Self::Kind | Self::Start | Self::End | Self::Part => "the name says",
            Self::Bytes => "the object has",
            Self::Sha256 => "the object's is",
            Self::Keys => "export.bin holds",
        }
    }
}

/// Why a line of an index is not the name of an export file of its region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Not `{region}/{start}-{end}-{nnnnn}.zip` nor `{region}/daily/…` exactly.
    NotAnExportName {
        /// The text.
        name: String,
        /// The region verified.
        region: String,
    },
    /// The window does not last one hour (or one day).
    WrongLength {
        /// The name.
        name: String,
        /// What the name says it is.
        kind: Kind,
        /// Window start, as named.
        start: u64,
        /// Window end, as named.
        end: u64,
    },
    /// The window does not start at a full hour (or UTC midnight).
    Unaligned {
        /// The name.
        name: String,
        /// What the name says it is.
        kind: Kind,
        /// Window start, as named.
        start: u64,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAnExportName { name, region } => write!(
                f,
                "{name:?} is not an export file name ({region}/{{start}}-{{end}}-{{nnnnn}}.zip \
                 or {region}/daily/{{start}}-{{end}}-{{nnnnn}}.zip)"
            ),
            Self::WrongLength {
                name,
                kind,
                start,
                end,
            } => write!(
                f,
                "{name}: a {kind} window must last {} seconds, this one is {start} to {end}",
                kind.window_seconds()
            ),
            Self::Unaligned { name, kind, start } => {
                let boundary = match kind {
                    Kind::Hourly => "a full hour",
                    Kind::Daily => "UTC midnight",
                };
                write!(
                    f,
                    "{name}: a {kind} window must start at {boundary}, this one starts at {start}"
                )
            }
        }
    }
}

/// One rule of DESIGN §4 broken by the bucket. `object` is always the object key the finding
/// is about (an index, the manifest or an export file); each variant's message starts with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Finding {
    /// An index or the manifest does not exist.
    #[error("{object}: does not exist")]
    Missing {
        /// The index or manifest.
        object: String,
    },
    /// A file an index lists does not exist.
    #[error("{object}: listed in {index} but the object does not exist")]
    ListedButMissing {
        /// The file.
        object: String,
        /// The index listing it.
        index: String,
    },

    // --- The two indexes (check 1) and continuity (check 6).
    /// The index is not UTF-8.
    #[error("{object}: not UTF-8 text")]
    IndexNotText {
        /// The index.
        object: String,
    },
    /// A line of the index is empty.
    #[error("{object}: line {line} is empty")]
    IndexEmptyLine {
        /// The index.
        object: String,
        /// 1-based line number.
        line: usize,
    },
    /// A line of the index is not an export file name.
    #[error("{object}: line {line}: {problem}")]
    IndexBadName {
        /// The index.
        object: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the name.
        problem: NameError,
    },
    /// A line names a file of the other series.
    #[error(
        "{object}: line {line}: {name} is a {found} file name, this index lists {expected} files only"
    )]
    IndexWrongKind {
        /// The index.
        object: String,
        /// 1-based line number.
        line: usize,
        /// The name on the line.
        name: String,
        /// What the name is.
        found: Kind,
        /// What this index lists.
        expected: Kind,
    },
    /// A name is listed twice.
    #[error("{object}: line {line}: {name} is listed twice")]
    IndexRepeat {
        /// The index.
        object: String,
        /// 1-based line number of the repetition.
        line: usize,
        /// The name.
        name: String,
    },
    /// A name comes before an older one.
    #[error(
        "{object}: line {line}: {name} is listed after {after}, but the index must be oldest first"
    )]
    IndexOrder {
        /// The index.
        object: String,
        /// 1-based line number.
        line: usize,
        /// The name on the line.
        name: String,
        /// The newer name listed before it.
        after: String,
    },
    /// Windows between the oldest and the newest listed are missing.
    #[error("{object}: no {kind} file for {count} {unit}(s) from {from} to {to} (every {unit} between the oldest and the newest listed must be published)", unit = .kind.unit())]
    WindowsMissing {
        /// The index.
        object: String,
        /// The series.
        kind: Kind,
        /// How many windows are missing.
        count: u64,
        /// Start of the first missing window.
        from: u64,
        /// Start of the next listed window.
        to: u64,
    },
    /// A window's parts do not run from `00001` without a gap.
    #[error("{object}: the {kind} window {start}-{end} lists parts {} (parts must run from 00001 without a gap)", listed(.parts))]
    PartsGap {
        /// The index.
        object: String,
        /// The series.
        kind: Kind,
        /// Window start.
        start: u64,
        /// Window end.
        end: u64,
        /// The parts listed, in order.
        parts: Vec<PartNumber>,
    },

    // --- The manifest (check 3).
    /// `index.json` is not a manifest.
    #[error(
        "{object}: not a manifest ({{\"region\", \"generated_at\", \"files\": [...]}}): {reason}"
    )]
    ManifestMalformed {
        /// The manifest.
        object: String,
        /// What the JSON parser said.
        reason: String,
    },
    /// The manifest names another region.
    #[error("{object}: region is {found:?}, expected {expected:?}")]
    ManifestRegion {
        /// The manifest.
        object: String,
        /// The region it names.
        found: String,
        /// The region verified.
        expected: String,
    },
    /// The manifest lists a file more than once.
    #[error("{object}: lists {file} more than once")]
    ManifestRepeat {
        /// The manifest.
        object: String,
        /// The file.
        file: String,
    },
    /// The manifest omits a file an index lists.
    #[error("{object}: does not list {file}, which {index} lists")]
    ManifestOmits {
        /// The manifest.
        object: String,
        /// The file.
        file: String,
        /// The index listing it.
        index: String,
    },
    /// The manifest lists a file no index lists.
    #[error("{object}: lists {file}, which neither index.txt lists")]
    ManifestUnindexed {
        /// The manifest.
        object: String,
        /// The file.
        file: String,
    },
    /// What the manifest says about a file is not true.
    #[error("{object}: {file}: {} is {said}, but {} {actual}", .field.as_str(), .field.truth())]
    ManifestMismatch {
        /// The manifest.
        object: String,
        /// The file.
        file: String,
        /// The field.
        field: ManifestField,
        /// What the manifest says.
        said: String,
        /// What is true.
        actual: String,
    },

    // --- One export file (check 2).
    /// The zip cannot be read as an export archive.
    #[error("{object}: not a valid export archive: {reason}")]
    ArchiveInvalid {
        /// The file.
        object: String,
        /// What the archive reader said.
        reason: String,
    },
    /// `export.bin` lacks the `EK Export v1` header.
    #[error(
        "{object}: export.bin does not start with the header {:?}",
        String::from_utf8_lossy(diagnosis_proto::EXPORT_BIN_HEADER)
    )]
    HeaderMissing {
        /// The file.
        object: String,
    },
    /// `export.bin` is not a `TemporaryExposureKeyExport`.
    #[error("{object}: export.bin is not a TemporaryExposureKeyExport: {reason}")]
    ExportBinMalformed {
        /// The file.
        object: String,
        /// What the protobuf decoder said.
        reason: String,
    },
    /// `start_timestamp` is not the named start.
    #[error("{object}: start_timestamp is {}, the name says {expected}", shown(*.found))]
    StartTimestamp {
        /// The file.
        object: String,
        /// The value in `export.bin`.
        found: Option<u64>,
        /// The named start.
        expected: u64,
    },
    /// `end_timestamp` is not the named end shifted by the part number.
    #[error("{object}: end_timestamp is {}, expected {expected} (the named end {named_end} + part {} − 1)", shown(*.found), .part.get())]
    EndTimestamp {
        /// The file.
        object: String,
        /// The value in `export.bin`.
        found: Option<u64>,
        /// The expected value.
        expected: u64,
        /// The named end.
        named_end: u64,
        /// The part number.
        part: PartNumber,
    },
    /// `region` is not the region verified.
    #[error("{object}: region is {}, expected {expected:?}", shown(.found.as_ref().map(|region| format!("{region:?}"))))]
    ExportRegion {
        /// The file.
        object: String,
        /// The value in `export.bin`.
        found: Option<String>,
        /// The region verified.
        expected: String,
    },
    /// `batch_num`/`batch_size` of `export.bin` are not 1/1.
    #[error("{object}: batch_num/batch_size is {}/{}, expected 1/1", shown(*.batch_num), shown(*.batch_size))]
    ExportBatch {
        /// The file.
        object: String,
        /// `batch_num`.
        batch_num: Option<i32>,
        /// `batch_size`.
        batch_size: Option<i32>,
    },
    /// `export.bin` holds revised keys.
    #[error(
        "{object}: export.bin holds {count} revised_keys; this server never publishes revised keys"
    )]
    RevisedKeys {
        /// The file.
        object: String,
        /// How many.
        count: usize,
    },
    /// `export.bin` has no signature infos.
    #[error("{object}: export.bin has no signature_infos")]
    NoSignatureInfos {
        /// The file.
        object: String,
    },
    /// `export.bin` has more signature infos than the platforms accept.
    #[error(
        "{object}: export.bin has {count} signature_infos, at most {} are allowed",
        diagnosis_format::render::MAX_SIGNERS
    )]
    TooManySignatureInfos {
        /// The file.
        object: String,
        /// How many.
        count: usize,
    },
    /// A signature info names another algorithm.
    #[error("{object}: signature_infos[{index}] has algorithm {}, expected {}", shown(.found.as_deref()), diagnosis_proto::SIGNATURE_ALGORITHM)]
    SignatureAlgorithm {
        /// The file.
        object: String,
        /// Index of the signature info.
        index: usize,
        /// The algorithm named.
        found: Option<String>,
    },
    /// A signature info's version or ID breaks the platform rules.
    #[error("{object}: signature_infos[{index}]: {reason}")]
    SignatureInfoInvalid {
        /// The file.
        object: String,
        /// Index of the signature info.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// `export.sig` is not a `TEKSignatureList`.
    #[error("{object}: export.sig is not a TEKSignatureList: {reason}")]
    ExportSigMalformed {
        /// The file.
        object: String,
        /// What the protobuf decoder said.
        reason: String,
    },
    /// `export.sig` and `export.bin` disagree on the number of signatures.
    #[error(
        "{object}: export.sig holds {signatures} signatures but export.bin has {infos} signature_infos (one signature per signature info, in the same order)"
    )]
    SignatureCount {
        /// The file.
        object: String,
        /// Signatures in `export.sig`.
        signatures: usize,
        /// Signature infos in `export.bin`.
        infos: usize,
    },
    /// A signature is labelled with another signature info than `export.bin` has there.
    #[error("{object}: export.sig signature {index} is labelled {}, but export.bin's signature_infos[{index}] is {}", describe_info(.label.as_ref()), describe_info(Some(.info)))]
    SignatureLabel {
        /// The file.
        object: String,
        /// Index of the signature.
        index: usize,
        /// The signature's label.
        label: Option<SignatureInfo>,
        /// `export.bin`'s signature info at that index.
        info: SignatureInfo,
    },
    /// A signature's `batch_num`/`batch_size` are not 1/1.
    #[error("{object}: export.sig signature {index} has batch_num/batch_size {}/{}, expected 1/1", shown(*.batch_num), shown(*.batch_size))]
    SignatureBatch {
        /// The file.
        object: String,
        /// Index of the signature.
        index: usize,
        /// `batch_num`.
        batch_num: Option<i32>,
        /// `batch_size`.
        batch_size: Option<i32>,
    },
    /// No signature of the file verifies with any given public key.
    #[error(
        "{object}: no signature in export.sig verifies over export.bin with any of the {given} given public key(s)"
    )]
    NotSignedByGivenKey {
        /// The file.
        object: String,
        /// How many public keys were given.
        given: usize,
    },
    /// A signature carries the label under which a given key signs other signatures, but
    /// does not verify with that key: a phone holding that key for that label rejects it.
    #[error("{object}: export.sig signature {index} is labelled version {}, id {}, under which public key {key_number} ({public_key:?}) signs, but does not verify over export.bin with it", shown(.key_version.as_deref()), shown(.key_id.as_deref()))]
    SignatureDoesNotVerify {
        /// The file.
        object: String,
        /// Index of the signature in `export.sig`.
        index: usize,
        /// `verification_key_version` of its label.
        key_version: Option<String>,
        /// `verification_key_id` of its label.
        key_id: Option<String>,
        /// 1-based number of the given public key.
        key_number: usize,
        /// The public key.
        public_key: PublicKey,
    },
    /// A given public key signs none of the listed files.
    #[error(
        "{object}: public key {key_number} ({public_key:?}) signs none of the {files} listed file(s) read"
    )]
    KeySignsNothing {
        /// The hourly index, which stands for the bucket.
        object: String,
        /// 1-based number of the given public key.
        key_number: usize,
        /// The public key.
        public_key: PublicKey,
        /// How many files were read.
        files: u64,
    },
    /// Keys of the file share a problem.
    #[error("{object}: {count} key(s) {problem} (first: key {first} of the file, counting from 0)")]
    Keys {
        /// The file.
        object: String,
        /// The problem.
        problem: KeyProblem,
        /// How many keys have it.
        count: usize,
        /// Position of the first, from 0.
        first: usize,
    },

    // --- Across files (checks 4 and 5).
    /// `key_data` values of the file were already published in the same series.
    #[error("{object}: {count} key_data value(s) are published twice among the {kind} files (first: key {first} of the file, key_data {}, already in {})", hex::encode(.key_data), .first_seen_in.as_deref().unwrap_or("this file"))]
    KeyDataRepeated {
        /// The file.
        object: String,
        /// The series.
        kind: Kind,
        /// How many of the file's keys repeat a `key_data`.
        count: usize,
        /// Position of the first, from 0.
        first: usize,
        /// Its `key_data`.
        key_data: [u8; 16],
        /// The file it was first seen in; `None` when earlier in this same file.
        first_seen_in: Option<String>,
    },
    /// A daily file is not exactly the union of its day's hourly files.
    #[error("{object}{}: is not exactly the union of its day's 24 hourly files: {}", if *.parts { " (and its other parts)" } else { "" }, union_difference(*.missing, .first_missing.as_ref(), *.extra, .first_extra.as_ref()))]
    DayNotUnion {
        /// The daily file (its first part).
        object: String,
        /// Whether the day has more than one part.
        parts: bool,
        /// Keys of the hourly files missing from the daily file.
        missing: usize,
        /// `key_data` of the first missing key.
        first_missing: Option<[u8; 16]>,
        /// Keys of the daily file not in the hourly files (or differing in a field).
        extra: usize,
        /// `key_data` of the first such key.
        first_extra: Option<[u8; 16]>,
    },

    // --- The deployed apps' retrieval objects (DESIGN §4.3).
    /// A retrieval object breaks a rule of its own; its archive, header, signatures and keys
    /// are reported with the export-file findings above.
    #[error("{object}: {problem}")]
    Retrieval {
        /// `retrieve/{MCC}/{DDDDD}` or `retrieve/{MCC}/00000`.
        object: String,
        /// What is wrong.
        problem: RetrievalProblem,
    },
}

impl Finding {
    /// The object key the finding is about.
    pub fn object(&self) -> &str {
        match self {
            Self::Missing { object }
            | Self::ListedButMissing { object, .. }
            | Self::IndexNotText { object }
            | Self::IndexEmptyLine { object, .. }
            | Self::IndexBadName { object, .. }
            | Self::IndexWrongKind { object, .. }
            | Self::IndexRepeat { object, .. }
            | Self::IndexOrder { object, .. }
            | Self::WindowsMissing { object, .. }
            | Self::PartsGap { object, .. }
            | Self::ManifestMalformed { object, .. }
            | Self::ManifestRegion { object, .. }
            | Self::ManifestRepeat { object, .. }
            | Self::ManifestOmits { object, .. }
            | Self::ManifestUnindexed { object, .. }
            | Self::ManifestMismatch { object, .. }
            | Self::ArchiveInvalid { object, .. }
            | Self::HeaderMissing { object }
            | Self::ExportBinMalformed { object, .. }
            | Self::StartTimestamp { object, .. }
            | Self::EndTimestamp { object, .. }
            | Self::ExportRegion { object, .. }
            | Self::ExportBatch { object, .. }
            | Self::RevisedKeys { object, .. }
            | Self::NoSignatureInfos { object }
            | Self::TooManySignatureInfos { object, .. }
            | Self::SignatureAlgorithm { object, .. }
            | Self::SignatureInfoInvalid { object, .. }
            | Self::ExportSigMalformed { object, .. }
            | Self::SignatureCount { object, .. }
            | Self::SignatureLabel { object, .. }
            | Self::SignatureBatch { object, .. }
            | Self::NotSignedByGivenKey { object, .. }
            | Self::SignatureDoesNotVerify { object, .. }
            | Self::KeySignsNothing { object, .. }
            | Self::Keys { object, .. }
            | Self::KeyDataRepeated { object, .. }
            | Self::DayNotUnion { object, .. }
            | Self::Retrieval { object, .. } => object,
        }
    }
}

/// `absent` for a field that is not set.
fn shown<T: fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "absent".to_owned(), |value| value.to_string())
}

fn describe_info(info: Option<&SignatureInfo>) -> String {
    match info {
        None => "absent".to_owned(),
        Some(info) => format!(
            "(version {}, id {}, algorithm {})",
            shown(info.verification_key_version.as_deref()),
            shown(info.verification_key_id.as_deref()),
            shown(info.signature_algorithm.as_deref())
        ),
    }
}

/// The parts of a daily file that are not the union of its hourly files.
fn union_difference(
    missing: usize,
    first_missing: Option<&[u8; 16]>,
    extra: usize,
    first_extra: Option<&[u8; 16]>,
) -> String {
    let mut described = Vec::new();
    if let Some(key_data) = first_missing {
        described.push(format!(
            "{missing} key(s) of the day's hourly files are missing (first: key_data {})",
            hex::encode(key_data)
        ));
    }
    if let Some(key_data) = first_extra {
        described.push(format!(
            "{extra} key(s) are not in the day's hourly files, or differ from them in a field \
             (first: key_data {})",
            hex::encode(key_data)
        ));
    }
    described.join("; ")
}

fn listed(parts: &[PartNumber]) -> String {
    let listed: Vec<String> = parts.iter().map(ToString::to_string).collect();
    listed.join(", ")
}
