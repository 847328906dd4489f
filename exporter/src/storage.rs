//! The bucket the exporter publishes into (DESIGN §4, §4.3, §6 `BUCKET_URL`).
//!
//! A [`Bucket`] is one place in an object store — `s3://`, `gs://`, `az://`, `file://` or
//! `memory://` — plus the prefix from `BUCKET_URL`; every key the exporter passes is relative to
//! that prefix (`s3://my-bucket/en/` + `CA/index.txt`). Each upload is a whole object, written
//! with the Content-Type and Cache-Control that its [`ObjectKind`] fixes
//! ([`diagnosis_format::names`]), so the CDN in front of the bucket serves the headers the
//! design promises without any per-object configuration.
//!
//! What this module must never do:
//! * put credentials, query strings or user information from `BUCKET_URL` into an error, a
//!   `Debug` string or a log line. Credentials come only from the object_store crate's standard
//!   environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), never from the URL, and a URL that
//!   carries any is refused without being echoed;
//! * accept a key that could escape the prefix or name a different object than it reads
//!   ([`check_object_key`]: `..`, `.`, a leading `/`, empty segments, control characters, `\`
//!   and `:`);
//! * create buckets or containers: they belong to the operator (and, in tests, to the test).
//!
//! Retries and timeouts (cloud stores only; a local directory needs neither): transient
//! failures — connection errors, 5xx, throttling — are retried by object_store with jittered
//! exponential backoff, by default ([`Bucket::default_retry`]) up to 5 times, starting at 100 ms,
//! never waiting more than 5 s between tries and giving up 60 s after the first try. The exporter
//! runs on a schedule and a rerun is harmless (deterministic keys, DESIGN §4.2), so failing
//! within a minute and letting the next run finish the work beats holding the exporter's lock
//! through a long outage. Each request may take 120 s (a large `retrieve/302/00000` upload on a
//! slow link) and each connection attempt 5 s; `AWS_TIMEOUT`, `AWS_CONNECT_TIMEOUT` (and the
//! `GOOGLE_`/`AZURE_` forms) override these.
//!
//! The request budget ([`Bucket::request_budget`]): the longest one operation may take, retries
//! included (the retry timeout, then one last request's own timeout, then the longest backoff
//! before it). Every upload is cut there at the latest, and the database transaction that
//! holds the exporter's fence across an upload is allowed to stay idle that long, so no
//! database limit shorter than the store's own can cut a write that is still going (DESIGN
//! §4.2: a slow store is not a broken one).
//!
//! Headers on a `file://` bucket: object_store's local file system store cannot keep
//! Content-Type or Cache-Control, so a `file://` bucket stores the bytes only and
//! [`Bucket::attributes`] answers `None`. The static server in front of such a directory derives
//! the headers from the object key with [`ObjectKind::of_key`]. Writes to a `file://` bucket go
//! through a temporary file, a rename and `fsync`, so a reader never sees a partial object and
//! an index written after its files is never on disk before them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diagnosis_format::names::{ObjectKind, check_object_key};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientConfigKey, GetOptions, GetRange, ObjectStore,
    ObjectStoreExt, PutOptions, PutPayload, RetryConfig,
};

/// Why a bucket could not be opened or an object could not be read or written. Messages name
/// the object key and repeat what the store said; they never carry credentials, and any URL in
/// a store's message loses its query string.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The bucket's URL is not one this module accepts. The message names no variable: the
    /// caller says where the URL came from (`BUCKET_URL`, or `verify`'s location).
    #[error("{shown}: {reason}")]
    InvalidUrl {
        /// The URL without anything that could be secret, or only its scheme.
        shown: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration option name that the store does not know.
    #[error("unknown {scheme}:// option `{key}`")]
    UnknownOption {
        /// The bucket's URL scheme.
        scheme: &'static str,
        /// The option name (never its value).
        key: String,
    },
    /// The store could not be set up from the URL, the environment and the options.
    #[error("could not open {location}: {message}")]
    Configuration {
        /// Scheme, bucket and prefix.
        location: String,
        /// What the store said.
        message: String,
    },
    /// A key that could escape the prefix or is malformed.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The object does not exist (only for operations where absence is not an answer).
    #[error("object {key} does not exist in {location}")]
    NotFound {
        /// The key relative to the bucket prefix.
        key: String,
        /// Scheme, bucket and prefix.
        location: String,
    },
    /// The store refused or failed a request, after its retries.
    #[error("{operation} {key} in {location} failed: {message}")]
    Request {
        /// `put`, `get`, `head`, `delete` or `list`.
        operation: &'static str,
        /// The key (or listing prefix) relative to the bucket prefix.
        key: String,
        /// Scheme, bucket and prefix.
        location: String,
        /// What the store said.
        message: String,
    },
}

/// One bucket (or container, or directory) and prefix to publish into. Cheap to clone: clones
/// share the connection pool.
#[derive(Clone)]
pub struct Bucket {
    /// The store, already narrowed to the prefix.
    store: Arc<dyn ObjectStore>,
    /// `scheme://bucket/prefix`, for messages: never credentials or a query string.
    location: String,
    /// False where the backend cannot keep Content-Type and Cache-Control (local files).
    keeps_headers: bool,
    /// The longest one operation may take, retries included (module docs).
    budget: Duration,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// The cloud stores, with the environment-variable prefix their options use.
#[derive(Debug, Clone, Copy)]
enum Cloud {
    S3,
    Gcs,
    Azure,
}

impl Cloud {
    fn scheme(self) -> &'static str {
        match self {
            Cloud::S3 => "s3",
            Cloud::Gcs => "gs",
            Cloud::Azure => "az",
        }
    }

    fn env_prefix(self) -> &'static str {
        match self {
            Cloud::S3 => "AWS_",
            Cloud::Gcs => "GOOGLE_",
            Cloud::Azure => "AZURE_",
        }
    }
}

/// Each request, connect phase included; large enough for a big `retrieve/302/00000`.
const REQUEST_TIMEOUT: &str = "120s";
/// One connection attempt; a store that does not answer this fast is retried.
const CONNECT_TIMEOUT: &str = "5s";
/// The request budget of a store whose requests have no timeout of their own (a local
/// directory, memory, a store a test wraps): as long as one cloud request may take.
const LOCAL_REQUEST_BUDGET: Duration = Duration::from_secs(120);

/// The longest one operation of a cloud store may take: retries stop `retry_timeout` after the
/// first try, the last one may wait the longest backoff first and then take its own timeout.
fn request_budget(retry: &RetryConfig, request_timeout: Duration) -> Duration {
    retry
        .retry_timeout
        .saturating_add(retry.backoff.max_backoff)
        .saturating_add(request_timeout)
}

impl Bucket {
    /// The retry policy of [`Bucket::from_url`]: see the module documentation.
    pub fn default_retry() -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
        }
    }

    /// Opens `BUCKET_URL`: `file:///abs/path` (created if missing), `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix` or `memory://`. Credentials and endpoints
    /// come from the object_store crate's standard environment variables (`AWS_*`,
    /// `GOOGLE_*`, `AZURE_*`), read now. Retries follow [`Bucket::default_retry`].
    pub fn from_url(url: &str) -> Result<Bucket, StorageError> {
        Self::from_url_with_retry(url, Self::default_retry())
    }

    /// [`Bucket::from_url`] with another retry policy.
    pub fn from_url_with_retry(url: &str, retry: RetryConfig) -> Result<Bucket, StorageError> {
        open(url, Settings::Environment, retry)
    }

    /// Opens `url` with exactly these store options and **without reading the process
    /// environment**: a test or tool that points at a particular server cannot pick up
    /// whatever `AWS_*`, `GOOGLE_*` or `AZURE_*` variables the process happens to have. Option
    /// names are those of the environment variables, in lower case, with or without their
    /// prefix (`aws_endpoint` or `endpoint`, `azure_storage_account_key`, …); an unknown name is
    /// an error. Ignored for `file://` and `memory://`.
    pub fn from_url_with_options<K, V>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
        retry: RetryConfig,
    ) -> Result<Bucket, StorageError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let options = options
            .into_iter()
            .map(|(key, value)| (key.into(), value.into()))
            .collect();
        open(url, Settings::Only(options), retry)
    }

    /// An empty bucket in memory, for unit tests.
    pub fn in_memory() -> Bucket {
        Bucket {
            store: Arc::new(InMemory::new()),
            location: "memory://".to_string(),
            keeps_headers: true,
            budget: LOCAL_REQUEST_BUDGET,
        }
    }

    /// Wraps any store, narrowed to `prefix` (tests wrap a store that fails some requests). A
    /// bare `LocalFileSystem` is recognised and written without headers, as for `file://`;
    /// every other store is asked to keep them. The store's `Display` (which object_store's
    /// stores keep free of credentials) names the bucket in messages.
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str) -> Bucket {
        let shown = store.to_string();
        let keeps_headers = !shown.starts_with("LocalFileSystem(");
        let prefix = prefix.trim_matches('/');
        let location = if prefix.is_empty() {
            shown
        } else {
            format!("{shown}/{prefix}")
        };
        Bucket {
            store: narrow(store, prefix),
            location,
            keeps_headers,
            budget: LOCAL_REQUEST_BUDGET,
        }
    }

    /// Where this bucket is, as `scheme://bucket/prefix`; safe to log.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The longest one operation may take, retries included; an upload is cut there at the
    /// latest (module docs).
    pub fn request_budget(&self) -> Duration {
        self.budget
    }

    /// Uploads a whole object with the Content-Type and Cache-Control of `kind`, replacing any
    /// object at `key`. On a `file://` bucket the headers are not stored (module docs).
    pub async fn put(&self, key: &str, bytes: Bytes, kind: ObjectKind) -> Result<(), StorageError> {
        let path = object_path(key)?;
        let mut attributes = Attributes::new();
        if self.keeps_headers {
            attributes.insert(Attribute::ContentType, kind.content_type().into());
            attributes.insert(Attribute::CacheControl, kind.cache_control().into());
        }
        let options = PutOptions::from(attributes);
        let put = self.store.put_opts(&path, PutPayload::from(bytes), options);
        match tokio::time::timeout(self.budget, put).await {
            Ok(result) => result
                .map(|_| ())
                .map_err(|error| self.request_error("put", key, &error)),
            Err(_) => Err(StorageError::Request {
                operation: "put",
                key: key.to_string(),
                location: self.location.clone(),
                message: format!(
                    "no answer within the request budget of {} s",
                    self.budget.as_secs()
                ),
            }),
        }
    }

    /// The object's bytes, or `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let path = object_path(key)?;
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(self.request_error("get", key, &error)),
        };
        result
            .bytes()
            .await
            .map(Some)
            .map_err(|error| self.request_error("get", key, &error))
    }

    /// The bytes `range` of the object at `key` (the range must lie within the object).
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StorageError> {
        let path = object_path(key)?;
        self.store
            .get_range(&path, range)
            .await
            .map_err(|error| self.request_error("get", key, &error))
    }

    /// The bytes `range` of the object at `key` and the size of the whole object, or `None`
    /// when it does not exist: a reader that checks an object against its recorded size learns
    /// it from the same request. The range must start within the object; it ends at the
    /// object's end at the latest.
    pub async fn get_range_and_size(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Option<(Bytes, u64)>, StorageError> {
        let path = object_path(key)?;
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&path, options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(self.request_error("get", key, &error)),
        };
        let size = result.meta.size;
        let bytes = result
            .bytes()
            .await
            .map_err(|error| self.request_error("get", key, &error))?;
        Ok(Some((bytes, size)))
    }

    /// The size of the object at `key`, or `None` when it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = object_path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(self.request_error("head", key, &error)),
        }
    }

    /// Whether an object exists at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = object_path(key)?;
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(self.request_error("head", key, &error)),
        }
    }

    /// Deletes the object at `key`; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = object_path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.request_error("delete", key, &error)),
        }
    }

    /// Every object key under `prefix`, recursively, relative to the bucket prefix, sorted.
    /// `prefix` matches whole segments (`CA` lists `CA/…`, not `CAT/…`); `""` lists everything.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
        let path = if trimmed.is_empty() {
            None
        } else {
            Some(object_path(trimmed)?)
        };
        let mut keys: Vec<String> = self
            .store
            .list(path.as_ref())
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|error| self.request_error("list", prefix, &error))?;
        keys.sort_unstable();
        Ok(keys)
    }

    /// The stored Content-Type and Cache-Control of an object, or `None` for a backend that
    /// keeps no headers (`file://`). An error when the object does not exist.
    pub async fn attributes(
        &self,
        key: &str,
    ) -> Result<Option<(Option<String>, Option<String>)>, StorageError> {
        let path = object_path(key)?;
        if !self.keeps_headers {
            // Still say whether the object is there, as for every other backend.
            return if self.exists(key).await? {
                Ok(None)
            } else {
                Err(self.not_found(key))
            };
        }
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&path, options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(self.not_found(key)),
            Err(error) => return Err(self.request_error("head", key, &error)),
        };
        let value = |attribute: Attribute| {
            result
                .attributes
                .get(&attribute)
                .map(|value| value.to_string())
        };
        Ok(Some((
            value(Attribute::ContentType),
            value(Attribute::CacheControl),
        )))
    }

    fn request_error(
        &self,
        operation: &'static str,
        key: &str,
        error: &object_store::Error,
    ) -> StorageError {
        StorageError::Request {
            operation,
            key: key.to_string(),
            location: self.location.clone(),
            message: describe(error),
        }
    }

    fn not_found(&self, key: &str) -> StorageError {
        StorageError::NotFound {
            key: key.to_string(),
            location: self.location.clone(),
        }
    }
}

/// Where a cloud store's options come from.
enum Settings {
    /// The process environment, as object_store's `from_env()` reads it.
    Environment,
    /// These options alone.
    Only(Vec<(String, String)>),
}

fn open(url: &str, settings: Settings, retry: RetryConfig) -> Result<Bucket, StorageError> {
    let BucketUrl {
        parsed,
        scheme,
        host,
        prefix,
        location,
    } = BucketUrl::parse(url)?;
    let prefix = prefix.as_str();
    let host = host.as_str();
    let cloud = match scheme.as_str() {
        "file" => return open_directory(&parsed, &location),
        "memory" => {
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            return Ok(Bucket {
                store: narrow(store, prefix),
                location,
                keeps_headers: true,
                budget: LOCAL_REQUEST_BUDGET,
            });
        }
        "s3" => Cloud::S3,
        "gs" => Cloud::Gcs,
        "az" => Cloud::Azure,
        _ => {
            return Err(StorageError::InvalidUrl {
                shown: format!("{scheme}://…"),
                reason: "unsupported scheme; use file://, s3://, gs://, az:// or memory://".into(),
            });
        }
    };
    if host.is_empty() {
        return Err(StorageError::InvalidUrl {
            shown: location,
            reason: "names no bucket or container".into(),
        });
    }
    let (store, request_timeout) = build_cloud(cloud, host, settings, retry.clone(), &location)?;
    Ok(Bucket {
        store: narrow(store, prefix),
        location,
        keeps_headers: true,
        budget: request_budget(&retry, request_timeout),
    })
}

/// A `BUCKET_URL` checked for what the url crate would accept silently: no
/// credentials, query, fragment or dot segment, and a prefix that is a valid object key.
struct BucketUrl {
    parsed: url::Url,
    scheme: String,
    host: String,
    prefix: String,
    /// The URL as shown in messages: scheme, host and prefix only.
    location: String,
}

impl BucketUrl {
    fn parse(url: &str) -> Result<BucketUrl, StorageError> {
        let invalid = |shown: &str, reason: &str| StorageError::InvalidUrl {
            shown: shown.to_string(),
            reason: reason.to_string(),
        };
        // The url crate's messages never repeat the input, so nothing secret can leak from here.
        let parsed = url::Url::parse(url)
            .map_err(|error| invalid("(not shown)", &format!("not a URL ({error})")))?;
        let scheme = parsed.scheme().to_string();
        let scheme_only = format!("{scheme}://…");
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                &scheme_only,
                "must not contain credentials; set them in the AWS_*, GOOGLE_* or AZURE_* variables",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid(
                &scheme_only,
                "must not have a query string or fragment; set options in the AWS_*, GOOGLE_* or AZURE_* variables",
            ));
        }
        let host = parsed.host_str().unwrap_or("").to_string();
        let prefix = parsed.path().trim_matches('/').to_string();
        let location = if prefix.is_empty() {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}/{prefix}")
        };
        if has_dot_segment(url) {
            return Err(invalid(&location, "has a '.' or '..' segment"));
        }
        if prefix.contains('%') && scheme != "file" {
            return Err(invalid(
                &location,
                "the prefix must not need percent-encoding (use letters, digits, '-', '_', '.', '/')",
            ));
        }
        if !prefix.is_empty() && scheme != "file" {
            check_object_key(&prefix).map_err(|reason| invalid(&location, reason))?;
        }
        Ok(BucketUrl {
            parsed,
            scheme,
            host,
            prefix,
            location,
        })
    }
}

/// Whether the path as written has a `.` or `..` segment, which the url crate resolves
/// silently: a `BUCKET_URL` that has them is a mistake.
fn has_dot_segment(url: &str) -> bool {
    let written_path = url.split(['?', '#']).next().unwrap_or(url);
    written_path.split('/').skip(3).any(|segment| {
        let segment = segment.to_ascii_lowercase().replace("%2e", ".");
        segment == "." || segment == ".."
    })
}

fn open_directory(parsed: &url::Url, location: &str) -> Result<Bucket, StorageError> {
    let invalid = |reason: String| StorageError::InvalidUrl {
        shown: location.to_string(),
        reason,
    };
    if parsed.host_str().is_some_and(|host| !host.is_empty()) {
        return Err(invalid(
            "a file:// URL takes an absolute path and no host (file:///srv/bucket)".to_string(),
        ));
    }
    let directory = parsed
        .to_file_path()
        .map_err(|()| invalid("is not an absolute local path".to_string()))?;
    std::fs::create_dir_all(&directory)
        .map_err(|error| invalid(format!("cannot create the directory: {error}")))?;
    let store = LocalFileSystem::new_with_prefix(&directory)
        .map_err(|error| invalid(format!("cannot open the directory: {error}")))?
        .with_fsync(true)
        // Retention deletes old files; their empty day directories go with them.
        .with_automatic_cleanup(true);
    Ok(Bucket {
        store: Arc::new(store),
        location: format!("file://{}", directory.display()),
        keeps_headers: false,
        budget: LOCAL_REQUEST_BUDGET,
    })
}

/// Builds an S3, GCS or Azure store, and says how long one of its requests may take. Option
/// values are applied in this order, later winning: this module's timeouts, then the
/// environment (or nothing), then explicit options.
fn build_cloud(
    cloud: Cloud,
    bucket: &str,
    settings: Settings,
    retry: RetryConfig,
    location: &str,
) -> Result<(Arc<dyn ObjectStore>, Duration), StorageError> {
    let (from_env, options) = match settings {
        Settings::Environment => (true, Vec::new()),
        Settings::Only(options) => (false, options),
    };
    let defaults = timeout_defaults(cloud, from_env);
    let unknown = |key: &str| StorageError::UnknownOption {
        scheme: cloud.scheme(),
        key: key.to_string(),
    };
    let configuration = |error: object_store::Error| StorageError::Configuration {
        location: location.to_string(),
        message: describe(&error),
    };

    // The three cloud builders differ only in their types and in how the
    // bucket is named; one macro keeps their configuration identical.
    macro_rules! build {
        ($builder:ty, $key:ident, $name:ident) => {{
            let mut builder = if from_env {
                <$builder>::from_env()
            } else {
                <$builder>::new()
            };
            for (key, value) in defaults {
                builder = builder.with_config($key::Client(key), value);
            }
            for (key, value) in options {
                let parsed: $key = key.parse().map_err(|_| unknown(&key))?;
                builder = builder.with_config(parsed, value);
            }
            let timeout = builder.get_config_value(&$key::Client(ClientConfigKey::Timeout));
            let store = builder
                .$name(bucket)
                .with_retry(retry)
                .build()
                .map_err(configuration)?;
            let store: Arc<dyn ObjectStore> = Arc::new(store);
            (store, timeout)
        }};
    }
    let (store, timeout) = match cloud {
        Cloud::S3 => build!(AmazonS3Builder, AmazonS3ConfigKey, with_bucket_name),
        Cloud::Gcs => build!(GoogleCloudStorageBuilder, GoogleConfigKey, with_bucket_name),
        Cloud::Azure => build!(MicrosoftAzureBuilder, AzureConfigKey, with_container_name),
    };
    Ok((store, request_timeout(timeout)))
}

/// This module's timeouts, but for those the environment sets: theirs win.
fn timeout_defaults(cloud: Cloud, from_env: bool) -> Vec<(ClientConfigKey, &'static str)> {
    let env_sets = |name: &str| {
        from_env && std::env::var_os(format!("{}{name}", cloud.env_prefix())).is_some()
    };
    let mut defaults = Vec::new();
    if !env_sets("TIMEOUT") {
        defaults.push((ClientConfigKey::Timeout, REQUEST_TIMEOUT));
    }
    if !env_sets("CONNECT_TIMEOUT") {
        defaults.push((ClientConfigKey::ConnectTimeout, CONNECT_TIMEOUT));
    }
    defaults
}

/// How long one request of a built store may take. The builder has already accepted the
/// value; one it could not parse would have failed `build`. Without one, requests have
/// object_store's own default of 30 s.
fn request_timeout(configured: Option<String>) -> Duration {
    configured
        .and_then(|value| humantime::parse_duration(&value).ok())
        .unwrap_or(Duration::from_secs(30))
}

fn narrow(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    }
}

/// Checks a key relative to the bucket prefix and turns it into a store path.
fn object_path(key: &str) -> Result<Path, StorageError> {
    let invalid = |reason| StorageError::InvalidKey {
        key: key.to_string(),
        reason,
    };
    check_object_key(key).map_err(invalid)?;
    Path::parse(key).map_err(|_| invalid("is not a valid object path"))
}

/// What the store said: the error and each of its causes that adds something (object_store's
/// messages stop at "error sending request"; the cause says "Connection refused"), with every
/// URL's query string cut.
fn describe(error: &object_store::Error) -> String {
    let mut message = error.to_string();
    for cause in diagnosis_core::error::causes(error) {
        let text = cause.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    without_query_strings(&message)
}

/// `message` with the query string cut from every URL in it: a pre-signed or SAS URL carries
/// its credential there.
fn without_query_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = find_url(rest) {
        let (before, url_and_after) = rest.split_at(start);
        out.push_str(before);
        let end = url_and_after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '>' || c == ')')
            .unwrap_or(url_and_after.len());
        let (url, after) = url_and_after.split_at(end);
        match url.find('?') {
            Some(query) => {
                out.push_str(&url[..query]);
                out.push_str("?<query removed>");
            }
            None => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn find_url(text: &str) -> Option<usize> {
    match (text.find("http://"), text.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn invalid_keys_never_reach_the_store() {
        let bucket = Bucket::in_memory();
        for key in ["", "/a", "a//b", "a/../b", "a/", "a\\..\\b", "a\nb"] {
            let error = bucket
                .put(key, Bytes::from_static(b"x"), ObjectKind::Index)
                .await
                .unwrap_err();
            assert!(
                matches!(error, StorageError::InvalidKey { .. }),
                "{key:?}: {error}"
            );
            assert!(bucket.get(key).await.is_err(), "{key:?}");
            assert!(bucket.exists(key).await.is_err(), "{key:?}");
            assert!(bucket.delete(key).await.is_err(), "{key:?}");
        }
        assert!(bucket.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_in_memory_bucket_stores_lists_and_deletes() {
        let bucket = Bucket::in_memory();
        let keys = [
            ("CA/index.txt", ObjectKind::Index),
            ("CA/1-2-00001.zip", ObjectKind::ExportFile),
            ("CA/daily/index.txt", ObjectKind::Index),
            ("CAT/index.txt", ObjectKind::Index),
            ("retrieve/302/00000", ObjectKind::RetrievalBundle),
            (
                "retrieve/302/20410",
                ObjectKind::RetrievalDay {
                    day: 20_410,
                    last_closed_hour: 20_410 * 24 + 3,
                },
            ),
        ];
        for (key, kind) in keys {
            bucket
                .put(key, Bytes::from(key.as_bytes().to_vec()), kind)
                .await
                .unwrap();
        }
        for (key, kind) in keys {
            assert_eq!(bucket.get(key).await.unwrap().unwrap(), key.as_bytes());
            assert!(bucket.exists(key).await.unwrap());
            let headers = bucket.attributes(key).await.unwrap().unwrap();
            assert_eq!(
                headers,
                (
                    Some(kind.content_type().to_string()),
                    Some(kind.cache_control().to_string())
                )
            );
        }
        assert_eq!(
            bucket.list("CA").await.unwrap(),
            ["CA/1-2-00001.zip", "CA/daily/index.txt", "CA/index.txt"]
        );
        assert_eq!(
            bucket.list("CA/").await.unwrap(),
            bucket.list("CA").await.unwrap()
        );
        assert_eq!(bucket.list("").await.unwrap().len(), keys.len());

        // Overwrite.
        bucket
            .put(
                "CA/index.txt",
                Bytes::from_static(b"new\n"),
                ObjectKind::Index,
            )
            .await
            .unwrap();
        assert_eq!(bucket.get("CA/index.txt").await.unwrap().unwrap(), "new\n");

        bucket.delete("CA/index.txt").await.unwrap();
        bucket.delete("CA/index.txt").await.unwrap();
        assert_eq!(bucket.get("CA/index.txt").await.unwrap(), None);
        assert!(!bucket.exists("CA/index.txt").await.unwrap());
        assert!(matches!(
            bucket.attributes("CA/index.txt").await.unwrap_err(),
            StorageError::NotFound { .. }
        ));
    }

    #[tokio::test]
    async fn a_prefix_from_the_url_is_invisible_to_keys() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let bucket = Bucket::from_store(inner.clone(), "/en/");
        bucket
            .put("CA/index.txt", Bytes::from_static(b"x"), ObjectKind::Index)
            .await
            .unwrap();
        assert_eq!(bucket.list("").await.unwrap(), ["CA/index.txt"]);
        assert!(inner.head(&Path::from("en/CA/index.txt")).await.is_ok());
        assert_eq!(
            format!("{bucket:?}"),
            r#"Bucket { location: "InMemory/en", .. }"#
        );
    }

    #[tokio::test]
    async fn a_file_bucket_stores_bytes_without_headers() {
        let root = std::env::temp_dir().join(format!(
            "diagnosis-storage-unit-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let directory = root.join("bucket with space");
        let url = url::Url::from_file_path(&directory).unwrap().to_string();
        let bucket = Bucket::from_url(&url).unwrap();
        assert!(directory.is_dir(), "created when missing");
        assert!(format!("{bucket:?}").contains("file://"));

        for kind in [
            ObjectKind::ExportFile,
            ObjectKind::Index,
            ObjectKind::Manifest,
            ObjectKind::ExposureConfig,
            ObjectKind::RetrievalBundle,
        ] {
            bucket
                .put("CA/daily/x.zip", Bytes::from_static(b"zip"), kind)
                .await
                .unwrap();
        }
        assert_eq!(
            std::fs::read(directory.join("CA/daily/x.zip")).unwrap(),
            b"zip"
        );
        assert_eq!(bucket.attributes("CA/daily/x.zip").await.unwrap(), None);
        assert_eq!(bucket.list("CA").await.unwrap(), ["CA/daily/x.zip"]);
        bucket.delete("CA/daily/x.zip").await.unwrap();
        bucket.delete("CA/daily/x.zip").await.unwrap();
        assert_eq!(bucket.get("CA/daily/x.zip").await.unwrap(), None);
        assert!(bucket.list("").await.unwrap().is_empty());
        assert!(matches!(
            bucket.attributes("CA/daily/x.zip").await.unwrap_err(),
            StorageError::NotFound { .. }
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn urls_with_secrets_are_refused_without_being_repeated() {
        for url in [
            "s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/prefix",
            "az://container/prefix?sv=2021&sig=wJalrXUtnFEMI",
            "gs://bucket/prefix#wJalrXUtnFEMI",
        ] {
            let error = Bucket::from_url(url).unwrap_err();
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
            assert!(matches!(error, StorageError::InvalidUrl { .. }), "{shown}");
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let reason = |url: &str| match Bucket::from_url(url).unwrap_err() {
            StorageError::InvalidUrl { reason, .. } => reason,
            other => panic!("{url}: {other}"),
        };
        assert!(reason("ftp://bucket/x").contains("unsupported scheme"));
        assert!(reason("s3:///prefix").contains("no bucket"));
        assert!(reason("file://host/srv").contains("no host"));
        assert!(reason("s3://bucket/a/../b").contains("'..'"));
        assert!(reason("s3://bucket/a/%2E%2E/b").contains("'..'"));
        assert!(reason("file:///srv/./b").contains("'.'"));
        assert!(reason("s3://bucket/my prefix").contains("percent-encoding"));
        assert!(reason("bucket/prefix").contains("not a URL"));
    }

    #[tokio::test]
    async fn memory_urls_open_an_empty_bucket() {
        let bucket = Bucket::from_url("memory://").unwrap();
        assert!(bucket.list("").await.unwrap().is_empty());
        assert_eq!(bucket.location(), "memory://");
    }

    #[test]
    fn query_strings_are_cut_from_store_messages() {
        assert_eq!(
            without_query_strings(
                "Error performing PUT https://a.blob.core.windows.net/c/k?sv=1&sig=SECRET in 1s - 403"
            ),
            "Error performing PUT https://a.blob.core.windows.net/c/k?<query removed> in 1s - 403"
        );
        assert_eq!(
            without_query_strings("no url here"),
            "no url here".to_string()
        );
        assert_eq!(
            without_query_strings("(http://x/a?b) and http://y/c"),
            "(http://x/a?<query removed>) and http://y/c"
        );
    }
}
