//! The submit service's recorded settings (DESIGN §5, §6): each replica records the limits it
//! enforces at start and refreshes them while it runs, and each exporter pass reports a grace
//! that does not exceed the statement timeout a live replica's uploads run under.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use diagnosis_core::store::{RecordedSettings, SubmitLimits};
use diagnosis_core::time::Clock;
use diagnosis_exporter::pipeline::SettingsMismatch;
use diagnosis_tests::app::TestApp;
use diagnosis_tests::export::ExportHarness;

async fn rows(app: &TestApp) -> Vec<RecordedSettings> {
    app.store.recorded_submit_settings().await.unwrap()
}

fn refreshed(rows: &[RecordedSettings]) -> Vec<DateTime<Utc>> {
    rows.iter().map(|row| row.refreshed).collect()
}

#[tokio::test]
async fn each_replica_records_its_limits_at_start_and_refreshes_them_while_it_runs() {
    let app = TestApp::spawn_with(|s| {
        s.one_time_code_expiry = Duration::minutes(90);
        s.encryption_key_validity_days = 20;
        s.ban.ban_duration = Duration::minutes(120);
        s.statement_timeout = StdDuration::from_millis(7_500);
    })
    .await;
    let started = app.clock.now();
    let recorded = rows(&app).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(
        recorded[0].limits,
        SubmitLimits {
            one_time_code_expiry: Duration::minutes(90),
            encryption_key_validity_days: 20,
            claim_ban_duration: Duration::minutes(120),
            statement_timeout: StdDuration::from_millis(7_500),
        }
    );
    assert_eq!(
        (recorded[0].started, recorded[0].refreshed),
        (started, started)
    );

    // A second replica has a row of its own; a minute later both are refreshed.
    let replica = app.replica().await;
    assert_eq!(refreshed(&rows(&app).await), vec![started, started]);
    app.advance_past_refresh(Duration::seconds(61), 2).await;
    let now = app.clock.now();
    assert_eq!(refreshed(&rows(&app).await), vec![now, now]);

    // A row deleted meanwhile (retention deletes rows nobody refreshed for a day) comes back.
    app.db
        .client()
        .await
        .execute("DELETE FROM submit_settings", &[])
        .await
        .unwrap();
    app.advance_past_refresh(Duration::minutes(1), 2).await;
    let recorded = rows(&app).await;
    assert_eq!(refreshed(&recorded), vec![app.clock.now(); 2]);
    assert!(recorded.iter().all(|row| row.started == started));
    drop(replica);
}

#[tokio::test]
async fn each_pass_reports_a_grace_that_does_not_exceed_a_live_replicas_statement_timeout() {
    let slow = TestApp::spawn_with(|s| s.statement_timeout = StdDuration::from_secs(600)).await;
    let h = ExportHarness::sharing(Arc::clone(&slow.db), slow.clock.clone(), |_| {}).await;
    assert_eq!(h.settings.grace_seconds, 600);

    let report = h.run().await;
    assert_eq!(
        report.settings_mismatches,
        vec![SettingsMismatch::StatementTimeout {
            grace_seconds: 600,
            statement_timeout: StdDuration::from_secs(600),
        }]
    );

    // The slow replica is replaced by one with the default 5 s: once its row is no longer live,
    // the passes find nothing to report.
    let fixed = slow.replica().await;
    slow.stop().await;
    fixed.advance_past_refresh(Duration::minutes(5), 1).await;
    assert_eq!(h.run().await.settings_mismatches, vec![]);
}
