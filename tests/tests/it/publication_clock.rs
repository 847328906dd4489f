//! One clock for publication (DESIGN §2, §4.2): every acknowledged relevant key is
//! published whatever the machines' clocks say. A key's hour comes from the database's clock,
//! a pass seals the hours it reads so that no upload can file a key under them afterwards, and
//! an exporter whose clock disagrees with the database's refuses to publish.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use diagnosis_core::config::CommonConfig;
use diagnosis_core::domain::KeyData;
use diagnosis_core::store::{Store, StoreConfig, StoreKeysOutcome};
use diagnosis_core::time::{HourNumber, ManualClock, UnixSeconds, interval_number};
use diagnosis_exporter::pipeline::{ExportError, RunOutcome};
use diagnosis_tests::app::{PORTAL_TOKEN, test_start_time};
use diagnosis_tests::dataset::keys_in_file;
use diagnosis_tests::export::{ExportHarness, key, test_region};
use diagnosis_tests::pg::TestDatabase;
use diagnosis_tests::process::{SubmitProcess, built_binary, faketime_env, temp_dir};
use diagnosis_tests::simulator::{Phone, Portal, app_keys, upload_of};
use diagnosis_tests::wait::eventually;

/// The keys of every hourly file `index.txt` names.
async fn published_keys(h: &ExportHarness) -> HashSet<KeyData> {
    let mut keys = HashSet::new();
    for object in h.index("CA/index.txt").await {
        let zip = h.bucket.get(&object).await.unwrap().unwrap();
        keys.extend(keys_in_file(&zip).unwrap().into_iter().map(|k| k.key_data));
    }
    keys
}

/// The hour a stored key is published in.
async fn publish_hour_of(h: &ExportHarness, key: &KeyData) -> i64 {
    let row =
        h.db.client()
            .await
            .query_one(
                "SELECT publish_hour FROM diagnosis_keys WHERE key_data = $1",
                &[&key.as_bytes().as_slice()],
            )
            .await
            .unwrap();
    i64::from(row.get::<_, i32>(0))
}

/// Advisory locks of the seal class (`"seal"`) on the test database, by mode and whether granted.
async fn seal_locks(h: &ExportHarness, mode: &str, granted: bool) -> i64 {
    h.db.client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks
              WHERE locktype = 'advisory' AND classid = x'7365616c'::int::oid
                AND objsubid = 2 AND mode = $1 AND granted = $2
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&mode, &granted],
        )
        .await
        .unwrap()
        .get(0)
}

/// A replica whose database clock is behind the seal (a failover to a server with a late
/// clock) files its keys under the next open hour, never under one already published.
#[tokio::test]
async fn a_key_filed_behind_the_seal_is_published_in_the_next_open_hour() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    h.run().await;
    let sealed = HourNumber::last_closed(UnixSeconds::from(start), 600);

    // 53 minutes behind: still inside the hour that was just published.
    let behind = ExportHarness::sharing(
        Arc::clone(&h.db),
        ManualClock::new(start - Duration::minutes(53)),
        |_| {},
    )
    .await;
    let day = interval_number(start.timestamp()) / 144 * 144;
    let keys = [key(day - 288, 2), key(day - 432, 3)];
    behind.upload(&keys).await;
    for key in &keys {
        assert_eq!(
            publish_hour_of(&h, &key.key_data).await,
            sealed.get() + 1,
            "a key filed under an hour that was already read"
        );
    }

    h.advance(Duration::hours(1));
    h.run().await;
    let published = published_keys(&h).await;
    for key in &keys {
        assert!(
            published.contains(&key.key_data),
            "an acknowledged key was never published"
        );
    }
}

/// An upload still storing its keys holds the seal back; once it commits, the hour is sealed
/// with its keys in it, and a later upload goes after the seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_waits_for_the_uploads_storing_keys_under_its_hours() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let hour = UnixSeconds::from(start).hour();
    let day = interval_number(start.timestamp()) / 144 * 144;
    let early = key(day - 288, 1);
    let server = h.claimed_keypair().await;
    let (release, released) = std::sync::mpsc::channel::<()>();
    let store = h.store.clone();
    let now = h.now();
    let stored_key = early.clone();
    let upload = tokio::spawn(async move {
        store
            .store_upload(&server, &test_region(), now, 15, move |_| {
                // Still storing: the test decides when the upload may go on.
                tokio::task::block_in_place(|| released.recv()).ok();
                Ok::<_, std::convert::Infallible>(vec![stored_key])
            })
            .await
    });
    eventually("the upload holding the seal lock", async || {
        seal_locks(&h, "ShareLock", true).await == 1
    })
    .await;
    let store = h.store.clone();
    let seal = tokio::spawn(async move { store.seal_hours("302", hour).await });
    eventually("the seal waiting for the upload", async || {
        seal_locks(&h, "ExclusiveLock", false).await == 1
    })
    .await;
    assert!(!seal.is_finished(), "the seal did not wait for the upload");

    release.send(()).unwrap();
    let stored = upload.await.unwrap().unwrap().unwrap();
    assert!(matches!(
        stored,
        StoreKeysOutcome::Stored { inserted: 1, .. }
    ));
    seal.await.unwrap().unwrap();
    assert_eq!(publish_hour_of(&h, &early.key_data).await, hour.get());

    // The clock has not moved, but the hour is sealed: the next upload goes after it.
    let late = [key(day - 432, 1)];
    h.upload(&late).await;
    assert_eq!(publish_hour_of(&h, &late[0].key_data).await, hour.get() + 1);
}

/// The hour of a key comes from the database's clock, not the replica's: a submit process
/// 10 minutes (plus however far the hour has gone) behind uploads after the exporter published
/// the hour its own clock is in, and every key it acknowledged is still published.
#[tokio::test]
async fn a_replica_whose_clock_is_behind_loses_no_acknowledged_key() {
    let db = Arc::new(TestDatabase::new().await);
    let now = Utc::now();
    // The smallest grace: the hour the replica's clock is in is published before it uploads.
    let h = ExportHarness::sharing(Arc::clone(&db), ManualClock::new(now), |settings| {
        settings.grace_seconds = 1;
    })
    .await;
    h.run().await;
    let behind_by = now.timestamp().rem_euclid(3600) + 600;
    let submit = SubmitProcess::start(&db.url, &faketime_env(&format!("-{behind_by}"))).await;

    // The phone's clock agrees with the replica's, so the upload's timestamp is accepted.
    let phone_now = Utc::now().timestamp() - behind_by;
    let code = Portal::new(&submit.base_url, PORTAL_TOKEN)
        .issue_code()
        .await
        .unwrap();
    let mut phone = Phone::new(&submit.base_url);
    assert_eq!(phone.claim(&code).await.unwrap().status, 200);
    // Keys that expired days ago: nothing holds them back, they belong to the upload's hour.
    let keys = app_keys(phone_now, 5).split_off(2);
    let reply = phone
        .upload(&upload_of(keys.clone(), phone_now))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.response);
    drop(submit);

    let real_hour = UnixSeconds::from(Utc::now()).hour();
    h.clock
        .set(chrono::DateTime::from_timestamp(real_hour.end().get() + 1, 0).unwrap());
    h.run().await;
    let published = published_keys(&h).await;
    for key in &keys {
        let data = KeyData::try_from(key.key_data()).unwrap();
        assert!(
            published.contains(&data),
            "a key acknowledged by a replica whose clock is behind was never published"
        );
    }
}

/// An exporter whose clock is two hours ahead of the database's publishes nothing and says
/// which clocks disagree.
#[tokio::test]
async fn an_exporter_whose_clock_disagrees_with_the_database_refuses_to_publish() {
    let db = TestDatabase::new().await;
    let dir = temp_dir("clock-skew");
    let key = dir.join("signing-key.pem");
    let keygen = std::process::Command::new(built_binary("diagnosis-exporter"))
        .args(["keygen", "--out", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let bucket = dir.join("bucket");
    let output = tokio::process::Command::new(built_binary("diagnosis-exporter"))
        .arg("run-once")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("BUCKET_URL", format!("file://{}", bucket.display()))
        .env("SIGNING_KEY_FILE", &key)
        .envs(faketime_env("+2h"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the pass succeeded: {stderr}");
    assert!(
        stderr.contains("differs from the database's") && stderr.contains("EXPORT_GRACE_SECONDS"),
        "{stderr}"
    );
    assert!(
        !bucket.join("CA/index.txt").exists(),
        "an index was published by an exporter whose clock is off"
    );
}

/// The same refusal inside the library, where both clocks are in the test's hands: within the
/// grace the pass publishes, beyond it nothing is written.
#[tokio::test]
async fn the_clock_check_refuses_beyond_the_grace_only() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let database = ManualClock::new(start + Duration::seconds(599));
    let within = h
        .exporter_over(
            h.store
                .clone()
                .with_database_clock(Arc::new(database.clone())),
        )
        .await;
    assert!(matches!(
        within.run_once().await,
        Ok(RunOutcome::Completed(_))
    ));
    database.set(start + Duration::seconds(700));
    h.advance(Duration::hours(1));
    database.advance(Duration::hours(1));
    let beyond = h
        .exporter_over(
            h.store
                .clone()
                .with_database_clock(Arc::new(database.clone())),
        )
        .await;
    let before = h.index("CA/index.txt").await;
    match beyond.run_once().await {
        Err(ExportError::ClockSkew { .. }) => {}
        other => panic!("expected the clock check to refuse, got {other:?}"),
    }
    assert_eq!(h.index("CA/index.txt").await, before);
}

/// An upload transaction that stalls while it holds the seal lock (its replica paused, its
/// network gone) cannot hold every other upload back behind a waiting seal: the seal waits a
/// quarter of the shortest statement timeout at a time and gives way in between, and seals once the stalled transaction ends.
#[tokio::test]
async fn a_stalled_upload_cannot_hold_the_other_uploads_behind_a_seal() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let mut stalled = h.db.client().await;
    let stalled = stalled.transaction().await.unwrap();
    stalled
        .execute(
            "SELECT pg_advisory_xact_lock_shared(x'7365616c'::int, hashtext('302'))",
            &[],
        )
        .await
        .unwrap();
    let store = h.store.clone();
    let hour = UnixSeconds::from(start).hour();
    let seal = tokio::spawn(async move { store.seal_hours("302", hour).await });
    eventually("the seal waiting for the stalled upload", async || {
        seal_locks(&h, "ExclusiveLock", false).await == 1
    })
    .await;

    let day = interval_number(start.timestamp()) / 144 * 144;
    tokio::time::timeout(StdDuration::from_secs(20), h.upload(&[key(day - 288, 1)]))
        .await
        .expect("an upload stayed queued behind the seal");
    assert!(
        !seal.is_finished(),
        "the seal did not wait for the stalled upload"
    );

    stalled.commit().await.unwrap();
    tokio::time::timeout(StdDuration::from_secs(20), seal)
        .await
        .expect("the seal did not follow once the stalled upload ended")
        .unwrap()
        .unwrap();
    assert_eq!(h.store.sealed_through("302").await.unwrap(), Some(hour));
}

/// With the shortest statement timeout the binaries accept (a second, four times as long as one
/// attempt to seal waits for its lock), a seal held back by an upload still gives way and tries again:
/// the attempt is ended by its lock timeout, not cut by the statement timeout, which would fail
/// the pass's hours step.
#[tokio::test]
async fn a_seal_under_the_shortest_statement_timeout_waits_and_tries_again() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let store = Store::connect(&StoreConfig {
        database_url: h.db.url.clone(),
        pool_size: 2,
        statement_timeout: StdDuration::from_millis(CommonConfig::MIN_STATEMENT_TIMEOUT_MS),
        connect_timeout: StdDuration::from_secs(5),
        application_name: "diagnosis-seal-tests",
    })
    .unwrap();
    let mut stalled = h.db.client().await;
    let stalled = stalled.transaction().await.unwrap();
    stalled
        .execute(
            "SELECT pg_advisory_xact_lock_shared(x'7365616c'::int, hashtext('302'))",
            &[],
        )
        .await
        .unwrap();
    let hour = UnixSeconds::from(start).hour();
    let seal = tokio::spawn(async move { store.seal_hours("302", hour).await });
    eventually("the seal waiting for the upload", async || {
        seal_locks(&h, "ExclusiveLock", false).await == 1
    })
    .await;
    // The first attempt ends without the lock (the upload still holds it).
    eventually("the first attempt giving up", async || {
        seal_locks(&h, "ExclusiveLock", false).await == 0
    })
    .await;

    stalled.commit().await.unwrap();
    tokio::time::timeout(StdDuration::from_secs(20), seal)
        .await
        .expect("the seal did not follow once the upload ended")
        .unwrap()
        .unwrap_or_else(|e| panic!("the seal failed instead of trying again: {e}"));
    assert_eq!(h.store.sealed_through("302").await.unwrap(), Some(hour));
}
