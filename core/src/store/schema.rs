//! The schema's migrations (DESIGN §5): the `sql/` files embedded in the binary, applied in
//! version order under a session advisory lock, each in a transaction of its own with its row in
//! the history table `refinery_schema_history` (refinery's layout, which every release reads).
//!
//! What a binary does with the history it finds (DESIGN §5, rolling releases and rollbacks):
//!
//! * a version it does not know was applied by a newer release: it is logged at warn level with
//!   its name, and the binary starts;
//! * a version it knows, applied under another name or checksum, is a history that diverges from
//!   its own: refused, naming both;
//! * a version it knows that is not applied while a later version is: refused too, since
//!   applying it would run migrations out of the order they were written in;
//! * the versions it knows that are not applied yet are applied, lowest first.
//!
//! When nothing is pending the history is only read: a least-privilege runtime role (which may
//! read the history but create nothing, DESIGN §7) starts on a current or newer schema.
//!
//! The session that migrates runs without `statement_timeout` (nor the idle-in-transaction
//! timeout derived from it) and waits for the migration lock without `lock_timeout`, however
//! long another process's migrations take; while it applies, [`MIGRATION_LOCK_TIMEOUT`] bounds
//! each wait for a table lock. All three are reset afterwards ([`Store::migrate`](super::Store::migrate)
//! also uses a session of its own and drops it).
//!
//! This module must never apply a migration without holding the migration lock, and never
//! writes anything when nothing is pending.

use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::{StoreError, describe_postgres};

pub use refinery::Migration;

mod embedded {
    refinery::embed_migrations!("../sql");
}

/// The session advisory lock that serialises schema migrations across processes: two replicas
/// starting at the same moment must not both apply the same migration.
pub const MIGRATION_LOCK_ID: i64 = 0x6469_6167_6d69_6772; // "diagmigr"

/// How long a migration waits for a lock on a table before it gives up.
///
/// A migration waiting for a table lock makes every later statement on that table wait behind
/// it, so the wait is bounded: 30 s outlasts the transactions of a running submit replica
/// (statements of at most `DATABASE_STATEMENT_TIMEOUT_MS`, 5 s by default, and at most twice
/// that idle in a transaction), yet stops a migration stuck behind an exporter's read of a
/// window (up to 30 minutes) from holding uploads up for that long. A migration that gives up
/// stops the binary at start, naming the timeout; the next start tries again.
pub const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

const HISTORY_TABLE: &str = "refinery_schema_history";

/// refinery's history table, created by the first migration of a database.
const CREATE_HISTORY: &str = "CREATE TABLE IF NOT EXISTS refinery_schema_history(
    version int4 PRIMARY KEY,
    name VARCHAR(255),
    applied_on VARCHAR(255),
    checksum VARCHAR(255))";

const READ_HISTORY: &str =
    "SELECT version, name, checksum FROM refinery_schema_history ORDER BY version";

const RECORD_MIGRATION: &str = "INSERT INTO refinery_schema_history \
     (version, name, applied_on, checksum) VALUES ($1, $2, $3, $4)";

/// The migrations of `sql/` this binary was built with, lowest version first.
pub fn embedded_migrations() -> Vec<Migration> {
    let mut migrations = embedded::migrations::runner().get_migrations().clone();
    migrations.sort();
    migrations
}

/// Applies the embedded migrations of `sql/` on `client` (see the module documentation). The
/// session's `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout` are
/// back at the session's defaults once it returns.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    apply(client, &embedded_migrations()).await
}

/// [`migrate`] with a set of migrations of the caller's, for tests of migrations the embedded
/// set does not have (a slow one, a newer release's). Only with the `test-support` feature: the
/// binaries apply the embedded set.
#[cfg(feature = "test-support")]
pub async fn migrate_with(client: &mut Client, migrations: &[Migration]) -> Result<(), StoreError> {
    apply(client, migrations).await
}

/// `migrations` applied as the module documentation says, the session's timeouts lifted while
/// they run.
pub(super) async fn apply(client: &mut Client, migrations: &[Migration]) -> Result<(), StoreError> {
    client
        .batch_execute(
            "SET statement_timeout = 0; SET lock_timeout = 0; \
             SET idle_in_transaction_session_timeout = 0",
        )
        .await?;
    let outcome = apply_under_lock(client, migrations).await;
    let reset = client
        .batch_execute(
            "RESET statement_timeout; RESET lock_timeout; \
             RESET idle_in_transaction_session_timeout",
        )
        .await;
    outcome?;
    reset?;
    Ok(())
}

async fn apply_under_lock(client: &mut Client, migrations: &[Migration]) -> Result<(), StoreError> {
    take_migration_lock(client).await?;
    client
        .batch_execute(&format!(
            "SET lock_timeout = {}",
            MIGRATION_LOCK_TIMEOUT.as_millis()
        ))
        .await?;
    let outcome = apply_pending(client, migrations).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_ID])
        .await;
    outcome?;
    unlock?;
    Ok(())
}

/// Takes the migration lock, waiting as long as another process holds it (the session has no
/// `statement_timeout` and no `lock_timeout` here), and says so when it has to wait.
async fn take_migration_lock(client: &Client) -> Result<(), StoreError> {
    let taken: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&MIGRATION_LOCK_ID])
        .await?
        .try_get(0)?;
    if taken {
        return Ok(());
    }
    tracing::info!("another process is applying migrations: waiting for it to finish");
    let started = Instant::now();
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_ID])
        .await?;
    tracing::info!(
        waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "the other process's migrations are over"
    );
    Ok(())
}

async fn apply_pending(client: &mut Client, migrations: &[Migration]) -> Result<(), StoreError> {
    let history = read_history(client).await?;
    let exists = history.is_some();
    let plan = plan(history.unwrap_or_default(), migrations).map_err(StoreError::Migration)?;
    if !plan.unknown.is_empty() {
        let unknown: Vec<String> = plan.unknown.iter().map(ToString::to_string).collect();
        tracing::warn!(
            migrations = unknown.join(", "),
            "the schema holds migrations this release does not know (a newer release applied \
             them); starting on it"
        );
    }
    if plan.pending.is_empty() {
        return Ok(());
    }
    if !exists {
        client
            .batch_execute(CREATE_HISTORY)
            .await
            .map_err(|e| failed("cannot create the migration history", &e))?;
    }
    for migration in plan.pending {
        apply_one(client, migration).await?;
    }
    Ok(())
}

/// One migration and its history row, in one transaction.
async fn apply_one(client: &mut Client, migration: &Migration) -> Result<(), StoreError> {
    let label = migration.to_string();
    let sql = migration
        .sql()
        .ok_or_else(|| StoreError::Migration(format!("{label} has no SQL")))?;
    let applied_on = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let transaction = client.transaction().await?;
    transaction
        .batch_execute(sql)
        .await
        .map_err(|e| failed(&format!("{label} failed"), &e))?;
    transaction
        .execute(
            RECORD_MIGRATION,
            &[
                &migration.version(),
                &migration.name(),
                &applied_on,
                &migration.checksum().to_string(),
            ],
        )
        .await
        .map_err(|e| failed(&format!("cannot record {label}"), &e))?;
    transaction
        .commit()
        .await
        .map_err(|e| failed(&format!("cannot commit {label}"), &e))?;
    tracing::info!(
        version = migration.version(),
        name = migration.name(),
        "applied migration"
    );
    Ok(())
}

/// A migration error in an operator's words; a lock wait that ran out says which setting ended it.
fn failed(what: &str, error: &tokio_postgres::Error) -> StoreError {
    let reason = describe_postgres(error);
    if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
        return StoreError::Migration(format!(
            "{what}: {reason}: a table it changes stayed locked by another session for {} s \
             (the migrations' lock_timeout); start again to retry",
            MIGRATION_LOCK_TIMEOUT.as_secs()
        ));
    }
    StoreError::Migration(format!("{what}: {reason}"))
}

/// One row of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    version: i32,
    name: String,
    checksum: String,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "V{}__{}", self.version, self.name)
    }
}

/// The history, lowest version first; `None` when the database has none yet.
async fn read_history(client: &Client) -> Result<Option<Vec<Applied>>, StoreError> {
    let rows = match client.query(READ_HISTORY, &[]).await {
        Ok(rows) => rows,
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(None),
        Err(e) => return Err(failed(&format!("cannot read {HISTORY_TABLE}"), &e)),
    };
    rows.iter()
        .map(|row| {
            Ok(Applied {
                version: row.try_get(0)?,
                name: row.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                checksum: row.try_get::<_, Option<String>>(2)?.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map(Some)
        .map_err(StoreError::from)
}

/// What to do with a history.
#[derive(Debug)]
struct Plan<'a> {
    /// Known migrations not applied yet, lowest version first.
    pending: Vec<&'a Migration>,
    /// Applied migrations this binary does not know.
    unknown: Vec<Applied>,
}

/// Holds the history to the known migrations; the error says why the history is refused.
fn plan(applied: Vec<Applied>, known: &[Migration]) -> Result<Plan<'_>, String> {
    let mut known: Vec<&Migration> = known.iter().collect();
    known.sort();
    if let Some(pair) = known
        .windows(2)
        .find(|pair| pair[0].version() == pair[1].version())
    {
        return Err(format!(
            "two migrations share version {}: {} and {}",
            pair[0].version(),
            pair[0],
            pair[1]
        ));
    }
    let mut unknown = Vec::new();
    for row in &applied {
        match known.iter().find(|m| m.version() == row.version) {
            Some(migration) => {
                if migration.name() != row.name || migration.checksum().to_string() != row.checksum
                {
                    return Err(format!(
                        "the migration history diverges from this release's: version {} is \
                         applied as {row} (checksum {}), this release has {migration} (checksum \
                         {}); no release of this line wrote that history, so nothing is applied",
                        row.version,
                        row.checksum,
                        migration.checksum()
                    ));
                }
            }
            None => unknown.push(row.clone()),
        }
    }
    let latest = applied.iter().map(|row| row.version).max();
    let pending: Vec<&Migration> = known
        .into_iter()
        .filter(|m| !applied.iter().any(|row| row.version == m.version()))
        .collect();
    if let (Some(first), Some(latest)) = (pending.first(), latest)
        && first.version() < latest
    {
        return Err(format!(
            "the migration history diverges from this release's: {first} is not applied but \
             the later version {latest} is; applying it now would run migrations out of order, \
             so nothing is applied"
        ));
    }
    Ok(Plan { pending, unknown })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migration(name: &str) -> Migration {
        Migration::unapplied(name, &format!("-- {name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn row(migration: &Migration) -> Applied {
        Applied {
            version: migration.version(),
            name: migration.name().to_owned(),
            checksum: migration.checksum().to_string(),
        }
    }

    fn versions(pending: &[&Migration]) -> Vec<i32> {
        pending.iter().map(|m| m.version()).collect()
    }

    #[test]
    fn pending_migrations_are_applied_lowest_first() {
        let known = [migration("V2__b"), migration("V1__a"), migration("V3__c")];
        let empty = plan(Vec::new(), &known).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(versions(&empty.pending), [1, 2, 3]);
        let partial = plan(vec![row(&known[1])], &known).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(versions(&partial.pending), [2, 3]);
        assert!(partial.unknown.is_empty());
    }

    #[test]
    fn versions_of_a_newer_release_are_reported_not_refused() {
        let known = [migration("V1__a"), migration("V2__b")];
        let newer = migration("V3__c");
        let history = vec![row(&known[0]), row(&known[1]), row(&newer)];
        let plan = plan(history, &known).unwrap_or_else(|e| panic!("{e}"));
        assert!(plan.pending.is_empty());
        assert_eq!(plan.unknown, [row(&newer)]);
        assert_eq!(plan.unknown[0].to_string(), "V3__c");
    }

    #[test]
    fn a_known_version_under_another_name_or_checksum_is_refused() {
        let known = [migration("V1__a"), migration("V2__b")];
        let renamed = Applied {
            name: "other".to_owned(),
            ..row(&known[1])
        };
        let changed = Applied {
            checksum: "1".to_owned(),
            ..row(&known[1])
        };
        for history in [vec![row(&known[0]), renamed], vec![row(&known[0]), changed]] {
            let error = plan(history, &known).map(|_| ()).expect_err("refused");
            assert!(error.contains("diverges"), "{error}");
            assert!(error.contains("V2__b"), "{error}");
        }
    }

    #[test]
    fn a_known_version_skipped_by_the_history_is_refused() {
        let known = [migration("V1__a"), migration("V2__b"), migration("V3__c")];
        let history = vec![row(&known[0]), row(&known[2])];
        let error = plan(history, &known).map(|_| ()).expect_err("refused");
        assert!(error.contains("V2__b is not applied"), "{error}");
        let newer = Applied {
            version: 9,
            name: "future".to_owned(),
            checksum: "9".to_owned(),
        };
        let error = plan(vec![row(&known[0]), newer], &known)
            .map(|_| ())
            .expect_err("refused");
        assert!(error.contains("later version 9"), "{error}");
    }

    #[test]
    fn two_migrations_of_one_version_are_refused() {
        let known = [migration("V1__a"), migration("V1__b")];
        let error = plan(Vec::new(), &known).map(|_| ()).expect_err("refused");
        assert!(error.contains("share version 1"), "{error}");
    }

    #[test]
    fn the_embedded_migrations_are_in_order_and_distinct() {
        let embedded = embedded_migrations();
        assert!(!embedded.is_empty());
        let versions: Vec<i32> = embedded.iter().map(Migration::version).collect();
        let mut sorted = versions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(versions, sorted);
        assert!(plan(Vec::new(), &embedded).is_ok());
    }
}
