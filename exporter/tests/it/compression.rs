//! Published file size per key (DESIGN §4.1): the canonical key order groups identical metadata
//! so deflate only pays for the 16 random bytes of each key; a random order costs more.
//!
//! `cargo test -p diagnosis-exporter --release --test it compression:: -- --nocapture` prints the
//! measurement for 100 000 keys; `infra/dev/bench` measures it on the benchmark's population.

#![allow(clippy::unwrap_used)]

use diagnosis_core::domain::{DiagnosisKey, KeyData, Region, ReportType};
use diagnosis_format::archive::{COMPRESSION_LEVEL, zip_export};
use diagnosis_format::render::{ExportWindow, PartNumber, SignerInfo, render_window};
use diagnosis_format::testing::{Rng, export_bin_in_order};

const KEYS: usize = 100_000;
/// A real `export.sig` with one signature is about 100 bytes; its exact content does not
/// matter for the comparison.
const SIG: [u8; 100] = [0x5a; 100];

/// Keys shaped like one hour of uploads: daily keys (144-aligned) of the last 14 days, most
/// with the full rolling period, the app's transmission risk levels, mostly confirmed tests,
/// days since onset known for about half.
fn hour_of_keys(rng: &mut Rng) -> Vec<DiagnosisKey> {
    let today = 2_940_480;
    (0..KEYS)
        .map(|_| {
            let mut bytes = [0_u8; 16];
            bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
            DiagnosisKey {
                key_data: KeyData::from_array(bytes),
                rolling_start_interval_number: today - 144 * rng.below(14),
                rolling_period: if rng.below(20) == 0 {
                    1 + rng.below(143)
                } else {
                    144
                },
                transmission_risk_level: 1 + rng.below(8),
                report_type: if rng.below(10) == 0 {
                    ReportType::ConfirmedClinicalDiagnosis
                } else {
                    ReportType::ConfirmedTest
                },
                days_since_onset: (rng.below(2) == 0).then(|| rng.below(29) - 14),
            }
        })
        .collect()
}

fn window() -> ExportWindow {
    ExportWindow::new(Region::parse("CA").unwrap(), 1_764_280_800, 1_764_284_400).unwrap()
}

fn signers() -> Vec<SignerInfo> {
    vec![SignerInfo::new("v1", "302").unwrap()]
}

#[test]
fn canonical_order_compresses_to_about_the_key_bytes() {
    let mut rng = Rng::new(2020);
    let random_order = hour_of_keys(&mut rng);
    let mut canonical = random_order.clone();
    let parts = render_window(window(), &signers(), 500_000, &mut canonical).unwrap();
    assert_eq!(parts.len(), 1);
    let canonical_bin = &parts[0].export_bin;
    let random_bin = export_bin_in_order(&window(), PartNumber::FIRST, &signers(), &random_order);
    assert_eq!(canonical_bin.len(), random_bin.len());

    let per_key = |bytes: usize| bytes as f64 / KEYS as f64;
    let published = zip_export(canonical_bin, &SIG).unwrap();
    let random = zip_export(&random_bin, &SIG).unwrap();
    println!(
        "export.bin uncompressed: {:.2} bytes/key",
        per_key(canonical_bin.len())
    );
    let published_per_key = per_key(published.len());
    println!(
        "published (deflate level {COMPRESSION_LEVEL}): canonical order {published_per_key:.2} bytes/key, random order {:.2} bytes/key",
        per_key(random.len())
    );
    assert!(published.len() < random.len());
    // 16 incompressible key bytes plus a little framing (DESIGN §4.1: ≈ 17.6).
    assert!(
        (16.0..18.5).contains(&published_per_key),
        "{published_per_key}"
    );
}
