//! The test harness itself: every test gets its own migrated database, and it goes away again.

use diagnosis_tests::pg::TestDatabase;

async fn table_exists(db: &TestDatabase, table: &str) -> bool {
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("public.{table}")],
        )
        .await
        .expect("to_regclass");
    row.get(0)
}

#[tokio::test]
async fn each_test_gets_its_own_migrated_database() {
    let (first, second) = tokio::join!(TestDatabase::new(), TestDatabase::new());
    assert_ne!(first.name, second.name);
    assert_ne!(first.url, second.url);
    for db in [&first, &second] {
        for table in [
            "encryption_keys",
            "diagnosis_keys",
            "failed_key_claim_attempts",
        ] {
            assert!(
                table_exists(db, table).await,
                "{table} missing in {}",
                db.name
            );
        }
        let current: String = db
            .client()
            .await
            .query_one("SELECT current_database()::text", &[])
            .await
            .expect("current_database()")
            .get(0);
        assert_eq!(current, db.name);
    }

    // A row written into one database is not seen by the other, and shows in its snapshot.
    let before = second.snapshot().await;
    first
        .client()
        .await
        .execute(
            "INSERT INTO failed_key_claim_attempts (identifier, failures, last_failure) \
             VALUES ('harness', 1, now())",
            &[],
        )
        .await
        .expect("insert into the first database");
    assert_ne!(first.snapshot().await, before);
    assert_eq!(second.snapshot().await, before);
}

#[tokio::test]
async fn the_snapshot_is_deterministic_and_skips_the_migration_history() {
    let db = TestDatabase::new().await;
    let snapshot = db.snapshot().await;
    assert_eq!(snapshot, db.snapshot().await);
    assert!(snapshot.contains("encryption_keys (0 rows)"), "{snapshot}");
    assert!(!snapshot.contains("refinery_schema_history"), "{snapshot}");
}

#[tokio::test]
async fn a_dropped_test_database_is_removed() {
    let db = TestDatabase::new().await;
    let name = db.name.clone();
    drop(db);
    let other = TestDatabase::new().await;
    let remaining: i64 = other
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .expect("count databases")
        .get(0);
    assert_eq!(remaining, 0, "{name} still exists");
}
