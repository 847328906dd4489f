//! `POST /upload` with a payload sealed correctly to the harness's server key (DESIGN §3.3):
//! the input is the plaintext, so every execution opens the box and reaches `Upload` decoding
//! and `validate_upload`. No input may panic.

use crate::{UploadRefusal, sealed_upload_body, upload_request};
use diagnosis_domain::request::MAX_UPLOAD_BODY_BYTES;
use diagnosis_domain::upload::MAX_KEYS_PER_UPLOAD;

pub fn upload_sealed(plaintext: &[u8]) {
    let body = sealed_upload_body(plaintext);
    match upload_request(&body) {
        Ok(upload) => {
            assert!(!upload.keys.is_empty() || upload.dropped_irrelevant > 0);
            assert!(upload.keys.len() + upload.dropped_irrelevant <= MAX_KEYS_PER_UPLOAD);
        }
        Err(UploadRefusal::BadRequest) => assert!(body.len() > MAX_UPLOAD_BODY_BYTES),
        Err(
            refusal @ (UploadRefusal::InvalidCryptoParameters
            | UploadRefusal::UnknownKeypair
            | UploadRefusal::DecryptionFailed),
        ) => panic!("a correctly sealed body was refused as {refusal:?}"),
        Err(UploadRefusal::InvalidPayload | UploadRefusal::Rejected(_)) => {}
    }
}
