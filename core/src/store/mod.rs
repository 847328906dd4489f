//! The Postgres store: the only shared state of Diagnosis Server (DESIGN §5).
//!
//! Every SQL statement of the system lives in this module tree, one file per
//! table, as named functions. Callers pass the current time in (from a
//! [`Clock`](crate::time::Clock)); no query reads the database's own `now()`, so
//! the rules of DESIGN §2 and §3 are testable with a manual clock.
//!
//! This module must never log key material, codes, tokens or client addresses.

mod connect;
mod diagnosis_keys;
mod encryption_keys;
mod events;
mod exports;
mod failed_claims;
mod metrics;
mod publication_seal;
mod retention;
mod schema;
mod submit_secrets;
pub mod submit_settings;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    ClientWrapper, Connect, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod,
    Status, TimeoutType,
};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use self::connect::Connector;
use self::tls::{DatabaseUrl, TlsSettings};
use crate::error::{causes, chain};
use crate::redacted::Redacted;

pub use diagnosis_keys::{KeyMetadataCount, KeyStream, StoreKeysOutcome};
pub use encryption_keys::{
    ClaimCodeKey, ClaimOutcome, ClaimWindow, HashedCode, IssueOutcome, NewCode, UploadKeypair,
};
pub use events::{
    Event, EventCount, FOLD_EVENTS_SQL, FOLD_OTK_DURATIONS_SQL, OtkDuration, UploadCount,
};
pub use exports::{ExportRecord, ExporterLock, Fence, FenceHold};
#[cfg(feature = "test-support")]
pub use failed_claims::take_claim_lock;
pub use failed_claims::{BanPolicy, ClientIdentifier, ClientIdentityKey, ban_remaining};
pub use metrics::{POOL_METRICS_INTERVAL, PoolMetricsTask, PoolStatus};
pub use retention::{RetentionPolicy, RetentionReport};
#[cfg(feature = "test-support")]
pub use schema::migrate_with;
pub use schema::{
    MIGRATION_LOCK_ID, MIGRATION_LOCK_TIMEOUT, Migration, embedded_migrations, migrate,
};
pub use submit_secrets::{CLAIM_CODE_SECRET, CLIENT_IDENTITY_SECRET};
pub use submit_settings::{RecordedSettings, SubmitInstance, SubmitLimits};

/// An error from the database layer. Callers turn it into `SERVER_ERROR`/500 or
/// a failed job.
///
/// Its text never contains row data: a Postgres error keeps only its severity
/// and primary message (never its DETAIL, which quotes the values of a failed
/// constraint, such as a key), so it is safe to log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database connection pool: {0}")]
    Pool(String),
    /// The database cannot be reached as `DATABASE_URL` says; the text starts with
    /// `DATABASE_URL:` and gives the reason.
    #[error("{0}")]
    Connect(String),
    #[error("database: {0}")]
    Postgres(String),
    #[error("database migration: {0}")]
    Migration(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database returned an invalid row: {0}")]
    InvalidRow(&'static str),
    /// The exporter lock this pass held is gone (its session ended, or another exporter took
    /// it over): the pass must not write anything more (DESIGN §4.2).
    #[error(
        "the exporter lock was lost (its session ended or another exporter took it over); this pass writes nothing more"
    )]
    LostLock,
}

/// A Postgres error without the parts that can quote row values.
fn describe_postgres(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => {
            let mut text = error.to_string();
            for cause in causes(error) {
                text.push_str(": ");
                text.push_str(&cause.to_string());
            }
            text
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Postgres(describe_postgres(&error))
    }
}

impl From<PoolError> for StoreError {
    fn from(error: PoolError) -> Self {
        match &error {
            PoolError::Backend(e) => StoreError::Pool(describe_postgres(e)),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

/// How to reach Postgres.
#[derive(Clone)]
pub struct StoreConfig {
    pub database_url: String,
    pub pool_size: usize,
    /// Applied to every session; must stay below the exporter's grace period
    /// (DESIGN §2) so that no late transaction writes into a closed hour.
    pub statement_timeout: Duration,
    /// `DATABASE_CONNECT_TIMEOUT_SECONDS` (DESIGN §6): bounds opening a connection (TCP, TLS and
    /// authentication together), waiting for a pooled one, and paces TCP keepalive.
    pub connect_timeout: Duration,
    pub application_name: &'static str,
}

/// How long past its `statement_timeout` a statement's answer may take to arrive before the
/// connection counts as dead. The server cancels a statement at its timeout and answers at
/// once, so this only covers the round trip and a busy server; it keeps the defaults (5 s
/// statement timeout) well inside the 10 s a request may take (DESIGN §6).
pub const RESPONSE_GRACE: Duration = Duration::from_secs(2);

impl StoreConfig {
    /// A binary's store settings: the `DATABASE_*` variables both binaries share (DESIGN §6)
    /// and the `application_name` its sessions carry.
    pub fn from_common(
        common: &crate::config::CommonConfig,
        application_name: &'static str,
    ) -> Self {
        Self {
            database_url: common.database_url.clone(),
            pool_size: common.database_pool_size,
            statement_timeout: common.database_statement_timeout,
            connect_timeout: common.database_connect_timeout,
            application_name,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("database_url", &Redacted::new(&self.database_url))
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("application_name", &self.application_name)
            .finish()
    }
}

/// A handle on the database: a connection pool plus the queries of the system.
#[derive(Clone)]
pub struct Store {
    pool: Connections,
    /// Where connections for export-sized statements come from ([`Store::long_session`]);
    /// `None` for a store built on a test's pool.
    long_sessions: Option<Arc<LongSessions>>,
    /// The TLS settings of `DATABASE_URL`, quoted when a connection fails.
    tls: Option<Arc<TlsSettings>>,
    /// A test's clock in place of the database's (`Store::with_database_clock`); `None` in
    /// the binaries.
    database_clock: Option<Arc<dyn crate::time::Clock>>,
}

/// The pool with one bound on a whole checkout. deadpool bounds waiting for a slot and creating
/// a connection separately; one after the other they could take twice the connect timeout.
#[derive(Clone)]
struct Connections {
    pool: Pool,
    checkout_timeout: Option<Duration>,
}

impl Connections {
    async fn get(&self) -> Result<Object, PoolError> {
        match self.checkout_timeout {
            None => self.pool.get().await,
            Some(limit) => tokio::time::timeout(limit, self.pool.get())
                .await
                .unwrap_or(Err(PoolError::Timeout(TimeoutType::Wait))),
        }
    }

    fn status(&self) -> Status {
        self.pool.status()
    }
}

/// Dedicated connections whose watchdog allows the export session's statement timeout.
struct LongSessions {
    connector: Connector,
    config: tokio_postgres::Config,
    /// Sessions whose last `COPY` ran to its end, kept for the next one
    /// ([`Store::close_idle_long_sessions`] closes them).
    idle: std::sync::Mutex<Vec<ClientWrapper>>,
}

/// Idle export sessions kept for reuse: the exporter reads one window while it opens the next.
const MAX_IDLE_LONG_SESSIONS: usize = 2;

impl LongSessions {
    fn take_idle(&self) -> Option<ClientWrapper> {
        self.idle.lock().ok()?.pop()
    }
}

/// A connection from [`Store::long_session`]. Once [`LongSession::reusable`] says its last
/// statement ran to its end, dropping it keeps it for the next export read; otherwise (a
/// `COPY` left half-read, an error) dropping it closes it.
pub(crate) struct LongSession {
    client: Option<ClientWrapper>,
    home: Option<Arc<LongSessions>>,
    reusable: bool,
}

impl LongSession {
    /// Runs `setup` on `client`: the session, ready for an export read.
    async fn start(
        client: ClientWrapper,
        home: Option<Arc<LongSessions>>,
        setup: &str,
    ) -> Result<LongSession, StoreError> {
        client.batch_execute(setup).await?;
        Ok(LongSession {
            client: Some(client),
            home,
            reusable: false,
        })
    }

    /// The session is idle again and may serve the next export read.
    pub(crate) fn reusable(&mut self) {
        self.reusable = true;
    }

    /// The connection (`None` only inside `drop`, which gives it back).
    pub(crate) fn client(&self) -> Result<&tokio_postgres::Client, StoreError> {
        match &self.client {
            Some(client) => Ok(client),
            None => Err(StoreError::Pool(
                "an export session used after it was given back".into(),
            )),
        }
    }
}

impl Drop for LongSession {
    fn drop(&mut self) {
        let (Some(client), Some(home)) = (self.client.take(), self.home.as_ref()) else {
            return;
        };
        if !self.reusable || client.is_closed() {
            return;
        }
        if let Ok(mut idle) = home.idle.lock()
            && idle.len() < MAX_IDLE_LONG_SESSIONS
        {
            idle.push(client);
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("Store")
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .finish()
    }
}

impl Store {
    /// How a binary starts on its database: builds the pool, proves the database answers (a
    /// refusal names `DATABASE_URL`), and applies pending migrations unless `migrate` is false
    /// (`--no-migrate`, for a role that may not change the schema).
    pub async fn open(config: &StoreConfig, migrate: bool) -> Result<Store, StoreError> {
        let store = Store::connect(config)?;
        store.check_connection().await?;
        if migrate {
            store.migrate().await.map_err(|e| match e {
                StoreError::Migration(_) => e,
                other => StoreError::Migration(format!("while applying migrations: {other}")),
            })?;
        }
        Ok(store)
    }

    /// Builds the pool. No connection is opened until the first query
    /// ([`Store::check_connection`] opens one at start).
    ///
    /// Reads the root certificate of `DATABASE_URL` (`sslrootcert`, `~/.postgresql/root.crt`
    /// or the system's trusted certificates, see [`tls`]); a bad URL or certificate file, or a
    /// `verify-*` mode without a root certificate, is a [`StoreError::Config`] naming
    /// `DATABASE_URL`.
    pub fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        let url = DatabaseUrl::parse(&config.database_url)
            .map_err(|e| StoreError::Config(format!("DATABASE_URL: {e}")))?;
        if let Some(missing) = &url.tls.missing_root_cert {
            tracing::warn!(
                sslrootcert = %missing.display(),
                sslmode = url.tls.mode.as_str(),
                "DATABASE_URL: the sslrootcert file does not exist, so the server's certificate \
                 is not checked (libpq's rule for this sslmode)"
            );
        }
        let tls = url
            .tls
            .client_config()
            .map_err(|e| StoreError::Config(format!("DATABASE_URL: {e} ({})", url.tls)))?
            .map(MakeRustlsConnect::new);
        let mut pg = url.config;
        pg.application_name(config.application_name);
        pg.options(format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            config.statement_timeout.as_millis(),
            config.statement_timeout.as_millis().saturating_mul(2),
        ));
        let connector = Connector {
            tls,
            connect_timeout: config.connect_timeout,
            response_timeout: Some(config.statement_timeout.saturating_add(RESPONSE_GRACE)),
        };
        let long_sessions = LongSessions {
            connector: Connector {
                response_timeout: Some(
                    diagnosis_keys::EXPORT_STATEMENT_TIMEOUT.saturating_add(RESPONSE_GRACE),
                ),
                ..connector.clone()
            },
            config: pg.clone(),
            idle: std::sync::Mutex::new(Vec::new()),
        };
        let hosts = u32::try_from(pg.get_hosts().len().max(1)).unwrap_or(u32::MAX);
        let pool = build_pool(pg, connector, config, hosts)?;
        Ok(Store {
            pool: Connections {
                pool,
                checkout_timeout: Some(config.connect_timeout.saturating_mul(hosts)),
            },
            long_sessions: Some(Arc::new(long_sessions)),
            tls: Some(Arc::new(url.tls)),
            database_clock: None,
        })
    }

    /// Wraps an existing pool (tests build one per database). Only with the `test-support`
    /// feature: the binaries always build their pool with [`Store::connect`].
    #[cfg(feature = "test-support")]
    pub fn from_pool(pool: Pool) -> Store {
        Store {
            pool: Connections {
                pool,
                checkout_timeout: None,
            },
            long_sessions: None,
            tls: None,
            database_clock: None,
        }
    }

    /// The pool itself, for tests that inspect the sessions a store opens (whether they are
    /// TLS, for instance). Only with the `test-support` feature.
    #[cfg(feature = "test-support")]
    pub fn pool(&self) -> &Pool {
        &self.pool.pool
    }

    /// Opens a connection and runs a query, so that a binary that cannot reach its database
    /// stops at start with the reason (DESIGN §6): the error reads
    /// `DATABASE_URL: the server's certificate is not trusted (sslmode=verify-full, …)`.
    pub async fn check_connection(&self) -> Result<(), StoreError> {
        let outcome = match self.pool.get().await {
            Ok(client) => match client.simple_query("SELECT 1").await {
                Ok(_) => Ok(()),
                Err(e) => Err(connect_failure_reason(&e)),
            },
            Err(PoolError::Backend(e)) => Err(connect_failure_reason(&e)),
            Err(PoolError::Timeout(_)) => Err("no answer within the connect timeout \
                                                (DATABASE_CONNECT_TIMEOUT_SECONDS)"
                .to_owned()),
            Err(other) => Err(other.to_string()),
        };
        outcome.map_err(|reason| match &self.tls {
            Some(tls) => StoreError::Connect(format!("DATABASE_URL: {reason} ({tls})")),
            None => StoreError::Connect(format!("DATABASE_URL: {reason}")),
        })
    }

    /// A connection of its own for statements that may run up to the export session's
    /// statement timeout. It never returns to the pool (its session settings differ) and is
    /// opened outside it, so it is a connection more than `DATABASE_POOL_SIZE`.
    ///
    /// `setup` runs first on the session. A session kept from an earlier read whose `COPY` ran
    /// to its end is used again when it is still open; if `setup` fails on it (the server
    /// closed it meanwhile), a new one is opened.
    pub(crate) async fn long_session(&self, setup: &str) -> Result<LongSession, StoreError> {
        let Some(long) = &self.long_sessions else {
            return LongSession::start(Object::take(self.pool.get().await?), None, setup).await;
        };
        while let Some(client) = long.take_idle() {
            if client.is_closed() {
                continue;
            }
            if let Ok(session) = LongSession::start(client, Some(long.clone()), setup).await {
                return Ok(session);
            }
        }
        let (client, task) = long.connector.connect(&long.config).await?;
        LongSession::start(ClientWrapper::new(client, task), Some(long.clone()), setup).await
    }

    /// Closes the export sessions kept for reuse ([`Store::long_session`]): the exporter calls
    /// it when a pass has read what it needed, so that no connection outlives the pass.
    pub fn close_idle_long_sessions(&self) {
        if let Some(long) = &self.long_sessions
            && let Ok(mut idle) = long.idle.lock()
        {
            idle.clear();
        }
    }

    /// Applies the migrations of `sql/` that are not applied yet, on a session of its own
    /// (DESIGN §5: see [`migrate`]).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.apply_migrations(&embedded_migrations()).await
    }

    /// [`Store::migrate`] with a set of migrations of the caller's. Only with the
    /// `test-support` feature: the binaries apply the embedded set.
    #[cfg(feature = "test-support")]
    pub async fn migrate_with(&self, migrations: &[Migration]) -> Result<(), StoreError> {
        self.apply_migrations(migrations).await
    }

    async fn apply_migrations(&self, migrations: &[Migration]) -> Result<(), StoreError> {
        let mut session = self.migration_session().await?;
        schema::apply(&mut session, migrations).await
    }

    /// A connection for the migrations, closed when dropped: never lent again, since a
    /// migration, or the wait for another process's, may take any time. It has no response
    /// watchdog for the same reason; TCP keepalive still notices a server that vanished.
    async fn migration_session(&self) -> Result<ClientWrapper, StoreError> {
        let Some(long) = &self.long_sessions else {
            return Ok(Object::take(self.pool.get().await?));
        };
        let connector = Connector {
            response_timeout: None,
            ..long.connector.clone()
        };
        let (client, task) = connector.connect(&long.config).await?;
        Ok(ClientWrapper::new(client, task))
    }
}

/// Why a connection could not be opened, in an operator's words; never row data.
fn connect_failure_reason(error: &tokio_postgres::Error) -> String {
    for current in chain(error) {
        if let Some(tls) = tls_error(current) {
            return describe_tls_failure(tls);
        }
        // A socket error (refused, unreachable, no answer) says it all on its own.
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return io.to_string();
        }
    }
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return "the server refuses this connection: no pg_hba.conf rule allows it \
                    (a server that accepts only TLS refuses a connection without TLS)"
                .to_owned();
        }
        if *code == SqlState::INVALID_PASSWORD {
            return "the server refuses the user name or password".to_owned();
        }
    }
    let text = describe_postgres(error);
    if text.contains("server does not support TLS") {
        return "the server does not offer TLS, which the sslmode requires".to_owned();
    }
    text
}

/// The rustls error behind an error, if any. tokio-rustls wraps it in an `io::Error`, whose
/// `source()` skips the wrapped error itself, so the wrapper is looked into.
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn describe_tls_failure(error: &rustls::Error) -> String {
    use rustls::CertificateError;
    match error {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the server's certificate is not trusted".to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's certificate does not name the host of DATABASE_URL".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            other => format!("the server's certificate is refused: {other:?}"),
        },
        other => format!("the TLS handshake failed: {other}"),
    }
}

/// The UTC calendar date of an instant, as stored in the event tables.
fn utc_date(at: chrono::DateTime<chrono::Utc>) -> chrono::NaiveDate {
    at.date_naive()
}

/// The deadpool pool over `connector`: every wait bounded by `CONNECT_TIMEOUT`, creating a
/// connection by that much per host of the URL (libpq tries them in turn).
fn build_pool(
    pg: tokio_postgres::Config,
    connector: Connector,
    config: &StoreConfig,
    hosts: u32,
) -> Result<Pool, StoreError> {
    let manager = Manager::from_connect(
        pg,
        connector,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.connect_timeout))
        .create_timeout(Some(config.connect_timeout.saturating_mul(hosts)))
        .recycle_timeout(Some(config.connect_timeout))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Config(format!("cannot build the connection pool: {e}")))
}
