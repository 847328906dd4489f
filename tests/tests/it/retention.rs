//! Retention (DESIGN §4.2): an object that left the indexes stays in the bucket for
//! `DELETE_UNINDEXED_AFTER_HOURS` before it is deleted, the database rules delete a
//! backlog in bounded batches, each committed with its events, and codes, keypairs and bans
//! are deleted by the limits the live submit replicas record (DESIGN §6), never earlier.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use diagnosis_core::store::{RetentionReport, Store, SubmitInstance, SubmitLimits};
use diagnosis_core::time::{Clock, ManualClock, hour_number};
use diagnosis_proto::key_claim_response::ErrorCode;
use diagnosis_proto::{KeyClaimRequest, Message};
use diagnosis_tests::app::{TestApp, test_retention_policy, test_start_time};
use diagnosis_tests::export::{ExportHarness, hour_key};
use diagnosis_tests::pg::TestDatabase;
use diagnosis_tests::roles::{EXPORTER_ROLE, RoleUser};
use diagnosis_tests::simulator::{app_keys, upload_of};

/// Publishes the first hour, lets it leave the index 14 days later, then runs passes until
/// `delay - 1 min` after that pass, each of which must keep the object, and one at
/// `delay + 1 min`, which must delete it.
async fn the_object_outlives_its_index_entry_by(h: &ExportHarness, delay: Duration) {
    let start = h.now();
    h.run().await;
    let first = hour_key(hour_number(start.timestamp()) - 1);
    assert_eq!(h.index("CA/index.txt").await, vec![first.clone()]);

    h.advance(Duration::days(14) + Duration::hours(1));
    h.run().await;
    assert!(!h.index("CA/index.txt").await.contains(&first));
    let unindexed_at = h.now();

    for after in [
        Duration::minutes(5),
        delay / 2,
        delay - Duration::minutes(1),
    ] {
        h.advance(unindexed_at + after - h.now());
        let report = h.run().await;
        assert_eq!(
            report.deleted_objects, 0,
            "an object was deleted {after} after it left the indexes"
        );
        assert!(
            h.bucket.exists(&first).await.unwrap(),
            "{first} was gone {after} after it left the index"
        );
    }
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");

    h.advance(unindexed_at + delay + Duration::minutes(1) - h.now());
    let report = h.run().await;
    assert!(report.deleted_objects >= 1, "{report:?}");
    assert!(
        !h.bucket.exists(&first).await.unwrap(),
        "{first} outlived its index entry by more than {delay}"
    );
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn an_unindexed_object_is_deleted_a_day_after_it_left_the_indexes() {
    let h = ExportHarness::new(test_start_time()).await;
    assert_eq!(h.settings.delete_unindexed_after, Duration::hours(24));
    the_object_outlives_its_index_entry_by(&h, Duration::hours(24)).await;
}

#[tokio::test]
async fn delete_unindexed_after_hours_sets_how_long_an_unindexed_object_stays() {
    let h = ExportHarness::with_settings(test_start_time(), |s| {
        s.delete_unindexed_after = Duration::hours(2)
    })
    .await;
    the_object_outlives_its_index_entry_by(&h, Duration::hours(2)).await;
}

/// Rows per batch in the batch tests: a backlog of a few dozen rows is several batches deep.
const BATCH: i64 = 10;

/// Inserts `count` rows into `encryption_keys` for `originator`, created one second apart
/// from `first_created` on: unclaimed codes when `claimed` is false, else keypairs claimed
/// an hour after they were created, with `remaining_keys` left and `uploaded` as given.
/// `tag` keeps codes and keys unique across calls.
#[allow(clippy::too_many_arguments)]
async fn insert_codes(
    db: &TestDatabase,
    tag: &str,
    originator: &str,
    count: i32,
    first_created: DateTime<Utc>,
    claimed: bool,
    remaining_keys: i32,
    uploaded: bool,
) {
    db.client()
        .await
        .execute(
            "INSERT INTO encryption_keys (region, originator, one_time_code, app_public_key,
                                          server_public_key, server_private_key, remaining_keys,
                                          created, claimed, uploaded)
             SELECT '302', $2,
                    CASE WHEN $5 THEN NULL ELSE $1 || '-' || g END,
                    CASE WHEN $5 THEN sha256(('app' || $1 || g)::bytea) END,
                    sha256(('public' || $1 || g)::bytea),
                    sha256(('private' || $1 || g)::bytea),
                    $6,
                    $4::timestamptz + g * interval '1 second',
                    CASE WHEN $5 THEN $4::timestamptz + g * interval '1 second' + interval '1 hour' END,
                    $7
               FROM generate_series(1, $3) g",
            &[
                &tag,
                &originator,
                &count,
                &first_created,
                &claimed,
                &remaining_keys,
                &uploaded,
            ],
        )
        .await
        .unwrap();
}

/// Inserts `count` diagnosis keys of `region` published in `publish_hour`.
async fn insert_keys(db: &TestDatabase, tag: &str, region: &str, count: i32, publish_hour: i64) {
    let hour = i32::try_from(publish_hour).unwrap();
    db.client()
        .await
        .execute(
            "INSERT INTO diagnosis_keys (key_data, rolling_start_interval_number, rolling_period,
                                         transmission_risk_level, report_type, region, originator,
                                         hour_of_submission, publish_hour)
             SELECT substring(sha256(($1 || g)::bytea) FROM 1 FOR 16), $4 * 6, 144, 3, 1, $2,
                    'ON', $4, $4
               FROM generate_series(1, $3) g",
            &[&tag, &region, &count, &hour],
        )
        .await
        .unwrap();
}

/// Inserts `count` failed-claim rows whose last failures are one second apart from `first` on.
async fn insert_failed_claims(db: &TestDatabase, tag: &str, count: i32, first: DateTime<Utc>) {
    db.client()
        .await
        .execute(
            "INSERT INTO failed_key_claim_attempts (identifier, failures, last_failure)
             SELECT $1 || g, 3, $3::timestamptz + g * interval '1 second' FROM generate_series(1, $2) g",
            &[&tag, &count, &first],
        )
        .await
        .unwrap();
}

/// `(identifier, source, count)` of every event row of `day`.
async fn events(db: &TestDatabase, day: DateTime<Utc>) -> Vec<(String, String, i32)> {
    db.client()
        .await
        .query(
            "SELECT identifier, source, count FROM events WHERE date = $1
              ORDER BY identifier, source",
            &[&day.date_naive()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// Records, in order, how many rows each DELETE statement on the retention tables removed.
async fn log_delete_statements(db: &TestDatabase) {
    let mut sql = String::from(
        "CREATE TABLE deletions (statement BIGSERIAL PRIMARY KEY, tbl TEXT NOT NULL,
                                 rows BIGINT NOT NULL);
         CREATE FUNCTION log_deletion() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
         BEGIN
             INSERT INTO deletions (tbl, rows) SELECT TG_TABLE_NAME, count(*) FROM gone;
             RETURN NULL;
         END $$;",
    );
    for table in [
        "encryption_keys",
        "diagnosis_keys",
        "failed_key_claim_attempts",
    ] {
        sql.push_str(&format!(
            "CREATE TRIGGER log_deletion AFTER DELETE ON {table}
                 REFERENCING OLD TABLE AS gone
                 FOR EACH STATEMENT EXECUTE FUNCTION log_deletion();"
        ));
    }
    db.client().await.batch_execute(&sql).await.unwrap();
}

async fn delete_statements(db: &TestDatabase, table: &str) -> Vec<i64> {
    db.client()
        .await
        .query(
            "SELECT rows FROM deletions WHERE tbl = $1 ORDER BY statement",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Retention as the exporter's role runs it, with an optional `lock_timeout` for the role.
async fn exporter_store(db: &TestDatabase, lock_timeout: Option<&str>) -> Store {
    let user = RoleUser::create(db, EXPORTER_ROLE).await;
    if let Some(timeout) = lock_timeout {
        db.client()
            .await
            .batch_execute(&format!(
                "ALTER ROLE {} SET lock_timeout = '{timeout}'",
                user.name
            ))
            .await
            .unwrap();
    }
    user.store()
}

#[tokio::test]
async fn a_backlog_several_batches_deep_is_purged_batch_by_batch_with_its_events() {
    let db = TestDatabase::new().await;
    let now = test_start_time();
    let days_ago = |days: i64| now - Duration::days(days);

    // Unclaimed codes: 25 expired (15 of ON, 10 of QC) and 3 still valid.
    insert_codes(&db, "on", "ON", 15, days_ago(3), false, 43, false).await;
    insert_codes(&db, "qc", "QC", 10, days_ago(2), false, 43, false).await;
    insert_codes(
        &db,
        "fresh",
        "ON",
        3,
        now - Duration::hours(2),
        false,
        43,
        false,
    )
    .await;
    // Keypairs: 23 expired after uploading, 12 expired without, 7 spent, 4 valid.
    insert_codes(&db, "used", "ON", 23, days_ago(20), true, 10, true).await;
    insert_codes(&db, "unused", "QC", 12, days_ago(18), true, 43, false).await;
    insert_codes(&db, "spent", "ON", 7, days_ago(1), true, 0, true).await;
    insert_codes(&db, "valid", "ON", 4, days_ago(1), true, 5, true).await;
    // Diagnosis keys: 35 + 12 published over 15 days ago in two regions, 5 recent.
    let hour = hour_number(now.timestamp());
    insert_keys(&db, "a", "302", 35, hour - 16 * 24).await;
    insert_keys(&db, "b", "XX", 12, hour - 15 * 24 - 1).await;
    insert_keys(&db, "c", "302", 5, hour - 15 * 24 + 1).await;
    // Failed claims: 30 whose window has passed (exactly three batches), 2 recent.
    insert_failed_claims(&db, "old", 30, now - Duration::hours(3)).await;
    insert_failed_claims(&db, "new", 2, now - Duration::minutes(30)).await;

    log_delete_statements(&db).await;
    let store = exporter_store(&db, None).await;
    let report = store
        .purge_expired_in_batches_of(now, Some(test_retention_policy()), BATCH)
        .await
        .unwrap();
    assert_eq!(
        report,
        RetentionReport {
            unclaimed_codes: 25,
            keypairs: 42,
            diagnosis_keys: 47,
            failed_claims: 30,
        }
    );

    // Each statement deleted at most one batch, and each rule went on until a batch came
    // back short: codes 10 + 10 + 5, keypairs 10 × 4 + 2, keys per region (302, then XX),
    // failed claims 10 × 3 and an empty batch.
    assert_eq!(
        delete_statements(&db, "encryption_keys").await,
        vec![10, 10, 5, 10, 10, 10, 10, 2]
    );
    assert_eq!(
        delete_statements(&db, "diagnosis_keys").await,
        vec![10, 10, 10, 5, 10, 2]
    );
    assert_eq!(
        delete_statements(&db, "failed_key_claim_attempts").await,
        vec![10, 10, 10, 0]
    );

    assert_eq!(
        db.count("SELECT count(*) FROM encryption_keys WHERE claimed IS NULL")
            .await,
        3
    );
    assert_eq!(
        db.count("SELECT count(*) FROM encryption_keys WHERE claimed IS NOT NULL")
            .await,
        4
    );
    assert_eq!(db.count("SELECT count(*) FROM diagnosis_keys").await, 5);
    assert_eq!(
        db.count("SELECT count(*) FROM failed_key_claim_attempts")
            .await,
        2
    );
    let owned = |(identifier, source, count): (&str, &str, i32)| {
        (identifier.to_owned(), source.to_owned(), count)
    };
    assert_eq!(
        events(&db, now).await,
        [
            ("OTKExpired", "ON", 23),
            ("OTKExpiredNoUploads", "QC", 12),
            ("OTKUnclaimed", "ON", 15),
            ("OTKUnclaimed", "QC", 10),
        ]
        .map(owned)
        .to_vec(),
        "the spent keypairs were counted at upload, not here"
    );

    // Nothing is left to do.
    let again = store
        .purge_expired_in_batches_of(now, Some(test_retention_policy()), BATCH)
        .await
        .unwrap();
    assert_eq!(again, RetentionReport::default());
}

#[tokio::test]
async fn a_failed_batch_leaves_the_batches_before_it_deleted_and_counted() {
    let db = TestDatabase::new().await;
    let now = test_start_time();
    insert_codes(
        &db,
        "on",
        "ON",
        25,
        now - Duration::days(3),
        false,
        43,
        false,
    )
    .await;
    let newest: DateTime<Utc> = db
        .client()
        .await
        .query_one("SELECT max(created) FROM encryption_keys", &[])
        .await
        .unwrap()
        .get(0);

    // Another session holds the newest code, which the third batch takes; the exporter's
    // sessions wait for a row lock at most 100 ms.
    let mut holder = db.client().await;
    let lock = holder.transaction().await.unwrap();
    lock.query_one(
        "SELECT 1 FROM encryption_keys WHERE created = $1 FOR UPDATE",
        &[&newest],
    )
    .await
    .unwrap();
    let store = exporter_store(&db, Some("100ms")).await;
    let error = store
        .purge_expired_in_batches_of(now, Some(test_retention_policy()), BATCH)
        .await
        .expect_err("the third batch waits for a locked row");
    assert!(
        error.to_string().contains("55P03"),
        "not a lock timeout: {error}"
    );

    // The first two batches stayed deleted, each with its events; the third left its rows.
    assert_eq!(db.count("SELECT count(*) FROM encryption_keys").await, 5);
    assert_eq!(
        events(&db, now).await,
        vec![("OTKUnclaimed".to_owned(), "ON".to_owned(), 20)]
    );

    // Once the lock is gone, the next pass finishes the work and counts only what it deleted.
    lock.rollback().await.unwrap();
    let report = store
        .purge_expired_in_batches_of(now, Some(test_retention_policy()), BATCH)
        .await
        .unwrap();
    assert_eq!(report.unclaimed_codes, 5);
    assert_eq!(db.count("SELECT count(*) FROM encryption_keys").await, 0);
    assert_eq!(
        events(&db, now).await,
        vec![("OTKUnclaimed".to_owned(), "ON".to_owned(), 25)]
    );
}

/// Records, as a replica that ran at `at` and has stopped since, the limits `adjust` makes of the
/// contract's defaults.
async fn record_gone_replica(
    store: &Store,
    at: DateTime<Utc>,
    adjust: impl FnOnce(&mut SubmitLimits),
) {
    let mut limits = SubmitLimits {
        one_time_code_expiry: Duration::hours(24),
        encryption_key_validity_days: 15,
        claim_ban_duration: Duration::hours(1),
        statement_timeout: std::time::Duration::from_millis(5_000),
    };
    adjust(&mut limits);
    // The database's clock stamps the refresh: at `at`, for this replica.
    store
        .clone()
        .with_database_clock(Arc::new(ManualClock::new(at)))
        .record_submit_settings(&SubmitInstance::new(at), &limits)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_keypair_of_a_live_replica_lives_out_its_validity_whatever_other_settings_say() {
    let lenient = TestApp::spawn_with(|s| s.encryption_key_validity_days = 20).await;
    let strict = TestApp::spawn_on(Arc::clone(&lenient.db), lenient.clock.clone(), |s| {
        s.encryption_key_validity_days = 5
    })
    .await;
    record_gone_replica(
        &lenient.store,
        lenient.clock.now() - Duration::hours(1),
        |l| l.encryption_key_validity_days = 3,
    )
    .await;
    let h = ExportHarness::sharing(Arc::clone(&lenient.db), lenient.clock.clone(), |_| {}).await;
    let keypairs = || async {
        lenient
            .db
            .count("SELECT count(*) FROM encryption_keys WHERE claimed IS NOT NULL")
            .await
    };

    // Issued and claimed on 28 November at 15:20: valid until 18 December, 00:00.
    let phone = lenient.claimed_phone().await;
    lenient.advance_past_refresh(Duration::days(10), 2).await;
    let report = h.run().await;
    assert_eq!(report.retention.keypairs, 0, "{report:?}");
    assert_eq!(keypairs().await, 1);
    let now = lenient.now_unix();
    let reply = phone
        .upload(&upload_of(app_keys(now, 3), now))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "the 10-day-old keypair: {reply:?}");

    let end = Utc.with_ymd_and_hms(2026, 12, 18, 0, 0, 0).unwrap();
    lenient
        .advance_past_refresh(end - Duration::seconds(1) - lenient.clock.now(), 2)
        .await;
    assert_eq!(h.run().await.retention.keypairs, 0);
    assert_eq!(keypairs().await, 1);
    // At the end of its 20 days, 19 days and 8 hours after its code was issued.
    lenient.clock.advance(Duration::seconds(1));
    assert_eq!(h.run().await.retention.keypairs, 1);
    assert_eq!(keypairs().await, 0);
    drop(strict);
}

async fn wrong_claim(app: &TestApp) -> (u16, ErrorCode) {
    let body = KeyClaimRequest {
        one_time_code: Some("AEF-245-HJKL".to_owned()),
        app_public_key: Some(vec![7; 32]),
    }
    .encode_to_vec();
    let (status, response) = app.post_claim(body).await;
    (status, response.error())
}

#[tokio::test]
async fn a_ban_of_a_live_replica_is_not_lifted_before_it_ends() {
    let long_bans = TestApp::spawn_with(|s| {
        s.ban.max_failures = 2;
        s.ban.ban_duration = Duration::minutes(120);
    })
    .await;
    let short_bans = long_bans.replica().await;
    let h =
        ExportHarness::sharing(Arc::clone(&long_bans.db), long_bans.clock.clone(), |_| {}).await;
    for _ in 0..2 {
        assert_eq!(
            wrong_claim(&long_bans).await,
            (401, ErrorCode::InvalidOneTimeCode)
        );
    }
    assert_eq!(
        wrong_claim(&long_bans).await,
        (429, ErrorCode::TemporaryBan)
    );

    // An hour later the replica with 60-minute bans has none, the other still bans the client.
    long_bans
        .advance_past_refresh(Duration::minutes(61), 2)
        .await;
    assert_eq!(h.run().await.retention.failed_claims, 0);
    assert_eq!(wrong_claim(&long_bans).await.1, ErrorCode::TemporaryBan);
    long_bans
        .advance_past_refresh(Duration::minutes(60), 2)
        .await;
    assert_eq!(h.run().await.retention.failed_claims, 1);
    assert_eq!(
        wrong_claim(&long_bans).await,
        (401, ErrorCode::InvalidOneTimeCode)
    );
    drop(short_bans);
}

#[tokio::test]
async fn without_recorded_settings_codes_keypairs_and_bans_are_kept_and_keys_deleted() {
    let db = TestDatabase::new().await;
    let now = test_start_time();
    insert_codes(
        &db,
        "old",
        "ON",
        3,
        now - Duration::days(30),
        false,
        43,
        false,
    )
    .await;
    insert_codes(
        &db,
        "used",
        "ON",
        4,
        now - Duration::days(30),
        true,
        10,
        true,
    )
    .await;
    insert_failed_claims(&db, "old", 2, now - Duration::days(30)).await;
    insert_keys(&db, "k", "302", 5, hour_number(now.timestamp()) - 16 * 24).await;
    let h = ExportHarness::sharing(Arc::new(db), ManualClock::new(now), |_| {}).await;

    let report = h.run().await;
    assert_eq!(
        report.retention,
        RetentionReport {
            diagnosis_keys: 5,
            ..RetentionReport::default()
        }
    );
    assert_eq!(h.db.count("SELECT count(*) FROM encryption_keys").await, 7);
    assert_eq!(
        h.db.count("SELECT count(*) FROM failed_key_claim_attempts")
            .await,
        2
    );
    assert_eq!(h.db.count("SELECT count(*) FROM diagnosis_keys").await, 0);

    // Once a replica has recorded its limits, the next pass deletes by them.
    h.record_submit_settings(|_| {}).await;
    let report = h.run().await;
    assert_eq!(
        (
            report.retention.unclaimed_codes,
            report.retention.keypairs,
            report.retention.failed_claims
        ),
        (3, 4, 2)
    );
}

#[tokio::test]
async fn the_latest_recorded_settings_hold_while_no_replica_runs_and_stale_rows_go() {
    let db = Arc::new(TestDatabase::new().await);
    let now = test_start_time();
    let h = ExportHarness::sharing(Arc::clone(&db), ManualClock::new(now), |_| {}).await;
    // Two replicas that stopped a week ago (the most lenient of them counts), and one that
    // stopped a day before them.
    let week_ago = now - Duration::days(7);
    record_gone_replica(&h.store, week_ago, |l| l.encryption_key_validity_days = 12).await;
    record_gone_replica(&h.store, week_ago - Duration::minutes(2), |l| {
        l.encryption_key_validity_days = 14
    })
    .await;
    record_gone_replica(
        &h.store,
        week_ago - Duration::days(1) - Duration::minutes(1),
        |l| l.encryption_key_validity_days = 20,
    )
    .await;
    insert_codes(
        &db,
        "young",
        "ON",
        2,
        now - Duration::days(13),
        true,
        10,
        true,
    )
    .await;
    insert_codes(
        &db,
        "old",
        "ON",
        3,
        now - Duration::days(15),
        true,
        10,
        true,
    )
    .await;

    let report = h.run().await;
    assert_eq!(report.retention.keypairs, 3, "{report:?}");
    assert_eq!(db.count("SELECT count(*) FROM encryption_keys").await, 2);
    // The replica gone for over a day before the latest ones has left the table.
    assert_eq!(db.count("SELECT count(*) FROM submit_settings").await, 2);
}

/// Which replicas are live is judged by the database's clock, which also stamps their refreshes
/// (DESIGN §6): a replica whose own clock is ten minutes behind still counts, and its limits
/// still hold.
#[tokio::test]
async fn a_replica_whose_clock_is_behind_is_judged_live_by_the_database_clock() {
    let db = Arc::new(TestDatabase::new().await);
    let database = ManualClock::new(test_start_time());
    let behind = TestApp::spawn_behind(
        Arc::clone(&db),
        database.clone(),
        Duration::minutes(10),
        |s| s.encryption_key_validity_days = 20,
    )
    .await;
    let h = ExportHarness::sharing(Arc::clone(&db), database.clone(), |_| {}).await;
    let recorded = h.store.recorded_submit_settings().await.unwrap();
    let live = diagnosis_core::store::submit_settings::live_settings(&recorded, h.now());
    assert_eq!(live.len(), 1, "the replica's row is not live: {recorded:?}");
    let policy = diagnosis_core::store::submit_settings::retention_policy(&recorded, h.now());
    assert_eq!(policy.map(|p| p.keypair_validity_days), Some(20));
    drop(behind);
}

/// Retention judges ages by the earlier of the exporter's clock and the database's: an exporter
/// whose clock runs 500 s ahead (inside the 600 s grace, so it publishes) does not delete a code
/// five minutes before it expires.
#[tokio::test]
async fn an_exporter_whose_clock_runs_ahead_deletes_nothing_early() {
    let app = TestApp::spawn().await;
    let code = app.portal().issue_code().await.unwrap();
    app.advance_past_refresh(Duration::hours(24) - Duration::seconds(400), 1)
        .await;
    let ahead = ManualClock::new(app.clock.now() + Duration::seconds(500));
    let h = ExportHarness::sharing(Arc::clone(&app.db), ahead, |_| {}).await;
    let exporter = h
        .exporter_over(
            Store::from_pool(app.db.pool().clone())
                .with_database_clock(Arc::new(app.clock.clone())),
        )
        .await;
    match exporter.run_once().await {
        Ok(diagnosis_exporter::pipeline::RunOutcome::Completed(report)) => {
            assert_eq!(report.retention.unclaimed_codes, 0, "{report:?}");
        }
        other => panic!("the pass did not complete: {other:?}"),
    }
    assert_eq!(app.phone().claim(&code).await.unwrap().status, 200);
}
