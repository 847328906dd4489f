//! The one place where failures become HTTP responses (DESIGN §3). Every match
//! here is exhaustive with no catch-all arm, so a new failure cannot silently
//! turn into a 500 or into the wrong protocol code.

use diagnosis_core::request::{ClaimRefusal, UploadRefusal};
use diagnosis_core::store::StoreError;
use diagnosis_core::upload::UploadRejection;
use diagnosis_proto::encrypted_upload_response::ErrorCode as UploadCode;
use diagnosis_proto::key_claim_response::ErrorCode as ClaimCode;
use diagnosis_proto::{EncryptedUploadResponse, KeyClaimResponse};
use http::{HeaderValue, Response, StatusCode, header};

use crate::claim_queue::QueueTimeout;
use crate::http::{Body, protobuf, text};

/// Why `POST /new-key-claim` failed.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("missing or unknown bearer token, or a method other than POST")]
    Unauthorized,
    #[error("the hash ID's code was already claimed")]
    HashIdAlreadyClaimed,
    #[error("every candidate one-time code collided")]
    CodeCollisions,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PortalError {
    pub fn into_response(self) -> Response<Body> {
        match self {
            PortalError::Unauthorized => {
                text(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized")
            }
            PortalError::HashIdAlreadyClaimed => {
                text(StatusCode::FORBIDDEN, "forbidden", "forbidden")
            }
            PortalError::CodeCollisions => {
                tracing::error!("one-time code generation collided on every attempt");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server error",
                    "code_collisions",
                )
            }
            PortalError::Store(e) => {
                tracing::error!(error = %e, "issuing a one-time code failed");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server error",
                    "server_error",
                )
            }
        }
    }
}

/// Why `POST /claim-key` failed (DESIGN §3.2, in the order the checks run).
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("client is banned")]
    Banned { remaining: chrono::Duration },
    #[error("body too large or not a KeyClaimRequest")]
    BadRequest,
    #[error("app public key is not 32 bytes")]
    InvalidKey,
    #[error("app public key already registered")]
    AppKeyAlreadyRegistered,
    #[error("unknown, expired or already claimed one-time code")]
    InvalidCode {
        tries_remaining: u32,
        ban: chrono::Duration,
    },
    /// The claim waited for the earlier claims of its client longer than a
    /// request waits for a pooled connection (DESIGN §3.2).
    #[error(transparent)]
    QueueTimeout(#[from] QueueTimeout),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ClaimRefusal> for ClaimError {
    fn from(refusal: ClaimRefusal) -> Self {
        match refusal {
            ClaimRefusal::BadRequest => ClaimError::BadRequest,
            ClaimRefusal::InvalidKey => ClaimError::InvalidKey,
        }
    }
}

fn duration(d: chrono::Duration) -> diagnosis_proto::Duration {
    diagnosis_proto::Duration {
        seconds: d.num_seconds().max(0),
        nanos: 0,
    }
}

fn claim_response(
    status: StatusCode,
    code: ClaimCode,
    tries_remaining: u32,
    ban: Option<chrono::Duration>,
) -> Response<Body> {
    let message = KeyClaimResponse {
        error: Some(code as i32),
        server_public_key: None,
        tries_remaining: Some(tries_remaining),
        remaining_ban_duration: ban.map(duration),
    };
    protobuf(status, &message, code.as_str_name())
}

impl ClaimError {
    pub fn into_response(self) -> Response<Body> {
        match self {
            ClaimError::Banned { remaining } => claim_response(
                StatusCode::TOO_MANY_REQUESTS,
                ClaimCode::TemporaryBan,
                0,
                Some(remaining),
            ),
            ClaimError::BadRequest => {
                claim_response(StatusCode::BAD_REQUEST, ClaimCode::Unknown, 0, None)
            }
            ClaimError::InvalidKey => {
                claim_response(StatusCode::BAD_REQUEST, ClaimCode::InvalidKey, 0, None)
            }
            ClaimError::AppKeyAlreadyRegistered => {
                claim_response(StatusCode::UNAUTHORIZED, ClaimCode::InvalidKey, 0, None)
            }
            ClaimError::InvalidCode {
                tries_remaining,
                ban,
            } => claim_response(
                StatusCode::UNAUTHORIZED,
                ClaimCode::InvalidOneTimeCode,
                tries_remaining,
                Some(ban),
            ),
            // A database that cannot take a client's claims in time is a
            // database failure to the app, as a pool timeout is (DESIGN §3.2).
            ClaimError::QueueTimeout(e) => {
                tracing::warn!(error = %e, "claiming a one-time code failed");
                claim_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ClaimCode::ServerError,
                    0,
                    None,
                )
            }
            ClaimError::Store(e) => {
                tracing::error!(error = %e, "claiming a one-time code failed");
                claim_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ClaimCode::ServerError,
                    0,
                    None,
                )
            }
        }
    }
}

/// Why `POST /upload` failed (DESIGN §3.3, in the order the checks run).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("body too large or not an EncryptedUploadRequest")]
    BadRequest,
    #[error("key or nonce of the wrong length")]
    InvalidCryptoParameters,
    #[error("no valid keypair for that server key")]
    UnknownKeypair,
    #[error("the box does not open")]
    DecryptionFailed,
    #[error("the plaintext is not an Upload")]
    InvalidPayload,
    #[error("upload rejected: {0}")]
    Rejected(UploadRejection),
    #[error("the keypair's quota is used up")]
    QuotaExhausted,
    #[error("more new keys than the keypair's quota")]
    TooManyKeys,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<UploadRefusal> for UploadError {
    fn from(refusal: UploadRefusal) -> Self {
        match refusal {
            UploadRefusal::BadRequest => UploadError::BadRequest,
            UploadRefusal::InvalidCryptoParameters => UploadError::InvalidCryptoParameters,
            UploadRefusal::DecryptionFailed => UploadError::DecryptionFailed,
            UploadRefusal::InvalidPayload => UploadError::InvalidPayload,
            UploadRefusal::Rejected(rejection) => UploadError::Rejected(rejection),
        }
    }
}

impl UploadError {
    pub fn into_response(self) -> Response<Body> {
        let (status, code) = match self {
            UploadError::BadRequest => (StatusCode::BAD_REQUEST, UploadCode::Unknown),
            UploadError::InvalidCryptoParameters => {
                (StatusCode::BAD_REQUEST, UploadCode::InvalidCryptoParameters)
            }
            UploadError::UnknownKeypair => (StatusCode::UNAUTHORIZED, UploadCode::InvalidKeypair),
            UploadError::DecryptionFailed => {
                (StatusCode::BAD_REQUEST, UploadCode::DecryptionFailed)
            }
            UploadError::InvalidPayload => (StatusCode::BAD_REQUEST, UploadCode::InvalidPayload),
            UploadError::Rejected(rejection) => (StatusCode::BAD_REQUEST, rejection.code()),
            UploadError::QuotaExhausted => (StatusCode::BAD_REQUEST, UploadCode::InvalidKeypair),
            UploadError::TooManyKeys => (StatusCode::BAD_REQUEST, UploadCode::TooManyKeys),
            UploadError::Store(e) => {
                tracing::error!(error = %e, "storing an upload failed");
                (StatusCode::INTERNAL_SERVER_ERROR, UploadCode::ServerError)
            }
        };
        upload_response(status, code)
    }
}

/// An upload response; the error field is always present, even for NONE.
pub fn upload_response(status: StatusCode, code: UploadCode) -> Response<Body> {
    protobuf(
        status,
        &EncryptedUploadResponse {
            error: Some(code as i32),
        },
        code.as_str_name(),
    )
}

/// Why a request of the internal listener (`/metrics` or `/events/...`)
/// failed (DESIGN §3.4).
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("metrics are not collected (METRIC_PROVIDER is not prometheus)")]
    NotCollected,
    #[error("missing or wrong Basic credentials, or the events API is not configured")]
    Unauthorized,
    #[error("the date is not YYYY-MM-DD")]
    BadDate,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EventsError {
    pub fn into_response(self) -> Response<Body> {
        match self {
            EventsError::NotCollected => text(
                StatusCode::NOT_FOUND,
                "metrics are not collected (METRIC_PROVIDER is not prometheus)",
                "not_found",
            ),
            EventsError::Unauthorized => {
                let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized");
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"metrics\""),
                );
                response
            }
            EventsError::BadDate => text(
                StatusCode::BAD_REQUEST,
                "date must be YYYY-MM-DD",
                "bad_request",
            ),
            EventsError::Store(e) => {
                tracing::error!(error = %e, "reading server events failed");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server error",
                    "server_error",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::http::Outcome;

    async fn text_of(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn outcome(response: &Response<Body>) -> Option<Outcome> {
        response.extensions().get::<Outcome>().copied()
    }

    #[tokio::test]
    async fn internal_listener_failures_keep_their_status_body_and_outcome() {
        let not_collected = EventsError::NotCollected.into_response();
        assert_eq!(not_collected.status(), StatusCode::NOT_FOUND);
        assert_eq!(outcome(&not_collected), Some(Outcome("not_found")));
        assert_eq!(
            text_of(not_collected).await,
            "metrics are not collected (METRIC_PROVIDER is not prometheus)\n"
        );

        let unauthorized = EventsError::Unauthorized.into_response();
        assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            unauthorized.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Basic realm=\"metrics\""))
        );
        assert_eq!(outcome(&unauthorized), Some(Outcome("unauthorized")));
        assert_eq!(text_of(unauthorized).await, "unauthorized\n");

        let bad_date = EventsError::BadDate.into_response();
        assert_eq!(bad_date.status(), StatusCode::BAD_REQUEST);
        assert_eq!(outcome(&bad_date), Some(Outcome("bad_request")));
        assert_eq!(text_of(bad_date).await, "date must be YYYY-MM-DD\n");
    }
}
