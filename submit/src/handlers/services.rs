//! `/services/...`: liveness and version for load balancers and operators (DESIGN §3.4).

use http::{Response, StatusCode};

use crate::http::{Body, empty, json, text};
use crate::state::AppState;

pub fn ping() -> Response<Body> {
    text(StatusCode::OK, "OK", "ok")
}

pub fn present() -> Response<Body> {
    empty(StatusCode::NO_CONTENT, "ok")
}

pub fn version(state: &AppState) -> Response<Body> {
    json(StatusCode::OK, &state.version, "ok")
}
