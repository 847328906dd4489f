//! The COVID Alert apps already in the field, replayed against Diagnosis Server
//! as it is deployed (DESIGN §4.3): a phone makes exactly the app's requests to
//! the submit service, then retrieves through the CDN's edge rewrite like the
//! app's every-4-hours check, unzips like iOS does, checks the signature, and
//! finds its own keys once their hour has closed.

use std::sync::Arc;

use chrono::Duration;
use diagnosis_core::redacted::Redacted;
use diagnosis_core::time::{Clock, day_number, hour_number};
use diagnosis_format::archive::unzip_export;
use diagnosis_format::sign::verify_signature;
use diagnosis_proto::encrypted_upload_response::ErrorCode;
use diagnosis_proto::{
    EXPORT_BIN_HEADER, Message, TekSignatureList, TemporaryExposureKey, TemporaryExposureKeyExport,
};
use diagnosis_tests::app::TestApp;
use diagnosis_tests::cdn::{self, Edge, retrieve_hmac};
use diagnosis_tests::export::{ExportHarness, test_public_keys};
use diagnosis_tests::http_client::HttpClient;
use diagnosis_tests::simulator::{app_keys, upload_of};

const HMAC_KEY: [u8; 32] = [0x5a; 32];

/// What the app does on a retrieval check for day `p`: GET with the HMAC of the
/// current hour; anything but 200 aborts the check.
async fn retrieve(client: &HttpClient, cdn: &str, p: &str, now: i64) -> Option<Vec<Vec<u8>>> {
    let mac = retrieve_hmac(&HMAC_KEY, "302", p, hour_number(now));
    let reply = client
        .get(&format!("{cdn}/retrieve/302/{p}/{mac}"))
        .await
        .unwrap();
    if reply.status != 200 {
        return None;
    }
    assert_eq!(reply.header("content-type"), Some("application/zip"));
    // iOS: unzip, export.bin and export.sig at the root, signature checked.
    let entries = unzip_export(&reply.body).expect("a zip with export.bin then export.sig");
    let signatures = TekSignatureList::decode(entries.export_sig.as_slice()).unwrap();
    let public = &test_public_keys()[0];
    assert!(
        signatures.signatures.iter().any(|s| verify_signature(
            &entries.export_bin,
            s.signature(),
            public
        )),
        "retrieve/302/{p}: no signature verifies"
    );
    assert_eq!(&entries.export_bin[..16], EXPORT_BIN_HEADER);
    let export = TemporaryExposureKeyExport::decode(&entries.export_bin[16..]).unwrap();
    Some(export.keys.iter().map(|k| k.key_data().to_vec()).collect())
}

#[tokio::test]
async fn a_phone_in_the_field_uploads_and_later_finds_its_keys() {
    let app = TestApp::spawn().await;
    let configs = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/exposure-configuration"
    );
    let exporter = ExportHarness::sharing(Arc::clone(&app.db), app.clock.clone(), |s| {
        s.exposure_config_dir = Some(configs.into());
    })
    .await;
    let cdn_addr = cdn::serve(
        exporter.bucket.clone(),
        Some(Edge {
            hmac_key: Redacted::new(HMAC_KEY.to_vec()),
            region_path: "302".into(),
        }),
        cdn::CdnClock {
            clock: Arc::new(app.clock.clone()),
            grace_seconds: exporter.settings.grace_seconds,
        },
    )
    .await;
    let cdn = format!("http://{cdn_addr}");
    let client = HttpClient::new();

    // The health portal issues a code; the person types it in lower case with dashes.
    let code = app.portal().issue_code().await.unwrap();
    let typed = format!("{}-{}-{}", &code[..3], &code[3..6], &code[6..]).to_lowercase();
    let mut phone = app.phone();
    let claim = phone.claim(&typed).await.unwrap();
    assert!(claim.status.is_success());

    // The app really sends a zero-key upload: refused, nothing changes.
    let now = app.now_unix();
    let before = app.db.snapshot().await;
    let empty = phone.upload(&upload_of(vec![], now)).await.unwrap();
    assert_eq!(empty.response.error(), ErrorCode::NoKeysInPayload);
    assert_eq!(app.db.snapshot().await, before);

    // Then its 14 days of keys, newest first, TRL 1, explicit rolling period
    // 144, no report type, with a duplicated rolling start number.
    let mut keys: Vec<TemporaryExposureKey> = app_keys(now, 14);
    let mut twin = keys[3].clone();
    let mut other = [0_u8; 16];
    rand::fill(&mut other[..]);
    twin.key_data = Some(other.to_vec());
    keys.insert(4, twin);
    let reply = phone.upload(&upload_of(keys.clone(), now)).await.unwrap();
    assert_eq!(reply.response.error(), ErrorCode::None);
    let todays_key = keys[0].key_data().to_vec();
    let past_keys: Vec<Vec<u8>> = keys[1..].iter().map(|k| k.key_data().to_vec()).collect();

    // The exporter runs; the app's first check fetches 00000 and today.
    exporter.run().await;
    let today = format!("{:05}", day_number(now));
    assert!(retrieve(&client, &cdn, "00000", now).await.is_some());
    let first = retrieve(&client, &cdn, &today, now)
        .await
        .expect("today's object exists");
    assert!(first.is_empty(), "the upload's hour has not closed yet");

    // Configuration, fetched on every check and on launch.
    for object in [
        "exposure-configuration/CA.json",
        "exposure-configuration/region.json",
    ] {
        let reply = client.get(&format!("{cdn}/{object}")).await.unwrap();
        assert_eq!(reply.status, 200, "{object}");
        let _: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    }

    // Four hours later (the app's next check) the past days' keys are there;
    // today's key is still valid and stays embargoed.
    exporter.advance(Duration::hours(4));
    exporter.run().await;
    let now = exporter.now().timestamp();
    let found = retrieve(&client, &cdn, &today, now).await.unwrap();
    for key in &past_keys {
        assert!(found.contains(key), "a past day's key is missing");
    }
    assert!(!found.contains(&todays_key));

    // Tomorrow after 02:00 the key of the upload day is published too, in
    // tomorrow's object; the day before is complete and in the 00000 bundle.
    let tomorrow_start = (day_number(now) + 1) * 86_400;
    exporter
        .clock
        .set(chrono::DateTime::from_timestamp(tomorrow_start + 3 * 3600 + 20 * 60, 0).unwrap());
    exporter.run().await;
    let now = exporter.clock.now().timestamp();
    let tomorrow = format!("{:05}", day_number(now));
    let later = retrieve(&client, &cdn, &tomorrow, now).await.unwrap();
    assert_eq!(later, vec![todays_key]);
    let bundle = retrieve(&client, &cdn, "00000", now).await.unwrap();
    for key in &past_keys {
        assert!(bundle.contains(key), "the 00000 bundle misses a key");
    }
    // The app walks back to the last day it checked: yesterday's object is final.
    let yesterday = retrieve(&client, &cdn, &today, now).await.unwrap();
    assert_eq!(yesterday.len(), past_keys.len());

    // Anything but a fresh HMAC is refused, and the app then aborts the check.
    let stale = retrieve_hmac(&HMAC_KEY, "302", &tomorrow, hour_number(now) - 2);
    let reply = client
        .get(&format!("{cdn}/retrieve/302/{tomorrow}/{stale}"))
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
}
