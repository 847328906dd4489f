//! Small HTTP helpers shared by the handlers: bounded body reading and the three
//! response shapes the API speaks (protobuf, plain text, JSON).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

/// Every response body is sent whole; none is large.
pub type Body = Full<Bytes>;

/// The outcome of a request, as a short static label for metrics and logs (for
/// example the protocol error code name). Never carries request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome(pub &'static str);

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    TimedOut,
    Broken,
}

/// Reads a whole request body of at most `limit` bytes within `timeout`.
pub async fn read_body(
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Broken),
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    outcome: &'static str,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.extensions_mut().insert(Outcome(outcome));
    response
}

/// A protobuf response (`application/x-protobuf`).
pub fn protobuf(
    status: StatusCode,
    message: &impl prost::Message,
    outcome: &'static str,
) -> Response<Body> {
    respond(
        status,
        "application/x-protobuf",
        Bytes::from(message.encode_to_vec()),
        outcome,
    )
}

/// A plain-text response; the body gets its trailing newline here.
pub fn text(status: StatusCode, body: &str, outcome: &'static str) -> Response<Body> {
    let mut bytes = Vec::with_capacity(body.len() + 1);
    bytes.extend_from_slice(body.as_bytes());
    bytes.push(b'\n');
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(bytes),
        outcome,
    )
}

/// A JSON response.
pub fn json(
    status: StatusCode,
    value: &impl serde::Serialize,
    outcome: &'static str,
) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => respond(status, "application/json", Bytes::from(bytes), outcome),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server error",
            "SERVER_ERROR",
        ),
    }
}

/// A response with no body.
pub fn empty(status: StatusCode, outcome: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response.extensions_mut().insert(Outcome(outcome));
    response
}
