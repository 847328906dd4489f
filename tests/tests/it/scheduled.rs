//! The exporter's scheduled mode (`diagnosis_exporter::scheduled::run`) against real
//! PostgreSQL and a real S3-compatible server, on a manual clock: a pass at start, exactly one
//! pass when the clock passes a tick, none before it, and a shutdown that lets the pass in
//! progress finish. The clock's list of waits shows when the loop is idle, so nothing sleeps.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use diagnosis_core::time::{hour_number, interval_number};
use diagnosis_exporter::scheduled::{Schedule, run};
use diagnosis_format::archive::unzip_export;
use diagnosis_proto::{EXPORT_BIN_HEADER, Message, TemporaryExposureKeyExport};
use diagnosis_tests::app::test_start_time;
use diagnosis_tests::export::{ExportHarness, hour_key, key};

fn at(hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, hour, minute, second)
        .single()
        .unwrap()
}

/// Bounds a wait that must end, so a broken loop fails the test instead of hanging it.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 60 s"))
}

#[tokio::test]
async fn each_tick_runs_one_pass_and_publishes_the_newly_closed_hour() {
    let start = test_start_time(); // 15:20:00
    assert_eq!(start, at(15, 20, 0));
    let h = ExportHarness::new(start).await;
    let now_hour = hour_number(start.timestamp()); // 15:00–16:00
    let expired = interval_number(start.timestamp()) / 144 * 144 - 3 * 144;
    let keys = vec![key(expired, 1), key(expired + 144, 2)];
    h.upload(&keys).await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let schedule = Schedule::parse("0 20 * * * *").unwrap();
    let task = tokio::spawn(run(Arc::new(h.exporter().await), schedule, None, async {
        let _ = stopped.await;
    }));

    // The pass at start publishes 14:00–15:00, the only closed hour; then the loop waits
    // for the next tick, 16:20.
    assert_eq!(
        within("the first wait", h.clock.next_wait()).await,
        at(16, 20, 0)
    );
    assert_eq!(h.clock.waits_begun(), 1);
    assert_eq!(h.index("CA/index.txt").await, vec![hour_key(now_hour - 1)]);

    // 16:19:59: the keys' hour has closed (at 16:10), but the tick has not come.
    h.clock.set(at(16, 19, 59));
    assert_eq!(
        h.clock.waiting(),
        vec![at(16, 20, 0)],
        "woken before the tick"
    );
    assert_eq!(h.clock.waits_begun(), 1);
    assert_eq!(h.index("CA/index.txt").await, vec![hour_key(now_hour - 1)]);

    // 16:20:00: one pass publishes the newly closed hour with the keys, then the loop waits
    // for 17:20.
    h.clock.set(at(16, 20, 0));
    assert!(h.clock.waiting().is_empty());
    assert_eq!(
        within("the second wait", h.clock.next_wait()).await,
        at(17, 20, 0)
    );
    assert_eq!(h.clock.waits_begun(), 2, "not exactly one pass per tick");
    assert_eq!(
        h.index("CA/index.txt").await,
        vec![hour_key(now_hour - 1), hour_key(now_hour)]
    );
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
    let hour_file = h.bucket.get(&hour_key(now_hour)).await.unwrap().unwrap();
    let export_bin = unzip_export(&hour_file).unwrap().export_bin;
    let export =
        TemporaryExposureKeyExport::decode(&export_bin[EXPORT_BIN_HEADER.len()..]).unwrap();
    let mut published: Vec<Vec<u8>> = export.keys.iter().map(|k| k.key_data().to_vec()).collect();
    published.sort();
    let mut uploaded: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| k.key_data.as_bytes().to_vec())
        .collect();
    uploaded.sort();
    assert_eq!(
        published, uploaded,
        "the newly closed hour does not hold its keys"
    );

    // Two ticks passed at once (17:20 and 18:20) make one pass, which catches up both hours.
    h.clock.set(at(18, 30, 0));
    assert_eq!(
        within("the third wait", h.clock.next_wait()).await,
        at(19, 20, 0)
    );
    assert_eq!(
        h.clock.waits_begun(),
        3,
        "missed ticks were made up one by one"
    );
    let expected: Vec<String> = (now_hour - 1..=now_hour + 2).map(hour_key).collect();
    assert_eq!(h.index("CA/index.txt").await, expected);

    // Shutdown ends the loop while it waits; its wait is abandoned.
    stop.send(()).unwrap();
    within("the shutdown", task).await.unwrap();
    assert!(h.clock.waiting().is_empty());
    assert_eq!(h.clock.waits_begun(), 3);
}

#[tokio::test]
async fn a_shutdown_during_the_first_pass_lets_it_finish_and_runs_no_other() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let now_hour = hour_number(start.timestamp());
    // Shutdown is asked for before the pass at start has begun.
    let schedule = Schedule::parse("*/1 * * * * *").unwrap();
    within(
        "the shutdown",
        run(Arc::new(h.exporter().await), schedule, None, async {}),
    )
    .await;
    assert_eq!(h.index("CA/index.txt").await, vec![hour_key(now_hour - 1)]);
    assert!(
        h.bucket.get("CA/index.json").await.unwrap().is_some(),
        "the pass was cut off before its last index"
    );
    assert!(h.clock.waiting().is_empty());
    // The clock never moved, so no tick could have come.
    h.clock.advance(Duration::seconds(5));
    assert_eq!(h.index("CA/index.txt").await, vec![hour_key(now_hour - 1)]);
}
