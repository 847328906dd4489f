//! Helpers for tests and the benchmark (feature `test-support`): never part of what the
//! exporter runs.

use diagnosis_domain::domain::{DiagnosisKey, KeyData, ReportType};
use diagnosis_proto::export_bin::DEFAULT_ROLLING_PERIOD;
use diagnosis_proto::{
    EXPORT_BIN_HEADER, Message as _, TemporaryExposureKey, TemporaryExposureKeyExport,
};
use proptest::prelude::*;

use crate::render::{BATCH_NUM, BATCH_SIZE, ExportWindow, PartNumber, SignerInfo};

/// Any diagnosis key the domain can hold: every field over its whole range, `rolling_period`
/// often the default 144 (which the file omits), a known report type.
pub fn any_key() -> impl Strategy<Value = DiagnosisKey> {
    (
        any::<[u8; 16]>(),
        any::<i32>(),
        prop_oneof![Just(DEFAULT_ROLLING_PERIOD), any::<i32>()],
        any::<i32>(),
        prop_oneof![
            Just(ReportType::ConfirmedTest),
            Just(ReportType::ConfirmedClinicalDiagnosis),
            Just(ReportType::SelfReport),
            Just(ReportType::Recursive),
            Just(ReportType::Revoked),
        ],
        proptest::option::of(any::<i32>()),
    )
        .prop_map(
            |(bytes, rsin, period, trl, report_type, dso)| DiagnosisKey {
                key_data: KeyData::from_array(bytes),
                rolling_start_interval_number: rsin,
                rolling_period: period,
                transmission_risk_level: trl,
                report_type,
                days_since_onset: dso,
            },
        )
}

/// `export.bin` for `keys` in the order given, encoded the ordinary way: one whole message by
/// prost. It is the reference the streaming writer is tested against and the random-order
/// baseline of the size benchmark; the exporter itself writes with
/// [`crate::render::WindowRenderer`].
pub fn export_bin_in_order(
    window: &ExportWindow,
    part: PartNumber,
    signers: &[SignerInfo],
    keys: &[DiagnosisKey],
) -> Vec<u8> {
    let message = TemporaryExposureKeyExport {
        start_timestamp: Some(window.start()),
        end_timestamp: Some(part.end_timestamp(window.end())),
        region: Some(window.region().as_str().to_owned()),
        batch_num: Some(BATCH_NUM),
        batch_size: Some(BATCH_SIZE),
        signature_infos: signers.iter().map(SignerInfo::to_signature_info).collect(),
        keys: keys
            .iter()
            .map(|k| TemporaryExposureKey {
                key_data: Some(k.key_data.as_bytes().to_vec()),
                transmission_risk_level: Some(k.transmission_risk_level),
                rolling_start_interval_number: Some(k.rolling_start_interval_number),
                rolling_period: (k.rolling_period != DEFAULT_ROLLING_PERIOD)
                    .then_some(k.rolling_period),
                report_type: Some(k.report_type.as_i32()),
                days_since_onset_of_symptoms: k.days_since_onset,
            })
            .collect(),
        revised_keys: Vec::new(),
    };
    let mut bytes = EXPORT_BIN_HEADER.to_vec();
    bytes.extend(message.encode_to_vec());
    bytes
}

/// splitmix64: small, fast and deterministic, so generated data and measurements are
/// reproducible from their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u32) -> i32 {
        i32::try_from(self.next_u64() % u64::from(n.max(1))).unwrap_or(0)
    }

    pub fn key_data(&mut self) -> KeyData {
        let mut bytes = [0_u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        KeyData::from_array(bytes)
    }
}
