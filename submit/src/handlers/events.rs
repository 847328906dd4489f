//! The internal metrics listener (`METRICS_ADDR`, DESIGN §3.4): Prometheus
//! `/metrics` and the seed's `/events/...` JSON API behind HTTP Basic auth.

use base64::Engine;
use chrono::NaiveDate;
use diagnosis_core::store::StoreError;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use subtle::ConstantTimeEq;

use crate::http::{Body, json, text};
use crate::state::AppState;

/// Which aggregate a `/events/...` request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReport {
    Events,
    Uploads,
    OtkDurations,
}

pub fn prometheus(state: &AppState) -> Response<Body> {
    match &state.prometheus {
        Some(handle) => {
            let mut response = text(StatusCode::OK, handle.render().trim_end(), "ok");
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        None => text(
            StatusCode::NOT_FOUND,
            "metrics are not collected (METRIC_PROVIDER is not prometheus)",
            "not_found",
        ),
    }
}

pub async fn events(
    state: &AppState,
    headers: &HeaderMap,
    report: EventReport,
    date: &str,
) -> Response<Body> {
    if !authorized(state, headers) {
        let mut response = text(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"metrics\""),
        );
        return response;
    }
    let Ok(date) = NaiveDate::parse_from_str(date, "%Y-%m-%d") else {
        return text(
            StatusCode::BAD_REQUEST,
            "date must be YYYY-MM-DD",
            "bad_request",
        );
    };
    let result: Result<Response<Body>, StoreError> = async {
        Ok(match report {
            EventReport::Events => json(StatusCode::OK, &state.store.events_on(date).await?, "ok"),
            EventReport::Uploads => json(
                StatusCode::OK,
                &state.store.upload_counts_on(date).await?,
                "ok",
            ),
            EventReport::OtkDurations => json(
                StatusCode::OK,
                &state.store.otk_durations_on(date).await?,
                "ok",
            ),
        })
    }
    .await;
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "reading server events failed");
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server error",
            "server_error",
        )
    })
}

/// HTTP Basic auth against `METRICS_USERNAME`/`METRICS_PASSWORD`, compared in
/// constant time. Without configured credentials the events API stays closed.
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = &state.settings.metrics_credentials else {
        return false;
    };
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim())
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    let user_ok = user.ct_eq(expected.username.as_bytes());
    let password_ok = password.ct_eq(expected.password.as_bytes());
    bool::from(user_ok & password_ok)
}
