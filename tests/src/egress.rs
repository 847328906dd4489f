//! The egress and publication-lag figures of `infra/dev/bench` (tests/bench/README.md): the
//! exporter's real passes, on the default schedule, over one simulated UTC day of the bench's
//! synthetic keys, and what a phone downloads from them on each path at the apps' schedule.
//! It measures the committed file format; it asserts no speed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use diagnosis_core::store::{Store, StoreConfig};
use diagnosis_core::time::ManualClock;
use diagnosis_exporter::pipeline::{Exporter, RunOutcome};
use diagnosis_exporter::storage::Bucket;
use serde_json::json;

use crate::dataset::{Rng, copy_keys, history, keys_in_file};
use crate::export::{test_export_settings, test_signing_keys};

/// The default `EXPORT_SCHEDULE` (`0 */5 * * * *`, DESIGN §6): a pass every five minutes.
pub const PASS_SECONDS: i64 = 300;
/// How often a phone checks for new keys on either path: every 4 hours, as the deployed apps
/// call `retrieve/` (DESIGN §4.3).
pub const CHECK_SECONDS: i64 = 4 * 3600;
/// The bytes a phone cannot do without per key: its 16 bytes of key data.
pub const FLOOR_BYTES_PER_KEY: u64 = 16;
/// The simulated day (a fixed one, so every run measures the same thing).
const DAY: i64 = 20_400;
const SECONDS_PER_DAY: i64 = 86_400;

/// What a phone can fetch after one pass: `index.txt`'s size, today's retrieval object's size,
/// and the start of every hourly file of the day `index.txt` lists.
#[derive(Debug, Clone)]
struct Pass {
    tick: i64,
    wall_s: f64,
    index_bytes: u64,
    today_bytes: u64,
    listed: Vec<i64>,
}

/// Seeds 15 days of `keys_per_day` keys a day ending with the simulated day, publishes the 14
/// days before it, then runs a pass at every tick of the day and at the first three of the
/// next (the day's last hour closes at 00:00 + grace), and summarises what phones download.
pub async fn measure(database_url: &str, keys_per_day: usize) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let store = Store::connect(&StoreConfig {
        database_url: database_url.to_owned(),
        pool_size: 4,
        statement_timeout: Duration::from_secs(300),
        connect_timeout: Duration::from_secs(5),
        application_name: "diagnosis-bench",
    })?;
    store.migrate().await?;
    let settings = test_export_settings();
    seed(database_url, settings.key_region.as_str(), keys_per_day).await?;
    let clock = ManualClock::new(at(DAY * SECONDS_PER_DAY - PASS_SECONDS)?);
    let bucket = Bucket::in_memory();
    let exporter = Exporter::new(
        store.with_database_clock(Arc::new(clock.clone())),
        bucket.clone(),
        Arc::new(clock.clone()),
        settings.clone(),
        test_signing_keys(),
    )
    .await?;
    pass(&exporter).await?;
    let mut passes = Vec::new();
    let first = DAY * SECONDS_PER_DAY;
    for tick in (first..=first + SECONDS_PER_DAY + 2 * PASS_SECONDS).step_by(300) {
        clock.set(at(tick)?);
        let t = Instant::now();
        pass(&exporter).await?;
        passes.push(observe(&bucket, tick, t.elapsed().as_secs_f64()).await?);
    }
    let mut summary = summarise(&bucket, &passes, settings.grace_seconds).await?;
    summary["keys_per_day"] = json!(keys_per_day);
    summary["seconds"] = json!(started.elapsed().as_secs_f64());
    Ok(summary)
}

async fn seed(database_url: &str, region: &str, keys_per_day: usize) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to DATABASE_URL")?;
    tokio::spawn(connection);
    let rows = history(
        Rng::new(2020),
        keys_per_day,
        (DAY - 14) * 24,
        (DAY + 1) * 24 - 1,
    );
    copy_keys(&client, region, rows).await?;
    client.batch_execute("ANALYZE diagnosis_keys").await?;
    Ok(())
}

fn at(unix: i64) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp(unix, 0).context("time out of range")
}

async fn pass(exporter: &Exporter) -> anyhow::Result<()> {
    match exporter.run_once().await? {
        RunOutcome::Completed(_) => Ok(()),
        RunOutcome::Skipped => bail!("the exporter skipped a pass"),
    }
}

fn index_key() -> String {
    format!(
        "{}/index.txt",
        test_export_settings().export_region.as_str()
    )
}

fn today_key() -> String {
    format!(
        "retrieve/{}/{DAY:05}",
        test_export_settings().compat_region_path
    )
}

/// The start of the hourly file a line of `index.txt` names (`CA/{start}-{end}-{part}.zip`).
fn hour_start(line: &str) -> Option<i64> {
    let name = line.rsplit('/').next()?;
    let mut fields = name.split('-');
    let start: i64 = fields.next()?.parse().ok()?;
    let end: i64 = fields.next()?.parse().ok()?;
    (end - start == 3600).then_some(start)
}

async fn observe(bucket: &Bucket, tick: i64, wall_s: f64) -> anyhow::Result<Pass> {
    let index = bucket.get(&index_key()).await?.context("no index.txt")?;
    let day = DAY * SECONDS_PER_DAY..(DAY + 1) * SECONDS_PER_DAY;
    let listed = std::str::from_utf8(&index)?
        .lines()
        .filter_map(hour_start)
        .filter(|start| day.contains(start))
        .collect();
    Ok(Pass {
        tick,
        wall_s,
        index_bytes: u64::try_from(index.len())?,
        // Absent, a phone's request for it is answered 404: no bytes.
        today_bytes: bucket.size(&today_key()).await?.unwrap_or(0),
        listed,
    })
}

/// The state a phone sees at `t`: the last pass whose tick is before it.
fn seen_at(passes: &[Pass], t: i64) -> Option<&Pass> {
    passes.iter().take_while(|p| p.tick < t).last()
}

/// The figures: bytes per phone and day on each path, averaged over every phase of the
/// phone's 4-hour schedule (one every pass interval, half-way between two passes), against the
/// floor; and the publication lag of the day's first 12 hours.
async fn summarise(
    bucket: &Bucket,
    passes: &[Pass],
    grace: i64,
) -> anyhow::Result<serde_json::Value> {
    let last = passes.last().context("no pass")?;
    let (mut hourly_bytes, mut keys) = (0_u64, 0_u64);
    let index = bucket.get(&index_key()).await?.context("no index.txt")?;
    for line in std::str::from_utf8(&index)?.lines() {
        if hour_start(line).is_some_and(|s| last.listed.contains(&s)) {
            let zip = bucket
                .get(line)
                .await?
                .context("a listed file is missing")?;
            hourly_bytes += u64::try_from(zip.len())?;
            keys += u64::try_from(keys_in_file(&zip)?.len())?;
        }
    }
    if last.listed.len() != 24 {
        bail!(
            "{} hourly files of the day listed, not 24",
            last.listed.len()
        );
    }
    let day_close = last.today_bytes;
    let (mut index_days, mut compat_days) = (Vec::new(), Vec::new());
    for phase in (PASS_SECONDS / 2..CHECK_SECONDS).step_by(300) {
        let checks: Vec<&Pass> = (0..SECONDS_PER_DAY / CHECK_SECONDS)
            .map(|k| seen_at(passes, DAY * SECONDS_PER_DAY + phase + k * CHECK_SECONDS))
            .collect::<Option<_>>()
            .context("a check before the first pass")?;
        index_days.push(checks.iter().map(|p| p.index_bytes).sum::<u64>() + hourly_bytes);
        compat_days.push(checks.iter().map(|p| p.today_bytes).sum::<u64>() + day_close);
    }
    let floor = FLOOR_BYTES_PER_KEY * keys;
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let (index, compat) = (mean(&index_days), mean(&compat_days));
    let lag = lag(passes, grace)?;
    Ok(json!({
        "keys": keys,
        "floor_bytes": floor,
        "hourly_bytes": hourly_bytes,
        "day_close_bytes": day_close,
        "index_txt_bytes": last.index_bytes,
        "check_every_s": CHECK_SECONDS,
        "egress_bytes_per_phone_day_index": index.round(),
        "egress_bytes_per_phone_day_index_range": [index_days.iter().min(), index_days.iter().max()],
        "egress_bytes_per_phone_day_compat": compat.round(),
        "egress_bytes_per_phone_day_compat_range": [compat_days.iter().min(), compat_days.iter().max()],
        "egress_index_vs_floor": index / floor.max(1) as f64,
        "egress_compat_vs_floor": compat / floor.max(1) as f64,
        "requests_per_phone_day_index": SECONDS_PER_DAY / CHECK_SECONDS + 24,
        "requests_per_phone_day_compat": SECONDS_PER_DAY / CHECK_SECONDS + 1,
        "publication_lag": lag,
        "pass_wall_s_median": median(passes.iter().map(|p| p.wall_s).collect()),
        "pass_wall_s_max": passes.iter().map(|p| p.wall_s).fold(0.0, f64::max),
    }))
}

/// For each of the day's first 12 hours: from the hour's end to the end of the pass that
/// listed its file (the tick, plus that pass's own wall time), on the default schedule; and
/// what a schedule aligned to each hour's end + grace would give (the same pass, started at
/// end + grace).
fn lag(passes: &[Pass], grace: i64) -> anyhow::Result<serde_json::Value> {
    let mut default = Vec::new();
    let mut aligned = Vec::new();
    let mut waits = BTreeMap::new();
    for h in 0..12 {
        let start = DAY * SECONDS_PER_DAY + h * 3600;
        let end = start + 3600;
        let pass = passes
            .iter()
            .find(|p| p.listed.contains(&start))
            .context("an hour was never listed")?;
        default.push((pass.tick - end) as f64 + pass.wall_s);
        aligned.push(grace as f64 + pass.wall_s);
        waits.insert(h, pass.tick - end - grace);
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    Ok(json!({
        "hours": 12,
        "grace_s": grace,
        "pass_every_s": PASS_SECONDS,
        "median_s": median(default.clone()),
        "max_s": max(&default),
        "aligned_median_s": median(aligned.clone()),
        "aligned_max_s": max(&aligned),
        "wait_after_grace_s": waits.values().collect::<Vec<_>>(),
    }))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hourly_line_names_its_start_and_nothing_else_does() {
        assert_eq!(hour_start("CA/3600-7200-00001.zip"), Some(3600));
        assert_eq!(hour_start("CA/daily/0-86400-00001.zip"), None);
        assert_eq!(hour_start("nonsense"), None);
    }

    #[test]
    fn a_phone_sees_the_last_pass_before_its_check() {
        let pass = |tick| Pass {
            tick,
            wall_s: 0.0,
            index_bytes: u64::try_from(tick).unwrap_or(0),
            today_bytes: 0,
            listed: Vec::new(),
        };
        let passes = [pass(0), pass(300), pass(600)];
        assert_eq!(seen_at(&passes, 450).map(|p| p.tick), Some(300));
        assert_eq!(seen_at(&passes, 0).map(|p| p.tick), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
