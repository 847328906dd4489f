//! The deployed COVID Alert apps' way to their retrieval objects (DESIGN §4.3): `GET
//! /retrieve/{MCC}/{P}/{hmac}` on the CDN, where the edge function checks the HMAC against the
//! current hour ± 1, answers 404 for a day after today and 410 for one before today − 14, and
//! rewrites the request to the object key `retrieve/{MCC}/{P}`.
//!
//! An [`Edge`] asks exactly as an app does, with the HMAC of the current hour by its clock.
//! It only reads, and it never puts the shared secret or an hour's HMAC (a credential for that
//! hour) into a message or an error: requests are shown with `{hmac}` in place of the HMAC.

use std::ops::RangeInclusive;
use std::sync::Arc;

use diagnosis_domain::redacted::Redacted;
use diagnosis_domain::time::{Clock, RELEVANCE_DAYS, day_number, hour_number};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

use crate::VerifyError;
use crate::fetch::{HttpAnswer, HttpSource};

/// The shortest secret the edge function accepts (`infra/cdn/retrieve.js`): 32 bytes.
pub const MIN_HMAC_KEY_BYTES: usize = 32;

/// The CDN in front of the bucket, asked the way the deployed apps ask.
#[derive(Debug, Clone)]
pub struct Edge {
    http: HttpSource,
    region_path: String,
    key: Redacted<Vec<u8>>,
    clock: Arc<dyn Clock>,
}

impl Edge {
    /// The CDN at `http` (its root URL), for the apps' path `retrieve/{region_path}/`, with the
    /// apps' shared secret `hmac_key_hex` (hex of at least 32 bytes, the apps' `HMAC_KEY`) and
    /// the clock whose hour the HMAC is computed for.
    pub fn new(
        http: HttpSource,
        region_path: &str,
        hmac_key_hex: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, VerifyError> {
        let invalid = |reason: &'static str| VerifyError::InvalidHmacKey { reason };
        let text = hmac_key_hex.trim();
        if text.contains(',') {
            return Err(invalid("holds a list; give the one key the apps use"));
        }
        let key = hex::decode(text).map_err(|_| invalid("is not hex"))?;
        if key.len() < MIN_HMAC_KEY_BYTES {
            return Err(invalid("is shorter than 32 bytes"));
        }
        Ok(Self {
            http,
            region_path: region_path.to_owned(),
            key: Redacted::new(key),
            clock,
        })
    }

    /// The CDN's root URL.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The days the edge lets a request through for now: from today − 14 to today, by its
    /// clock.
    pub(crate) fn served_days(&self) -> RangeInclusive<u64> {
        let today = u64::try_from(day_number(self.clock.now().timestamp())).unwrap_or(0);
        today.saturating_sub(RELEVANCE_DAYS.unsigned_abs())..=today
    }

    /// Whether the edge lets a request for `day` through now.
    pub(crate) fn serves_day(&self, day: u64) -> bool {
        self.served_days().contains(&day)
    }

    /// The request for `p` as shown in messages, without the hour's HMAC.
    pub(crate) fn shown(&self, p: &str) -> String {
        format!(
            "{}/retrieve/{}/{p}/{{hmac}}",
            self.http.base_url(),
            self.region_path
        )
    }

    /// `GET /retrieve/{MCC}/{p}/{hmac}` with the HMAC of the current hour.
    pub(crate) async fn fetch(&self, p: &str) -> Result<HttpAnswer, VerifyError> {
        let hour = hour_number(self.clock.now().timestamp());
        let mac = retrieve_hmac(self.key.expose(), &self.region_path, p, hour);
        let url = format!(
            "{}/retrieve/{}/{p}/{mac}",
            self.http.request_root(),
            self.region_path
        );
        self.http.answer(&url, &self.shown(p)).await
    }
}

/// The lowercase hex HMAC-SHA-256 of `{region_path}:{p}:{hour}` under `key`, as the apps send
/// it (DESIGN §4.3).
pub fn retrieve_hmac(key: &[u8], region_path: &str, p: &str, hour: i64) -> String {
    // HMAC-SHA-256 takes a key of any length: the error cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("{region_path}:{p}:{hour}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{TimeZone as _, Utc};
    use diagnosis_core::time::ManualClock;

    use super::*;

    fn edge(key: &str) -> Result<Edge, VerifyError> {
        let clock = ManualClock::new(Utc.timestamp_opt(20_410 * 86_400 + 5 * 3600, 0).unwrap());
        Edge::new(
            HttpSource::new("http://127.0.0.1:9/cdn/").unwrap(),
            "302",
            key,
            Arc::new(clock),
        )
    }

    /// The vectors of `infra/cdn/vectors.json`, produced with Python's `hmac`, which the edge
    /// function and the CDN stand-in are held to as well.
    #[test]
    fn hmacs_match_the_independent_vectors() {
        let text = include_str!("../../../infra/cdn/vectors.json");
        let vectors: serde_json::Value = serde_json::from_str(text).unwrap();
        let secrets = &vectors["secrets"];
        let list = vectors["vectors"].as_array().unwrap();
        assert!(list.len() > 50);
        for vector in list {
            let name = vector["secret"].as_str().unwrap();
            let secret = secrets[name]
                .as_str()
                .or_else(|| secrets[name]["hex"].as_str())
                .unwrap();
            let key = hex::decode(secret).unwrap();
            assert_eq!(
                retrieve_hmac(
                    &key,
                    vector["mcc"].as_str().unwrap(),
                    vector["period"].as_str().unwrap(),
                    vector["hour"].as_i64().unwrap()
                ),
                vector["hmac"].as_str().unwrap(),
                "{vector}"
            );
        }
    }

    #[test]
    fn a_key_the_edge_would_refuse_is_refused_without_being_echoed() {
        let good = "ab".repeat(32);
        assert!(edge(&format!(" {good}\n")).is_ok());
        for (key, reason) in [
            ("ab".repeat(31), "is shorter than 32 bytes"),
            (
                format!("{good},{good}"),
                "holds a list; give the one key the apps use",
            ),
            (format!("{}zz", "ab".repeat(32)), "is not hex"),
        ] {
            match edge(&key) {
                Err(error @ VerifyError::InvalidHmacKey { reason: found }) => {
                    assert_eq!(found, reason);
                    assert!(!error.to_string().contains(&key), "{error}");
                }
                other => panic!("{key}: {other:?}"),
            }
        }
        assert!(!format!("{:?}", edge(&good).unwrap()).contains(&good));
    }

    #[test]
    fn the_edge_serves_the_last_fourteen_days_and_today() {
        let edge = edge(&"ab".repeat(32)).unwrap();
        assert_eq!(edge.served_days(), 20_396..=20_410);
        assert!(edge.serves_day(20_410));
        assert!(edge.serves_day(20_396));
        assert!(!edge.serves_day(20_395));
        assert!(!edge.serves_day(20_411));
        assert_eq!(
            edge.shown("20410"),
            "http://127.0.0.1:9/cdn/retrieve/302/20410/{hmac}"
        );
    }
}
