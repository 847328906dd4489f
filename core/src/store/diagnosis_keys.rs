//! `diagnosis_keys`: storing an upload's keys under the keypair's quota (DESIGN §3.3).
//!
//! The keys keep no link to the keypair that uploaded them: only the portal's
//! label, the region and hour-granular submission and publish hours.

use chrono::{DateTime, Utc};

use super::encryption_keys::keypair_valid_since;
use super::events::{Event, record_event};
use super::{Store, StoreError, utc_date};
use crate::domain::{DiagnosisKey, Region, ServerPublicKey};
use crate::time::{hour_number, publish_hour};

/// The result of [`Store::store_diagnosis_keys`].
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
    /// Stores validated keys in one transaction with the keypair row locked, so
    /// concurrent uploads on one keypair can never exceed its quota. Keys whose
    /// `key_data` already exists are skipped and do not consume quota, which makes
    /// a replayed upload harmless.
    pub async fn store_diagnosis_keys(
        &self,
        server_public: &ServerPublicKey,
        keys: &[DiagnosisKey],
        region: &Region,
        now: DateTime<Utc>,
        validity_days: u32,
    ) -> Result<StoreKeysOutcome, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let lock = tx
            .prepare_cached(
                "SELECT remaining_keys, originator FROM encryption_keys
                  WHERE server_public_key = $1 AND app_public_key IS NOT NULL AND created >= $2
                    FOR UPDATE",
            )
            .await?;
        let server_key = server_public.as_bytes().as_slice();
        let Some(row) = tx
            .query_opt(
                &lock,
                &[&server_key, &keypair_valid_since(now, validity_days)],
            )
            .await?
        else {
            return Ok(StoreKeysOutcome::KeypairInvalid);
        };
        let remaining: i32 = row.try_get(0)?;
        let originator: String = row.try_get(1)?;
        if remaining <= 0 {
            return Ok(StoreKeysOutcome::QuotaExhausted);
        }

        let submission_hour = hour_number(now.timestamp());
        let columns = KeyColumns::new(keys, submission_hour)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO diagnosis_keys
                     (key_data, rolling_start_interval_number, rolling_period,
                      transmission_risk_level, report_type, days_since_onset,
                      region, originator, hour_of_submission, publish_hour)
                 SELECT k, rsin, rp, trl, rt, dso, $7, $8, $9, ph
                   FROM UNNEST($1::bytea[], $2::int4[], $3::int2[], $4::int2[], $5::int2[],
                               $6::int2[], $10::int4[]) AS u(k, rsin, rp, trl, rt, dso, ph)
                 ON CONFLICT (key_data) DO NOTHING",
            )
            .await?;
        let submission_hour_column = i32::try_from(submission_hour)
            .map_err(|_| StoreError::InvalidRow("submission hour out of range"))?;
        let inserted = tx
            .execute(
                &insert,
                &[
                    &columns.key_data,
                    &columns.rolling_start,
                    &columns.rolling_period,
                    &columns.transmission_risk,
                    &columns.report_type,
                    &columns.days_since_onset,
                    &region.as_str(),
                    &originator,
                    &submission_hour_column,
                    &columns.publish_hour,
                ],
            )
            .await?;
        let inserted = i32::try_from(inserted).unwrap_or(i32::MAX);
        if inserted > remaining {
            // Dropping the transaction rolls back the insert: nothing is stored.
            return Ok(StoreKeysOutcome::TooManyKeys);
        }
        let left = remaining - inserted;
        let update = tx
            .prepare_cached(
                "UPDATE encryption_keys SET remaining_keys = $2, uploaded = true
                  WHERE server_public_key = $1",
            )
            .await?;
        tx.execute(&update, &[&server_key, &left]).await?;
        let count = tx
            .prepare_cached(
                "INSERT INTO tek_upload_count (originator, date, count) VALUES ($1, $2, $3)",
            )
            .await?;
        let key_count = i32::try_from(keys.len()).unwrap_or(i32::MAX);
        tx.execute(&count, &[&originator, &utc_date(now), &key_count])
            .await?;
        if left == 0 {
            record_event(&tx, Event::OtkExhausted, &originator, utc_date(now), 1).await?;
        }
        tx.commit().await?;
        Ok(StoreKeysOutcome::Stored {
            inserted: u32::try_from(inserted).unwrap_or(0),
            remaining: left,
        })
    }
}

/// The keys of one upload as column arrays for a single `UNNEST` insert.
struct KeyColumns<'a> {
    key_data: Vec<&'a [u8]>,
    rolling_start: Vec<i32>,
    rolling_period: Vec<i16>,
    transmission_risk: Vec<i16>,
    report_type: Vec<i16>,
    days_since_onset: Vec<Option<i16>>,
    publish_hour: Vec<i32>,
}

impl<'a> KeyColumns<'a> {
    fn new(keys: &'a [DiagnosisKey], submission_hour: i64) -> Result<Self, StoreError> {
        let small =
            |v: i32, what: &'static str| i16::try_from(v).map_err(|_| StoreError::InvalidRow(what));
        let mut columns = KeyColumns {
            key_data: Vec::with_capacity(keys.len()),
            rolling_start: Vec::with_capacity(keys.len()),
            rolling_period: Vec::with_capacity(keys.len()),
            transmission_risk: Vec::with_capacity(keys.len()),
            report_type: Vec::with_capacity(keys.len()),
            days_since_onset: Vec::with_capacity(keys.len()),
            publish_hour: Vec::with_capacity(keys.len()),
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
            let hour = publish_hour(
                submission_hour,
                key.rolling_start_interval_number,
                key.rolling_period,
            );
            columns
                .publish_hour
                .push(i32::try_from(hour).map_err(|_| StoreError::InvalidRow("publish_hour"))?);
        }
        Ok(columns)
    }
}
