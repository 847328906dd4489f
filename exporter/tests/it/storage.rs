//! `Bucket` against real object-store servers: moto for S3 and Azurite for Azure Blob, which
//! `infra/dev/test` starts on loopback and announces in two variables:
//!
//! * `DIAGNOSIS_TEST_S3_ENDPOINT` — `http://127.0.0.1:PORT` (path-style S3; any credentials).
//! * `DIAGNOSIS_TEST_AZURITE_ENDPOINT` — `http://127.0.0.1:PORT/devstoreaccount1` (the emulator
//!   account, signed with its well-known key).
//!
//! Without them these tests fail rather than skip, so a run that forgot the servers cannot pass.
//! Every test makes its own bucket or container, so the tests run in parallel. The buckets are
//! opened with `Bucket::from_url_with_options`, which reads no process environment: what the
//! developer's shell holds in `AWS_*` or `AZURE_*` cannot redirect a test.
//!
//! `gs://` is covered by configuration only: no GCS emulator available to these tests accepts
//! object_store's write requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use diagnosis_exporter::storage::{Bucket, StorageError};
use diagnosis_format::names::ObjectKind;
use hmac::{Hmac, KeyInit, Mac};
use object_store::{BackoffConfig, RetryConfig};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const S3_ENDPOINT_VAR: &str = "DIAGNOSIS_TEST_S3_ENDPOINT";
const AZURITE_ENDPOINT_VAR: &str = "DIAGNOSIS_TEST_AZURITE_ENDPOINT";
/// A secret no message may ever repeat.
const SECRET: &str = "test-secret-must-never-be-printed";
/// Azurite's account and its published, well-known key.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn endpoint(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => value.trim_end_matches('/').to_string(),
        _ => panic!(
            "{variable} is not set: these tests need the moto and Azurite servers that \
             infra/dev/test starts; run them through it, e.g. `infra/dev/test --test it storage::`"
        ),
    }
}

/// Fails fast: a test waits for a dead server for a second or two, not for minutes.
fn short_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(2),
    }
}

/// A bucket or container name no other test (or earlier run against the same server) uses.
fn unique_name(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{test}-{}-{nanos}-{n}", std::process::id());
    assert!(name.len() <= 63, "{name}");
    name
}

/// Sends a body-less `PUT` and returns the status code and the whole response.
async fn http_put(base: &str, path_and_query: &str, headers: &[(&str, String)]) -> (u16, String) {
    let authority = base
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{base} is not an http:// URL"));
    let mut request = format!(
        "PUT {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("PUT {path_and_query} to {base} timed out"))
        .unwrap_or_else(|error| panic!("PUT {path_and_query} to {base}: {error}"));
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"));
    (status, response)
}

/// Creates a fresh S3 bucket on moto and returns its name.
async fn create_s3_bucket(endpoint: &str, test: &str) -> String {
    let name = unique_name(test);
    let (status, response) = http_put(endpoint, &format!("/{name}"), &[]).await;
    assert_eq!(status, 200, "creating bucket {name}: {response}");
    name
}

fn s3_options(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("aws_endpoint", endpoint.to_string()),
        ("aws_allow_http", "true".to_string()),
        ("aws_access_key_id", "test-access-key".to_string()),
        ("aws_secret_access_key", SECRET.to_string()),
        ("aws_region", "us-east-1".to_string()),
    ]
}

/// Creates a fresh container on Azurite with a SharedKey-signed request and returns its name.
async fn create_azure_container(endpoint: &str, test: &str) -> String {
    let name = unique_name(test);
    let base_path = endpoint
        .strip_prefix("http://")
        .and_then(|rest| rest.find('/').map(|slash| &rest[slash..]))
        .unwrap_or_else(|| panic!("{endpoint} should end with /{AZURITE_ACCOUNT}"));
    let path = format!("{base_path}/{name}");
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    // Blob service SharedKey: the verb, eleven empty standard headers, the x-ms- headers, then
    // the account and the path (which for the emulator starts with the account again).
    let string_to_sign = format!(
        "PUT\n{}x-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}{path}\nrestype:container",
        "\n".repeat(11)
    );
    let key = BASE64.decode(AZURITE_KEY).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(string_to_sign.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    let headers = [
        ("x-ms-date", date),
        ("x-ms-version", version.to_string()),
        (
            "Authorization",
            format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
        ),
    ];
    let (status, response) =
        http_put(endpoint, &format!("{path}?restype=container"), &headers).await;
    assert_eq!(status, 201, "creating container {name}: {response}");
    name
}

fn azure_options(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("azure_storage_account_name", AZURITE_ACCOUNT.to_string()),
        ("azure_storage_account_key", AZURITE_KEY.to_string()),
        ("azure_storage_endpoint", endpoint.to_string()),
        ("azure_allow_http", "true".to_string()),
    ]
}

/// One object per kind, with the keys the exporter publishes.
fn published_objects() -> Vec<(&'static str, ObjectKind, Bytes)> {
    vec![
        (
            "CA/1764280800-1764284400-00001.zip",
            ObjectKind::ExportFile,
            Bytes::from_static(b"PK\x03\x04 hourly"),
        ),
        (
            "CA/index.txt",
            ObjectKind::Index,
            Bytes::from_static(b"CA/1764280800-1764284400-00001.zip\n"),
        ),
        (
            "CA/index.json",
            ObjectKind::Manifest,
            Bytes::from_static(br#"{"region":"CA","files":[]}"#),
        ),
        (
            "exposure-configuration/CA.json",
            ObjectKind::ExposureConfig,
            Bytes::from_static(br#"{"minimumRiskScore":0}"#),
        ),
        (
            "retrieve/302/00000",
            ObjectKind::RetrievalBundle,
            Bytes::from_static(b"PK\x03\x04 fourteen days"),
        ),
    ]
}

/// Publishes one object of every kind and checks bytes, headers, listing and deletion.
async fn publish_and_read_back(bucket: &Bucket) {
    let objects = published_objects();
    for (key, kind, bytes) in &objects {
        bucket.put(key, bytes.clone(), *kind).await.unwrap();
    }
    for (key, kind, bytes) in &objects {
        assert_eq!(
            bucket.get(key).await.unwrap().as_ref(),
            Some(bytes),
            "{key}"
        );
        assert!(bucket.exists(key).await.unwrap(), "{key}");
        let (content_type, cache_control) = bucket
            .attributes(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{bucket:?} should keep headers"));
        assert_eq!(content_type.as_deref(), Some(kind.content_type()), "{key}");
        assert_eq!(
            cache_control.as_deref(),
            Some(kind.cache_control()),
            "{key}"
        );
    }

    let mut all: Vec<String> = objects.iter().map(|(key, ..)| key.to_string()).collect();
    all.sort();
    assert_eq!(bucket.list("").await.unwrap(), all);
    assert_eq!(
        bucket.list("CA").await.unwrap(),
        [
            "CA/1764280800-1764284400-00001.zip",
            "CA/index.json",
            "CA/index.txt"
        ]
    );
    assert_eq!(
        bucket.list("retrieve/302/").await.unwrap(),
        ["retrieve/302/00000"]
    );

    // An index is rewritten in place, and its headers stay those of its kind.
    bucket
        .put(
            "CA/index.txt",
            Bytes::from_static(b"CA/a.zip\nCA/b.zip\n"),
            ObjectKind::Index,
        )
        .await
        .unwrap();
    assert_eq!(
        bucket.get("CA/index.txt").await.unwrap().unwrap(),
        "CA/a.zip\nCA/b.zip\n"
    );
    assert_eq!(
        bucket.attributes("CA/index.txt").await.unwrap(),
        Some((
            Some("text/plain; charset=utf-8".to_string()),
            Some("public, max-age=300".to_string())
        ))
    );

    let gone = "CA/1764280800-1764284400-00001.zip";
    bucket.delete(gone).await.unwrap();
    assert_eq!(bucket.get(gone).await.unwrap(), None);
    assert!(!bucket.exists(gone).await.unwrap());
    assert!(matches!(
        bucket.attributes(gone).await.unwrap_err(),
        StorageError::NotFound { .. }
    ));
    // Retention may delete an object a crashed run already deleted.
    bucket.delete(gone).await.unwrap();
    bucket.delete("CA/never-written.zip").await.unwrap();
    assert_eq!(
        bucket.list("CA").await.unwrap(),
        ["CA/index.json", "CA/index.txt"]
    );
}

#[tokio::test]
async fn s3_bucket_publishes_every_kind_with_its_headers() {
    let endpoint = endpoint(S3_ENDPOINT_VAR);
    let name = create_s3_bucket(&endpoint, "publish").await;
    let bucket = Bucket::from_url_with_options(
        &format!("s3://{name}/en/"),
        s3_options(&endpoint),
        short_retry(),
    )
    .unwrap();
    assert_eq!(bucket.location(), format!("s3://{name}/en"));
    let shown = format!("{bucket:?}");
    assert!(shown.contains(&name) && !shown.contains(SECRET), "{shown}");

    publish_and_read_back(&bucket).await;

    // The prefix from the URL is part of every stored key, and of none that the bucket returns.
    let whole = Bucket::from_url_with_options(
        &format!("s3://{name}"),
        s3_options(&endpoint),
        short_retry(),
    )
    .unwrap();
    assert_eq!(
        whole.list("").await.unwrap(),
        [
            "en/CA/index.json",
            "en/CA/index.txt",
            "en/exposure-configuration/CA.json",
            "en/retrieve/302/00000"
        ]
    );
}

#[tokio::test]
async fn s3_missing_bucket_is_a_clear_error() {
    let endpoint = endpoint(S3_ENDPOINT_VAR);
    let name = unique_name("missing");
    let bucket = Bucket::from_url_with_options(
        &format!("s3://{name}/en"),
        s3_options(&endpoint),
        short_retry(),
    )
    .unwrap();
    let error = bucket
        .put("CA/index.txt", Bytes::from_static(b"x"), ObjectKind::Index)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            error,
            StorageError::Request {
                operation: "put",
                ..
            }
        ),
        "{message}"
    );
    assert!(message.contains("CA/index.txt"), "{message}");
    assert!(message.contains(&format!("s3://{name}/en")), "{message}");
    assert!(message.contains("NoSuchBucket"), "{message}");
    assert!(!message.contains(SECRET), "{message}");
}

#[tokio::test]
async fn s3_store_that_refuses_connections_fails_quickly_and_says_so() {
    // A port that was free a moment ago: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let bucket =
        Bucket::from_url_with_options("s3://unreachable/en", s3_options(&dead), short_retry())
            .unwrap();
    let started = Instant::now();
    let error = bucket
        .put(
            "CA/1-2-00001.zip",
            Bytes::from_static(b"zip"),
            ObjectKind::ExportFile,
        )
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let message = error.to_string();
    assert!(
        elapsed < Duration::from_secs(10),
        "took {elapsed:?}: {message}"
    );
    assert!(
        message.starts_with("put CA/1-2-00001.zip in s3://unreachable/en failed: "),
        "{message}"
    );
    assert!(message.contains("retries"), "{message}");
    assert!(message.contains("Connection refused"), "{message}");
    assert!(!message.contains(SECRET), "{message}");

    // Reads fail too: a dead store is never mistaken for a missing object.
    assert!(bucket.get("CA/index.txt").await.is_err());
    assert!(bucket.exists("CA/index.txt").await.is_err());
}

#[tokio::test]
async fn azure_container_publishes_every_kind_with_its_headers() {
    let endpoint = endpoint(AZURITE_ENDPOINT_VAR);
    let name = create_azure_container(&endpoint, "publish").await;
    let bucket = Bucket::from_url_with_options(
        &format!("az://{name}/en"),
        azure_options(&endpoint),
        short_retry(),
    )
    .unwrap();
    assert_eq!(bucket.location(), format!("az://{name}/en"));
    assert!(!format!("{bucket:?}").contains(AZURITE_KEY));
    publish_and_read_back(&bucket).await;
}

#[tokio::test]
async fn gcs_bucket_is_configured_from_options_without_touching_the_network() {
    // No credentials: object_store looks for them only when a request is made.
    let bucket = Bucket::from_url_with_options(
        "gs://exports/en",
        Vec::<(String, String)>::new(),
        short_retry(),
    )
    .unwrap();
    assert_eq!(
        format!("{bucket:?}"),
        r#"Bucket { location: "gs://exports/en", .. }"#
    );

    // A malformed service-account key is refused when the bucket is opened, without echoing it.
    let error = Bucket::from_url_with_options(
        "gs://exports/en",
        [(
            "google_service_account_key",
            format!("{{\"private_key\": \"{SECRET}"),
        )],
        short_retry(),
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, StorageError::Configuration { .. }),
        "{message}"
    );
    assert!(
        message.starts_with("could not open gs://exports/en: "),
        "{message}"
    );
    assert!(!message.contains(SECRET), "{message}");

    let error = Bucket::from_url_with_options(
        "gs://exports/en",
        [("google_no_such_setting", "1")],
        short_retry(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown gs:// option `google_no_such_setting`"
    );

    let error =
        Bucket::from_url_with_options("gs:///en", Vec::<(String, String)>::new(), short_retry())
            .unwrap_err();
    assert!(error.to_string().contains("names no bucket"), "{error}");
}
