//! `exports`: the publication ledger (DESIGN §4.2), plus the exporter's
//! single-writer lock, its fence and its padding secret.
//!
//! A row is written only after its object is uploaded, so the ledger never names
//! an object that does not exist; a crash between the two leaves an object the
//! next run overwrites with identical bytes.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use rand::RngExt;

use super::{Store, StoreError};
use crate::time::UnixSeconds;

/// One published object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    pub object_key: String,
    /// `hourly`, `daily`, … (the exporter names its kinds).
    pub kind: String,
    pub region: String,
    pub start_ts: i64,
    pub end_ts: i64,
    pub part: i32,
    pub key_count: i64,
    pub bytes: i64,
    /// Lowercase hex SHA-256 of the object.
    pub sha256: String,
}

/// Held while this process is the one exporter at work (a session-level
/// Postgres advisory lock on a connection taken out of the pool), with the
/// fencing generation it took with it.
pub struct ExporterLock {
    connection: Option<Object>,
    key: i64,
    fence: Fence,
}

impl std::fmt::Debug for ExporterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterLock")
            .field("key", &self.key)
            .field("fence", &self.fence)
            .finish()
    }
}

impl ExporterLock {
    /// What every write of the pass holding this lock is checked against.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Releases the lock and returns the connection to the pool.
    pub async fn release(mut self) -> Result<(), StoreError> {
        if let Some(connection) = self.connection.take() {
            let unlocked = connection
                .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
                .await;
            if unlocked.is_err() {
                // Closing the session releases the lock for certain.
                drop(Object::take(connection));
            }
            unlocked?;
        }
        Ok(())
    }
}

impl Drop for ExporterLock {
    fn drop(&mut self) {
        // Not released (an error or a panic unwound past it): close the session
        // rather than return a connection that still holds the lock.
        if let Some(connection) = self.connection.take() {
            drop(Object::take(connection));
        }
    }
}

/// The fencing token of one lock tenure (DESIGN §4.2): the region's generation, incremented
/// by every process that takes the lock, and the backend of the session holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    region: String,
    generation: i64,
    holder: i32,
}

impl Fence {
    pub fn generation(&self) -> i64 {
        self.generation
    }
}

/// A transaction that holds the region's fence row `FOR SHARE` after checking that the
/// generation is still the pass's own and that the lock session still holds the lock. While
/// it is open, no other exporter can take the lock over (its increment of the generation waits
/// for this transaction), so whatever the pass writes meanwhile (a bucket object, ledger rows
/// in this transaction) is ordered before anything a successor writes. [`FenceHold::commit`]
/// ends it; dropped without that, its connection is closed, which rolls it back.
///
/// The transaction stays idle while the object store works, so its session is allowed to be
/// idle in it for as long as one store operation may take (`idle_limit` of
/// [`Store::hold_fence`]): no database limit shorter than the store's own may cut a write that
/// is still going (DESIGN §4.2). [`FenceHold::renew`] between operations keeps each idle spell
/// to one operation.
pub struct FenceHold {
    connection: Option<Object>,
    fence: Fence,
}

impl std::fmt::Debug for FenceHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FenceHold").finish_non_exhaustive()
    }
}

impl Drop for FenceHold {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            drop(Object::take(connection));
        }
    }
}

/// The rows of objects of kind `$2` in region `$1`, still in the indexes, whose windows start
/// at or after `$3`.
const INDEXED_CONDITION: &str =
    "region = $1 AND kind = $2 AND start_ts >= $3 AND unindexed_at IS NULL";

/// The ledger rows matching `condition`, oldest first (by start, then part), read on `client`.
async fn records_on(
    client: &tokio_postgres::Client,
    condition: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<ExportRecord>, StoreError> {
    let rows = client
        .query(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM exports WHERE {condition} ORDER BY start_ts, part"
            ),
            params,
        )
        .await?;
    rows.iter().map(record_from_row).collect()
}

impl FenceHold {
    fn client(&self) -> Result<&Object, StoreError> {
        self.connection.as_ref().ok_or(StoreError::LostLock)
    }

    /// Checks again that the pass still holds its lock, before the next store operation under
    /// this hold: a lost lock is found before that write, and the session's idle spell starts
    /// afresh.
    pub async fn renew(&self) -> Result<(), StoreError> {
        check_fence(self.client()?, &self.fence).await
    }

    /// [`Store::indexed_exports`] read through the hold's own transaction: what the indexes
    /// written under this hold must name, without a second connection.
    pub async fn indexed_exports(
        &self,
        region: &str,
        kind: &str,
        since: UnixSeconds,
    ) -> Result<Vec<ExportRecord>, StoreError> {
        records_on(
            self.client()?,
            INDEXED_CONDITION,
            &[&region, &kind, &since.get()],
        )
        .await
    }

    /// Ends the hold, committing the ledger writes made through it.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if let Some(connection) = self.connection.take() {
            match connection.batch_execute("COMMIT").await {
                Ok(()) => drop(connection),
                Err(e) => {
                    drop(Object::take(connection));
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Records published objects (all parts of one window together). A rerun that
    /// republished the same objects replaces their rows.
    pub async fn record_exports(
        &self,
        records: &[ExportRecord],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.client()?;
        let statement = client
            .prepare_cached(
                "INSERT INTO exports (object_key, kind, region, start_ts, end_ts, part, key_count,
                                      bytes, sha256, published_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (object_key) DO UPDATE SET
                     kind = EXCLUDED.kind, region = EXCLUDED.region,
                     start_ts = EXCLUDED.start_ts, end_ts = EXCLUDED.end_ts,
                     part = EXCLUDED.part, key_count = EXCLUDED.key_count,
                     bytes = EXCLUDED.bytes, sha256 = EXCLUDED.sha256,
                     published_at = EXCLUDED.published_at,
                     unindexed_at = NULL, deleted_at = NULL",
            )
            .await?;
        for record in records {
            let key_count = i32::try_from(record.key_count)
                .map_err(|_| StoreError::InvalidRow("exports.key_count"))?;
            client
                .execute(
                    &statement,
                    &[
                        &record.object_key,
                        &record.kind,
                        &record.region,
                        &record.start_ts,
                        &record.end_ts,
                        &record.part,
                        &key_count,
                        &record.bytes,
                        &record.sha256,
                        &now,
                    ],
                )
                .await?;
        }
        Ok(())
    }

    /// Marks objects of `kind` whose window starts before `before` as gone
    /// from the indexes (call after the indexes without them are written).
    pub async fn mark_unindexed(
        &self,
        region: &str,
        kind: &str,
        before: UnixSeconds,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Ok(self
            .client()?
            .execute(
                "UPDATE exports SET unindexed_at = $4
                  WHERE region = $1 AND kind = $2 AND start_ts < $3 AND unindexed_at IS NULL",
                &[&region, &kind, &before.get(), &now],
            )
            .await?)
    }

    /// Records that an object was deleted from the bucket.
    pub async fn mark_deleted(
        &self,
        object_key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client()?
            .execute(
                "UPDATE exports SET deleted_at = $2 WHERE object_key = $1",
                &[&object_key, &now],
            )
            .await?;
        Ok(())
    }
}

/// Holds `fence`'s row `FOR SHARE` in the transaction open on `client`, having checked that its
/// generation is still the pass's own and that the lock session still holds the lock.
async fn check_fence(client: &Object, fence: &Fence) -> Result<(), StoreError> {
    let row = client
        .query_opt(
            "SELECT f.generation,
                    EXISTS (SELECT 1 FROM pg_locks l
                             WHERE l.locktype = 'advisory' AND l.granted AND l.pid = $2)
               FROM exporter_fence f WHERE f.region = $1 FOR SHARE OF f",
            &[&fence.region, &fence.holder],
        )
        .await?;
    let current = match &row {
        Some(row) => (row.try_get::<_, i64>(0)?, row.try_get::<_, bool>(1)?),
        None => return Err(StoreError::LostLock),
    };
    if current != (fence.generation, true) {
        return Err(StoreError::LostLock);
    }
    Ok(())
}

fn lock_key(region: &str) -> i64 {
    // "diagexp" in the high bytes, a hash of the region in the low ones, so
    // exporters of different regions do not block each other.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in region.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    (0x6469_6167_6578_i64 << 16) ^ i64::from(hash)
}

fn record_from_row(row: &tokio_postgres::Row) -> Result<ExportRecord, StoreError> {
    Ok(ExportRecord {
        object_key: row.try_get(0)?,
        kind: row.try_get(1)?,
        region: row.try_get(2)?,
        start_ts: row.try_get(3)?,
        end_ts: row.try_get(4)?,
        part: row.try_get(5)?,
        key_count: i64::from(row.try_get::<_, i32>(6)?),
        bytes: row.try_get(7)?,
        sha256: row.try_get(8)?,
    })
}

const RECORD_COLUMNS: &str =
    "object_key, kind, region, start_ts, end_ts, part, key_count, bytes, sha256";

impl Store {
    /// Takes the exporter lock of `region` if no other process holds it, and with it the next
    /// fencing generation. The increment waits for a write of the previous holder that is
    /// still under way ([`FenceHold`]).
    pub async fn try_lock_exporter(
        &self,
        region: &str,
    ) -> Result<Option<ExporterLock>, StoreError> {
        let connection = self.pool.get().await?;
        let key = lock_key(region);
        let row = connection
            .query_one("SELECT pg_try_advisory_lock($1), pg_backend_pid()", &[&key])
            .await?;
        let locked: bool = row.try_get(0)?;
        if !locked {
            return Ok(None);
        }
        let holder: i32 = row.try_get(1)?;
        let mut lock = ExporterLock {
            connection: Some(connection),
            key,
            fence: Fence {
                region: region.to_owned(),
                generation: 0,
                holder,
            },
        };
        // Dropped on an error, the lock closes its session, which releases the lock.
        let connection = lock.connection.as_ref().ok_or(StoreError::LostLock)?;
        let row = connection
            .query_one(
                "INSERT INTO exporter_fence (region, generation) VALUES ($1, 1)
                 ON CONFLICT (region) DO UPDATE SET generation = exporter_fence.generation + 1
                 RETURNING generation",
                &[&region],
            )
            .await?;
        lock.fence.generation = row.try_get(0)?;
        Ok(Some(lock))
    }

    /// Opens a [`FenceHold`] for `fence`, or fails with [`StoreError::LostLock`] when the lock
    /// session is gone or another exporter has taken the lock since. Its session may stay idle
    /// in the transaction for `idle_limit` (the longest one store operation may take) instead
    /// of the pool's limit, twice the statement timeout.
    pub async fn hold_fence(
        &self,
        fence: &Fence,
        idle_limit: std::time::Duration,
    ) -> Result<FenceHold, StoreError> {
        let hold = FenceHold {
            connection: Some(self.pool.get().await?),
            fence: fence.clone(),
        };
        let client = hold.client()?;
        client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL idle_in_transaction_session_timeout = {}",
                idle_limit.as_millis().max(1)
            ))
            .await?;
        check_fence(client, fence).await?;
        Ok(hold)
    }

    /// The end of the newest window of `kind` published for `region`.
    pub async fn last_published_end(
        &self,
        region: &str,
        kind: &str,
    ) -> Result<Option<UnixSeconds>, StoreError> {
        Ok(self
            .ledger_aggregate("max(end_ts)", region, kind)
            .await?
            .map(UnixSeconds::new))
    }

    /// `SELECT {aggregate} FROM exports` over every window of `kind` published for `region`.
    async fn ledger_aggregate(
        &self,
        aggregate: &'static str,
        region: &str,
        kind: &str,
    ) -> Result<Option<i64>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &format!("SELECT {aggregate} FROM exports WHERE region = $1 AND kind = $2"),
                &[&region, &kind],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The window `(start, end)` of each of `object_keys` that the ledger holds and that is not
    /// deleted, in one query (a pass asks about every retrieval object at once).
    pub async fn published_windows(
        &self,
        object_keys: &[String],
    ) -> Result<HashMap<String, (i64, i64)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT object_key, start_ts, end_ts FROM exports
                  WHERE object_key = ANY($1) AND deleted_at IS NULL",
                &[&object_keys],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?))))
            .collect()
    }

    /// Which of `starts` begin a published window of `kind`, in one query.
    pub async fn published_starts(
        &self,
        region: &str,
        kind: &str,
        starts: &[i64],
    ) -> Result<HashSet<i64>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT DISTINCT start_ts FROM exports
                  WHERE region = $1 AND kind = $2 AND start_ts = ANY($3)",
                &[&region, &kind, &starts],
            )
            .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// Every object of `kind` not deleted whose window starts in `from..to`, oldest first
    /// (by start, then part).
    pub async fn live_exports(
        &self,
        region: &str,
        kind: &str,
        from: UnixSeconds,
        to: UnixSeconds,
    ) -> Result<Vec<ExportRecord>, StoreError> {
        self.records(
            "region = $1 AND kind = $2 AND start_ts >= $3 AND start_ts < $4 AND deleted_at IS NULL",
            &[&region, &kind, &from.get(), &to.get()],
        )
        .await
    }

    /// The ledger rows matching `condition`, oldest first (by start, then part).
    async fn records(
        &self,
        condition: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<ExportRecord>, StoreError> {
        records_on(&**self.pool.get().await?, condition, params).await
    }

    /// The start of the oldest window of `kind` ever published for `region`, deleted or not.
    pub async fn first_published_start(
        &self,
        region: &str,
        kind: &str,
    ) -> Result<Option<UnixSeconds>, StoreError> {
        Ok(self
            .ledger_aggregate("min(start_ts)", region, kind)
            .await?
            .map(UnixSeconds::new))
    }

    /// Every object of `kind` still in the indexes whose window starts at or
    /// after `since`, oldest first (by start, then part).
    pub async fn indexed_exports(
        &self,
        region: &str,
        kind: &str,
        since: UnixSeconds,
    ) -> Result<Vec<ExportRecord>, StoreError> {
        self.records(INDEXED_CONDITION, &[&region, &kind, &since.get()])
            .await
    }

    /// Objects that left the indexes before `unindexed_before` and are not deleted
    /// yet. The exporter passes its clock minus `DELETE_UNINDEXED_AFTER_HOURS`, so an
    /// object outlives its last index entry by at least that long (DESIGN §4.2): phones
    /// and CDN caches may still hold an index that names it.
    pub async fn exports_to_delete(
        &self,
        region: &str,
        unindexed_before: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT object_key FROM exports
                  WHERE region = $1 AND unindexed_at < $2 AND deleted_at IS NULL
                  ORDER BY start_ts, object_key",
                &[&region, &unindexed_before],
            )
            .await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    /// The named exporter secret, created (32 random bytes) on first use. Every
    /// exporter of the deployment reads the same one.
    pub async fn exporter_secret(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>, StoreError> {
        let client = self.pool.get().await?;
        let mut fresh = vec![0_u8; 32];
        rand::rng().fill(&mut fresh[..]);
        client
            .execute(
                "INSERT INTO exporter_secrets (name, secret, created) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &fresh, &now],
            )
            .await?;
        let row = client
            .query_one(
                "SELECT secret FROM exporter_secrets WHERE name = $1",
                &[&name],
            )
            .await?;
        Ok(row.try_get(0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::lock_key;

    #[test]
    fn lock_keys_differ_by_region_and_from_the_migration_lock() {
        assert_ne!(lock_key("CA"), lock_key("US"));
        assert_ne!(lock_key("CA"), super::super::MIGRATION_LOCK_ID);
        assert_eq!(lock_key("CA"), lock_key("CA"));
    }
}
