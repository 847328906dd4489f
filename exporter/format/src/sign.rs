//! Sign step: `export.bin` becomes `export.sig` (DESIGN §4.1), plus loading, generating and
//! checking the P-256 keys involved.
//!
//! Each signature is ECDSA P-256 over SHA-256 of the **whole** `export.bin`, header included,
//! encoded as ASN.1 DER, with algorithm `1.2.840.10045.4.3.2`. Signing is deterministic
//! (RFC 6979), so rebuilding a window reproduces its files byte for byte.
//!
//! The signing key lives only with the exporter (DESIGN §7). Nothing in this module may print,
//! log or put into an error message any private key material: [`SigningKey`] has a redacted
//! `Debug`, PEM text read from disk is wiped after parsing, and errors name the file or the
//! variable, never its content.

use std::fmt;
use std::path::{Path, PathBuf};

use diagnosis_domain::domain::DEFAULT_REGION;
use diagnosis_domain::redacted::Redacted;
use diagnosis_proto::{Message as _, TekSignature, TekSignatureList};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, VerifyingKey};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::render::{BATCH_NUM, BATCH_SIZE, InvalidSignerInfo, MAX_SIGNERS, SignerInfo};

/// Default `SIGNING_KEY_VERSION` when exactly one key is configured (DESIGN §6).
pub const DEFAULT_KEY_VERSION: &str = "v1";
/// Default `SIGNING_KEY_ID` (DESIGN §4.1, §6): the platforms identify a health authority's key
/// by its mobile country code, the same MCC the apps send, which is the default region
/// ([`DEFAULT_REGION`], `302`, Canada).
pub const DEFAULT_KEY_ID: &str = DEFAULT_REGION;

/// Why signing keys could not be loaded or used. No variant carries key material.
#[derive(Debug, Error)]
pub enum SignError {
    /// A key file could not be read.
    #[error("SIGNING_KEY_FILE: cannot read {path}: {source}")]
    ReadKeyFile {
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file does not hold a P-256 private key in a PEM form we accept.
    #[error(
        "SIGNING_KEY_FILE: {source_name} is not a PEM-encoded P-256 private key \
         (PKCS#8 \"BEGIN PRIVATE KEY\" or SEC1 \"BEGIN EC PRIVATE KEY\"): {reason}"
    )]
    InvalidPrivateKey {
        /// The file (or other source) the PEM came from.
        source_name: String,
        /// What the decoder objected to; never the key itself.
        reason: String,
    },
    /// No key, or more than the platforms accept.
    #[error("SIGNING_KEY_FILE: 1 to {MAX_SIGNERS} signing keys are needed, got {count}")]
    KeyCount {
        /// How many were configured.
        count: usize,
    },
    /// An entry of a comma-separated list is empty.
    #[error("{variable}: entry {entry} is empty")]
    EmptyEntry {
        /// The variable.
        variable: &'static str,
        /// 1-based position.
        entry: usize,
    },
    /// Several keys but no versions: which key is which cannot be guessed.
    #[error(
        "SIGNING_KEY_VERSION: SIGNING_KEY_FILE lists {keys} keys, so SIGNING_KEY_VERSION must \
         list one version per key, in the same order (newest first)"
    )]
    VersionsRequired {
        /// Number of keys configured.
        keys: usize,
    },
    /// The version list does not match the key list.
    #[error("SIGNING_KEY_VERSION lists {versions} versions but SIGNING_KEY_FILE lists {keys} keys")]
    VersionCount {
        /// Number of keys configured.
        keys: usize,
        /// Number of versions configured.
        versions: usize,
    },
    /// A version or the key ID is not `[A-Za-z0-9_]`.
    #[error("{variable}: {source}")]
    InvalidSignerInfo {
        /// `SIGNING_KEY_VERSION` or `SIGNING_KEY_ID`.
        variable: &'static str,
        /// What is wrong with the value.
        source: InvalidSignerInfo,
    },
    /// Two keys would be published under the same version and ID.
    #[error("SIGNING_KEY_VERSION: version {version:?} is given to more than one key")]
    DuplicateVersion {
        /// The repeated version.
        version: String,
    },
    /// A public key is not a PEM SubjectPublicKeyInfo for P-256.
    #[error("{source_name} is not a PEM-encoded P-256 public key (\"BEGIN PUBLIC KEY\"): {reason}")]
    InvalidPublicKey {
        /// Where the PEM came from.
        source_name: String,
        /// What the decoder objected to.
        reason: String,
    },
    /// A public key could not be written as PEM.
    #[error("cannot encode a public key as PEM: {0}")]
    PublicKeyEncoding(String),
    /// The operating system's random generator failed while generating a key.
    #[error("cannot generate a signing key: {0}")]
    KeyGeneration(String),
    /// The signature primitive failed (not expected with RFC 6979 nonces).
    #[error("cannot sign export.bin: {0}")]
    Signing(String),
}

/// A P-256 private key that signs exports.
///
/// `Debug` is redacted; the key is wiped from memory on drop by the underlying type.
#[derive(Debug, Clone)]
pub struct SigningKey(Redacted<p256::ecdsa::SigningKey>);

impl SigningKey {
    /// Parses a PEM private key: PKCS#8 (`-----BEGIN PRIVATE KEY-----`) or SEC1
    /// (`-----BEGIN EC PRIVATE KEY-----`), P-256 only (DESIGN §6).
    pub fn from_pem(pem: &str) -> Result<Self, SignError> {
        Self::from_named_pem("the PEM text", pem)
    }

    fn from_named_pem(source_name: &str, pem: &str) -> Result<Self, SignError> {
        p256::SecretKey::from_pem(pem.trim())
            .map(|secret| Self(Redacted::new(p256::ecdsa::SigningKey::from(&secret))))
            .map_err(|error| SignError::InvalidPrivateKey {
                source_name: source_name.to_owned(),
                reason: error.to_string(),
            })
    }

    /// Reads and parses a PEM key file; the file's text is wiped from memory afterwards.
    pub fn from_file(path: &Path) -> Result<Self, SignError> {
        let pem = std::fs::read_to_string(path)
            .map(Zeroizing::new)
            .map_err(|source| SignError::ReadKeyFile {
                path: path.to_owned(),
                source,
            })?;
        Self::from_named_pem(&path.display().to_string(), &pem)
    }

    /// The public half, to register with Apple and Google or to verify with.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.0.expose().verifying_key())
    }

    /// Signs `message` (SHA-256 is applied by the signer itself) and returns the DER encoding.
    fn sign_der(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let signature: Signature = self
            .0
            .expose()
            .try_sign(message)
            .map_err(|error| SignError::Signing(error.to_string()))?;
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

/// A P-256 public key that verifies exports.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses a PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), P-256 only.
    pub fn from_pem(pem: &str) -> Result<Self, SignError> {
        Self::from_named_pem("the PEM text", pem)
    }

    /// Parses a PEM public key and names `source_name` in the error.
    pub fn from_named_pem(source_name: &str, pem: &str) -> Result<Self, SignError> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(Self)
            .map_err(|error| SignError::InvalidPublicKey {
                source_name: source_name.to_owned(),
                reason: error.to_string(),
            })
    }

    /// The PEM SubjectPublicKeyInfo, as registered with Apple and Google.
    pub fn to_pem(&self) -> Result<String, SignError> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|error| SignError::PublicKeyEncoding(error.to_string()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let point = self.0.to_sec1_point(true);
        let hex: String = point
            .as_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        write!(f, "PublicKey({hex})")
    }
}

/// The keys that sign every export, newest first, each with the [`SignerInfo`] it is
/// published under (DESIGN §4.1: at most 10; §6: `SIGNING_KEY_FILE`, `SIGNING_KEY_VERSION`,
/// `SIGNING_KEY_ID`).
#[derive(Debug, Clone)]
pub struct SigningKeys {
    keys: Vec<(SigningKey, SignerInfo)>,
}

impl SigningKeys {
    /// Keys with their signer infos, newest first: 1 to 10, each version used once per ID.
    pub fn new(keys: Vec<(SigningKey, SignerInfo)>) -> Result<Self, SignError> {
        if keys.is_empty() || keys.len() > MAX_SIGNERS {
            return Err(SignError::KeyCount { count: keys.len() });
        }
        for (index, (_, info)) in keys.iter().enumerate() {
            if keys[..index].iter().any(|(_, earlier)| earlier == info) {
                return Err(SignError::DuplicateVersion {
                    version: info.key_version().to_owned(),
                });
            }
        }
        Ok(Self { keys })
    }

    /// Loads `paths` (newest first) as the keys for `versions` (same order) under `key_id`.
    ///
    /// `versions` may be empty when there is exactly one key: it is then `v1` (DESIGN §6).
    /// With several keys the versions must be given, one per key.
    pub fn from_files(
        paths: &[PathBuf],
        versions: &[String],
        key_id: &str,
    ) -> Result<Self, SignError> {
        if paths.is_empty() || paths.len() > MAX_SIGNERS {
            return Err(SignError::KeyCount { count: paths.len() });
        }
        let versions: Vec<String> = match (paths.len(), versions.len()) {
            (1, 0) => vec![DEFAULT_KEY_VERSION.to_owned()],
            (keys, 0) => return Err(SignError::VersionsRequired { keys }),
            (keys, count) if keys != count => {
                return Err(SignError::VersionCount {
                    keys,
                    versions: count,
                });
            }
            _ => versions.to_vec(),
        };
        // Check the public values before touching any key file.
        let infos = versions
            .iter()
            .map(|version| {
                SignerInfo::new(version, key_id).map_err(|source| SignError::InvalidSignerInfo {
                    variable: if source.field == "verification_key_id" {
                        "SIGNING_KEY_ID"
                    } else {
                        "SIGNING_KEY_VERSION"
                    },
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keys = paths
            .iter()
            .zip(infos)
            .map(|(path, info)| SigningKey::from_file(path).map(|key| (key, info)))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// Builds the keys from the raw values of `SIGNING_KEY_FILE` (comma-separated paths,
    /// newest first), `SIGNING_KEY_VERSION` (comma-separated, same order; default `v1` for a
    /// single key) and `SIGNING_KEY_ID` (default `302`), as read from the environment.
    pub fn from_env_values(
        signing_key_file: &str,
        signing_key_version: Option<&str>,
        signing_key_id: Option<&str>,
    ) -> Result<Self, SignError> {
        let paths: Vec<PathBuf> = split_list("SIGNING_KEY_FILE", signing_key_file)?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let versions = match signing_key_version.map(str::trim) {
            None | Some("") => Vec::new(),
            Some(list) => split_list("SIGNING_KEY_VERSION", list)?,
        };
        let key_id = match signing_key_id.map(str::trim) {
            None | Some("") => DEFAULT_KEY_ID,
            Some(id) => id,
        };
        Self::from_files(&paths, &versions, key_id)
    }

    /// The signer infos, newest first, as written into `export.bin`.
    pub fn signer_infos(&self) -> Vec<SignerInfo> {
        self.keys.iter().map(|(_, info)| info.clone()).collect()
    }

    /// The public keys, newest first.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.iter().map(|(key, _)| key.public_key()).collect()
    }

    /// Number of keys (1..=10).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a `SigningKeys` holds at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn split_list(variable: &'static str, value: &str) -> Result<Vec<String>, SignError> {
    value
        .split(',')
        .enumerate()
        .map(|(index, entry)| {
            let entry = entry.trim();
            if entry.is_empty() {
                Err(SignError::EmptyEntry {
                    variable,
                    entry: index + 1,
                })
            } else {
                Ok(entry.to_owned())
            }
        })
        .collect()
}

/// Signs a finished `export.bin` and returns the serialized `TEKSignatureList` for
/// `export.sig`: one `TEKSignature` per key in the same order as the signature infos inside
/// `export.bin` (DESIGN §4.1).
pub fn sign_export(export_bin: &[u8], keys: &SigningKeys) -> Result<Vec<u8>, SignError> {
    let signatures = keys
        .keys
        .iter()
        .map(|(key, info)| {
            Ok(TekSignature {
                signature_info: Some(info.to_signature_info()),
                batch_num: Some(BATCH_NUM),
                batch_size: Some(BATCH_SIZE),
                signature: Some(key.sign_der(export_bin)?),
            })
        })
        .collect::<Result<Vec<_>, SignError>>()?;
    Ok(TekSignatureList { signatures }.encode_to_vec())
}

/// Checks one DER signature over the whole `export.bin` the way a phone does: ECDSA P-256
/// with SHA-256.
pub fn verify_signature(export_bin: &[u8], der_signature: &[u8], public_key: &PublicKey) -> bool {
    DerSignature::try_from(der_signature)
        .ok()
        .and_then(|der| Signature::try_from(der).ok())
        .is_some_and(|signature| public_key.0.verify(export_bin, &signature).is_ok())
}

/// A fresh P-256 signing key from the operating system's random generator: the PKCS#8 PEM to
/// store (wiped from memory when dropped; the caller writes it with mode 0600) and the public
/// key PEM to register with Apple and Google.
pub fn generate_signing_key() -> Result<(Zeroizing<String>, String), SignError> {
    let key = p256::ecdsa::SigningKey::try_generate()
        .map_err(|error| SignError::KeyGeneration(error.to_string()))?;
    let private_pem = p256::SecretKey::from(key.as_nonzero_scalar())
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|error| SignError::KeyGeneration(error.to_string()))?;
    let public_pem = PublicKey(*key.verifying_key()).to_pem()?;
    Ok((private_pem, public_pem))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use diagnosis_proto::TekSignatureList;
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    use sha2::Digest as _;

    use super::*;

    /// A throwaway key for tests only; never used to sign anything real.
    const TEST_PKCS8: &str = include_str!("../../fixtures/test-signing-key.pem");
    const TEST_PUBLIC: &str = include_str!("../../fixtures/test-signing-key.pub.pem");
    /// The same test key in SEC1 form.
    const TEST_SEC1: &str = include_str!("../../fixtures/test-signing-key.sec1.pem");
    const TEST_2_PKCS8: &str = include_str!("../../fixtures/test-signing-key-2.pem");

    fn keys() -> SigningKeys {
        SigningKeys::new(vec![
            (
                SigningKey::from_pem(TEST_2_PKCS8).unwrap(),
                SignerInfo::new("v2", "302").unwrap(),
            ),
            (
                SigningKey::from_pem(TEST_PKCS8).unwrap(),
                SignerInfo::new("v1", "302").unwrap(),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn pkcs8_and_sec1_forms_load_the_same_key() {
        let pkcs8 = SigningKey::from_pem(TEST_PKCS8).unwrap();
        let sec1 = SigningKey::from_pem(TEST_SEC1).unwrap();
        assert_eq!(pkcs8.public_key(), sec1.public_key());
        assert_eq!(
            pkcs8.public_key(),
            PublicKey::from_pem(TEST_PUBLIC).unwrap()
        );
        assert_eq!(
            pkcs8.public_key().to_pem().unwrap().trim(),
            TEST_PUBLIC.trim()
        );
    }

    #[test]
    fn export_sig_signs_the_whole_export_bin_once_hashed() {
        let export_bin = b"EK Export v1    \x09\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
        let keys = keys();
        let sig =
            TekSignatureList::decode(sign_export(&export_bin, &keys).unwrap().as_slice()).unwrap();
        assert_eq!(sig.signatures.len(), 2);
        let publics = keys.public_keys();
        for ((signature, info), public) in
            sig.signatures.iter().zip(keys.signer_infos()).zip(&publics)
        {
            assert_eq!(signature.signature_info, Some(info.to_signature_info()));
            assert_eq!(signature.batch_num, Some(1));
            assert_eq!(signature.batch_size, Some(1));
            let der = signature.signature.as_deref().unwrap();
            assert!(verify_signature(&export_bin, der, public));

            // Exactly one SHA-256: the signature verifies against the digest of the whole
            // file, header included, and not against a digest of that digest.
            let parsed = Signature::from_der(der).unwrap();
            let digest = sha2::Sha256::digest(&export_bin);
            public.0.verify_prehash(&digest, &parsed).unwrap();
            let double = sha2::Sha256::digest(digest);
            assert!(public.0.verify_prehash(&double, &parsed).is_err());
        }
        // Newest first: the first signature is by the first key only.
        let first = sig.signatures[0].signature.as_deref().unwrap();
        assert!(!verify_signature(&export_bin, first, &publics[1]));
    }

    #[test]
    fn signing_is_deterministic() {
        let keys = keys();
        let export_bin = b"EK Export v1    anything".to_vec();
        assert_eq!(
            sign_export(&export_bin, &keys).unwrap(),
            sign_export(&export_bin, &keys).unwrap()
        );
    }

    #[test]
    fn verify_rejects_tampering_and_garbage() {
        let key = SigningKey::from_pem(TEST_PKCS8).unwrap();
        let der = key.sign_der(b"EK Export v1    abc").unwrap();
        let public = key.public_key();
        assert!(verify_signature(b"EK Export v1    abc", &der, &public));
        assert!(!verify_signature(b"EK Export v1    abd", &der, &public));
        assert!(!verify_signature(
            b"EK Export v1    abc",
            &der[..der.len() - 1],
            &public
        ));
        assert!(!verify_signature(b"EK Export v1    abc", b"", &public));
        assert!(!verify_signature(
            b"EK Export v1    abc",
            &[0x30; 72],
            &public
        ));
    }

    #[test]
    fn generated_keys_round_trip() {
        let (private_pem, public_pem) = generate_signing_key().unwrap();
        assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let key = SigningKey::from_pem(&private_pem).unwrap();
        assert_eq!(key.public_key(), PublicKey::from_pem(&public_pem).unwrap());
        let (other, _) = generate_signing_key().unwrap();
        assert_ne!(*private_pem, *other);
    }

    #[test]
    fn debug_never_shows_private_material() {
        let key = SigningKey::from_pem(TEST_PKCS8).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(..)");
        let debug = format!("{:?}", keys());
        assert!(debug.contains("SigningKey(..)"), "{debug}");
        let body: String = TEST_PKCS8
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        assert!(!debug.contains(&body[..20]));
    }

    #[test]
    fn invalid_private_keys_are_refused_without_echoing_them() {
        for pem in [
            "",
            "not a key",
            TEST_PUBLIC,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let error = SigningKey::from_pem(pem).unwrap_err().to_string();
            assert!(
                error.contains("is not a PEM-encoded P-256 private key"),
                "{error}"
            );
            if pem.len() > 4 {
                assert!(!error.contains(pem.trim()), "{error}");
            }
        }
    }

    fn write_fixture_keys(dir: &Path) -> (PathBuf, PathBuf) {
        let first = dir.join("new.pem");
        let second = dir.join("old.pem");
        std::fs::write(&first, TEST_2_PKCS8).unwrap();
        std::fs::write(&second, TEST_SEC1).unwrap();
        (first, second)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "diagnosis-exporter-sign-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn keys_load_from_files_with_versions() {
        let dir = temp_dir("load");
        let (new, old) = write_fixture_keys(&dir);
        let both = SigningKeys::from_files(
            &[new.clone(), old.clone()],
            &["v2".to_owned(), "v1".to_owned()],
            "302",
        )
        .unwrap();
        assert_eq!(both.len(), 2);
        assert!(!both.is_empty());
        assert_eq!(
            both.signer_infos(),
            vec![
                SignerInfo::new("v2", "302").unwrap(),
                SignerInfo::new("v1", "302").unwrap()
            ]
        );
        assert_eq!(both.public_keys(), keys().public_keys());

        let single = SigningKeys::from_files(std::slice::from_ref(&old), &[], "302").unwrap();
        assert_eq!(
            single.signer_infos(),
            vec![SignerInfo::new("v1", "302").unwrap()]
        );

        let from_env = SigningKeys::from_env_values(
            &format!("{} , {}", new.display(), old.display()),
            Some("v2,v1"),
            None,
        )
        .unwrap();
        assert_eq!(from_env.signer_infos(), both.signer_infos());
        let defaults =
            SigningKeys::from_env_values(&old.display().to_string(), None, Some("")).unwrap();
        assert_eq!(
            defaults.signer_infos(),
            vec![SignerInfo::new("v1", "302").unwrap()]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn key_configuration_errors_name_the_variable() {
        let dir = temp_dir("errors");
        let (new, old) = write_fixture_keys(&dir);
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nsecretstuff\n").unwrap();
        let missing = dir.join("missing.pem");
        let two = [new.clone(), old.clone()];

        fn check(result: Result<SigningKeys, SignError>, expected: &str) {
            let error = result.unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error:?} does not contain {expected:?}"
            );
            assert!(!error.contains("secretstuff"), "{error}");
        }
        check(
            SigningKeys::from_files(&[], &[], "302"),
            "SIGNING_KEY_FILE: 1 to 10 signing keys are needed, got 0",
        );
        check(
            SigningKeys::from_files(&vec![new.clone(); 11], &[], "302"),
            "got 11",
        );
        check(
            SigningKeys::from_files(&two, &[], "302"),
            "SIGNING_KEY_VERSION: SIGNING_KEY_FILE lists 2 keys",
        );
        check(
            SigningKeys::from_files(&two, &["v1".to_owned()], "302"),
            "SIGNING_KEY_VERSION lists 1 versions but SIGNING_KEY_FILE lists 2 keys",
        );
        check(
            SigningKeys::from_files(&two, &["v1".to_owned(), "v1".to_owned()], "302"),
            "SIGNING_KEY_VERSION: version \"v1\" is given to more than one key",
        );
        check(
            SigningKeys::from_files(std::slice::from_ref(&new), &["v-1".to_owned()], "302"),
            "SIGNING_KEY_VERSION: verification_key_version must be",
        );
        check(
            SigningKeys::from_files(std::slice::from_ref(&new), &[], "30/2"),
            "SIGNING_KEY_ID: verification_key_id must be",
        );
        check(
            SigningKeys::from_files(std::slice::from_ref(&missing), &[], "302"),
            &format!("SIGNING_KEY_FILE: cannot read {}", missing.display()),
        );
        check(
            SigningKeys::from_files(std::slice::from_ref(&garbage), &[], "302"),
            &format!(
                "SIGNING_KEY_FILE: {} is not a PEM-encoded P-256 private key",
                garbage.display()
            ),
        );
        check(
            SigningKeys::from_env_values(&format!("{},", new.display()), None, None),
            "SIGNING_KEY_FILE: entry 2 is empty",
        );
        check(
            SigningKeys::from_env_values(&new.display().to_string(), Some("v1,,"), None),
            "SIGNING_KEY_VERSION: entry 2 is empty",
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn invalid_public_keys_are_refused() {
        let error = PublicKey::from_named_pem("old.pub", TEST_PKCS8)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("old.pub is not a PEM-encoded P-256 public key"),
            "{error}"
        );
    }
}
