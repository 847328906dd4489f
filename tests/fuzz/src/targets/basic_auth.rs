//! The `Authorization` header of the events API (DESIGN §3.4, §7): HTTP Basic credentials
//! compared with `METRICS_USERNAME`/`METRICS_PASSWORD` by
//! `diagnosis_domain::basic_auth::basic_auth_admits`, which `submit` calls with the header's
//! bytes. No input may panic, and only the exact credentials are admitted. Not covered: the
//! lookup of the header in hyper's header map (`submit`'s events handler).

use base64::Engine as _;
use diagnosis_domain::basic_auth::{MetricsCredentials, basic_auth_admits};
use diagnosis_domain::redacted::Redacted;
use http::HeaderValue;

const USERNAME: &str = "operations";
const PASSWORD: &str = "a-metrics-password";

pub fn basic_auth(input: &[u8]) {
    let expected = MetricsCredentials {
        username: Redacted::new(USERNAME.to_owned()),
        password: Redacted::new(PASSWORD.to_owned()),
    };
    // The raw header as a client may send it.
    if let Ok(header) = HeaderValue::from_bytes(input) {
        let admitted = basic_auth_admits(&expected, Some(header.as_bytes()));
        if admitted {
            let text = header.to_str().unwrap_or_default();
            let (_, encoded) = text.split_once(' ').unwrap_or_default();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .unwrap_or_default();
            assert_eq!(decoded, format!("{USERNAME}:{PASSWORD}").as_bytes());
        }
    }
    // The same bytes as credentials, encoded the way a client encodes them: only the exact
    // pair is admitted.
    let header = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(input)
    );
    if let Ok(header) = HeaderValue::from_str(&header) {
        let admitted = basic_auth_admits(&expected, Some(header.as_bytes()));
        assert_eq!(
            admitted,
            input == format!("{USERNAME}:{PASSWORD}").as_bytes()
        );
    }
}
