//! Least privilege (DESIGN §7): each binary runs as its own database role, which holds
//! exactly what its queries need. The submit service never reaches the publication ledger or
//! the exporter's secrets; the exporter never reads a server private key (nor a code or an
//! app key) or the submit service's secrets; neither can create, alter or drop a table.
//! Migrations run as the owner, and a binary started as its role finds the schema current.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{Duration, Utc};
use diagnosis_core::time::{Clock, ManualClock};
use diagnosis_tests::app::TestApp;
use diagnosis_tests::binaries::text;
use diagnosis_tests::dataset::keys_in_file;
use diagnosis_tests::pg::TestDatabase;
use diagnosis_tests::process::run_exporter;
use diagnosis_tests::roles::{EXPORTER_ROLE, RoleUser, SUBMIT_ROLE};
use diagnosis_tests::simulator::{app_keys, upload_of};
use tokio_postgres::error::SqlState;

/// Runs `statement` and expects PostgreSQL to refuse it for lack of privilege (not for any
/// other reason, such as a missing table).
async fn assert_refused(client: &tokio_postgres::Client, who: &str, statement: &str) {
    match client.batch_execute(statement).await {
        Ok(()) => panic!("{who} was allowed to run: {statement}"),
        Err(err) => assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{who}: {statement}: {err}"
        ),
    }
}

#[tokio::test]
async fn each_binary_runs_end_to_end_as_its_own_role() {
    let db = Arc::new(TestDatabase::new().await);
    let submit = RoleUser::create(&db, SUBMIT_ROLE).await;
    let exporter_user = RoleUser::create(&db, EXPORTER_ROLE).await;

    // The submit service as its binary starts: connect, migrate (nothing to do on a current
    // schema, which the role may read but not change), serve. Its clock runs two days behind,
    // so every hour it writes into has closed for the exporter below, which runs on real time.
    let store = submit.store();
    store
        .migrate()
        .await
        .unwrap_or_else(|err| panic!("the submit role could not start: {err}"));
    let clock = ManualClock::new(Utc::now() - Duration::days(2));
    let app = TestApp::spawn_on_store(Arc::clone(&db), store, clock).await;

    // A code issued and claimed, an upload, a failed claim, a regenerated code, and a code left
    // unclaimed for retention to purge.
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let keys = app_keys(now, 3);
    let reply = phone.upload(&upload_of(keys.clone(), now)).await.unwrap();
    assert_eq!(reply.status, 200, "upload as the submit role: {reply:?}");
    let mut stranger = app.phone();
    let wrong = stranger.claim("AAA-AAA-AAAA").await.unwrap();
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let hash_id = "a".repeat(128);
    for _ in 0..2 {
        let reply = app.portal().request_code(Some(&hash_id)).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // The events API reads the aggregate tables as the same role.
    let day = app.clock.now().date_naive();
    let events = app.store.events_on(day).await.unwrap();
    assert!(
        events.iter().any(|e| e.identifier == "OTKRegenerated"),
        "{events:?}"
    );
    assert_eq!(app.store.upload_counts_on(day).await.unwrap().len(), 1);
    assert_eq!(app.store.otk_durations_on(day).await.unwrap().len(), 1);
    // A claim repeated, then its unused keypair given back to the portal (DESIGN §3.1, §3.2).
    let recovered = "b".repeat(128);
    let reply = app.portal().request_code(Some(&recovered)).await.unwrap();
    let code = reply.text().trim_end().to_owned();
    let mut lost = app.phone();
    for attempt in ["claim", "repeated claim"] {
        let reply = lost.claim(&code).await.unwrap();
        assert_eq!(reply.status, 200, "{attempt} as the submit role: {reply:?}");
    }
    app.clock.advance(Duration::minutes(11));
    let reply = app.portal().request_code(Some(&recovered)).await.unwrap();
    assert_eq!(
        reply.status,
        200,
        "recovery as the submit role: {}",
        reply.text()
    );
    app.stop().await;
    assert_eq!(
        db.count("SELECT count(*) FROM diagnosis_keys").await,
        3,
        "the upload was not stored"
    );

    // The exporter binary as its role: migrations checked at start, then with --no-migrate;
    // padding on, so it also creates and reads its padding secret.
    let dir = std::env::temp_dir().join(format!("diagnosis-roles-{:016x}", rand::random::<u64>()));
    let bucket = dir.join("bucket");
    let env = vec![
        ("DATABASE_URL", exporter_user.url.clone()),
        ("BUCKET_URL", format!("file://{}", bucket.display())),
        (
            "SIGNING_KEY_FILE",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../exporter/fixtures/test-signing-key.pem"
            )
            .to_owned(),
        ),
        (
            "EXPOSURE_CONFIG_DIR",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../infra/exposure-configuration"
            )
            .to_owned(),
        ),
        ("PAD_MIN_KEYS", "5".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
    ];
    for args in [
        &["migrate"][..],
        &["run-once"],
        &["run-once", "--no-migrate"],
    ] {
        let run = run_exporter(args, &env);
        assert!(
            run.status.success(),
            "diagnosis-exporter {} as the exporter role failed: {}",
            args.join(" "),
            text(&run.stderr)
        );
    }

    let index = std::fs::read_to_string(bucket.join("CA/index.txt")).unwrap();
    let mut published = BTreeSet::new();
    for object in index.lines() {
        let zip = std::fs::read(bucket.join(object)).unwrap();
        for key in keys_in_file(&zip).unwrap() {
            published.insert(key.key_data.as_bytes().to_vec());
        }
    }
    for key in &keys {
        assert!(
            published.contains(key.key_data()),
            "an uploaded key was not published"
        );
    }
    // Retention ran as the exporter role: the codes left unclaimed for two days (the one
    // regenerated and the one issued in place of the recovered keypair) and the failed claim
    // are gone, and the purge was counted.
    assert_eq!(
        db.count("SELECT count(*) FROM encryption_keys WHERE one_time_code IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM failed_key_claim_attempts")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT sum(count)::bigint FROM events WHERE identifier = 'OTKUnclaimed'")
            .await,
        2
    );
    assert!(
        db.count("SELECT count(*) FROM exports").await > 0,
        "the ledger is empty"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn each_role_is_refused_what_it_must_not_touch() {
    let db = TestDatabase::new().await;
    let submit = RoleUser::create(&db, SUBMIT_ROLE).await.connect().await;
    let exporter = RoleUser::create(&db, EXPORTER_ROLE).await.connect().await;

    // What each role needs works on the same connection, so a refusal below is a refusal.
    submit
        .batch_execute(
            "SELECT server_private_key, claimed_code_hash FROM encryption_keys; \
             SELECT * FROM submit_secrets; SELECT * FROM submit_settings",
        )
        .await
        .unwrap();
    exporter
        .batch_execute(
            "SELECT created, claimed, remaining_keys FROM encryption_keys; \
             SELECT * FROM exports; SELECT * FROM exporter_secrets; SELECT * FROM diagnosis_keys; \
             SELECT * FROM submit_settings",
        )
        .await
        .unwrap();

    for statement in [
        "SELECT * FROM exports",
        "SELECT * FROM exporter_secrets",
        "INSERT INTO exports (object_key, kind, region, start_ts, end_ts, part, key_count, bytes, \
         sha256, published_at) VALUES ('x', 'hourly', 'CA', 0, 3600, 1, 0, 0, '', now())",
        "UPDATE exports SET deleted_at = now()",
        "DELETE FROM exporter_secrets",
        // Rows nobody refreshes are the exporter's to delete.
        "DELETE FROM submit_settings",
        // Uploads only insert keys: reading them is the exporter's job.
        "SELECT * FROM diagnosis_keys",
        "DELETE FROM diagnosis_keys",
        "CREATE TABLE intruder (x integer)",
        "DROP TABLE diagnosis_keys",
        "ALTER TABLE encryption_keys ADD COLUMN intruder integer",
        "TRUNCATE encryption_keys",
        "CREATE INDEX intruder ON encryption_keys (created)",
        "DELETE FROM refinery_schema_history",
    ] {
        assert_refused(&submit, "the submit role", statement).await;
    }

    for statement in [
        "SELECT server_private_key FROM encryption_keys",
        "SELECT * FROM encryption_keys",
        "SELECT one_time_code FROM encryption_keys",
        "SELECT app_public_key FROM encryption_keys",
        // Nor the keyed hashes of claimed codes (sql/V6__claim_recovery.sql).
        "SELECT claimed_code_hash FROM encryption_keys",
        "SELECT count(*) FROM encryption_keys WHERE claimed_code_hash IS NOT NULL",
        "UPDATE encryption_keys SET claimed_code_hash = NULL",
        "SELECT count(*) FROM encryption_keys WHERE server_private_key IS NOT NULL",
        "DELETE FROM encryption_keys RETURNING server_private_key",
        "UPDATE encryption_keys SET remaining_keys = 0",
        "INSERT INTO encryption_keys (region, originator, server_public_key, server_private_key, \
         remaining_keys, created) VALUES ('302', 'ON', '\\x00', '\\x00', 1, now())",
        "SELECT * FROM submit_secrets",
        "INSERT INTO submit_secrets (name, secret, created) VALUES ('x', '\\x00', now())",
        // The submit replicas' settings are theirs to write.
        "UPDATE submit_settings SET encryption_key_validity_days = 1",
        "INSERT INTO submit_settings (instance_id, one_time_code_expiry_minutes, \
         encryption_key_validity_days, claim_key_ban_duration_minutes, statement_timeout_ms, \
         started, refreshed) VALUES ('x', 1, 1, 1, 1, now(), now())",
        "SELECT identifier FROM failed_key_claim_attempts",
        "INSERT INTO diagnosis_keys (key_data) VALUES ('\\x00')",
        "SELECT * FROM tek_upload_count",
        "SELECT * FROM otk_life_duration",
        "CREATE TABLE intruder (x integer)",
        "DROP TABLE exports",
        "ALTER TABLE exports ADD COLUMN intruder integer",
        "TRUNCATE diagnosis_keys",
        "DELETE FROM exports",
        "DELETE FROM refinery_schema_history",
    ] {
        assert_refused(&exporter, "the exporter role", statement).await;
    }
}

/// Every privilege granted to the two roles, table by table (columns in brackets), for every
/// table of the schema: a table a migration adds shows up here and needs a decision.
async fn privileges(db: &TestDatabase) -> String {
    let rows = db
        .client()
        .await
        .query(
            "WITH grants AS (
                 SELECT c.relname::text AS tab, r.rolname::text AS role, a.privilege_type AS privilege
                   FROM pg_class c, aclexplode(c.relacl) a, pg_roles r
                  WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S')
                    AND r.oid = a.grantee AND r.rolname IN ($1, $2)
                 UNION ALL
                 SELECT c.relname::text, r.rolname::text,
                        a.privilege_type || '(' || string_agg(att.attname::text, ',' ORDER BY att.attname) || ')'
                   FROM pg_class c
                   JOIN pg_attribute att ON att.attrelid = c.oid AND att.attacl IS NOT NULL
                   CROSS JOIN LATERAL aclexplode(att.attacl) a
                   JOIN pg_roles r ON r.oid = a.grantee AND r.rolname IN ($1, $2)
                  WHERE c.relnamespace = 'public'::regnamespace
                  GROUP BY 1, 2, a.privilege_type
             )
             SELECT c.relname::text || ' ' || role.name || ': ' ||
                    coalesce((SELECT string_agg(privilege, ' ' ORDER BY privilege) FROM grants
                               WHERE tab = c.relname AND grants.role = role.name), '-')
               FROM pg_class c CROSS JOIN (VALUES ($1), ($2)) AS role(name)
              WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S')
              ORDER BY c.relname, role.name",
            &[&SUBMIT_ROLE, &EXPORTER_ROLE],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.get::<_, String>(0) + "\n")
        .collect()
}

/// The grants of `sql/V4__roles.sql` and of the migrations after it. A change here is a change of the security boundary.
/// The submit role's grant on the whole of `encryption_keys` covers `claimed_code_hash`
/// (V6); the exporter's column grants leave it out.
const EXPECTED_PRIVILEGES: &str = "\
diagnosis_keys diagnosis_exporter: DELETE SELECT
diagnosis_keys diagnosis_submit: INSERT SELECT(key_data)
encryption_keys diagnosis_exporter: DELETE SELECT(claimed,created,originator,remaining_keys,uploaded)
encryption_keys diagnosis_submit: DELETE INSERT SELECT UPDATE
encryption_keys_id_seq diagnosis_exporter: -
encryption_keys_id_seq diagnosis_submit: -
event_log diagnosis_exporter: -
event_log diagnosis_submit: DELETE INSERT SELECT
events diagnosis_exporter: INSERT SELECT UPDATE
events diagnosis_submit: INSERT SELECT UPDATE
exporter_fence diagnosis_exporter: INSERT SELECT UPDATE
exporter_fence diagnosis_submit: -
exporter_secrets diagnosis_exporter: INSERT SELECT
exporter_secrets diagnosis_submit: -
exports diagnosis_exporter: INSERT SELECT UPDATE
exports diagnosis_submit: -
failed_key_claim_attempts diagnosis_exporter: DELETE SELECT(last_failure)
failed_key_claim_attempts diagnosis_submit: DELETE INSERT SELECT UPDATE
otk_life_duration diagnosis_exporter: -
otk_life_duration diagnosis_submit: INSERT SELECT UPDATE
otk_life_duration_log diagnosis_exporter: -
otk_life_duration_log diagnosis_submit: DELETE INSERT SELECT
publication_seal diagnosis_exporter: INSERT SELECT UPDATE
publication_seal diagnosis_submit: SELECT
refinery_schema_history diagnosis_exporter: SELECT
refinery_schema_history diagnosis_submit: SELECT
submit_secrets diagnosis_exporter: -
submit_secrets diagnosis_submit: INSERT SELECT
submit_settings diagnosis_exporter: DELETE SELECT
submit_settings diagnosis_submit: INSERT SELECT UPDATE
tek_upload_count diagnosis_exporter: -
tek_upload_count diagnosis_submit: INSERT SELECT
tek_upload_count_id_seq diagnosis_exporter: -
tek_upload_count_id_seq diagnosis_submit: -
";

#[tokio::test]
async fn the_roles_hold_exactly_the_granted_privileges() {
    let db = TestDatabase::new().await;
    assert_eq!(privileges(&db).await, EXPECTED_PRIVILEGES);
    // Group roles only: nobody logs in as them directly.
    let login: Vec<bool> = db
        .client()
        .await
        .query(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname IN ($1, $2)",
            &[&SUBMIT_ROLE, &EXPORTER_ROLE],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(login, [false, false]);
}

#[tokio::test]
async fn the_migrations_run_again_in_another_database_of_the_cluster() {
    // The roles exist already: the template of this test run created them.
    let template = TestDatabase::new().await;
    let db = TestDatabase::empty().await;
    // As PostgreSQL 14 and older did: everyone may create tables in schema public.
    db.client()
        .await
        .batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        .await
        .unwrap();
    let store = diagnosis_core::store::Store::from_pool(db.pool().clone());
    store.migrate().await.unwrap();
    assert_eq!(privileges(&db).await, EXPECTED_PRIVILEGES);
    let submit = RoleUser::create(&db, SUBMIT_ROLE).await.connect().await;
    assert_refused(
        &submit,
        "the submit role",
        "CREATE TABLE intruder (x integer)",
    )
    .await;
    // Migrating again is a no-op.
    store.migrate().await.unwrap();
    assert_eq!(privileges(&db).await, EXPECTED_PRIVILEGES);
    drop(template);
}

#[tokio::test]
async fn a_runtime_role_cannot_migrate_an_empty_database() {
    let template = TestDatabase::new().await;
    let db = TestDatabase::empty().await;
    for group in [SUBMIT_ROLE, EXPORTER_ROLE] {
        let user = RoleUser::create(&db, group).await;
        let refused = user.store().migrate().await;
        let error = refused
            .expect_err("a runtime role created the schema")
            .to_string();
        assert!(
            error.contains("permission denied for schema public (42501)"),
            "{group}: {error}"
        );
    }
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace")
            .await,
        0,
        "a runtime role left something behind"
    );
    drop(template);
}
