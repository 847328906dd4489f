//! The internal metrics listener (`METRICS_ADDR`, DESIGN §3.4): Prometheus
//! `/metrics` and the seed's `/events/...` JSON API behind HTTP Basic auth.

use base64::Engine;
use chrono::NaiveDate;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::EventsError;
use crate::http::{Body, json, text};
use crate::state::{AppState, MetricsCredentials};

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
        .is_some_and(|expected| basic_auth_admits(expected, headers.get(header::AUTHORIZATION)));
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

/// Whether an `Authorization` header carries HTTP Basic credentials equal to
/// `METRICS_USERNAME`/`METRICS_PASSWORD` (DESIGN §7: constant time, length
/// included). Each part is compared as a SHA-256 digest, so both sides of a
/// comparison are always 32 bytes and the time taken does not depend on how
/// long the expected values are or how much of them matches; the user and the
/// password are both compared before the results are combined. A malformed
/// header is refused at once: that reveals nothing about the credentials.
pub fn basic_auth_admits(
    expected: &MetricsCredentials,
    authorization: Option<&HeaderValue>,
) -> bool {
    let Some(encoded) = authorization
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
    let user_ok = Sha256::digest(user)
        .as_slice()
        .ct_eq(Sha256::digest(expected.username.expose().as_bytes()).as_slice());
    let password_ok = Sha256::digest(password)
        .as_slice()
        .ct_eq(Sha256::digest(expected.password.expose().as_bytes()).as_slice());
    bool::from(user_ok & password_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diagnosis_core::redacted::Redacted;

    fn expected() -> MetricsCredentials {
        MetricsCredentials {
            username: Redacted::new("ops".to_owned()),
            password: Redacted::new("metrics-password".to_owned()),
        }
    }

    fn basic(user_and_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_and_password)
        )
    }

    fn admits(header: &str) -> bool {
        let value = HeaderValue::from_str(header).unwrap();
        basic_auth_admits(&expected(), Some(&value))
    }

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

    #[test]
    fn the_right_credentials_are_admitted() {
        assert!(admits(&basic("ops:metrics-password")));
        // The scheme is case-insensitive (RFC 7617) and surrounding spaces are tolerated.
        assert!(admits(
            &basic("ops:metrics-password").replace("Basic", "bAsIc")
        ));
        assert!(admits(&format!("{}  ", basic("ops:metrics-password"))));
    }

    #[test]
    fn wrong_shorter_longer_and_empty_credentials_are_refused() {
        for credentials in [
            "ops:wrong-password!",
            "opz:metrics-password",
            "ops:metrics-passwor",
            "op:metrics-password",
            "ops:metrics-password2",
            "opss:metrics-password",
            "ops:m",
            "ops:",
            ":metrics-password",
            ":",
            "",
            "ops:metrics-password:",
            "ops:metrics-password\0",
            "metrics-password:ops",
        ] {
            assert!(!admits(&basic(credentials)), "{credentials:?} was admitted");
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let malformed = [
            String::new(),
            "Basic".to_owned(),
            "Basic ".to_owned(),
            "Basic !!!not-base64!!!".to_owned(),
            // No colon between user and password.
            basic("opsmetrics-password"),
            // Another scheme with the right credentials.
            basic("ops:metrics-password").replace("Basic", "Bearer"),
            // The credentials unencoded.
            "Basic ops:metrics-password".to_owned(),
            // Truncated base64.
            basic("ops:metrics-password")[..20].to_owned(),
        ];
        for header in &malformed {
            assert!(!admits(header), "{header:?} was admitted");
        }
        assert!(!basic_auth_admits(&expected(), None));
        let not_text = HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap();
        assert!(!basic_auth_admits(&expected(), Some(&not_text)));
    }
}
