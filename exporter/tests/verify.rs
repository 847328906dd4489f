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
use diagnosis_core::domain::{DiagnosisKey, KeyData, Region, ReportType};
use diagnosis_exporter::verify::{
    DirectorySource, HttpSource, MemorySource, Source, VerifyError, VerifyOptions, VerifyReport,
    source_for, verify_bucket,
};
use diagnosis_format::archive::zip_export;
use diagnosis_format::names::{daily_file_key, hourly_file_key};
use diagnosis_format::render::{ExportWindow, SignerInfo, render_window};
use diagnosis_format::sign::{PublicKey, SigningKey, SigningKeys, sign_export};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
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

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
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
    signing_keys: SigningKeys,
    /// Window start → keys.
    hours: BTreeMap<u64, Vec<DiagnosisKey>>,
    /// Day start → keys.
    days: BTreeMap<u64, Vec<DiagnosisKey>>,
}

/// A published bucket and the object keys of its files, in index order.
struct Published {
    bucket: MemorySource,
    hourly: Vec<String>,
    daily: Vec<String>,
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
            signing_keys: SigningKeys::new(vec![
                signer("test-signing-key-2.pem", "v2"),
                signer("test-signing-key.pem", "v1"),
            ])
            .unwrap(),
            hours,
            days: BTreeMap::from([(DAY_START, day)]),
        }
    }

    fn signed_by_key_1_only(mut self) -> Self {
        self.signing_keys = SigningKeys::new(vec![signer("test-signing-key.pem", "v1")]).unwrap();
        self
    }

    /// Renders, signs and zips every window, then writes both indexes and the manifest.
    fn publish(&self) -> Published {
        let mut published = Published {
            bucket: MemorySource::new(),
            hourly: Vec::new(),
            daily: Vec::new(),
        };
        let mut manifest = Vec::new();
        let signers = self.signing_keys.signer_infos();
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
            let parts = render_window(window, &signers, max_keys, &mut keys.clone()).unwrap();
            for part in parts {
                let sig = sign_export(&part.export_bin, &self.signing_keys).unwrap();
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
        published
    }
}

impl Published {
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

fn assert_one_violation(report: &VerifyReport, fragments: &[&str]) {
    assert_eq!(report.violations.len(), 1, "{report}");
    for fragment in fragments {
        assert!(
            report.violations[0].contains(fragment),
            "{fragment:?} is not in {:?}",
            report.violations[0]
        );
    }
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
    let summary = report.to_string();
    assert!(summary.contains("bytes per key: OK"), "{summary}");

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
            .all(|violation| violation.contains(&key)),
        "{report}"
    );
    assert!(
        report
            .violations
            .iter()
            .any(|violation| violation.starts_with(&format!("CA/index.json: {key}: sha256 is "))),
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
        [format!(
            "{key}: listed in CA/index.txt but the object does not exist"
        )]
    );

    // A missing part of the daily file: reported once, and the day is not compared (which
    // would only repeat it).
    let mut published = Spec::new().publish();
    let daily = published.daily[1].clone();
    published.bucket.remove(&daily);
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert_eq!(
        report.violations,
        [format!(
            "{daily}: listed in CA/daily/index.txt but the object does not exist"
        )]
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
        report
            .violations
            .contains(&"CA/daily/index.txt: does not exist".to_owned()),
        "{report}"
    );
    assert!(
        report
            .violations
            .iter()
            .any(|violation| violation.starts_with(&format!(
                "CA/index.json: lists {}, which neither",
                published.daily[0]
            ))),
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
    assert_one_violation(
        &report,
        &[
            &format!("CA/{last_hour}-{}-0000", last_hour + HOUR),
            "1 key_data value(s) are published twice among the hourly files",
            &hex::encode(first.key_data.as_bytes()),
            &format!("already in CA/{FIRST_HOUR}-{}-0000", FIRST_HOUR + HOUR),
        ],
    );
}

#[tokio::test]
async fn a_daily_file_missing_a_key_is_reported() {
    let mut spec = Spec::new();
    let removed = spec.days.get_mut(&DAY_START).unwrap().remove(5);
    let published = spec.publish();
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert_one_violation(
        &report,
        &[
            &format!(
                "CA/daily/{DAY_START}-{}-00001.zip (and its other parts)",
                DAY_START + DAY
            ),
            "is not exactly the union of its day's 24 hourly files: 1 key(s) of the day's \
             hourly files are missing",
            &hex::encode(removed.key_data.as_bytes()),
        ],
    );

    // A changed field is a difference too, even with the same key_data.
    let mut spec = Spec::new();
    let key = &mut spec.days.get_mut(&DAY_START).unwrap()[3];
    key.transmission_risk_level = (key.transmission_risk_level + 1) % 8;
    let report = verify(&spec.publish().bucket, vec![public_key_1()]).await;
    assert_one_violation(
        &report,
        &[
            "1 key(s) of the day's hourly files are missing",
            "1 key(s) are not in",
        ],
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
    assert_one_violation(
        &report,
        &[&format!(
            "CA/index.json: {key}: sha256 is {}, but the object's is ",
            "0".repeat(64)
        )],
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
        report
            .violations
            .iter()
            .all(|violation| violation.starts_with("CA/index.txt: line ")
                && violation.contains("but the index must be oldest first")),
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
    assert_one_violation(
        &report,
        &[&format!(
            "CA/index.txt: no hourly file for 1 hour(s) from {gone} to {}",
            gone + HOUR
        )],
    );

    // An hour missing inside the complete day: a gap, and the day cannot be compared.
    let mut spec = Spec::new();
    spec.hours.remove(&(DAY_START + 5 * HOUR));
    let report = verify(&spec.publish().bucket, vec![public_key_1()]).await;
    assert_eq!(report.violations.len(), 1, "{report}");
    assert_eq!(report.notes.len(), 1, "{report}");
    assert!(
        report.notes[0].contains("not compared with hourly files"),
        "{report}"
    );
}

#[tokio::test]
async fn a_file_signed_by_another_key_is_reported() {
    let published = Spec::new().signed_by_key_1_only().publish();
    let report = verify(&published.bucket, vec![public_key_1()]).await;
    assert!(report.is_ok(), "{report}");

    let report = verify(&published.bucket, vec![public_key_2()]).await;
    let files = published.hourly.len() + published.daily.len();
    assert_eq!(report.violations.len(), files, "{report}");
    let mut named: Vec<&str> = report
        .violations
        .iter()
        .map(|violation| {
            let (key, message) = violation.split_once(": ").unwrap();
            assert!(
                message.starts_with(
                    "no signature in export.sig verifies over export.bin with public key 1 of 1"
                ),
                "{violation}"
            );
            key
        })
        .collect();
    named.sort_unstable();
    let mut all: Vec<&str> = published
        .hourly
        .iter()
        .chain(&published.daily)
        .map(String::as_str)
        .collect();
    all.sort_unstable();
    assert_eq!(named, all);
    // Both keys required, one missing from the files: still one violation per file.
    let report = verify(&published.bucket, vec![public_key_1(), public_key_2()]).await;
    assert_eq!(report.violations.len(), files, "{report}");
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
    let has = |fragment: &str| report.violations.iter().any(|v| v.contains(fragment));
    assert!(has("no hourly file for 1 hour(s)"), "{report}");
    assert!(has("is not exactly the union"), "{report}");
    assert!(has("but the object does not exist"), "{report}");
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
        [format!(
            "{key}: listed in CA/index.txt but the object does not exist"
        )]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A tiny static server: `/bucket/{key}` serves the bucket (404 when missing),
/// `/forbidden/…` answers 403 and `/broken/…` 500.
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

fn respond(bucket: &MemorySource, path: &str) -> Response<Full<Bytes>> {
    let (status, body) = match path.strip_prefix("/bucket/") {
        Some(key) => match bucket.object(key) {
            Some(bytes) => (StatusCode::OK, bytes.clone()),
            None => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found")),
        },
        None if path.starts_with("/forbidden/") => {
            (StatusCode::FORBIDDEN, Bytes::from_static(b"denied"))
        }
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"broken"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
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
        [format!(
            "{tampered}: listed in CA/index.txt but the object does not exist"
        )]
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
    fn error(location: &str) -> String {
        match source_for(location) {
            Ok(source) => panic!("{location}: accepted as {}", source.describe()),
            Err(error) => error.to_string(),
        }
    }
    let https = error("https://cdn.example.org/bucket");
    assert!(
        https.starts_with("cannot verify https://cdn.example.org/bucket: https:// is not supported: this build has no TLS stack"),
        "{https}"
    );
    assert!(error("HTTPS://cdn.example.org").contains("no TLS stack"));
    assert!(error("ftp://bucket/prefix").contains("only http:// URLs, s3://, gs:// and az://"));
    assert_eq!(
        source_for("s3://bucket/prefix").unwrap().describe(),
        "s3://bucket/prefix"
    );
    assert!(error("file://host/x").contains("a file:// URL must be absolute: file:///path"));
    assert!(error("file:///no/such/folder/here").starts_with("cannot read /no/such/folder/here"));
    assert!(error("http://").contains("cannot verify http://"));
    assert!(error("http://host/x?query=1").contains("the URL has a query"));
    assert!(error("").contains("empty path"));

    let dir = temp_dir("source-for");
    let file = dir.join("a file");
    std::fs::write(&file, "x").unwrap();
    assert!(error(&file.display().to_string()).contains("not a folder"));
    let escaped = format!("file://{}", dir.display()).replace(' ', "%20");
    assert_eq!(
        source_for(&escaped).unwrap().describe(),
        format!("folder {}", dir.display())
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
