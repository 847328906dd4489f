//! The sources that fetch (DESIGN §6): a folder (a `file://` bucket or a copy) and an HTTP or
//! HTTPS server (the CDN or a local static server), with [`source_for`] to pick one for a
//! location. Behind the `fetch` feature (on by default), because they need an async runtime,
//! sockets and TLS: the fuzz targets use `verify` without it, over a
//! [`MemorySource`](crate::MemorySource), and build none of that.
//!
//! Like every source, these only fetch bytes by object key and never judge them; they never
//! write, never read outside their root, never follow redirects and never hold an object larger
//! than [`MAX_OBJECT_BYTES`].

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diagnosis_domain::error::chain;
use diagnosis_format::names::check_object_key;
use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::AsyncReadExt as _;
use url::Url;

use crate::VerifyError;
use crate::source::{CacheControl, MAX_OBJECT_BYTES, Served, Source, scheme_of};

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
/// not followed. `https://` checks the server's certificate chain and name against the
/// operating system's trusted certificates (`rustls-native-certs`, which honours
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`), on rustls with the aws-lc-rs provider: the TLS stack
/// of the database connection, so the binary carries one.
#[derive(Debug, Clone)]
pub struct HttpSource {
    base_url: String,
    transport: Transport,
}

/// An `http://` source never makes a TLS connection and an `https://` source never makes a
/// plain one: no redirect is followed, so every request goes to the scheme of the base URL.
#[derive(Debug, Clone)]
enum Transport {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

impl HttpSource {
    /// A source for objects under `base_url` (`http[s]://host[:port][/prefix]`); `https://`
    /// trusts the operating system's certificates.
    pub fn new(base_url: &str) -> Result<Self, VerifyError> {
        Self::build(base_url, None)
    }

    /// A source for objects under `base_url` whose `https://` server must present a chain
    /// leading to one of `roots` instead of the operating system's certificates.
    pub fn with_roots(base_url: &str, roots: RootCertStore) -> Result<Self, VerifyError> {
        Self::build(base_url, Some(roots))
    }

    fn build(base_url: &str, roots: Option<RootCertStore>) -> Result<Self, VerifyError> {
        let unsupported = |reason: &str| VerifyError::UnsupportedLocation {
            location: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = base_url
            .parse()
            .map_err(|error: hyper::http::uri::InvalidUri| unsupported(&error.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(unsupported("only http:// and https:// URLs can be fetched")),
        };
        if uri
            .authority()
            .is_none_or(|authority| authority.host().is_empty())
        {
            return Err(unsupported("the URL names no host"));
        }
        if uri.query().is_some() {
            return Err(unsupported(
                "the URL has a query; give the bucket root, object keys are appended to it",
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let transport = if tls {
            let roots = match roots {
                Some(roots) => roots,
                None => system_roots().map_err(|reason| unsupported(&reason))?,
            };
            let config = ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|error| unsupported(&error.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            // The connector speaks TLS itself, after a TCP connection to an `https` URI.
            connector.enforce_http(false);
            let connector = HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_only()
                .enable_http1()
                .wrap_connector(connector);
            Transport::Tls(Client::builder(TokioExecutor::new()).build(connector))
        } else {
            Transport::Plain(Client::builder(TokioExecutor::new()).build(connector))
        };
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            transport,
        })
    }

    /// The bucket root, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL an object key is fetched from.
    fn url_of(&self, key: &str) -> String {
        let mut url = String::with_capacity(self.base_url.len() + 1 + key.len());
        url.push_str(&self.base_url);
        url.push('/');
        for byte in key.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
                url.push(char::from(byte));
            } else {
                url.push_str(&format!("%{byte:02X}"));
            }
        }
        url
    }

    /// The object under `key`: `200` is the object, `404` and `403` are no such object,
    /// anything else is an error.
    async fn fetch(&self, key: &str) -> Result<Option<Served>, VerifyError> {
        let url = self.url_of(key);
        match self.answer(&url, &url).await? {
            HttpAnswer::Object(served) => Ok(Some(served)),
            HttpAnswer::Status(404 | 403) => Ok(None),
            HttpAnswer::Status(status) => Err(VerifyError::HttpStatus { url, status }),
        }
    }

    /// `GET url`, the body read only for `200`. `shown` names the request in errors, so a URL
    /// that carries a token never reaches a message.
    pub(crate) async fn answer(&self, url: &str, shown: &str) -> Result<HttpAnswer, VerifyError> {
        let failed = |reason: String| VerifyError::Http {
            url: shown.to_owned(),
            reason,
        };
        let uri: Uri = url
            .parse()
            .map_err(|error: hyper::http::uri::InvalidUri| failed(error.to_string()))?;
        let request = Request::get(uri)
            .header(hyper::header::USER_AGENT, "diagnosis-exporter-verify")
            .body(Empty::<Bytes>::new())
            .map_err(|error| failed(error.to_string()))?;
        let exchange = async {
            let response = match &self.transport {
                Transport::Plain(client) => client.request(request).await,
                Transport::Tls(client) => client.request(request).await,
            };
            let response = response.map_err(|error| match untrusted_certificate(&error) {
                Some(reason) => VerifyError::UntrustedServer {
                    url: shown.to_owned(),
                    reason,
                },
                None => failed(error_chain(&error)),
            })?;
            if response.status() != StatusCode::OK {
                return Ok(HttpAnswer::Status(response.status().as_u16()));
            }
            let cache_control = response
                .headers()
                .get(hyper::header::CACHE_CONTROL)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
            let limit = usize::try_from(MAX_OBJECT_BYTES).unwrap_or(usize::MAX);
            match Limited::new(response.into_body(), limit).collect().await {
                Ok(body) => Ok(HttpAnswer::Object(Served {
                    bytes: body.to_bytes(),
                    cache_control: CacheControl::Kept(cache_control),
                })),
                Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                    Err(VerifyError::TooLarge {
                        location: shown.to_owned(),
                        limit: MAX_OBJECT_BYTES,
                    })
                }
                Err(error) => Err(failed(error_chain(error.as_ref()))),
            }
        };
        tokio::time::timeout(HTTP_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(failed(format!(
                    "no complete answer within {} seconds",
                    HTTP_TIMEOUT.as_secs()
                )))
            })
    }
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

/// An error and its causes on one line: connection errors say little at the top level.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    chain(error)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
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
        location: path_or_url.to_owned(),
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
            source.url_of("CA/index.txt"),
            "http://127.0.0.1:8080/bucket/CA/index.txt"
        );
        assert_eq!(
            source.url_of("a b/é?#"),
            "http://127.0.0.1:8080/bucket/a%20b/%C3%A9%3F%23"
        );
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
