//! `POST /upload` body as any bytes (DESIGN §3.3): `EncryptedUploadRequest` decoding, the crypto
//! parameter checks and opening the box with the harness's server key, then `Upload` decoding
//! and `validate_upload` whenever the box opens. No input may panic.

#![no_main]

use diagnosis_fuzz::upload_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = upload_request(body);
});
