//! `POST /upload` body as any bytes (DESIGN §3.3): `EncryptedUploadRequest` decoding, the crypto
//! parameter checks and opening the box with the harness's server key, then `Upload` decoding
//! and `validate_upload` whenever the box opens. No input may panic.

use crate::upload_request;

pub fn upload_body(body: &[u8]) {
    let _ = upload_request(body);
}
