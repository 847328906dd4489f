//! Writes the committed seed corpora, `tests/fuzz/corpus/<target>/`: small valid and
//! near-valid inputs for every target, made with the same code the service and the exporter
//! use, and checked to reach the step they are meant to reach. Run it after a change to a
//! wire format or to the harness's fixed keys:
//!
//! ```text
//! cargo run -p diagnosis-fuzz --example write_seeds
//! ```
//!
//! It replaces the seeds it writes and leaves every other file of a corpus alone (inputs that
//! once crashed a target stay there as regression inputs).

use std::error::Error;
use std::path::{Path, PathBuf};

use diagnosis_core::store::ExportRecord;
use diagnosis_domain::upload::UploadRejection;
use diagnosis_exporter::pipeline::{index_txt, manifest_json};
use diagnosis_format::archive::{unzip_export, zip_export};
use diagnosis_fuzz::{
    ClaimRefusal, DAILY_OBJECT, HOURLY_OBJECT, NOW_UNIX, UploadRefusal, app_public_key,
    claim_request, join_index_objects, sealed_upload_body, server_public_key, upload_request,
};
use diagnosis_proto::{
    EncryptedUploadRequest, KeyClaimRequest, Message as _, TemporaryExposureKey, Timestamp, Upload,
};
use sha2::{Digest as _, Sha256};

type Fallible<T> = Result<T, Box<dyn Error>>;

fn main() -> Fallible<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = root.join("../..");
    let mut seeds = Seeds {
        corpus: root.join("corpus"),
        written: 0,
    };
    claim_seeds(&mut seeds)?;
    code_seeds(&mut seeds)?;
    upload_seeds(&mut seeds)?;
    export_seeds(&mut seeds, &repo)?;
    config_seeds(&mut seeds, &repo)?;
    println!(
        "wrote {} seeds under {}",
        seeds.written,
        seeds.corpus.display()
    );
    Ok(())
}

struct Seeds {
    corpus: PathBuf,
    written: usize,
}

impl Seeds {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) -> Fallible<()> {
        let dir = self.corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        self.written += 1;
        Ok(())
    }
}

fn check(ok: bool, what: &str) -> Fallible<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("seed does not do what it is for: {what}").into())
    }
}

fn claim(code: &str, app_key: Vec<u8>) -> Vec<u8> {
    KeyClaimRequest {
        one_time_code: Some(code.to_owned()),
        app_public_key: Some(app_key),
    }
    .encode_to_vec()
}

fn claim_seeds(seeds: &mut Seeds) -> Fallible<()> {
    let key = app_public_key().as_bytes().to_vec();
    for (name, code) in [
        ("code-letters", "AEF-245-HJKL"),
        ("code-digits", "245 789 2456"),
        ("code-lowercase", "aef245hjkl"),
        ("code-mixed-segment", "AE5-245-HJKL"),
        ("code-too-short", "AEF-245"),
        ("code-non-ascii", "ÄEF-245-HJKL"),
    ] {
        let body = claim(code, key.clone());
        check(claim_request(&body).is_ok(), name)?;
        seeds.write("claim_body", name, &body)?;
    }
    let short_key = claim("AEF-245-HJKL", key[..31].to_vec());
    check(
        claim_request(&short_key) == Err(ClaimRefusal::InvalidKey),
        "short key",
    )?;
    seeds.write("claim_body", "app-key-31-bytes", &short_key)?;
    seeds.write("claim_body", "empty", b"")?;
    Ok(())
}

fn code_seeds(seeds: &mut Seeds) -> Fallible<()> {
    for (name, code) in [
        ("letters", "AEF-245-HJKL"),
        ("digits", "245789 2456"),
        ("spaced", " a e f - 2 4 5 - h j k l "),
        ("wrong-alphabet", "ABC-123-DEFG"),
        ("expanding-upper-case", "ßEF-245-HJKL"),
        (
            "long",
            "AEF-245-HJKL-AEF-245-HJKL-AEF-245-HJKL-AEF-245-HJKL-AEF-245-HJKL-",
        ),
    ] {
        seeds.write("one_time_code", name, code.as_bytes())?;
    }
    Ok(())
}

/// The current interval number (DESIGN §2): ten-minute intervals since the epoch.
fn interval(days_ago: i64) -> i32 {
    i32::try_from(NOW_UNIX / 600 - 144 * days_ago).unwrap_or(i32::MAX)
}

fn key(seed: u8, days_ago: i64) -> TemporaryExposureKey {
    TemporaryExposureKey {
        key_data: Some(vec![seed; 16]),
        transmission_risk_level: Some(i32::from(seed % 9)),
        rolling_start_interval_number: Some(interval(days_ago)),
        rolling_period: Some(144),
        report_type: Some(1),
        days_since_onset_of_symptoms: Some(i32::from(seed % 29) - 14),
    }
}

fn upload(keys: Vec<TemporaryExposureKey>) -> Upload {
    Upload {
        timestamp: Some(Timestamp {
            seconds: NOW_UNIX - 60,
            nanos: 0,
        }),
        keys,
    }
}

fn upload_seeds(seeds: &mut Seeds) -> Fallible<()> {
    let one = upload(vec![key(1, 1)]);
    let fourteen = upload((0..14).map(|i| key(i + 1, i64::from(i))).collect());
    let all = upload((0..28).map(|i| key(i + 1, i64::from(i % 15))).collect());
    let minimal = upload(vec![TemporaryExposureKey {
        key_data: Some(vec![7; 16]),
        rolling_start_interval_number: Some(interval(2)),
        ..TemporaryExposureKey::default()
    }]);
    let too_many = upload((0..29).map(|i| key(i + 1, 1)).collect());
    let mut no_timestamp = one.clone();
    no_timestamp.timestamp = None;
    let mut bad_period = one.clone();
    bad_period.keys[0].rolling_period = Some(145);
    let expired = upload(vec![key(3, 20)]);

    let cases: Vec<(&str, Upload, Result<usize, UploadRefusal>)> = vec![
        ("valid-1-key", one, Ok(1)),
        ("valid-14-keys", fourteen, Ok(14)),
        ("valid-28-keys", all, Ok(28)),
        ("valid-minimal-fields", minimal, Ok(1)),
        ("expired-key-dropped", expired, Ok(0)),
        (
            "too-many-keys",
            too_many,
            Err(UploadRefusal::Rejected(UploadRejection::TooManyKeys)),
        ),
        (
            "no-timestamp",
            no_timestamp,
            Err(UploadRefusal::Rejected(UploadRejection::InvalidTimestamp)),
        ),
        (
            "rolling-period-145",
            bad_period,
            Err(UploadRefusal::Rejected(
                UploadRejection::InvalidRollingPeriod,
            )),
        ),
    ];
    for (name, upload, expected) in cases {
        let plaintext = upload.encode_to_vec();
        let body = sealed_upload_body(&plaintext);
        let outcome = upload_request(&body).map(|validated| validated.keys.len());
        check(outcome == expected, &format!("{name}: {outcome:?}"))?;
        seeds.write("upload_sealed", name, &plaintext)?;
        seeds.write("upload_body", name, &body)?;
    }
    seeds.write("upload_sealed", "not-an-upload", b"\xff\xff\xff")?;

    let valid = sealed_upload_body(&upload(vec![key(1, 1)]).encode_to_vec());
    let request = EncryptedUploadRequest::decode(valid.as_slice())?;
    let mut short_nonce = request.clone();
    short_nonce.nonce = Some(vec![0; 23]);
    let mut other_server = request.clone();
    other_server.server_public_key = Some(vec![0x42; 32]);
    let mut tampered = request.clone();
    if let Some(payload) = tampered.payload.as_mut().and_then(|p| p.last_mut()) {
        *payload ^= 1;
    }
    let mut no_app_key = request;
    no_app_key.app_public_key = None;
    for (name, request, expected) in [
        (
            "nonce-23-bytes",
            short_nonce,
            UploadRefusal::InvalidCryptoParameters,
        ),
        (
            "unknown-server-key",
            other_server,
            UploadRefusal::UnknownKeypair,
        ),
        (
            "tampered-payload",
            tampered,
            UploadRefusal::DecryptionFailed,
        ),
        (
            "no-app-key",
            no_app_key,
            UploadRefusal::InvalidCryptoParameters,
        ),
    ] {
        let body = request.encode_to_vec();
        check(upload_request(&body) == Err(expected), name)?;
        seeds.write("upload_body", name, &body)?;
    }
    check(
        server_public_key().as_bytes() != app_public_key().as_bytes(),
        "distinct keys",
    )?;
    Ok(())
}

fn record(object_key: &str, kind: &str, zip: &[u8], keys: i64) -> Fallible<ExportRecord> {
    let (start, end, part) = window_of(object_key)?;
    Ok(ExportRecord {
        object_key: object_key.to_owned(),
        kind: kind.to_owned(),
        region: "CA".to_owned(),
        start_ts: start,
        end_ts: end,
        part,
        key_count: keys,
        bytes: i64::try_from(zip.len())?,
        sha256: hex::encode(Sha256::digest(zip)),
    })
}

/// `{start}-{end}-{part}` of an object key.
fn window_of(object_key: &str) -> Fallible<(i64, i64, i32)> {
    let stem = object_key
        .rsplit('/')
        .next()
        .and_then(|name| name.strip_suffix(".zip"))
        .ok_or("no file name")?;
    let mut fields = stem.split('-');
    let mut next = || fields.next().ok_or("short file name");
    Ok((next()?.parse()?, next()?.parse()?, next()?.parse()?))
}

fn export_seeds(seeds: &mut Seeds, repo: &Path) -> Fallible<()> {
    let fixtures = repo.join("exporter/fixtures");
    let mut zips = Vec::new();
    for name in ["export-0-keys", "export-1-key", "export-8-keys"] {
        let zip = std::fs::read(fixtures.join(format!("{name}.zip")))?;
        check(unzip_export(&zip).is_ok(), name)?;
        zips.push((name.to_owned(), zip));
    }
    let header_only = zip_export(b"EK Export v1    ", b"")?;
    zips.push(("header-only".to_owned(), header_only));
    for (name, zip) in &zips {
        seeds.write("published_zip", name, zip)?;
        seeds.write("verify_export_file", name, zip)?;
        // Chunk sizes of 1, 8 and 64 bytes: fields straddle every kind of boundary.
        for chunk in [0_u8, 7, 63] {
            let mut data = vec![chunk];
            data.extend_from_slice(zip);
            seeds.write(
                "derive_reader",
                &format!("{name}-chunk-{}", chunk + 1),
                &data,
            )?;
        }
    }

    // A key whose key_data length is a varint near 2^64: the derive reader's length
    // arithmetic overflowed on it (regression input).
    let mut export_bin = b"EK Export v1    ".to_vec();
    let key = [
        0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];
    export_bin.extend_from_slice(&[0x3a, u8::try_from(key.len())?]);
    export_bin.extend_from_slice(&key);
    let mut data = vec![0];
    data.extend_from_slice(&zip_export(&export_bin, b"")?);
    seeds.write("derive_reader", "regression-key-length-overflow", &data)?;

    let hourly = std::fs::read(fixtures.join("export-1-key.zip"))?;
    let daily = std::fs::read(fixtures.join("export-8-keys.zip"))?;
    let hourly_records = vec![record(HOURLY_OBJECT, "hourly", &hourly, 1)?];
    let daily_records = vec![record(DAILY_OBJECT, "daily", &daily, 8)?];
    let manifest = manifest_json("CA", NOW_UNIX, &hourly_records, &daily_records);
    seeds.write(
        "verify_indexes",
        "fixtures",
        &join_index_objects(
            index_txt(&hourly_records).as_bytes(),
            index_txt(&daily_records).as_bytes(),
            &manifest,
        ),
    )?;
    let many: Vec<ExportRecord> = (0..24)
        .map(|hour| {
            let start = 1_764_201_600 + hour * 3600;
            let key = format!("CA/{start}-{}-00001.zip", start + 3600);
            record(&key, "hourly", &hourly, 1)
        })
        .collect::<Fallible<_>>()?;
    let mut gap = many.clone();
    gap.remove(5);
    seeds.write(
        "verify_indexes",
        "a-day-of-hours",
        &join_index_objects(
            index_txt(&many).as_bytes(),
            index_txt(&daily_records).as_bytes(),
            &manifest_json("CA", NOW_UNIX, &many, &daily_records),
        ),
    )?;
    seeds.write(
        "verify_indexes",
        "a-missing-hour",
        &join_index_objects(index_txt(&gap).as_bytes(), b"", b"{}"),
    )?;
    seeds.write(
        "verify_indexes",
        "empty-indexes",
        &join_index_objects(b"", b"", b""),
    )?;
    Ok(())
}

fn config_seeds(seeds: &mut Seeds, repo: &Path) -> Fallible<()> {
    let shipped = repo.join("infra/exposure-configuration");
    for name in ["CA.json", "region.json"] {
        seeds.write("exposure_config", name, &std::fs::read(shipped.join(name))?)?;
    }
    let v2 = br#"{
  "attenuationDurationThresholds": [50, 70, 90],
  "immediateDurationWeight": 150,
  "nearDurationWeight": 100,
  "mediumDurationWeight": 50,
  "otherDurationWeight": 0,
  "infectiousnessForDaysSinceOnsetOfSymptoms": {
    "-14": 0, "-3": 1, "-2": 2, "0": 2, "5": 1, "14": 0, "unknown": 1
  },
  "infectiousnessStandardWeight": 100,
  "infectiousnessHighWeight": 250,
  "reportTypeConfirmedTestWeight": 100,
  "reportTypeConfirmedClinicalDiagnosisWeight": 100,
  "reportTypeSelfReportedWeight": 0,
  "reportTypeRecursiveWeight": 0,
  "reportTypeNoneMap": 1,
  "daysSinceLastExposureThreshold": 14,
  "minimumScore": 15
}"#;
    seeds.write("exposure_config", "v2.json", v2)?;
    let v1_extras = r#"{"minimumRiskScore": 1, "attenuationDurationThresholds": [50, 62],
  "attenuationLevelValues": [1, 2, 3, 4, 5, 6, 7, 8], "attenuationWeight": 50,
  "daysSinceLastExposureLevelValues": [1, 2, 3, 4, 5, 6, 7, 8], "daysSinceLastExposureWeight": 50,
  "durationLevelValues": [1, 2, 3, 4, 5, 6, 7, 8], "durationWeight": 50,
  "transmissionRiskLevelValues": [1, 2, 3, 4, 5, 6, 7, 8], "transmissionRiskWeight": 50,
  "minimumExposureDurationMinutes": 15, "decommissioned": false,
  "steps": [{"id": "exposed", "title": {"en": "You were exposed", "fr": "Vous avez été exposé"}}],
  "metadata": {"updated": "2021-06-01"}}"#;
    seeds.write(
        "exposure_config",
        "v1-with-app-extras.json",
        v1_extras.as_bytes(),
    )?;
    seeds.write(
        "exposure_config",
        "duplicate-key.json",
        br#"{"minimumRiskScore": 1, "minimumRiskScore": 2}"#,
    )?;
    seeds.write(
        "exposure_config",
        "weight-out-of-range.json",
        br#"{"immediateDurationWeight": 251.5, "infectiousnessForDaysSinceOnsetOfSymptoms": {"-15": 1}}"#,
    )?;
    seeds.write(
        "exposure_config",
        "deep-nesting.json",
        format!("{}1{}", "[".repeat(200), "]".repeat(200)).as_bytes(),
    )?;
    Ok(())
}
