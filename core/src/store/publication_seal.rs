//! `publication_seal` and the database's clock: one clock for publication (DESIGN §2, §4.2).
//!
//! A key's submission hour is read from the database's clock when its upload is stored, so
//! every replica files keys under the same hour whatever its own clock says. Before a pass
//! reads any hour it seals the hours up to the last closed one ([`Store::seal_hours`]): it
//! takes the region's seal lock exclusively, which waits for every upload still storing keys
//! (they hold it shared, [`hold_seal_shared`]), and records the hour. An upload that stores
//! its keys after that reads the seal and files them no earlier than the next open hour. So an
//! hour, once read, never gains a key.
//!
//! The database's clock is the only clock read here, and the only one a query reads at all
//! (besides the exporter's comparison of its own clock with it, and the refresh stamp of
//! `submit_settings`, which replicas and the exporter must judge by one clock too). Tests that drive time with a
//! manual clock put that clock in its place ([`Store::with_database_clock`], `test-support`).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::error::SqlState;

use super::{Store, StoreError};
use crate::time::HourNumber;

/// The class of the two-key advisory lock that orders uploads before a seal (the region's
/// name is the second key). Two-key locks never collide with the one-key locks of
/// migrations, exports and hash IDs.
const SEAL_LOCK_CLASS: i32 = 0x7365_616c; // "seal"

/// The longest one attempt to seal waits for the uploads under way (each holds the lock for
/// a few milliseconds), and so the longest new uploads wait behind it: a quarter of the
/// shortest statement timeout an upload may run under (DESIGN §6), so that an upload queued
/// behind a waiting seal still has the time to store its keys.
const SEAL_LOCK_WAIT: std::time::Duration =
    std::time::Duration::from_millis(crate::config::CommonConfig::MIN_STATEMENT_TIMEOUT_MS / 4);
/// Attempts to seal before the pass's hours step fails (and the next pass tries again): about
/// ten seconds of waits and pauses in all.
const SEAL_ATTEMPTS: u32 = 21;

/// The database's clock, or the one a test put in its place, as an SQL expression over a
/// `timestamptz` parameter that is NULL unless a test replaced the clock.
pub(super) fn database_clock_sql(parameter: usize) -> String {
    format!("coalesce(${parameter}::timestamptz, clock_timestamp())")
}

/// Holds the region's seal lock shared until `tx` ends: the exporter cannot seal an hour while
/// an upload that may still file keys under it is storing them.
pub(super) async fn hold_seal_shared(
    tx: &impl GenericClient,
    region: &str,
) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached("SELECT pg_advisory_xact_lock_shared($1, hashtext($2))")
        .await?;
    tx.execute(&statement, &[&SEAL_LOCK_CLASS, &region]).await?;
    Ok(())
}

impl Store {
    /// What the database's clock says now (or the clock a test put in its place).
    pub async fn database_now(&self) -> Result<DateTime<Utc>, StoreError> {
        if let Some(now) = self.database_clock_override() {
            return Ok(now);
        }
        let client = self.pool.get().await?;
        let row = client.query_one("SELECT clock_timestamp()", &[]).await?;
        Ok(row.try_get(0)?)
    }

    /// Seals the hours of `region` (the region keys are stored under) up to `through`: waits
    /// for every upload storing keys at this moment, then records `through`, so that every
    /// later upload files its keys after it. A seal never moves back.
    ///
    /// While the seal waits for its lock, new uploads queue behind it, so it waits at most
    /// [`SEAL_LOCK_WAIT`] at a time: an upload transaction that stalls (its replica paused,
    /// its network gone) makes the seal give way and try again, [`SEAL_ATTEMPTS`] times in
    /// all, rather than hold every other upload back until the database ends that transaction.
    pub async fn seal_hours(&self, region: &str, through: HourNumber) -> Result<(), StoreError> {
        let hour = i32::try_from(through.get())
            .map_err(|_| StoreError::InvalidRow("sealed hour out of range"))?;
        for attempt in 1..=SEAL_ATTEMPTS {
            if self.try_seal(region, hour).await? {
                return Ok(());
            }
            if attempt < SEAL_ATTEMPTS {
                tokio::time::sleep(SEAL_LOCK_WAIT).await;
            }
        }
        Err(StoreError::Postgres(format!(
            "the hours of {region} could not be sealed: uploads held the seal lock through \
             {SEAL_ATTEMPTS} waits of {} ms",
            SEAL_LOCK_WAIT.as_millis()
        )))
    }

    /// One attempt of [`Store::seal_hours`]; `false` when the lock was not had in time.
    async fn try_seal(&self, region: &str, hour: i32) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The lock timeout ends an attempt that waits too long, and the attempt then gives way
        // and tries again. The session's statement timeout may be as short as that wait (DESIGN
        // §6) and would end the attempt first, failing the pass, so it is set just above it.
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}",
            SEAL_LOCK_WAIT.as_millis(),
            SEAL_LOCK_WAIT.saturating_mul(2).as_millis()
        ))
        .await?;
        let locked = tx
            .execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&SEAL_LOCK_CLASS, &region],
            )
            .await;
        match locked {
            Ok(_) => {}
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        tx.execute(
            "INSERT INTO publication_seal (region, sealed_through_hour) VALUES ($1, $2)
             ON CONFLICT (region) DO UPDATE
                SET sealed_through_hour = greatest(publication_seal.sealed_through_hour,
                                                   EXCLUDED.sealed_through_hour)",
            &[&region, &hour],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The last hour of `region` sealed so far, if any.
    pub async fn sealed_through(&self, region: &str) -> Result<Option<HourNumber>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT sealed_through_hour FROM publication_seal WHERE region = $1",
                &[&region],
            )
            .await?;
        row.map(|row| Ok(HourNumber::new(i64::from(row.try_get::<_, i32>(0)?))))
            .transpose()
    }

    /// The instant to pass for [`database_clock_sql`]'s parameter: `None` (the database's
    /// own clock) unless a test replaced it.
    pub(super) fn database_clock_override(&self) -> Option<DateTime<Utc>> {
        self.database_clock.as_ref().map(|clock| clock.now())
    }

    /// This store with `clock` in place of the database's clock, for tests that drive time
    /// with a manual clock: the hour uploads are filed under and the exporter's clock check
    /// then read it. Only with the `test-support` feature; the binaries always use the
    /// database's own clock.
    #[cfg(feature = "test-support")]
    pub fn with_database_clock(mut self, clock: std::sync::Arc<dyn crate::time::Clock>) -> Store {
        self.database_clock = Some(clock);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CommonConfig;

    /// An upload queued behind a waiting seal waits at most [`SEAL_LOCK_WAIT`] for the seal
    /// lock, then stores its keys: under the shortest statement timeout it must still have
    /// most of it left.
    #[test]
    fn uploads_behind_a_waiting_seal_keep_most_of_the_shortest_statement_timeout() {
        let shortest = std::time::Duration::from_millis(CommonConfig::MIN_STATEMENT_TIMEOUT_MS);
        assert!(
            SEAL_LOCK_WAIT * 4 <= shortest,
            "{SEAL_LOCK_WAIT:?} of {shortest:?}"
        );
        // Each attempt waits for the lock, and a pause of the same length follows each but the last.
        let patience = SEAL_LOCK_WAIT * (2 * SEAL_ATTEMPTS - 1);
        assert!(
            patience >= std::time::Duration::from_secs(10),
            "a seal gives up after {patience:?}, before a stalled upload had ten seconds"
        );
    }
}
