//! Shared by the fixture tests: the fixed export cases in `exporter/fixtures/` and how the Rust
//! exporter renders, signs and zips them.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use diagnosis_core::domain::{DiagnosisKey, KeyData, Region, ReportType};
use diagnosis_format::archive::zip_export;
use diagnosis_format::render::{
    ExportBinWriter, ExportWindow, PartNumber, SignerInfo, sort_canonical,
};
use diagnosis_format::sign::{SigningKey, SigningKeys, sign_export};
use serde_json::Value;

/// The committed cases: `{name}.json` is the input, `{name}.zip` what Rust published for it,
/// `{name}.python.bin` the `export.bin` the independent implementation built for it.
pub const CASES: [&str; 3] = ["export-0-keys", "export-1-key", "export-8-keys"];

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// One export input: window, part, signers (with their test keys) and keys.
pub struct Case {
    pub input: PathBuf,
    pub json: Value,
    pub window: ExportWindow,
    pub part: PartNumber,
    pub signers: Vec<SignerInfo>,
    pub signing_keys: SigningKeys,
    pub public_key_paths: Vec<PathBuf>,
    /// In canonical order.
    pub keys: Vec<DiagnosisKey>,
}

pub fn load_case(name: &str) -> Case {
    let input = fixture(&format!("{name}.json"));
    let json: Value = serde_json::from_slice(&std::fs::read(&input).unwrap()).unwrap();
    case_from_json(input, json)
}

pub fn case_from_json(input: PathBuf, json: Value) -> Case {
    let int = |value: &Value| value.as_i64().unwrap();
    let window = ExportWindow::new(
        Region::parse(json["region"].as_str().unwrap()).unwrap(),
        json["start_timestamp"].as_u64().unwrap(),
        json["end_timestamp"].as_u64().unwrap(),
    )
    .unwrap();
    let part = PartNumber::new(json["part"].as_u64().unwrap() as u32).unwrap();
    let mut signers = Vec::new();
    let mut keys_with_infos = Vec::new();
    let mut public_key_paths = Vec::new();
    for signer in json["signers"].as_array().unwrap() {
        let info = SignerInfo::new(
            signer["verification_key_version"].as_str().unwrap(),
            signer["verification_key_id"].as_str().unwrap(),
        )
        .unwrap();
        let key = SigningKey::from_file(&fixture(signer["private_key"].as_str().unwrap())).unwrap();
        signers.push(info.clone());
        keys_with_infos.push((key, info));
        public_key_paths.push(fixture(signer["public_key"].as_str().unwrap()));
    }
    let mut keys: Vec<DiagnosisKey> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| DiagnosisKey {
            key_data: KeyData::try_from(
                hex::decode(key["key_data"].as_str().unwrap())
                    .unwrap()
                    .as_slice(),
            )
            .unwrap(),
            rolling_start_interval_number: int(&key["rolling_start_interval_number"]) as i32,
            rolling_period: int(&key["rolling_period"]) as i32,
            transmission_risk_level: int(&key["transmission_risk_level"]) as i32,
            report_type: ReportType::from_i32(int(&key["report_type"]) as i32).unwrap(),
            days_since_onset: key["days_since_onset_of_symptoms"]
                .as_i64()
                .map(|days| days as i32),
        })
        .collect();
    sort_canonical(&mut keys);
    Case {
        input,
        json,
        window,
        part,
        signers,
        signing_keys: SigningKeys::new(keys_with_infos).unwrap(),
        public_key_paths,
        keys,
    }
}

/// `export.bin` as the exporter renders it.
pub fn render_export_bin(case: &Case) -> Vec<u8> {
    let mut writer = ExportBinWriter::new(&case.window, case.part, &case.signers).unwrap();
    for key in &case.keys {
        writer.push(key).unwrap();
    }
    writer.finish()
}

/// The published zip: render, sign, zip.
pub fn render_zip(case: &Case) -> (Vec<u8>, Vec<u8>) {
    let export_bin = render_export_bin(case);
    let export_sig = sign_export(&export_bin, &case.signing_keys).unwrap();
    let zip = zip_export(&export_bin, &export_sig).unwrap();
    (export_bin, zip)
}
