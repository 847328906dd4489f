//! Prometheus metrics of both binaries, rendered exactly as `/metrics` serves them: the
//! submit service's request, claim, upload and pool metrics after a real portal → claim →
//! upload exchange, and the exporter's run metrics over completed, skipped and failed passes,
//! with the settings mismatch each of them checks.
//! DESIGN §7: no label value carries a client address, code, token or key.
//!
//! This binary installs one global recorder (a process holds only one), shared by its tests;
//! each test reads only metrics that no other test here records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use diagnosis_core::store::{Store, SubmitInstance, SubmitLimits};
use diagnosis_core::telemetry::{Telemetry, prometheus_builder};
use diagnosis_core::time::{Clock, ManualClock, hour_number};
use diagnosis_exporter::pipeline::{Exporter, RunOutcome};
use diagnosis_exporter::storage::Bucket;
use diagnosis_proto::{KeyClaimRequest, Message};
use diagnosis_tests::app::{PORTAL_TOKEN, TestApp, test_start_time};
use diagnosis_tests::export::{test_export_settings, test_signing_keys};
use diagnosis_tests::failing_store::FailingStore;
use diagnosis_tests::metrics::Exposition;
use diagnosis_tests::pg::TestDatabase;
use diagnosis_tests::simulator::{app_keys, upload_of};

/// The process-wide recorder, installed by the first test that asks for it.
fn telemetry() -> Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY
        .get_or_init(|| {
            let handle = prometheus_builder()
                .install_recorder()
                .expect("installing the global metrics recorder");
            Telemetry::from_prometheus_handle(handle)
        })
        .clone()
}

/// Every way a secret could be spelled in the exposition.
fn spellings(bytes: &[u8]) -> Vec<String> {
    vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        base64::engine::general_purpose::STANDARD.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ]
}

#[tokio::test]
async fn a_claim_and_an_upload_are_counted_without_client_data() {
    let telemetry = telemetry();
    let handle = telemetry.prometheus_handle().cloned().unwrap();
    let app = TestApp::spawn_with_state(|state| {
        state.prometheus = Some(handle);
        state.settings.ban.max_failures = 2;
    })
    .await;
    let portal = app.portal();

    // claimed
    let code = portal.issue_code().await.unwrap();
    let mut phone = app.phone();
    assert_eq!(phone.claim(&code).await.unwrap().status, 200);
    // repeated: the same claim again, as an app that never heard the answer sends it.
    assert_eq!(phone.claim(&code).await.unwrap().status, 200);
    // app_key_registered: a second code claimed with the same app key.
    let second_code = portal.issue_code().await.unwrap();
    let again = KeyClaimRequest {
        one_time_code: Some(second_code.clone()),
        app_public_key: Some(phone.app_public.as_bytes().to_vec()),
    };
    assert_eq!(app.post_claim(again.encode_to_vec()).await.0, 401);
    // bad_request: not a KeyClaimRequest, and a key of the wrong length.
    assert_eq!(app.post_claim(vec![0xff; 40]).await.0, 400);
    let short_key = KeyClaimRequest {
        one_time_code: Some(second_code.clone()),
        app_public_key: Some(vec![7; 31]),
    };
    assert_eq!(app.post_claim(short_key.encode_to_vec()).await.0, 400);
    // invalid_code twice (the second bans this client), then banned.
    let wrong = "AEF245HJKL";
    assert_eq!(app.phone().claim(wrong).await.unwrap().status, 401);
    assert_eq!(app.phone().claim(wrong).await.unwrap().status, 401);
    assert_eq!(app.phone().claim(&second_code).await.unwrap().status, 429);

    // An upload of 14 keys.
    let now = app.now_unix();
    let keys = app_keys(now, 14);
    let reply = phone.upload(&upload_of(keys.clone(), now)).await.unwrap();
    assert_eq!(reply.status, 200);

    // server_error: the database refuses the ban check.
    app.db
        .client()
        .await
        .batch_execute("DROP TABLE failed_key_claim_attempts")
        .await
        .unwrap();
    assert_eq!(app.phone().claim(&second_code).await.unwrap().status, 500);

    let reply = app
        .phone()
        .client
        .get(&format!("{}/metrics", app.internal_url))
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let text = reply.text();
    let all = Exposition::parse(&text).unwrap();

    // Claims by outcome: one line per outcome, static labels only.
    for (outcome, expected) in [
        ("claimed", 1.0),
        ("repeated", 1.0),
        ("app_key_registered", 1.0),
        ("bad_request", 2.0),
        ("invalid_code", 2.0),
        ("banned", 1.0),
        ("server_error", 1.0),
    ] {
        assert_eq!(
            all.require("submit_claims_total", &[("outcome", outcome)]),
            expected,
            "submit_claims_total{{outcome={outcome:?}}}"
        );
    }
    let claim_outcomes: BTreeSet<&str> = all
        .samples()
        .iter()
        .filter(|s| s.name == "submit_claims_total")
        .map(|s| s.labels["outcome"].as_str())
        .collect();
    assert_eq!(
        claim_outcomes,
        BTreeSet::from([
            "claimed",
            "repeated",
            "app_key_registered",
            "bad_request",
            "invalid_code",
            "banned",
            "server_error"
        ])
    );
    assert_eq!(all.require("submit_claim_bans_total", &[]), 1.0);

    // Codes, keys, the upload's key count.
    assert_eq!(
        all.require("submit_codes_issued_total", &[("regenerated", "false")]),
        2.0
    );
    assert_eq!(all.require("submit_keys_stored_total", &[]), 14.0);
    assert_eq!(all.require("submit_upload_keys_count", &[]), 1.0);
    assert_eq!(all.require("submit_upload_keys_sum", &[]), 14.0);

    // Requests by endpoint, status and outcome; latency histograms with buckets.
    let request = |endpoint: &str, status: &str, outcome: &str| {
        all.require(
            "submit_requests_total",
            &[
                ("listener", "api"),
                ("endpoint", endpoint),
                ("status", status),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(request("upload", "200", "NONE"), 1.0);
    assert_eq!(request("claim-key", "200", "NONE"), 2.0);
    assert_eq!(request("claim-key", "429", "TEMPORARY_BAN"), 1.0);
    assert_eq!(request("claim-key", "500", "SERVER_ERROR"), 1.0);
    assert_eq!(
        all.require(
            "submit_request_duration_seconds_count",
            &[("endpoint", "claim-key")]
        ),
        9.0
    );
    assert_eq!(
        all.require(
            "submit_request_duration_seconds_bucket",
            &[("endpoint", "upload"), ("le", "+Inf")]
        ),
        1.0
    );

    // The pool gauges, sampled since the service started.
    let max = all.require("db_pool_max_connections", &[]);
    let idle = all.require("db_pool_connections", &[("state", "idle")]);
    let in_use = all.require("db_pool_connections", &[("state", "in_use")]);
    let waiting = all.require("db_pool_waiting", &[]);
    assert!(max >= 1.0, "db_pool_max_connections {max}");
    assert!(idle >= 0.0 && in_use >= 0.0 && idle + in_use <= max);
    assert!(waiting >= 0.0);

    // Privacy: label names come from a fixed set, and nothing the clients sent or were given
    // appears anywhere in the exposition, in any spelling.
    let label_names: BTreeSet<&str> = all
        .samples()
        .iter()
        .flat_map(|s| s.labels.keys().map(String::as_str))
        .collect();
    let allowed = BTreeSet::from([
        "listener",
        "endpoint",
        "status",
        "outcome",
        "regenerated",
        "state",
        "step",
        "kind",
        "setting",
        "reason",
        "le",
        "quantile",
    ]);
    assert!(
        label_names.is_subset(&allowed),
        "unexpected label names: {:?}",
        label_names.difference(&allowed).collect::<Vec<_>>()
    );
    for sample in all.samples() {
        if let Some(reason) = sample.labels.get("reason") {
            assert!(
                ["ended", "read_timeout", "write_timeout", "error"].contains(&reason.as_str()),
                "reason {reason:?} of {}",
                sample.name
            );
        }
        for value in sample.labels.values() {
            assert!(
                value.len() <= 32
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-+./{}".contains(c)),
                "label value {value:?} of {} is not a fixed name",
                sample.name
            );
        }
    }
    let mut secrets = vec![
        code.clone(),
        code.to_lowercase(),
        second_code.clone(),
        wrong.to_owned(),
        PORTAL_TOKEN.to_owned(),
        app.addr.ip().to_string(),
    ];
    secrets.extend(spellings(phone.app_public.as_bytes()));
    if let Some(server) = &phone.server_public {
        secrets.extend(spellings(server.as_bytes()));
    }
    for key in &keys {
        secrets.extend(spellings(key.key_data()));
    }
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "the metrics contain {secret:?}"
        );
    }

    app.stop().await;
}

/// An exporter over `db`, publishing to `bucket`, on `clock` (which stands in for the
/// database's clock too).
async fn exporter(db: &TestDatabase, clock: &ManualClock, bucket: Bucket) -> Exporter {
    exporter_with_database_clock(db, clock, clock, bucket).await
}

/// An exporter on `clock` whose database's clock is `database`.
async fn exporter_with_database_clock(
    db: &TestDatabase,
    clock: &ManualClock,
    database: &ManualClock,
    bucket: Bucket,
) -> Exporter {
    Exporter::new(
        Store::from_pool(db.pool().clone()).with_database_clock(Arc::new(database.clone())),
        bucket,
        Arc::new(clock.clone()),
        test_export_settings(),
        test_signing_keys(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn export_runs_report_duration_lag_and_last_success() {
    let telemetry = telemetry();
    let db = TestDatabase::new().await;
    let store = Store::from_pool(db.pool().clone());
    let clock = ManualClock::new(test_start_time());
    let started = clock.now().timestamp();
    // 15:20 with 10 minutes of grace: 14:00–15:00 is the last closed hour.
    let first_hour = hour_number(started) - 1;
    let render = || Exposition::parse(&telemetry.render_prometheus().unwrap()).unwrap();

    // A submit replica whose uploads may run as long as the grace: every pass, even a skipped
    // one, reports whether a live replica's statement timeout reaches the grace.
    let limits = SubmitLimits {
        one_time_code_expiry: chrono::Duration::hours(24),
        encryption_key_validity_days: 15,
        claim_ban_duration: chrono::Duration::hours(1),
        statement_timeout: std::time::Duration::from_secs(600),
    };
    store
        .clone()
        .with_database_clock(Arc::new(clock.clone()))
        .record_submit_settings(&SubmitInstance::new(clock.now()), &limits)
        .await
        .unwrap();
    let mismatch = [("setting", "statement_timeout")];

    // A first pass publishes the last closed hour: no lag.
    let bucket = Bucket::in_memory();
    let outcome = exporter(&db, &clock, bucket.clone())
        .await
        .run_once()
        .await
        .unwrap();
    assert!(matches!(outcome, RunOutcome::Completed(_)), "{outcome:?}");
    let all = render();
    assert_eq!(all.require("exporter_export_lag_hours", &[]), 0.0);
    assert_eq!(all.require("exporter_clock_skew_seconds", &[]), 0.0);
    assert_eq!(
        all.require("exporter_last_published_hour", &[]),
        first_hour as f64
    );
    assert_eq!(all.require("exporter_settings_mismatch", &mismatch), 1.0);
    assert_eq!(
        all.require("exporter_last_success_timestamp_seconds", &[]),
        started as f64
    );

    // Three hours later another exporter holds the lock: this one skips, and reports the lag.
    clock.advance(chrono::Duration::hours(3));
    let lock = store.try_lock_exporter("CA").await.unwrap().unwrap();
    let outcome = exporter(&db, &clock, bucket.clone())
        .await
        .run_once()
        .await
        .unwrap();
    assert_eq!(outcome, RunOutcome::Skipped);
    lock.release().await.unwrap();
    let all = render();
    assert_eq!(all.require("exporter_export_lag_hours", &[]), 3.0);
    // The replica has not refreshed its row for three hours: it is gone.
    assert_eq!(all.require("exporter_settings_mismatch", &mismatch), 0.0);

    // A pass whose bucket refuses every write fails: the lag stays, the last success too.
    let refusing = Bucket::from_store(
        Arc::new(FailingStore::new(
            Arc::new(object_store::memory::InMemory::new()),
            0,
        )),
        "",
    );
    assert!(
        exporter(&db, &clock, refusing)
            .await
            .run_once()
            .await
            .is_err()
    );
    let all = render();
    assert_eq!(all.require("exporter_export_lag_hours", &[]), 3.0);
    assert_eq!(
        all.require("exporter_last_success_timestamp_seconds", &[]),
        started as f64
    );

    // The next good pass catches up the three hours.
    let outcome = exporter(&db, &clock, bucket.clone())
        .await
        .run_once()
        .await
        .unwrap();
    let RunOutcome::Completed(report) = outcome else {
        panic!("the catch-up pass did not complete: {outcome:?}");
    };
    assert_eq!(report.hours.len(), 3);
    let all = render();
    assert_eq!(all.require("exporter_export_lag_hours", &[]), 0.0);
    assert_eq!(
        all.require("exporter_last_published_hour", &[]),
        (first_hour + 3) as f64
    );
    assert_eq!(
        all.require("exporter_last_success_timestamp_seconds", &[]),
        (started + 3 * 3600) as f64
    );

    // Runs by outcome, and their durations.
    for (outcome, expected) in [("completed", 2.0), ("skipped", 1.0), ("failed", 1.0)] {
        assert_eq!(
            all.require("exporter_runs_total", &[("outcome", outcome)]),
            expected,
            "exporter_runs_total{{outcome={outcome:?}}}"
        );
        assert_eq!(
            all.require(
                "exporter_run_duration_seconds_count",
                &[("outcome", outcome)]
            ),
            expected,
            "exporter_run_duration_seconds_count{{outcome={outcome:?}}}"
        );
        assert_eq!(
            all.require(
                "exporter_run_duration_seconds_bucket",
                &[("outcome", outcome), ("le", "+Inf")]
            ),
            expected
        );
    }
    assert!(all.require("exporter_files_published_total", &[("kind", "hourly")]) >= 4.0);

    // The database's clock 700 s behind this exporter's (more than the 600 s grace): the pass
    // fails, and the gauge says by how much.
    let behind = ManualClock::new(clock.now() - chrono::Duration::seconds(700));
    assert!(
        exporter_with_database_clock(&db, &clock, &behind, bucket.clone())
            .await
            .run_once()
            .await
            .is_err()
    );
    let all = render();
    assert_eq!(all.require("exporter_clock_skew_seconds", &[]), 700.0);
}
