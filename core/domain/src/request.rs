//! The request bodies of `/claim-key` and `/upload` (DESIGN §3.2, §3.3), from the
//! bytes received to what the database is asked about: size bounds, protobuf
//! decoding, key lengths, code normalisation, then, once the keypair is known,
//! the box and the `Upload` in it. The handlers call these, and so do the fuzz
//! targets (DESIGN §7), so what is fuzzed is what the service runs.
//!
//! The order of the checks is part of the wire contract (first failure wins).
//! This module never reads the clock (the caller passes `now`), never touches
//! the database and never logs anything of a request.

use diagnosis_proto::{EncryptedUploadRequest, KeyClaimRequest, Message as _, Upload};
use thiserror::Error;

use crate::crypto::open_upload_payload;
use crate::domain::{AppPublicKey, OneTimeCode, ServerPublicKey, ServerSecretKey};
use crate::redacted::Redacted;
use crate::upload::{UploadRejection, ValidatedUpload, validate_upload};

/// A claim request is a code and a 32-byte key; anything larger is hostile.
pub const MAX_CLAIM_BODY_BYTES: usize = 256;

/// Room for a legitimate 28-key upload with every field set, and no more.
pub const MAX_UPLOAD_BODY_BYTES: usize = 4096;

/// Why `/claim-key` refuses a body before the database is asked (DESIGN §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ClaimRefusal {
    /// Oversize or unparsable body: 400 UNKNOWN.
    #[error("body too large or not a KeyClaimRequest")]
    BadRequest,
    /// App key length ≠ 32: 400 INVALID_KEY.
    #[error("app public key is not 32 bytes")]
    InvalidKey,
}

/// What `/claim-key` takes to the database.
#[derive(Debug)]
pub struct ClaimRequest {
    pub app_public: AppPublicKey,
    /// The normalised code; `None` for a code that cannot be one of ours, which
    /// is simply a wrong code.
    pub code: Option<OneTimeCode>,
}

/// Reads a `/claim-key` body (DESIGN §3.2).
pub fn parse_claim_request(body: &[u8]) -> Result<ClaimRequest, ClaimRefusal> {
    if body.len() > MAX_CLAIM_BODY_BYTES {
        return Err(ClaimRefusal::BadRequest);
    }
    let request = KeyClaimRequest::decode(body).map_err(|_| ClaimRefusal::BadRequest)?;
    let app_public =
        AppPublicKey::try_from(request.app_public_key()).map_err(|_| ClaimRefusal::InvalidKey)?;
    let code = OneTimeCode::from_user_input(request.one_time_code());
    Ok(ClaimRequest { app_public, code })
}

/// Why `/upload` refuses a body, apart from what only the database knows (an
/// unknown or spent keypair, the quota), in the contract's order (DESIGN §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum UploadRefusal {
    #[error("body too large or not an EncryptedUploadRequest")]
    BadRequest,
    #[error("key or nonce of the wrong length")]
    InvalidCryptoParameters,
    #[error("the box does not open")]
    DecryptionFailed,
    #[error("the plaintext is not an Upload")]
    InvalidPayload,
    #[error("upload rejected: {0}")]
    Rejected(UploadRejection),
}

/// An `/upload` body whose server key has the right length: the keypair to
/// look up, and the rest of the request for [`UploadRequest::open_and_validate`].
#[derive(Debug)]
pub struct UploadRequest {
    pub server_public: ServerPublicKey,
    /// The app's key, the nonce and the sealed payload: none of them shown by `Debug`.
    request: Redacted<EncryptedUploadRequest>,
}

/// Checks 1 to 3 of DESIGN §3.3: the size, the decoding and the server key.
pub fn parse_upload_request(body: &[u8]) -> Result<UploadRequest, UploadRefusal> {
    if body.len() > MAX_UPLOAD_BODY_BYTES {
        return Err(UploadRefusal::BadRequest);
    }
    let request = EncryptedUploadRequest::decode(body).map_err(|_| UploadRefusal::BadRequest)?;
    let server_public = ServerPublicKey::try_from(request.server_public_key())
        .map_err(|_| UploadRefusal::InvalidCryptoParameters)?;
    Ok(UploadRequest {
        server_public,
        request: Redacted::new(request),
    })
}

impl UploadRequest {
    /// Checks 4 to 10 of DESIGN §3.3 once the keypair is found: the lengths,
    /// the app key that claimed it (`claimed_by`) and the box, then the
    /// `Upload` inside it, received at `now_unix`.
    pub fn open_and_validate(
        &self,
        server_secret: &ServerSecretKey,
        claimed_by: &AppPublicKey,
        now_unix: i64,
    ) -> Result<ValidatedUpload, UploadRefusal> {
        let request = self.request.expose();
        let nonce: &[u8; 24] = request
            .nonce()
            .try_into()
            .map_err(|_| UploadRefusal::InvalidCryptoParameters)?;
        let app_public = AppPublicKey::try_from(request.app_public_key())
            .map_err(|_| UploadRefusal::InvalidCryptoParameters)?;
        // The box must be sealed by the app key that claimed this keypair: a box
        // sealed by any other key does not open, whatever key the request names.
        if app_public != *claimed_by {
            return Err(UploadRefusal::DecryptionFailed);
        }
        let plaintext = open_upload_payload(server_secret, &app_public, nonce, request.payload())
            .map_err(|_| UploadRefusal::DecryptionFailed)?;
        let upload =
            Upload::decode(plaintext.as_slice()).map_err(|_| UploadRefusal::InvalidPayload)?;
        validate_upload(&upload, now_unix).map_err(UploadRefusal::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(code: &str, app_key: Vec<u8>) -> Vec<u8> {
        KeyClaimRequest {
            one_time_code: Some(code.to_owned()),
            app_public_key: Some(app_key),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_claim_body_is_bounded_decoded_and_its_key_and_code_checked() {
        let parsed = parse_claim_request(&claim("aef-245-hjkl", vec![7; 32])).unwrap();
        assert_eq!(
            parsed.code.map(|c| c.as_str().to_owned()).as_deref(),
            Some("AEF245HJKL")
        );
        assert!(
            parse_claim_request(&claim("nope", vec![7; 32]))
                .unwrap()
                .code
                .is_none()
        );
        assert_eq!(
            parse_claim_request(&claim("AEF245HJKL", vec![7; 31])).unwrap_err(),
            ClaimRefusal::InvalidKey
        );
        assert_eq!(
            parse_claim_request(b"\xff").unwrap_err(),
            ClaimRefusal::BadRequest
        );
        let oversize = claim(&"A".repeat(MAX_CLAIM_BODY_BYTES), vec![7; 32]);
        assert_eq!(
            parse_claim_request(&oversize).unwrap_err(),
            ClaimRefusal::BadRequest
        );
    }

    fn upload(server_key: Vec<u8>, nonce: Vec<u8>, app_key: Vec<u8>) -> Vec<u8> {
        EncryptedUploadRequest {
            server_public_key: Some(server_key),
            app_public_key: Some(app_key),
            nonce: Some(nonce),
            payload: Some(vec![0; 40]),
        }
        .encode_to_vec()
    }

    #[test]
    fn an_upload_body_is_checked_in_the_contract_order() {
        let refusal = |body: &[u8], claimed_by: [u8; 32]| {
            let secret = ServerSecretKey::from_array([1; 32]);
            let claimed_by = AppPublicKey::from_array(claimed_by);
            parse_upload_request(body)
                .and_then(|request| request.open_and_validate(&secret, &claimed_by, 0))
                .unwrap_err()
        };
        let oversize = vec![0; MAX_UPLOAD_BODY_BYTES + 1];
        assert_eq!(refusal(&oversize, [2; 32]), UploadRefusal::BadRequest);
        assert_eq!(refusal(b"\xff", [2; 32]), UploadRefusal::BadRequest);
        // A short server key wins over a short nonce.
        let body = upload(vec![3; 31], vec![0; 23], vec![2; 32]);
        assert_eq!(
            refusal(&body, [2; 32]),
            UploadRefusal::InvalidCryptoParameters
        );
        let body = upload(vec![3; 32], vec![0; 23], vec![2; 32]);
        assert_eq!(
            refusal(&body, [2; 32]),
            UploadRefusal::InvalidCryptoParameters
        );
        let body = upload(vec![3; 32], vec![0; 24], vec![2; 31]);
        assert_eq!(
            refusal(&body, [2; 32]),
            UploadRefusal::InvalidCryptoParameters
        );
        let body = upload(vec![3; 32], vec![0; 24], vec![2; 32]);
        assert_eq!(refusal(&body, [4; 32]), UploadRefusal::DecryptionFailed);
        assert_eq!(refusal(&body, [2; 32]), UploadRefusal::DecryptionFailed);
    }

    /// The request's keys, nonce and sealed payload are the app's: `Debug` shows none of them
    /// (DESIGN §7), as the keys' own types do not.
    #[test]
    fn an_upload_request_debug_shows_no_key_nonce_or_payload() {
        let body = upload(vec![0xab; 32], vec![0xcd; 24], vec![0xef; 32]);
        let parsed = parse_upload_request(&body).unwrap();
        let shown = format!("{parsed:?}");
        for byte in ["171", "205", "239", "ab", "cd", "ef"] {
            assert!(!shown.contains(byte), "{byte} in {shown}");
        }
        assert_eq!(
            shown,
            "UploadRequest { server_public: ServerPublicKey(..), request: .. }"
        );
    }
}
