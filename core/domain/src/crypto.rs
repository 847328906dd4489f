//! The NaCl box that protects an upload on its way from the app (DESIGN §3.1–§3.3).
//!
//! `payload` in `EncryptedUploadRequest` is a libsodium `crypto_box_easy` box:
//! Curve25519-XSalsa20-Poly1305, the 16-byte Poly1305 tag followed by the ciphertext, the
//! 24-byte nonce carried separately. [`crypto_box::SalsaBox`] produces exactly that layout;
//! the fixture `fixtures/nacl_box_vector.json`, made by an independent implementation
//! (libsodium through PyNaCl, see `core/domain/tests/vectors/make_nacl_vector.py`), pins it.
//!
//! Every key and nonce comes from the operating system's CSPRNG. This module must never log
//! or return key material or plaintext in an error: a failed open says only that it failed.

#[cfg(any(test, feature = "client"))]
use crypto_box::aead::rand_core::RngCore as _;
use crypto_box::aead::{Aead as _, OsRng};
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};
use thiserror::Error;

use crate::domain::{AppPublicKey, ServerPublicKey, ServerSecretKey};

/// The box did not open: wrong keys, wrong nonce, or a tampered or truncated payload
/// (→ `DECRYPTION_FAILED`, DESIGN §3.3). Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the upload payload could not be decrypted")]
pub struct DecryptionFailed;

/// A fresh per-code server keypair (DESIGN §3.1).
pub fn generate_server_keypair() -> (ServerPublicKey, ServerSecretKey) {
    let secret = SecretKey::generate(&mut OsRng);
    let public = ServerPublicKey::from_array(secret.public_key().to_bytes());
    (public, ServerSecretKey::from_array(secret.to_bytes()))
}

/// A fresh app keypair, as the phone makes one before claiming a code. Only with the `client`
/// feature (the app simulator, the tests and the fuzz targets): the server never holds an app
/// secret key.
#[cfg(any(test, feature = "client"))]
pub fn generate_app_keypair() -> ([u8; 32], AppPublicKey) {
    let secret = SecretKey::generate(&mut OsRng);
    let public = AppPublicKey::from_array(secret.public_key().to_bytes());
    (secret.to_bytes(), public)
}

/// A fresh random 24-byte nonce, as the app picks one for its upload. Only with the `client`
/// feature: the server never seals.
#[cfg(any(test, feature = "client"))]
pub fn random_nonce() -> [u8; 24] {
    let mut nonce = [0_u8; 24];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Opens an upload sealed by the app's key to the server's key (DESIGN §3.3).
pub fn open_upload_payload(
    server_secret: &ServerSecretKey,
    app_public: &AppPublicKey,
    nonce: &[u8; 24],
    sealed: &[u8],
) -> Result<Vec<u8>, DecryptionFailed> {
    let secret = SecretKey::from_bytes(*server_secret.as_bytes());
    let public = PublicKey::from_bytes(*app_public.as_bytes());
    SalsaBox::new(&public, &secret)
        .decrypt(&Nonce::from(*nonce), sealed)
        .map_err(|_| DecryptionFailed)
}

/// Seals a payload the way the app does: from the app's secret key to the server's public key.
/// Only with the `client` feature (the app simulator, the tests and the fuzz targets).
#[cfg(any(test, feature = "client"))]
pub fn seal_upload_payload(
    app_secret: &[u8; 32],
    server_public: &ServerPublicKey,
    nonce: &[u8; 24],
    plaintext: &[u8],
) -> Vec<u8> {
    let secret = SecretKey::from_bytes(*app_secret);
    let public = PublicKey::from_bytes(*server_public.as_bytes());
    SalsaBox::new(&public, &secret)
        .encrypt(&Nonce::from(*nonce), plaintext)
        // XSalsa20-Poly1305 encryption fails only when associated data is passed, and none is.
        .expect("crypto_box encryption without associated data cannot fail")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use diagnosis_proto::Message as _;
    use proptest::prelude::*;

    /// The PyNaCl-made vector, decoded.
    struct Vector {
        app_secret: [u8; 32],
        app_public: AppPublicKey,
        server_secret: ServerSecretKey,
        server_public: ServerPublicKey,
        nonce: [u8; 24],
        plaintext: Vec<u8>,
        ciphertext: Vec<u8>,
        json: serde_json::Value,
    }

    fn vector() -> Vector {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("fixtures/nacl_box_vector.json")).unwrap();
        let field = |name: &str| hex::decode(json[name].as_str().unwrap()).unwrap();
        Vector {
            app_secret: field("app_secret_key").try_into().unwrap(),
            app_public: AppPublicKey::try_from(field("app_public_key").as_slice()).unwrap(),
            server_secret: ServerSecretKey::try_from(field("server_secret_key").as_slice())
                .unwrap(),
            server_public: ServerPublicKey::try_from(field("server_public_key").as_slice())
                .unwrap(),
            nonce: field("nonce").try_into().unwrap(),
            plaintext: field("plaintext"),
            ciphertext: field("ciphertext"),
            json,
        }
    }

    #[test]
    fn opens_what_libsodium_sealed() {
        let v = vector();
        let opened =
            open_upload_payload(&v.server_secret, &v.app_public, &v.nonce, &v.ciphertext).unwrap();
        assert_eq!(opened, v.plaintext);

        // The plaintext is a real Upload in the app's shape.
        let upload = diagnosis_proto::Upload::decode(opened.as_slice()).unwrap();
        assert_eq!(
            upload.timestamp.unwrap().seconds,
            v.json["upload_timestamp_seconds"].as_i64().unwrap()
        );
        assert_eq!(upload.keys.len(), 1);
        assert_eq!(
            i64::from(upload.keys[0].rolling_start_interval_number.unwrap()),
            v.json["upload_rolling_start_interval_number"]
                .as_i64()
                .unwrap()
        );
    }

    #[test]
    fn seals_byte_identical_to_libsodium() {
        let v = vector();
        let sealed = seal_upload_payload(&v.app_secret, &v.server_public, &v.nonce, &v.plaintext);
        assert_eq!(hex::encode(&sealed), hex::encode(&v.ciphertext));
        // libsodium "easy" layout: 16-byte tag, then as many bytes as the plaintext.
        assert_eq!(sealed.len(), v.plaintext.len() + 16);
    }

    #[test]
    fn public_keys_in_the_vector_belong_to_its_secret_keys() {
        let v = vector();
        let app_public = SecretKey::from_bytes(v.app_secret).public_key();
        assert_eq!(app_public.as_bytes(), v.app_public.as_bytes());
        let server_public = SecretKey::from_bytes(*v.server_secret.as_bytes()).public_key();
        assert_eq!(server_public.as_bytes(), v.server_public.as_bytes());
    }

    #[test]
    fn tampering_is_detected() {
        let v = vector();
        let open = |nonce: &[u8; 24], sealed: &[u8]| {
            open_upload_payload(&v.server_secret, &v.app_public, nonce, sealed)
        };
        for index in 0..v.ciphertext.len() {
            let mut tampered = v.ciphertext.clone();
            tampered[index] ^= 0x01;
            assert_eq!(
                open(&v.nonce, &tampered),
                Err(DecryptionFailed),
                "byte {index}"
            );
        }
        let mut wrong_nonce = v.nonce;
        wrong_nonce[23] ^= 0x80;
        assert_eq!(open(&wrong_nonce, &v.ciphertext), Err(DecryptionFailed));
        assert_eq!(
            open(&v.nonce, &v.ciphertext[..v.ciphertext.len() - 1]),
            Err(DecryptionFailed)
        );
        let mut extended = v.ciphertext.clone();
        extended.push(0);
        assert_eq!(open(&v.nonce, &extended), Err(DecryptionFailed));
        assert_eq!(open(&v.nonce, &v.ciphertext[..16]), Err(DecryptionFailed));
        assert_eq!(open(&v.nonce, &v.ciphertext[..15]), Err(DecryptionFailed));
        assert_eq!(open(&v.nonce, &[]), Err(DecryptionFailed));
    }

    #[test]
    fn wrong_keys_do_not_open() {
        let v = vector();
        let (_, other_server_secret) = generate_server_keypair();
        let (_, other_app_public) = generate_app_keypair();
        assert_eq!(
            open_upload_payload(&other_server_secret, &v.app_public, &v.nonce, &v.ciphertext),
            Err(DecryptionFailed)
        );
        assert_eq!(
            open_upload_payload(&v.server_secret, &other_app_public, &v.nonce, &v.ciphertext),
            Err(DecryptionFailed)
        );
    }

    #[test]
    fn generated_keys_and_nonces_differ() {
        let (public_a, secret_a) = generate_server_keypair();
        let (public_b, secret_b) = generate_server_keypair();
        assert_ne!(public_a, public_b);
        assert_ne!(secret_a.as_bytes(), secret_b.as_bytes());
        let (app_secret_a, app_public_a) = generate_app_keypair();
        let (app_secret_b, app_public_b) = generate_app_keypair();
        assert_ne!(app_secret_a, app_secret_b);
        assert_ne!(app_public_a, app_public_b);
        assert_ne!(random_nonce(), random_nonce());
        assert_eq!(
            SecretKey::from_bytes(*secret_a.as_bytes())
                .public_key()
                .as_bytes(),
            public_a.as_bytes()
        );
    }

    proptest! {
        #[test]
        fn seal_then_open_round_trips(
            plaintext in proptest::collection::vec(any::<u8>(), 0..4096),
            nonce in any::<[u8; 24]>(),
        ) {
            let (server_public, server_secret) = generate_server_keypair();
            let (app_secret, app_public) = generate_app_keypair();
            let sealed = seal_upload_payload(&app_secret, &server_public, &nonce, &plaintext);
            prop_assert_eq!(sealed.len(), plaintext.len() + 16);
            let opened = open_upload_payload(&server_secret, &app_public, &nonce, &sealed);
            prop_assert_eq!(opened, Ok(plaintext));
        }

        #[test]
        fn opening_garbage_never_panics(
            sealed in proptest::collection::vec(any::<u8>(), 0..256),
            nonce in any::<[u8; 24]>(),
            app_public in any::<[u8; 32]>(),
        ) {
            let (_, server_secret) = generate_server_keypair();
            let app_public = AppPublicKey::from_array(app_public);
            prop_assert_eq!(
                open_upload_payload(&server_secret, &app_public, &nonce, &sealed),
                Err(DecryptionFailed)
            );
        }
    }
}
