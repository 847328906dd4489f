//! The sources that fetch (DESIGN §6): a folder (a `file://` bucket or a copy) and an HTTP or
//! HTTPS server (the CDN or a local static server), with [`source_for`] to pick one for a
//! location. Behind the `fetch` feature (on by default), because they need an async runtime,
//! sockets and TLS: the fuzz targets use `verify` without it, over a
//! [`MemorySource`](crate::MemorySource), and build none of that.
//!
//! HTTP goes through reqwest, which the exporter's object stores already bring into the
//! binary, so verify adds no HTTP client of its own; it runs on the rustls configuration built
//! here, with each reqwest default that would ask other than as told turned off.
//!
//! Like every source, these only fetch bytes by object key and never judge them; they never
//! write, never read outside their root (a folder and an HTTP source refuse every key that
//! [`diagnosis_format::names::check_object_key`] refuses), never follow redirects, never use a
//! proxy they were not given, and never hold an object larger than [`MAX_OBJECT_BYTES`].

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use diagnosis_domain::error::chain;
use diagnosis_domain::redacted::Redacted;
use diagnosis_format::names::check_object_key;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::AsyncReadExt as _;
use url::Url;

use crate::VerifyError;
use crate::source::{CacheControl, MAX_OBJECT_BYTES, Served, Source, scheme_of, shown_location};

/// How long one HTTP request may take, body included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long connecting to the HTTP server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A bucket in a local folder: a `file://` bucket, or a copy of any bucket.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    root: PathBuf,
}

impl DirectorySource {
    /// Reads objects from under `root`; `root` itself is not checked until an object is read.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Reads objects from under `root`, which must be an existing folder.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, VerifyError> {
        let root = root.into();
        match std::fs::metadata(&root) {
            Ok(metadata) if metadata.is_dir() => Ok(Self { root }),
            Ok(_) => Err(VerifyError::UnsupportedLocation {
                location: root.display().to_string(),
                reason: "not a folder".to_owned(),
            }),
            Err(source) => Err(VerifyError::Io { path: root, source }),
        }
    }

    /// The folder objects are read from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn read(&self, key: &str) -> Result<Option<Bytes>, VerifyError> {
        check_object_key(key).map_err(|reason| VerifyError::UnsafeKey {
            key: key.to_owned(),
            reason,
        })?;
        let path = self.root.join(key);
        let io_error = |source| VerifyError::Io {
            path: path.clone(),
            source,
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(error)
                if matches!(error.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(io_error(error)),
        };
        let metadata = file.metadata().await.map_err(io_error)?;
        if !metadata.is_file() {
            // A folder named like an object is not that object.
            return Ok(None);
        }
        let too_large = || VerifyError::TooLarge {
            location: path.display().to_string(),
            limit: MAX_OBJECT_BYTES,
        };
        if metadata.len() > MAX_OBJECT_BYTES {
            return Err(too_large());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
        // The file may grow between the size check and the read.
        file.take(MAX_OBJECT_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(io_error)?;
        if bytes.len() as u64 > MAX_OBJECT_BYTES {
            return Err(too_large());
        }
        Ok(Some(Bytes::from(bytes)))
    }
}

impl Source for DirectorySource {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, VerifyError>> {
        Box::pin(self.read(key))
    }

    fn describe(&self) -> String {
        format!("folder {}", self.root.display())
    }
}

/// A bucket behind HTTP or HTTPS, such as the CDN or a local static server.
///
/// `200` is the object, `404` and `403` (what S3-style buckets answer for a missing key
/// without list permission) are "no such object", anything else is an error. Redirects are
/// not followed, and no proxy is used, whatever the environment says. `https://` checks the
/// server's certificate chain and name against the operating system's trusted certificates
/// (`rustls-native-certs`, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`), on rustls with
/// the aws-lc-rs provider: the TLS stack of the database connection, so the binary carries one.
#[derive(Debug, Clone)]
pub struct HttpSource {
    /// The bucket root as shown in messages: a password in it is replaced by `..`.
    base_url: String,
    /// The bucket root as requested, password included, without a trailing slash.
    root: Redacted<String>,
    base: Redacted<Url>,
    client: reqwest::Client,
    timeout: Duration,
}

impl HttpSource {
    /// A source for objects under `base_url` (`http[s]://host[:port][/prefix]`); `https://`
    /// trusts the operating system's certificates.
    pub fn new(base_url: &str) -> Result<Self, VerifyError> {
        Self::build(base_url, None, HTTP_TIMEOUT)
    }

    /// A source for objects under `base_url` whose `https://` server must present a chain
    /// leading to one of `roots` instead of the operating system's certificates.
    pub fn with_roots(base_url: &str, roots: RootCertStore) -> Result<Self, VerifyError> {
        Self::build(base_url, Some(roots), HTTP_TIMEOUT)
    }

    fn build(
        base_url: &str,
        roots: Option<RootCertStore>,
        timeout: Duration,
    ) -> Result<Self, VerifyError> {
        let unsupported = |reason: &str| VerifyError::UnsupportedLocation {
            location: shown_location(base_url),
            reason: reason.to_owned(),
        };
        let tls = checked_scheme(base_url).map_err(|reason| unsupported(&reason))?;
        let base_url = base_url.trim_end_matches('/');
        let base = Url::parse(base_url).map_err(|error| unsupported(&error.to_string()))?;
        if base.cannot_be_a_base() {
            return Err(unsupported("the URL cannot hold object keys"));
        }
        // An `http://` source trusts no certificate: it never makes a TLS connection.
        let roots = match (tls, roots) {
            (false, _) => RootCertStore::empty(),
            (true, Some(roots)) => roots,
            (true, None) => system_roots().map_err(|reason| unsupported(&reason))?,
        };
        let config = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| unsupported(&error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client =
            http_client(config, tls, timeout).map_err(|error| unsupported(&reason_of(error)))?;
        Ok(Self {
            base_url: shown_location(base_url),
            root: Redacted::new(base_url.to_owned()),
            base: Redacted::new(base),
            client,
            timeout,
        })
    }

    /// The bucket root, without a trailing slash, and with `..` for a password it holds.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The bucket root to build request URLs on: [`HttpSource::base_url`] with its password.
    pub(crate) fn request_root(&self) -> &str {
        self.root.expose()
    }

    /// The URL an object key is fetched from: each segment of the key percent-encoded as
    /// `url` encodes a path segment, which leaves the characters of every published name
    /// (DESIGN §4, §4.3) as they are. A key the folder would refuse is refused here too: `url`
    /// and the client drop or resolve `.` and `..` segments, which would fetch another object.
    fn url_of(&self, key: &str) -> Result<Url, VerifyError> {
        check_object_key(key).map_err(|reason| VerifyError::UnsafeKey {
            key: key.to_owned(),
            reason,
        })?;
        let mut url = self.base.expose().clone();
        url.path_segments_mut()
            .map_err(|()| VerifyError::UnsupportedLocation {
                location: self.base_url.clone(),
                reason: "the URL cannot hold object keys".to_owned(),
            })?
            .extend(key.split('/'));
        Ok(url)
    }

    /// The object under `key`: `200` is the object, `404` and `403` are no such object,
    /// anything else is an error.
    async fn fetch(&self, key: &str) -> Result<Option<Served>, VerifyError> {
        let url = self.url_of(key)?;
        let shown = shown_location(url.as_str());
        match self.answer(url.as_str(), &shown).await? {
            HttpAnswer::Object(served) => Ok(Some(served)),
            HttpAnswer::Status(404 | 403) => Ok(None),
            HttpAnswer::Status(status) => Err(VerifyError::HttpStatus { url: shown, status }),
        }
    }

    /// `GET url`, the body read only for `200`. `shown` names the request in errors, so a URL
    /// that carries a token never reaches a message.
    pub(crate) async fn answer(&self, url: &str, shown: &str) -> Result<HttpAnswer, VerifyError> {
        let failed = |error: reqwest::Error| self.failure(shown, error);
        // A URL `http` refuses (a space, a byte beyond ASCII) is an error here, not escaped
        // by `url` into a request for another name.
        url.parse::<http::Uri>()
            .map_err(|error| VerifyError::Http {
                url: shown.to_owned(),
                reason: error.to_string(),
            })?;
        let response = self.client.get(url).send().await.map_err(failed)?;
        if response.status() != StatusCode::OK {
            return Ok(HttpAnswer::Status(response.status().as_u16()));
        }
        let cache_control = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let bytes = match limited_body(response).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(VerifyError::TooLarge {
                    location: shown.to_owned(),
                    limit: MAX_OBJECT_BYTES,
                });
            }
            Err(error) => return Err(failed(error)),
        };
        Ok(HttpAnswer::Object(Served {
            bytes,
            cache_control: CacheControl::Kept(cache_control),
        }))
    }

    /// The error for a request that got no complete answer: an untrusted certificate, the
    /// request's deadline, or whatever the connection says.
    fn failure(&self, shown: &str, error: reqwest::Error) -> VerifyError {
        if let Some(reason) = untrusted_certificate(&error) {
            return VerifyError::UntrustedServer {
                url: shown.to_owned(),
                reason,
            };
        }
        // A connection attempt that times out is a connection error, as any other.
        let reason = if error.is_timeout() && !error.is_connect() {
            format!(
                "no complete answer within {} seconds",
                self.timeout.as_secs()
            )
        } else {
            reason_of(error)
        };
        VerifyError::Http {
            url: shown.to_owned(),
            reason,
        }
    }
}

/// Whether `base_url` is `https://` (else `http://`), or why it cannot be fetched from.
fn checked_scheme(base_url: &str) -> Result<bool, String> {
    if outside_authority(base_url).contains('@') {
        // A password holding `/`, `?` or `#` ends the user information early: the rest of it
        // would be sent as a path to a host named by the user name.
        return Err(
            "the URL has an '@' after its host: write it %40 in a path, and percent-encode \
             '/', '?', '#' and '@' in a user name or password (%2F, %3F, %23, %40)"
                .to_owned(),
        );
    }
    if base_url.contains('#') {
        // `http::Uri` drops a fragment, and the CDN's paths are joined to the text as given:
        // `…/b#x` + `/retrieve/…` would ask for `/b` alone.
        return Err("the URL has a fragment ('#'); give the bucket root".to_owned());
    }
    let uri: http::Uri = base_url
        .parse()
        .map_err(|error: http::uri::InvalidUri| error.to_string())?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("only http:// and https:// URLs can be fetched".to_owned()),
    };
    if uri
        .authority()
        .is_none_or(|authority| authority.host().is_empty())
    {
        return Err("the URL names no host".to_owned());
    }
    if uri.query().is_some() {
        return Err(
            "the URL has a query; give the bucket root, object keys are appended to it".to_owned(),
        );
    }
    let authority = uri.authority().map_or("", |authority| authority.as_str());
    if !tls && authority.contains('@') && !is_loopback(uri.host().unwrap_or_default()) {
        return Err("credentials in an http:// URL would cross the network readable by anyone \
             on the way: use https://, or http:// to this machine only (localhost, 127.0.0.0/8, ::1)"
            .to_owned());
    }
    Ok(tls)
}

/// What follows the authority of `scheme://authority…` (path, query and fragment); all of
/// `url` when it has no `://`.
fn outside_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find(['/', '?', '#']).map_or("", |end| &rest[end..])
}

/// Whether `host` (as a URL writes it: an IPv6 address in brackets) names this machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// The client of one source. Every default of reqwest that would make it ask another way is
/// turned off: it follows no redirect (a redirect is an answer to report), reads no proxy
/// from the environment (verify judges the server it is given), speaks HTTP/1.1 without ALPN,
/// decodes no `Content-Encoding` (the bytes are judged as served), and its one deadline is the
/// request's: no keepalive probes or TCP user timeout end a slow answer first.
fn http_client(
    tls: ClientConfig,
    https_only: bool,
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .https_only(https_only)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .no_zstd()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .tcp_keepalive(None)
        .tcp_keepalive_interval(None)
        .tcp_keepalive_retries(None)
        .tcp_user_timeout(None)
        .user_agent("diagnosis-exporter-verify")
        .build()
}

/// The body of `response`, or `None` when it is larger than [`MAX_OBJECT_BYTES`]: it is read
/// no further than that.
async fn limited_body(mut response: reqwest::Response) -> reqwest::Result<Option<Bytes>> {
    let limit = usize::try_from(MAX_OBJECT_BYTES).unwrap_or(usize::MAX);
    if response
        .content_length()
        .is_some_and(|length| length > MAX_OBJECT_BYTES)
    {
        return Ok(None);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if chunk.len() > limit - body.len() {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// What an HTTP server answered: the object (`200`), or another status.
#[derive(Debug)]
pub(crate) enum HttpAnswer {
    /// `200`, with the body and its `Cache-Control`.
    Object(Served),
    /// Any other status.
    Status(u16),
}

/// The operating system's trusted certificates, as `rustls-native-certs` finds them
/// (`SSL_CERT_FILE` and `SSL_CERT_DIR` first).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(
            "the system has no trusted certificates to check the server with (install \
                    ca-certificates, or set SSL_CERT_FILE to a PEM bundle)"
                .to_owned(),
        );
    }
    Ok(roots)
}

/// The certificate problem behind a failed request, if that is why it failed: the chain,
/// the name or the validity of the server's certificate.
fn untrusted_certificate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    chain(error).find_map(|current| match rustls_error(current) {
        Some(rustls::Error::InvalidCertificate(problem)) => Some(format!(
            "the server's certificate is not trusted ({problem:?}); the trusted roots are \
             the system's certificates, or the PEM bundle named by SSL_CERT_FILE"
        )),
        _ => None,
    })
}

/// The rustls error `error` is or wraps: the TLS connector wraps it in an `io::Error`, twice,
/// and `io::Error::source` skips the wrapped error.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(found) = error.downcast_ref::<rustls::Error>() {
        return Some(found);
    }
    let mut wrapped = error
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref);
    while let Some(inner) = wrapped {
        if let Some(found) = inner.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        wrapped = inner
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
    }
    None
}

/// Why a request failed, on one line: the causes below reqwest's own errors, whose lines say
/// little and name the URL, which may carry a token (`answer`'s `shown`).
fn reason_of(error: reqwest::Error) -> String {
    let causes: Vec<String> = chain(&error)
        .filter(|current| !current.is::<reqwest::Error>())
        .map(ToString::to_string)
        .collect();
    if causes.is_empty() {
        return error.without_url().to_string();
    }
    causes.join(": ")
}

impl Source for HttpSource {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, VerifyError>> {
        Box::pin(async move { Ok(self.fetch(key).await?.map(|served| served.bytes)) })
    }

    fn get_served<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Served>, VerifyError>> {
        Box::pin(self.fetch(key))
    }

    fn describe(&self) -> String {
        self.base_url.clone()
    }
}

/// The source for a `verify` location (DESIGN §6): `http://…` and `https://…` read over HTTP,
/// `file:///path` or a plain path reads a folder. Object-store buckets (`s3://`, `gs://`,
/// `az://`) are not read here: the command reads them through its own store client, a
/// [`Source`] of its own.
pub fn source_for(path_or_url: &str) -> Result<Box<dyn Source>, VerifyError> {
    let unsupported = |reason: &str| VerifyError::UnsupportedLocation {
        location: shown_location(path_or_url),
        reason: reason.to_owned(),
    };
    let Some(scheme) = scheme_of(path_or_url) else {
        if path_or_url.is_empty() {
            return Err(unsupported("empty path"));
        }
        return Ok(Box::new(DirectorySource::open(path_or_url)?));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => Ok(Box::new(HttpSource::new(path_or_url)?)),
        "file" => {
            let path = Url::parse(path_or_url)
                .ok()
                .and_then(|url| url.to_file_path().ok())
                .ok_or_else(|| {
                    unsupported(
                        "a file:// URL must name an absolute path on this machine: \
                         file:///path",
                    )
                })?;
            Ok(Box::new(DirectorySource::open(path)?))
        }
        _ => Err(unsupported(
            "only folders, file://, http:// and https:// URLs can be read here",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The folder applies the format's one rule for object keys before it builds a path: what
    /// `check_object_key` refuses is never read, whether or not such a file exists.
    #[tokio::test]
    async fn a_folder_source_refuses_every_key_the_format_refuses() {
        let root = std::env::temp_dir().join(format!("verify-unsafe-keys-{}", std::process::id()));
        std::fs::create_dir_all(root.join("CA")).unwrap();
        std::fs::write(root.join("CA/index.txt"), "x").unwrap();
        let source = DirectorySource::new(&root);
        assert_eq!(
            source.get("CA/index.txt").await.unwrap().as_deref(),
            Some(&b"x"[..])
        );
        for key in [
            "",
            "/etc/passwd",
            "CA/../CA/index.txt",
            "..",
            "CA//index.txt",
            "CA/./index.txt",
            "CA/index.txt/",
            "C:/x",
            "CA\\..\\x",
            "CA/\0",
            "CA/index.txt\n",
        ] {
            match source.get(key).await {
                Err(VerifyError::UnsafeKey {
                    key: refused,
                    reason,
                }) => {
                    assert_eq!(refused, key);
                    assert_eq!(Err(reason), check_object_key(key), "{key:?}");
                }
                other => panic!("{key:?}: expected an unsafe key, got {other:?}"),
            }
        }
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn http_urls_are_escaped_and_joined() {
        let source = HttpSource::new("http://127.0.0.1:8080/bucket/").unwrap();
        assert_eq!(source.base_url(), "http://127.0.0.1:8080/bucket");
        assert_eq!(
            source.url_of("CA/index.txt").unwrap().as_str(),
            "http://127.0.0.1:8080/bucket/CA/index.txt"
        );
        assert_eq!(
            source.url_of("a b/é?#").unwrap().as_str(),
            "http://127.0.0.1:8080/bucket/a%20b/%C3%A9%3F%23"
        );
    }

    /// RFC 3986 escaping: every byte but the unreserved ones and `/` as `%XX`, which asks for
    /// a key as exactly its bytes whatever a server makes of reserved characters.
    fn rfc3986_escaped(key: &str) -> String {
        key.bytes()
            .map(|byte| {
                if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
                    char::from(byte).to_string()
                } else {
                    format!("%{byte:02X}")
                }
            })
            .collect()
    }

    /// The names `verify` asks a bucket for (DESIGN §4, §4.3), with regions, MCCs and windows
    /// at the edges of what the exporter writes.
    fn published_names() -> Vec<String> {
        use diagnosis_domain::domain::Region;
        use diagnosis_format::names::{
            daily_file_key, daily_index_key, hourly_file_key, hourly_index_key, manifest_key,
            retrieval_bundle_key, retrieval_day_key,
        };
        use diagnosis_format::render::PartNumber;
        let mut names = Vec::new();
        for region in ["CA", "ON", "ca_on_2", "Z"] {
            let parsed = Region::parse(region).unwrap();
            names.extend([
                hourly_index_key(region),
                daily_index_key(region),
                manifest_key(region),
            ]);
            for part in [PartNumber::FIRST, PartNumber::new(PartNumber::MAX).unwrap()] {
                names.push(hourly_file_key(&parsed, 0, 3600, part));
                names.push(daily_file_key(&parsed, 1_600_000_000, 1_600_086_400, part));
                names.push(hourly_file_key(&parsed, u64::MAX - 3600, u64::MAX, part));
            }
        }
        for mcc in ["302", "000", "999"] {
            names.extend([retrieval_bundle_key(mcc), retrieval_day_key(mcc, 20_410)]);
            names.push(retrieval_day_key(mcc, 0));
        }
        names
    }

    /// `url`'s path-segment encoding asks for every published name exactly as RFC 3986
    /// escaping does, byte for byte, under a root with and without a path.
    #[test]
    fn published_names_are_requested_as_rfc3986_escapes_them() {
        for base in [
            "http://127.0.0.1:8080/bucket/",
            "https://cdn.example",
            "http://h:1/a/b",
        ] {
            let source = HttpSource::new(base).unwrap();
            for name in published_names() {
                check_object_key(&name).unwrap();
                assert_eq!(
                    source.url_of(&name).unwrap().as_str(),
                    format!("{}/{}", base.trim_end_matches('/'), rfc3986_escaped(&name)),
                );
            }
        }
    }

    proptest::proptest! {
        /// Any key made of the characters of published names (DESIGN §4: region letters,
        /// digits and `_`, `-`, `.`, `/`) that the format accepts is asked for as RFC 3986
        /// escapes it.
        #[test]
        fn keys_of_published_characters_are_requested_as_rfc3986_escapes_them(
            key in "[A-Za-z0-9_.~-]{1,12}(/[A-Za-z0-9_.~-]{1,12}){0,4}"
        ) {
            proptest::prop_assume!(check_object_key(&key).is_ok());
            let source = HttpSource::new("http://127.0.0.1:8080/bucket").unwrap();
            let url = source.url_of(&key).unwrap();
            proptest::prop_assert_eq!(
                url.as_str(),
                format!("http://127.0.0.1:8080/bucket/{}", rfc3986_escaped(&key))
            );
        }
    }

    /// A key the folder would refuse is never turned into a request: `.` and `..` segments
    /// would be resolved into another object's URL. Nothing listens on port 9, so a request
    /// would fail as a connection error instead.
    #[tokio::test]
    async fn an_http_source_refuses_every_key_the_format_refuses() {
        let source = HttpSource::new("http://127.0.0.1:9/bucket").unwrap();
        for key in [
            "",
            "/CA/index.txt",
            "CA/../x",
            "..",
            "CA//x",
            "CA/./x",
            "CA/x/",
            "C:x",
        ] {
            match source.get_served(key).await {
                Err(VerifyError::UnsafeKey {
                    key: refused,
                    reason,
                }) => {
                    assert_eq!(refused, key);
                    assert_eq!(Err(reason), check_object_key(key), "{key:?}");
                }
                other => panic!("{key:?}: expected an unsafe key, got {other:?}"),
            }
        }
    }

    /// A server that accepts the connection, reads the request and then answers with
    /// `answer` (maybe only a part of a response) and nothing more, keeping the connection
    /// open.
    async fn stalling_server(answer: &'static [u8]) -> std::net::SocketAddr {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0_u8; 1024];
                    while !request.windows(4).any(|end| end == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let _ = stream.write_all(answer).await;
                    // Held until the client gives up: the answer never completes.
                    let _ = stream.read(&mut buffer).await;
                });
            }
        });
        address
    }

    /// A server that stops before the headers end, or in the middle of the body, is given up
    /// on at the request's deadline, with the message saying so.
    #[tokio::test]
    async fn an_answer_that_never_completes_is_cut_at_the_deadline() {
        let deadline = Duration::from_secs(1);
        for answer in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        ] {
            let address = stalling_server(answer).await;
            let url = format!("http://{address}/bucket");
            let source = HttpSource::build(&url, None, deadline).unwrap();
            // Generously past the deadline: without one, the request would wait forever.
            let outcome =
                tokio::time::timeout(deadline + Duration::from_secs(30), source.get("CA/x"))
                    .await
                    .expect("no deadline ended the request");
            match outcome {
                Err(error @ VerifyError::Http { .. }) => assert_eq!(
                    error.to_string(),
                    format!("GET {url}/CA/x: no complete answer within 1 seconds")
                ),
                other => panic!("expected the deadline's error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_location_is_shown_without_user_information_or_query() {
        for (location, shown) in [
            ("s3://AKIA:hunter2@bucket/prefix", "s3://..@bucket/prefix"),
            ("https://tok3n@cdn.example", "https://..@cdn.example"),
            ("http://a@b@host:1/x?sig=1#f", "http://..@host:1/x?.."),
            ("https://cdn.example/b?token=1", "https://cdn.example/b?.."),
            // Whatever precedes the last `@` may be a password holding `/`, `?` or `#`.
            ("https://cdn.example/a@b", "https://..@b"),
            ("s3://AKID:wJalr/XUtn@bucket/p", "s3://..@bucket/p"),
            // A `?` or `#` before the last `@`: a password's, or a query's `@` before a secret.
            ("s3://AKID:wJalr/XUtn#F@bucket/p", "s3://.."),
            ("https://cdn.example/b?token=a@S3cret", "https://.."),
            ("https://cdn.example/b#a@S3cret", "https://.."),
            ("s3://bucket/p?x=a@S3cret", "s3://.."),
            ("s3://bucket/prefix", "s3://bucket/prefix"),
            ("/srv/bucket@2", "/srv/bucket@2"),
            ("file:///srv/x", "file:///srv/x"),
        ] {
            assert_eq!(shown_location(location), shown, "{location}");
        }
    }

    /// Credentials travel only where nobody on the way reads them: over TLS, or to this machine.
    #[test]
    fn credentials_in_a_plain_http_url_to_another_machine_are_refused() {
        for refused in [
            "http://tok3n:hunter2@cdn.example/b",
            "http://tok3n@10.0.0.1:9000/b",
            "HTTP://tok3n:hunter2@192.0.2.1/",
            "http://tok3n:hunter2@[2001:db8::1]:9/b",
            "http://tok3n:hunter2@localhost.example/b",
        ] {
            match HttpSource::new(refused) {
                Err(error @ VerifyError::UnsupportedLocation { .. }) => {
                    let shown = error.to_string();
                    assert!(shown.contains("use https://"), "{shown}");
                    assert!(
                        !shown.contains("hunter2") && !shown.contains("tok3n"),
                        "{shown}"
                    );
                }
                other => panic!("{refused}: expected a refusal, got {other:?}"),
            }
        }
        for accepted in [
            "http://tok3n:hunter2@127.0.0.1:9/b",
            "http://tok3n:hunter2@127.8.0.1:9/b",
            "http://tok3n:hunter2@[::1]:9/b",
            "http://tok3n:hunter2@LocalHost:9/b",
            "http://cdn.example/b",
        ] {
            assert!(HttpSource::new(accepted).is_ok(), "{accepted}");
        }
        let roots = RootCertStore::empty();
        assert!(HttpSource::with_roots("https://tok3n:hunter2@cdn.example/b", roots).is_ok());
    }

    /// A password holding `/`, `?` or `#` unescaped (as base64 tokens and cloud secrets
    /// often do) makes a URL whose user information ends early: the rest reads as a port, a
    /// path or a fragment. Such a URL is refused, without a fragment of the password in the
    /// message, and is never fetched from (the host it would name is the user name).
    #[test]
    fn a_password_holding_characters_a_url_reserves_is_refused_and_shown_nowhere() {
        for (refused, secret) in [
            ("https://tok3n:abc/Def+GhiJkl=@cdn.example/b", "Def+GhiJkl"),
            ("http://tok3n:1234/S3cr3tTail@cdn.example/b", "S3cr3tTail"),
            ("https://tok3n:Sec#r3tTail@cdn.example/b", "r3tTail"),
            ("https://tok3n:Sec?r3tTail@cdn.example/b", "r3tTail"),
        ] {
            let shown = match HttpSource::new(refused) {
                Err(error @ VerifyError::UnsupportedLocation { .. }) => {
                    format!("{error} {error:?}")
                }
                other => panic!("{refused}: expected a refusal, got {other:?}"),
            };
            for fragment in [secret, "Sec", "tok3n", "abc", "1234"] {
                assert!(!shown.contains(fragment), "{refused}: {shown}");
            }
        }
    }

    /// Credentials in the bucket URL are sent (as Basic credentials) and shown nowhere: not
    /// in the source's description, its `Debug`, nor any error, the refusal of the URL itself
    /// included.
    #[tokio::test]
    async fn credentials_in_the_url_are_never_shown() {
        let source = HttpSource::new("http://tok3n:hunter2@127.0.0.1:9/bucket/").unwrap();
        assert_eq!(source.describe(), "http://..@127.0.0.1:9/bucket");
        assert_eq!(source.base_url(), "http://..@127.0.0.1:9/bucket");
        assert!(source.url_of("CA/x").unwrap().as_str().contains("hunter2"));
        let connection = source.get("CA/index.txt").await.unwrap_err().to_string();
        assert!(
            connection.starts_with("GET http://..@127.0.0.1:9/bucket/CA/index.txt: "),
            "{connection}"
        );
        let address = stalling_server(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n").await;
        let failing = HttpSource::new(&format!("http://tok3n:hunter2@{address}/b")).unwrap();
        let status = failing.get("CA/x").await.unwrap_err().to_string();
        let mut shown = vec![
            connection,
            status,
            format!("{source:?}"),
            format!("{failing:?}"),
        ];
        for refused in [
            "http://tok3n:hunter2@127.0.0.1:9/b?x=1",
            "https://tok3n:hunter2@/b",
            "gopher://tok3n:hunter2@127.0.0.1:9/b",
        ] {
            let error = source_for(refused).map(|s| s.describe()).unwrap_err();
            assert!(
                matches!(error, VerifyError::UnsupportedLocation { .. }),
                "{error}"
            );
            shown.push(error.to_string());
        }
        for shown in shown {
            assert!(
                !shown.contains("hunter2") && !shown.contains("tok3n"),
                "{shown}"
            );
        }
    }

    #[tokio::test]
    async fn a_folder_source_refuses_keys_outside_its_root() {
        let source = DirectorySource::new(std::env::temp_dir());
        assert!(matches!(
            source.get("../etc/passwd").await,
            Err(VerifyError::UnsafeKey { .. })
        ));
        assert!(source.get("no-such-object-here/x").await.unwrap().is_none());
    }
}
