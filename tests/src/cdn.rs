//! A stand-in for the CDN: serves a bucket over HTTP on localhost with the
//! Content-Type and Cache-Control the exporter set (or, for a bucket that keeps
//! no headers, those its object key implies at the current time: today's
//! `retrieve/{MCC}/{DDDDD}` grows until its last hour closes), and answers the deployed apps'
//! `GET /retrieve/{MCC}/{P}/{hmac}` with the edge function's checks and
//! rewrite (DESIGN §4.3): HMAC for the current hour ±1 (401), GET only (405),
//! no future day (404), nothing older than today − 14 (410), then the object
//! `retrieve/{MCC}/{P}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use diagnosis_core::redacted::Redacted;
use diagnosis_core::time::{Clock, day_number, hour_number, last_closed_hour};
use diagnosis_exporter::storage::Bucket;
use diagnosis_format::names::ObjectKind;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;

/// The clock the stand-in serves by: the edge's hour checks read it, and so does the
/// Cache-Control of a retrieval day, which is final only once the day's last hour has closed
/// (DESIGN §2, §4.3).
#[derive(Debug, Clone)]
pub struct CdnClock {
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// `EXPORT_GRACE_SECONDS`: how long after its end an hour closes.
    pub grace_seconds: i64,
}

impl CdnClock {
    /// `clock` with the exporter's default grace (600 s).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            grace_seconds: 600,
        }
    }

    fn last_closed_hour(&self) -> i64 {
        last_closed_hour(self.clock.now().timestamp(), self.grace_seconds)
    }
}

/// The Content-Type and Cache-Control to serve `key` with: the stored ones where the bucket
/// keeps headers, otherwise those the key implies at `last_closed_hour`.
pub fn served_headers(
    key: &str,
    stored: Option<(Option<String>, Option<String>)>,
    last_closed_hour: i64,
) -> (Option<String>, Option<String>) {
    let implied = ObjectKind::of_key(key, last_closed_hour);
    let (stored_type, stored_cache) = stored.unwrap_or_default();
    (
        stored_type.or_else(|| implied.map(|k| k.content_type().to_owned())),
        stored_cache.or_else(|| implied.map(|k| k.cache_control().to_owned())),
    )
}

/// What the edge function is configured with.
#[derive(Debug, Clone)]
pub struct Edge {
    /// The apps' shared HMAC key (hex-decoded).
    pub hmac_key: Redacted<Vec<u8>>,
    /// The MCC in the path (`COMPAT_REGION_PATH`).
    pub region_path: String,
}

/// The lowercase hex HMAC the apps send for day `p` in hour `hour`.
pub fn retrieve_hmac(key: &[u8], region_path: &str, p: &str, hour: i64) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(format!("{region_path}:{p}:{hour}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The edge's answer: an error status, or the object key to serve.
pub fn edge_rewrite(
    edge: &Edge,
    method: &Method,
    path: &str,
    now_unix: i64,
) -> Result<String, StatusCode> {
    let Some(rest) = path.strip_prefix("/retrieve/") else {
        return Err(StatusCode::NOT_FOUND);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [mcc, p, mac] = parts[..] else {
        return Err(StatusCode::NOT_FOUND);
    };
    if mcc != edge.region_path || p.len() != 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StatusCode::NOT_FOUND);
    }
    let hour = hour_number(now_unix);
    let valid = (hour - 1..=hour + 1).any(|h| {
        let expected = retrieve_hmac(edge.hmac_key.expose(), mcc, p, h);
        !expected.is_empty() && subtle_eq(expected.as_bytes(), mac.as_bytes())
    });
    if !valid {
        return Err(StatusCode::UNAUTHORIZED);
    }
    if method != Method::GET {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    if p != "00000" {
        let day: i64 = p.parse().map_err(|_| StatusCode::NOT_FOUND)?;
        let today = day_number(now_unix);
        if day > today {
            return Err(StatusCode::NOT_FOUND);
        }
        if day < today - 14 {
            return Err(StatusCode::GONE);
        }
    }
    Ok(format!("retrieve/{mcc}/{p}"))
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

async fn answer(
    bucket: &Bucket,
    edge: Option<&Edge>,
    clock: &CdnClock,
    request: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let key = if path.starts_with("/retrieve/") {
        let Some(edge) = edge else {
            return status(StatusCode::NOT_FOUND);
        };
        match edge_rewrite(edge, request.method(), path, clock.clock.now().timestamp()) {
            Ok(key) => key,
            Err(code) => return status(code),
        }
    } else if request.method() != Method::GET {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    } else {
        path.trim_start_matches('/').to_owned()
    };
    let bytes = match bucket.get(&key).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) | Err(_) => return status(StatusCode::NOT_FOUND),
    };
    let stored = bucket.attributes(&key).await.ok().flatten();
    let (content_type, cache_control) = served_headers(&key, stored, clock.last_closed_hour());
    let mut response = Response::new(Full::new(bytes));
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, cache_control),
    ] {
        if let Some(value) = value.and_then(|v| header::HeaderValue::from_str(&v).ok()) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Serves `bucket` on 127.0.0.1 (port 0) until the runtime ends; returns the address.
pub async fn serve(bucket: Bucket, edge: Option<Edge>, clock: CdnClock) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding the CDN stand-in: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("CDN stand-in address: {e}"));
    serve_on(listener, bucket, edge, clock);
    addr
}

/// Serves `bucket` on `listener` from a background task until the runtime ends.
pub fn serve_on(listener: TcpListener, bucket: Bucket, edge: Option<Edge>, clock: CdnClock) {
    let state = Arc::new((bucket, edge, clock));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = Arc::clone(&state);
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move {
                    let (bucket, edge, clock) = &*state;
                    Ok::<_, Infallible>(answer(bucket, edge.as_ref(), clock, &request).await)
                }
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> Edge {
        Edge {
            hmac_key: Redacted::new(vec![0x11; 32]),
            region_path: "302".into(),
        }
    }

    #[test]
    fn the_edge_checks_in_the_contracts_order() {
        let now = 1_795_883_804; // 2026-11-28
        let today = day_number(now);
        let hour = hour_number(now);
        let path = |p: &str, h: i64| {
            format!(
                "/retrieve/302/{p}/{}",
                retrieve_hmac(&[0x11; 32], "302", p, h)
            )
        };
        let p = format!("{today:05}");
        assert_eq!(
            edge_rewrite(&edge(), &Method::GET, &path(&p, hour), now),
            Ok(format!("retrieve/302/{p}"))
        );
        assert!(edge_rewrite(&edge(), &Method::GET, &path(&p, hour - 1), now).is_ok());
        assert!(edge_rewrite(&edge(), &Method::GET, &path(&p, hour + 1), now).is_ok());
        assert_eq!(
            edge_rewrite(&edge(), &Method::GET, &path(&p, hour + 2), now),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            edge_rewrite(&edge(), &Method::POST, &path(&p, hour + 2), now),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            edge_rewrite(&edge(), &Method::POST, &path(&p, hour), now),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        let future = format!("{:05}", today + 1);
        assert_eq!(
            edge_rewrite(&edge(), &Method::GET, &path(&future, hour), now),
            Err(StatusCode::NOT_FOUND)
        );
        let old = format!("{:05}", today - 15);
        assert_eq!(
            edge_rewrite(&edge(), &Method::GET, &path(&old, hour), now),
            Err(StatusCode::GONE)
        );
        let oldest = format!("{:05}", today - 14);
        assert!(edge_rewrite(&edge(), &Method::GET, &path(&oldest, hour), now).is_ok());
        assert!(edge_rewrite(&edge(), &Method::GET, &path("00000", hour), now).is_ok());
        assert_eq!(
            edge_rewrite(&edge(), &Method::GET, "/retrieve/302/abc", now),
            Err(StatusCode::NOT_FOUND)
        );
    }
}

#[cfg(test)]
mod headers {
    use chrono::{TimeZone as _, Utc};
    use diagnosis_core::time::ManualClock;

    use super::*;

    /// Regression: the stand-in derived headers from the object key alone and served today's
    /// `retrieve/302/{today}` as `public, max-age=1209600, immutable`, so a cache kept an
    /// early version of the day for two weeks (DESIGN §4.3).
    #[test]
    fn todays_retrieval_object_grows_until_its_day_closes() {
        let today = 20_410;
        let key = format!("retrieve/302/{today:05}");
        let manual = Arc::new(ManualClock::new(
            Utc.timestamp_opt(today * 86_400 + 13 * 3600, 0).unwrap(),
        ));
        let clock = CdnClock::new(manual.clone());
        let at = |clock: &CdnClock| served_headers(&key, None, clock.last_closed_hour());
        let growing = (
            Some("application/zip".to_owned()),
            Some("public, max-age=3600, max-stale=600".to_owned()),
        );
        let immutable = (
            Some("application/zip".to_owned()),
            Some("public, max-age=1209600, immutable".to_owned()),
        );
        assert_eq!(at(&clock), growing, "13:00");
        // Midnight has passed, but the day's last hour closes only after the grace.
        manual.set(Utc.timestamp_opt((today + 1) * 86_400 + 599, 0).unwrap());
        assert_eq!(at(&clock), growing, "00:09:59 the next day");
        manual.set(Utc.timestamp_opt((today + 1) * 86_400 + 600, 0).unwrap());
        assert_eq!(at(&clock), immutable, "00:10 the next day");
        // Yesterday's object is final, and headers the bucket kept always win.
        let yesterday = format!("retrieve/302/{:05}", today - 1);
        assert_eq!(
            served_headers(&yesterday, None, clock.last_closed_hour()),
            immutable
        );
        let stored = Some((Some("x/y".to_owned()), Some("no-cache".to_owned())));
        assert_eq!(
            served_headers(&key, stored, clock.last_closed_hour()),
            (Some("x/y".to_owned()), Some("no-cache".to_owned()))
        );
        assert_eq!(
            served_headers("retrieve/302/00000", None, clock.last_closed_hour()),
            growing
        );
        assert_eq!(served_headers("CA/notes.md", None, 0), (None, None));
    }
}

#[cfg(test)]
mod vectors {
    use super::retrieve_hmac;

    /// The stand-in computes the same HMACs as the deployed edge function: both
    /// are checked against vectors produced independently (Python's `hmac`).
    #[test]
    fn hmacs_match_the_independent_vectors() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/cdn/vectors.json"
        ))
        .unwrap_or_else(|e| panic!("infra/cdn/vectors.json: {e}"));
        let vectors: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let secrets = &vectors["secrets"];
        let list = vectors["vectors"]
            .as_array()
            .unwrap_or_else(|| panic!("no vectors"));
        assert!(list.len() > 50);
        for vector in list {
            let secret_name = vector["secret"].as_str().unwrap_or_default();
            let secret_hex = secrets[secret_name]
                .as_str()
                .or_else(|| secrets[secret_name]["hex"].as_str())
                .unwrap_or_else(|| panic!("secret {secret_name}"));
            let key = hex::decode(secret_hex).unwrap_or_else(|e| panic!("{e}"));
            let hour = vector["hour"].as_i64().unwrap_or_default();
            let expected = vector["hmac"].as_str().unwrap_or_default();
            let mcc = vector["mcc"].as_str().unwrap_or_default();
            let period = vector["period"].as_str().unwrap_or_default();
            assert_eq!(retrieve_hmac(&key, mcc, period, hour), expected, "{vector}");
        }
    }
}
