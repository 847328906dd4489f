//! Optional padding of export windows with fake keys (DESIGN §4.1, `PAD_MIN_KEYS`).
//!
//! A window with few real keys would tell an observer how many people were
//! diagnosed in that hour. Padding tops every window up to at least
//! `PAD_MIN_KEYS` plus a secret jitter (so the published count is no fixed
//! multiple and does not reveal the real count), with fake keys whose metadata
//! is drawn from the real keys of the same window.
//!
//! Everything is derived with HMAC-SHA256 from a server secret and the window's
//! start hour, so an hourly file and the daily file containing it carry the
//! same fake keys, and a rebuild reproduces them byte for byte. This module
//! must never use an unseeded random source.

use diagnosis_core::domain::{DiagnosisKey, KeyData, ReportType};
use diagnosis_core::redacted::Redacted;
use diagnosis_core::store::KeyMetadataCount;
use diagnosis_core::time::{INTERVALS_PER_DAY, SECONDS_PER_HOUR, day_number};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Padding settings: the secret (from the database) and `PAD_MIN_KEYS`.
#[derive(Debug, Clone)]
pub struct Padding {
    secret: Redacted<Vec<u8>>,
    min_keys: u64,
}

impl Padding {
    pub fn new(secret: Vec<u8>, min_keys: u64) -> Padding {
        Padding {
            secret: Redacted::new(secret),
            min_keys,
        }
    }

    fn mac(&self, label: &[u8], hour: i64, index: u64) -> [u8; 32] {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail.
        let mut mac = match HmacSha256::new_from_slice(self.secret.expose()) {
            Ok(mac) => mac,
            Err(_) => return [0; 32],
        };
        mac.update(label);
        mac.update(&hour.to_be_bytes());
        mac.update(&index.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// How many fake keys the window of `hour` gets when it holds `real` keys:
    /// up to `max(min_keys, real) + jitter`, with a secret jitter in
    /// `0..=min_keys/4`.
    pub fn fake_count(&self, hour: i64, real: u64) -> u64 {
        if self.min_keys == 0 {
            return 0;
        }
        let jitter_bytes = self.mac(b"count", hour, 0);
        let mut first = [0_u8; 8];
        first.copy_from_slice(&jitter_bytes[..8]);
        let jitter = u64::from_be_bytes(first) % (self.min_keys / 4 + 1);
        self.min_keys.max(real) + jitter - real
    }

    /// The fake keys of the window of `hour`, in no particular order. Their
    /// metadata follows `histogram` (the real keys of that hour); an hour
    /// without real keys gets day-aligned keys of the last 14 days.
    pub fn fake_keys(&self, hour: i64, histogram: &[KeyMetadataCount]) -> Vec<DiagnosisKey> {
        let real: u64 = histogram
            .iter()
            .map(|m| u64::try_from(m.count).unwrap_or(0))
            .sum();
        let count = self.fake_count(hour, real);
        (0..count)
            .map(|index| {
                let bytes = self.mac(b"key", hour, index);
                let mut key_data = [0_u8; 16];
                key_data.copy_from_slice(&bytes[..16]);
                let mut pick = [0_u8; 8];
                pick.copy_from_slice(&bytes[16..24]);
                let pick = u64::from_be_bytes(pick);
                match pick_metadata(histogram, real, pick) {
                    Some(m) => DiagnosisKey {
                        key_data: KeyData::from_array(key_data),
                        rolling_start_interval_number: m.rolling_start_interval_number,
                        rolling_period: m.rolling_period,
                        transmission_risk_level: m.transmission_risk_level,
                        report_type: m.report_type,
                        days_since_onset: m.days_since_onset,
                    },
                    None => default_fake(KeyData::from_array(key_data), hour, pick),
                }
            })
            .collect()
    }
}

/// The metadata of the `pick mod real`-th real key.
fn pick_metadata(
    histogram: &[KeyMetadataCount],
    real: u64,
    pick: u64,
) -> Option<&KeyMetadataCount> {
    if real == 0 {
        return None;
    }
    let mut target = pick % real;
    for entry in histogram {
        let count = u64::try_from(entry.count).unwrap_or(0);
        if target < count {
            return Some(entry);
        }
        target -= count;
    }
    histogram.last()
}

/// A plausible key for an hour with no real keys: a whole day's key from 2 to
/// 14 days before the hour (expired, so publishable, and still relevant).
fn default_fake(key_data: KeyData, hour: i64, pick: u64) -> DiagnosisKey {
    let days_back = i64::try_from(pick % 13).unwrap_or(0) + 2;
    let day = day_number(hour * SECONDS_PER_HOUR) - days_back;
    DiagnosisKey {
        key_data,
        rolling_start_interval_number: i32::try_from(day * INTERVALS_PER_DAY).unwrap_or(i32::MAX),
        rolling_period: 144,
        transmission_risk_level: 1,
        report_type: ReportType::ConfirmedTest,
        days_since_onset: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn padding(min: u64) -> Padding {
        Padding::new(vec![7; 32], min)
    }

    fn histogram() -> Vec<KeyMetadataCount> {
        vec![
            KeyMetadataCount {
                rolling_start_interval_number: 2_950_000,
                rolling_period: 144,
                transmission_risk_level: 1,
                report_type: ReportType::ConfirmedTest,
                days_since_onset: None,
                count: 3,
            },
            KeyMetadataCount {
                rolling_start_interval_number: 2_950_144,
                rolling_period: 144,
                transmission_risk_level: 4,
                report_type: ReportType::SelfReport,
                days_since_onset: Some(-2),
                count: 1,
            },
        ]
    }

    /// The derivation, pinned by values computed apart from this code: a change here changes
    /// published files, and a rebuild would no longer reproduce them byte for byte. Each value
    /// is HMAC-SHA256 of the label, the big-endian hour and the big-endian index, e.g. with
    /// Python's standard library:
    ///
    /// ```text
    /// import hmac, hashlib, struct
    /// mac = lambda label, i: hmac.new(bytes([7] * 32), label + struct.pack(">qQ", 500_000, i),
    ///                                 hashlib.sha256).digest()
    /// jitter = int.from_bytes(mac(b"count", 0)[:8], "big") % 26          # 11
    /// key = mac(b"key", 0); key[:16].hex()                                # 3681d91d…
    /// int.from_bytes(key[16:24], "big") % 4, int.from_bytes(key[16:24], "big") % 13 + 2
    /// ```
    #[test]
    fn the_derivation_matches_an_independent_computation() {
        let fakes = padding(100).fake_keys(500_000, &histogram());
        // 100 + jitter 11 (the first 8 bytes of HMAC("count", hour, 0) mod 26) - 4 real keys.
        assert_eq!(fakes.len(), 107);
        let (first, second) = ((2_950_000, None), (2_950_144, Some(-2)));
        for (index, key_hex, metadata) in [
            (0, "3681d91ddb4ff5444aceb875969ae9f5", first),
            (1, "150f20942e76b2a0776538016bbc3fc2", first),
            (2, "2c0a7637e4a9cc87725c10d9e93a0c0f", first),
            (5, "307f56a81f50e428d92c1f61ec426a86", second),
        ] {
            let key = &fakes[index];
            assert_eq!(hex::encode(key.key_data.as_bytes()), key_hex, "key {index}");
            assert_eq!(
                (key.rolling_start_interval_number, key.days_since_onset),
                metadata,
                "key {index}"
            );
        }
        let empty = padding(100).fake_keys(500_000, &[]);
        assert_eq!(empty.len(), 111);
        assert_eq!(
            hex::encode(empty[0].key_data.as_bytes()),
            "3681d91ddb4ff5444aceb875969ae9f5"
        );
        // Day 20 833 of the hour, 10 days back (2 + the pick mod 13), times 144 intervals.
        assert_eq!(empty[0].rolling_start_interval_number, 2_998_512);
        assert_eq!(empty[0].rolling_period, 144);
    }

    #[test]
    fn off_means_no_fake_keys() {
        assert!(padding(0).fake_keys(500_000, &histogram()).is_empty());
    }

    #[test]
    fn padding_is_deterministic_per_secret_and_hour() {
        let a = padding(100).fake_keys(500_000, &histogram());
        assert_eq!(a, padding(100).fake_keys(500_000, &histogram()));
        assert_ne!(a, padding(100).fake_keys(500_001, &histogram()));
        assert_ne!(
            a,
            Padding::new(vec![8; 32], 100).fake_keys(500_000, &histogram())
        );
    }

    #[test]
    fn totals_are_at_least_the_minimum_and_not_a_fixed_multiple() {
        let pad = padding(100);
        let mut totals = HashSet::new();
        for hour in 0..200 {
            let total = pad.fake_count(hour, 4) + 4;
            assert!((100..=125).contains(&total), "{total}");
            totals.insert(total);
        }
        assert!(
            totals.len() > 10,
            "the jitter varies the totals: {totals:?}"
        );
        // A window with more real keys than the minimum still gets jitter.
        let busy = pad.fake_count(7, 1000);
        assert!(busy <= 25);
    }

    #[test]
    fn fake_metadata_follows_the_real_keys() {
        let fakes = padding(400).fake_keys(500_000, &histogram());
        let high_risk = fakes
            .iter()
            .filter(|k| k.transmission_risk_level == 4)
            .count();
        // One real key in four has risk 4: about a quarter of the fakes do too.
        assert!(
            (50..=160).contains(&high_risk),
            "{high_risk} of {}",
            fakes.len()
        );
        let keys: HashSet<_> = fakes.iter().map(|k| *k.key_data.as_bytes()).collect();
        assert_eq!(keys.len(), fakes.len(), "fake key data never repeats");
    }

    #[test]
    fn an_empty_hour_gets_expired_yet_relevant_day_keys() {
        let hour = 490_000;
        for key in padding(50).fake_keys(hour, &[]) {
            let expiry = key.expiry_unix();
            let hour_end = (hour + 1) * SECONDS_PER_HOUR;
            assert!(
                expiry <= hour * SECONDS_PER_HOUR - 86_400,
                "expired before the hour"
            );
            assert!(diagnosis_core::time::is_relevant(expiry, hour_end));
            assert_eq!(key.rolling_start_interval_number % 144, 0);
        }
    }
}
