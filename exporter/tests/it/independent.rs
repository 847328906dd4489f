//! Cross-checks with an independent implementation of the export format:
//! `tests/independent/verify_export.py`, which declares the messages from DESIGN §3 itself,
//! encodes with the `protobuf` Python package and verifies signatures with `cryptography`.
//!
//! These tests need `python3` with `pip install cryptography protobuf`. They fail, never skip,
//! when that is missing: the byte-for-byte check against an independent implementation is a
//! requirement, not a nicety.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diagnosis_core::domain::DiagnosisKey;
use diagnosis_format::archive::{unzip_export, zip_export};
use diagnosis_format::render::SignerInfo;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::{CASES, Case, case_from_json, fixture, load_case, render_zip};

const PACKAGES_HINT: &str =
    "install Python 3 and the packages with `pip install cryptography protobuf`";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/verify_export.py")
}

/// Runs the independent implementation; panics with a clear message when it cannot run.
fn python(args: &[&Path]) -> Output {
    let output = Command::new("python3")
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run python3 for the independent export check ({error}): {PACKAGES_HINT}")
        });
    if output.status.code() == Some(3) {
        panic!(
            "the independent export check is missing a Python package: {}\n{PACKAGES_HINT}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

fn verify_with_python(zip: &Path, public_keys: &[PathBuf]) -> Value {
    let mut args: Vec<&Path> = vec![Path::new("verify"), zip];
    args.extend(public_keys.iter().map(PathBuf::as_path));
    let output = python(&args);
    assert!(
        output.status.success(),
        "independent verification of {} failed: {}",
        zip.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn render_with_python(input: &Path, dir: &Path) -> Vec<u8> {
    let output_path = dir.join("python-export.bin");
    let output = python(&[Path::new("render"), input, &output_path]);
    assert!(
        output.status.success(),
        "independent rendering of {} failed: {}",
        input.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(output_path).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "diagnosis-exporter-independent-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn signer_json(info: &SignerInfo) -> Value {
    json!({
        "verification_key_version": info.key_version(),
        "verification_key_id": info.key_id(),
        "signature_algorithm": "1.2.840.10045.4.3.2",
    })
}

fn key_json(key: &DiagnosisKey) -> Value {
    json!({
        "key_data": hex::encode(key.key_data.as_bytes()),
        "transmission_risk_level": key.transmission_risk_level,
        "rolling_start_interval_number": key.rolling_start_interval_number,
        "rolling_period": key.rolling_period,
        "rolling_period_present": key.rolling_period != 144,
        "report_type": key.report_type.as_i32(),
        "days_since_onset_of_symptoms": key.days_since_onset,
    })
}

/// What the independent verifier must report for a file Rust rendered from `case`.
fn expected_summary(case: &Case, export_bin: &[u8]) -> Value {
    let signers: Vec<Value> = case.signers.iter().map(signer_json).collect();
    let signatures: Vec<Value> = signers
        .iter()
        .map(|signer| {
            let mut signature = signer.clone();
            signature["verified"] = json!(true);
            signature
        })
        .collect();
    json!({
        "entries": ["export.bin", "export.sig"],
        "header": "EK Export v1    ",
        "start_timestamp": case.window.start(),
        "end_timestamp": case.part.end_timestamp(case.window.end()),
        "region": case.window.region().as_str(),
        "batch_num": 1,
        "batch_size": 1,
        "signature_infos": signers,
        "keys": case.keys.iter().map(key_json).collect::<Vec<_>>(),
        "signatures": signatures,
        "export_bin_sha256": hex::encode(sha2::Sha256::digest(export_bin)),
    })
}

#[test]
fn independent_verifier_accepts_every_committed_fixture() {
    for name in CASES {
        let case = load_case(name);
        let (export_bin, _) = render_zip(&case);
        let summary = verify_with_python(&fixture(&format!("{name}.zip")), &case.public_key_paths);
        assert_eq!(summary, expected_summary(&case, &export_bin), "{name}");
    }
}

#[test]
fn independent_rendering_equals_rust_for_every_fixture_input() {
    let dir = temp_dir("fixtures");
    for name in CASES {
        let case = load_case(name);
        let (export_bin, _) = render_zip(&case);
        assert_eq!(
            hex::encode(render_with_python(&case.input, &dir)),
            hex::encode(export_bin),
            "{name}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A larger window with pseudo-random keys covering every field's range, rendered by both
/// implementations and verified by the independent one.
#[test]
fn independent_implementation_agrees_on_a_large_random_window() {
    let dir = temp_dir("random");
    let mut state: u64 = 0x5eed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 11
    };
    let keys: Vec<Value> = (0..2_000)
        .map(|_| {
            let key_data: Vec<u8> = (0..16).map(|_| next() as u8).collect();
            json!({
                "key_data": hex::encode(key_data),
                "transmission_risk_level": next() % 9,
                "rolling_start_interval_number": 2_938_000 + (next() % 2_200),
                "rolling_period": if next() % 4 == 0 { 1 + next() % 144 } else { 144 },
                "report_type": 1 + next() % 5,
                "days_since_onset_of_symptoms": if next() % 3 == 0 {
                    Value::Null
                } else {
                    json!((next() % 29) as i64 - 14)
                },
            })
        })
        .collect();
    let input_json = json!({
        "region": "CA",
        "start_timestamp": 1_764_201_600,
        "end_timestamp": 1_764_288_000,
        "part": 7,
        "signers": [
            {
                "verification_key_version": "v2",
                "verification_key_id": "302",
                "private_key": "test-signing-key-2.pem",
                "public_key": "test-signing-key-2.pub.pem"
            },
            {
                "verification_key_version": "v1",
                "verification_key_id": "302",
                "private_key": "test-signing-key.pem",
                "public_key": "test-signing-key.pub.pem"
            }
        ],
        "keys": keys,
    });
    let input = dir.join("input.json");
    std::fs::write(&input, serde_json::to_vec(&input_json).unwrap()).unwrap();
    let case = case_from_json(input.clone(), input_json);
    let (export_bin, zip) = render_zip(&case);
    assert_eq!(
        hex::encode(render_with_python(&input, &dir)),
        hex::encode(&export_bin)
    );
    let zip_path = dir.join("export.zip");
    std::fs::write(&zip_path, &zip).unwrap();
    let summary = verify_with_python(&zip_path, &case.public_key_paths);
    assert_eq!(summary, expected_summary(&case, &export_bin));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn independent_verifier_rejects_tampered_files() {
    let dir = temp_dir("tampered");
    let case = load_case("export-8-keys");
    let (_, zip) = render_zip(&case);
    let entries = unzip_export(&zip).unwrap();

    let mut flipped = entries.export_bin.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let swapped_keys: Vec<PathBuf> = case.public_key_paths.iter().rev().cloned().collect();
    let cases: [(&str, Vec<u8>, &[PathBuf], &str); 3] = [
        (
            "flipped-bit",
            zip_export(&flipped, &entries.export_sig).unwrap(),
            &case.public_key_paths,
            "signature 0 does not verify",
        ),
        (
            "wrong-key-order",
            zip.clone(),
            &swapped_keys,
            "signature 0 does not verify",
        ),
        (
            "entries-swapped",
            {
                // export.sig first: a phone rejects it, so must the verifier.
                let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
                let options = zip::write::SimpleFileOptions::default();
                for (name, bytes) in [
                    ("export.sig", &entries.export_sig),
                    ("export.bin", &entries.export_bin),
                ] {
                    writer.start_file(name, options).unwrap();
                    std::io::Write::write_all(&mut writer, bytes).unwrap();
                }
                writer.finish().unwrap().into_inner()
            },
            &case.public_key_paths,
            "entries must be export.bin then export.sig",
        ),
    ];
    for (name, bytes, public_keys, expected) in cases {
        let path = dir.join(format!("{name}.zip"));
        std::fs::write(&path, bytes).unwrap();
        let mut args: Vec<&Path> = vec![Path::new("verify"), &path];
        args.extend(public_keys.iter().map(PathBuf::as_path));
        let output = python(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
