//! Rolling releases and rollbacks (DESIGN §5): both binaries start and work on a schema a newer
//! release migrated, as the owner and as their least-privilege roles; a diverging history is
//! refused; replicas starting together migrate once, the later ones waiting however long the
//! first takes; a migration longer than the statement timeout applies.

use std::sync::Arc;
use std::time::Duration;

use diagnosis_core::store::{
    MIGRATION_LOCK_ID, Migration, Store, StoreConfig, StoreError, embedded_migrations,
};
use diagnosis_tests::binaries::{command, exporter_env, finish, submit_env, submit_serves, text};
use diagnosis_tests::pg::TestDatabase;
use diagnosis_tests::roles::{EXPORTER_ROLE, RoleUser, SUBMIT_ROLE};
use diagnosis_tests::wait::eventually;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A short statement timeout (the shortest a binary accepts), so that a migration or a wait that
/// outlasts it (and its response grace of 2 s) is easy to arrange.
const SHORT_STATEMENT_TIMEOUT: Duration = Duration::from_millis(1_000);

/// How long the slow migration sleeps: longer than the short statement timeout and the 2 s the
/// store allows a silent server beyond it.
const SLOW_SECONDS: u32 = 4;

/// A store as the binaries build theirs, on `url`, with the short statement timeout.
fn store_with_short_timeout(url: &str) -> Store {
    Store::connect(&StoreConfig {
        database_url: url.to_owned(),
        pool_size: 2,
        statement_timeout: SHORT_STATEMENT_TIMEOUT,
        connect_timeout: Duration::from_secs(5),
        application_name: "diagnosis-migration-tests",
    })
    .unwrap()
}

/// The embedded migrations and one of a newer release.
fn with_newer(name: &str, sql: &str) -> Vec<Migration> {
    let mut migrations = embedded_migrations();
    migrations.push(Migration::unapplied(name, sql).unwrap());
    migrations
}

/// The embedded migrations and a newer one that takes [`SLOW_SECONDS`].
fn with_slow_migration() -> Vec<Migration> {
    with_newer(
        "V99__slow",
        &format!("SELECT pg_sleep({SLOW_SECONDS}); CREATE TABLE slow_release (id integer)"),
    )
}

async fn history_rows(db: &TestDatabase, version: i32) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM refinery_schema_history WHERE version = $1",
            &[&version],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until a session on `db` waits for the migration lock.
async fn until_a_session_waits_for_the_migration_lock(db: &TestDatabase) {
    let client = db.client().await;
    eventually("a session waiting for the migration lock", async || {
        client
            .query_one(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                  WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = $1
                    AND ((l.classid::bigint << 32) | l.objid::bigint) = $2",
                &[&db.name, &MIGRATION_LOCK_ID],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
    })
    .await;
}

/// Whether a binary's JSON log has a warning naming the newer release's migration.
fn warns_of_the_newer_version(log: &str) -> bool {
    log.lines()
        .any(|line| line.contains("\"level\":\"WARN\"") && line.contains("V99__future"))
}

#[tokio::test]
async fn both_binaries_start_and_work_on_a_schema_a_newer_release_migrated() {
    let db = Arc::new(TestDatabase::new().await);
    Store::from_pool(db.pool().clone())
        .migrate_with(&with_newer(
            "V99__future",
            "CREATE TABLE future_release (id integer)",
        ))
        .await
        .unwrap();
    assert_eq!(history_rows(&db, 99).await, 1);
    let submit_user = RoleUser::create(&db, SUBMIT_ROLE).await;
    let exporter_user = RoleUser::create(&db, EXPORTER_ROLE).await;

    for (who, url) in [
        ("the owner", db.url.clone()),
        ("the submit role", submit_user.url),
    ] {
        let log = submit_serves(&submit_env(url)).await;
        assert!(warns_of_the_newer_version(&log), "{who}: {log}");
    }
    for (who, url) in [
        ("the owner", db.url.clone()),
        ("the exporter role", exporter_user.url),
    ] {
        let run = finish(command(
            "diagnosis-exporter",
            &["run-once"],
            &exporter_env(url).await,
        ))
        .await;
        let stderr = text(&run.stderr);
        assert!(run.status.success(), "run-once as {who} failed: {stderr}");
        assert!(warns_of_the_newer_version(&stderr), "{who}: {stderr}");
    }
    assert_eq!(history_rows(&db, 99).await, 1, "the history was changed");
}

#[tokio::test]
async fn a_history_that_diverges_is_refused_by_the_owner_and_the_roles() {
    let db = TestDatabase::new().await;
    db.client()
        .await
        .batch_execute("UPDATE refinery_schema_history SET checksum = '1' WHERE version = 3")
        .await
        .unwrap();
    let before = db.snapshot().await;
    let submit_user = RoleUser::create(&db, SUBMIT_ROLE).await;
    let exporter_user = RoleUser::create(&db, EXPORTER_ROLE).await;
    for (who, store) in [
        ("the owner", store_with_short_timeout(&db.url)),
        ("the submit role", submit_user.store()),
        ("the exporter role", exporter_user.store()),
    ] {
        let error = store
            .migrate()
            .await
            .expect_err("a diverging history was accepted");
        assert!(
            matches!(error, StoreError::Migration(_)),
            "{who}: {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("the migration history diverges from this release's: version 3 is applied as V3__client_identity (checksum 1)"),
            "{who}: {message}"
        );
    }
    let run = finish(command(
        "diagnosis-exporter",
        &["migrate"],
        &[("DATABASE_URL", db.url.clone())],
    ))
    .await;
    let stderr = text(&run.stderr);
    assert!(
        !run.status.success(),
        "migrate accepted the history: {stderr}"
    );
    assert!(stderr.contains("diverges"), "{stderr}");
    assert_eq!(
        db.snapshot().await,
        before,
        "a refused history changed the data"
    );
}

#[tokio::test]
async fn replicas_starting_together_migrate_once_and_the_later_one_waits_for_the_first() {
    let db = TestDatabase::new().await;
    let migrations = with_slow_migration();
    let first = {
        let (store, migrations) = (store_with_short_timeout(&db.url), migrations.clone());
        tokio::spawn(async move { store.migrate_with(&migrations).await })
    };
    // The second starts once the first holds the lock and sleeps in its migration.
    let client = db.client().await;
    eventually("the first replica migrating", async || {
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%'",
                &[&db.name],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
    })
    .await;
    let second = {
        let store = store_with_short_timeout(&db.url);
        tokio::spawn(async move { store.migrate_with(&migrations).await })
    };
    until_a_session_waits_for_the_migration_lock(&db).await;
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(history_rows(&db, 99).await, 1);
    client
        .batch_execute("SELECT count(*) FROM slow_release")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_migration_longer_than_the_statement_timeout_applies() {
    let db = TestDatabase::new().await;
    let store = store_with_short_timeout(&db.url);
    store
        .migrate_with(&with_slow_migration())
        .await
        .unwrap_or_else(|e| panic!("the slow migration failed: {e}"));
    assert_eq!(history_rows(&db, 99).await, 1);
    // The migrations ran on a session of their own: the pooled ones keep their timeout.
    let timeout: String = store
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, "1s");
}

#[tokio::test]
async fn a_binary_waits_for_another_process_migrating_however_long_it_takes() {
    let db = TestDatabase::new().await;
    let holder = db.client().await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_ID])
        .await
        .unwrap();
    let mut child = command(
        "diagnosis-exporter",
        &["migrate"],
        &[
            ("DATABASE_URL", db.url.clone()),
            (
                "DATABASE_STATEMENT_TIMEOUT_MS",
                SHORT_STATEMENT_TIMEOUT.as_millis().to_string(),
            ),
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let said_so = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("another process is applying migrations") {
                return line;
            }
        }
        panic!("diagnosis-exporter ended without saying it waits");
    })
    .await
    .expect("diagnosis-exporter did not say it waits within 60 s");
    assert!(said_so.contains("\"level\":\"INFO\""), "{said_so}");
    until_a_session_waits_for_the_migration_lock(&db).await;
    // Held past the statement timeout and the 2 s a silent server is allowed beyond it: the
    // waiting binary must still be there, waiting.
    tokio::time::sleep(Duration::from_secs(SLOW_SECONDS.into())).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "diagnosis-exporter gave up waiting"
    );
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_ID])
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("diagnosis-exporter did not finish once the lock was free")
        .unwrap();
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(
        status.success(),
        "diagnosis-exporter migrate failed: {rest}"
    );
}
