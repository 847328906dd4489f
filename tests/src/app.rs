//! `TestApp`: a real `diagnosis-submit` on port 0 over a fresh Postgres
//! database, with a manual clock, for the end-to-end tests.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use diagnosis_core::domain::{KeyClaimTokens, Region};
use diagnosis_core::store::submit_settings::REFRESH_PERIOD;
use diagnosis_core::store::{BanPolicy, RetentionPolicy, Store};
use diagnosis_core::time::Clock;
use diagnosis_core::time::ManualClock;
use diagnosis_proto::{KeyClaimResponse, Message};
use diagnosis_submit::client_ip::ForwardedFor;
use diagnosis_submit::{AppState, Listeners, Settings, Timeouts, Version};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pg::TestDatabase;
use crate::simulator::{Phone, Portal};

/// The portal token every test app accepts, labelled [`PORTAL_LABEL`].
pub const PORTAL_TOKEN: &str = "test-portal-token-0123456789";
/// The originator label of [`PORTAL_TOKEN`].
pub const PORTAL_LABEL: &str = "ON";

/// The submit service's settings as a test starts them (the contract's defaults).
pub fn test_settings() -> Settings {
    Settings {
        key_claim_tokens: KeyClaimTokens::parse(&format!("{PORTAL_TOKEN}={PORTAL_LABEL}"))
            .unwrap_or_else(|e| panic!("test token: {e}")),
        region: Region::parse("302").unwrap_or_else(|| panic!("test region")),
        forwarded_for: ForwardedFor::Ignored,
        initial_remaining_keys: 43,
        one_time_code_expiry: chrono::Duration::hours(24),
        encryption_key_validity_days: 15,
        ban: BanPolicy {
            max_failures: 50,
            ban_duration: chrono::Duration::hours(1),
        },
        claim_recovery: chrono::Duration::minutes(10),
        claim_queue_wait: std::time::Duration::from_secs(5),
        cors_allow_origin: http::HeaderValue::from_static("*"),
        metrics_credentials: None,
        max_connections: Settings::DEFAULT_MAX_CONNECTIONS,
        statement_timeout: std::time::Duration::from_millis(5_000),
        timeouts: Timeouts::default(),
    }
}

/// The retention policy a submit service started with [`test_settings`] records for the
/// exporter (DESIGN §5): codes expire after 24 h, keypairs after 15 days, bans after 1 h.
pub fn test_retention_policy() -> RetentionPolicy {
    let settings = test_settings();
    RetentionPolicy {
        one_time_code_expiry: settings.one_time_code_expiry,
        keypair_validity_days: settings.encryption_key_validity_days,
        claim_ban_duration: settings.ban.ban_duration,
    }
}

/// A moment well inside an hour, so tests do not straddle hour boundaries by accident.
pub fn test_start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 15, 20, 0)
        .single()
        .unwrap_or_else(|| panic!("valid test time"))
}

/// A running submit service.
#[derive(Debug)]
pub struct TestApp {
    pub db: Arc<TestDatabase>,
    pub store: Store,
    pub clock: ManualClock,
    pub base_url: String,
    pub internal_url: String,
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    /// A service with default settings on a fresh database.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    /// A service on a fresh database, with settings adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
        let db = Arc::new(TestDatabase::new().await);
        let clock = ManualClock::new(test_start_time());
        Self::spawn_on(db, clock, adjust).await
    }

    /// Another instance on the same database and clock (a second replica).
    pub async fn replica(&self) -> TestApp {
        Self::spawn_on(Arc::clone(&self.db), self.clock.clone(), |_| {}).await
    }

    /// A service with default settings on a fresh database, whose shared state `adjust` may
    /// change before it starts (for example to serve a test's metrics recorder on `/metrics`).
    pub async fn spawn_with_state(adjust: impl FnOnce(&mut AppState)) -> TestApp {
        let db = Arc::new(TestDatabase::new().await);
        let clock = ManualClock::new(test_start_time());
        let store = Store::from_pool(db.pool().clone());
        Self::start(db, store, clock, test_settings(), adjust).await
    }

    /// A service with default settings over `store`, which reaches `db` some other way than the
    /// test's own pool (for example through a proxy, built by `Store::connect` as the binary
    /// builds it).
    pub async fn spawn_with_store(db: Arc<TestDatabase>, store: Store) -> TestApp {
        Self::spawn_with_store_and(db, store, |_| {}).await
    }

    /// [`TestApp::spawn_with_store`] with settings adjusted by `adjust`.
    pub async fn spawn_with_store_and(
        db: Arc<TestDatabase>,
        store: Store,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestApp {
        let clock = ManualClock::new(test_start_time());
        let mut settings = test_settings();
        adjust(&mut settings);
        Self::start(db, store, clock, settings, |_| {}).await
    }

    /// A service on `db` whose queries all run through `store`, for example a store connected
    /// as the submit service's least-privilege role.
    pub async fn spawn_on_store(
        db: Arc<TestDatabase>,
        store: Store,
        clock: ManualClock,
    ) -> TestApp {
        Self::start(db, store, clock, test_settings(), |_| {}).await
    }

    pub async fn spawn_on(
        db: Arc<TestDatabase>,
        clock: ManualClock,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestApp {
        let mut settings = test_settings();
        adjust(&mut settings);
        let store = Store::from_pool(db.pool().clone());
        Self::start(db, store, clock, settings, |_| {}).await
    }

    /// A replica on `db` whose own clock is `behind` the database's (`database`), which its
    /// store reads wherever the database's clock counts.
    pub async fn spawn_behind(
        db: Arc<TestDatabase>,
        database: ManualClock,
        behind: chrono::Duration,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestApp {
        let mut settings = test_settings();
        adjust(&mut settings);
        let clock = ManualClock::new(database.now() - behind);
        let store = Store::from_pool(db.pool().clone()).with_database_clock(Arc::new(database));
        Self::start_on_clocks(db, store, clock, settings).await
    }

    async fn start(
        db: Arc<TestDatabase>,
        store: Store,
        clock: ManualClock,
        settings: Settings,
        adjust_state: impl FnOnce(&mut AppState),
    ) -> TestApp {
        // The test's clock is the database's too: uploads are filed under its hour.
        let store = store.with_database_clock(Arc::new(clock.clone()));
        Self::start_with_state(db, store, clock, settings, adjust_state).await
    }

    async fn start_on_clocks(
        db: Arc<TestDatabase>,
        store: Store,
        clock: ManualClock,
        settings: Settings,
    ) -> TestApp {
        Self::start_with_state(db, store, clock, settings, |_| {}).await
    }

    async fn start_with_state(
        db: Arc<TestDatabase>,
        store: Store,
        clock: ManualClock,
        settings: Settings,
        adjust_state: impl FnOnce(&mut AppState),
    ) -> TestApp {
        // As the binary does at start: the first instance creates the secret, and each records
        // its limits in submit_settings.
        let mut state = AppState::start(
            store.clone(),
            Arc::new(clock.clone()),
            settings,
            Version::of_build(),
        )
        .await
        .unwrap_or_else(|e| panic!("starting the submit service: {e}"));
        let api = bind().await;
        let internal = bind().await;
        let addr = local_addr(&api);
        let internal_addr = local_addr(&internal);
        adjust_state(&mut state);
        let state = Arc::new(state);
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(diagnosis_submit::run(
            state,
            Listeners {
                api,
                internal: Some(internal),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        TestApp {
            db,
            store,
            clock,
            base_url: format!("http://{addr}"),
            internal_url: format!("http://{internal_addr}"),
            addr,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    pub fn portal(&self) -> Portal {
        Portal::new(&self.base_url, PORTAL_TOKEN)
    }

    pub fn phone(&self) -> Phone {
        Phone::new(&self.base_url)
    }

    /// Posts `body` to `/claim-key` as a phone does: the status and the answer, a
    /// `KeyClaimResponse` whatever the status (DESIGN §3.2).
    pub async fn post_claim(&self, body: Vec<u8>) -> (u16, KeyClaimResponse) {
        let reply = self
            .phone()
            .client
            .post_protobuf(&format!("{}/claim-key", self.base_url), body)
            .await
            .unwrap();
        assert_eq!(reply.header("content-type"), Some("application/x-protobuf"));
        (
            reply.status.as_u16(),
            KeyClaimResponse::decode(reply.body.as_ref()).unwrap(),
        )
    }

    /// A phone that has claimed a fresh code.
    pub async fn claimed_phone(&self) -> Phone {
        let code = self
            .portal()
            .issue_code()
            .await
            .unwrap_or_else(|e| panic!("issuing a code: {e:#}"));
        let mut phone = self.phone();
        let reply = phone
            .claim(&code)
            .await
            .unwrap_or_else(|e| panic!("claiming: {e:#}"));
        assert_eq!(reply.status, 200, "claim failed: {:?}", reply.response);
        phone
    }

    pub fn now_unix(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// Moves the shared clock by `by` (at least a refresh period) and waits until each of the
    /// `replicas` running on it has refreshed its settings row and identity key and waits for
    /// its next refresh.
    pub async fn advance_past_refresh(&self, by: chrono::Duration, replicas: usize) {
        assert!(by >= REFRESH_PERIOD, "{by} does not reach the next refresh");
        self.clock.advance(by);
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            self.clock.until_waiting(replicas),
        )
        .await
        .unwrap_or_else(|_| panic!("{replicas} replicas did not refresh within 60 s"));
    }

    /// Stops the service gracefully and waits for it.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    async fn stop_inner(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("submit stopped with an error: {e}"),
                Err(e) => panic!("submit task failed: {e}"),
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding a test port: {e}"))
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("test listener address: {e}"))
}
