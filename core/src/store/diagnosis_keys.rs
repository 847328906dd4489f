//! `diagnosis_keys`: storing an upload's keys under the keypair's quota (DESIGN §3.3).
//!
//! The keys keep no link to the keypair that uploaded them: only the portal's
//! label, the region and hour-granular submission and publish hours.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::types::{ToSql, Type};

use super::encryption_keys::{LockedKeypair, UploadKeypair, lock_keypair_for_upload};
use super::events::{Event, append_event};
use super::publication_seal::{database_clock_sql, hold_seal_shared};
use super::{LongSession, Store, StoreError, utc_date};
use crate::domain::{DiagnosisKey, KeyData, Region, ReportType, ServerPublicKey};
use crate::time::{self, HourNumber, UnixSeconds, held_back_until};

/// The result of [`Store::store_upload`] and [`Store::store_diagnosis_keys`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKeysOutcome {
    /// Committed: `inserted` new keys (duplicates are not counted) and the quota left.
    Stored { inserted: u32, remaining: i32 },
    /// The keypair's quota was already used up; nothing was stored.
    QuotaExhausted,
    /// More new keys than the quota left; nothing was stored.
    TooManyKeys,
    /// The keypair is gone or no longer valid (purged or expired meanwhile).
    KeypairInvalid,
}

impl Store {
    /// Stores validated keys on the keypair of `server_public`, as
    /// [`Store::store_upload`] does once the upload is open and valid.
    pub async fn store_diagnosis_keys(
        &self,
        server_public: &ServerPublicKey,
        keys: &[DiagnosisKey],
        region: &Region,
        now: DateTime<Utc>,
        validity_days: u32,
    ) -> Result<StoreKeysOutcome, StoreError> {
        let stored = self
            .store_upload(server_public, region, now, validity_days, |_| {
                Ok::<_, Infallible>(keys)
            })
            .await?;
        Ok(stored.unwrap_or_else(|never| match never {}))
    }

    /// Stores an upload in one transaction with the keypair row locked, so
    /// concurrent uploads on one keypair can never exceed its quota
    /// (DESIGN §3.3). Keys whose `key_data` already exists are skipped and do
    /// not consume quota, which makes a replayed upload harmless.
    ///
    /// One statement locks the keypair and reads both what `open` needs to
    /// open and validate the upload and the quota; `open` then runs, and only
    /// if it returns keys are they written. `Ok(Err(_))` is `open`'s
    /// rejection, `KeypairInvalid` a keypair that is unknown, unclaimed or no
    /// longer valid: in both cases nothing is written. The quota is judged
    /// after `open`, so an invalid upload on a spent keypair fails as invalid.
    ///
    /// `open` runs while the row lock is held and the connection is checked
    /// out. That is the price of reading and locking the keypair in one round
    /// trip, and it is small: opening the box and validating a 14-key upload
    /// takes about a tenth of a millisecond, nearly all of it the X25519
    /// agreement, which is the order of one round trip to a database on the
    /// same host and less than one across a network. The only requests that
    /// can wait for the lock are other uploads to the same keypair, i.e. from
    /// the same phone, and each waits at most that long more than before.
    /// Reading without the lock first would cost every upload a second round
    /// trip to spare that rare concurrent upload a wait of that size.
    pub async fn store_upload<K, E>(
        &self,
        server_public: &ServerPublicKey,
        region: &Region,
        now: DateTime<Utc>,
        validity_days: u32,
        open: impl FnOnce(UploadKeypair) -> Result<K, E>,
    ) -> Result<Result<StoreKeysOutcome, E>, StoreError>
    where
        K: AsRef<[DiagnosisKey]>,
    {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Dropping the transaction on any early return rolls it back, which releases the
        // locks: a failed upload changes nothing.
        let Some(locked) = lock_for_upload(&tx, server_public, region, now, validity_days).await?
        else {
            return Ok(Ok(StoreKeysOutcome::KeypairInvalid));
        };
        let keys = match open(locked.keypair) {
            Ok(keys) => keys,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let keys = keys.as_ref();
        let upload = Upload {
            server_public,
            region,
            now,
            originator: &locked.originator,
            remaining: locked.remaining_keys,
        };
        // A spent keypair still files its keys: only if every one was stored by the upload
        // that spent it (its repeat, the answer lost) is the upload answered as stored.
        let filed = self.file_keys(&tx, &upload, keys).await?;
        if upload.remaining <= 0 && filed.inserted == 0 {
            // Dropping the transaction rolls it back: a repeat changes nothing, not even the
            // keypair's row, so a repeat of the repeat is recognised too.
            return Ok(Ok(spent_keypair_outcome(
                &tx,
                &locked.last_written_by,
                keys,
            )
            .await?));
        }
        let Some(left) = settle_quota(&tx, &upload, filed).await? else {
            return Ok(Ok(if upload.remaining <= 0 {
                StoreKeysOutcome::QuotaExhausted
            } else {
                StoreKeysOutcome::TooManyKeys
            }));
        };
        tx.commit().await?;
        if filed.late && filed.inserted > 0 {
            report_late_keys(filed.inserted);
        }
        Ok(Ok(StoreKeysOutcome::Stored {
            inserted: u32::try_from(filed.inserted).unwrap_or(0),
            remaining: left,
        }))
    }

    /// Files the keys (DESIGN §2, §4.2), counting the upload, and in the same round trip
    /// takes the quota on the assumption that every key is new: the statements are
    /// independent, so they are pipelined. [`settle_quota`] corrects the quota when some
    /// keys were duplicates.
    async fn file_keys(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        upload: &Upload<'_>,
        keys: &[DiagnosisKey],
    ) -> Result<Filed, StoreError> {
        let columns = KeyColumns::new(keys)?;
        let key_count = i32::try_from(keys.len()).unwrap_or(i32::MAX);
        let assumed_left = upload.remaining.saturating_sub(key_count).max(0);
        let insert_sql = insert_keys_sql();
        let (insert, quota) = futures::try_join!(
            tx.prepare_cached(&insert_sql),
            tx.prepare_cached(SET_QUOTA_SQL),
        )?;
        let clock = self.database_clock_override();
        let region = upload.region.as_str();
        let server_key = upload.server_public.as_bytes().as_slice();
        let date = utc_date(upload.now);
        let insert_params: [&(dyn ToSql + Sync); 12] = [
            &columns.key_data,
            &columns.rolling_start,
            &columns.rolling_period,
            &columns.transmission_risk,
            &columns.report_type,
            &columns.days_since_onset,
            &region,
            &upload.originator,
            &columns.held_back_until,
            &clock,
            &date,
            &key_count,
        ];
        let quota_params: [&(dyn ToSql + Sync); 2] = [&server_key, &assumed_left];
        let (row, quota) = futures::join!(
            tx.query_one(&insert, &insert_params),
            tx.execute(&quota, &quota_params),
        );
        // The insert's error first: a failed statement aborts the transaction, and the
        // statements pipelined after it only report that.
        let row = row?;
        quota?;
        Ok(Filed {
            inserted: i32::try_from(row.try_get::<_, i64>(0)?).unwrap_or(i32::MAX),
            late: row.try_get::<_, Option<bool>>(1)?.unwrap_or(false),
            assumed_left,
        })
    }
}

/// Takes the seal lock shared, so the exporter cannot seal an hour these keys may still be
/// filed under until the transaction ends (DESIGN §4.2), and reads and locks the keypair
/// (DESIGN §3.3): both statements in one round trip.
async fn lock_for_upload(
    tx: &deadpool_postgres::Transaction<'_>,
    server_public: &ServerPublicKey,
    region: &Region,
    now: DateTime<Utc>,
    validity_days: u32,
) -> Result<Option<LockedKeypair>, StoreError> {
    let (_, locked) = futures::try_join!(
        hold_seal_shared(tx, region.as_str()),
        lock_keypair_for_upload(tx, server_public, now, validity_days),
    )?;
    Ok(locked)
}

/// Whether an upload to a spent keypair that adds no key repeats the upload that spent the
/// quota: every one of its keys was filed by `spent_by`, the transaction that last wrote the
/// keypair's row (DESIGN §3.3). Only such a repeat is acknowledged; any other is refused as a
/// spent keypair, so that a spent keypair cannot probe which keys other keypairs stored. The
/// keys and the keypair stay as unlinked as the database already keeps them: nothing is
/// written, and `xmin` is the inserting transaction PostgreSQL records on every row version.
async fn spent_keypair_outcome(
    tx: &deadpool_postgres::Transaction<'_>,
    spent_by: &str,
    keys: &[DiagnosisKey],
) -> Result<StoreKeysOutcome, StoreError> {
    Ok(if repeats_spending_upload(tx, spent_by, keys).await? {
        StoreKeysOutcome::Stored {
            inserted: 0,
            remaining: 0,
        }
    } else {
        StoreKeysOutcome::QuotaExhausted
    })
}

/// Whether every key of `keys` was filed by the transaction `spent_by`.
async fn repeats_spending_upload(
    tx: &deadpool_postgres::Transaction<'_>,
    spent_by: &str,
    keys: &[DiagnosisKey],
) -> Result<bool, StoreError> {
    let key_data: Vec<&[u8]> = keys
        .iter()
        .map(|k| k.key_data.as_bytes().as_slice())
        .collect();
    let statement = tx.prepare_cached(REPEATS_SPENDING_UPLOAD_SQL).await?;
    let row = tx.query_one(&statement, &[&key_data, &spent_by]).await?;
    Ok(row.try_get(0)?)
}

/// Whether every key of `$1` was filed by the transaction `$2` (an upload with no key left
/// after the relevance rule repeats any upload).
const REPEATS_SPENDING_UPLOAD_SQL: &str = "SELECT coalesce(bool_and(EXISTS (
         SELECT 1 FROM diagnosis_keys d WHERE d.key_data = k AND d.xmin::text = $2
     )), true)
       FROM unnest($1::bytea[]) AS k";

/// The quota rule of DESIGN §3.3: more new keys than the quota left stores nothing (`None`:
/// the caller rolls back); otherwise the quota drops by the new keys only, so duplicates
/// cost nothing. Corrects the quota [`Store::file_keys`] assumed when some keys were not new,
/// and counts OTKExhausted when these keys spent the last of it.
async fn settle_quota(
    tx: &deadpool_postgres::Transaction<'_>,
    upload: &Upload<'_>,
    filed: Filed,
) -> Result<Option<i32>, StoreError> {
    if filed.inserted > upload.remaining {
        return Ok(None);
    }
    let left = upload.remaining - filed.inserted;
    if left != filed.assumed_left {
        let quota = tx.prepare_cached(SET_QUOTA_SQL).await?;
        let server_key = upload.server_public.as_bytes().as_slice();
        tx.execute(&quota, &[&server_key, &left]).await?;
    }
    if left == 0 && filed.inserted > 0 {
        let today = utc_date(upload.now);
        append_event(tx, Event::OtkExhausted, upload.originator, today).await?;
    }
    Ok(Some(left))
}

/// What one upload is stored under: its keypair, region, time, and the quota it found.
struct Upload<'a> {
    server_public: &'a ServerPublicKey,
    region: &'a Region,
    now: DateTime<Utc>,
    originator: &'a str,
    remaining: i32,
}

/// What filing the keys did: the new keys, whether they were filed after their hour was
/// sealed, and the quota written on the assumption that every key was new.
#[derive(Debug, Clone, Copy)]
struct Filed {
    inserted: i32,
    late: bool,
    assumed_left: i32,
}

/// The keypair's quota after an upload; the keypair row is locked by the transaction.
const SET_QUOTA_SQL: &str = "UPDATE encryption_keys SET remaining_keys = $2, uploaded = true
                              WHERE server_public_key = $1";

/// The statement that files an upload's keys (DESIGN §2, §4.2). The submission hour is the
/// database's clock's hour (one clock for every replica); a key is published in
/// `max(its hold-back hour, the submission hour, the hour after the sealed one)`, so a key
/// whose upload reaches the database after its hour was sealed goes into the next open hour.
/// The upload is counted in `tek_upload_count` only if it added a key: the repeat of an upload
/// whose answer was lost is not a second upload. Its one row: how many keys were new, and whether they were filed after the seal moved
/// past their submission hour (a database clock behind the exporter's seal).
fn insert_keys_sql() -> String {
    format!(
        "WITH clock AS (
             SELECT floor(extract(epoch FROM {now}) / 3600)::int4 AS submission_hour,
                    coalesce((SELECT sealed_through_hour + 1 FROM publication_seal
                               WHERE region = $7), 0) AS first_open_hour
         ), inserted AS (
             INSERT INTO diagnosis_keys
                 (key_data, rolling_start_interval_number, rolling_period,
                  transmission_risk_level, report_type, days_since_onset,
                  region, originator, hour_of_submission, publish_hour)
             SELECT k, rsin, rp, trl, rt, dso, $7, $8, clock.submission_hour,
                    greatest(held, clock.submission_hour, clock.first_open_hour)
               FROM clock,
                    UNNEST($1::bytea[], $2::int4[], $3::int2[], $4::int2[], $5::int2[],
                           $6::int2[], $9::int4[]) AS u(k, rsin, rp, trl, rt, dso, held)
             ON CONFLICT (key_data) DO NOTHING
             RETURNING 1
         ), counted AS (
             INSERT INTO tek_upload_count (originator, date, count)
             SELECT $8, $11, $12 WHERE EXISTS (SELECT 1 FROM inserted)
         )
         SELECT count(*)::int8, (SELECT first_open_hour > submission_hour FROM clock)
           FROM inserted",
        now = database_clock_sql(10),
    )
}

/// Keys filed after their hour was sealed: the database's clock was behind the hour the
/// exporter had already read (a failover to a server whose clock is late). They are
/// published in the next open hour; the operator should know the clocks disagree.
fn report_late_keys(inserted: i32) {
    tracing::warn!(
        keys = inserted,
        "an upload reached the database after its hour was sealed; its keys are published in the next open hour (check the database server's clock)"
    );
    metrics::counter!("submit_keys_filed_after_seal_total")
        .increment(u64::try_from(inserted).unwrap_or(0));
}

/// The keys of one upload as column arrays for a single `UNNEST` insert.
struct KeyColumns<'a> {
    key_data: Vec<&'a [u8]>,
    rolling_start: Vec<i32>,
    rolling_period: Vec<i16>,
    transmission_risk: Vec<i16>,
    report_type: Vec<i16>,
    days_since_onset: Vec<Option<i16>>,
    held_back_until: Vec<i32>,
}

impl<'a> KeyColumns<'a> {
    fn new(keys: &'a [DiagnosisKey]) -> Result<Self, StoreError> {
        let small =
            |v: i32, what: &'static str| i16::try_from(v).map_err(|_| StoreError::InvalidRow(what));
        let mut columns = KeyColumns {
            key_data: Vec::with_capacity(keys.len()),
            rolling_start: Vec::with_capacity(keys.len()),
            rolling_period: Vec::with_capacity(keys.len()),
            transmission_risk: Vec::with_capacity(keys.len()),
            report_type: Vec::with_capacity(keys.len()),
            days_since_onset: Vec::with_capacity(keys.len()),
            held_back_until: Vec::with_capacity(keys.len()),
        };
        for key in keys {
            columns.key_data.push(key.key_data.as_bytes().as_slice());
            columns
                .rolling_start
                .push(key.rolling_start_interval_number);
            columns
                .rolling_period
                .push(small(key.rolling_period, "rolling_period")?);
            columns.transmission_risk.push(small(
                key.transmission_risk_level,
                "transmission_risk_level",
            )?);
            columns
                .report_type
                .push(small(key.report_type.as_i32(), "report_type")?);
            columns.days_since_onset.push(
                key.days_since_onset
                    .map(|d| small(d, "days_since_onset"))
                    .transpose()?,
            );
            let hour = held_back_until(key.rolling_start_interval_number, key.rolling_period);
            columns
                .held_back_until
                .push(i32::try_from(hour).map_err(|_| StoreError::InvalidRow("publish_hour"))?);
        }
        Ok(columns)
    }
}

/// A key's expiry in SQL, as [`time::key_expiry`] computes it.
fn key_expiry_sql() -> String {
    format!(
        "(rolling_start_interval_number + rolling_period)::int8 * {}",
        time::SECONDS_PER_INTERVAL
    )
}

/// Relevance in SQL, kept in step with [`time::is_relevant`] by construction: the same
/// comparison, `expiry > cutoff`, with the expiry of [`key_expiry_sql`]. When the instant is
/// known, the cutoff is [`time::relevance_cutoff`] of it, computed in Rust and spliced in as a
/// number; when it is the end of each row's publish hour, the cutoff is that function's
/// subtraction of [`time::RELEVANCE_SECONDS`], the one constant, done per row. The end-to-end
/// test `relevance::the_store_selects_exactly_the_keys_is_relevant_accepts`
/// (`tests/tests/it/relevance.rs`) checks that the keys selected at and around every boundary
/// are exactly those [`time::is_relevant`] accepts.
fn relevant_sql(cutoff: RelevanceCutoff) -> String {
    match cutoff {
        RelevanceCutoff::EndOfPublishHour => format!(
            "{} > (publish_hour::int8 + 1) * {} - {}",
            key_expiry_sql(),
            time::SECONDS_PER_HOUR,
            time::RELEVANCE_SECONDS
        ),
        RelevanceCutoff::At(at) => {
            format!(
                "{} > {}",
                key_expiry_sql(),
                time::relevance_cutoff(at.get())
            )
        }
    }
}

/// The instant a key must still be relevant at.
#[derive(Debug, Clone, Copy)]
enum RelevanceCutoff {
    /// The end of the key's own publish hour.
    EndOfPublishHour,
    /// A given Unix second.
    At(UnixSeconds),
}

fn publishable(
    region: &Region,
    first_hour: HourNumber,
    last_hour: HourNumber,
) -> Result<String, StoreError> {
    publishable_at(region, first_hour, last_hour, None)
}

/// The keys of a range of publish hours that may be written into a file: relevant at the end
/// of their publish hour (expired at most 14 days before it, DESIGN §2), and with `relevant_at`
/// also still relevant at that instant (a file spanning many days, built later than its keys'
/// hours).
fn publishable_at(
    region: &Region,
    first_hour: HourNumber,
    last_hour: HourNumber,
    relevant_at: Option<UnixSeconds>,
) -> Result<String, StoreError> {
    // COPY takes no parameters: the region is spliced in, so insist on the
    // characters `Region` already guarantees.
    if !region
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(StoreError::InvalidRow("region"));
    }
    let mut condition = format!(
        "region = '{}' AND publish_hour BETWEEN {first_hour} AND {last_hour} AND {}",
        region.as_str(),
        relevant_sql(RelevanceCutoff::EndOfPublishHour)
    );
    if let Some(at) = relevant_at {
        condition.push_str(" AND ");
        condition.push_str(&relevant_sql(RelevanceCutoff::At(at)));
    }
    Ok(condition)
}

/// The metadata of keys and how many keys carry it (for padding that follows
/// the real keys' distribution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyMetadataCount {
    pub rolling_start_interval_number: i32,
    pub rolling_period: i32,
    pub transmission_risk_level: i32,
    pub report_type: ReportType,
    pub days_since_onset: Option<i32>,
    pub count: i64,
}

/// A stream of keys read with a binary `COPY`, in the canonical order of DESIGN §4.1,
/// holding its connection until it ends.
///
/// Sorting by `key_data` in Postgres costs about five times the read itself
/// (tests/bench/README.md), so the canonical order is made here from keys packed into 24 bytes
/// each ([`RunKey`]), in one of two ways:
/// - one publish hour (an hourly window, the export's every-pass read): Postgres sends the rows
///   unsorted and the whole hour is sorted here; memory is the hour's keys, 24 bytes each;
/// - a longer window: Postgres sorts only by `rolling_start_interval_number`, an integer, and
///   each run of equal start intervals is sorted here by the rest of the canonical order;
///   memory is one run of keys: with keys spread over 14 days of start intervals, about a
///   fourteenth of the window.
///
/// The connection runs with export-sized settings (a long statement timeout, a
/// large sort memory), so it is a connection of its own ([`Store::long_session`]), never
/// one of the pool's. Once its `COPY` has ended, dropping the stream keeps the session for the
/// next read of the pass; a stream dropped before its end closes it.
pub struct KeyStream {
    rows: Pin<Box<BinaryCopyOutStream>>,
    /// The COPY runs on it; once the COPY has ended, dropping it keeps it for the next read.
    session: LongSession,
    /// The whole stream is one run (the rows come unsorted).
    whole: bool,
    /// The current run: its start interval and its keys; once `sorted`, yielded from `next`.
    run_start: i32,
    run: Vec<RunKey>,
    sorted: bool,
    next: usize,
    /// The first key of the following run, read before the current run was sorted.
    lookahead: Option<DiagnosisKey>,
    finished: bool,
}

/// A key ordered as DESIGN §4.1 orders keys: its start interval, then `meta`, which packs
/// rolling period, transmission risk, report type and days since onset (unknown first) from
/// the most significant byte down, then the key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RunKey {
    rolling_start_interval_number: i32,
    meta: u32,
    key_data: [u8; 16],
}

impl RunKey {
    fn pack(key: &DiagnosisKey) -> Result<RunKey, StoreError> {
        let byte =
            |v: i32, what: &'static str| u8::try_from(v).map_err(|_| StoreError::InvalidRow(what));
        let onset = match key.days_since_onset {
            None => 0,
            Some(days) => byte(days + 15, "diagnosis_keys.days_since_onset")?,
        };
        Ok(RunKey {
            rolling_start_interval_number: key.rolling_start_interval_number,
            meta: u32::from_be_bytes([
                byte(key.rolling_period, "diagnosis_keys.rolling_period")?,
                byte(
                    key.transmission_risk_level,
                    "diagnosis_keys.transmission_risk_level",
                )?,
                byte(key.report_type.as_i32(), "diagnosis_keys.report_type")?,
                onset,
            ]),
            key_data: *key.key_data.as_bytes(),
        })
    }

    fn unpack(&self) -> Result<DiagnosisKey, StoreError> {
        let [period, risk, report, onset] = self.meta.to_be_bytes();
        Ok(DiagnosisKey {
            key_data: KeyData::from_array(self.key_data),
            rolling_start_interval_number: self.rolling_start_interval_number,
            rolling_period: i32::from(period),
            transmission_risk_level: i32::from(risk),
            report_type: ReportType::from_i32(i32::from(report))
                .ok_or(StoreError::InvalidRow("diagnosis_keys.report_type"))?,
            days_since_onset: (onset != 0).then(|| i32::from(onset) - 15),
        })
    }
}

/// A whole window is sorted in one statement: it may take longer than the
/// request path's statement timeout and wants more than the default sort memory.
pub(super) const EXPORT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn export_session() -> String {
    format!(
        "SET statement_timeout = {}; SET work_mem = '256MB'",
        EXPORT_STATEMENT_TIMEOUT.as_millis()
    )
}

impl std::fmt::Debug for KeyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyStream")
    }
}

const KEY_COLUMN_TYPES: [Type; 6] = [
    Type::BYTEA,
    Type::INT4,
    Type::INT2,
    Type::INT2,
    Type::INT2,
    Type::INT2,
];

fn key_from_row(row: &BinaryCopyOutRow) -> Result<DiagnosisKey, StoreError> {
    let key_data = KeyData::try_from(row.try_get::<&[u8]>(0)?)
        .map_err(|_| StoreError::InvalidRow("diagnosis_keys.key_data"))?;
    let report_type = ReportType::from_i32(i32::from(row.try_get::<i16>(4)?))
        .ok_or(StoreError::InvalidRow("diagnosis_keys.report_type"))?;
    Ok(DiagnosisKey {
        key_data,
        rolling_start_interval_number: row.try_get(1)?,
        rolling_period: i32::from(row.try_get::<i16>(2)?),
        transmission_risk_level: i32::from(row.try_get::<i16>(3)?),
        report_type,
        days_since_onset: row.try_get::<Option<i16>>(5)?.map(i32::from),
    })
}

impl Stream for KeyStream {
    type Item = Result<DiagnosisKey, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.sorted {
                if let Some(packed) = this.run.get(this.next) {
                    this.next += 1;
                    return Poll::Ready(Some(packed.unpack()));
                }
                if this.finished {
                    return Poll::Ready(None);
                }
                // The run is spent: the lookahead key opens the next one.
                this.run.clear();
                this.next = 0;
                this.sorted = false;
                if let Some(first) = this.lookahead.take() {
                    this.run_start = first.rolling_start_interval_number;
                    match RunKey::pack(&first) {
                        Ok(packed) => this.run.push(packed),
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    }
                }
            }
            // Read the run until its start interval changes or the rows end.
            let key = match this.rows.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    // The COPY ran to its end: its session may serve the next read.
                    this.session.reusable();
                    this.finished = true;
                    this.run.sort_unstable();
                    this.sorted = true;
                    continue;
                }
                Poll::Ready(Some(Ok(row))) => match key_from_row(&row) {
                    Ok(key) => key,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
            };
            if this.run.is_empty() {
                this.run_start = key.rolling_start_interval_number;
            }
            if this.whole || key.rolling_start_interval_number == this.run_start {
                match RunKey::pack(&key) {
                    Ok(packed) => this.run.push(packed),
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            } else {
                this.lookahead = Some(key);
                this.run.sort_unstable();
                this.sorted = true;
            }
        }
    }
}

impl Store {
    /// Streams the publishable keys of `region` whose publish hour lies in
    /// `first_hour..=last_hour`, in canonical order; with `relevant_at`, only
    /// those still relevant at that instant.
    pub async fn stream_publishable_keys(
        &self,
        region: &Region,
        first_hour: HourNumber,
        last_hour: HourNumber,
        relevant_at: Option<UnixSeconds>,
    ) -> Result<KeyStream, StoreError> {
        let whole = first_hour == last_hour;
        let connection = self.long_session(&export_session()).await?;
        let query = format!(
            "COPY (SELECT key_data, rolling_start_interval_number, rolling_period,
                          transmission_risk_level, report_type, days_since_onset
                     FROM diagnosis_keys WHERE {}{})
             TO STDOUT (FORMAT binary)",
            publishable_at(region, first_hour, last_hour, relevant_at)?,
            if whole {
                ""
            } else {
                " ORDER BY rolling_start_interval_number"
            }
        );
        match connection.client()?.copy_out(query.as_str()).await {
            Ok(copy) => Ok(KeyStream {
                rows: Box::pin(BinaryCopyOutStream::new(copy, &KEY_COLUMN_TYPES)),
                session: connection,
                whole,
                run_start: 0,
                run: Vec::new(),
                sorted: false,
                next: 0,
                lookahead: None,
                finished: false,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// How the publishable keys of the hours are spread over their metadata.
    pub async fn key_metadata_histogram(
        &self,
        region: &Region,
        first_hour: HourNumber,
        last_hour: HourNumber,
    ) -> Result<Vec<KeyMetadataCount>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT rolling_start_interval_number, rolling_period, transmission_risk_level,
                            report_type, days_since_onset, count(*)
                       FROM diagnosis_keys WHERE {}
                      GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5 NULLS FIRST",
                    publishable(region, first_hour, last_hour)?
                ),
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(KeyMetadataCount {
                    rolling_start_interval_number: row.try_get(0)?,
                    rolling_period: i32::from(row.try_get::<_, i16>(1)?),
                    transmission_risk_level: i32::from(row.try_get::<_, i16>(2)?),
                    report_type: ReportType::from_i32(i32::from(row.try_get::<_, i16>(3)?))
                        .ok_or(StoreError::InvalidRow("diagnosis_keys.report_type"))?,
                    days_since_onset: row.try_get::<_, Option<i16>>(4)?.map(i32::from),
                    count: row.try_get(5)?,
                })
            })
            .collect()
    }

    /// The earliest publish hour in `from_hour..=to_hour` holding a publishable key.
    pub async fn earliest_publish_hour(
        &self,
        region: &Region,
        from_hour: HourNumber,
        to_hour: HourNumber,
    ) -> Result<Option<HourNumber>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT min(publish_hour)::int8 FROM diagnosis_keys WHERE {}",
                    publishable(region, from_hour, to_hour)?
                ),
                &[],
            )
            .await?;
        Ok(row.try_get::<_, Option<i64>>(0)?.map(HourNumber::new))
    }
}
