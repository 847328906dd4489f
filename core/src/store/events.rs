//! `events`, `tek_upload_count`, `otk_life_duration`: the aggregate server events
//! of DESIGN §5, read back by the `/events/...` metrics API.
//!
//! Rows are counts per originator label and UTC day; nothing here identifies a
//! person, a code or a key.

use chrono::NaiveDate;
use deadpool_postgres::GenericClient;
use serde::Serialize;

use super::{Store, StoreError};

/// A server event counted per originator and UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// A portal issued a code.
    OtkGenerated,
    /// A portal re-issued the unclaimed code of a hash ID.
    OtkRegenerated,
    /// An app claimed a code.
    OtkClaimed,
    /// A code expired without being claimed (counted when purged).
    OtkUnclaimed,
    /// A claimed keypair reached the end of its validity after uploading keys.
    OtkExpired,
    /// A claimed keypair reached the end of its validity without any upload.
    OtkExpiredNoUploads,
    /// A keypair's upload quota was used up.
    OtkExhausted,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::OtkGenerated => "OTKGenerated",
            Event::OtkRegenerated => "OTKRegenerated",
            Event::OtkClaimed => "OTKClaimed",
            Event::OtkUnclaimed => "OTKUnclaimed",
            Event::OtkExpired => "OTKExpired",
            Event::OtkExpiredNoUploads => "OTKExpiredNoUploads",
            Event::OtkExhausted => "OTKExhausted",
        }
    }
}

/// One row of `GET /events/{date}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventCount {
    pub identifier: String,
    pub device_type: String,
    pub source: String,
    pub date: String,
    pub count: i64,
}

/// One row of `GET /events/uploads/{date}`: how many uploads carried `keys` keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadCount {
    pub source: String,
    pub date: String,
    pub keys: i32,
    pub uploads: i64,
}

/// One row of `GET /events/otkdurations/{date}`: how many codes were claimed
/// `hours` whole hours after they were issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtkDuration {
    pub source: String,
    pub date: String,
    pub hours: i32,
    pub count: i64,
}

/// Counts `count` events into the daily row of `events`, in place. Only the exporter's
/// retention does this (a few batched counts a pass); the submit service's requests append
/// to the log with [`append_event`] instead, so that they never wait for one another.
pub(super) async fn record_event(
    client: &impl GenericClient,
    event: Event,
    source: &str,
    date: NaiveDate,
    count: i32,
) -> Result<(), StoreError> {
    if count == 0 {
        return Ok(());
    }
    let statement = client.prepare_cached(COUNT_EVENT_SQL).await?;
    client
        .execute(&statement, &[&event.as_str(), &source, &date, &count])
        .await?;
    Ok(())
}

/// Appends one event to `event_log`, in the request's transaction: a row of its own, which no
/// other request waits for (DESIGN §5). [`Store::fold_event_logs`] counts it into `events`.
pub(super) async fn append_event(
    client: &impl GenericClient,
    event: Event,
    source: &str,
    date: NaiveDate,
) -> Result<(), StoreError> {
    let statement = client.prepare_cached(APPEND_EVENT_SQL).await?;
    client
        .execute(&statement, &[&event.as_str(), &source, &date])
        .await?;
    Ok(())
}

/// Appends one claim's latency to `otk_life_duration_log` (see [`append_event`]).
pub(super) async fn append_otk_duration(
    client: &impl GenericClient,
    source: &str,
    date: NaiveDate,
    hours: i32,
) -> Result<(), StoreError> {
    let statement = client.prepare_cached(APPEND_OTK_DURATION_SQL).await?;
    client
        .execute(&statement, &[&source, &date, &hours])
        .await?;
    Ok(())
}

/// The class of the two-key advisory lock one folding replica holds (second key 0), so that
/// two replicas folding at the same moment do not lock each other's rows in opposite orders.
const FOLD_LOCK_CLASS: i32 = 0x666f_6c64; // "fold"

const COUNT_EVENT_SQL: &str = "INSERT INTO events (identifier, source, date, count)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (identifier, device_type, source, date)
     DO UPDATE SET count = events.count + EXCLUDED.count";

const APPEND_EVENT_SQL: &str =
    "INSERT INTO event_log (identifier, source, date, count) VALUES ($1, $2, $3, 1)";

const APPEND_OTK_DURATION_SQL: &str =
    "INSERT INTO otk_life_duration_log (originator, date, hours) VALUES ($1, $2, $3)";

/// Moves the committed rows of `event_log` into `events`: the rows it deletes are the rows it
/// adds, in one statement, so an event is counted exactly once whenever the fold fails.
pub const FOLD_EVENTS_SQL: &str = "WITH moved AS (
         DELETE FROM event_log RETURNING identifier, source, date, count
     )
     INSERT INTO events (identifier, source, date, count)
     SELECT identifier, source, date, sum(count)::int4 FROM moved
      GROUP BY identifier, source, date
     ON CONFLICT (identifier, device_type, source, date)
     DO UPDATE SET count = events.count + EXCLUDED.count";

/// Moves the committed rows of `otk_life_duration_log` into `otk_life_duration`, likewise.
pub const FOLD_OTK_DURATIONS_SQL: &str = "WITH moved AS (
         DELETE FROM otk_life_duration_log RETURNING originator, date, hours
     )
     INSERT INTO otk_life_duration (originator, date, hours, count)
     SELECT originator, date, hours, count(*)::int4 FROM moved
      GROUP BY originator, date, hours
     ON CONFLICT (originator, date, hours)
     DO UPDATE SET count = otk_life_duration.count + EXCLUDED.count";

/// `GET /events/{date}`: the folded counts and the log's rows not folded yet.
const EVENTS_ON_SQL: &str = "SELECT identifier, device_type, source, sum(count)::int8 FROM (
         SELECT identifier, device_type, source, count FROM events WHERE date = $1
         UNION ALL
         SELECT identifier, 'server', source, count FROM event_log WHERE date = $1
     ) e
     GROUP BY identifier, device_type, source ORDER BY identifier, device_type, source";

/// `GET /events/otkdurations/{date}`: likewise.
const OTK_DURATIONS_ON_SQL: &str = "SELECT originator, hours, sum(count)::int8 FROM (
         SELECT originator, hours, count FROM otk_life_duration WHERE date = $1
         UNION ALL
         SELECT originator, hours, 1 FROM otk_life_duration_log WHERE date = $1
     ) d
     GROUP BY originator, hours ORDER BY originator, hours";

impl Store {
    /// Folds the event logs into the daily tables (DESIGN §5); a running replica does it every
    /// minute. Returns how many daily rows it added to or created, or `None` when another replica
    /// was folding.
    pub async fn fold_event_logs(&self) -> Result<Option<u64>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1, 0)",
                &[&FOLD_LOCK_CLASS],
            )
            .await?
            .try_get(0)?;
        if !locked {
            return Ok(None);
        }
        let events = tx.execute(FOLD_EVENTS_SQL, &[]).await?;
        let durations = tx.execute(FOLD_OTK_DURATIONS_SQL, &[]).await?;
        tx.commit().await?;
        Ok(Some(events + durations))
    }

    /// The server events of one UTC day, ordered by event and source.
    pub async fn events_on(&self, date: NaiveDate) -> Result<Vec<EventCount>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client.query(EVENTS_ON_SQL, &[&date]).await?;
        rows.iter()
            .map(|row| {
                Ok(EventCount {
                    identifier: row.try_get(0)?,
                    device_type: row.try_get(1)?,
                    source: row.try_get(2)?,
                    date: date.to_string(),
                    count: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// Uploads of one UTC day grouped by originator and number of keys.
    pub async fn upload_counts_on(&self, date: NaiveDate) -> Result<Vec<UploadCount>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT t.originator, t.count, count(*) FROM tek_upload_count t
                  WHERE t.date = $1 GROUP BY t.originator, t.count ORDER BY t.originator, t.count",
                &[&date],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UploadCount {
                    source: row.try_get(0)?,
                    date: date.to_string(),
                    keys: row.try_get(1)?,
                    uploads: row.try_get(2)?,
                })
            })
            .collect()
    }

    /// Claim latencies of one UTC day per originator, in whole hours.
    pub async fn otk_durations_on(&self, date: NaiveDate) -> Result<Vec<OtkDuration>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client.query(OTK_DURATIONS_ON_SQL, &[&date]).await?;
        rows.iter()
            .map(|row| {
                Ok(OtkDuration {
                    source: row.try_get(0)?,
                    date: date.to_string(),
                    hours: row.try_get(1)?,
                    count: row.try_get(2)?,
                })
            })
            .collect()
    }
}
