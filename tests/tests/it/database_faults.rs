//! An unreachable database makes requests fail within seconds and never hang (DESIGN §6): the
//! real submit service, its store built by `Store::connect` as the binary builds it, reaching
//! real PostgreSQL through a proxy that turns into a black hole and back.

use std::sync::Arc;
use std::time::Duration;

use diagnosis_core::store::{Store, StoreConfig};
use diagnosis_tests::app::TestApp;
use diagnosis_tests::black_hole::{BlackHoleProxy, upstream_of};
use diagnosis_tests::pg::TestDatabase;
use tokio::time::Instant;

/// The contract: a request against an unreachable database fails within this (DESIGN §6).
const REQUEST_BOUND: Duration = Duration::from_secs(10);

fn store_through(proxy: &BlackHoleProxy, db: &TestDatabase) -> Store {
    Store::connect(&StoreConfig {
        database_url: proxy.url_for(&db.url),
        pool_size: 4,
        statement_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        application_name: "diagnosis-fault-tests",
    })
    .unwrap()
}

/// The status of `POST /new-key-claim` and `POST /claim-key`, each answered within
/// [`REQUEST_BOUND`] (the test fails otherwise).
async fn statuses(app: &TestApp) -> (u16, u16) {
    let started = Instant::now();
    let issue = tokio::time::timeout(REQUEST_BOUND, app.portal().request_code(None))
        .await
        .unwrap_or_else(|_| panic!("POST /new-key-claim had no answer within {REQUEST_BOUND:?}"))
        .unwrap();
    let issue_took = started.elapsed();
    assert!(issue_took < REQUEST_BOUND, "{issue_took:?}");

    let mut phone = app.phone();
    let started = Instant::now();
    let claim = tokio::time::timeout(REQUEST_BOUND, phone.claim("AEF-245-HJKL"))
        .await
        .unwrap_or_else(|_| panic!("POST /claim-key had no answer within {REQUEST_BOUND:?}"))
        .unwrap();
    let claim_took = started.elapsed();
    assert!(claim_took < REQUEST_BOUND, "{claim_took:?}");
    (issue.status.as_u16(), claim.status.as_u16())
}

#[tokio::test]
async fn a_black_holed_database_fails_requests_fast_and_the_service_recovers() {
    let db = Arc::new(TestDatabase::new().await);
    let proxy = BlackHoleProxy::start(upstream_of(&db.url)).await;
    let store = store_through(&proxy, &db);
    store.check_connection().await.unwrap();
    let app = TestApp::spawn_with_store(Arc::clone(&db), store).await;
    // A wrong code is a 401 that went through the database; the service works.
    assert_eq!(statuses(&app).await, (200, 401));

    proxy.black_hole();
    // Pooled connections that no longer answer, then fresh ones that never finish their
    // start-up: every request fails with a 5xx within the bound.
    for round in 0..3 {
        let (issue, claim) = statuses(&app).await;
        assert!(
            (500..600).contains(&issue),
            "round {round}: new-key-claim {issue}"
        );
        assert!(
            (500..600).contains(&claim),
            "round {round}: claim-key {claim}"
        );
    }

    proxy.resume();
    // No restart: connections that timed out were dropped, not lent again, so every request
    // succeeds, more of them than the pool holds.
    for round in 0..6 {
        assert_eq!(
            statuses(&app).await,
            (200, 401),
            "round {round} after resuming"
        );
    }
    let code = app.portal().issue_code().await.unwrap();
    let mut phone = app.phone();
    assert_eq!(phone.claim(&code).await.unwrap().status, 200);
}

#[tokio::test]
async fn a_database_that_never_answers_fails_the_start_within_the_connect_timeout() {
    let db = TestDatabase::new().await;
    let proxy = BlackHoleProxy::start(upstream_of(&db.url)).await;
    proxy.black_hole();
    let store = store_through(&proxy, &db);
    let started = Instant::now();
    let message = tokio::time::timeout(REQUEST_BOUND, store.check_connection())
        .await
        .expect("the start-up check hung")
        .expect_err("a black hole answered")
        .to_string();
    // The TCP handshake succeeds; the start-up exchange never does.
    assert!(
        message.starts_with("DATABASE_URL: no answer within the connect timeout"),
        "{message}"
    );
    assert!(started.elapsed() < REQUEST_BOUND);
}

#[tokio::test]
async fn a_closed_port_fails_the_start_naming_database_url() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let store = Store::connect(&StoreConfig {
        database_url: format!("postgres://postgres:hunter2@{addr}/postgres"),
        pool_size: 1,
        statement_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        application_name: "diagnosis-fault-tests",
    })
    .unwrap();
    let message = store
        .check_connection()
        .await
        .expect_err("connected")
        .to_string();
    assert!(message.starts_with("DATABASE_URL: "), "{message}");
    assert!(message.contains("cannot connect to"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}
