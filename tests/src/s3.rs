//! `TestBucket`: a fresh bucket per test on the S3-compatible server that
//! `infra/dev/test` starts (`DIAGNOSIS_TEST_S3_ENDPOINT`, a moto server).
//! Tests never skip: without the variable they fail and say how to run them.

use std::time::Duration;

use diagnosis_exporter::storage::Bucket;
use hyper::Method;
use object_store::RetryConfig;

use crate::http_client::HttpClient;

/// The variable holding the S3 endpoint, e.g. `http://127.0.0.1:4566`.
pub const S3_ENDPOINT_VARIABLE: &str = "DIAGNOSIS_TEST_S3_ENDPOINT";

/// A bucket created for one test.
#[derive(Debug, Clone)]
pub struct TestBucket {
    pub endpoint: String,
    pub name: String,
}

/// Retries kept short so a failing store fails a test fast.
pub fn short_retry() -> RetryConfig {
    RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
    }
}

impl TestBucket {
    pub async fn new() -> TestBucket {
        let endpoint = std::env::var(S3_ENDPOINT_VARIABLE).unwrap_or_default();
        if endpoint.is_empty() {
            panic!("{S3_ENDPOINT_VARIABLE} is not set: run the tests through infra/dev/test");
        }
        let name = format!("test-{:016x}", rand::random::<u64>());
        let reply = HttpClient::new()
            .send(Method::PUT, &format!("{endpoint}/{name}"), &[], Vec::new())
            .await
            .unwrap_or_else(|e| panic!("creating bucket {name} at {endpoint}: {e:#}"));
        assert!(
            reply.status.is_success(),
            "creating bucket {name}: {}",
            reply.status
        );
        TestBucket { endpoint, name }
    }

    /// The `s3://` URL of this bucket under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.name)
    }

    /// The object_store options that point at the test server.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
            ("aws_region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The raw object_store client of this bucket (to wrap in test doubles).
    pub fn store(&self) -> std::sync::Arc<dyn object_store::ObjectStore> {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&self.name)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .with_retry(short_retry())
            .build()
            .unwrap_or_else(|e| panic!("S3 client for {}: {e}", self.name));
        std::sync::Arc::new(store)
    }

    /// The bucket (at its root) as the exporter sees it.
    pub fn bucket(&self) -> Bucket {
        Bucket::from_url_with_options(&self.url(""), self.options(), short_retry())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.url("")))
    }
}
