//! The internal metrics listener (`METRICS_ADDR`, DESIGN §3.4): Prometheus
//! `/metrics` and the seed's `/events/...` JSON API behind HTTP Basic auth.

use chrono::NaiveDate;
use diagnosis_core::basic_auth::basic_auth_admits;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::error::EventsError;
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
        None => EventsError::NotCollected.into_response(),
    }
}

pub async fn events(
    state: &AppState,
    headers: &HeaderMap,
    report: EventReport,
    date: &str,
) -> Response<Body> {
    report_on(state, headers, report, date)
        .await
        .unwrap_or_else(EventsError::into_response)
}

async fn report_on(
    state: &AppState,
    headers: &HeaderMap,
    report: EventReport,
    date: &str,
) -> Result<Response<Body>, EventsError> {
    // Without configured credentials the events API stays closed.
    let admitted = state
        .settings
        .metrics_credentials
        .as_ref()
        .is_some_and(|expected| {
            let authorization = headers.get(header::AUTHORIZATION);
            basic_auth_admits(expected, authorization.map(HeaderValue::as_bytes))
        });
    if !admitted {
        return Err(EventsError::Unauthorized);
    }
    let date = parse_date(date).ok_or(EventsError::BadDate)?;
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

/// A day of the events API: exactly `YYYY-MM-DD` (DESIGN §3.4). The shape is checked
/// before the calendar, because a date parser also reads signed and longer years, such as
/// `-4713-11-23`, which PostgreSQL cannot hold: every four-digit year can be queried.
fn parse_date(text: &str) -> Option<NaiveDate> {
    let shaped = matches!(
        text.as_bytes(),
        [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2]
            if [y1, y2, y3, y4, m1, m2, d1, d2].iter().all(|b| b.is_ascii_digit())
    );
    shaped
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yyyy_mm_dd_is_a_date() {
        assert_eq!(
            parse_date("2026-11-28"),
            NaiveDate::from_ymd_opt(2026, 11, 28)
        );
        assert_eq!(parse_date("0000-01-01"), NaiveDate::from_ymd_opt(0, 1, 1));
        for bad in [
            "-4713-11-23",
            "+262142-12-31",
            "12026-11-28",
            "2026-1-28",
            "2026-11-8",
            "2026-02-30",
            "2026/11/28",
            "２０２６-11-28",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }
}
