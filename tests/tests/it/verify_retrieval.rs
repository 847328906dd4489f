//! `verify` on the deployed apps' objects (DESIGN §4.3, §6), on buckets the real pipeline
//! published: `retrieve/302/{day}` and `retrieve/302/00000` pass in an S3 bucket and in a
//! folder, each way of breaking one is its own finding naming the object, and what the CDN's
//! edge function serves is held to the bucket's bytes.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Duration;
use diagnosis_core::redacted::Redacted;
use diagnosis_core::time::{Clock as _, hour_number, interval_number};
use diagnosis_exporter::storage::Bucket;
use diagnosis_exporter::verify_command::BucketSource;
use diagnosis_format::archive::{unzip_export, zip_export};
use diagnosis_format::names::{GROWING, IMMUTABLE, ObjectKind};
use diagnosis_format::sign::{SigningKeys, sign_export};
use diagnosis_proto::{
    EXPORT_BIN_HEADER, Message as _, TekSignatureList, TemporaryExposureKeyExport,
};
use diagnosis_tests::app::test_start_time;
use diagnosis_tests::cdn::{self, CdnClock};
use diagnosis_tests::export::{
    ExportHarness, fixture, key, retrieval_day, test_public_keys, test_signing_keys,
};
use diagnosis_tests::process::temp_dir;
use diagnosis_verify::{
    CdnCheck, DirectorySource, Edge, Finding, HttpSource, KeyCount, RetrievalProblem, Source,
    VerifyOptions, VerifyReport, verify_bucket,
};

const HMAC_KEY: [u8; 32] = [0x5a; 32];

/// Two days of keys: three published in the first day's 15:00 hour, two in the next day's
/// 11:00 hour, every hour up to the next day's 16:00 published, and the retrieval objects of
/// both days and `00000` derived from them.
async fn publish(h: &ExportHarness, bucket: &Bucket) {
    let start = h.now();
    let day = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[
        key(day - 3 * 144, 1),
        key(day - 2 * 144, 2),
        key(day - 144, 3),
    ])
    .await;
    h.advance(Duration::hours(20));
    h.upload(&[key(day - 144, 4), key(day, 5)]).await;
    h.advance(Duration::hours(6));
    let exporter = h.exporter_with(bucket.clone()).await;
    assert!(matches!(
        exporter.run_once().await,
        Ok(diagnosis_exporter::pipeline::RunOutcome::Completed(_))
    ));
}

/// The harness's bucket, published, and the two days (day numbers) of its keys.
async fn published() -> (ExportHarness, i64) {
    let h = ExportHarness::new(test_start_time()).await;
    let first_day = h.now().timestamp().div_euclid(86_400);
    publish(&h, &h.bucket.clone()).await;
    (h, first_day)
}

fn options() -> VerifyOptions {
    VerifyOptions {
        region: "CA".to_owned(),
        public_keys: test_public_keys(),
        ..VerifyOptions::default()
    }
}

async fn verify(source: &dyn Source, options: &VerifyOptions) -> VerifyReport {
    verify_bucket(source, options).await.unwrap()
}

async fn verify_s3(h: &ExportHarness) -> VerifyReport {
    verify(&BucketSource::new(h.bucket.clone()), &options()).await
}

const BUNDLE: &str = "retrieve/302/00000";

/// The findings about `object`, each checked to name it first.
fn findings_on<'r>(report: &'r VerifyReport, object: &str) -> Vec<&'r Finding> {
    let found: Vec<&Finding> = report
        .violations
        .iter()
        .filter(|finding| finding.object() == object)
        .collect();
    for finding in &found {
        assert!(
            finding.to_string().starts_with(&format!("{object}: ")),
            "{finding}"
        );
    }
    found
}

fn export_of(zip: &[u8]) -> TemporaryExposureKeyExport {
    let entries = unzip_export(zip).unwrap();
    TemporaryExposureKeyExport::decode(&entries.export_bin[EXPORT_BIN_HEADER.len()..]).unwrap()
}

/// `export` with its keys in canonical order, signed by `keys` (and labelled as they sign)
/// and zipped.
fn signed(mut export: TemporaryExposureKeyExport, keys: &SigningKeys) -> Bytes {
    let labels = TekSignatureList::decode(sign_export(b"", keys).unwrap().as_slice()).unwrap();
    export.signature_infos = labels
        .signatures
        .into_iter()
        .filter_map(|signature| signature.signature_info)
        .collect();
    export.keys.sort_by_key(|k| {
        (
            k.rolling_start_interval_number,
            k.rolling_period.unwrap_or(144),
            k.transmission_risk_level,
            k.report_type,
            k.days_since_onset_of_symptoms,
            k.key_data.clone(),
        )
    });
    let mut bin = EXPORT_BIN_HEADER.to_vec();
    bin.extend(export.encode_to_vec());
    let signature = sign_export(&bin, keys).unwrap();
    Bytes::from(zip_export(&bin, &signature).unwrap())
}

/// The kind a day's retrieval object is stored as, by the hours it holds.
fn kind_of(day: i64, zip: &[u8]) -> ObjectKind {
    let end = i64::try_from(export_of(zip).end_timestamp()).unwrap();
    ObjectKind::RetrievalDay {
        day,
        last_closed_hour: end / 3600 - 1,
    }
}

#[tokio::test]
async fn a_bucket_the_pipeline_published_passes_in_s3_and_in_a_folder() {
    let (h, day) = published().await;
    let report = verify_s3(&h).await;
    assert!(report.is_ok(), "{report}");
    // Every retrieval object was compared with the hourly files, its headers checked.
    let about_retrieval =
        |note: &&String| note.contains("retrieve") || note.contains("Cache-Control");
    assert!(
        !report.notes.iter().any(|note| about_retrieval(&note)),
        "{report}"
    );
    let objects: Vec<&str> = report.retrieval.iter().map(|o| o.object.as_str()).collect();
    let (first, second) = (retrieval_day(day), retrieval_day(day + 1));
    assert_eq!(objects, [BUNDLE, first.as_str(), second.as_str()]);
    assert_eq!(
        report
            .retrieval
            .iter()
            .map(|o| o.keys.unwrap())
            .collect::<Vec<_>>(),
        [3, 3, 2]
    );

    // The same publication into a folder: everything but the headers, which a folder does
    // not keep, and the report says so.
    let folder = temp_dir("verify-retrieval");
    let h = ExportHarness::new(test_start_time()).await;
    let bucket = Bucket::from_url(&format!("file://{}", folder.display())).unwrap();
    publish(&h, &bucket).await;
    let source = DirectorySource::open(&folder).unwrap();
    let report = verify(&source, &options()).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.retrieval.len(), 3, "{report}");
    let notes: Vec<&String> = report.notes.iter().filter(about_retrieval).collect();
    assert_eq!(
        notes,
        [&format!(
            "Cache-Control of the retrieval objects not checked: folder {} keeps no headers",
            folder.display()
        )]
    );
    std::fs::remove_dir_all(folder).unwrap();
}

#[tokio::test]
async fn each_broken_retrieval_object_is_found_and_named() {
    let (h, day) = published().await;
    let (first, second) = (retrieval_day(day), retrieval_day(day + 1));
    let get = |key: String| {
        let bucket = h.bucket.clone();
        async move { bucket.get(&key).await.unwrap().unwrap() }
    };
    let (first_zip, second_zip, bundle_zip) = (
        get(first.clone()).await,
        get(second.clone()).await,
        get(BUNDLE.to_owned()).await,
    );
    let put = |key: String, bytes: Bytes, kind: ObjectKind| {
        let bucket = h.bucket.clone();
        async move { bucket.put(&key, bytes, kind).await.unwrap() }
    };
    let restore = || async {
        put(first.clone(), first_zip.clone(), kind_of(day, &first_zip)).await;
        put(
            second.clone(),
            second_zip.clone(),
            kind_of(day + 1, &second_zip),
        )
        .await;
        put(
            BUNDLE.to_owned(),
            bundle_zip.clone(),
            ObjectKind::RetrievalBundle,
        )
        .await;
        assert!(verify_s3(&h).await.is_ok());
    };

    // Missing.
    h.bucket.delete(&second).await.unwrap();
    let report = verify_s3(&h).await;
    assert_eq!(
        report.violations,
        [Finding::Retrieval {
            object: second.clone(),
            problem: RetrievalProblem::Missing,
        }]
    );
    restore().await;

    // Truncated: not an archive any more.
    let truncated = second_zip.slice(..second_zip.len() - 40);
    put(second.clone(), truncated, kind_of(day + 1, &second_zip)).await;
    let report = verify_s3(&h).await;
    assert!(
        matches!(
            findings_on(&report, &second)[..],
            [Finding::ArchiveInvalid { .. }]
        ),
        "{report}"
    );
    assert_eq!(report.violations.len(), 1, "{report}");
    restore().await;

    // Signed by a key the phones do not know.
    let unknown = SigningKeys::from_env_values(
        &fixture("test-signing-key-2.pem").display().to_string(),
        Some("v2"),
        Some("302"),
    )
    .unwrap();
    put(
        first.clone(),
        signed(export_of(&first_zip), &unknown),
        kind_of(day, &first_zip),
    )
    .await;
    let report = verify_s3(&h).await;
    assert_eq!(
        report.violations,
        [Finding::NotSignedByGivenKey {
            object: first.clone(),
            given: 1,
        }]
    );
    restore().await;

    // Holding a key of another day: the second day's object with one of the first's.
    let mut export = export_of(&second_zip);
    let stranger = export_of(&first_zip).keys[0].clone();
    export.keys.push(stranger.clone());
    put(
        second.clone(),
        signed(export, &test_signing_keys()),
        kind_of(day + 1, &second_zip),
    )
    .await;
    let report = verify_s3(&h).await;
    match &findings_on(&report, &second)[..] {
        [
            Finding::Retrieval {
                problem:
                    RetrievalProblem::ForeignKeys(KeyCount {
                        count: 1,
                        first,
                        relevant_at_end: false,
                        ..
                    }),
                ..
            },
        ] => assert_eq!(first[..], stranger.key_data()[..]),
        _ => panic!("{report}"),
    }
    assert_eq!(report.violations.len(), 1, "{report}");
    restore().await;

    // Missing a key of its day.
    let mut export = export_of(&first_zip);
    let dropped = export.keys.remove(1);
    put(
        first.clone(),
        signed(export, &test_signing_keys()),
        kind_of(day, &first_zip),
    )
    .await;
    let report = verify_s3(&h).await;
    match &report.violations[..] {
        [
            Finding::Retrieval {
                object,
                problem:
                    RetrievalProblem::MissingKeys(KeyCount {
                        count: 1,
                        first: key_data,
                        ..
                    }),
            },
        ] if *object == first => assert_eq!(key_data[..], dropped.key_data()[..]),
        _ => panic!("{report}"),
    }
    restore().await;

    // 00000 missing one of the days' keys.
    let mut export = export_of(&bundle_zip);
    let dropped = export.keys.remove(0);
    put(
        BUNDLE.to_owned(),
        signed(export, &test_signing_keys()),
        ObjectKind::RetrievalBundle,
    )
    .await;
    let report = verify_s3(&h).await;
    match &report.violations[..] {
        [
            Finding::Retrieval {
                object,
                problem:
                    RetrievalProblem::MissingKeys(KeyCount {
                        count: 1,
                        first,
                        relevant_at_end: true,
                        ..
                    }),
            },
        ] if object == BUNDLE => assert_eq!(first[..], dropped.key_data()[..]),
        _ => panic!("{report}"),
    }
    restore().await;

    // A complete day stored as if it still grew: a CDN would revalidate it every hour, and
    // today's stored as final would be cached for two weeks.
    put(
        first.clone(),
        first_zip.clone(),
        ObjectKind::RetrievalBundle,
    )
    .await;
    put(second.clone(), second_zip.clone(), ObjectKind::ExportFile).await;
    let report = verify_s3(&h).await;
    assert_eq!(
        report.violations,
        [
            Finding::Retrieval {
                object: first.clone(),
                problem: RetrievalProblem::CacheControl {
                    found: Some(GROWING.to_owned()),
                    expected: IMMUTABLE,
                },
            },
            Finding::Retrieval {
                object: second.clone(),
                problem: RetrievalProblem::CacheControl {
                    found: Some(IMMUTABLE.to_owned()),
                    expected: GROWING,
                },
            },
        ],
        "{report}"
    );
    restore().await;

    // Today's object of an earlier pass, which lacks the newest hours: behind.
    let mut export = export_of(&second_zip);
    export.end_timestamp = Some(export.end_timestamp() - 3600);
    let behind = signed(export, &test_signing_keys());
    put(second.clone(), behind.clone(), kind_of(day + 1, &behind)).await;
    let report = verify_s3(&h).await;
    assert!(
        matches!(
            findings_on(&report, &second)[..],
            [Finding::Retrieval {
                problem: RetrievalProblem::OutOfStep { .. },
                ..
            }]
        ),
        "{report}"
    );
    assert!(
        report.violations[0]
            .to_string()
            .contains("behind the published hours"),
        "{report}"
    );
}

/// Serves `bucket` like the CDN, with the edge function keyed with `HMAC_KEY`.
async fn cdn_for(h: &ExportHarness, bucket: Bucket) -> String {
    let address = cdn::serve(
        bucket,
        Some(cdn::Edge {
            hmac_key: Redacted::new(HMAC_KEY.to_vec()),
            region_path: "302".to_owned(),
        }),
        CdnClock::new(Arc::new(h.clock.clone())),
    )
    .await;
    format!("http://{address}")
}

fn edge(h: &ExportHarness, url: &str, key: &[u8]) -> Edge {
    Edge::new(
        HttpSource::new(url).unwrap(),
        "302",
        &hex::encode(key),
        Arc::new(h.clock.clone()),
    )
    .unwrap()
}

#[tokio::test]
async fn the_cdn_serves_each_retrieval_object_byte_for_byte() {
    let (h, day) = published().await;
    let today = retrieval_day(day + 1);
    let earlier_today = h.bucket.get(&today).await.unwrap().unwrap();
    // An hour later the exporter has rebuilt today's object; a CDN serving a copy of the
    // bucket from before serves the earlier version.
    h.advance(Duration::hours(1));
    h.run().await;
    let stale = diagnosis_tests::s3::TestBucket::new().await.bucket();
    for key in h.bucket.list("retrieve/").await.unwrap() {
        let bytes = h.bucket.get(&key).await.unwrap().unwrap();
        stale
            .put(&key, bytes, ObjectKind::ExportFile)
            .await
            .unwrap();
    }
    stale
        .put(&today, earlier_today.clone(), ObjectKind::ExportFile)
        .await
        .unwrap();

    let cdn = cdn_for(&h, h.bucket.clone()).await;
    let source = BucketSource::new(h.bucket.clone());
    let compare = |url: &str, key: &[u8]| VerifyOptions {
        cdn: Some(CdnCheck::Compare(edge(&h, url, key))),
        ..options()
    };
    let report = verify(&source, &compare(&cdn, &HMAC_KEY)).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.through_cdn, 3, "{report}");
    assert!(
        report.to_string().contains("3 fetched through the CDN"),
        "{report}"
    );

    // The CDN itself as the location: the objects are read through the edge.
    let through = VerifyOptions {
        cdn: Some(CdnCheck::ReadThrough(edge(&h, &cdn, &HMAC_KEY))),
        ..options()
    };
    let report = verify(&HttpSource::new(&cdn).unwrap(), &through).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.through_cdn, 3, "{report}");

    // A CDN serving the earlier version of today's object.
    let stale_cdn = cdn_for(&h, stale).await;
    let report = verify(&source, &compare(&stale_cdn, &HMAC_KEY)).await;
    let request = format!("{stale_cdn}/retrieve/302/{:05}/{{hmac}}", day + 1);
    match &report.violations[..] {
        [
            Finding::Retrieval {
                object,
                problem:
                    RetrievalProblem::CdnDiffers {
                        request: shown,
                        served,
                        ..
                    },
            },
        ] => {
            assert_eq!(*object, today);
            assert_eq!(*shown, request);
            assert_eq!(served.bytes, earlier_today.len() as u64);
        }
        _ => panic!("{report}"),
    }

    // The wrong secret: the edge refuses every request, and no HMAC reaches the report.
    let report = verify(&source, &compare(&cdn, &[0x11; 32])).await;
    assert_eq!(report.violations.len(), 3, "{report}");
    for finding in &report.violations {
        assert!(
            matches!(
                finding,
                Finding::Retrieval {
                    problem: RetrievalProblem::CdnStatus { status: 401, .. },
                    ..
                }
            ),
            "{report}"
        );
        assert!(
            finding.to_string().contains("/{hmac} answers 401"),
            "{finding}"
        );
    }
    let hour = hour_number(h.clock.now().timestamp());
    let mac = diagnosis_verify::retrieve_hmac(&[0x11; 32], "302", "00000", hour);
    assert!(!report.to_string().contains(&mac), "{report}");
}
