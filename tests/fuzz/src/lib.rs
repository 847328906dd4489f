//! Shared by the fuzz targets (DESIGN §7) and the seed writer: the fixed keys and clock of the
//! harness, and the request steps of `submit`'s `/claim-key` and `/upload` handlers up to their
//! first database call.
//!
//! The request steps are the functions the handlers call (`diagnosis_domain::request`:
//! `parse_claim_request`, `parse_upload_request`, `UploadRequest::open_and_validate`), with the
//! database's keypair lookup replaced by one fixed keypair. Nothing here parses anything
//! itself: a target that found a bug here would have found a bug in the harness, not in the
//! service.
//!
//! This crate depends only on the pure side (`diagnosis-domain`, `diagnosis-format`,
//! `diagnosis-verify` without its fetchers, `diagnosis-proto`): no async runtime and nothing of
//! the store (`core/domain/tests/layering.rs`).

#![forbid(unsafe_code)]

pub mod targets;

use std::sync::LazyLock;

use diagnosis_domain::crypto::seal_upload_payload;
use diagnosis_domain::domain::{AppPublicKey, OneTimeCode, ServerPublicKey, ServerSecretKey};
use diagnosis_domain::request::{
    UploadRefusal as RequestRefusal, parse_claim_request, parse_upload_request,
};
use diagnosis_domain::upload::{UploadRejection, ValidatedUpload};
use diagnosis_format::sign::PublicKey;
use diagnosis_proto::{EncryptedUploadRequest, Message as _};

/// The server's clock in every target: 2025-11-28T00:00:00Z, the day of the export fixtures
/// in `exporter/fixtures/`.
pub const NOW_UNIX: i64 = 1_764_288_000;

/// The one server keypair the harness's "database" knows. Fixed so that a sealed seed stays
/// valid across runs; any 32 bytes are a Curve25519 secret key.
pub const SERVER_SECRET_KEY: [u8; 32] = [0x5e; 32];

/// The app key that claimed that keypair.
pub const APP_SECRET_KEY: [u8; 32] = [0xa9; 32];

/// The nonce the harness seals with.
pub const NONCE: [u8; 24] = [0x17; 24];

/// `SERVER_SECRET_KEY`'s public half.
pub fn server_public_key() -> ServerPublicKey {
    static KEY: LazyLock<ServerPublicKey> = LazyLock::new(|| {
        let secret = crypto_box::SecretKey::from_bytes(SERVER_SECRET_KEY);
        ServerPublicKey::from_array(secret.public_key().to_bytes())
    });
    *KEY
}

/// `APP_SECRET_KEY`'s public half.
pub fn app_public_key() -> AppPublicKey {
    static KEY: LazyLock<AppPublicKey> = LazyLock::new(|| {
        let secret = crypto_box::SecretKey::from_bytes(APP_SECRET_KEY);
        AppPublicKey::from_array(secret.public_key().to_bytes())
    });
    *KEY
}

pub use diagnosis_domain::request::ClaimRefusal;

/// What `/claim-key` takes to the database: the app key and the normalised code (`None` is a
/// code that cannot be one of ours, which the store treats as a wrong code).
pub fn claim_request(body: &[u8]) -> Result<(AppPublicKey, Option<OneTimeCode>), ClaimRefusal> {
    let request = parse_claim_request(body)?;
    Ok((request.app_public, request.code))
}

/// Why `/upload` refuses a body before storing keys (DESIGN §3.3), in the contract's order:
/// the refusals of `diagnosis_domain::request`, and the keypair lookup between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadRefusal {
    BadRequest,
    InvalidCryptoParameters,
    UnknownKeypair,
    DecryptionFailed,
    InvalidPayload,
    Rejected(UploadRejection),
}

impl From<RequestRefusal> for UploadRefusal {
    fn from(refusal: RequestRefusal) -> Self {
        match refusal {
            RequestRefusal::BadRequest => UploadRefusal::BadRequest,
            RequestRefusal::InvalidCryptoParameters => UploadRefusal::InvalidCryptoParameters,
            RequestRefusal::DecryptionFailed => UploadRefusal::DecryptionFailed,
            RequestRefusal::InvalidPayload => UploadRefusal::InvalidPayload,
            RequestRefusal::Rejected(rejection) => UploadRefusal::Rejected(rejection),
        }
    }
}

/// Every check of `/upload` before the store transaction, against the harness's one keypair
/// and clock.
pub fn upload_request(body: &[u8]) -> Result<ValidatedUpload, UploadRefusal> {
    let request = parse_upload_request(body)?;
    // The keypair lookup: the harness knows one keypair, claimed by its one app key.
    if request.server_public != server_public_key() {
        return Err(UploadRefusal::UnknownKeypair);
    }
    let server_secret = ServerSecretKey::from_array(SERVER_SECRET_KEY);
    Ok(request.open_and_validate(&server_secret, &app_public_key(), NOW_UNIX)?)
}

/// The body an app sends for `plaintext` (a serialized `Upload`, or any bytes): sealed by the
/// harness's app key to its server key.
pub fn sealed_upload_body(plaintext: &[u8]) -> Vec<u8> {
    EncryptedUploadRequest {
        server_public_key: Some(server_public_key().as_bytes().to_vec()),
        app_public_key: Some(app_public_key().as_bytes().to_vec()),
        nonce: Some(NONCE.to_vec()),
        payload: Some(seal_upload_payload(
            &APP_SECRET_KEY,
            &server_public_key(),
            &NONCE,
            plaintext,
        )),
    }
    .encode_to_vec()
}

/// Runs `future` to completion on the calling thread. `verify` over a memory source needs no
/// runtime of its own: nothing it awaits waits on a timer or a socket.
pub fn block_on<F: Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// The object keys of the committed export fixtures: an hourly file and a daily part.
pub const HOURLY_OBJECT: &str = "CA/1764280800-1764284400-00001.zip";
pub const DAILY_OBJECT: &str = "CA/daily/1764201600-1764288000-00002.zip";

/// The public half of `exporter/fixtures/test-signing-key.pem`, which signed every fixture.
pub fn fixture_public_key() -> &'static PublicKey {
    static KEY: LazyLock<PublicKey> = LazyLock::new(|| {
        match PublicKey::from_pem(include_str!(
            "../../../exporter/fixtures/test-signing-key.pub.pem"
        )) {
            Ok(key) => key,
            Err(error) => panic!("the committed fixture public key does not load: {error}"),
        }
    });
    &KEY
}

/// Separates the objects of a `verify_indexes` input.
pub const OBJECT_SEPARATOR: u8 = 0;

/// A `verify_indexes` input: `index.txt`, `daily/index.txt` and `index.json`, separated by
/// [`OBJECT_SEPARATOR`] (which none of them can contain validly). A missing part is a missing
/// object; an empty part is an empty object.
pub fn split_index_objects(data: &[u8]) -> [Option<&[u8]>; 3] {
    let mut parts = data.splitn(3, |&byte| byte == OBJECT_SEPARATOR);
    [parts.next(), parts.next(), parts.next()]
}

/// The inverse of [`split_index_objects`], for the seed writer.
pub fn join_index_objects(hourly: &[u8], daily: &[u8], manifest: &[u8]) -> Vec<u8> {
    let mut data = hourly.to_vec();
    data.push(OBJECT_SEPARATOR);
    data.extend_from_slice(daily);
    data.push(OBJECT_SEPARATOR);
    data.extend_from_slice(manifest);
    data
}
