//! The committed export fixtures are reproduced byte for byte, and the Rust `export.bin`
//! equals the one an independent implementation (the `protobuf` Python package, see
//! `tests/independent/verify_export.py`) built from the same input.
//!
//! Regenerate the zips after an intended format change with
//! `DIAGNOSIS_UPDATE_FIXTURES=1 cargo test -p diagnosis-exporter --test it fixtures::`, and the
//! independent `*.python.bin` files with
//! `python3 exporter/tests/independent/verify_export.py render exporter/fixtures/NAME.json
//! exporter/fixtures/NAME.python.bin`. Review both diffs: they are the wire format.

#![allow(clippy::unwrap_used)]

use diagnosis_format::archive::unzip_export;
use diagnosis_format::sign::{PublicKey, verify_signature};
use diagnosis_proto::{Message as _, TekSignatureList};

use crate::support::{CASES, fixture, load_case, render_zip};

fn updating() -> bool {
    std::env::var_os("DIAGNOSIS_UPDATE_FIXTURES").is_some_and(|value| value == "1")
}

#[test]
fn committed_zips_are_reproduced_byte_for_byte() {
    for name in CASES {
        let case = load_case(name);
        let (_, zip) = render_zip(&case);
        let path = fixture(&format!("{name}.zip"));
        if updating() {
            std::fs::write(&path, &zip).unwrap();
            continue;
        }
        let committed = std::fs::read(&path).unwrap();
        if zip != committed {
            // Say which part changed before failing on the whole file.
            let ours = unzip_export(&zip).unwrap();
            let theirs = unzip_export(&committed).unwrap();
            assert_eq!(
                hex::encode(&ours.export_bin),
                hex::encode(&theirs.export_bin),
                "{name}: export.bin differs from the fixture"
            );
            assert_eq!(
                hex::encode(&ours.export_sig),
                hex::encode(&theirs.export_sig),
                "{name}: export.sig differs from the fixture (signing must be deterministic)"
            );
            panic!("{name}: same entries but the zip container differs from the fixture");
        }
    }
}

#[test]
fn rust_export_bin_equals_the_independent_rendering() {
    for name in CASES {
        let case = load_case(name);
        let (export_bin, _) = render_zip(&case);
        let independent = std::fs::read(fixture(&format!("{name}.python.bin"))).unwrap();
        assert_eq!(
            hex::encode(&export_bin),
            hex::encode(&independent),
            "{name}: Rust export.bin differs from the independent implementation's"
        );
    }
}

#[test]
fn committed_zips_verify_with_the_test_public_keys() {
    if updating() {
        // The zips are being rewritten by the test above, in parallel.
        return;
    }
    for name in CASES {
        let case = load_case(name);
        let committed = std::fs::read(fixture(&format!("{name}.zip"))).unwrap();
        let entries = unzip_export(&committed).unwrap();
        let signatures = TekSignatureList::decode(entries.export_sig.as_slice()).unwrap();
        assert_eq!(signatures.signatures.len(), case.public_key_paths.len());
        for (signature, path) in signatures.signatures.iter().zip(&case.public_key_paths) {
            let public = PublicKey::from_pem(&std::fs::read_to_string(path).unwrap()).unwrap();
            assert!(
                verify_signature(
                    &entries.export_bin,
                    signature.signature.as_deref().unwrap(),
                    &public
                ),
                "{name}: signature does not verify with {}",
                path.display()
            );
        }
    }
}
