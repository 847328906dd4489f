//! `POST /upload`: an app uploads its keys sealed in a NaCl box (DESIGN §3.3).
//! Checks run in the contract's order, first failure wins; from the keypair
//! lookup on, everything runs in one transaction with the keypair row locked.

use diagnosis_core::request::{MAX_UPLOAD_BODY_BYTES, parse_upload_request};
use diagnosis_core::store::StoreKeysOutcome;
use diagnosis_proto::encrypted_upload_response::ErrorCode;
use http::{Response, StatusCode};
use hyper::body::Incoming;

use crate::error::{UploadError, upload_response};
use crate::http::{Body, read_body};
use crate::state::AppState;

pub async fn upload(state: &AppState, body: Incoming) -> Result<Response<Body>, UploadError> {
    let settings = &state.settings;
    let body = read_body(body, MAX_UPLOAD_BODY_BYTES, settings.timeouts.body_read)
        .await
        .map_err(|_| UploadError::BadRequest)?;
    let request = parse_upload_request(&body)?;
    let now = state.clock.now();
    let mut key_count = 0;
    // One transaction: the keypair is locked and read in one statement, the
    // box is opened and validated, then the keys are written (see
    // `Store::store_upload` for why the lock is held while the box opens).
    let outcome = state
        .store
        .store_upload(
            &request.server_public,
            &settings.region,
            now,
            settings.encryption_key_validity_days,
            |keypair| {
                let keys = request
                    .open_and_validate(
                        &keypair.server_secret,
                        &keypair.app_public,
                        now.timestamp(),
                    )?
                    .keys;
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
