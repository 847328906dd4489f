//! What `diagnosis-exporter verify` adds to `diagnosis-verify`: the object-store buckets it
//! reads through the exporter's own `Bucket`, and the locations it accepts. Everything else
//! about a location (folders, `file://`, `http(s)://`) is `diagnosis_verify::source_for`'s,
//! tested with that crate.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use diagnosis_exporter::storage::Bucket;
use diagnosis_exporter::verify_command::{BucketSource, source_for};
use diagnosis_format::names::ObjectKind;
use diagnosis_verify::{Finding, Source, VerifyError, VerifyOptions, verify_bucket};

fn reason(location: &str) -> String {
    match source_for(location) {
        Ok(source) => panic!("{location}: accepted as {}", source.describe()),
        Err(VerifyError::UnsupportedLocation {
            location: named,
            reason,
        }) => {
            assert_eq!(named, location);
            reason
        }
        Err(other) => panic!("{location}: expected an unsupported location, got {other}"),
    }
}

#[test]
fn object_store_locations_are_read_through_the_bucket() {
    assert_eq!(
        source_for("s3://bucket/prefix").unwrap().describe(),
        "s3://bucket/prefix"
    );
    assert_eq!(source_for("memory://").unwrap().describe(), "memory://");
    // What neither the command nor `diagnosis-verify` reads is named with every choice.
    assert_eq!(
        reason("ftp://bucket/prefix"),
        "verify reads a folder or a file://, http://, https://, s3://, gs:// or az:// location"
    );
}

/// A bucket URL with credentials is refused (they belong in the AWS_*, GOOGLE_* or AZURE_*
/// variables), and the refusal shows none of them.
#[test]
fn the_refusal_of_a_bucket_url_with_credentials_shows_none_of_them() {
    let refused = source_for("s3://AKIAEXAMPLE:hunter2@bucket/prefix")
        .map(|source| source.describe())
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("must not contain credentials"),
        "{refused}"
    );
    assert!(
        !refused.contains("hunter2") && !refused.contains("AKIAEXAMPLE"),
        "{refused}"
    );
}

#[test]
fn folders_and_http_are_left_to_diagnosis_verify() {
    assert_eq!(reason(""), "empty path");
    assert!(reason("file://host/x").contains("file:///path"));
    assert_eq!(
        source_for("http://127.0.0.1:9/bucket").unwrap().describe(),
        "http://127.0.0.1:9/bucket"
    );
    let folder = std::env::temp_dir();
    assert_eq!(
        source_for(&folder.display().to_string())
            .unwrap()
            .describe(),
        format!("folder {}", folder.display())
    );
}

#[tokio::test]
async fn a_bucket_source_reads_objects_and_their_absence() {
    let bucket = Bucket::in_memory();
    bucket
        .put("CA/index.txt", Bytes::from_static(b"\n"), ObjectKind::Index)
        .await
        .unwrap();
    let source = BucketSource::new(bucket);
    assert_eq!(
        source.get("CA/index.txt").await.unwrap(),
        Some(Bytes::from_static(b"\n"))
    );
    assert_eq!(source.get("CA/daily/index.txt").await.unwrap(), None);
    // A key the bucket refuses is a failing source, not a missing object.
    assert!(matches!(
        source.get("CA/../etc/passwd").await,
        Err(VerifyError::Storage { key, .. }) if key == "CA/../etc/passwd"
    ));

    // The whole check runs on it: the one index exists, the other two objects do not.
    let report = verify_bucket(&source, &VerifyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.hourly_files, 0);
    assert_eq!(
        report.violations,
        [
            Finding::Missing {
                object: "CA/daily/index.txt".to_owned()
            },
            Finding::Missing {
                object: "CA/index.json".to_owned()
            },
        ],
        "{report}"
    );
}
