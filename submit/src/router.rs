//! Every route of the service, in one place (DESIGN §3). Paths are matched
//! exactly: no trailing slashes, unknown paths are 404.

use std::net::SocketAddr;
use std::time::Instant;

use diagnosis_core::domain::HashId;
use diagnosis_core::store::ClientIdentifier;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::client_ip::client_address;
use crate::handlers::events::EventReport;
use crate::handlers::{claim_key, events, new_key_claim, services, upload};
use crate::http::{Body, Outcome, empty, text};
use crate::state::AppState;

/// Routes a request of the public listener (`BIND_ADDR`).
pub async fn api(state: &AppState, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let (endpoint, mut response) = match (&parts.method, path) {
        (method, "/new-key-claim") => (
            "new-key-claim",
            portal(state, method, &parts.headers, None).await,
        ),
        (method, p) if p.starts_with("/new-key-claim/") => {
            let hash_id = &p["/new-key-claim/".len()..];
            let response = match HashId::parse(hash_id) {
                Some(hash_id) => portal(state, method, &parts.headers, Some(&hash_id)).await,
                None => not_found(),
            };
            ("new-key-claim/{hashID}", response)
        }
        (&Method::POST, "/claim-key") => {
            let client = client_identifier(state, &parts.headers, peer);
            let response = claim_key::claim_key(state, body, &client)
                .await
                .unwrap_or_else(|e| e.into_response());
            ("claim-key", response)
        }
        (&Method::POST, "/upload") => {
            let response = upload::upload(state, body)
                .await
                .unwrap_or_else(|e| e.into_response());
            ("upload", response)
        }
        (_, "/claim-key") => ("claim-key", method_not_allowed("POST")),
        (_, "/upload") => ("upload", method_not_allowed("POST")),
        (&Method::GET, "/services/ping") => ("services/ping", services::ping()),
        (&Method::GET, "/services/present") => ("services/present", services::present()),
        (&Method::GET, "/services/version.json") => ("services/version", services::version(state)),
        (_, "/services/ping" | "/services/present" | "/services/version.json") => {
            ("services", method_not_allowed("GET"))
        }
        _ => ("unknown", not_found()),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    observe("api", endpoint, &response, started);
    response
}

/// Routes a request of the internal listener (`METRICS_ADDR`).
pub async fn internal(state: &AppState, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let path = request.uri().path();
    let headers = request.headers();
    let (endpoint, mut response) = if request.method() != Method::GET {
        ("internal", method_not_allowed("GET"))
    } else if path == "/metrics" {
        ("metrics", events::prometheus(state))
    } else if let Some(date) = path.strip_prefix("/events/uploads/") {
        (
            "events/uploads",
            events::events(state, headers, EventReport::Uploads, date).await,
        )
    } else if let Some(date) = path.strip_prefix("/events/otkdurations/") {
        (
            "events/otkdurations",
            events::events(state, headers, EventReport::OtkDurations, date).await,
        )
    } else if let Some(date) = path.strip_prefix("/events/") {
        (
            "events",
            events::events(state, headers, EventReport::Events, date).await,
        )
    } else {
        ("unknown", not_found())
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if endpoint != "metrics" {
        observe("internal", endpoint, &response, started);
    }
    response
}

async fn portal(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    hash_id: Option<&HashId>,
) -> Response<Body> {
    let mut response = match *method {
        Method::OPTIONS => {
            let mut response = empty(StatusCode::OK, "preflight");
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Authorization, Content-Type"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            response
        }
        Method::POST => new_key_claim::new_key_claim(state, headers, hash_id)
            .await
            .unwrap_or_else(|e| e.into_response()),
        _ => crate::error::PortalError::Unauthorized.into_response(),
    };
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        state.settings.cors_allow_origin.clone(),
    );
    response
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found", "not_found")
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        "method_not_allowed",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The client a failed claim is counted against: its address as
/// [`client_address`] finds it, as a keyed hash (DESIGN §3.2). The address goes
/// no further than this function.
fn client_identifier(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> ClientIdentifier {
    let address = client_address(&state.settings.forwarded_for, headers, peer.ip());
    ClientIdentifier::new(&state.client_identity.get(), address)
}

/// Request metrics and one log line per request: endpoint, status and outcome
/// only — never the address, path parameters, headers or body.
fn observe(
    listener: &'static str,
    endpoint: &'static str,
    response: &Response<Body>,
    started: Instant,
) {
    let outcome = response
        .extensions()
        .get::<Outcome>()
        .map_or("unknown", |o| o.0);
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!(
        "submit_requests_total",
        "listener" => listener,
        "endpoint" => endpoint,
        "status" => status.to_string(),
        "outcome" => outcome,
    )
    .increment(1);
    metrics::histogram!("submit_request_duration_seconds", "endpoint" => endpoint)
        .record(elapsed.as_secs_f64());
    tracing::info!(
        listener,
        endpoint,
        status,
        outcome,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
}
