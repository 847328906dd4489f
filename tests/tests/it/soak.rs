//! The soak's driver against the real submit service (DESIGN §3.4, `infra/dev/soak`): its
//! paced run sends the day's mix at a fixed rate whatever the answers do, every key it sends is
//! new, and a request the service never answers is counted, fails the goal and does not stall
//! the run.

use std::sync::Arc;
use std::time::Duration;

use diagnosis_core::time::SystemClock;
use diagnosis_submit::client_ip::ForwardedFor;
use diagnosis_tests::app::{PORTAL_TOKEN, TestApp};
use diagnosis_tests::black_hole::BlackHoleProxy;
use diagnosis_tests::soak::load::{FOLLOW_UP_UPLOADS, Target};
use diagnosis_tests::soak::{self, SoakSettings};

/// The service as `infra/dev/soak` runs it: the wall clock (uploads carry the real time) and
/// one trusted proxy in front, whose `X-Forwarded-For` names each phone.
async fn service() -> TestApp {
    TestApp::spawn_with_state(|state| {
        state.clock = Arc::new(SystemClock);
        state.settings.forwarded_for = ForwardedFor::OneHop;
    })
    .await
}

/// A soak of `windows` one-second windows against `base_url`.
fn settings(base_url: String, windows: usize, request_bound: Duration) -> SoakSettings {
    let target = Target {
        base_url,
        token: PORTAL_TOKEN.to_owned(),
        request_bound,
    };
    let mut settings = SoakSettings::for_minutes(1, target, std::process::id());
    settings.capacity_connections = 2;
    settings.warm_up = Duration::from_millis(500);
    settings.capacity_run = Duration::from_secs(1);
    settings.connections = 4;
    settings.windows = windows;
    settings.window = Duration::from_secs(1);
    settings
}

#[tokio::test]
async fn the_paced_run_keeps_its_rate_in_every_window_and_sends_only_new_keys() {
    let app = service().await;
    let settings = settings(app.base_url.clone(), 3, Duration::from_secs(5));
    let figures = soak::run(&settings).await.unwrap();

    assert_eq!(figures.errors(), 0, "{figures:#?}");
    assert!(figures.target_rps > 0.0);
    // Open loop: each one-second window holds the requests due in it, however fast the
    // service answers (run as fast as answered, four connections would send far more).
    for (i, window) in figures.windows.iter().enumerate() {
        let due = window.requests as f64;
        assert!(
            (due - figures.target_rps).abs() <= 1.0,
            "window {i}: {due} requests at {} a second",
            figures.target_rps
        );
    }
    // The day's mix: a case is an issue, a claim, and 1 + 14 uploads.
    let [issues, claims, uploads] = figures.windows.iter().fold([0; 3], |sum, w| {
        [
            sum[0] + w.by_kind[0],
            sum[1] + w.by_kind[1],
            sum[2] + w.by_kind[2],
        ]
    });
    let connections = settings.connections as u64;
    assert!(
        claims <= issues && issues <= claims + connections,
        "{issues} {claims}"
    );
    let per_case = 1 + FOLLOW_UP_UPLOADS as u64;
    assert!(
        uploads <= per_case * (claims + connections),
        "{uploads} {claims}"
    );
    assert!(
        uploads + per_case * connections >= per_case * claims,
        "{uploads} {claims}"
    );

    // Every key sent (counted per upload in tek_upload_count) was stored: none was a replay.
    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM diagnosis_keys),
                    (SELECT coalesce(sum(count), 0) FROM tek_upload_count),
                    (SELECT count(*) FROM tek_upload_count WHERE count NOT IN (1, 14)),
                    (SELECT count(*) FROM encryption_keys WHERE remaining_keys < 43 - 28)",
            &[],
        )
        .await
        .unwrap();
    let (stored, sent): (i64, i64) = (row.get(0), row.get(1));
    assert!(stored > 0);
    assert_eq!(stored, sent, "keys sent that were already stored");
    assert_eq!(row.get::<_, i64>(2), 0, "uploads of neither 1 nor 14 keys");
    assert_eq!(row.get::<_, i64>(3), 0, "keypairs past a case's 28 keys");
}

#[tokio::test]
async fn requests_the_service_never_answers_are_counted_and_fail_the_goal() {
    let app = service().await;
    let proxy = BlackHoleProxy::start(app.addr).await;
    let mut settings = settings(
        format!("http://{}", proxy.addr),
        4,
        Duration::from_millis(200),
    );
    // A tenth of the capacity from eight connections: every window holds requests, and each
    // connection keeps up with requests that wait out their bound.
    settings.load_share = 0.1;
    settings.connections = 8;
    let paced_run_starts = settings.warm_up + settings.capacity_run;
    let soak = tokio::spawn(async move { soak::run(&settings).await });
    // The proxy stops answering in the paced run's second window.
    tokio::time::sleep(paced_run_starts + Duration::from_millis(1_500)).await;
    proxy.black_hole();
    let figures = tokio::time::timeout(Duration::from_secs(30), soak)
        .await
        .expect("the soak did not end after the service stopped answering")
        .unwrap()
        .unwrap();

    let last = figures.windows.last().unwrap();
    assert!(last.requests > 0);
    assert_eq!(last.unanswered, last.requests, "{figures:#?}");
    assert_eq!(figures.windows[0].unanswered, 0, "{figures:#?}");
    assert_eq!(figures.unanswered(), figures.errors());
    let checks = figures.checks(false);
    let json = figures.to_json(&checks);
    assert_eq!(json["enforced_met"], false);
    assert_eq!(json["unanswered"], figures.unanswered());
}
