//! Settings at their extremes, set on the real binaries as an operator sets them: a value either
//! works or stops the binary at start naming the variable, before it serves or runs a pass
//! (DESIGN §6: every value a variable accepts works).

use diagnosis_tests::binaries::{command, exporter_env, finish, submit_env, submit_serves, text};
use diagnosis_tests::pg::TestDatabase;

/// The rows of `exporter_fence`: a pass that took the exporter lock left one.
async fn passes_locked(db: &TestDatabase) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM exporter_fence", &[])
        .await
        .unwrap()
        .get(0)
}

/// `env` with `name` set to `value` (replaced if present).
fn with(
    mut env: Vec<(&'static str, String)>,
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    env.retain(|(n, _)| *n != name);
    env.push((name, value.to_owned()));
    env
}

/// A statement timeout of a few milliseconds cannot work: sessions may idle inside a transaction
/// for only twice as long, so the service's own work between two statements ends the
/// transaction, and statements themselves are cut. Both binaries refuse it at start; the
/// shortest value accepted serves codes and runs a whole pass.
#[tokio::test]
async fn a_statement_timeout_too_short_to_work_is_refused_and_the_shortest_accepted_one_works() {
    let db = TestDatabase::new().await;
    let expected = "DATABASE_STATEMENT_TIMEOUT_MS: must be a whole number of milliseconds from \
                    1000 to 3600000";

    let submit = finish(command(
        "diagnosis-submit",
        &[],
        &with(
            submit_env(db.url.clone()),
            "DATABASE_STATEMENT_TIMEOUT_MS",
            "1",
        ),
    ))
    .await;
    let stderr = text(&submit.stderr);
    assert!(
        !submit.status.success(),
        "diagnosis-submit accepted 1 ms: {stderr}"
    );
    assert!(stderr.contains(expected), "{stderr}");

    let exporter = with(
        exporter_env(db.url.clone()).await,
        "EXPORT_GRACE_SECONDS",
        "2",
    );
    let refused = finish(command(
        "diagnosis-exporter",
        &["run-once"],
        &with(exporter.clone(), "DATABASE_STATEMENT_TIMEOUT_MS", "999"),
    ))
    .await;
    let stderr = text(&refused.stderr);
    assert!(
        !refused.status.success(),
        "diagnosis-exporter accepted 999 ms: {stderr}"
    );
    assert!(stderr.contains(expected), "{stderr}");
    assert_eq!(passes_locked(&db).await, 0, "a refused exporter ran a pass");

    submit_serves(&with(
        submit_env(db.url.clone()),
        "DATABASE_STATEMENT_TIMEOUT_MS",
        "1000",
    ))
    .await;
    let pass = finish(command(
        "diagnosis-exporter",
        &["run-once"],
        &with(exporter, "DATABASE_STATEMENT_TIMEOUT_MS", "1000"),
    ))
    .await;
    assert!(
        pass.status.success(),
        "a pass at 1000 ms failed: {}{}",
        text(&pass.stdout),
        text(&pass.stderr)
    );
}

/// A schedule whose date never comes (31 February) would let the scheduled exporter run its
/// first pass and then idle for ever, looking healthy: it is refused at start, before any pass.
#[tokio::test]
async fn a_schedule_that_never_ticks_is_refused_before_any_pass() {
    let db = TestDatabase::new().await;
    let env = with(
        exporter_env(db.url.clone()).await,
        "EXPORT_SCHEDULE",
        "0 0 0 31 2 *",
    );
    let run = finish(command("diagnosis-exporter", &[], &env)).await;
    let stderr = text(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains("EXPORT_SCHEDULE: \"0 0 0 31 2 *\" has no tick after"),
        "{stderr}"
    );
    assert_eq!(passes_locked(&db).await, 0, "a refused exporter ran a pass");
}

/// A schedule that is not a cron expression is configuration, like `BUCKET_URL`: it is refused
/// before the database is touched. Otherwise a release rolled out with a mistyped schedule
/// migrates the database forward and only then stops, and the release it is rolled back to
/// runs on a schema it does not know (DESIGN §5, §6).
#[tokio::test]
async fn a_malformed_schedule_is_refused_before_the_database_is_migrated() {
    let db = TestDatabase::empty().await;
    let env = with(
        exporter_env(db.url.clone()).await,
        "EXPORT_SCHEDULE",
        "*/5 * * * *",
    );
    let run = finish(command("diagnosis-exporter", &[], &env)).await;
    let stderr = text(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(
        stderr.contains("EXPORT_SCHEDULE: invalid six-field cron expression"),
        "{stderr}"
    );
    let migrated = db
        .count("SELECT count(*) FROM pg_tables WHERE tablename = 'refinery_schema_history'")
        .await;
    assert_eq!(migrated, 0, "a refused exporter migrated the database");
}
