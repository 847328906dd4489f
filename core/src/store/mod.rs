//! The Postgres store: the only shared state of Diagnosis Server (DESIGN §5).
//!
//! Every SQL statement of the system lives in this module tree, one file per
//! table, as named functions. Callers pass the current time in (from a
//! [`Clock`](crate::time::Clock)); no query reads the database's own `now()`, so
//! the rules of DESIGN §2 and §3 are testable with a manual clock.
//!
//! This module must never log key material, codes, tokens or client addresses.

mod diagnosis_keys;
mod encryption_keys;
mod events;
mod exports;
mod failed_claims;
mod metrics;
mod retention;
mod submit_secrets;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

pub use diagnosis_keys::{KeyMetadataCount, KeyStream, StoreKeysOutcome};
pub use encryption_keys::{ClaimOutcome, IssueOutcome, NewCode, UploadKeypair};
pub use events::{Event, EventCount, OtkDuration, UploadCount};
pub use exports::{ExportRecord, ExporterLock};
pub use failed_claims::{BanPolicy, ClientIdentifier, ClientIdentityKey, ban_remaining};
pub use metrics::{POOL_METRICS_INTERVAL, PoolMetricsTask, PoolStatus};
pub use retention::{RetentionPolicy, RetentionReport};
pub use submit_secrets::CLIENT_IDENTITY_SECRET;

mod embedded {
    refinery::embed_migrations!("../sql");
}

/// Serialises schema migrations across processes: two replicas starting at the
/// same moment must not both apply the same migration.
const MIGRATION_LOCK_ID: i64 = 0x6469_6167_6d69_6772; // "diagmigr"

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
    #[error("database: {0}")]
    Postgres(String),
    #[error("database migration: {0}")]
    Migration(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("database returned an invalid row: {0}")]
    InvalidRow(&'static str),
}

/// A Postgres error without the parts that can quote row values.
fn describe_postgres(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
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

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        match &error {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Pool(describe_postgres(e)),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

impl From<refinery::Error> for StoreError {
    /// refinery's text says which step failed but not why; the Postgres error
    /// under it (e.g. `permission denied for schema public` when a runtime role
    /// meets a pending migration) is appended in its safe form.
    fn from(error: refinery::Error) -> Self {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            if let Some(postgres) = cause.downcast_ref::<tokio_postgres::Error>() {
                text.push_str(": ");
                text.push_str(&describe_postgres(postgres));
                break;
            }
            source = cause.source();
        }
        StoreError::Migration(text)
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
    pub application_name: &'static str,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("database_url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("application_name", &self.application_name)
            .finish()
    }
}

/// A handle on the database: a connection pool plus the queries of the system.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
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
    /// Builds the pool. No connection is opened until the first query.
    pub fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        let mut pg: tokio_postgres::Config = config
            .database_url
            .parse()
            .map_err(|_| StoreError::Config("DATABASE_URL is not a valid postgres URL".into()))?;
        pg.application_name(config.application_name);
        pg.options(format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            config.statement_timeout.as_millis(),
            config.statement_timeout.as_millis().saturating_mul(2),
        ));
        pg.connect_timeout(Duration::from_secs(10));
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(config.statement_timeout))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(format!("cannot build the connection pool: {e}")))?;
        Ok(Store { pool })
    }

    /// Wraps an existing pool (tests build one per database).
    pub fn from_pool(pool: Pool) -> Store {
        Store { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies the migrations of `sql/` that are not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        migrate(&mut client).await
    }

    /// Succeeds when a connection can run a query; used by readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// Applies the embedded migrations of `sql/` on `client`, holding a session
/// advisory lock so that processes starting together apply each migration once.
///
/// When the history already records exactly the embedded migrations, nothing
/// else is run: a binary connected as its least-privilege runtime role (DESIGN
/// §7), which may read the history but not create tables, then starts without
/// `--no-migrate`. refinery alone would fail there, because its first statement
/// is a `CREATE TABLE IF NOT EXISTS` of the history, which PostgreSQL refuses
/// without CREATE on the schema even when the table exists.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_ID])
        .await?;
    let runner = embedded::migrations::runner().set_abort_divergent(true);
    let result = if schema_is_current(&runner, client).await {
        Ok(None)
    } else {
        runner.run_async(client).await.map(Some)
    };
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_ID])
        .await;
    let report = result?;
    unlock?;
    for migration in report.iter().flat_map(|report| report.applied_migrations()) {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "applied migration"
        );
    }
    Ok(())
}

/// True when the migration history holds exactly the embedded migrations, with
/// the same names and checksums. Anything else (no history yet, a pending, a
/// changed or an unknown migration, or an error reading the history) is left to
/// refinery, which applies what is pending or reports the problem.
async fn schema_is_current(runner: &refinery::Runner, client: &mut tokio_postgres::Client) -> bool {
    let Ok(mut applied) = runner.get_applied_migrations_async(client).await else {
        return false;
    };
    let mut embedded = runner.get_migrations().clone();
    applied.sort();
    embedded.sort();
    applied == embedded
}

/// The UTC calendar date of an instant, as stored in the event tables.
fn utc_date(at: chrono::DateTime<chrono::Utc>) -> chrono::NaiveDate {
    at.date_naive()
}
