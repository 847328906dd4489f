//! `POST /upload`: an app uploads its keys sealed in a NaCl box (DESIGN §3.3).
//! Checks run in the contract's order, first failure wins; from the keypair
//! lookup on, everything runs in one transaction with the keypair row locked.

use chrono::{DateTime, Utc};
use diagnosis_core::crypto::open_upload_payload;
use diagnosis_core::domain::{AppPublicKey, DiagnosisKey, ServerPublicKey};
use diagnosis_core::store::{StoreKeysOutcome, UploadKeypair};
use diagnosis_core::upload::validate_upload;
use diagnosis_proto::encrypted_upload_response::ErrorCode;
use diagnosis_proto::{EncryptedUploadRequest, Message, Upload};
use http::{Response, StatusCode};
use hyper::body::Incoming;

use crate::error::{UploadError, upload_response};
use crate::http::{Body, read_body};
use crate::state::AppState;

/// Room for a legitimate 28-key upload with every field set, and no more.
pub const MAX_UPLOAD_BODY_BYTES: usize = 4096;

pub async fn upload(state: &AppState, body: Incoming) -> Result<Response<Body>, UploadError> {
    let settings = &state.settings;
    let body = read_body(body, MAX_UPLOAD_BODY_BYTES, settings.timeouts.body_read)
        .await
        .map_err(|_| UploadError::BadRequest)?;
    let request = EncryptedUploadRequest::decode(body).map_err(|_| UploadError::BadRequest)?;
    let server_public = ServerPublicKey::try_from(request.server_public_key())
        .map_err(|_| UploadError::InvalidCryptoParameters)?;
    let now = state.clock.now();
    let mut key_count = 0;
    // One transaction: the keypair is locked and read in one statement, the
    // box is opened and validated, then the keys are written (see
    // `Store::store_upload` for why the lock is held while the box opens).
    let outcome = state
        .store
        .store_upload(
            &server_public,
            &settings.region,
            now,
            settings.encryption_key_validity_days,
            |keypair| {
                let keys = open_and_validate(&request, &keypair, now)?;
                key_count = keys.len();
                Ok::<_, UploadError>(keys)
            },
        )
        .await??;
    match outcome {
        StoreKeysOutcome::Stored { inserted, .. } => {
            metrics::counter!("submit_keys_stored_total").increment(u64::from(inserted));
            metrics::histogram!("submit_upload_keys").record(key_count as f64);
            Ok(upload_response(StatusCode::OK, ErrorCode::None))
        }
        StoreKeysOutcome::QuotaExhausted => Err(UploadError::QuotaExhausted),
        StoreKeysOutcome::TooManyKeys => Err(UploadError::TooManyKeys),
        StoreKeysOutcome::KeypairInvalid => Err(UploadError::UnknownKeypair),
    }
}

/// Checks 4 to 10 of DESIGN §3.3 on a request whose keypair exists: the
/// lengths, the app key and the box, then the `Upload` inside it.
fn open_and_validate(
    request: &EncryptedUploadRequest,
    keypair: &UploadKeypair,
    now: DateTime<Utc>,
) -> Result<Vec<DiagnosisKey>, UploadError> {
    let nonce: &[u8; 24] = request
        .nonce()
        .try_into()
        .map_err(|_| UploadError::InvalidCryptoParameters)?;
    let app_public = AppPublicKey::try_from(request.app_public_key())
        .map_err(|_| UploadError::InvalidCryptoParameters)?;
    // The box must be sealed by the app key that claimed this keypair: a box
    // sealed by any other key does not open, whatever key the request names.
    if app_public != keypair.app_public {
        return Err(UploadError::DecryptionFailed);
    }
    let plaintext = open_upload_payload(
        &keypair.server_secret,
        &app_public,
        nonce,
        request.payload(),
    )
    .map_err(|_| UploadError::DecryptionFailed)?;
    let upload = Upload::decode(plaintext.as_slice()).map_err(|_| UploadError::InvalidPayload)?;
    let validated = validate_upload(&upload, now.timestamp()).map_err(UploadError::Rejected)?;
    Ok(validated.keys)
}
