//! HTTP Basic credentials of the events API (DESIGN §3.4, §7): the check of an
//! `Authorization` header against `METRICS_USERNAME`/`METRICS_PASSWORD`, on the
//! header's raw bytes, so the check the service runs is the one the fuzz
//! targets run. This module must never log or echo a credential.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::redacted::Redacted;

/// HTTP Basic credentials of the `/events/...` API (`METRICS_USERNAME`,
/// `METRICS_PASSWORD`), neither shown by `Debug`.
#[derive(Debug, Clone)]
pub struct MetricsCredentials {
    pub username: Redacted<String>,
    pub password: Redacted<String>,
}

/// Whether an `Authorization` header (its value as received) carries HTTP Basic
/// credentials equal to `METRICS_USERNAME`/`METRICS_PASSWORD` (DESIGN §7:
/// constant time, length included). Each part is compared as a SHA-256 digest,
/// so both sides of a comparison are always 32 bytes and the time taken does
/// not depend on how long the expected values are or how much of them matches;
/// the user and the password are both compared before the results are
/// combined. A malformed header is refused at once: that reveals nothing about
/// the credentials.
pub fn basic_auth_admits(expected: &MetricsCredentials, authorization: Option<&[u8]>) -> bool {
    let Some(encoded) = authorization
        .and_then(visible_text)
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

/// A header value as text when it is only visible ASCII, spaces and tabs (what
/// `http`'s `HeaderValue::to_str` accepts); `None` otherwise.
fn visible_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        basic_auth_admits(&expected(), Some(header.as_bytes()))
    }

    #[test]
    fn the_right_credentials_are_admitted() {
        assert!(admits(&basic("ops:metrics-password")));
        // The scheme is case-insensitive (RFC 7617) and surrounding spaces are tolerated.
        assert!(admits(
            &basic("ops:metrics-password").replace("Basic", "bAsIc")
        ));
        assert!(admits(&format!("{}  ", basic("ops:metrics-password"))));
        assert!(admits(&format!("{}\t", basic("ops:metrics-password"))));
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
        assert!(!basic_auth_admits(&expected(), Some(b"Basic \xff\xfe")));
    }

    /// Bytes outside visible ASCII anywhere in the header refuse it, as the
    /// `http` crate's text view of a header does, even around right credentials.
    #[test]
    fn a_header_that_is_not_visible_ascii_is_refused() {
        let right = basic("ops:metrics-password");
        for header in [
            format!("{right}\u{7f}"),
            format!("{right}\u{e9}"),
            format!("\u{a0}{right}"),
            format!("{right}\r"),
        ] {
            assert!(!admits(&header), "{} was admitted", header.escape_debug());
        }
    }
}
