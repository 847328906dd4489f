//! DESIGN §7: no IPs, codes, tokens, keys or payloads in logs. Every log line
//! of a full portal → claim → upload exchange, at the most verbose level, is
//! captured and searched for each secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use diagnosis_proto::Message;
use diagnosis_tests::app::{PORTAL_TOKEN, TestApp};
use diagnosis_tests::simulator::{app_keys, upload_of};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Every way a secret could be spelled in a log line.
fn spellings(bytes: &[u8]) -> Vec<String> {
    vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        base64::engine::general_purpose::STANDARD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        format!("{bytes:?}"),
    ]
}

#[tokio::test]
async fn a_full_exchange_logs_no_code_token_address_or_key() {
    let capture = Capture::default();
    // The binaries' own filter at its most verbose, with `log` records (from
    // tokio-postgres and friends) bridged in, exactly as `telemetry::init` does.
    let filter = diagnosis_core::telemetry::log_filter("trace").unwrap();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
                .with_writer(capture.clone())
                .with_filter(filter),
        )
        .try_init()
        .unwrap();

    let app = TestApp::spawn().await;
    let portal = app.portal();
    let code = portal.issue_code().await.unwrap();
    let hash_id = "5f".repeat(64);
    let hashed_code = portal.request_code(Some(&hash_id)).await.unwrap().text();
    let mut phone = app.phone();
    let claim = phone.claim(&code.to_lowercase()).await.unwrap();
    assert_eq!(claim.status, 200);
    let wrong = app.phone().claim("AEF-245-HJKL").await.unwrap();
    assert_eq!(wrong.status, 401);
    let now = app.now_unix();
    let keys = app_keys(now, 14);
    let request = phone.sealed_request(&upload_of(keys.clone(), now)).unwrap();
    let reply = phone.send_upload(request.encode_to_vec()).await.unwrap();
    assert_eq!(reply.status, 200);
    app.stop().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("claim-key") && logs.contains("upload"),
        "requests were not logged at all:\n{logs}"
    );

    let mut secrets: Vec<(String, String)> = vec![
        ("code".into(), code.clone()),
        ("code, lower case".into(), code.to_lowercase()),
        ("hash-ID code".into(), hashed_code.trim_end().to_owned()),
        ("hash ID".into(), hash_id),
        ("token".into(), PORTAL_TOKEN.into()),
        ("client address".into(), "127.0.0.1".into()),
    ];
    let server_key = claim.response.server_public_key().to_vec();
    for (what, bytes) in [
        ("app public key", phone.app_public.as_bytes().to_vec()),
        ("server public key", server_key),
        ("nonce", request.nonce().to_vec()),
        ("payload", request.payload()[..16].to_vec()),
    ] {
        for spelling in spellings(&bytes) {
            secrets.push((what.into(), spelling));
        }
    }
    for key in &keys {
        for spelling in spellings(key.key_data()) {
            secrets.push(("diagnosis key".into(), spelling));
        }
    }
    for (what, secret) in secrets {
        assert!(
            !logs.contains(&secret),
            "the logs contain the {what}: {}",
            logs.lines()
                .filter(|l| l.contains(&secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
