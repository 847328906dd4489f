//! `DATABASE_URL`'s TLS parameters, read as libpq reads them (DESIGN §6, §7).
//!
//! Why written here: no crate gives tokio-postgres libpq's `sslmode`/`sslrootcert` meanings,
//! and operators copy their `DATABASE_URL` from libpq tools, so a mode must mean what it means
//! there (`database_tls::*` holds each mode to it against a TLS-only cluster).
//!
//! tokio-postgres itself knows only `sslmode=disable|prefer|require` and no `sslrootcert`, so
//! [`DatabaseUrl::parse`] takes `sslmode` and `sslrootcert` out of the query string, hands the
//! rest to tokio-postgres, and [`TlsSettings::client_config`] builds the rustls configuration that
//! gives each mode libpq's meaning (libpq's "SSL Mode Descriptions" and its `sslrootcert`).
//!
//! **The root certificate.** `sslrootcert=/path` names a PEM file (one certificate or a bundle,
//! such as the RDS bundle). Without `sslrootcert`, libpq's default `~/.postgresql/root.crt` is
//! used when it exists; the home directory is `HOME`, else the user's entry in the password
//! database, as libpq finds it. `sslrootcert=system` means the operating system's trusted
//! certificates (`rustls-native-certs`, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR` as
//! OpenSSL does); as in libpq 16 it makes `verify-full` the default and refuses any weaker mode,
//! since the system store trusts every public CA and only the name check ties a certificate to
//! this server. A root file "exists" as libpq's `stat()` says: once it exists, a file that cannot
//! be read or holds no certificate stops the binary in every mode.
//!
//! | `sslmode` | TLS | no root certificate | a root certificate (file, `~/.postgresql/root.crt`, `system`) |
//! |---|---|---|---|
//! | `disable` | never | — | not read |
//! | `prefer` (the default) | when the server offers it | any certificate | the chain |
//! | `require` | always | any certificate | the chain (libpq: "behaves as verify-ca") |
//! | `verify-ca` | always | refused at start, naming `sslrootcert` | the chain |
//! | `verify-full` | always | refused at start, naming `sslrootcert` | the chain and the host name or IP address |
//!
//! Two more of libpq's rules hold:
//!
//! * under `prefer`, a TLS attempt that fails (a certificate the root refuses, a refused login)
//!   is tried again without TLS, and only when both fail does the connection fail, with both
//!   reasons (`store::connect`);
//! * an `sslrootcert` file that does not exist is no root certificate: `verify-ca` and
//!   `verify-full` stop at start, `prefer` and `require` connect without checking the chain, as
//!   libpq does, and the binary logs a warning naming the file.
//!
//! `~/.postgresql/root.crl` and client certificates (`sslcert`, `sslkey`) are not supported; a
//! client certificate is refused at start.
//!
//! The crypto provider is aws-lc-rs, the one the object-store client already builds, so the
//! binaries carry a single TLS stack. The TLS connector is `tokio-postgres-rustls`: maintained
//! alongside tokio-postgres, and it implements SCRAM channel binding (`tls-server-end-point`),
//! which a hand-written connector would leave out.
//!
//! This module must never put the URL (which holds the password) into an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::chain;

/// How many characters of a rejected `sslmode` an error quotes.
const MAX_QUOTED_CHARS: usize = 40;

/// libpq's `sslmode`, restricted to the modes DESIGN §6 lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The word as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode, String> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(
                "sslmode=allow is not supported: use prefer (TLS when the server \
                            offers it) or disable"
                    .to_owned(),
            ),
            other => {
                let shown: String = other.chars().take(MAX_QUOTED_CHARS).collect();
                Err(format!(
                    "sslmode must be one of disable, prefer, require, verify-ca, verify-full, \
                     got {shown:?}"
                ))
            }
        }
    }

    /// What tokio-postgres does before the handshake: whether TLS is tried and whether it is
    /// required.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCertificates {
    /// A PEM file of one or more certificates (`sslrootcert=/path`).
    File(PathBuf),
    /// libpq's default when `sslrootcert` is not given: `~/.postgresql/root.crt`, which exists.
    HomeFile(PathBuf),
    /// The operating system's trusted certificates (`sslrootcert=system`).
    System,
}

/// libpq's default root certificate file, under the home directory.
const HOME_ROOT_CERT: &str = ".postgresql/root.crt";

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Encryption only (libpq's `prefer` and `require` without a root certificate).
    None,
    /// The chain up to a trusted root, not the name (libpq's `verify-ca`).
    Chain,
    /// The chain and the host name or IP address (libpq's `verify-full`).
    Full,
}

/// The TLS half of `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// The root certificate in use: `sslrootcert` as given, else `~/.postgresql/root.crt` when
    /// it exists; `None` when there is none.
    pub root_cert: Option<RootCertificates>,
    /// An `sslrootcert` file that does not exist, under a mode that then checks nothing (libpq's
    /// rule for `prefer` and `require`): worth a warning at start.
    pub missing_root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// How the certificate is checked, libpq's rules applied.
    pub fn verification(&self) -> Verification {
        match (self.mode, &self.root_cert) {
            (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => {
                Verification::None
            }
            (SslMode::Prefer | SslMode::Require, Some(_)) | (SslMode::VerifyCa, _) => {
                Verification::Chain
            }
            (SslMode::VerifyFull, _) => Verification::Full,
        }
    }

    /// The roots a check uses (`None` when nothing is checked).
    pub fn roots(&self) -> Option<&RootCertificates> {
        match self.verification() {
            Verification::None => None,
            Verification::Chain | Verification::Full => self.root_cert.as_ref(),
        }
    }

    /// The rustls configuration for this mode (`None` for `disable`). Reads the root
    /// certificate file or the system store; the error says what is wrong without the URL.
    pub fn client_config(&self) -> Result<Option<ClientConfig>, String> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (self.verification(), self.roots()) {
            (Verification::None, _) => Arc::new(WithoutName {
                roots: None,
                provider: Arc::clone(&provider),
            }),
            (Verification::Chain | Verification::Full, None) => {
                return Err(no_root_certificate(self.mode, None));
            }
            (_, Some(roots)) => {
                let roots = Arc::new(load_roots(roots)?);
                match self.verification() {
                    Verification::Full => {
                        WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                            .build()
                            .map_err(|e| format!("cannot use the trusted certificates: {e}"))?
                    }
                    Verification::Chain | Verification::None => Arc::new(WithoutName {
                        roots: Some(roots),
                        provider: Arc::clone(&provider),
                    }),
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(config))
    }
}

impl fmt::Display for TlsSettings {
    /// `sslmode=verify-full, sslrootcert=/etc/ca.pem`: what an operator checks first when a
    /// connection fails.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sslmode={}", self.mode.as_str())?;
        if let Some(missing) = &self.missing_root_cert {
            write!(f, ", sslrootcert={} (does not exist)", missing.display())?;
        }
        match &self.root_cert {
            None => Ok(()),
            Some(RootCertificates::System) => f.write_str(", sslrootcert=system"),
            Some(RootCertificates::File(path)) => {
                write!(f, ", sslrootcert={}", path.display())
            }
            Some(RootCertificates::HomeFile(path)) => write!(
                f,
                ", root certificate {} (no sslrootcert: libpq's default ~/{HOME_ROOT_CERT})",
                path.display()
            ),
        }
    }
}

/// `DATABASE_URL` split into what tokio-postgres reads and the TLS settings.
#[derive(Clone)]
pub struct DatabaseUrl {
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseUrl")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl DatabaseUrl {
    /// Parses a `postgres://` URL, looking for `~/.postgresql/root.crt` in the home directory of
    /// the process. The error never quotes the URL (it may hold a password), only the TLS words
    /// an operator typed, which are not secret.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        DatabaseUrl::parse_with_home(url, home_directory().as_deref())
    }

    /// [`DatabaseUrl::parse`] with the home directory given (`None`: it is unknown).
    pub fn parse_with_home(url: &str, home: Option<&Path>) -> Result<DatabaseUrl, String> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut mode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = Some(SslMode::parse(&decode(value)?)?),
                "sslrootcert" => {
                    let value = decode(value)?;
                    root_cert = match value.as_str() {
                        "" => None,
                        "system" => Some(RootCertificates::System),
                        path => Some(RootCertificates::File(PathBuf::from(path))),
                    };
                }
                "sslcert" | "sslkey" | "sslpassword" => {
                    return Err(
                        "client certificates (sslcert, sslkey, sslpassword) are not supported"
                            .to_owned(),
                    );
                }
                _ => kept.push(pair),
            }
        }
        let mode = match (mode, &root_cert) {
            // libpq 16: sslrootcert=system makes verify-full the default and forbids weaker modes.
            (None, Some(RootCertificates::System)) => SslMode::VerifyFull,
            (Some(mode), Some(RootCertificates::System)) if mode != SslMode::VerifyFull => {
                return Err(format!(
                    "sslrootcert=system requires sslmode=verify-full, got sslmode={}",
                    mode.as_str()
                ));
            }
            (Some(mode), _) => mode,
            (None, _) => SslMode::Prefer,
        };
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|err| invalid_url_detail(&err))?;
        config.ssl_mode(mode.negotiation());
        Ok(DatabaseUrl {
            config,
            tls: root_certificate(mode, root_cert, home)?,
        })
    }
}

/// The root certificate libpq would use for `mode`: the `sslrootcert` given, else
/// `~/.postgresql/root.crt` when it exists. A file counts once it exists (libpq's `stat()`);
/// reading it comes later ([`TlsSettings::client_config`]).
fn root_certificate(
    mode: SslMode,
    given: Option<RootCertificates>,
    home: Option<&Path>,
) -> Result<TlsSettings, String> {
    let settings = |root_cert, missing_root_cert| TlsSettings {
        mode,
        root_cert,
        missing_root_cert,
    };
    let needs_root = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
    match given {
        _ if mode == SslMode::Disable => Ok(settings(given, None)),
        Some(RootCertificates::File(path)) if !needs_root && !path.exists() => {
            Ok(settings(None, Some(path)))
        }
        Some(given) => Ok(settings(Some(given), None)),
        None => {
            let default = home.map(|home| home.join(HOME_ROOT_CERT));
            match default {
                Some(path) if path.exists() => {
                    Ok(settings(Some(RootCertificates::HomeFile(path)), None))
                }
                _ if needs_root => Err(no_root_certificate(mode, home)),
                _ => Ok(settings(None, None)),
            }
        }
    }
}

/// Why `verify-ca` or `verify-full` cannot start: no root certificate to check the server with.
fn no_root_certificate(mode: SslMode, home: Option<&Path>) -> String {
    let looked = match home {
        Some(home) => format!("{} does not exist", home.join(HOME_ROOT_CERT).display()),
        None => format!("the home directory, where libpq looks for ~/{HOME_ROOT_CERT}, is unknown"),
    };
    format!(
        "sslmode={} needs a root certificate: set sslrootcert to the CA certificate file, or \
         sslrootcert=system for the operating system's trusted roots (no sslrootcert is given \
         and {looked})",
        mode.as_str()
    )
}

/// The home directory as libpq finds it: `HOME`, else the user's entry in the password database.
fn home_directory() -> Option<PathBuf> {
    std::env::home_dir().filter(|home| !home.as_os_str().is_empty())
}

/// What tokio-postgres's parser said, when it can be repeated safely.
///
/// Only its "invalid value for option `port`" names a fixed option; its other messages may quote
/// parts of the URL (an unknown parameter's name), so they are replaced.
fn invalid_url_detail(err: &tokio_postgres::Error) -> String {
    let detail = chain(err)
        .map(ToString::to_string)
        .filter(|message| message.starts_with("invalid value for option `"))
        .last()
        .unwrap_or_else(|| {
            "check the user, host, port, database name and query parameters".to_owned()
        });
    format!("is not a valid PostgreSQL URL: {detail}")
}

/// A query value percent-decoded as libpq decodes URIs (`+` stays `+`).
fn decode(value: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| "a TLS parameter is not valid UTF-8 once percent-decoded".to_owned())
}

/// The trusted roots: every certificate of the PEM file, or the system store.
fn load_roots(source: &RootCertificates) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match source {
        RootCertificates::File(path) | RootCertificates::HomeFile(path) => {
            let certs = read_pem_certificates(path)?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert {} holds no usable CA certificate",
                    path.display()
                ));
            }
        }
        RootCertificates::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "sslrootcert=system, but the system has no trusted certificates \
                     (install ca-certificates or set sslrootcert to the server's CA file)"
                        .to_owned(),
                );
            }
        }
    }
    Ok(roots)
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "sslrootcert {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A verifier that never checks the host name: `verify-ca` (and `prefer`/`require` with a root
/// certificate file), whose chain must lead to one of `roots`, and `prefer`/`require` without a
/// root certificate (`roots: None`), which encrypts against passive listeners only and accepts
/// any certificate, as in libpq. Either way the handshake signature is verified, so the server
/// must hold the key of the certificate it presents.
#[derive(Debug)]
struct WithoutName {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for WithoutName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let certificate = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &certificate,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio_postgres::config::SslMode as Negotiation;

    const PASSWORD: &str = "s3cr3t-pw";

    /// A directory of its own under the system's temporary directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("diagnosis-tls-{:016x}", rand::random::<u64>()));
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            TempDir(dir)
        }

        /// Writes `contents` to `name` (parents created) and returns its path.
        fn file(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
            }
            std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{e}"));
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn url(query: &str) -> String {
        format!("postgres://diagnosis:{PASSWORD}@db.internal:5432/diagnosis{query}")
    }

    /// Parsed as by a process without a home directory.
    fn parse(query: &str) -> Result<DatabaseUrl, String> {
        DatabaseUrl::parse_with_home(&url(query), None)
    }

    fn settings(query: &str) -> TlsSettings {
        parse(query).unwrap_or_else(|e| panic!("{query}: {e}")).tls
    }

    fn settings_at_home(query: &str, home: &Path) -> TlsSettings {
        DatabaseUrl::parse_with_home(&url(query), Some(home))
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .tls
    }

    #[test]
    fn every_mode_gets_libpqs_meaning() {
        use RootCertificates::{File, System};
        let dir = TempDir::new();
        let ca_path = dir.file("ca.pem", "any");
        let ca = || Some(File(ca_path.clone()));
        let cases: Vec<(
            String,
            SslMode,
            Option<RootCertificates>,
            Verification,
            Negotiation,
        )> = vec![
            (
                String::new(),
                SslMode::Prefer,
                None,
                Verification::None,
                Negotiation::Prefer,
            ),
            (
                "?sslmode=disable".into(),
                SslMode::Disable,
                None,
                Verification::None,
                Negotiation::Disable,
            ),
            (
                format!("?sslmode=disable&sslrootcert={}", ca_path.display()),
                SslMode::Disable,
                ca(),
                Verification::None,
                Negotiation::Disable,
            ),
            (
                "?sslmode=prefer".into(),
                SslMode::Prefer,
                None,
                Verification::None,
                Negotiation::Prefer,
            ),
            (
                "?sslmode=require".into(),
                SslMode::Require,
                None,
                Verification::None,
                Negotiation::Require,
            ),
            (
                format!("?sslmode=require&sslrootcert={}", ca_path.display()),
                SslMode::Require,
                ca(),
                Verification::Chain,
                Negotiation::Require,
            ),
            (
                format!("?sslrootcert={}", ca_path.display()),
                SslMode::Prefer,
                ca(),
                Verification::Chain,
                Negotiation::Prefer,
            ),
            (
                format!("?sslmode=verify-ca&sslrootcert={}", ca_path.display()),
                SslMode::VerifyCa,
                ca(),
                Verification::Chain,
                Negotiation::Require,
            ),
            (
                format!(
                    "?sslrootcert={}&sslmode=verify-full",
                    ca_path.display().to_string().replace('/', "%2F")
                ),
                SslMode::VerifyFull,
                ca(),
                Verification::Full,
                Negotiation::Require,
            ),
            (
                "?sslrootcert=system".into(),
                SslMode::VerifyFull,
                Some(System),
                Verification::Full,
                Negotiation::Require,
            ),
            (
                "?sslmode=verify-full&sslrootcert=system".into(),
                SslMode::VerifyFull,
                Some(System),
                Verification::Full,
                Negotiation::Require,
            ),
        ];
        for (query, mode, root_cert, verification, negotiation) in &cases {
            let parsed = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(parsed.tls.mode, *mode, "{query}");
            assert_eq!(parsed.tls.root_cert, *root_cert, "{query}");
            assert_eq!(parsed.tls.verification(), *verification, "{query}");
            assert_eq!(parsed.config.get_ssl_mode(), *negotiation, "{query}");
            assert_eq!(parsed.tls.missing_root_cert, None, "{query}");
        }
    }

    #[test]
    fn verify_modes_without_a_root_certificate_are_refused_naming_sslrootcert() {
        let empty_home = TempDir::new();
        for query in [
            "?sslmode=verify-ca",
            "?sslmode=verify-full",
            "?sslmode=verify-full&sslrootcert=",
        ] {
            let unknown_home = parse(query).map(|_| ()).expect_err(query);
            assert!(
                unknown_home.contains("needs a root certificate"),
                "{unknown_home}"
            );
            assert!(unknown_home.contains("set sslrootcert"), "{unknown_home}");
            assert!(unknown_home.contains("home directory"), "{unknown_home}");
            let error = DatabaseUrl::parse_with_home(&url(query), Some(&empty_home.0))
                .map(|_| ())
                .expect_err(query);
            assert!(error.contains("set sslrootcert"), "{error}");
            let expected = empty_home.0.join(".postgresql/root.crt");
            assert!(
                error.contains(&format!("{} does not exist", expected.display())),
                "{error}"
            );
            assert!(!error.contains(PASSWORD), "{error}");
        }
        // The settings cannot be built around the check either.
        let settings = TlsSettings {
            mode: SslMode::VerifyCa,
            root_cert: None,
            missing_root_cert: None,
        };
        let error = settings.client_config().map(|_| ()).expect_err("refused");
        assert!(error.contains("set sslrootcert"), "{error}");
    }

    #[test]
    fn the_home_root_certificate_is_the_default_in_every_mode_that_uses_tls() {
        use RootCertificates::{File, HomeFile, System};
        let home = TempDir::new();
        let default = home.file(".postgresql/root.crt", "any");
        let other = home.file("other.pem", "any");
        let cases = [
            ("", Some(HomeFile(default.clone())), Verification::Chain),
            (
                "?sslmode=prefer",
                Some(HomeFile(default.clone())),
                Verification::Chain,
            ),
            (
                "?sslmode=require",
                Some(HomeFile(default.clone())),
                Verification::Chain,
            ),
            (
                "?sslmode=verify-ca",
                Some(HomeFile(default.clone())),
                Verification::Chain,
            ),
            (
                "?sslmode=verify-full",
                Some(HomeFile(default.clone())),
                Verification::Full,
            ),
            ("?sslmode=disable", None, Verification::None),
            ("?sslrootcert=system", Some(System), Verification::Full),
        ];
        for (query, root_cert, verification) in cases {
            let tls = settings_at_home(query, &home.0);
            assert_eq!(tls.root_cert, root_cert, "{query}");
            assert_eq!(tls.verification(), verification, "{query}");
        }
        // A named file wins over the default.
        let named = settings_at_home(
            &format!("?sslmode=verify-full&sslrootcert={}", other.display()),
            &home.0,
        );
        assert_eq!(named.root_cert, Some(File(other)));
        assert_eq!(
            settings_at_home("?sslmode=verify-full", &home.0).to_string(),
            format!(
                "sslmode=verify-full, root certificate {} (no sslrootcert: libpq's default \
                 ~/.postgresql/root.crt)",
                default.display()
            )
        );
    }

    #[test]
    fn a_named_root_certificate_that_does_not_exist_checks_nothing_unless_the_mode_needs_one() {
        let dir = TempDir::new();
        let missing = dir.0.join("missing.pem");
        let home = TempDir::new();
        home.file(".postgresql/root.crt", "any");
        for mode in ["prefer", "require"] {
            let query = format!("?sslmode={mode}&sslrootcert={}", missing.display());
            // As in libpq, the named file replaces the default even when it does not exist.
            let tls = settings_at_home(&query, &home.0);
            assert_eq!(tls.root_cert, None, "{query}");
            assert_eq!(tls.missing_root_cert.as_ref(), Some(&missing), "{query}");
            assert_eq!(tls.verification(), Verification::None, "{query}");
            assert!(tls.client_config().is_ok(), "{query}");
            assert!(tls.to_string().contains("(does not exist)"), "{tls}");
        }
        for mode in ["verify-ca", "verify-full"] {
            let query = format!("?sslmode={mode}&sslrootcert={}", missing.display());
            let tls = settings(&query);
            assert_eq!(
                tls.root_cert,
                Some(RootCertificates::File(missing.clone())),
                "{query}"
            );
            let error = tls.client_config().map(|_| ()).expect_err(&query);
            assert!(
                error.contains("cannot read sslrootcert"),
                "{query}: {error}"
            );
        }
    }

    #[test]
    fn the_rest_of_the_url_reaches_tokio_postgres() {
        let parsed =
            parse("?application_name=x&sslmode=verify-full&connect_timeout=3&sslrootcert=system")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.config.get_user(), Some("diagnosis"));
        assert_eq!(parsed.config.get_dbname(), Some("diagnosis"));
        assert_eq!(parsed.config.get_ports(), &[5432]);
        assert_eq!(parsed.config.get_application_name(), Some("x"));
        assert_eq!(
            parsed.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        assert_eq!(
            parsed.config.get_password(),
            Some(PASSWORD.as_bytes()),
            "the password is kept"
        );
    }

    #[test]
    fn invalid_values_are_refused_without_the_password() {
        let cases = [
            ("?sslmode=verify_full", "sslmode must be one of"),
            ("?sslmode=VERIFY-FULL", "sslmode must be one of"),
            ("?sslmode=allow", "sslmode=allow is not supported"),
            ("?sslmode=", "sslmode must be one of"),
            (
                "?sslmode=require&sslrootcert=system",
                "sslrootcert=system requires sslmode=verify-full",
            ),
            (
                "?sslmode=verify-ca&sslrootcert=system",
                "sslrootcert=system requires sslmode=verify-full",
            ),
            ("?sslcert=/c.pem&sslkey=/k.pem", "client certificates"),
            ("?sslrootcert=%FF", "not valid UTF-8"),
            ("?port=x", "invalid value for option `port`"),
            ("?s3cr3t-pw=1", "check the user, host, port"),
        ];
        for (query, expected) in cases {
            let error = parse(query).map(|_| ()).expect_err(query);
            assert!(error.contains(expected), "{query}: {error}");
            assert!(!error.contains(PASSWORD), "{query}: {error}");
        }
    }

    #[test]
    fn a_long_rejected_mode_is_shortened() {
        let error = parse(&format!("?sslmode={}", "x".repeat(500)))
            .map(|_| ())
            .expect_err("refused");
        assert!(error.len() < 200, "{error}");
    }

    #[test]
    fn root_certificate_files_are_checked() {
        let dir = TempDir::new();
        let empty = dir.file("empty.pem", "not a certificate\n");
        let garbage = dir.file(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let unreadable = dir.file("directory.pem/inside", "");
        let unreadable = unreadable
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let cases = [
            (&empty, "holds no certificate"),
            (&garbage, "holds no usable CA certificate"),
            (&unreadable, "cannot read sslrootcert"),
        ];
        for (path, expected) in cases {
            // A file that exists is read in every mode that uses TLS, as libpq does.
            for mode in ["prefer", "require", "verify-ca", "verify-full"] {
                let query = format!("?sslmode={mode}&sslrootcert={}", path.display());
                let error = settings(&query)
                    .client_config()
                    .map(|_| ())
                    .expect_err(&query);
                assert!(error.contains(expected), "{query}: {error}");
                assert!(error.contains(&path.display().to_string()), "{error}");
            }
        }
        // The default file too, once it exists.
        let home = TempDir::new();
        home.file(".postgresql/root.crt", "not a certificate\n");
        let error = settings_at_home("?sslmode=require", &home.0)
            .client_config()
            .map(|_| ())
            .expect_err("an unusable default root certificate was accepted");
        assert!(error.contains("holds no certificate"), "{error}");
        // Without a check, no file is needed at all.
        assert!(settings("?sslmode=require").client_config().is_ok());
        assert!(matches!(
            settings("?sslmode=disable").client_config(),
            Ok(None)
        ));
    }

    #[test]
    fn settings_read_as_an_operator_wrote_them() {
        let dir = TempDir::new();
        let ca = dir.file("ca.pem", "any");
        assert_eq!(
            settings(&format!(
                "?sslmode=verify-full&sslrootcert={}",
                ca.display()
            ))
            .to_string(),
            format!("sslmode=verify-full, sslrootcert={}", ca.display())
        );
        assert_eq!(settings("").to_string(), "sslmode=prefer");
        assert_eq!(
            settings("?sslrootcert=system").to_string(),
            "sslmode=verify-full, sslrootcert=system"
        );
    }
}
