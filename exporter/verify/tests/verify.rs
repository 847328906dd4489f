//! `verify` against buckets published with the exporter's own render, sign and zip steps and
//! the committed test signing keys: a correct bucket passes, and each kind of tampering is
//! reported, naming the object, without stopping at the first.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use diagnosis_domain::domain::{DiagnosisKey, KeyData, Region, ReportType};
use diagnosis_domain::time::{is_relevant, key_expiry};
use diagnosis_format::archive::{unzip_export, zip_export};
use diagnosis_format::names::{
    ObjectKind, daily_file_key, hourly_file_key, retrieval_bundle_key, retrieval_day_key,
};
use diagnosis_format::render::{
    ExportWindow, PLATFORM_MAX_KEYS_PER_FILE, SignerInfo, render_window,
};
use diagnosis_format::sign::{PublicKey, SigningKey, SigningKeys, sign_export};
use diagnosis_proto::{Message as _, TekSignatureList};
use diagnosis_verify::{
    DirectorySource, Finding, HttpSource, KeyCount, Kind, MAX_OBJECT_BYTES, ManifestField,
    MemorySource, RetrievalProblem, SignerCount, Source, VerifyError, VerifyOptions, VerifyReport,
    shown_location, source_for, verify_bucket,
};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// 2025-11-27 00:00 UTC: the one complete day of the test bucket.
const DAY_START: u64 = 1_764_201_600;
/// The bucket's hours: the last 3 of the day before, the whole day, the first 3 of the next.
const FIRST_HOUR: u64 = DAY_START - 3 * HOUR;
const HOURS: u64 = 30;
/// An hour published without keys (every closed hour gets a file, DESIGN §4).
const EMPTY_HOUR: u64 = DAY_START + 10 * HOUR;
/// Small, so that hours with more keys are split into parts.
const HOURLY_MAX_KEYS: usize = 4;
const DAILY_MAX_KEYS: usize = 40;

/// A file of the exporter's `fixtures/` folder: the committed test keys.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name)
}

fn public_key(name: &str) -> PublicKey {
    let pem = std::fs::read_to_string(fixture(name)).unwrap();
    PublicKey::from_named_pem(name, &pem).unwrap()
}

/// Public key of `test-signing-key.pem` (`v1`).
fn public_key_1() -> PublicKey {
    public_key("test-signing-key.pub.pem")
}

/// Public key of `test-signing-key-2.pem` (`v2`, the newer one).
fn public_key_2() -> PublicKey {
    public_key("test-signing-key-2.pub.pem")
}

fn signer(file: &str, version: &str) -> (SigningKey, SignerInfo) {
    (
        SigningKey::from_file(&fixture(file)).unwrap(),
        SignerInfo::new(version, "302").unwrap(),
    )
}

/// Key 1 alone, as before a rotation.
fn old_key() -> SigningKeys {
    SigningKeys::new(vec![signer("test-signing-key.pem", "v1")]).unwrap()
}

/// Both keys, newest first, as during a rotation.
fn both_keys() -> SigningKeys {
    SigningKeys::new(vec![
        signer("test-signing-key-2.pem", "v2"),
        signer("test-signing-key.pem", "v1"),
    ])
    .unwrap()
}

/// Key 2 alone, as after a rotation.
fn new_key() -> SigningKeys {
    SigningKeys::new(vec![signer("test-signing-key-2.pem", "v2")]).unwrap()
}

fn region() -> Region {
    Region::parse("CA").unwrap()
}

/// A few keys for the hour starting at `start`, random-looking but the same on every run.
fn keys_of_hour(start: u64) -> Vec<DiagnosisKey> {
    if start == EMPTY_HOUR {
        return Vec::new();
    }
    let seed = Sha256::digest(start.to_be_bytes());
    let count = 1 + usize::from(seed[0] % 6);
    (0..count)
        .map(|index| {
            let d = Sha256::digest([&start.to_be_bytes()[..], &[index as u8]].concat());
            let interval = i32::try_from(start / 600).unwrap();
            DiagnosisKey {
                key_data: KeyData::try_from(&d[..16]).unwrap(),
                rolling_start_interval_number: interval
                    - interval % 144
                    - 144 * i32::from(d[16] % 3),
                rolling_period: if d[17] % 4 == 0 { 72 } else { 144 },
                transmission_risk_level: i32::from(d[18] % 8),
                report_type: ReportType::from_i32(1 + i32::from(d[19] % 2)).unwrap(),
                days_since_onset: (d[20] % 3 != 0).then(|| i32::from(d[21] % 29) - 14),
            }
        })
        .collect()
}

/// What to publish; tests change it before [`Spec::publish`] to tamper "legitimately"
/// (re-rendered and re-signed files).
struct Spec {
    /// The keys of every window starting at or after the given start (the last that
    /// applies wins), as a key rotation changes them.
    signing_keys: Vec<(u64, SigningKeys)>,
    /// Window start → keys.
    hours: BTreeMap<u64, Vec<DiagnosisKey>>,
    /// Hours published once but no longer listed in `index.txt`, cut by its 14 days: their
    /// files are gone, their keys are in their day's daily and retrieval objects.
    cut: BTreeMap<u64, Vec<DiagnosisKey>>,
    /// Day start → keys.
    days: BTreeMap<u64, Vec<DiagnosisKey>>,
}

/// A published bucket and the object keys of its files, in index order.
struct Published {
    bucket: MemorySource,
    hourly: Vec<String>,
    daily: Vec<String>,
    /// The retrieval objects, `00000` last, with their window's start.
    retrieval: Vec<(String, u64)>,
}

impl Spec {
    /// 30 hours, signed by both test keys (newest first), the complete day's daily file being
    /// the union of its 24 hourly files.
    fn new() -> Self {
        let hours: BTreeMap<u64, Vec<DiagnosisKey>> = (0..HOURS)
            .map(|hour| FIRST_HOUR + hour * HOUR)
            .map(|start| (start, keys_of_hour(start)))
            .collect();
        let day: Vec<DiagnosisKey> = hours
            .range(DAY_START..DAY_START + DAY)
            .flat_map(|(_, keys)| keys.iter().cloned())
            .collect();
        Self {
            signing_keys: vec![(0, both_keys())],
            hours,
            cut: BTreeMap::new(),
            days: BTreeMap::from([(DAY_START, day)]),
        }
    }

    /// Fourteen days and three hours up to `DAY_START + DAY + 3 h`, as `index.txt` lists them
    /// on the last day: the first day's first 10 hours are cut, its daily file still listed.
    fn spanning_fourteen_days() -> Self {
        let first_day = DAY_START + DAY - 14 * DAY;
        let mut spec = Self::new().signed_by_key_1_only();
        spec.hours.clear();
        spec.days.clear();
        for hour in 0..14 * 24 + 3 {
            let start = first_day + hour * HOUR;
            let keys = keys_of_hour(start);
            if hour < 10 {
                spec.cut.insert(start, keys);
            } else {
                spec.hours.insert(start, keys);
            }
        }
        for day in 0..14 {
            let start = first_day + day * DAY;
            spec.days
                .insert(start, spec.keys_between(start, start + DAY));
        }
        spec
    }

    fn signed_by_key_1_only(mut self) -> Self {
        self.signing_keys = vec![(0, old_key())];
        self
    }

    fn keys_for(&self, start: u64) -> &SigningKeys {
        self.signing_keys
            .iter()
            .rev()
            .find(|(from, _)| *from <= start)
            .map(|(_, keys)| keys)
            .unwrap()
    }

    /// Renders, signs and zips every window, then writes both indexes and the manifest.
    fn publish(&self) -> Published {
        let mut published = Published {
            bucket: MemorySource::new(),
            hourly: Vec::new(),
            daily: Vec::new(),
            retrieval: Vec::new(),
        };
        let mut manifest = Vec::new();
        let windows = self
            .hours
            .iter()
            .map(|(start, keys)| ("hourly", *start, HOUR, HOURLY_MAX_KEYS, keys))
            .chain(
                self.days
                    .iter()
                    .map(|(start, keys)| ("daily", *start, DAY, DAILY_MAX_KEYS, keys)),
            );
        for (kind, start, length, max_keys, keys) in windows {
            let window = ExportWindow::new(region(), start, start + length).unwrap();
            let signing_keys = self.keys_for(start);
            let signers = signing_keys.signer_infos();
            let parts = render_window(window, &signers, max_keys, &mut keys.clone()).unwrap();
            for part in parts {
                let sig = sign_export(&part.export_bin, signing_keys).unwrap();
                let zip = zip_export(&part.export_bin, &sig).unwrap();
                let key = if kind == "hourly" {
                    hourly_file_key(&region(), start, start + length, part.part)
                } else {
                    daily_file_key(&region(), start, start + length, part.part)
                };
                manifest.push(json!({
                    "key": key,
                    "kind": kind,
                    "start": start,
                    "end": start + length,
                    "part": part.part.get(),
                    "keys": part.key_count,
                    "bytes": zip.len(),
                    "sha256": hex::encode(Sha256::digest(&zip)),
                }));
                if kind == "hourly" {
                    published.hourly.push(key.clone());
                } else {
                    published.daily.push(key.clone());
                }
                published.bucket.insert(key, zip);
            }
        }
        let index = |keys: &[String]| {
            keys.iter()
                .map(|key| format!("{key}\n"))
                .collect::<String>()
        };
        published
            .bucket
            .insert("CA/index.txt", index(&published.hourly));
        published
            .bucket
            .insert("CA/daily/index.txt", index(&published.daily));
        let newest_end = self.hours.keys().last().map_or(0, |start| start + HOUR);
        published.bucket.insert(
            "CA/index.json",
            serde_json::to_vec(&json!({
                "region": "CA",
                "generated_at": newest_end + 60,
                "files": manifest,
            }))
            .unwrap(),
        );
        published.bucket.insert(
            "exposure-configuration/CA.json",
            "{\"minimumRiskScore\": 1}",
        );
        self.publish_retrieval(&mut published);
        published
    }

    /// The deployed apps' objects (DESIGN §4.3) as the pass that published the newest hour
    /// leaves them, on the day of that hour: each day's keys up to that hour, and `00000`
    /// with the keys of the 15 days before that day still relevant at its end.
    fn publish_retrieval(&self, published: &mut Published) {
        let newest_end = self.hours.keys().last().unwrap() + HOUR;
        let today = (newest_end - HOUR) / DAY;
        let first_day = (today - 14).max(self.hours.keys().next().unwrap() / DAY);
        for day in first_day..=today {
            let start = day * DAY;
            let end = newest_end.min(start + DAY);
            let keys = self.keys_between(start, end);
            let kind = ObjectKind::RetrievalDay {
                day: day as i64,
                last_closed_hour: (end / HOUR) as i64 - 1,
            };
            let object = retrieval_day_key("302", day as i64);
            published.bucket.insert_served(
                object.clone(),
                self.retrieval_zip(start, end, keys),
                kind.cache_control(),
            );
            published.retrieval.push((object, start));
        }
        let (start, end) = ((today - 15) * DAY, today * DAY);
        let keys = self
            .keys_between(start, end)
            .into_iter()
            .filter(|key| {
                let expiry = key_expiry(key.rolling_start_interval_number, key.rolling_period);
                is_relevant(expiry, end as i64)
            })
            .collect();
        published.bucket.insert_served(
            retrieval_bundle_key("302"),
            self.retrieval_zip(start, end, keys),
            ObjectKind::RetrievalBundle.cache_control(),
        );
        published
            .retrieval
            .push((retrieval_bundle_key("302"), start));
    }

    /// The keys of the hours from `start` to `end`, cut ones included.
    fn keys_between(&self, start: u64, end: u64) -> Vec<DiagnosisKey> {
        self.cut
            .range(start..end)
            .chain(self.hours.range(start..end))
            .flat_map(|(_, keys)| keys.iter().cloned())
            .collect()
    }

    /// A retrieval object: one signed file, however many keys (the apps fetch one object).
    fn retrieval_zip(&self, start: u64, end: u64, mut keys: Vec<DiagnosisKey>) -> Vec<u8> {
        let window = ExportWindow::growing(region(), start, end).unwrap();
        let signing_keys = self.keys_for(start);
        let signers = signing_keys.signer_infos();
        let mut parts =
            render_window(window, &signers, PLATFORM_MAX_KEYS_PER_FILE, &mut keys).unwrap();
        assert_eq!(parts.len(), 1);
        let part = parts.remove(0);
        let sig = sign_export(&part.export_bin, signing_keys).unwrap();
        zip_export(&part.export_bin, &sig).unwrap()
    }
}

impl Published {
    /// Every signed object with its window's start: the listed files and the retrieval
    /// objects.
    fn signed_objects(&self) -> Vec<(String, u64)> {
        self.hourly
            .iter()
            .chain(&self.daily)
            .map(|key| (key.clone(), start_of(key)))
            .chain(self.retrieval.iter().cloned())
            .collect()
    }

    fn text(&self, key: &str) -> String {
        String::from_utf8(self.bucket.object(key).unwrap().to_vec()).unwrap()
    }

    /// The first hourly file of the day after the complete one, which holds keys.
    fn an_hourly_file_of_the_next_day(&self) -> String {
        let prefix = format!("CA/{}-", DAY_START + DAY);
        self.hourly
            .iter()
            .find(|key| key.starts_with(&prefix))
            .unwrap()
            .clone()
    }
}

fn options(public_keys: Vec<PublicKey>) -> VerifyOptions {
    VerifyOptions {
        public_keys,
        ..VerifyOptions::default()
    }
}

async fn verify(source: &dyn Source, public_keys: Vec<PublicKey>) -> VerifyReport {
    verify_bucket(source, &options(public_keys)).await.unwrap()
}

/// The one violation of `report`.
fn the_violation(report: &VerifyReport) -> &Finding {
    assert_eq!(report.violations.len(), 1, "{report}");
    &report.violations[0]
}

/// The window start of an export file's object key.
fn start_of(key: &str) -> u64 {
    let file = key.rsplit('/').next().unwrap();
    file.split('-').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_correct_bucket_verifies_with_both_public_keys() {
    let spec = Spec::new();
    let published = spec.publish();
    let report = verify(&published.bucket, vec![public_key_2(), public_key_1()]).await;
    assert!(report.is_ok(), "{report}");
    assert!(report.notes.is_empty(), "{report}");

    let hourly_keys: usize = spec.hours.values().map(Vec::len).sum();
    let daily_keys: usize = spec.days.values().map(Vec::len).sum();
    assert_eq!(report.hourly_files, published.hourly.len());
    assert!(
        report.hourly_files > HOURS as usize,
        "some hours must be split into parts: {report}"
    );
    assert_eq!(report.daily_files, published.daily.len());
    assert!(report.daily_files > 1, "the day must be split into parts");
    assert_eq!(report.keys_hourly, hourly_keys as u64);
    assert_eq!(report.keys_daily, daily_keys as u64);
    let zips: u64 = published
        .hourly
        .iter()
        .chain(&published.daily)
        .map(|key| published.bucket.object(key).unwrap().len() as u64)
        .sum();
    assert_eq!(report.bytes, zips);
    let files = published.signed_objects().len() as u64;
    assert_eq!(report.retrieval.len(), published.retrieval.len());
    assert_eq!(
        report.signers,
        [
            SignerCount {
                public_key: public_key_2(),
                files
            },
            SignerCount {
                public_key: public_key_1(),
                files
            },
        ]
    );
    let summary = report.to_string();
    assert!(summary.contains("bytes per key: OK"), "{summary}");
    assert!(
        summary.contains(&format!(
            "public key 2 of 2 ({:?}) signs {files} file(s)",
            public_key_1()
        )),
        "{summary}"
    );

    // Either key alone: a file also signed by another key is fine.
    for key in [public_key_1(), public_key_2()] {
        let report = verify(&published.bucket, vec![key]).await;
        assert!(report.is_ok(), "{report}");
    }
    // No key: everything but the signatures is checked, and the report says so.
    let report = verify(&published.bucket, Vec::new()).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.notes,
        ["no public key given: signatures were not verified"]
    );
}

#[tokio::test]
async fn one_changed_byte_of_one_zip_is_reported() {
    let mut published = Spec::new().publish();
    let key = published.an_hourly_file_of_the_next_day();
    let mut zip = published.bucket.object(&key).unwrap().to_vec();
    let middle = zip.len() / 2;
    zip[middle] ^= 0x01;
    published.bucket.insert(key.clone(), zip);

    let report = verify(&published.bucket, vec![public_key_1(), public_key_2()]).await;
    assert!(!report.is_ok());
    assert!(
        report
            .violations
            .iter()
            .all(|finding| finding.object() == key
                || matches!(finding, Finding::ManifestMismatch { file, .. } if *file == key)),
        "{report}"
    );
    assert!(
        report.violations.iter().any(|finding| matches!(
            finding,
            Finding::ManifestMismatch { object, file, field: ManifestField::Sha256, .. }
                if object == "CA/index.json" && *file == key
        )),
        "{report}"
    );
    // The content itself is found broken too, not only the manifest.
    assert!(report.violations.len() >= 2, "{report}");
}

#[tokio::test]
async fn a_deleted_object_is_reported() {
    let mut published = Spec::new().publish();
    let key = published.an_hourly_file_of_the_next_day();
    published.bucket.remove(&key);
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert_eq!(
        report.violations,
        [Finding::ListedButMissing {
            object: key.clone(),
            index: "CA/index.txt".to_owned(),
        }]
    );
    assert_eq!(
        report.violations[0].to_string(),
        format!("{key}: listed in CA/index.txt but the object does not exist")
    );

    // A missing part of the daily file: reported once, and the day is not compared (which
    // would only repeat it).
    let mut published = Spec::new().publish();
    let daily = published.daily[1].clone();
    published.bucket.remove(&daily);
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert_eq!(
        report.violations,
        [Finding::ListedButMissing {
            object: daily.clone(),
            index: "CA/daily/index.txt".to_owned(),
        }]
    );
    assert_eq!(
        report.notes,
        [format!(
            "{} (and its other parts): not compared with hourly files: some of the day's files \
             could not be read",
            published.daily[0]
        )]
    );

    // A missing index is reported and the rest is still checked.
    let mut published = Spec::new().publish();
    published.bucket.remove("CA/daily/index.txt");
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert!(
        report.violations.contains(&Finding::Missing {
            object: "CA/daily/index.txt".to_owned()
        }),
        "{report}"
    );
    assert!(
        report.violations.contains(&Finding::ManifestUnindexed {
            object: "CA/index.json".to_owned(),
            file: published.daily[0].clone(),
        }),
        "{report}"
    );
}

#[tokio::test]
async fn a_key_published_in_two_hourly_files_is_reported() {
    let mut spec = Spec::new();
    // From the first hour (the day before) into the last (the day after): neither day has a
    // daily file, so only the duplicate check can notice.
    let first = spec.hours[&FIRST_HOUR][0].clone();
    let last_hour = FIRST_HOUR + (HOURS - 1) * HOUR;
    spec.hours.get_mut(&last_hour).unwrap().push(first.clone());
    let published = spec.publish();
    let report = verify(&published.bucket, vec![public_key_1(), public_key_2()]).await;
    match the_violation(&report) {
        Finding::KeyDataRepeated {
            object,
            kind: Kind::Hourly,
            count: 1,
            key_data,
            first_seen_in: Some(first_seen_in),
            ..
        } => {
            assert_eq!(start_of(object), last_hour, "{report}");
            assert_eq!(key_data, first.key_data.as_bytes());
            assert_eq!(start_of(first_seen_in), FIRST_HOUR, "{report}");
        }
        other => panic!("expected a repeated key_data, got {other}"),
    }
}

#[tokio::test]
async fn a_daily_file_missing_a_key_is_reported() {
    let mut spec = Spec::new();
    let removed = spec.days.get_mut(&DAY_START).unwrap().remove(5);
    let published = spec.publish();
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert_eq!(
        the_violation(&report),
        &Finding::DayNotUnion {
            object: format!("CA/daily/{DAY_START}-{}-00001.zip", DAY_START + DAY),
            parts: true,
            missing: 1,
            first_missing: Some(*removed.key_data.as_bytes()),
            extra: 0,
            first_extra: None,
        }
    );

    // A changed field is a difference too, even with the same key_data.
    let mut spec = Spec::new();
    let key = &mut spec.days.get_mut(&DAY_START).unwrap()[3];
    key.transmission_risk_level = (key.transmission_risk_level + 1) % 8;
    let report = verify(&spec.publish().bucket, vec![public_key_1()]).await;
    assert!(
        matches!(
            the_violation(&report),
            Finding::DayNotUnion {
                missing: 1,
                extra: 1,
                ..
            }
        ),
        "{report}"
    );
}

#[tokio::test]
async fn a_wrong_manifest_sha256_is_reported() {
    let mut published = Spec::new().publish();
    let mut manifest: Value = serde_json::from_str(&published.text("CA/index.json")).unwrap();
    let entry = &mut manifest["files"][7];
    let key = entry["key"].as_str().unwrap().to_owned();
    entry["sha256"] = json!("0".repeat(64));
    published
        .bucket
        .insert("CA/index.json", serde_json::to_vec(&manifest).unwrap());
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    let zip = published.bucket.object(&key).unwrap();
    assert_eq!(
        the_violation(&report),
        &Finding::ManifestMismatch {
            object: "CA/index.json".to_owned(),
            file: key.clone(),
            field: ManifestField::Sha256,
            said: "0".repeat(64),
            actual: hex::encode(Sha256::digest(zip)),
        }
    );
}

#[tokio::test]
async fn an_index_out_of_order_is_reported() {
    let mut published = Spec::new().publish();
    let mut lines: Vec<String> = published.hourly.clone();
    lines.swap(4, 9);
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    published.bucket.insert("CA/index.txt", text);
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert!(!report.is_ok());
    assert!(
        report.violations.iter().all(|finding| matches!(
            finding,
            Finding::IndexOrder { object, .. } if object == "CA/index.txt"
        )),
        "{report}"
    );

    // A missing final newline is fine.
    let mut published = Spec::new().publish();
    let text = published.text("CA/index.txt");
    published
        .bucket
        .insert("CA/index.txt", text.trim_end().to_owned());
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn a_missing_hour_is_reported() {
    let mut spec = Spec::new();
    let gone = DAY_START + DAY + HOUR;
    spec.hours.remove(&gone);
    let report = verify(&spec.publish().bucket, vec![public_key_1()]).await;
    assert_eq!(
        the_violation(&report),
        &Finding::WindowsMissing {
            object: "CA/index.txt".to_owned(),
            kind: Kind::Hourly,
            count: 1,
            from: gone,
            to: gone + HOUR,
        }
    );

    // An hour missing inside the complete day: a gap, and neither the daily file nor the
    // day's retrieval objects can be compared.
    let mut spec = Spec::new();
    let gone = DAY_START + 5 * HOUR;
    spec.hours.remove(&gone);
    let report = verify(&spec.publish().bucket, vec![public_key_1()]).await;
    assert_eq!(report.violations.len(), 1, "{report}");
    let day = DAY_START / DAY;
    assert_eq!(
        report.notes,
        [
            format!("retrieve/302/{day}: keys not compared: hour {gone} is not listed"),
            format!(
                "CA/daily/{DAY_START}-{}-00001.zip (and its other parts): not compared with \
                 hourly files: 1 of the day's hours are missing from CA/index.txt",
                DAY_START + DAY
            ),
            format!("retrieve/302/00000: keys not compared: hour {gone} is not listed"),
        ],
        "{report}"
    );
}

#[tokio::test]
async fn a_file_signed_by_another_key_is_reported() {
    let published = Spec::new().signed_by_key_1_only().publish();
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert!(report.is_ok(), "{report}");

    let report = verify(&published.bucket, vec![public_key_2()]).await;
    let mut all: Vec<String> = published
        .signed_objects()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    all.sort_unstable();
    let files = all.len();
    let mut named = Vec::new();
    for finding in &report.violations {
        match finding {
            Finding::NotSignedByGivenKey { object, given: 1 } => named.push(object.clone()),
            Finding::KeySignsNothing {
                object,
                key_number: 1,
                files: read,
                ..
            } => {
                assert_eq!(object, "CA/index.txt");
                assert_eq!(*read, files as u64);
            }
            other => panic!("unexpected finding {other}"),
        }
    }
    named.sort_unstable();
    assert_eq!(named, all);
    assert_eq!(report.violations.len(), files + 1, "{report}");
    assert!(
        report.violations[0]
            .to_string()
            .ends_with(": no signature in export.sig verifies over export.bin with any of the 1 given public key(s)"),
        "{report}"
    );
    // Key 1 signs every file, but key 2, also given, signs none: the rotation has not
    // started, which the report says once.
    let report = verify(&published.bucket, vec![public_key_1(), public_key_2()]).await;
    assert!(
        matches!(
            the_violation(&report),
            Finding::KeySignsNothing { key_number: 2, .. }
        ),
        "{report}"
    );
}

/// The windows of a rotation: before `BOTH_FROM` key 1 alone signs, then both keys, and from
/// `NEW_FROM` key 2 alone (RUNBOOK §5).
const BOTH_FROM: u64 = DAY_START + 12 * HOUR;
const NEW_FROM: u64 = DAY_START + DAY;

fn rotating_spec() -> Spec {
    let mut spec = Spec::new();
    spec.signing_keys = vec![
        (0, old_key()),
        (BOTH_FROM, both_keys()),
        (NEW_FROM, new_key()),
    ];
    spec
}

#[tokio::test]
async fn during_a_key_rotation_both_keys_pass_files_signed_by_old_both_and_new() {
    let published = rotating_spec().publish();
    let files = published.signed_objects();
    let count = |from: u64, to: u64| {
        files
            .iter()
            .filter(|(_, start)| (from..to).contains(start))
            .count() as u64
    };
    let (old, both, new) = (
        count(0, BOTH_FROM),
        count(BOTH_FROM, NEW_FROM),
        count(NEW_FROM, u64::MAX),
    );
    assert!(old > 0 && both > 0 && new > 0, "{old} {both} {new}");

    let report = verify(&published.bucket, vec![public_key_1(), public_key_2()]).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.signers,
        [
            SignerCount {
                public_key: public_key_1(),
                files: old + both
            },
            SignerCount {
                public_key: public_key_2(),
                files: both + new
            },
        ]
    );

    // One key alone: the files the other signs alone are reported, each by name.
    for (key, unsigned_from, unsigned_to) in [
        (public_key_1(), NEW_FROM, u64::MAX),
        (public_key_2(), 0, BOTH_FROM),
    ] {
        let report = verify(&published.bucket, vec![key]).await;
        let mut reported: Vec<&str> = report
            .violations
            .iter()
            .map(|finding| match finding {
                Finding::NotSignedByGivenKey { object, given: 1 } => object.as_str(),
                other => panic!("unexpected finding {other}"),
            })
            .collect();
        reported.sort_unstable();
        let mut expected: Vec<&str> = files
            .iter()
            .filter(|(_, start)| (unsigned_from..unsigned_to).contains(start))
            .map(|(key, _)| key.as_str())
            .collect();
        expected.sort_unstable();
        assert_eq!(reported, expected);
    }
}

#[tokio::test]
async fn a_bad_signature_labelled_as_a_given_key_is_reported_even_beside_a_good_one() {
    let mut published = rotating_spec().publish();
    // A file signed by both: its v1 signature (second, newest first) is replaced by one key 1
    // made over other bytes, which is valid DER but does not verify.
    let key = published
        .hourly
        .iter()
        .find(|key| (BOTH_FROM..NEW_FROM).contains(&start_of(key)))
        .unwrap()
        .clone();
    let entries = unzip_export(published.bucket.object(&key).unwrap()).unwrap();
    let mut list = TekSignatureList::decode(entries.export_sig.as_slice()).unwrap();
    assert_eq!(
        list.signatures[1]
            .signature_info
            .as_ref()
            .unwrap()
            .verification_key_version
            .as_deref(),
        Some("v1")
    );
    let elsewhere = sign_export(b"other bytes", &old_key()).unwrap();
    list.signatures[1].signature = TekSignatureList::decode(elsewhere.as_slice())
        .unwrap()
        .signatures
        .remove(0)
        .signature;
    let zip = zip_export(&entries.export_bin, &list.encode_to_vec()).unwrap();
    published.bucket.insert(key.clone(), zip);

    let report = verify(&published.bucket, vec![public_key_1(), public_key_2()]).await;
    let not_verifying: Vec<&Finding> = report
        .violations
        .iter()
        .filter(|finding| !matches!(finding, Finding::ManifestMismatch { .. }))
        .collect();
    assert_eq!(
        not_verifying,
        [&Finding::SignatureDoesNotVerify {
            object: key.clone(),
            index: 1,
            key_version: Some("v1".to_owned()),
            key_id: Some("302".to_owned()),
            key_number: 1,
            public_key: public_key_1(),
        }],
        "{report}"
    );
    // The manifest's size and hash of the rewritten file are the only other findings.
    assert!(
        report
            .violations
            .iter()
            .all(|finding| finding.object() == key
                || matches!(finding, Finding::ManifestMismatch { file, .. } if *file == key)),
        "{report}"
    );
}

#[tokio::test]
async fn all_violations_are_collected_in_one_run() {
    let mut spec = Spec::new();
    spec.hours.remove(&(DAY_START + DAY + HOUR));
    spec.days.get_mut(&DAY_START).unwrap().pop();
    let mut published = spec.publish();
    let key = published.an_hourly_file_of_the_next_day();
    published.bucket.remove(&key);
    let report = verify(&published.bucket, vec![public_key_2()]).await;
    let has = |wanted: fn(&Finding) -> bool| report.violations.iter().any(wanted);
    assert!(
        has(|finding| matches!(finding, Finding::WindowsMissing { count: 1, .. })),
        "{report}"
    );
    assert!(
        has(|finding| matches!(finding, Finding::DayNotUnion { .. })),
        "{report}"
    );
    assert!(
        has(|finding| matches!(finding, Finding::ListedButMissing { .. })),
        "{report}"
    );
}

#[tokio::test]
async fn a_daily_file_of_a_day_cut_by_the_index_window_is_a_note() {
    let mut spec = Spec::new();
    let previous_day = DAY_START - DAY;
    spec.days.insert(
        previous_day,
        spec.hours
            .range(previous_day..DAY_START)
            .flat_map(|(_, keys)| keys.iter().cloned())
            .collect(),
    );
    let report = verify(&spec.publish().bucket, vec![public_key_1()]).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.notes,
        [format!(
            "CA/daily/{previous_day}-{DAY_START}-00001.zip: not compared with hourly files: the \
             day's first 21 hour(s) are no longer in CA/index.txt"
        )]
    );
}

/// The retrieval findings of `report`, with the object each names.
fn retrieval_findings(report: &VerifyReport) -> Vec<(&str, &RetrievalProblem)> {
    report
        .violations
        .iter()
        .filter_map(|finding| match finding {
            Finding::Retrieval { object, problem } => Some((object.as_str(), problem)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_day_cut_from_index_txt_is_compared_through_its_daily_file() {
    let spec = Spec::spanning_fourteen_days();
    let first_day = (DAY_START + DAY) / DAY - 14;
    let published = spec.publish();
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert!(report.is_ok(), "{report}");
    // The day object of the cut day and 00000 were compared: the only note is the daily
    // file's own.
    assert_eq!(report.retrieval.len(), 16, "{report}");
    assert_eq!(report.notes.len(), 1, "{report}");

    // With a key of a cut hour gone from the daily file, the day's object holds a key the
    // bucket no longer shows published; 00000 too, when the key is still relevant at its end.
    let mut spec = Spec::spanning_fourteen_days();
    let gone = spec.days.get_mut(&(first_day * DAY)).unwrap().remove(0);
    let report = verify(&spec.publish().bucket, vec![public_key_1()]).await;
    let object = format!("retrieve/302/{first_day:05}");
    let findings = retrieval_findings(&report);
    assert!(
        findings.iter().any(|(named, problem)| *named == object
            && matches!(problem, RetrievalProblem::ForeignKeys(KeyCount { count: 1, first, .. })
                if *first == *gone.key_data.as_bytes())),
        "{report}"
    );
    assert!(
        findings
            .iter()
            .all(|(named, _)| *named == object || *named == "retrieve/302/00000"),
        "{report}"
    );
}

#[tokio::test]
async fn retrieval_objects_are_each_checked_in_memory_too() {
    let published = Spec::new().publish();
    let today = (DAY_START + DAY) / DAY;
    let object = format!("retrieve/302/{today:05}");

    // Stored without headers (a folder): not checked, and the report says so once.
    let mut bucket = published.bucket.clone();
    let bytes = bucket.object(&object).unwrap().clone();
    bucket.insert(object.clone(), bytes.clone());
    let report = verify(&bucket, vec![public_key_1()]).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        report.notes,
        [format!(
            "Cache-Control of the retrieval objects not checked: {} keeps no headers",
            bucket.describe()
        )]
    );

    // Another day's object under today's name: no window today's can have, and its keys are
    // not compared with today's.
    let yesterday = bucket
        .object(&format!("retrieve/302/{:05}", today - 1))
        .unwrap()
        .clone();
    bucket.insert_served(
        object.clone(),
        yesterday,
        "public, max-age=3600, max-stale=600",
    );
    let report = verify(&bucket, vec![public_key_1()]).await;
    assert!(
        matches!(
            retrieval_findings(&report)[..],
            [(named, RetrievalProblem::NotItsWindow { start: Some(start), .. })]
                if named == object && *start == DAY_START
        ),
        "{report}"
    );

    // A bundle from the day before: out of step, and the days it needs are still compared.
    let mut spec = Spec::new();
    spec.hours.pop_last();
    spec.hours.pop_last();
    spec.hours.pop_last();
    let stale = spec
        .publish()
        .bucket
        .object("retrieve/302/00000")
        .unwrap()
        .clone();
    let mut bucket = published.bucket.clone();
    bucket.insert_served(
        "retrieve/302/00000",
        stale,
        "public, max-age=3600, max-stale=600",
    );
    let report = verify(&bucket, vec![public_key_1()]).await;
    assert!(
        matches!(
            retrieval_findings(&report)[..],
            [("retrieve/302/00000", RetrievalProblem::OutOfStep { found, expected })]
                if found.start + DAY == expected.start
        ),
        "{report}"
    );
    assert!(
        report.violations[0].to_string().contains("is behind"),
        "{report}"
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "diagnosis-verify-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_bucket_in_a_folder_verifies_through_paths_and_file_urls() {
    let published = Spec::new().publish();
    let dir = temp_dir("folder");
    for key in published.bucket.keys() {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, published.bucket.object(key).unwrap()).unwrap();
    }
    let keys = vec![public_key_1(), public_key_2()];
    for location in [
        dir.display().to_string(),
        format!("file://{}", dir.display()),
    ] {
        let source = source_for(&location).unwrap();
        assert_eq!(source.describe(), format!("folder {}", dir.display()));
        let report = verify(source.as_ref(), keys.clone()).await;
        assert!(report.is_ok(), "{location}: {report}");
    }

    let key = published.an_hourly_file_of_the_next_day();
    std::fs::remove_file(dir.join(&key)).unwrap();
    let report = verify(&DirectorySource::new(&dir), keys).await;
    assert_eq!(
        report.violations,
        [Finding::ListedButMissing {
            object: key,
            index: "CA/index.txt".to_owned(),
        }]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A tiny static server: `/bucket/{key}` serves the bucket (404 when missing),
/// `/forbidden/…` answers 403, `/moved/{key}` redirects to `/bucket/{key}` and `/broken/…`
/// answers 500.
async fn serve(bucket: MemorySource) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let bucket = Arc::new(bucket);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let bucket = Arc::clone(&bucket);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let bucket = Arc::clone(&bucket);
                    async move { Ok::<_, Infallible>(respond(&bucket, request.uri().path())) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// Answers with the object, and the `Cache-Control` it was stored with, as an object store's
/// web endpoint does.
fn respond(bucket: &MemorySource, path: &str) -> Response<Full<Bytes>> {
    let mut cache_control = None;
    let (status, body) = match path.strip_prefix("/bucket/") {
        Some(key) => match bucket.object(key) {
            Some(bytes) => {
                cache_control = bucket.cache_control(key);
                (StatusCode::OK, bytes.clone())
            }
            None => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found")),
        },
        None if path.starts_with("/forbidden/") => {
            (StatusCode::FORBIDDEN, Bytes::from_static(b"denied"))
        }
        // A redirect to the object itself, which a client that follows it would hand out.
        None if path.starts_with("/moved/") => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"moved")));
            *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
            response.headers_mut().insert(
                hyper::header::LOCATION,
                hyper::header::HeaderValue::from_str(&path.replacen("/moved/", "/bucket/", 1))
                    .unwrap(),
            );
            return response;
        }
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"broken"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if let Some(value) = cache_control {
        response.headers_mut().insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

#[tokio::test]
async fn a_bucket_served_over_http_verifies() {
    let mut published = Spec::new().publish();
    let tampered = published.an_hourly_file_of_the_next_day();
    let good = published.bucket.clone();
    published.bucket.remove(&tampered);
    let good_address = serve(good).await;
    let tampered_address = serve(published.bucket).await;

    let source = source_for(&format!("http://{good_address}/bucket/")).unwrap();
    assert_eq!(source.describe(), format!("http://{good_address}/bucket"));
    let keys = vec![public_key_1(), public_key_2()];
    let report = verify(source.as_ref(), keys.clone()).await;
    assert!(report.is_ok(), "{report}");

    let source = HttpSource::new(&format!("http://{tampered_address}/bucket")).unwrap();
    let report = verify(&source, keys).await;
    assert_eq!(
        report.violations,
        [Finding::ListedButMissing {
            object: tampered,
            index: "CA/index.txt".to_owned(),
        }]
    );

    assert_eq!(source.get("CA/no-such-object").await.unwrap(), None);
    let forbidden = HttpSource::new(&format!("http://{good_address}/forbidden")).unwrap();
    assert_eq!(forbidden.get("CA/index.txt").await.unwrap(), None);
    let broken = HttpSource::new(&format!("http://{good_address}/broken")).unwrap();
    match broken.get("CA/index.txt").await {
        Err(error @ VerifyError::HttpStatus { status: 500, .. }) => assert_eq!(
            error.to_string(),
            format!("GET http://{good_address}/broken/CA/index.txt: unexpected HTTP status 500")
        ),
        other => panic!("expected a 500 error, got {other:?}"),
    }
    // A failing source ends the run as an error, not as a report.
    assert!(verify_bucket(&broken, &options(Vec::new())).await.is_err());
}

/// A redirect is an answer to report, not a way to the object: the object is judged where
/// the location says it is.
#[tokio::test]
async fn a_redirect_is_not_followed() {
    let published = Spec::new().publish();
    let address = serve(published.bucket).await;
    let direct = HttpSource::new(&format!("http://{address}/bucket")).unwrap();
    assert!(direct.get("CA/index.txt").await.unwrap().is_some());
    let moved = HttpSource::new(&format!("http://{address}/moved")).unwrap();
    match moved.get("CA/index.txt").await {
        Err(error @ VerifyError::HttpStatus { status: 301, .. }) => assert_eq!(
            error.to_string(),
            format!("GET http://{address}/moved/CA/index.txt: unexpected HTTP status 301")
        ),
        other => panic!("expected the redirect as an error, got {other:?}"),
    }
}

/// A server that answers every request with `head` and then `MAX_OBJECT_BYTES` + 1 bytes of
/// body, in HTTP/1.1 chunks when `chunked`, for as long as the client reads.
async fn serve_oversized(head: String, chunked: bool) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let head = head.clone();
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                if stream.read(&mut request).await.is_err() {
                    return;
                }
                let block = vec![0_u8; 1 << 20];
                let mut left = MAX_OBJECT_BYTES + 1;
                let mut answer = head.into_bytes();
                while left > 0 {
                    let size = left.min(block.len() as u64) as usize;
                    if chunked {
                        answer.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                    }
                    answer.extend_from_slice(&block[..size]);
                    if chunked {
                        answer.extend_from_slice(b"\r\n");
                    }
                    // The client stops reading at the limit: then the write fails.
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                    answer.clear();
                    left -= size as u64;
                }
                let _ = stream
                    .write_all(if chunked { &b"0\r\n\r\n"[..] } else { b"" })
                    .await;
            });
        }
    });
    address
}

/// An object past `MAX_OBJECT_BYTES` is refused whether its length is declared or not.
#[tokio::test]
async fn an_object_larger_than_the_limit_is_refused_over_http() {
    let declared = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        MAX_OBJECT_BYTES + 1
    );
    let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned();
    for (head, is_chunked) in [(declared, false), (chunked, true)] {
        let address = serve_oversized(head, is_chunked).await;
        let source = HttpSource::new(&format!("http://{address}/bucket")).unwrap();
        match source.get("CA/index.txt").await {
            Err(error @ VerifyError::TooLarge { .. }) => assert_eq!(
                error.to_string(),
                format!(
                    "http://{address}/bucket/CA/index.txt is larger than {MAX_OBJECT_BYTES} bytes"
                )
            ),
            other => panic!("chunked {is_chunked}: expected too large, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_server_is_an_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let source = HttpSource::new(&format!("http://{address}")).unwrap();
    match source.get("CA/index.txt").await {
        Err(error @ VerifyError::Http { .. }) => assert!(
            error
                .to_string()
                .starts_with(&format!("GET http://{address}/CA/index.txt: ")),
            "{error}"
        ),
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[test]
fn source_for_parses_paths_and_urls() {
    fn error(location: &str) -> VerifyError {
        match source_for(location) {
            Ok(source) => panic!("{location}: accepted as {}", source.describe()),
            Err(error) => error,
        }
    }
    fn reason(location: &str) -> String {
        match error(location) {
            VerifyError::UnsupportedLocation {
                location: named,
                reason,
            } => {
                assert_eq!(named, shown_location(location));
                reason
            }
            other => panic!("{location}: expected an unsupported location, got {other}"),
        }
    }
    assert_eq!(
        reason("ftp://bucket/prefix"),
        "only folders, file://, http:// and https:// URLs can be read here"
    );
    // This crate reads no object store: `diagnosis-exporter verify` reads those itself.
    for location in [
        "s3://bucket/prefix",
        "gs://bucket",
        "az://container",
        "memory://",
    ] {
        assert_eq!(
            reason(location),
            "only folders, file://, http:// and https:// URLs can be read here"
        );
    }
    assert!(reason("file://host/x").contains("file:///path"));
    assert!(matches!(
        error("file:///no/such/folder/here"),
        VerifyError::Io { path, .. } if path == Path::new("/no/such/folder/here")
    ));
    reason("http://");
    assert!(reason("http://host/x?query=1").contains("the URL has a query"));
    // The query is not repeated: it may carry a token.
    assert_eq!(shown_location("http://host/x?query=1"), "http://host/x?..");
    assert!(reason("https://host/x?query=1").contains("the URL has a query"));
    // A fragment would be dropped from the requests but kept in the CDN's joined paths.
    assert!(reason("http://host/x#part").contains("the URL has a fragment"));
    assert!(reason("https://host/x#").contains("the URL has a fragment"));
    // An `@` after the host is refused, the message saying how a path writes one.
    assert!(reason("https://host/v1@2/").contains("write it %40 in a path"));
    assert!(source_for("https://host/v1%402/").is_ok());
    assert_eq!(reason(""), "empty path");

    let dir = temp_dir("source-for");
    let file = dir.join("a file");
    std::fs::write(&file, "x").unwrap();
    assert_eq!(reason(&file.display().to_string()), "not a folder");
    let escaped = format!("file://{}", dir.display()).replace(' ', "%20");
    assert_eq!(
        source_for(&escaped).unwrap().describe(),
        format!("folder {}", dir.display())
    );
    let spaced = dir.join("a b");
    std::fs::create_dir(&spaced).unwrap();
    assert_eq!(
        source_for(&format!("file://{}/a%20b", dir.display()))
            .unwrap()
            .describe(),
        format!("folder {}", spaced.display())
    );
    assert_eq!(
        source_for(&format!("file://localhost{}", dir.display()))
            .unwrap()
            .describe(),
        format!("folder {}", dir.display())
    );
    assert_eq!(
        source_for("http://127.0.0.1:9/bucket").unwrap().describe(),
        "http://127.0.0.1:9/bucket"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A test CA, an unrelated one, and a server certificate the first signed (SAN IP:127.0.0.1
/// and DNS:localhost), made by openssl for this test run.
struct TestCertificates {
    dir: PathBuf,
}

impl TestCertificates {
    fn generate() -> Self {
        let dir = temp_dir("tls");
        let openssl = |args: &[&str]| {
            let output = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl is needed to make the test certificates");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let new_ca = |name: &str, subject: &str| {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                subject,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ]);
        };
        new_ca("ca", "/CN=verify test CA");
        new_ca("other-ca", "/CN=unrelated test CA");
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        Self { dir }
    }

    fn roots(&self, ca: &str) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.dir.join(ca)).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    }

    fn server_config(&self) -> rustls::ServerConfig {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.dir.join("server.crt"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(self.dir.join("server.key")).unwrap();
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap()
    }
}

impl Drop for TestCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// [`serve`] over TLS with `config`.
async fn serve_tls(bucket: MemorySource, config: rustls::ServerConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let bucket = Arc::new(bucket);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let bucket = Arc::clone(&bucket);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |request: Request<Incoming>| {
                    let bucket = Arc::clone(&bucket);
                    async move { Ok::<_, Infallible>(respond(&bucket, request.uri().path())) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

#[tokio::test]
async fn a_bucket_served_over_https_verifies() {
    let certificates = TestCertificates::generate();
    let mut published = Spec::new().publish();
    let address = serve_tls(published.bucket.clone(), certificates.server_config()).await;
    let keys = vec![public_key_1(), public_key_2()];
    for host in [address.to_string(), format!("localhost:{}", address.port())] {
        let source = HttpSource::with_roots(
            &format!("https://{host}/bucket/"),
            certificates.roots("ca.crt"),
        )
        .unwrap();
        assert_eq!(source.describe(), format!("https://{host}/bucket"));
        let report = verify(&source, keys.clone()).await;
        assert!(report.is_ok(), "{host}: {report}");
    }

    let tampered = published.an_hourly_file_of_the_next_day();
    published.bucket.remove(&tampered);
    let address = serve_tls(published.bucket, certificates.server_config()).await;
    let source = HttpSource::with_roots(
        &format!("https://{address}/bucket"),
        certificates.roots("ca.crt"),
    )
    .unwrap();
    let report = verify(&source, keys).await;
    assert_eq!(
        report.violations,
        [Finding::ListedButMissing {
            object: tampered,
            index: "CA/index.txt".to_owned(),
        }]
    );
    let broken = HttpSource::with_roots(
        &format!("https://{address}/broken"),
        certificates.roots("ca.crt"),
    )
    .unwrap();
    assert!(matches!(
        broken.get("CA/index.txt").await,
        Err(VerifyError::HttpStatus { status: 500, .. })
    ));
}

#[tokio::test]
async fn a_server_signed_by_an_unknown_ca_is_refused() {
    let certificates = TestCertificates::generate();
    let address = serve_tls(Spec::new().publish().bucket, certificates.server_config()).await;
    let url = format!("https://{address}/bucket");
    // Trusting another CA, and trusting the system's certificates (which do not hold the
    // test CA): both refuse, saying why.
    let other_ca = HttpSource::with_roots(&url, certificates.roots("other-ca.crt")).unwrap();
    let system = source_for(&url).unwrap();
    for source in [&other_ca as &dyn Source, system.as_ref()] {
        match source.get("CA/index.txt").await {
            Err(error @ VerifyError::UntrustedServer { .. }) => {
                let text = error.to_string();
                assert!(
                    text.starts_with(&format!(
                        "GET {url}/CA/index.txt: the server's certificate is not trusted ("
                    )),
                    "{text}"
                );
                assert!(text.contains("UnknownIssuer"), "{text}");
                assert!(text.contains("SSL_CERT_FILE"), "{text}");
            }
            other => panic!("expected an untrusted server, got {other:?}"),
        }
        assert!(verify_bucket(source, &options(Vec::new())).await.is_err());
    }
    // Plain HTTP to the TLS port is not mistaken for a missing object either.
    let plain = HttpSource::new(&format!("http://{address}/bucket")).unwrap();
    assert!(plain.get("CA/index.txt").await.is_err());
}
