//! One published export file, checked the way a phone reads it (DESIGN §4.1): the archive, the
//! header, the `TemporaryExposureKeyExport`, its signatures and its keys.
//!
//! The bytes come from a bucket that anyone with write access could have changed, so every
//! field is treated as hostile: a malformed archive or protobuf becomes a violation naming the
//! object, never a panic, and nothing here trusts a length or count it reads. Problems that can
//! repeat once per key are counted and reported once per file, so a broken file of 750 000 keys
//! yields a handful of lines, not a million.

use diagnosis_domain::domain::Region;
use diagnosis_format::archive::{ExportEntries, unzip_export};
use diagnosis_format::render::{MAX_SIGNERS, SignerInfo};
use diagnosis_format::sign::{PublicKey, verify_signature};
use diagnosis_proto::export_bin::DEFAULT_ROLLING_PERIOD;
use diagnosis_proto::{
    EXPORT_BIN_HEADER, Message as _, SIGNATURE_ALGORITHM, SignatureInfo, TekSignatureList,
    TemporaryExposureKey, TemporaryExposureKeyExport,
};
use sha2::{Digest as _, Sha256};

use crate::finding::{Finding, KeyProblem};
use crate::names::ObjectName;

/// Length of `key_data` (DESIGN §3).
const KEY_DATA_LEN: usize = 16;

/// One key as a phone reads it: absent fields take their proto defaults (`rolling_period` is
/// read as [`DEFAULT_ROLLING_PERIOD`] when absent, `[default = 144]`, DESIGN §4.1).
///
/// The field order is the canonical export order of DESIGN §4.1, so the derived `Ord` is that
/// order ([`diagnosis_format::render::canonical_cmp`]): rolling_start_interval_number, rolling_period,
/// transmission_risk_level, report_type, days_since_onset with unknown first (`None` sorts
/// before every `Some`), key_data bytewise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ExportedKey {
    pub(crate) rolling_start_interval_number: i32,
    pub(crate) rolling_period: i32,
    pub(crate) transmission_risk_level: i32,
    pub(crate) report_type: i32,
    pub(crate) days_since_onset: Option<i32>,
    pub(crate) key_data: [u8; KEY_DATA_LEN],
}

/// What checking one file learnt about it.
#[derive(Debug, Clone)]
pub(crate) struct CheckedFile {
    /// Size of the zip.
    pub(crate) bytes: u64,
    /// Lowercase hex SHA-256 of the zip.
    pub(crate) sha256: String,
    /// Number of keys in `export.bin`, when it could be read.
    pub(crate) key_count: Option<u64>,
    /// The keys whose `key_data` is 16 bytes, in file order.
    pub(crate) keys: Vec<ExportedKey>,
    /// The signatures of `export.sig`, when it could be read.
    pub(crate) signatures: Option<Vec<CheckedSignature>>,
    /// `start_timestamp` and `end_timestamp`, when `export.bin` could be read.
    pub(crate) timestamps: Option<(Option<u64>, Option<u64>)>,
}

/// One signature of `export.sig`: its label and which given public keys verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedSignature {
    /// `verification_key_version` of its label.
    pub(crate) key_version: Option<String>,
    /// `verification_key_id` of its label.
    pub(crate) key_id: Option<String>,
    /// Indexes (into the given public keys) of the keys it verifies with over `export.bin`.
    pub(crate) verified_by: Vec<usize>,
}

/// Checks the zip published as `key` and returns its facts; every problem is pushed onto
/// `findings`, naming the object key. `named` is what the name of an hourly or daily file says
/// of the window inside it; a retrieval object's name says only its day, so its window is
/// returned ([`CheckedFile::timestamps`]) for its own rule. Which keys sign the file is
/// returned, not judged: that takes the whole bucket (see [`CheckedSignature`]).
pub(crate) fn check_export_file(
    key: &str,
    named: Option<&ObjectName>,
    region: &Region,
    public_keys: &[PublicKey],
    zip: &[u8],
    findings: &mut Vec<Finding>,
) -> CheckedFile {
    let mut file = CheckedFile {
        bytes: zip.len() as u64,
        sha256: hex::encode(Sha256::digest(zip)),
        key_count: None,
        keys: Vec::new(),
        signatures: None,
        timestamps: None,
    };
    let Some((entries, export)) = read_export(key, zip, findings) else {
        return file;
    };
    file.timestamps = Some((export.start_timestamp, export.end_timestamp));
    if let Some(name) = named {
        check_window(name, &export, findings);
    }
    check_region_and_batch(key, region, &export, findings);
    file.signatures = check_signatures(
        key,
        &export.signature_infos,
        &entries.export_bin,
        &entries.export_sig,
        public_keys,
        findings,
    );
    file.key_count = Some(export.keys.len() as u64);
    file.keys = check_keys(key, &export.keys, findings);
    if !export.revised_keys.is_empty() {
        findings.push(Finding::RevisedKeys {
            object: key.to_owned(),
            count: export.revised_keys.len(),
        });
    }
    file
}

/// The archive's two entries and the decoded `export.bin`, or `None` after reporting why not.
fn read_export(
    key: &str,
    zip: &[u8],
    findings: &mut Vec<Finding>,
) -> Option<(ExportEntries, TemporaryExposureKeyExport)> {
    let entries = match unzip_export(zip) {
        Ok(entries) => entries,
        Err(error) => {
            findings.push(Finding::ArchiveInvalid {
                object: key.to_owned(),
                reason: error.to_string(),
            });
            return None;
        }
    };
    let Some(message) = entries
        .export_bin
        .strip_prefix(EXPORT_BIN_HEADER.as_slice())
    else {
        findings.push(Finding::HeaderMissing {
            object: key.to_owned(),
        });
        return None;
    };
    match TemporaryExposureKeyExport::decode(message) {
        Ok(export) => Some((entries, export)),
        Err(error) => {
            findings.push(Finding::ExportBinMalformed {
                object: key.to_owned(),
                reason: error.to_string(),
            });
            None
        }
    }
}

/// Start and end as DESIGN §4.1 requires for this name.
fn check_window(
    name: &ObjectName,
    export: &TemporaryExposureKeyExport,
    findings: &mut Vec<Finding>,
) {
    let key = &name.key;
    if export.start_timestamp != Some(name.start) {
        findings.push(Finding::StartTimestamp {
            object: key.to_owned(),
            found: export.start_timestamp,
            expected: name.start,
        });
    }
    let expected_end = name.part.end_timestamp(name.end);
    if export.end_timestamp != Some(expected_end) {
        findings.push(Finding::EndTimestamp {
            object: key.to_owned(),
            found: export.end_timestamp,
            expected: expected_end,
            named_end: name.end,
            part: name.part,
        });
    }
}

/// Region and batch as DESIGN §4.1 requires of every file.
fn check_region_and_batch(
    key: &str,
    region: &Region,
    export: &TemporaryExposureKeyExport,
    findings: &mut Vec<Finding>,
) {
    if export.region.as_deref() != Some(region.as_str()) {
        findings.push(Finding::ExportRegion {
            object: key.to_owned(),
            found: export.region.clone(),
            expected: region.as_str().to_owned(),
        });
    }
    if export.batch_num != Some(1) || export.batch_size != Some(1) {
        findings.push(Finding::ExportBatch {
            object: key.to_owned(),
            batch_num: export.batch_num,
            batch_size: export.batch_size,
        });
    }
}

/// The signature infos of `export.bin` and `export.sig` against them (DESIGN §4.1); returns
/// each signature with the given public keys it verifies with over the whole `export.bin`, or
/// `None` when `export.sig` cannot be read.
fn check_signatures(
    key: &str,
    infos: &[SignatureInfo],
    export_bin: &[u8],
    export_sig: &[u8],
    public_keys: &[PublicKey],
    findings: &mut Vec<Finding>,
) -> Option<Vec<CheckedSignature>> {
    check_signature_infos(key, infos, findings);
    let list = match TekSignatureList::decode(export_sig) {
        Ok(list) => list,
        Err(error) => {
            findings.push(Finding::ExportSigMalformed {
                object: key.to_owned(),
                reason: error.to_string(),
            });
            return None;
        }
    };
    check_signature_list(key, &list, infos, findings);
    Some(verified_signatures(&list, export_bin, public_keys))
}

/// `export.bin`'s signature infos: one to [`MAX_SIGNERS`], each with the platforms' algorithm
/// and a version and ID they accept.
fn check_signature_infos(key: &str, infos: &[SignatureInfo], findings: &mut Vec<Finding>) {
    if infos.is_empty() {
        findings.push(Finding::NoSignatureInfos {
            object: key.to_owned(),
        });
    } else if infos.len() > MAX_SIGNERS {
        findings.push(Finding::TooManySignatureInfos {
            object: key.to_owned(),
            count: infos.len(),
        });
    }
    for (index, info) in infos.iter().enumerate() {
        if info.signature_algorithm.as_deref() != Some(SIGNATURE_ALGORITHM) {
            findings.push(Finding::SignatureAlgorithm {
                object: key.to_owned(),
                index,
                found: info.signature_algorithm.clone(),
            });
        }
        if let Err(error) = SignerInfo::new(
            info.verification_key_version.as_deref().unwrap_or_default(),
            info.verification_key_id.as_deref().unwrap_or_default(),
        ) {
            findings.push(Finding::SignatureInfoInvalid {
                object: key.to_owned(),
                index,
                reason: error.to_string(),
            });
        }
    }
}

/// `export.sig` against `export.bin`: one signature per signature info, labelled with it, in
/// the same order, each of batch 1/1.
fn check_signature_list(
    key: &str,
    list: &TekSignatureList,
    infos: &[SignatureInfo],
    findings: &mut Vec<Finding>,
) {
    if list.signatures.len() != infos.len() {
        findings.push(Finding::SignatureCount {
            object: key.to_owned(),
            signatures: list.signatures.len(),
            infos: infos.len(),
        });
    }
    for (index, (signature, info)) in list.signatures.iter().zip(infos).enumerate() {
        if signature.signature_info.as_ref() != Some(info) {
            findings.push(Finding::SignatureLabel {
                object: key.to_owned(),
                index,
                label: signature.signature_info.clone(),
                info: info.clone(),
            });
        }
    }
    for (index, signature) in list.signatures.iter().enumerate() {
        if signature.batch_num != Some(1) || signature.batch_size != Some(1) {
            findings.push(Finding::SignatureBatch {
                object: key.to_owned(),
                index,
                batch_num: signature.batch_num,
                batch_size: signature.batch_size,
            });
        }
    }
}

/// Each signature of `list` with the given public keys it verifies with over the whole
/// `export.bin`.
fn verified_signatures(
    list: &TekSignatureList,
    export_bin: &[u8],
    public_keys: &[PublicKey],
) -> Vec<CheckedSignature> {
    list.signatures
        .iter()
        .map(|signature| {
            let label = signature.signature_info.as_ref();
            let verified_by = signature.signature.as_deref().map_or_else(Vec::new, |der| {
                (0..public_keys.len())
                    .filter(|&number| {
                        public_keys
                            .get(number)
                            .is_some_and(|public_key| verify_signature(export_bin, der, public_key))
                    })
                    .collect()
            });
            CheckedSignature {
                key_version: label.and_then(|info| info.verification_key_version.clone()),
                key_id: label.and_then(|info| info.verification_key_id.clone()),
                verified_by,
            }
        })
        .collect()
}

/// A problem that may repeat for many keys of one file: how often, and where first.
#[derive(Debug, Default)]
struct Tally {
    count: usize,
    first: usize,
}

impl Tally {
    fn record(&mut self, index: usize) {
        if self.count == 0 {
            self.first = index;
        }
        self.count += 1;
    }

    fn report(&self, key: &str, problem: KeyProblem, findings: &mut Vec<Finding>) {
        if self.count > 0 {
            findings.push(Finding::Keys {
                object: key.to_owned(),
                problem,
                count: self.count,
                first: self.first,
            });
        }
    }
}

/// The order a phone-side reader would see, with proto defaults for absent fields.
fn order_of(key: &TemporaryExposureKey) -> (i32, i32, i32, i32, Option<i32>, &[u8]) {
    (
        key.rolling_start_interval_number.unwrap_or_default(),
        key.rolling_period.unwrap_or(DEFAULT_ROLLING_PERIOD),
        key.transmission_risk_level.unwrap_or_default(),
        key.report_type.unwrap_or_default(),
        key.days_since_onset_of_symptoms,
        key.key_data.as_deref().unwrap_or_default(),
    )
}

/// Canonical order, 16-byte key data, no explicit `rolling_period` 144 (DESIGN §4.1).
fn check_keys(
    file_key: &str,
    keys: &[TemporaryExposureKey],
    findings: &mut Vec<Finding>,
) -> Vec<ExportedKey> {
    let mut out_of_order = Tally::default();
    let mut bad_key_data = Tally::default();
    let mut no_start = Tally::default();
    let mut explicit_default = Tally::default();
    let mut exported = Vec::with_capacity(keys.len());
    for (index, key) in keys.iter().enumerate() {
        if let Some(previous) = index.checked_sub(1).and_then(|previous| keys.get(previous))
            && order_of(previous) >= order_of(key)
        {
            out_of_order.record(index);
        }
        if key.rolling_start_interval_number.is_none() {
            no_start.record(index);
        }
        if key.rolling_period == Some(DEFAULT_ROLLING_PERIOD) {
            explicit_default.record(index);
        }
        match key
            .key_data
            .as_deref()
            .and_then(|data| <[u8; KEY_DATA_LEN]>::try_from(data).ok())
        {
            Some(key_data) => exported.push(ExportedKey {
                rolling_start_interval_number: key
                    .rolling_start_interval_number
                    .unwrap_or_default(),
                rolling_period: key.rolling_period.unwrap_or(DEFAULT_ROLLING_PERIOD),
                transmission_risk_level: key.transmission_risk_level.unwrap_or_default(),
                report_type: key.report_type.unwrap_or_default(),
                days_since_onset: key.days_since_onset_of_symptoms,
                key_data,
            }),
            None => bad_key_data.record(index),
        }
    }
    out_of_order.report(file_key, KeyProblem::OutOfOrder, findings);
    bad_key_data.report(file_key, KeyProblem::BadKeyData, findings);
    no_start.report(file_key, KeyProblem::NoRollingStart, findings);
    explicit_default.report(file_key, KeyProblem::ExplicitDefaultPeriod, findings);
    exported
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::cmp::Ordering;

    use diagnosis_domain::domain::{DiagnosisKey, KeyData, ReportType};
    use diagnosis_format::archive::zip_export;
    use diagnosis_format::names::hourly_file_key;
    use diagnosis_format::render::{ExportWindow, PartNumber, canonical_cmp, render_window};
    use diagnosis_format::sign::{SigningKey, SigningKeys, sign_export};
    use diagnosis_format::testing::any_key;
    use diagnosis_proto::TekSignature;
    use proptest::prelude::*;

    use super::*;
    use crate::names::parse_object_name;

    const KEY_1: &str = include_str!("../../fixtures/test-signing-key.pem");
    const KEY_2: &str = include_str!("../../fixtures/test-signing-key-2.pem");
    const START: u64 = 1_764_280_800;

    fn ca() -> Region {
        Region::parse("CA").unwrap()
    }

    fn signing_keys() -> SigningKeys {
        SigningKeys::new(vec![(
            SigningKey::from_pem(KEY_1).unwrap(),
            SignerInfo::new("v1", "302").unwrap(),
        )])
        .unwrap()
    }

    fn name(part: u32) -> ObjectName {
        let key = hourly_file_key(&ca(), START, START + 3600, PartNumber::new(part).unwrap());
        parse_object_name(&ca(), &key).unwrap()
    }

    fn diagnosis_key(n: u8, rsin: i32, period: i32, dso: Option<i32>) -> DiagnosisKey {
        DiagnosisKey {
            key_data: KeyData::from_array([n; 16]),
            rolling_start_interval_number: rsin,
            rolling_period: period,
            transmission_risk_level: 3,
            report_type: ReportType::ConfirmedTest,
            days_since_onset: dso,
        }
    }

    /// A correct zip for part 1 of the test window.
    fn good_zip(keys: &mut [DiagnosisKey]) -> Vec<u8> {
        let window = ExportWindow::new(ca(), START, START + 3600).unwrap();
        let signing_keys = signing_keys();
        let part = render_window(window, &signing_keys.signer_infos(), 100, keys)
            .unwrap()
            .remove(0);
        let sig = sign_export(&part.export_bin, &signing_keys).unwrap();
        zip_export(&part.export_bin, &sig).unwrap()
    }

    fn check(
        name: &ObjectName,
        zip: &[u8],
        public_keys: &[PublicKey],
    ) -> (CheckedFile, Vec<Finding>) {
        let mut violations = Vec::new();
        let file = check_export_file(
            &name.key,
            Some(name),
            &ca(),
            public_keys,
            zip,
            &mut violations,
        );
        (file, violations)
    }

    /// Re-signs a hand-made export so that only the property under test is wrong.
    fn signed_zip(export: &TemporaryExposureKeyExport) -> Vec<u8> {
        let mut bin = EXPORT_BIN_HEADER.to_vec();
        bin.extend(export.encode_to_vec());
        let sig = sign_export(&bin, &signing_keys()).unwrap();
        zip_export(&bin, &sig).unwrap()
    }

    fn decoded(zip: &[u8]) -> TemporaryExposureKeyExport {
        let entries = unzip_export(zip).unwrap();
        TemporaryExposureKeyExport::decode(&entries.export_bin[16..]).unwrap()
    }

    #[test]
    fn a_correct_file_passes_and_yields_its_keys() {
        let mut keys = vec![
            diagnosis_key(2, 100, 144, None),
            diagnosis_key(1, 100, 72, Some(-3)),
            diagnosis_key(3, 99, 144, Some(2)),
        ];
        let zip = good_zip(&mut keys);
        let public_key = signing_keys().public_keys()[0];
        let (file, violations) = check(&name(1), &zip, &[public_key]);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(file.key_count, Some(3));
        assert_eq!(file.bytes, zip.len() as u64);
        assert_eq!(file.sha256, hex::encode(Sha256::digest(&zip)));
        let data: Vec<u8> = file.keys.iter().map(|key| key.key_data[0]).collect();
        assert_eq!(data, [3, 1, 2]);
        assert_eq!(file.keys[1].rolling_period, 72);
        assert_eq!(file.keys[2].rolling_period, 144);
    }

    #[test]
    fn the_name_decides_start_end_and_part() {
        let zip = good_zip(&mut []);
        let (_, violations) = check(&name(2), &zip, &[]);
        let key = name(2).key;
        assert_eq!(
            violations,
            [Finding::EndTimestamp {
                object: key.clone(),
                found: Some(START + 3600),
                expected: START + 3601,
                named_end: START + 3600,
                part: PartNumber::new(2).unwrap(),
            }]
        );
        assert_eq!(
            violations[0].to_string(),
            format!(
                "{key}: end_timestamp is {}, expected {} (the named end {} + part 2 − 1)",
                START + 3600,
                START + 3601,
                START + 3600
            )
        );
    }

    #[test]
    fn header_fields_are_checked() {
        let mut export = decoded(&good_zip(&mut []));
        export.start_timestamp = None;
        export.region = Some("US".to_owned());
        export.batch_num = Some(2);
        export.revised_keys = vec![TemporaryExposureKey::default()];
        let (_, violations) = check(&name(1), &signed_zip(&export), &[]);
        let object = name(1).key;
        assert_eq!(
            violations,
            [
                Finding::StartTimestamp {
                    object: object.clone(),
                    found: None,
                    expected: START,
                },
                Finding::ExportRegion {
                    object: object.clone(),
                    found: Some("US".to_owned()),
                    expected: "CA".to_owned(),
                },
                Finding::ExportBatch {
                    object: object.clone(),
                    batch_num: Some(2),
                    batch_size: Some(1),
                },
                Finding::RevisedKeys {
                    object: object.clone(),
                    count: 1,
                },
            ]
        );
        let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                format!("{object}: start_timestamp is absent, the name says {START}"),
                format!("{object}: region is \"US\", expected \"CA\""),
                format!("{object}: batch_num/batch_size is 2/1, expected 1/1"),
                format!(
                    "{object}: export.bin holds 1 revised_keys; this server never publishes \
                     revised keys"
                ),
            ]
        );
    }

    #[test]
    fn keys_out_of_order_wrong_length_or_with_explicit_default_are_reported() {
        let mut export = decoded(&good_zip(&mut [
            diagnosis_key(1, 100, 144, None),
            diagnosis_key(2, 100, 144, None),
            diagnosis_key(3, 101, 144, None),
        ]));
        export.keys.swap(0, 1);
        export.keys[2].rolling_period = Some(144);
        export.keys.push(TemporaryExposureKey {
            key_data: Some(vec![9; 15]),
            rolling_start_interval_number: None,
            ..export.keys[2].clone()
        });
        let (file, violations) = check(&name(1), &signed_zip(&export), &[]);
        let object = name(1).key;
        assert_eq!(file.key_count, Some(4));
        assert_eq!(file.keys.len(), 3);
        let keys = |problem, count, first| Finding::Keys {
            object: object.clone(),
            problem,
            count,
            first,
        };
        assert_eq!(
            violations,
            [
                keys(KeyProblem::OutOfOrder, 2, 1),
                keys(KeyProblem::BadKeyData, 1, 3),
                keys(KeyProblem::NoRollingStart, 1, 3),
                keys(KeyProblem::ExplicitDefaultPeriod, 2, 2),
            ]
        );
        assert_eq!(
            violations[0].to_string(),
            format!(
                "{object}: 2 key(s) do not come after the previous key in canonical order \
                 (rolling_start_interval_number, rolling_period, transmission_risk_level, \
                 report_type, days_since_onset with unknown first, key_data), or repeat it \
                 (first: key 1 of the file, counting from 0)"
            )
        );
        assert_eq!(
            violations[3].to_string(),
            format!(
                "{object}: 2 key(s) write rolling_period 144 explicitly; the default must be \
                 omitted (first: key 2 of the file, counting from 0)"
            )
        );
    }

    #[test]
    fn each_signature_says_which_given_keys_verify_it() {
        let zip = good_zip(&mut []);
        let key_1 = signing_keys().public_keys()[0];
        let key_2 = SigningKey::from_pem(KEY_2).unwrap().public_key();
        let (file, violations) = check(&name(1), &zip, &[key_2, key_1]);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(
            file.signatures,
            Some(vec![CheckedSignature {
                key_version: Some("v1".to_owned()),
                key_id: Some("302".to_owned()),
                verified_by: vec![1],
            }])
        );
        // A signature over other bytes verifies with no key.
        let entries = unzip_export(&zip).unwrap();
        let other = sign_export(b"other bytes", &signing_keys()).unwrap();
        let (file, _) = check(
            &name(1),
            &zip_export(&entries.export_bin, &other).unwrap(),
            &[key_1],
        );
        assert_eq!(file.signatures.unwrap()[0].verified_by, Vec::<usize>::new());
    }

    #[test]
    fn signature_problems_are_reported() {
        let zip = good_zip(&mut []);
        let entries = unzip_export(&zip).unwrap();
        let mut export = decoded(&zip);
        let object = name(1).key;

        // A signature list that disagrees with the signature infos.
        let mut list = TekSignatureList::decode(entries.export_sig.as_slice()).unwrap();
        list.signatures[0].batch_size = None;
        list.signatures.push(TekSignature {
            signature_info: None,
            ..list.signatures[0].clone()
        });
        let zip = zip_export(&entries.export_bin, &list.encode_to_vec()).unwrap();
        let (_, violations) = check(&name(1), &zip, &[]);
        let batch = |index| Finding::SignatureBatch {
            object: object.clone(),
            index,
            batch_num: Some(1),
            batch_size: None,
        };
        assert_eq!(
            violations,
            [
                Finding::SignatureCount {
                    object: object.clone(),
                    signatures: 2,
                    infos: 1,
                },
                batch(0),
                batch(1),
            ]
        );
        assert_eq!(
            violations[0].to_string(),
            format!(
                "{object}: export.sig holds 2 signatures but export.bin has 1 signature_infos \
                 (one signature per signature info, in the same order)"
            )
        );
        assert_eq!(
            violations[1].to_string(),
            format!(
                "{object}: export.sig signature 0 has batch_num/batch_size 1/absent, expected 1/1"
            )
        );

        // Infos that break the platform rules.
        export.signature_infos[0].signature_algorithm = Some("1.2.3".to_owned());
        export.signature_infos[0].verification_key_id = Some("3/2".to_owned());
        let (_, violations) = check(&name(1), &signed_zip(&export), &[]);
        assert_eq!(
            violations[..2],
            [
                Finding::SignatureAlgorithm {
                    object: object.clone(),
                    index: 0,
                    found: Some("1.2.3".to_owned()),
                },
                Finding::SignatureInfoInvalid {
                    object: object.clone(),
                    index: 0,
                    reason: "verification_key_id must be 1 to 64 characters of [A-Za-z0-9_], \
                             got \"3/2\""
                        .to_owned(),
                },
            ]
        );
        assert_eq!(
            violations[0].to_string(),
            format!(
                "{object}: signature_infos[0] has algorithm 1.2.3, expected 1.2.840.10045.4.3.2"
            )
        );
        // The signer labels its signature with its own (correct) info, which now differs.
        assert!(
            matches!(
                &violations[2],
                Finding::SignatureLabel { index: 0, label: Some(label), info, .. }
                    if label.verification_key_id.as_deref() == Some("302")
                        && info.verification_key_id.as_deref() == Some("3/2")
            ),
            "{violations:?}"
        );
        assert!(
            violations[2]
                .to_string()
                .contains("export.sig signature 0 is labelled (version v1, id 302, algorithm"),
            "{}",
            violations[2]
        );

        export.signature_infos = vec![export.signature_infos[0].clone(); MAX_SIGNERS + 1];
        let (_, violations) = check(&name(1), &signed_zip(&export), &[]);
        let too_many = Finding::TooManySignatureInfos {
            object: object.clone(),
            count: 11,
        };
        assert!(violations.contains(&too_many), "{violations:?}");
        assert_eq!(
            too_many.to_string(),
            format!("{object}: export.bin has 11 signature_infos, at most 10 are allowed")
        );
        export.signature_infos.clear();
        let (_, violations) = check(&name(1), &signed_zip(&export), &[]);
        assert!(
            violations.contains(&Finding::NoSignatureInfos {
                object: object.clone()
            }),
            "{violations:?}"
        );
    }

    #[test]
    fn malformed_files_are_violations() {
        let object = name(1).key;
        let zip = good_zip(&mut []);
        let entries = unzip_export(&zip).unwrap();

        let (file, violations) = check(&name(1), b"PK not really", &[]);
        assert_eq!(file.key_count, None);
        assert!(
            matches!(violations.as_slice(), [Finding::ArchiveInvalid { object: o, .. }] if *o == object),
            "{violations:?}"
        );

        let mut bin = entries.export_bin.clone();
        bin[0] = b'e';
        let (_, violations) = check(
            &name(1),
            &zip_export(&bin, &entries.export_sig).unwrap(),
            &[],
        );
        assert_eq!(
            violations,
            [Finding::HeaderMissing {
                object: object.clone()
            }]
        );
        assert_eq!(
            violations[0].to_string(),
            format!("{object}: export.bin does not start with the header \"EK Export v1    \"")
        );

        let truncated = &entries.export_bin[..entries.export_bin.len() - 1];
        let (_, violations) = check(
            &name(1),
            &zip_export(truncated, &entries.export_sig).unwrap(),
            &[],
        );
        assert!(
            matches!(violations.as_slice(), [Finding::ExportBinMalformed { .. }]),
            "{violations:?}"
        );

        let (file, violations) = check(
            &name(1),
            &zip_export(&entries.export_bin, b"\xff\xff").unwrap(),
            &[signing_keys().public_keys()[0]],
        );
        assert!(
            matches!(violations.as_slice(), [Finding::ExportSigMalformed { .. }]),
            "{violations:?}"
        );
        assert_eq!(file.signatures, None);
    }

    /// `key` with the first `count` fields of `from`, in canonical order: rolling start,
    /// rolling period, transmission risk, report type, days since onset, key data.
    fn with_first_fields_of(
        from: &DiagnosisKey,
        mut key: DiagnosisKey,
        count: usize,
    ) -> DiagnosisKey {
        if count > 0 {
            key.rolling_start_interval_number = from.rolling_start_interval_number;
        }
        if count > 1 {
            key.rolling_period = from.rolling_period;
        }
        if count > 2 {
            key.transmission_risk_level = from.transmission_risk_level;
        }
        if count > 3 {
            key.report_type = from.report_type;
        }
        if count > 4 {
            key.days_since_onset = from.days_since_onset;
        }
        if count > 5 {
            key.key_data = from.key_data;
        }
        key
    }

    fn exported(key: &DiagnosisKey) -> ExportedKey {
        ExportedKey {
            rolling_start_interval_number: key.rolling_start_interval_number,
            rolling_period: key.rolling_period,
            transmission_risk_level: key.transmission_risk_level,
            report_type: key.report_type.as_i32(),
            days_since_onset: key.days_since_onset,
            key_data: *key.key_data.as_bytes(),
        }
    }

    proptest! {
        #[test]
        fn exported_key_order_is_the_canonical_order(
            a in any_key(),
            b in any_key(),
            shared in 0..=6_usize,
        ) {
            // Two random keys almost always differ in their first field; `b` takes `a`'s first
            // `shared` fields in canonical order, so every later field decides some cases.
            let b = with_first_fields_of(&a, b, shared);
            prop_assert_eq!(exported(&a).cmp(&exported(&b)), canonical_cmp(&a, &b));
        }

        #[test]
        fn rendered_keys_read_back_in_order(mut keys in proptest::collection::vec(any_key(), 0..20)) {
            keys.sort_unstable_by(canonical_cmp);
            keys.dedup_by(|a, b| canonical_cmp(a, b) == Ordering::Equal);
            let zip = good_zip(&mut keys);
            let (file, violations) = check(&name(1), &zip, &[]);
            prop_assert!(violations.is_empty(), "{:?}", violations);
            let expected: Vec<ExportedKey> = keys.iter().map(exported).collect();
            prop_assert_eq!(file.keys, expected);
        }

        #[test]
        fn any_bytes_are_a_verdict_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = check(&name(1), &bytes, &[]);
            // The same bytes as the entries of a well-formed archive reach the protobuf parsers.
            let mut bin = EXPORT_BIN_HEADER.to_vec();
            bin.extend(&bytes);
            let _ = check(&name(1), &zip_export(&bin, &bytes).unwrap(), &[]);
        }
    }
}
