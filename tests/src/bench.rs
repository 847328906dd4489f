//! Benchmark support for `infra/dev/bench` (tests/bench/README.md): the synthetic
//! population of diagnosed cases every measurement shares, and the catch-up count
//! of a phone that was offline for 14 days.
//!
//! Everything here is deterministic for a given seed, so two runs of the benchmark
//! export the same keys and the size figures are comparable from run to run.

use std::collections::HashSet;

use anyhow::Context as _;
use diagnosis_core::domain::{DiagnosisKey, KeyData, ReportType};
use diagnosis_core::time::{RELEVANCE_DAYS, day_number, key_expiry, publish_hour};
use diagnosis_exporter::storage::Bucket;
use diagnosis_format::archive::unzip_export;
use diagnosis_proto::{EXPORT_BIN_HEADER, Message as _, TemporaryExposureKeyExport};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

pub mod egress;

/// Keys uploaded per diagnosed case: two for each of the 14 days before the upload,
/// the most the COVID Alert apps send (28).
pub const KEYS_PER_CASE: usize = 28;

/// splitmix64: small, fast and deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u32) -> i32 {
        i32::try_from(self.next_u64() % u64::from(n.max(1))).unwrap_or(0)
    }

    pub fn key_data(&mut self) -> KeyData {
        let mut bytes = [0_u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        KeyData::from_array(bytes)
    }
}

/// The keys of one case diagnosed on UTC day `upload_day`, shaped like real uploads:
/// daily keys for the 14 days before the upload (two per day), 90 % confirmed by a
/// test and 10 % by a clinician; the onset of symptoms known for 75 % of cases (1 to
/// 10 days before the upload), days since onset following from it and the
/// transmission risk falling with the distance from the onset (unknown onset: one
/// risk level for the whole case); one case in twenty rotated its newest key early,
/// so that key has a shorter rolling period.
pub fn case_keys(rng: &mut Rng, upload_day: i64) -> Vec<DiagnosisKey> {
    let report_type = if rng.below(10) == 0 {
        ReportType::ConfirmedClinicalDiagnosis
    } else {
        ReportType::ConfirmedTest
    };
    let onset_day = (rng.below(4) != 0).then(|| upload_day - 1 - i64::from(rng.below(10)));
    let case_risk = 1 + rng.below(8);
    let short_newest = rng.below(20) == 0;
    let mut keys = Vec::with_capacity(KEYS_PER_CASE);
    for days_before in 1..=14_i64 {
        let day = upload_day - days_before;
        let days_since_onset =
            onset_day.map(|onset| i32::try_from((day - onset).clamp(-14, 14)).unwrap_or(0));
        let transmission_risk_level = match days_since_onset {
            Some(dso) => (8 - dso.abs() / 2).clamp(1, 8),
            None => case_risk,
        };
        for second in [false, true] {
            let rolling_period = if short_newest && days_before == 1 && second {
                1 + rng.below(143)
            } else {
                144
            };
            keys.push(DiagnosisKey {
                key_data: rng.key_data(),
                rolling_start_interval_number: i32::try_from(day * 144).unwrap_or(i32::MAX),
                rolling_period,
                transmission_risk_level,
                report_type,
                days_since_onset,
            });
        }
    }
    keys
}

/// `count` keys of whole cases uploaded on `upload_day` (the last case cut short).
pub fn population(rng: &mut Rng, upload_day: i64, count: usize) -> Vec<DiagnosisKey> {
    let mut keys = Vec::with_capacity(count + KEYS_PER_CASE);
    while keys.len() < count {
        keys.extend(case_keys(rng, upload_day));
    }
    keys.truncate(count);
    keys
}

/// `(submission hour, key)` pairs of a history: `keys_per_day` keys a day over the hours
/// `first_hour..=last_hour`, spread evenly (the remainder to the first hours of each day).
/// The cases of each hour were diagnosed on the day of the hour two hours earlier, so their
/// newest keys expired at least two hours before the upload and every key is published in
/// the hour it was uploaded (DESIGN §2): each hour holds its own share of the keys.
pub fn history(
    mut rng: Rng,
    keys_per_day: usize,
    first_hour: i64,
    last_hour: i64,
) -> impl Iterator<Item = (i64, DiagnosisKey)> {
    let per_hour = keys_per_day / 24;
    let extra = keys_per_day % 24;
    (first_hour..=last_hour).flat_map(move |hour| {
        let hour_of_day = usize::try_from(hour.rem_euclid(24)).unwrap_or(0);
        let count = per_hour + usize::from(hour_of_day < extra);
        let case_day = (hour - 2).div_euclid(24);
        population(&mut rng, case_day, count)
            .into_iter()
            .map(move |k| (hour, k))
    })
}

/// Writes `(submission hour, key)` pairs into `diagnosis_keys` with a binary COPY and
/// returns the number of rows written.
pub async fn copy_keys(
    client: &tokio_postgres::Client,
    region: &str,
    keys: impl Iterator<Item = (i64, DiagnosisKey)>,
) -> anyhow::Result<u64> {
    let sink = client
        .copy_in(
            "COPY diagnosis_keys (key_data, rolling_start_interval_number, rolling_period,
                                  transmission_risk_level, report_type, days_since_onset,
                                  region, originator, hour_of_submission, publish_hour)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    let types = [
        Type::BYTEA,
        Type::INT4,
        Type::INT2,
        Type::INT2,
        Type::INT2,
        Type::INT2,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::INT4,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    let small = |v: i32| i16::try_from(v).context("a value out of SMALLINT range");
    for (hour, key) in keys {
        let published = publish_hour(hour, key.rolling_start_interval_number, key.rolling_period);
        let row: [&(dyn ToSql + Sync); 10] = [
            &key.key_data.as_bytes().as_slice(),
            &key.rolling_start_interval_number,
            &small(key.rolling_period)?,
            &small(key.transmission_risk_level)?,
            &small(key.report_type.as_i32())?,
            &key.days_since_onset.map(small).transpose()?,
            &region,
            &"BENCH",
            &i32::try_from(hour)?,
            &i32::try_from(published)?,
        ];
        writer.as_mut().write(&row).await?;
    }
    Ok(writer.finish().await?)
}

/// Latencies of one kind of request, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(pub Vec<u64>);

impl Latencies {
    pub fn record(&mut self, since: std::time::Instant) {
        self.0
            .push(u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX));
    }

    /// The `p`th percentile (nearest rank) in milliseconds; 0 when empty.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[rank.min(self.0.len() - 1)] as f64 / 1000.0
    }
}

/// The key data of every key in a published export file.
pub fn keys_in_file(zip: &[u8]) -> anyhow::Result<Vec<DiagnosisKey>> {
    let entries = unzip_export(zip)?;
    let body = entries
        .export_bin
        .strip_prefix(EXPORT_BIN_HEADER.as_slice())
        .context("export.bin without its header")?;
    let export = TemporaryExposureKeyExport::decode(body)?;
    export
        .keys
        .iter()
        .map(|key| {
            Ok(DiagnosisKey {
                key_data: KeyData::try_from(key.key_data())
                    .map_err(|_| anyhow::anyhow!("a key of the wrong length"))?,
                rolling_start_interval_number: key.rolling_start_interval_number(),
                rolling_period: key.rolling_period(),
                transmission_risk_level: key.transmission_risk_level(),
                report_type: ReportType::from_i32(key.report_type() as i32)
                    .unwrap_or(ReportType::ConfirmedTest),
                days_since_onset: key.days_since_onset_of_symptoms,
            })
        })
        .collect()
}

/// How a phone that was offline for 14 days catches up at one moment, two ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUp {
    /// Keys the phone must obtain: every key of the hourly files indexed for the last 14
    /// days that can still match (expired less than 14 days ago).
    pub keys: usize,
    /// Requests through the retrieval objects: `00000`, today's, and any day object
    /// still needed, newest first.
    pub retrieval_requests: usize,
    /// Requests through the indexes: `daily/index.txt`, its files, `index.txt`, and the
    /// hourly files no daily file covers.
    pub index_requests: usize,
}

impl CatchUp {
    /// The fewer of the two.
    pub fn requests(&self) -> usize {
        self.retrieval_requests.min(self.index_requests)
    }
}

/// A bucket read through a request counter: every `get` is one HTTP request a phone
/// would make.
struct Fetcher<'a> {
    bucket: &'a Bucket,
    requests: usize,
}

impl Fetcher<'_> {
    async fn get(&mut self, key: &str) -> anyhow::Result<Option<bytes::Bytes>> {
        self.requests += 1;
        Ok(self.bucket.get(key).await?)
    }

    async fn index(&mut self, key: &str) -> anyhow::Result<Vec<String>> {
        let Some(bytes) = self.get(key).await? else {
            return Ok(Vec::new());
        };
        Ok(std::str::from_utf8(&bytes)?
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Fetches an export file and strikes its keys off `missing`.
    async fn collect(&mut self, key: &str, missing: &mut HashSet<KeyData>) -> anyhow::Result<()> {
        if let Some(zip) = self.get(key).await? {
            for k in keys_in_file(&zip).with_context(|| format!("reading {key}"))? {
                missing.remove(&k.key_data);
            }
        }
        Ok(())
    }
}

/// Counts, at `now_unix`, the requests a phone offline for 14 days needs to obtain every
/// key it can still match, through the retrieval objects (DESIGN §4.3) and through the
/// indexes (DESIGN §4). `region` is the export region, `compat` the retrieval path's MCC.
pub async fn catch_up(
    bucket: &Bucket,
    region: &str,
    compat: &str,
    now_unix: i64,
) -> anyhow::Result<CatchUp> {
    let oldest_expiry = now_unix - RELEVANCE_DAYS * 86_400;
    let mut wanted = HashSet::new();
    let mut hourly_files = Vec::new();
    {
        let mut reader = Fetcher {
            bucket,
            requests: 0,
        };
        for key in reader.index(&format!("{region}/index.txt")).await? {
            let zip = reader
                .get(&key)
                .await?
                .with_context(|| format!("{key} is indexed but missing"))?;
            for k in keys_in_file(&zip).with_context(|| format!("reading {key}"))? {
                if key_expiry(k.rolling_start_interval_number, k.rolling_period) > oldest_expiry {
                    wanted.insert(k.key_data);
                }
            }
            hourly_files.push(key);
        }
    }

    // Through the retrieval objects: the bundle, today, then older days while keys are missing.
    let today = day_number(now_unix);
    let mut retrieval = Fetcher {
        bucket,
        requests: 0,
    };
    let mut missing = wanted.clone();
    retrieval
        .collect(&format!("retrieve/{compat}/00000"), &mut missing)
        .await?;
    retrieval
        .collect(&format!("retrieve/{compat}/{today:05}"), &mut missing)
        .await?;
    let mut day = today - 1;
    while !missing.is_empty() && day >= today - RELEVANCE_DAYS {
        retrieval
            .collect(&format!("retrieve/{compat}/{day:05}"), &mut missing)
            .await?;
        day -= 1;
    }
    anyhow::ensure!(
        missing.is_empty(),
        "{} keys are in no retrieval object",
        missing.len()
    );

    // Through the indexes: the daily files, then the hourly files after the last day.
    let mut indexed = Fetcher {
        bucket,
        requests: 0,
    };
    let mut missing = wanted.clone();
    let daily = indexed.index(&format!("{region}/daily/index.txt")).await?;
    let mut covered_until = i64::MIN;
    for key in &daily {
        indexed.collect(key, &mut missing).await?;
        if let Some(end) = window_end(key) {
            covered_until = covered_until.max(end);
        }
    }
    indexed.requests += 1; // index.txt, already read above
    for key in &hourly_files {
        if window_end(key).is_some_and(|end| end > covered_until) {
            indexed.collect(key, &mut missing).await?;
        }
    }
    anyhow::ensure!(
        missing.is_empty(),
        "{} keys are in no indexed file",
        missing.len()
    );

    Ok(CatchUp {
        keys: wanted.len(),
        retrieval_requests: retrieval.requests,
        index_requests: indexed.requests,
    })
}

/// The end of the window an export object key names (`…/{start}-{end}-{part}.zip`).
fn window_end(key: &str) -> Option<i64> {
    let name = key.rsplit('/').next()?;
    name.split('-').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_has_28_keys_over_the_14_days_before_its_upload() {
        let mut rng = Rng::new(7);
        let upload_day = 20_400;
        for _ in 0..200 {
            let keys = case_keys(&mut rng, upload_day);
            assert_eq!(keys.len(), KEYS_PER_CASE);
            let days: HashSet<i64> = keys
                .iter()
                .map(|k| i64::from(k.rolling_start_interval_number) / 144)
                .collect();
            assert_eq!(days, (upload_day - 14..upload_day).collect());
            for key in &keys {
                assert!((1..=8).contains(&key.transmission_risk_level));
                assert!((1..=144).contains(&key.rolling_period));
                assert!(key.days_since_onset.is_none_or(|d| (-14..=14).contains(&d)));
            }
        }
    }

    #[test]
    fn the_population_is_deterministic_and_spread() {
        let a = population(&mut Rng::new(1), 20_400, 10_000);
        let b = population(&mut Rng::new(1), 20_400, 10_000);
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, b);
        let risks: HashSet<i32> = a.iter().map(|k| k.transmission_risk_level).collect();
        assert!(risks.len() >= 6, "{risks:?}");
        let unknown_onset = a.iter().filter(|k| k.days_since_onset.is_none()).count();
        assert!((1_500..3_500).contains(&unknown_onset), "{unknown_onset}");
        let distinct: HashSet<&KeyData> = a.iter().map(|k| &k.key_data).collect();
        assert_eq!(distinct.len(), a.len());
    }

    #[test]
    fn a_history_publishes_each_hour_its_own_share_of_keys() {
        let last_hour = 20_400 * 24 + 5;
        let first_hour = last_hour - 3 * 24 + 1;
        let rows: Vec<(i64, DiagnosisKey)> =
            history(Rng::new(3), 2_410, first_hour, last_hour).collect();
        assert_eq!(rows.len(), 3 * 2_410);
        let mut per_hour = std::collections::BTreeMap::new();
        for (hour, key) in &rows {
            let published =
                publish_hour(*hour, key.rolling_start_interval_number, key.rolling_period);
            assert_eq!(published, *hour, "a key uploaded in hour {hour}");
            *per_hour.entry(*hour).or_insert(0) += 1;
        }
        assert_eq!(
            per_hour.keys().copied().collect::<Vec<_>>(),
            (first_hour..=last_hour).collect::<Vec<_>>()
        );
        assert!(
            per_hour.values().all(|n| (100..=101).contains(n)),
            "{per_hour:?}"
        );
    }

    #[test]
    fn window_end_reads_the_object_key() {
        assert_eq!(
            window_end("CA/daily/1764201600-1764288000-00002.zip"),
            Some(1_764_288_000)
        );
        assert_eq!(window_end("CA/index.txt"), None);
    }
}
