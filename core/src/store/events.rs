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
    let statement = client
        .prepare_cached(
            "INSERT INTO events (identifier, source, date, count) VALUES ($1, $2, $3, $4)
             ON CONFLICT (identifier, device_type, source, date)
             DO UPDATE SET count = events.count + EXCLUDED.count",
        )
        .await?;
    client
        .execute(&statement, &[&event.as_str(), &source, &date, &count])
        .await?;
    Ok(())
}

pub(super) async fn record_otk_duration(
    client: &impl GenericClient,
    source: &str,
    date: NaiveDate,
    hours: i32,
) -> Result<(), StoreError> {
    let statement = client
        .prepare_cached(
            "INSERT INTO otk_life_duration (originator, date, hours, count) VALUES ($1, $2, $3, 1)
             ON CONFLICT (originator, date, hours)
             DO UPDATE SET count = otk_life_duration.count + 1",
        )
        .await?;
    client
        .execute(&statement, &[&source, &date, &hours])
        .await?;
    Ok(())
}

impl Store {
    /// The server events of one UTC day, ordered by event and source.
    pub async fn events_on(&self, date: NaiveDate) -> Result<Vec<EventCount>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT identifier, device_type, source, count::int8 FROM events
                  WHERE date = $1 ORDER BY identifier, device_type, source",
                &[&date],
            )
            .await?;
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
        let rows = client
            .query(
                "SELECT originator, hours, count::int8 FROM otk_life_duration
                  WHERE date = $1 ORDER BY originator, hours",
                &[&date],
            )
            .await?;
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
