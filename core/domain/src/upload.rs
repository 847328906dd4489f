//! Validation of a decrypted upload (DESIGN §3.3): the conversion from the wire `Upload` to
//! domain [`DiagnosisKey`]s, returning the exact protocol error code of the first failure.
//!
//! The order of the checks is part of the wire contract (the apps and the seed server's tests
//! observe which error wins), so it follows DESIGN §3.3 line by line. This module is pure: it
//! never reads the clock (the caller passes `now`), never touches the database and never logs
//! anything about the keys.

use diagnosis_proto::encrypted_upload_response::ErrorCode;
use diagnosis_proto::{TemporaryExposureKey, Upload};
use thiserror::Error;

use crate::domain::{DiagnosisKey, KeyData, ReportType};
use crate::time;

/// Most keys one upload may carry (DESIGN §3.3): 14 days of keys, twice over.
pub const MAX_KEYS_PER_UPLOAD: usize = 28;

/// `rolling_period` when the field is absent (proto default, DESIGN §3).
const DEFAULT_ROLLING_PERIOD: i32 = 144;
/// Largest `rolling_period`: one day of intervals (DESIGN §3.3).
const MAX_ROLLING_PERIOD: i32 = 144;
/// Largest transmission risk level (DESIGN §3.3).
const MAX_TRANSMISSION_RISK_LEVEL: i32 = 8;
/// Days since onset of symptoms must lie in −14..=14 (DESIGN §3.3).
const MAX_DAYS_SINCE_ONSET: i32 = 14;
/// Widest span `(max rsin + 144) − min rsin` of one upload: 15 days of intervals (DESIGN §3.3).
const MAX_SPAN_INTERVALS: i64 = 2160;

/// Why an upload was refused. Each variant maps to exactly one protocol error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum UploadRejection {
    /// The upload holds no keys.
    #[error("the upload holds no keys")]
    NoKeysInPayload,
    /// The upload holds more than [`MAX_KEYS_PER_UPLOAD`] keys.
    #[error("the upload holds more than {MAX_KEYS_PER_UPLOAD} keys")]
    TooManyKeys,
    /// The timestamp is missing or more than an hour from server time.
    #[error("the upload timestamp is missing or too far from server time")]
    InvalidTimestamp,
    /// A key's rolling period is outside 1..=144.
    #[error("a key's rolling period is outside 1..=144")]
    InvalidRollingPeriod,
    /// A key's data is missing or not 16 bytes.
    #[error("a key's data is missing or not 16 bytes")]
    InvalidKeyData,
    /// A key's start interval is missing, not positive or in the future, or the keys span more
    /// than 15 days.
    #[error("a key's rolling start interval number is invalid, or the keys span too long")]
    InvalidRollingStartIntervalNumber,
    /// A key's transmission risk level is outside 0..=8.
    #[error("a key's transmission risk level is outside 0..=8")]
    InvalidTransmissionRiskLevel,
    /// A key's report type or days since onset is not acceptable, or the payload is not an
    /// `Upload` at all.
    #[error("the upload payload is invalid")]
    InvalidPayload,
}

impl UploadRejection {
    /// The error code the app receives (DESIGN §3, `EncryptedUploadResponse.ErrorCode`).
    pub fn code(self) -> ErrorCode {
        match self {
            Self::NoKeysInPayload => ErrorCode::NoKeysInPayload,
            Self::TooManyKeys => ErrorCode::TooManyKeys,
            Self::InvalidTimestamp => ErrorCode::InvalidTimestamp,
            Self::InvalidRollingPeriod => ErrorCode::InvalidRollingPeriod,
            Self::InvalidKeyData => ErrorCode::InvalidKeyData,
            Self::InvalidRollingStartIntervalNumber => ErrorCode::InvalidRollingStartIntervalNumber,
            Self::InvalidTransmissionRiskLevel => ErrorCode::InvalidTransmissionRiskLevel,
            Self::InvalidPayload => ErrorCode::InvalidPayload,
        }
    }
}

/// An upload that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedUpload {
    /// The keys to store, in request order, each `key_data` once, all still relevant.
    pub keys: Vec<DiagnosisKey>,
    /// Valid keys left out because they expired more than 14 days ago (DESIGN §3.3).
    pub dropped_irrelevant: usize,
}

/// Validates a decrypted `Upload` received at `now_unix` (DESIGN §3.3, from "0 keys" onwards;
/// the crypto checks before it belong to the handler).
///
/// Order, first failure wins: no keys; too many keys; timestamp; then each key in request
/// order with all of its checks before the next key (see [`validate_key`]); then the span of
/// all keys. Only when everything passed are keys dropped:
///
/// * a repeated `key_data` keeps its first occurrence in request order and drops the rest
///   (storage ignores duplicates anyway; dropping them here keeps the counts honest);
/// * keys that are no longer relevant ([`time::is_relevant`]) are dropped silently and
///   counted in [`ValidatedUpload::dropped_irrelevant`].
///
/// Irrelevant and repeated keys still take part in every check, including the span: they are
/// part of what the app sent.
pub fn validate_upload(upload: &Upload, now_unix: i64) -> Result<ValidatedUpload, UploadRejection> {
    if upload.keys.is_empty() {
        return Err(UploadRejection::NoKeysInPayload);
    }
    if upload.keys.len() > MAX_KEYS_PER_UPLOAD {
        return Err(UploadRejection::TooManyKeys);
    }
    // The app sends whole seconds only; nanos are ignored.
    let timestamp = upload
        .timestamp
        .as_ref()
        .ok_or(UploadRejection::InvalidTimestamp)?;
    if timestamp.seconds.abs_diff(now_unix) > time::MAX_UPLOAD_CLOCK_SKEW_SECONDS.unsigned_abs() {
        return Err(UploadRejection::InvalidTimestamp);
    }

    // The same one-hour allowance for a phone clock that runs fast (DESIGN §3.3).
    let latest_start =
        time::interval_number(now_unix.saturating_add(time::MAX_UPLOAD_CLOCK_SKEW_SECONDS));
    let checked = upload
        .keys
        .iter()
        .map(|key| validate_key(key, latest_start))
        .collect::<Result<Vec<_>, _>>()?;

    let starts = checked
        .iter()
        .map(|key| i64::from(key.rolling_start_interval_number));
    if let (Some(earliest), Some(latest)) = (starts.clone().min(), starts.max())
        && latest + time::INTERVALS_PER_DAY - earliest > MAX_SPAN_INTERVALS
    {
        return Err(UploadRejection::InvalidRollingStartIntervalNumber);
    }

    let mut keys: Vec<DiagnosisKey> = Vec::with_capacity(checked.len());
    let mut seen: Vec<KeyData> = Vec::with_capacity(checked.len());
    let mut dropped_irrelevant = 0;
    for key in checked {
        if seen.contains(&key.key_data) {
            continue;
        }
        seen.push(key.key_data);
        if time::is_relevant(key.expiry_unix(), now_unix) {
            keys.push(key);
        } else {
            dropped_irrelevant += 1;
        }
    }
    Ok(ValidatedUpload {
        keys,
        dropped_irrelevant,
    })
}

/// All checks of one key, in the order of DESIGN §3.3. `latest_start` is the latest
/// acceptable start interval: the current interval plus the one-hour allowance.
///
/// Absent fields: `rolling_period` is 144 (its proto default); `transmission_risk_level` is 0
/// (the proto2 default of an `int32`; the apps always send it); `report_type` absent or
/// `UNKNOWN` is stored as `CONFIRMED_TEST`, because a code is only issued after a confirmed
/// test; `days_since_onset` absent stays unknown.
fn validate_key(
    key: &TemporaryExposureKey,
    latest_start: i64,
) -> Result<DiagnosisKey, UploadRejection> {
    let rolling_period = key.rolling_period.unwrap_or(DEFAULT_ROLLING_PERIOD);
    if !(1..=MAX_ROLLING_PERIOD).contains(&rolling_period) {
        return Err(UploadRejection::InvalidRollingPeriod);
    }

    let key_data = key
        .key_data
        .as_deref()
        .and_then(|bytes| KeyData::try_from(bytes).ok())
        .ok_or(UploadRejection::InvalidKeyData)?;

    let rolling_start_interval_number = key
        .rolling_start_interval_number
        .filter(|start| *start > 0 && i64::from(*start) <= latest_start)
        .ok_or(UploadRejection::InvalidRollingStartIntervalNumber)?;

    let transmission_risk_level = key.transmission_risk_level.unwrap_or(0);
    if !(0..=MAX_TRANSMISSION_RISK_LEVEL).contains(&transmission_risk_level) {
        return Err(UploadRejection::InvalidTransmissionRiskLevel);
    }

    // prost keeps an enum number it does not know in the raw `i32`, so this sees every value
    // the app sent. RECURSIVE and REVOKED are server-side notions; an app may not send them.
    let report_type = match key.report_type {
        None | Some(0) => ReportType::ConfirmedTest,
        Some(number @ 1..=3) => {
            ReportType::from_i32(number).ok_or(UploadRejection::InvalidPayload)?
        }
        Some(_) => return Err(UploadRejection::InvalidPayload),
    };

    let days_since_onset = key.days_since_onset_of_symptoms;
    if days_since_onset
        .is_some_and(|days| !(-MAX_DAYS_SINCE_ONSET..=MAX_DAYS_SINCE_ONSET).contains(&days))
    {
        return Err(UploadRejection::InvalidPayload);
    }

    Ok(DiagnosisKey {
        key_data,
        rolling_start_interval_number,
        rolling_period,
        transmission_risk_level,
        report_type,
        days_since_onset,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use diagnosis_proto::Timestamp;
    use proptest::prelude::*;

    /// 2023-11-14T22:13:20Z, in interval 2_833_333.
    const NOW: i64 = 1_700_000_000;
    /// Interval at which the current UTC day started, where the app's newest key starts.
    const TODAY: i32 = 2_833_200;
    /// The latest start interval accepted at `NOW`: the current interval plus one hour.
    const LATEST_START: i32 = 2_833_333 + 6;

    fn key(id: u8) -> TemporaryExposureKey {
        TemporaryExposureKey {
            key_data: Some(vec![id; 16]),
            transmission_risk_level: Some(1),
            rolling_start_interval_number: Some(TODAY),
            rolling_period: Some(144),
            report_type: None,
            days_since_onset_of_symptoms: None,
        }
    }

    fn with(id: u8, change: impl FnOnce(&mut TemporaryExposureKey)) -> TemporaryExposureKey {
        let mut key = key(id);
        change(&mut key);
        key
    }

    fn upload(keys: Vec<TemporaryExposureKey>) -> Upload {
        Upload {
            timestamp: Some(Timestamp {
                seconds: NOW,
                nanos: 0,
            }),
            keys,
        }
    }

    fn at(seconds: i64, keys: Vec<TemporaryExposureKey>) -> Upload {
        Upload {
            timestamp: Some(Timestamp { seconds, nanos: 0 }),
            keys,
        }
    }

    fn many(count: usize) -> Vec<TemporaryExposureKey> {
        (0..count).map(|id| key(id as u8)).collect()
    }

    /// Expected outcome: `Ok((kept, dropped_irrelevant))` or the rejection.
    fn check(name: &str, upload: Upload, expected: Result<(usize, usize), UploadRejection>) {
        let actual = validate_upload(&upload, NOW).map(|v| (v.keys.len(), v.dropped_irrelevant));
        assert_eq!(actual, expected, "{name}");
    }

    use UploadRejection::*;

    #[test]
    fn one_row_per_error_code() {
        check("valid", upload(vec![key(1)]), Ok((1, 0)));
        check("no keys", upload(vec![]), Err(NoKeysInPayload));
        check("29 keys", upload(many(29)), Err(TooManyKeys));
        check(
            "no timestamp",
            Upload {
                timestamp: None,
                keys: vec![key(1)],
            },
            Err(InvalidTimestamp),
        );
        check(
            "bad rolling period",
            upload(vec![with(1, |k| k.rolling_period = Some(0))]),
            Err(InvalidRollingPeriod),
        );
        check(
            "bad key data",
            upload(vec![with(1, |k| k.key_data = Some(vec![1; 15]))]),
            Err(InvalidKeyData),
        );
        check(
            "bad rsin",
            upload(vec![with(1, |k| k.rolling_start_interval_number = Some(0))]),
            Err(InvalidRollingStartIntervalNumber),
        );
        check(
            "bad transmission risk level",
            upload(vec![with(1, |k| k.transmission_risk_level = Some(9))]),
            Err(InvalidTransmissionRiskLevel),
        );
        check(
            "bad report type",
            upload(vec![with(1, |k| k.report_type = Some(5))]),
            Err(InvalidPayload),
        );
        check(
            "bad days since onset",
            upload(vec![with(1, |k| k.days_since_onset_of_symptoms = Some(15))]),
            Err(InvalidPayload),
        );
        check(
            "span too wide",
            upload(vec![
                key(1),
                with(2, |k| k.rolling_start_interval_number = Some(TODAY - 2017)),
            ]),
            Err(InvalidRollingStartIntervalNumber),
        );
    }

    #[test]
    fn rejections_map_to_their_wire_codes() {
        fn check(rejection: UploadRejection, expected: ErrorCode, number: i32) {
            assert_eq!(rejection.code(), expected);
            assert_eq!(rejection.code() as i32, number, "{rejection:?}");
        }
        check(NoKeysInPayload, ErrorCode::NoKeysInPayload, 14);
        check(TooManyKeys, ErrorCode::TooManyKeys, 7);
        check(InvalidTimestamp, ErrorCode::InvalidTimestamp, 8);
        check(InvalidRollingPeriod, ErrorCode::InvalidRollingPeriod, 10);
        check(InvalidKeyData, ErrorCode::InvalidKeyData, 11);
        check(
            InvalidRollingStartIntervalNumber,
            ErrorCode::InvalidRollingStartIntervalNumber,
            12,
        );
        check(
            InvalidTransmissionRiskLevel,
            ErrorCode::InvalidTransmissionRiskLevel,
            13,
        );
        check(InvalidPayload, ErrorCode::InvalidPayload, 4);
    }

    #[test]
    fn first_failure_wins_in_design_order() {
        let bad_timestamp = NOW + 7200;
        check(
            "no keys before timestamp",
            at(bad_timestamp, vec![]),
            Err(NoKeysInPayload),
        );
        check(
            "no keys before missing timestamp",
            Upload {
                timestamp: None,
                keys: vec![],
            },
            Err(NoKeysInPayload),
        );
        check(
            "too many keys before timestamp",
            at(bad_timestamp, many(29)),
            Err(TooManyKeys),
        );
        check(
            "too many keys before bad keys",
            upload(
                (0..29)
                    .map(|id| with(id, |k| k.rolling_period = Some(0)))
                    .collect(),
            ),
            Err(TooManyKeys),
        );
        check(
            "timestamp before keys",
            at(bad_timestamp, vec![with(1, |k| k.key_data = None)]),
            Err(InvalidTimestamp),
        );
        check(
            "rolling period before key data",
            upload(vec![with(1, |k| {
                k.rolling_period = Some(145);
                k.key_data = None;
            })]),
            Err(InvalidRollingPeriod),
        );
        check(
            "key data before rsin",
            upload(vec![with(1, |k| {
                k.key_data = Some(vec![]);
                k.rolling_start_interval_number = None;
            })]),
            Err(InvalidKeyData),
        );
        check(
            "rsin before transmission risk level",
            upload(vec![with(1, |k| {
                k.rolling_start_interval_number = Some(-5);
                k.transmission_risk_level = Some(-1);
            })]),
            Err(InvalidRollingStartIntervalNumber),
        );
        check(
            "transmission risk level before report type",
            upload(vec![with(1, |k| {
                k.transmission_risk_level = Some(100);
                k.report_type = Some(4);
            })]),
            Err(InvalidTransmissionRiskLevel),
        );
        check(
            "transmission risk level before days since onset",
            upload(vec![with(1, |k| {
                k.transmission_risk_level = Some(100);
                k.days_since_onset_of_symptoms = Some(-100);
            })]),
            Err(InvalidTransmissionRiskLevel),
        );
        check(
            "key 1 bad TRL before key 2 bad period",
            upload(vec![
                with(1, |k| k.transmission_risk_level = Some(9)),
                with(2, |k| k.rolling_period = Some(0)),
            ]),
            Err(InvalidTransmissionRiskLevel),
        );
        check(
            "key 1 bad payload before key 2 bad key data",
            upload(vec![
                with(1, |k| k.report_type = Some(99)),
                with(2, |k| k.key_data = None),
            ]),
            Err(InvalidPayload),
        );
        check(
            "key 2 checked after a good key 1",
            upload(vec![key(1), with(2, |k| k.key_data = Some(vec![2; 17]))]),
            Err(InvalidKeyData),
        );
        check(
            "a bad key before the span",
            upload(vec![
                key(1),
                with(2, |k| k.rolling_start_interval_number = Some(TODAY - 5000)),
                with(3, |k| k.transmission_risk_level = Some(9)),
            ]),
            Err(InvalidTransmissionRiskLevel),
        );
        check(
            "span before relevance: an old key widens the span even though it would be dropped",
            upload(vec![
                key(1),
                with(2, |k| {
                    k.rolling_start_interval_number = Some(TODAY - 15 * 144)
                }),
            ]),
            Err(InvalidRollingStartIntervalNumber),
        );
    }

    #[test]
    fn boundary_values() {
        let rolling_period =
            |value: Option<i32>| upload(vec![with(1, |k| k.rolling_period = value)]);
        check(
            "rolling period absent = 144",
            rolling_period(None),
            Ok((1, 0)),
        );
        check("rolling period 1", rolling_period(Some(1)), Ok((1, 0)));
        check("rolling period 144", rolling_period(Some(144)), Ok((1, 0)));
        check(
            "rolling period 0",
            rolling_period(Some(0)),
            Err(InvalidRollingPeriod),
        );
        check(
            "rolling period 145",
            rolling_period(Some(145)),
            Err(InvalidRollingPeriod),
        );
        check(
            "rolling period -1",
            rolling_period(Some(-1)),
            Err(InvalidRollingPeriod),
        );
        check(
            "rolling period max",
            rolling_period(Some(i32::MAX)),
            Err(InvalidRollingPeriod),
        );

        let key_data = |value: Option<Vec<u8>>| upload(vec![with(1, |k| k.key_data = value)]);
        check("key data 16", key_data(Some(vec![0; 16])), Ok((1, 0)));
        check("key data absent", key_data(None), Err(InvalidKeyData));
        check(
            "key data empty",
            key_data(Some(vec![])),
            Err(InvalidKeyData),
        );
        check(
            "key data 15",
            key_data(Some(vec![0; 15])),
            Err(InvalidKeyData),
        );
        check(
            "key data 17",
            key_data(Some(vec![0; 17])),
            Err(InvalidKeyData),
        );
        check(
            "key data 32",
            key_data(Some(vec![0; 32])),
            Err(InvalidKeyData),
        );

        let rsin = |value: Option<i32>| {
            upload(vec![with(1, |k| {
                k.rolling_start_interval_number = value;
                k.rolling_period = Some(1);
            })])
        };
        check("rsin current + 6", rsin(Some(LATEST_START)), Ok((1, 0)));
        check("rsin current", rsin(Some(LATEST_START - 6)), Ok((1, 0)));
        check(
            "rsin current + 7",
            rsin(Some(LATEST_START + 1)),
            Err(InvalidRollingStartIntervalNumber),
        );
        check("rsin 1 (valid, long expired)", rsin(Some(1)), Ok((0, 1)));
        check(
            "rsin 0",
            rsin(Some(0)),
            Err(InvalidRollingStartIntervalNumber),
        );
        check(
            "rsin -1",
            rsin(Some(-1)),
            Err(InvalidRollingStartIntervalNumber),
        );
        check(
            "rsin absent",
            rsin(None),
            Err(InvalidRollingStartIntervalNumber),
        );
        check(
            "rsin max",
            rsin(Some(i32::MAX)),
            Err(InvalidRollingStartIntervalNumber),
        );
        check(
            "rsin min",
            rsin(Some(i32::MIN)),
            Err(InvalidRollingStartIntervalNumber),
        );

        let trl = |value: Option<i32>| upload(vec![with(1, |k| k.transmission_risk_level = value)]);
        check("TRL absent = 0", trl(None), Ok((1, 0)));
        check("TRL 0", trl(Some(0)), Ok((1, 0)));
        check("TRL 8", trl(Some(8)), Ok((1, 0)));
        check("TRL -1", trl(Some(-1)), Err(InvalidTransmissionRiskLevel));
        check("TRL 9", trl(Some(9)), Err(InvalidTransmissionRiskLevel));

        let report_type = |value: Option<i32>| upload(vec![with(1, |k| k.report_type = value)]);
        for ok in [None, Some(0), Some(1), Some(2), Some(3)] {
            check(&format!("report type {ok:?}"), report_type(ok), Ok((1, 0)));
        }
        for bad in [
            Some(4),
            Some(5),
            Some(6),
            Some(-1),
            Some(i32::MAX),
            Some(i32::MIN),
        ] {
            check(
                &format!("report type {bad:?}"),
                report_type(bad),
                Err(InvalidPayload),
            );
        }

        let dso =
            |value: Option<i32>| upload(vec![with(1, |k| k.days_since_onset_of_symptoms = value)]);
        check("dso absent", dso(None), Ok((1, 0)));
        check("dso -14", dso(Some(-14)), Ok((1, 0)));
        check("dso 0", dso(Some(0)), Ok((1, 0)));
        check("dso 14", dso(Some(14)), Ok((1, 0)));
        check("dso -15", dso(Some(-15)), Err(InvalidPayload));
        check("dso 15", dso(Some(15)), Err(InvalidPayload));

        check("timestamp now", at(NOW, vec![key(1)]), Ok((1, 0)));
        check("timestamp -3600", at(NOW - 3600, vec![key(1)]), Ok((1, 0)));
        check("timestamp +3600", at(NOW + 3600, vec![key(1)]), Ok((1, 0)));
        check(
            "timestamp -3601",
            at(NOW - 3601, vec![key(1)]),
            Err(InvalidTimestamp),
        );
        check(
            "timestamp +3601",
            at(NOW + 3601, vec![key(1)]),
            Err(InvalidTimestamp),
        );
        check("timestamp 0", at(0, vec![key(1)]), Err(InvalidTimestamp));
        check(
            "timestamp min",
            at(i64::MIN, vec![key(1)]),
            Err(InvalidTimestamp),
        );
        check(
            "timestamp max",
            at(i64::MAX, vec![key(1)]),
            Err(InvalidTimestamp),
        );

        check("1 key", upload(many(1)), Ok((1, 0)));
        check("28 keys", upload(many(28)), Ok((28, 0)));
        check("29 keys", upload(many(29)), Err(TooManyKeys));
        check("1000 keys", upload(many(1000)), Err(TooManyKeys));

        // Span `(max rsin + 144) − min rsin`: today's key plus a key starting 2016 intervals
        // earlier spans exactly 2160.
        let span = |earliest: i32| {
            upload(vec![
                key(1),
                with(2, |k| k.rolling_start_interval_number = Some(earliest)),
            ])
        };
        check("span 2160", span(TODAY - 2016), Ok((2, 0)));
        check(
            "span 2161",
            span(TODAY - 2017),
            Err(InvalidRollingStartIntervalNumber),
        );
        // The span uses 144 whatever the rolling period of the latest key.
        let short_latest = |earliest: i32| {
            upload(vec![
                with(1, |k| k.rolling_period = Some(1)),
                with(2, |k| k.rolling_start_interval_number = Some(earliest)),
            ])
        };
        check(
            "span 2160, short latest key",
            short_latest(TODAY - 2016),
            Ok((2, 0)),
        );
        check(
            "span 2161, short latest key",
            short_latest(TODAY - 2017),
            Err(InvalidRollingStartIntervalNumber),
        );
        // The span counts from the latest key even when it is listed first or last.
        let at_latest = |earliest: i32| {
            upload(vec![
                with(1, |k| k.rolling_start_interval_number = Some(earliest)),
                key(2),
                with(3, |k| k.rolling_start_interval_number = Some(LATEST_START)),
            ])
        };
        check(
            "span 2160 from the latest allowed start",
            at_latest(LATEST_START + 144 - 2160),
            Ok((3, 0)),
        );
        check(
            "span 2161 from the latest allowed start",
            at_latest(LATEST_START + 144 - 2161),
            Err(InvalidRollingStartIntervalNumber),
        );
    }

    #[test]
    fn irrelevant_keys_are_dropped_and_counted() {
        // Yesterday's key and one from 15 days ago span exactly 2160; the old key expired
        // 14 days ago at 00:00 UTC, which is more than 14 days before NOW.
        let fifteen_days_ago = TODAY - 15 * 144;
        let result = validate_upload(
            &upload(vec![
                with(1, |k| k.rolling_start_interval_number = Some(TODAY - 144)),
                with(2, |k| {
                    k.rolling_start_interval_number = Some(fifteen_days_ago)
                }),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!(result.dropped_irrelevant, 1);
        assert_eq!(result.keys.len(), 1);
        assert_eq!(result.keys[0].key_data, KeyData::from_array([1; 16]));

        // At exactly the relevance boundary (expiry = now − 14 days) the key is dropped; one
        // interval later it is kept.
        let now = 1_700_000_400; // interval 2_833_334
        let boundary_start = 2_833_334 - 14 * 144 - 144;
        let outcome = |start: i32| {
            validate_upload(
                &at(
                    now,
                    vec![with(1, |k| k.rolling_start_interval_number = Some(start))],
                ),
                now,
            )
            .map(|v| (v.keys.len(), v.dropped_irrelevant))
        };
        assert_eq!(outcome(boundary_start), Ok((0, 1)));
        assert_eq!(outcome(boundary_start + 1), Ok((1, 0)));

        // An upload of nothing but expired keys is accepted and stores nothing.
        let result = validate_upload(
            &upload(vec![
                with(1, |k| {
                    k.rolling_start_interval_number = Some(fifteen_days_ago)
                }),
                with(2, |k| {
                    k.rolling_start_interval_number = Some(fifteen_days_ago + 1)
                }),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!((result.keys.len(), result.dropped_irrelevant), (0, 2));
    }

    #[test]
    fn duplicate_key_data_keeps_the_first() {
        let result = validate_upload(
            &upload(vec![
                with(7, |k| k.transmission_risk_level = Some(3)),
                key(8),
                with(7, |k| k.transmission_risk_level = Some(5)),
                with(7, |k| k.rolling_start_interval_number = Some(TODAY - 144)),
            ]),
            NOW,
        )
        .unwrap();
        assert_eq!(result.dropped_irrelevant, 0);
        let kept: Vec<_> = result
            .keys
            .iter()
            .map(|k| (k.key_data, k.transmission_risk_level))
            .collect();
        assert_eq!(
            kept,
            vec![
                (KeyData::from_array([7; 16]), 3),
                (KeyData::from_array([8; 16]), 1)
            ]
        );
        // A repeat still has to be valid.
        check(
            "an invalid repeat rejects the upload",
            upload(vec![
                key(7),
                with(7, |k| k.transmission_risk_level = Some(9)),
            ]),
            Err(InvalidTransmissionRiskLevel),
        );
    }

    #[test]
    fn fields_convert_to_the_domain() {
        let result = validate_upload(
            &upload(vec![
                with(1, |k| {
                    k.transmission_risk_level = None;
                    k.rolling_period = None;
                }),
                with(2, |k| {
                    k.report_type = Some(0);
                    k.days_since_onset_of_symptoms = Some(-3);
                }),
                with(3, |k| k.report_type = Some(1)),
                with(4, |k| k.report_type = Some(2)),
                with(5, |k| {
                    k.report_type = Some(3);
                    k.rolling_period = Some(72);
                    k.days_since_onset_of_symptoms = Some(14);
                }),
            ]),
            NOW,
        )
        .unwrap();
        let expected = |id: u8, trl, rolling_period, report_type, days_since_onset| DiagnosisKey {
            key_data: KeyData::from_array([id; 16]),
            rolling_start_interval_number: TODAY,
            rolling_period,
            transmission_risk_level: trl,
            report_type,
            days_since_onset,
        };
        assert_eq!(
            result.keys,
            vec![
                expected(1, 0, 144, ReportType::ConfirmedTest, None),
                expected(2, 1, 144, ReportType::ConfirmedTest, Some(-3)),
                expected(3, 1, 144, ReportType::ConfirmedTest, None),
                expected(4, 1, 144, ReportType::ConfirmedClinicalDiagnosis, None),
                expected(5, 1, 72, ReportType::SelfReport, Some(14)),
            ]
        );
    }

    /// What the COVID Alert app actually sends: only `timestamp.seconds`, keys newest first
    /// with TRL 1 and an explicit rolling period of 144, no report type or days since onset,
    /// and two keys that share today's start interval (the current key, and the one the
    /// platform released when the previous key rolled over mid-day).
    #[test]
    fn covid_alert_app_upload() {
        let mut keys = vec![
            with(100, |k| k.rolling_start_interval_number = Some(TODAY)),
            with(101, |k| k.rolling_start_interval_number = Some(TODAY)),
        ];
        keys.extend((1..=13).map(|day| {
            with(100 + day as u8 + 1, |k| {
                k.rolling_start_interval_number = Some(TODAY - day * 144);
            })
        }));
        assert_eq!(keys.len(), 15);
        let app_upload = Upload {
            timestamp: Some(Timestamp {
                seconds: NOW - 12,
                nanos: 0,
            }),
            keys,
        };
        let result = validate_upload(&app_upload, NOW).unwrap();
        assert_eq!(result.dropped_irrelevant, 0);
        assert_eq!(result.keys.len(), 15);
        assert!(result.keys.iter().all(|k| k.transmission_risk_level == 1
            && k.rolling_period == 144
            && k.report_type == ReportType::ConfirmedTest
            && k.days_since_onset.is_none()));
        // Request order is kept.
        let starts: Vec<i32> = result
            .keys
            .iter()
            .map(|k| k.rolling_start_interval_number)
            .collect();
        assert_eq!(starts[..3], [TODAY, TODAY, TODAY - 144]);
        assert_eq!(starts[14], TODAY - 13 * 144);
    }

    /// Mostly valid keys (so that whole uploads often pass), with a minority of arbitrary
    /// values in every field and key data from a small set, so repeats occur.
    fn arbitrary_key() -> impl Strategy<Value = TemporaryExposureKey> {
        let key_data = prop_oneof![
            30 => (0_u8..40).prop_map(|byte| Some(vec![byte; 16])),
            1 => proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        ];
        let trl =
            prop_oneof![30 => (0..=8_i32).prop_map(Some), 1 => proptest::option::of(any::<i32>())];
        let rsin = prop_oneof![
            30 => ((TODAY - 1800)..=LATEST_START).prop_map(Some),
            1 => ((TODAY - 2400)..(TODAY - 1800)).prop_map(Some),
            1 => proptest::option::of(any::<i32>()),
        ];
        let rolling_period = prop_oneof![
            30 => proptest::option::of(1..=144_i32),
            1 => proptest::option::of(any::<i32>()),
        ];
        let report_type = proptest::option::of(prop_oneof![30 => 0..=3_i32, 1 => any::<i32>()]);
        let dso = proptest::option::of(prop_oneof![30 => -14..=14_i32, 1 => any::<i32>()]);
        (key_data, trl, rsin, rolling_period, report_type, dso).prop_map(
            |(key_data, trl, rsin, rolling_period, report_type, dso)| TemporaryExposureKey {
                key_data,
                transmission_risk_level: trl,
                rolling_start_interval_number: rsin,
                rolling_period,
                report_type,
                days_since_onset_of_symptoms: dso,
            },
        )
    }

    proptest! {
        #[test]
        fn accepted_keys_satisfy_every_rule(
            keys in prop_oneof![
                3 => proptest::collection::vec(arbitrary_key(), 0..8),
                1 => proptest::collection::vec(arbitrary_key(), 0..32),
            ],
            skew in -4000_i64..4000,
        ) {
            let upload = at(NOW + skew, keys);
            if let Ok(valid) = validate_upload(&upload, NOW) {
                prop_assert!(!upload.keys.is_empty() && upload.keys.len() <= MAX_KEYS_PER_UPLOAD);
                prop_assert!(skew.abs() <= 3600);
                prop_assert!(valid.keys.len() + valid.dropped_irrelevant <= upload.keys.len());
                for key in &valid.keys {
                    prop_assert!((1..=144).contains(&key.rolling_period));
                    prop_assert!((0..=8).contains(&key.transmission_risk_level));
                    prop_assert!(key.rolling_start_interval_number > 0);
                    prop_assert!(key.rolling_start_interval_number <= LATEST_START);
                    prop_assert!(key.days_since_onset.is_none_or(|d| (-14..=14).contains(&d)));
                    prop_assert!(matches!(
                        key.report_type,
                        ReportType::ConfirmedTest
                            | ReportType::ConfirmedClinicalDiagnosis
                            | ReportType::SelfReport
                    ));
                    prop_assert!(time::is_relevant(key.expiry_unix(), NOW));
                }
                let mut data: Vec<_> = valid.keys.iter().map(|k| k.key_data).collect();
                data.sort();
                data.dedup();
                prop_assert_eq!(data.len(), valid.keys.len());
            }
        }
    }
}
