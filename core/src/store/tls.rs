//! `DATABASE_URL`'s TLS parameters, read as libpq reads them (DESIGN §6, §7).
//!
//! tokio-postgres itself knows only `sslmode=disable|prefer|require` and no `sslrootcert`, so
//! [`DatabaseUrl::parse`] takes `sslmode` and `sslrootcert` out of the query string, hands the
//! rest to tokio-postgres, and [`TlsSettings::client_config`] builds the rustls configuration that
//! gives each mode libpq's meaning:
//!
//! | `sslmode` | TLS | certificate check |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it | none; the chain when `sslrootcert` is given |
//! | `require` | always | none; the chain when `sslrootcert` is given (libpq: "behaves as verify-ca") |
//! | `verify-ca` | always | the chain |
//! | `verify-full` | always | the chain and the host name or IP address |
//!
//! Trusted roots come from the `sslrootcert` PEM file (one certificate or a bundle, such as the
//! RDS bundle); without it, `verify-ca` and `verify-full` use the operating system's store
//! (`rustls-native-certs`, where an operator installs a private CA next to the public ones, and
//! already built for the object-store client). `sslrootcert=system` asks for that store
//! explicitly and, as in libpq 16, implies `verify-full`. libpq's other default,
//! `~/.postgresql/root.crt`, is not read: name the file in `sslrootcert`.
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
    /// The operating system's trusted certificates (`sslrootcert=system`, or no `sslrootcert`
    /// with a `verify-*` mode).
    System,
}

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
    /// `sslrootcert` as given (`None` when absent).
    pub root_cert: Option<RootCertificates>,
}

impl TlsSettings {
    /// How the certificate is checked, libpq's rules applied.
    pub fn verification(&self) -> Verification {
        match (self.mode, &self.root_cert) {
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, None) => Verification::None,
            (
                SslMode::Disable | SslMode::Prefer | SslMode::Require | SslMode::VerifyCa,
                Some(_),
            )
            | (SslMode::VerifyCa, None) => Verification::Chain,
            (SslMode::VerifyFull, _) => Verification::Full,
        }
    }

    /// The roots a check uses: the file, else the system store.
    pub fn roots(&self) -> Option<RootCertificates> {
        match self.verification() {
            Verification::None => None,
            Verification::Chain | Verification::Full => {
                Some(self.root_cert.clone().unwrap_or(RootCertificates::System))
            }
        }
    }

    /// The rustls configuration for this mode (`None` for `disable`). Reads the `sslrootcert`
    /// file or the system store; the error says what is wrong without the URL.
    pub fn client_config(&self) -> Result<Option<ClientConfig>, String> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.roots() {
            None => Arc::new(WithoutName {
                roots: None,
                provider: Arc::clone(&provider),
            }),
            Some(roots) => {
                let roots = Arc::new(load_roots(&roots)?);
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
        match &self.root_cert {
            None => Ok(()),
            Some(RootCertificates::System) => f.write_str(", sslrootcert=system"),
            Some(RootCertificates::File(path)) => {
                write!(f, ", sslrootcert={}", path.display())
            }
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
    /// Parses a `postgres://` URL. The error never quotes the URL (it may hold a password), only
    /// the TLS words an operator typed, which are not secret.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
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
            // libpq 16: sslrootcert=system makes verify-full the default and forbids weaker modes,
            // since the system store trusts every public CA and only the name check ties a
            // certificate to this server.
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
            tls: TlsSettings { mode, root_cert },
        })
    }
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
        RootCertificates::File(path) => {
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
                    "no sslrootcert is given and the system has no trusted certificates \
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

    fn url(query: &str) -> String {
        format!("postgres://diagnosis:{PASSWORD}@db.internal:5432/diagnosis{query}")
    }

    fn parse(query: &str) -> Result<DatabaseUrl, String> {
        DatabaseUrl::parse(&url(query))
    }

    fn settings(query: &str) -> TlsSettings {
        parse(query).unwrap_or_else(|e| panic!("{query}: {e}")).tls
    }

    #[test]
    fn every_mode_gets_libpqs_meaning() {
        use RootCertificates::{File, System};
        let ca = || Some(File(PathBuf::from("/etc/ca.pem")));
        let cases: &[(
            &str,
            SslMode,
            Option<RootCertificates>,
            Verification,
            Negotiation,
        )] = &[
            (
                "",
                SslMode::Prefer,
                None,
                Verification::None,
                Negotiation::Prefer,
            ),
            (
                "?sslmode=disable",
                SslMode::Disable,
                None,
                Verification::None,
                Negotiation::Disable,
            ),
            (
                "?sslmode=prefer",
                SslMode::Prefer,
                None,
                Verification::None,
                Negotiation::Prefer,
            ),
            (
                "?sslmode=require",
                SslMode::Require,
                None,
                Verification::None,
                Negotiation::Require,
            ),
            (
                "?sslmode=require&sslrootcert=/etc/ca.pem",
                SslMode::Require,
                ca(),
                Verification::Chain,
                Negotiation::Require,
            ),
            (
                "?sslrootcert=/etc/ca.pem",
                SslMode::Prefer,
                ca(),
                Verification::Chain,
                Negotiation::Prefer,
            ),
            (
                "?sslmode=verify-ca",
                SslMode::VerifyCa,
                None,
                Verification::Chain,
                Negotiation::Require,
            ),
            (
                "?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
                SslMode::VerifyCa,
                ca(),
                Verification::Chain,
                Negotiation::Require,
            ),
            (
                "?sslmode=verify-full",
                SslMode::VerifyFull,
                None,
                Verification::Full,
                Negotiation::Require,
            ),
            (
                "?sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-full",
                SslMode::VerifyFull,
                ca(),
                Verification::Full,
                Negotiation::Require,
            ),
            (
                "?sslrootcert=system",
                SslMode::VerifyFull,
                Some(System),
                Verification::Full,
                Negotiation::Require,
            ),
        ];
        for (query, mode, root_cert, verification, negotiation) in cases {
            let parsed = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(parsed.tls.mode, *mode, "{query}");
            assert_eq!(parsed.tls.root_cert, *root_cert, "{query}");
            assert_eq!(parsed.tls.verification(), *verification, "{query}");
            assert_eq!(parsed.config.get_ssl_mode(), *negotiation, "{query}");
        }
    }

    #[test]
    fn verify_modes_without_a_file_use_the_system_store() {
        assert_eq!(
            settings("?sslmode=verify-ca").roots(),
            Some(RootCertificates::System)
        );
        assert_eq!(
            settings("?sslmode=verify-full").roots(),
            Some(RootCertificates::System)
        );
        assert_eq!(settings("?sslmode=require").roots(), None);
        assert_eq!(
            settings("?sslmode=verify-full&sslrootcert=/ca.pem").roots(),
            Some(RootCertificates::File(PathBuf::from("/ca.pem")))
        );
    }

    #[test]
    fn the_rest_of_the_url_reaches_tokio_postgres() {
        let parsed =
            parse("?application_name=x&sslmode=verify-full&connect_timeout=3&sslrootcert=/ca.pem")
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
        let dir =
            std::env::temp_dir().join(format!("diagnosis-tls-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let missing = dir.join("missing.pem");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap_or_else(|e| panic!("{e}"));
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            (&missing, "cannot read sslrootcert"),
            (&empty, "holds no certificate"),
            (&garbage, "holds no usable CA certificate"),
        ];
        for (path, expected) in cases {
            let query = format!("?sslmode=verify-full&sslrootcert={}", path.display());
            let error = settings(&query)
                .client_config()
                .map(|_| ())
                .expect_err(&query);
            assert!(error.contains(expected), "{query}: {error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
        }
        // Without a check, the file is not needed at all.
        assert!(settings("?sslmode=require").client_config().is_ok());
        assert!(matches!(
            settings("?sslmode=disable").client_config(),
            Ok(None)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn settings_read_as_an_operator_wrote_them() {
        assert_eq!(
            settings("?sslmode=verify-full&sslrootcert=/etc/ca.pem").to_string(),
            "sslmode=verify-full, sslrootcert=/etc/ca.pem"
        );
        assert_eq!(settings("").to_string(), "sslmode=prefer");
    }
}
