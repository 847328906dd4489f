//! Publication that survives faults (DESIGN §4.2): a pass runs isolated steps,
//! publication first, so a blocked retention, a bucket that refuses deletes or a
//! corrupt object never keeps new hours from being indexed; and the exporter lock is
//! fenced, so a pass that lost its lock session writes nothing more while a
//! successor publishes.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use chrono::Duration;
use diagnosis_core::store::{Store, StoreConfig};
use diagnosis_core::time::{hour_number, interval_number};
use diagnosis_exporter::pipeline::{ExportError, Exporter, RunReport, Step};
use diagnosis_exporter::storage::Bucket;
use diagnosis_format::names::ObjectKind;
use diagnosis_tests::app::test_start_time;
use diagnosis_tests::chaos::check::retrieval_out_of_step;
use diagnosis_tests::export::{ExportHarness, hour_key, key, test_signing_keys};
use diagnosis_tests::failing_store::FailingStore;

/// The report of a pass that must have failed in some steps, and those steps.
fn failed_steps(result: Result<impl std::fmt::Debug, ExportError>) -> (RunReport, Vec<Step>) {
    match result {
        Err(ExportError::StepsFailed(report)) => {
            let steps = report.failures.iter().map(|f| f.step).collect();
            (*report, steps)
        }
        other => panic!("expected a pass with failed steps, got {other:?}"),
    }
}

/// The last closed hour at the harness's time (no grace in the test settings).
fn last_closed_hour(h: &ExportHarness) -> i64 {
    hour_number(h.now().timestamp()) - 1
}

#[tokio::test]
async fn a_lock_held_on_the_retention_tables_keeps_no_new_hour_from_being_indexed() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    // A submit replica has recorded its limits, so retention deletes failed claims.
    h.record_submit_settings(|_| {}).await;
    h.run().await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[key(today - 144, 1)]).await;
    h.advance(Duration::hours(3));

    // A transaction holds the ban table: retention cannot delete from it and runs into the
    // statement timeout.
    let blocker = h.db.client().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE failed_key_claim_attempts IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let store = Store::connect(&StoreConfig {
        database_url: h.db.url.clone(),
        pool_size: 6,
        statement_timeout: StdDuration::from_secs(1),
        connect_timeout: StdDuration::from_secs(5),
        application_name: "diagnosis-exporter-fault-tests",
    })
    .unwrap()
    .with_database_clock(Arc::new(h.clock.clone()));
    let exporter = Exporter::new(
        store,
        h.bucket.clone(),
        Arc::new(h.clock.clone()),
        h.settings.clone(),
        test_signing_keys(),
    )
    .await
    .unwrap();
    let (report, steps) = failed_steps(exporter.run_once().await);
    assert_eq!(steps, vec![Step::Retention], "{:?}", report.failures);
    assert_eq!(report.hours.len(), 3);
    let index = h.index("CA/index.txt").await;
    assert_eq!(index.len(), 4);
    assert_eq!(index.last(), Some(&hour_key(last_closed_hour(&h))));
    let verified = h.verify().await;
    assert!(verified.is_ok(), "{verified}");

    // Once the lock is gone, the next pass completes.
    blocker.batch_execute("ROLLBACK").await.unwrap();
    h.advance(Duration::minutes(5));
    h.run().await;
}

#[tokio::test]
async fn a_bucket_that_refuses_deletes_keeps_no_new_hour_from_being_indexed() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    h.run().await;
    let first = hour_key(hour_number(start.timestamp()) - 1);
    // The first file leaves the index, and stays out of it longer than any deletion delay.
    h.advance(Duration::days(14) + Duration::hours(1));
    h.run().await;
    h.advance(Duration::hours(25));

    let refusing = Bucket::from_store(
        Arc::new(FailingStore::refusing_deletes(h.test_bucket.store())),
        "",
    );
    let (report, steps) = failed_steps(h.exporter_with(refusing).await.run_once().await);
    assert_eq!(steps, vec![Step::Deletions], "{:?}", report.failures);
    assert_eq!(report.hours.len(), 25);
    assert_eq!(
        h.index("CA/index.txt").await.last(),
        Some(&hour_key(last_closed_hour(&h)))
    );
    assert!(h.bucket.exists(&first).await.unwrap());
    let verified = h.verify().await;
    assert!(verified.is_ok(), "{verified}");

    // With a bucket that deletes again, the object goes.
    h.advance(Duration::minutes(5));
    assert!(h.run().await.deleted_objects >= 1);
    assert!(!h.bucket.exists(&first).await.unwrap());
}

#[tokio::test]
async fn a_corrupt_hourly_object_keeps_no_new_hour_from_being_indexed() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[key(today - 144, 1), key(today - 288, 3)]).await;
    h.advance(Duration::hours(1));
    h.run().await;
    let published = h.index("CA/index.txt").await;
    // The hour holding the keys, which today's daily and retrieval files are merged from, is
    // damaged, and cannot be rebuilt with its recorded bytes: the database no longer holds its
    // keys.
    let damaged = published.last().unwrap().clone();
    h.bucket
        .put(
            &damaged,
            Bytes::from_static(b"PK\x03\x04 not an export"),
            ObjectKind::ExportFile,
        )
        .await
        .unwrap();
    h.db.client()
        .await
        .execute("DELETE FROM diagnosis_keys", &[])
        .await
        .unwrap();

    // 01:20 tomorrow: today is complete, its daily file is due.
    h.advance(Duration::hours(9));
    let result = h.exporter().await.run_once().await;
    let index = h.index("CA/index.txt").await;
    assert_eq!(index.len(), published.len() + 9);
    assert_eq!(index.last(), Some(&hour_key(last_closed_hour(&h))));
    // The windows merged from the damaged object fail, and only they.
    let (report, steps) = failed_steps(result);
    assert!(
        !steps.is_empty() && steps.iter().all(|step| *step == Step::Derived),
        "{:?}",
        report.failures
    );
    assert!(
        report.failures.iter().any(|f| f.error.contains(&damaged)),
        "{:?}",
        report.failures
    );
    assert_eq!(report.hours.len(), 9);
}

#[tokio::test]
async fn a_pass_that_lost_its_lock_session_writes_nothing_more_and_a_successor_publishes() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[key(today - 144, 1), key(today - 288, 3)]).await;
    h.run().await;
    h.advance(Duration::hours(8));

    // The first pass writes slowly; its lock session is terminated in the middle of it.
    let slow = Arc::new(FailingStore::slow(
        h.test_bucket.store(),
        StdDuration::from_millis(300),
    ));
    let first = h.exporter_with(Bucket::from_store(slow.clone(), "")).await;
    let pass = tokio::spawn(async move { first.run_once().await });
    while slow.writes_started() < 2 {
        assert!(
            !pass.is_finished(),
            "the slow pass ended before its third write"
        );
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    let admin = h.db.client().await;
    let terminated = admin
        .query(
            "SELECT l.pid, pg_terminate_backend(l.pid) FROM pg_locks l
              WHERE l.locktype = 'advisory' AND l.granted
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(terminated.len(), 1, "one exporter lock session");
    let writes_at_termination = slow.writes_started();
    // pg_terminate_backend only signals: the session lets go of its lock when it has ended.
    let pid: i32 = terminated[0].get(0);
    for _ in 0..500 {
        let alive = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap();
        if alive.get::<_, i64>(0) == 0 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }

    // A second pass takes the lock over and publishes everything.
    let second = h.run().await;
    assert!(!second.hours.is_empty());
    let (report, _) = failed_steps(pass.await.unwrap());
    let lost = report.failures.last().unwrap();
    assert!(lost.error.contains("lock was lost"), "{lost:?}");
    // At most the write already past its fence check lands; nothing after it.
    assert!(
        slow.writes_started() <= writes_at_termination + 1,
        "{} writes after the lock was lost",
        slow.writes_started() - writes_at_termination
    );

    // The index names every closed hour (it never went back) and the bucket verifies.
    let index = h.index("CA/index.txt").await;
    assert_eq!(index.len(), 9);
    assert_eq!(index.last(), Some(&hour_key(last_closed_hour(&h))));
    let verified = h.verify().await;
    assert!(verified.is_ok(), "{verified}");
}

/// A first pass that dies at any write, whichever it is, leaves a bucket that either publishes
/// nothing yet (no `index.txt`) or verifies whole: the manifest and `daily/index.txt` are
/// written before the phones' `index.txt`, so neither can be missing once it exists. Only the
/// deployed apps' retrieval objects, derived after the indexes (DESIGN §4.2), may still be
/// missing until the next pass; the pass that completes leaves them too.
#[tokio::test]
async fn a_first_pass_that_dies_at_any_write_leaves_index_txt_only_with_its_companions() {
    let start = test_start_time();
    let today = interval_number(start.timestamp()) / 144 * 144;
    let mut allowed = 0;
    loop {
        let h = ExportHarness::new(start).await;
        h.upload(&[key(today - 144, 1), key(today - 288, 2)]).await;
        h.advance(Duration::hours(3));
        let failing = Bucket::from_store(
            Arc::new(FailingStore::new(h.test_bucket.store(), allowed)),
            "",
        );
        let outcome = h.exporter_with(failing).await.run_once().await;
        if h.bucket.get("CA/index.txt").await.unwrap().is_some() {
            let report = h.verify().await;
            let whole = match outcome {
                Ok(_) => report.is_ok(),
                Err(_) => report.violations.iter().all(retrieval_out_of_step),
            };
            assert!(
                whole,
                "after a pass that died at write {}: {report}",
                allowed + 1
            );
        }
        if outcome.is_ok() {
            break;
        }
        allowed += 1;
        assert!(allowed < 100, "the pass never completed");
    }
    // Hours, retrieval objects, the bundle and the three indexes were each a point of death.
    assert!(allowed >= 6, "only {allowed} writes");
}

/// A slow store is not a broken one (DESIGN §4.2): with a 1 s statement timeout (so sessions
/// may idle in a transaction for 2 s) and the first PUTs of the pass reaching the store 3 s
/// late, one pass still publishes every hour and its indexes.
#[tokio::test]
async fn a_store_slower_than_the_database_limits_still_publishes_in_one_pass() {
    use diagnosis_tests::chaos::proxy::FaultProxy;
    use diagnosis_tests::s3::short_retry;

    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    h.run().await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[key(today - 144, 1), key(today - 288, 2)]).await;
    h.advance(Duration::hours(3));

    let moto = h.test_bucket.endpoint.trim_start_matches("http://");
    let proxy = FaultProxy::start(moto.parse().unwrap(), 7, StdDuration::from_secs(1))
        .await
        .unwrap();
    let options = h.test_bucket.options().into_iter().map(|(name, value)| {
        let value = if name == "aws_endpoint" {
            proxy.endpoint()
        } else {
            value
        };
        (name, value)
    });
    let slow_bucket =
        Bucket::from_url_with_options(&h.test_bucket.url(""), options, short_retry()).unwrap();
    let store = Store::connect(&StoreConfig {
        database_url: h.db.url.clone(),
        pool_size: 6,
        statement_timeout: StdDuration::from_secs(1),
        connect_timeout: StdDuration::from_secs(5),
        application_name: "diagnosis-exporter-slow-store-tests",
    })
    .unwrap()
    .with_database_clock(Arc::new(h.clock.clone()));
    let exporter = Exporter::new(
        store,
        slow_bucket,
        Arc::new(h.clock.clone()),
        h.settings.clone(),
        test_signing_keys(),
    )
    .await
    .unwrap();

    proxy.slow_puts(2, StdDuration::from_secs(3));
    let report = match exporter.run_once().await {
        Ok(diagnosis_exporter::pipeline::RunOutcome::Completed(report)) => report,
        other => panic!("the pass over a slow store did not complete: {other:?}"),
    };
    assert_eq!(proxy.slowed(), 2, "the store was not slow");
    assert_eq!(report.hours.len(), 3);
    let index = h.index("CA/index.txt").await;
    assert_eq!(index.last(), Some(&hour_key(last_closed_hour(&h))));
    let verified = h.verify().await;
    assert!(verified.is_ok(), "{verified}");
}
