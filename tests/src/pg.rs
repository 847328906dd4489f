//! A fresh, migrated PostgreSQL database for every test.
//!
//! Tests run against the real PostgreSQL named by `DIAGNOSIS_TEST_DATABASE_URL`, which
//! `infra/dev/test` starts and exports. The first [`TestDatabase::new`] in a process makes sure a
//! template database holding the migrated schema exists (`diagnosis_template_<hash of sql/>`, built
//! once under an advisory lock so that test binaries running side by side share it); every test
//! database is then a cheap `CREATE DATABASE … TEMPLATE` copy of it, so tests never see each
//! other's rows and can run in parallel.
//!
//! This module must never skip a test: without a database it panics and says how to run the
//! tests. It must never touch a database it did not create, apart from reading the template.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use deadpool_postgres::{Hook, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use diagnosis_core::store::{FOLD_EVENTS_SQL, FOLD_OTK_DURATIONS_SQL};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

/// The variable that names the admin connection (any database of the test cluster, usually
/// `postgres`). The user must be allowed to create databases.
pub const DATABASE_URL_VARIABLE: &str = "DIAGNOSIS_TEST_DATABASE_URL";

/// Serialises template creation across test processes on the same cluster.
const TEMPLATE_LOCK_ID: i64 = 0x6469_6167_7465_6d70; // "diagtemp"

/// Connections per test database; the test cluster allows 300 in all.
const POOL_SIZE: usize = 8;

/// The migration history table, left out of [`TestDatabase::snapshot`].
const MIGRATION_HISTORY_TABLE: &str = "refinery_schema_history";

/// The template's name, once this process has made sure it exists.
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A database of its own for one test.
///
/// The database is dropped again once nothing can use it any more: when this value **and every
/// clone of its [`pool`](Self::pool)** are gone (a service under test often keeps a clone past the
/// end of the `TestDatabase`, e.g. to check the database after the service stopped).
pub struct TestDatabase {
    /// A URL for this database, e.g. to hand to a service under test as `DATABASE_URL`.
    pub url: String,
    /// The database's name, `test_<random>`.
    pub name: String,
    pool: Pool,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// Creates a fresh database with the current schema of `sql/`.
    ///
    /// # Panics
    /// When `DIAGNOSIS_TEST_DATABASE_URL` is unset or the database cannot be created: tests
    /// never silently skip.
    pub async fn new() -> TestDatabase {
        let admin_url = admin_url();
        let template = TEMPLATE
            .get_or_init(|| ensure_template(&admin_url))
            .await
            .clone();
        Self::create(admin_url, &template).await
    }

    /// A database with no schema at all (from `template0`), for migration tests.
    pub async fn empty() -> TestDatabase {
        Self::create(admin_url(), "template0").await
    }

    async fn create(admin_url: String, template: &str) -> TestDatabase {
        let name = format!("test_{:016x}", rand::random::<u64>());
        let admin = connect(&admin_url).await;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quote_ident(&name),
                quote_ident(template)
            ))
            .await
            .unwrap_or_else(|err| panic!("cannot create test database {name}: {err}"));
        drop(admin);

        let url = with_database(&admin_url, &name);
        let release = DropDatabase {
            admin_url,
            name: name.clone(),
        };
        let pool = build_pool(&url, release);
        TestDatabase { url, name, pool }
    }

    /// The connection pool of this database.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A connection from the pool.
    pub async fn client(&self) -> deadpool_postgres::Object {
        self.pool
            .get()
            .await
            .unwrap_or_else(|err| panic!("cannot connect to test database {}: {err}", self.name))
    }

    /// The single `bigint` that `query` returns (a `SELECT count(*) …` without parameters).
    pub async fn count(&self, query: &str) -> i64 {
        self.client()
            .await
            .query_one(query, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// `(identifier, count)` of the server events counted so far (on `day`, or on every day),
    /// folded into `events` or still in `event_log`, as the events API counts them.
    pub async fn event_counts(&self, day: Option<chrono::NaiveDate>) -> Vec<(String, i32)> {
        self.client()
            .await
            .query(
                "SELECT identifier, sum(count)::int4 FROM (
                     SELECT identifier, date, count FROM events
                     UNION ALL SELECT identifier, date, count FROM event_log
                 ) e WHERE $1::date IS NULL OR date = $1
                 GROUP BY identifier ORDER BY identifier",
                &[&day],
            )
            .await
            .unwrap_or_else(|err| panic!("cannot count the events of {}: {err}", self.name))
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    /// Every row of every table of the `public` schema (the migration history aside), in a
    /// deterministic text form: tables by name, rows as JSON sorted by their text.
    ///
    /// Take one before and one after a request that must be refused: equal snapshots prove the
    /// request changed nothing (DESIGN §7). Sequences are left out on purpose: a rolled-back
    /// insert still advances them, without changing any data. So is `submit_settings`, which no
    /// request writes: the replicas refresh it on their own every minute of their clock.
    pub async fn snapshot(&self) -> String {
        let client = self.client().await;
        // A replica may fold the event logs between two snapshots (DESIGN §5): that changes
        // how the counts are held, not what they are, so both snapshots are taken folded.
        for fold in [FOLD_EVENTS_SQL, FOLD_OTK_DURATIONS_SQL] {
            if let Err(err) = client.batch_execute(fold).await {
                // A schema migrated only part of the way has no logs to fold.
                if err.code() != Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
                    panic!("cannot fold the event logs of {}: {err}", self.name);
                }
            }
        }
        let tables = client
            .query(
                "SELECT tablename::text FROM pg_catalog.pg_tables \
                 WHERE schemaname = 'public' AND tablename <> $1 AND tablename <> 'submit_settings' \
                 ORDER BY tablename",
                &[&MIGRATION_HISTORY_TABLE],
            )
            .await
            .unwrap_or_else(|err| panic!("cannot list the tables of {}: {err}", self.name));
        let mut snapshot = String::new();
        for table in tables {
            let table: String = table.get(0);
            let rows = client
                .query(
                    &format!(
                        "SELECT row_to_json(t)::text AS row FROM public.{} t ORDER BY 1",
                        quote_ident(&table)
                    ),
                    &[],
                )
                .await
                .unwrap_or_else(|err| panic!("cannot read table {table}: {err}"));
            let _ = writeln!(snapshot, "{table} ({} rows)", rows.len());
            for row in rows {
                let row: String = row.get(0);
                let _ = writeln!(snapshot, "  {row}");
            }
        }
        snapshot
    }
}

/// Drops a test database when it is itself dropped, which happens when the last clone of the
/// database's pool goes away (the pool owns it, see [`build_pool`]).
///
/// Best effort: a failure is reported and ignored, since `infra/dev/test` throws the whole
/// cluster away at the end. Dropping still matters during the run, so that hundreds of test
/// databases do not fill the disk.
struct DropDatabase {
    admin_url: String,
    name: String,
}

impl Drop for DropDatabase {
    /// Runs on a thread with its own runtime, because `Drop` cannot await and the test's
    /// runtime may be shutting down. `WITH (FORCE)` ends connections still checked out.
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let statement = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&self.name)
        );
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin_url, NoTls)
                    .await
                    .map_err(|err| err.to_string())?;
                let connection = tokio::spawn(connection);
                let result = client.batch_execute(&statement).await;
                drop(client);
                let _ = connection.await;
                result.map_err(|err| err.to_string())
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop test database {}: {err}", self.name),
            Err(_) => eprintln!(
                "could not drop test database {}: the thread panicked",
                self.name
            ),
        }
    }
}

/// Makes sure the migrated template for the current `sql/` exists and returns its name.
fn admin_url() -> String {
    let admin_url = std::env::var(DATABASE_URL_VARIABLE).unwrap_or_default();
    if admin_url.is_empty() {
        panic!("{DATABASE_URL_VARIABLE} is not set: run the tests through infra/dev/test");
    }
    admin_url
}

async fn ensure_template(admin_url: &str) -> String {
    let name = format!("diagnosis_template_{}", migrations_hash());
    let admin = connect(admin_url).await;
    // Held until `admin` is dropped: another test process that needs the same template waits
    // here and then finds it ready.
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK_ID])
        .await
        .unwrap_or_else(|err| panic!("cannot take the template lock: {err}"));
    let existing = admin
        .query_opt(
            "SELECT datistemplate FROM pg_catalog.pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap_or_else(|err| panic!("cannot look for the template database: {err}"));
    match existing {
        Some(row) if row.get::<_, bool>(0) => return name,
        // A run that crashed while migrating left an unfinished template behind.
        Some(_) => admin
            .batch_execute(&format!(
                "DROP DATABASE {} WITH (FORCE)",
                quote_ident(&name)
            ))
            .await
            .unwrap_or_else(|err| panic!("cannot drop the unfinished template {name}: {err}")),
        None => {}
    }
    admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
        .await
        .unwrap_or_else(|err| panic!("cannot create the template database {name}: {err}"));

    let (mut client, connection) = tokio_postgres::connect(&with_database(admin_url, &name), NoTls)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to the template database {name}: {err}"));
    let connection = tokio::spawn(connection);
    diagnosis_core::store::migrate(&mut client)
        .await
        .unwrap_or_else(|err| panic!("migrating the template database {name} failed: {err}"));
    // CREATE DATABASE … TEMPLATE refuses a template that still has sessions: close ours first.
    drop(client);
    let _ = connection.await;

    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} IS_TEMPLATE true",
            quote_ident(&name)
        ))
        .await
        .unwrap_or_else(|err| panic!("cannot mark {name} as a template: {err}"));
    name
}

/// A hash of the names and contents of the migration files, so a changed migration gets a new
/// template instead of a stale one (FNV-1a: stable across runs and Rust versions).
fn migrations_hash() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read the migrations in {}: {err}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for path in &files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let contents = std::fs::read(path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        feed(name.as_bytes());
        feed(&[0]);
        feed(&(contents.len() as u64).to_le_bytes());
        feed(&contents);
    }
    format!("{hash:016x}")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "cannot connect to {DATABASE_URL_VARIABLE} (is the test cluster running?): {err}"
            )
        });
    tokio::spawn(connection);
    client
}

/// The pool of a test database. It owns `release`, so the database is dropped exactly when the
/// last clone of the pool is.
fn build_pool(url: &str, release: DropDatabase) -> Pool {
    let mut config: tokio_postgres::Config = url.parse().unwrap_or_else(|err| {
        panic!("{DATABASE_URL_VARIABLE} is not a valid PostgreSQL URL: {err}")
    });
    config.application_name("diagnosis-tests");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    // A hook lives as long as the pool's shared state, i.e. until its last clone is dropped;
    // this one does nothing but hold `release` for that long.
    let keep_until_pool_dropped = Hook::sync_fn(move |_client, _metrics| {
        let _ = &release;
        Ok(())
    });
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .post_create(keep_until_pool_dropped)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(Runtime::Tokio1)
        .build()
        .unwrap_or_else(|err| panic!("cannot build the test database pool: {err}"))
}

/// `url` with its database name replaced by `database` (query parameters kept).
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// An SQL identifier, double-quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_database() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/test_1",
            ),
            (
                "postgres://127.0.0.1:5432",
                "postgres://127.0.0.1:5432/test_1",
            ),
            (
                "postgresql://u:p@h/db?sslmode=disable",
                "postgresql://u:p@h/test_1?sslmode=disable",
            ),
            (
                "postgres://h?sslmode=disable",
                "postgres://h/test_1?sslmode=disable",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "test_1"), expected, "{url}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("test_1"), "\"test_1\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn the_migrations_hash_is_stable() {
        assert_eq!(migrations_hash(), migrations_hash());
        assert_eq!(migrations_hash().len(), 16);
    }
}
