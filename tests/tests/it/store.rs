//! Store functions that no HTTP request reaches on its own: concurrent
//! migrations, code collisions and retention (DESIGN §3.1, §4.2, §5).

use chrono::{DateTime, Duration, Utc};
use diagnosis_core::domain::{
    AppPublicKey, DiagnosisKey, KeyData, OneTimeCode, OriginatorLabel, Region, ReportType,
};
use diagnosis_core::store::{
    ClaimCodeKey, ClaimOutcome, ClientIdentifier, HashedCode, IssueOutcome, NewCode, Store,
    StoreConfig, StoreKeysOutcome,
};
use diagnosis_core::time::{HourNumber, ManualClock, hour_number, interval_number};
use diagnosis_tests::app::{test_retention_policy, test_start_time};
use diagnosis_tests::pg::TestDatabase;

fn store_for(db: &TestDatabase) -> Store {
    Store::from_pool(db.pool().clone())
}

/// The store of an upload made at `at`: the database's clock, which files the keys under its
/// hour, reads `at`.
fn store_at(db: &TestDatabase, at: DateTime<Utc>) -> Store {
    store_for(db).with_database_clock(std::sync::Arc::new(ManualClock::new(at)))
}

#[tokio::test]
async fn processes_starting_together_apply_each_migration_once() {
    let db = TestDatabase::empty().await;
    let migrations = (0..4).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            let store = Store::connect(&StoreConfig {
                database_url: url,
                pool_size: 2,
                statement_timeout: std::time::Duration::from_secs(30),
                connect_timeout: std::time::Duration::from_secs(5),
                application_name: "migration-test",
            })
            .unwrap();
            store.migrate().await
        })
    });
    for migration in migrations {
        migration.await.unwrap().unwrap();
    }
    let client = db.client().await;
    let applied: i64 = client
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../sql"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "sql")
        })
        .count();
    assert_eq!(applied, i64::try_from(files).unwrap());
    for table in [
        "encryption_keys",
        "diagnosis_keys",
        "failed_key_claim_attempts",
        "exports",
        "events",
        "tek_upload_count",
        "otk_life_duration",
    ] {
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("table {table}: {e}"));
    }
}

fn new_code<'a>(region: &'a Region, originator: &'a OriginatorLabel) -> NewCode<'a> {
    NewCode {
        region,
        originator,
        hash_id: None,
        initial_remaining_keys: 43,
        claim_recovery: Duration::minutes(10),
    }
}

#[tokio::test]
async fn five_colliding_codes_store_nothing_and_never_issue_an_empty_code() {
    let db = TestDatabase::new().await;
    let store = store_for(&db);
    let region = Region::parse("302").unwrap();
    let label = OriginatorLabel::parse("ON").unwrap();
    let code = OneTimeCode::from_user_input("AEF245HJKL").unwrap();
    let now = test_start_time();
    let first = store
        .issue_one_time_code(&new_code(&region, &label), now, [code.clone()])
        .await
        .unwrap();
    assert!(matches!(first, IssueOutcome::Issued { .. }));
    let before = db.snapshot().await;
    let collided = store
        .issue_one_time_code(
            &new_code(&region, &label),
            now,
            std::iter::repeat_n(code.clone(), 5),
        )
        .await
        .unwrap();
    assert!(matches!(collided, IssueOutcome::CodeCollisions));
    assert_eq!(db.snapshot().await, before);
    // The sixth candidate is never tried: a collision on five is final.
    let fresh = OneTimeCode::from_user_input("2456789245").unwrap();
    let mut candidates = vec![code; 4];
    candidates.push(fresh);
    let issued = store
        .issue_one_time_code(&new_code(&region, &label), now, candidates)
        .await
        .unwrap();
    match issued {
        IssueOutcome::Issued { code, .. } => assert_eq!(code.as_str(), "2456789245"),
        other => panic!("expected the fifth candidate to be issued, got {other:?}"),
    }
}

fn diagnosis_key(byte: u8, rsin: i64) -> DiagnosisKey {
    DiagnosisKey {
        key_data: KeyData::from_array([byte; 16]),
        rolling_start_interval_number: i32::try_from(rsin).unwrap(),
        rolling_period: 144,
        transmission_risk_level: 1,
        report_type: ReportType::ConfirmedTest,
        days_since_onset: None,
    }
}

async fn claimed_keypair(
    store: &Store,
    at: DateTime<Utc>,
    app_byte: u8,
) -> diagnosis_core::domain::ServerPublicKey {
    let code = issued_code(store, at).await;
    let app = AppPublicKey::from_array([app_byte; 32]);
    match claim_from(store, &code, &app, 1, at).await {
        ClaimOutcome::Claimed(server) => server,
        other => panic!("claim failed: {other:?}"),
    }
}

async fn issued_code(store: &Store, at: DateTime<Utc>) -> OneTimeCode {
    let region = Region::parse("302").unwrap();
    let label = OriginatorLabel::parse("ON").unwrap();
    match store
        .issue_one_time_code(&new_code(&region, &label), at, [OneTimeCode::generate()])
        .await
        .unwrap()
    {
        IssueOutcome::Issued { code, .. } => code,
        other => panic!("not issued: {other:?}"),
    }
}

/// The claim of `code` by `app` from the address 192.0.2.`client`.
async fn claim_from(
    store: &Store,
    code: &OneTimeCode,
    app: &AppPublicKey,
    client: u8,
    at: DateTime<Utc>,
) -> ClaimOutcome {
    let client = ClientIdentifier::new(
        &test_identity_key(),
        std::net::IpAddr::from([192, 0, 2, client]),
    );
    let code = HashedCode::new(&ClaimCodeKey::from_secret(&[2; 32]).unwrap(), code.clone());
    store
        .claim_one_time_code(
            Some(&code),
            app,
            &client,
            at,
            diagnosis_core::store::ClaimWindow {
                code_expiry: Duration::hours(24),
                keypair_validity_days: 15,
            },
            diagnosis_core::store::BanPolicy {
                max_failures: 50,
                ban_duration: Duration::hours(1),
            },
        )
        .await
        .unwrap()
}

/// The same app's two claims of one code from two addresses at once (its retry from a new
/// network while the first is still in flight) both get its keypair and count no failure:
/// the one that waited for the code's row sees that the other bound it to the same app key,
/// and repeats it (DESIGN §3.2).
#[tokio::test]
async fn the_same_apps_claims_racing_from_two_addresses_both_get_its_keypair() {
    let db = TestDatabase::new().await;
    let store = store_for(&db);
    let now = test_start_time();
    let code = issued_code(&store, now).await;
    let app = AppPublicKey::from_array([9; 32]);
    // The code's row is held until both claims wait for it.
    let mut holder = db.client().await;
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "SELECT 1 FROM encryption_keys WHERE one_time_code = $1 FOR UPDATE",
        &[&code.as_str()],
    )
    .await
    .unwrap();
    let claims: Vec<_> = [1, 2]
        .map(|client| {
            let (store, code, app) = (store.clone(), code.clone(), app);
            tokio::spawn(async move { claim_from(&store, &code, &app, client, now).await })
        })
        .into();
    diagnosis_tests::wait::eventually("both claims waiting for the code's row", async || {
        let waiting: i64 = db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE encryption_keys%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        waiting == 2
    })
    .await;
    hold.commit().await.unwrap();
    let mut servers = Vec::new();
    for claim in claims {
        match claim.await.unwrap() {
            ClaimOutcome::Claimed(server) | ClaimOutcome::Repeated(server) => servers.push(server),
            other => panic!("the same app's claim was refused: {other:?}"),
        }
    }
    assert_eq!(servers[0], servers[1], "one keypair for the app");
    let failures: i64 = db
        .client()
        .await
        .query_one(
            "SELECT coalesce(sum(failures), 0)::int8 FROM failed_key_claim_attempts",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 0, "a repeat is no failure");
}

fn test_identity_key() -> diagnosis_core::store::ClientIdentityKey {
    diagnosis_core::store::ClientIdentityKey::from_secret(&[1; 32]).unwrap()
}

#[tokio::test]
async fn retention_deletes_what_must_not_be_kept_and_counts_the_events() {
    let db = TestDatabase::new().await;
    let store = store_for(&db);
    let region = Region::parse("302").unwrap();
    let label = OriginatorLabel::parse("ON").unwrap();
    let now = test_start_time();
    let days_ago = |d: i64| now - Duration::days(d);

    // Codes: one unclaimed past its expiry, one still fresh.
    store
        .issue_one_time_code(
            &new_code(&region, &label),
            now - Duration::hours(25),
            [OneTimeCode::generate()],
        )
        .await
        .unwrap();
    store
        .issue_one_time_code(
            &new_code(&region, &label),
            now - Duration::hours(1),
            [OneTimeCode::generate()],
        )
        .await
        .unwrap();
    // Keypairs: expired with an upload, expired without, spent, and valid.
    let expired_used = claimed_keypair(&store, days_ago(16), 1).await;
    // Expired before it was uploaded: published in its submission hour, 16 days ago.
    let rsin = interval_number(days_ago(17).timestamp());
    let stored = store_at(&db, days_ago(16))
        .store_diagnosis_keys(
            &expired_used,
            &[diagnosis_key(1, rsin)],
            &region,
            days_ago(16),
            15,
        )
        .await
        .unwrap();
    assert!(matches!(stored, StoreKeysOutcome::Stored { .. }));
    claimed_keypair(&store, days_ago(16), 2).await;
    let spent = claimed_keypair(&store, days_ago(1), 3).await;
    let today = interval_number(days_ago(1).timestamp()) / 144 * 144;
    let keys: Vec<DiagnosisKey> = (0..43)
        .map(|i| diagnosis_key(100 + i, today - 144 * i64::from(i % 13)))
        .collect();
    let stored = store_at(&db, days_ago(1))
        .store_diagnosis_keys(&spent, &keys, &region, days_ago(1), 15)
        .await
        .unwrap();
    assert_eq!(
        stored,
        StoreKeysOutcome::Stored {
            inserted: 43,
            remaining: 0
        }
    );
    claimed_keypair(&store, days_ago(2), 4).await;

    // Failed claims: one whose window has passed, one recent.
    let policy = diagnosis_core::store::BanPolicy {
        max_failures: 50,
        ban_duration: Duration::hours(1),
    };
    let old_client = ClientIdentifier::new(&test_identity_key(), "192.0.2.10".parse().unwrap());
    let new_client = ClientIdentifier::new(&test_identity_key(), "192.0.2.11".parse().unwrap());
    store
        .record_failed_claim(&old_client, now - Duration::minutes(61), policy)
        .await
        .unwrap();
    store
        .record_failed_claim(&new_client, now - Duration::minutes(59), policy)
        .await
        .unwrap();

    let report = store
        .purge_expired(now, Some(test_retention_policy()))
        .await
        .unwrap();
    assert_eq!(report.unclaimed_codes, 1);
    assert_eq!(report.keypairs, 3, "two expired and one spent");
    assert_eq!(
        report.diagnosis_keys, 1,
        "only the key published over 15 days ago"
    );
    assert_eq!(report.failed_claims, 1);

    let client = db.client().await;
    let left: Vec<(bool, Option<Vec<u8>>)> = client
        .query("SELECT one_time_code IS NOT NULL, app_public_key FROM encryption_keys ORDER BY created", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(left, vec![(false, Some(vec![4; 32])), (true, None)]);
    let oldest_publish: i32 = client
        .query_one("SELECT min(publish_hour) FROM diagnosis_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert!(i64::from(oldest_publish) >= hour_number(now.timestamp()) - 15 * 24);
    let events = db.event_counts(Some(now.date_naive())).await;
    assert_eq!(
        events,
        vec![
            ("OTKExpired".to_owned(), 1),
            ("OTKExpiredNoUploads".to_owned(), 1),
            ("OTKGenerated".to_owned(), 1),
            ("OTKUnclaimed".to_owned(), 1),
        ]
    );
    // A second pass finds nothing more to do.
    let again = store
        .purge_expired(now, Some(test_retention_policy()))
        .await
        .unwrap();
    assert_eq!(again, diagnosis_core::store::RetentionReport::default());
}

/// One hour's keys come unsorted and the store sorts them whole; for a longer window Postgres
/// sorts only by start interval and the store sorts each run of equal start intervals by the
/// rest of DESIGN §4.1's order. Whatever the metadata, either stream must come out exactly as a
/// full sort would put it, with every key of the window and no other.
#[tokio::test]
async fn publishable_keys_stream_in_canonical_order() {
    use diagnosis_tests::dataset::{Rng, copy_keys, population};
    use futures::TryStreamExt as _;

    let db = TestDatabase::new().await;
    let store = store_for(&db);
    let day = hour_number(test_start_time().timestamp()) / 24 - 1;
    let hour = day * 24 + 5;
    let mut rng = Rng::new(99);
    let mut keys = population(&mut rng, day, 3_000);
    // The edges of every field, in several start intervals.
    for (i, (period, risk, onset)) in [
        (1, 0, Some(-14)),
        (144, 8, Some(14)),
        (144, 0, None),
        (72, 3, Some(0)),
        (143, 8, Some(-1)),
    ]
    .into_iter()
    .enumerate()
    {
        for days_before in [1, 7, 14] {
            keys.push(DiagnosisKey {
                key_data: rng.key_data(),
                rolling_start_interval_number: i32::try_from((day - days_before) * 144).unwrap(),
                rolling_period: period,
                transmission_risk_level: risk,
                report_type: if i % 2 == 0 {
                    ReportType::ConfirmedTest
                } else {
                    ReportType::SelfReport
                },
                days_since_onset: onset,
            });
        }
    }
    let client = db.client().await;
    copy_keys(&client, "302", keys.iter().cloned().map(|k| (hour, k)))
        .await
        .unwrap();
    // A neighbouring hour's keys stay out of the one-hour window.
    let other = population(&mut rng, day, 50);
    copy_keys(&client, "302", other.iter().cloned().map(|k| (hour + 1, k)))
        .await
        .unwrap();

    let region = Region::parse("302").unwrap();
    let streamed: Vec<DiagnosisKey> = store
        .stream_publishable_keys(&region, HourNumber::new(hour), HourNumber::new(hour), None)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    // Only keys still relevant at the end of their publish hour belong to it (DESIGN §2).
    keys.retain(|k| k.expiry_unix() > (hour + 1) * 3600 - 14 * 86_400);
    assert!(keys.len() > 3_000, "{}", keys.len());
    keys.sort_unstable_by(DiagnosisKey::canonical_cmp);
    assert_eq!(streamed.len(), keys.len());
    assert!(streamed == keys, "the stream is not the canonical order");

    // Both hours: sorted by start interval in Postgres, each run here.
    let two_hours: Vec<DiagnosisKey> = store
        .stream_publishable_keys(
            &region,
            HourNumber::new(hour),
            HourNumber::new(hour + 1),
            None,
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    keys.extend(
        other
            .into_iter()
            .filter(|k| k.expiry_unix() > (hour + 2) * 3600 - 14 * 86_400),
    );
    keys.sort_unstable_by(DiagnosisKey::canonical_cmp);
    assert!(two_hours.len() > streamed.len());
    assert!(
        two_hours == keys,
        "the two-hour stream is not the canonical order"
    );
}

/// The backends of the sessions a store opened under `application_name`.
async fn backends(db: &TestDatabase, application_name: &str) -> Vec<i32> {
    db.client()
        .await
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
            &[&application_name],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Waits until the backends of `application_name` are `expected` (a closed session's backend
/// takes a moment to leave `pg_stat_activity`).
async fn await_backends(db: &TestDatabase, application_name: &str, expected: usize) -> Vec<i32> {
    for _ in 0..200 {
        let pids = backends(db, application_name).await;
        if pids.len() == expected {
            return pids;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!(
        "{application_name}: {:?}, expected {expected} backends",
        backends(db, application_name).await
    );
}

/// An export read (a `COPY` on a session of its own) that ran to its end leaves its session
/// for the next read; a read dropped half-way closes its session, whose connection is in the
/// middle of a `COPY`; a kept session the server has closed since is replaced, not used; and
/// `close_idle_long_sessions` leaves no session open between passes.
#[tokio::test]
async fn export_sessions_are_reused_only_after_a_whole_copy() {
    use diagnosis_tests::dataset::{Rng, copy_keys, population};
    use futures::TryStreamExt as _;

    let db = TestDatabase::new().await;
    let app = "export-session-test";
    let store = Store::connect(&StoreConfig {
        database_url: db.url.clone(),
        pool_size: 2,
        statement_timeout: std::time::Duration::from_secs(30),
        connect_timeout: std::time::Duration::from_secs(5),
        application_name: app,
    })
    .unwrap();
    let day = hour_number(test_start_time().timestamp()) / 24 - 1;
    let hour = day * 24 + 5;
    let keys = population(&mut Rng::new(7), day, 2_000);
    copy_keys(
        &**db.client().await,
        "302",
        keys.into_iter().map(|k| (hour, k)),
    )
    .await
    .unwrap();
    let region = Region::parse("302").unwrap();
    let read_all = || async {
        let keys: Vec<DiagnosisKey> = store
            .stream_publishable_keys(&region, HourNumber::new(hour), HourNumber::new(hour), None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(keys.len() > 1_000, "{}", keys.len());
    };

    read_all().await;
    let first = await_backends(&db, app, 1).await;
    read_all().await;
    assert_eq!(
        await_backends(&db, app, 1).await,
        first,
        "the session was not reused"
    );

    // The server ends the kept session: the next read opens another.
    db.client()
        .await
        .execute("SELECT pg_terminate_backend($1)", &[&first[0]])
        .await
        .unwrap();
    await_backends(&db, app, 0).await;
    read_all().await;
    let second = await_backends(&db, app, 1).await;
    assert_ne!(second, first);

    // A read dropped after its first key takes the kept session and closes it. (A one-hour
    // read sorts its whole COPY before its first key, so this one reads two hours, which
    // Postgres sorts by start interval and the store yields run by run.)
    let mut half = store
        .stream_publishable_keys(
            &region,
            HourNumber::new(hour),
            HourNumber::new(hour + 1),
            None,
        )
        .await
        .unwrap();
    assert!(half.try_next().await.unwrap().is_some());
    drop(half);
    await_backends(&db, app, 0).await;

    read_all().await;
    await_backends(&db, app, 1).await;
    store.close_idle_long_sessions();
    await_backends(&db, app, 0).await;
}
