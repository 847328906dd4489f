//! The scenarios of [`super::run`]. Each records its trials, faults, pass outcomes and every
//! violation in a [`ScenarioResult`], checks the bucket after every trial, and ends with a
//! pass without faults and a check that the bucket is complete.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::check::{CheckReport, Expectation, Violation};
use super::harness::{ExporterRun, GRACE_SECONDS, Harness, PassEnd, last_closed_now};
use super::proxy::{Fault, FaultProxy};
use super::report::ScenarioResult;
use super::{ChaosConfig, progress, random_within};
use crate::dataset::Rng;
use crate::restart_load::{LoadSettings, RestartFigures, upload_through_restarts};

/// What the client waits for one object-store request in the store-fault passes
/// (`AWS_TIMEOUT`), and how long the proxy stalls a request: longer, so a stall is a timeout.
const STORE_TIMEOUT: &str = "2s";
const STALL: Duration = Duration::from_secs(3);

/// A child process's time limit: generous, but a hung exporter cannot hold the run forever.
fn pass_limit(pass: Duration) -> Duration {
    Duration::from_secs(120) + pass * 20
}

/// The measuring pass: a full pass from an empty bucket without faults.
#[derive(Debug)]
pub struct Measured {
    pub duration: Duration,
    pub report: CheckReport,
    pub violations: Vec<Violation>,
}

/// Runs one pass and checks that it publishes a complete bucket; its duration is the scale
/// of every random moment that follows.
pub async fn measure_pass(harness: &mut Harness) -> anyhow::Result<Measured> {
    harness.new_generation("measure").await?;
    let through = last_closed_now();
    let endpoint = harness.setup.s3_endpoint.clone();
    let run = harness.start_exporter(&endpoint, &[])?;
    let stderr = run.stderr_path().to_owned();
    let (end, duration) = run.wait(Duration::from_secs(1800)).await?;
    if end != PassEnd::Completed {
        bail!(
            "the measuring pass did not complete ({end:?}):\n{}",
            ExporterRun::stderr_tail(&stderr)
        );
    }
    harness.wait_unlocked().await?;
    let report = harness
        .check(Expectation {
            complete: true,
            through_hour: Some(through),
        })
        .await?;
    Ok(Measured {
        duration,
        violations: report.violations.clone(),
        report,
    })
}

/// One pass on the live generation, killed after `kill_after` when it is still running, with
/// `index.txt` sampled meanwhile. Returns how it ended; the samples' findings go to `result`.
async fn pass(
    harness: &mut Harness,
    endpoint: &str,
    extra: &[(&str, &str)],
    kill_after: Option<Duration>,
    limit: Duration,
    result: &mut ScenarioResult,
) -> anyhow::Result<PassEnd> {
    let watcher = harness.watch_index()?;
    let mut run = harness.start_exporter(endpoint, extra)?;
    let stderr = run.stderr_path().to_owned();
    if let Some(delay) = kill_after {
        tokio::time::sleep(delay).await;
        run.kill_if_running();
    }
    let (end, _) = run.wait(limit).await?;
    result.violations.extend(watcher.stop().await);
    harness.wait_unlocked().await?;
    result.passes.add(end);
    if matches!(end, PassEnd::Failed | PassEnd::TimedOut) && result.notes.len() < 6 {
        let tail = ExporterRun::stderr_tail(&stderr);
        let last = tail.lines().last().unwrap_or("(no output)");
        result
            .notes
            .push(format!("a pass ended {end:?}: {}", shorten(last)));
    }
    Ok(end)
}

fn shorten(line: &str) -> String {
    let mut line = line.to_owned();
    if line.len() > 300 {
        let mut cut = 300;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// A full check of the live generation; its findings go to `result`.
async fn check(
    harness: &mut Harness,
    expectation: Expectation,
    result: &mut ScenarioResult,
) -> anyhow::Result<CheckReport> {
    let report = harness.check(expectation).await?;
    result.violations.extend(report.violations.iter().cloned());
    result.indexes_one_pass_apart += report.indexes_one_pass_apart;
    result.retrieval_out_of_step += report.retrieval_out_of_step;
    Ok(report)
}

/// The closing pass without faults, and a check that the bucket is complete. Returns the
/// daily files the check found.
async fn clean_pass(
    harness: &mut Harness,
    endpoint: &str,
    extra: &[(&str, &str)],
    pass_duration: Duration,
    result: &mut ScenarioResult,
) -> anyhow::Result<Option<usize>> {
    let through = last_closed_now();
    let end = pass(
        harness,
        endpoint,
        extra,
        None,
        pass_limit(pass_duration),
        result,
    )
    .await?;
    result.clean_pass = Some(end);
    let report = check(
        harness,
        Expectation {
            complete: true,
            through_hour: Some(through),
        },
        result,
    )
    .await?;
    Ok(Some(report.daily_files))
}

/// Scenario 1: SIGKILL at a random moment of a pass, a check after each. A generation
/// starts afresh after a pass that completed (and now and then after a kill), so most kills
/// land in a pass with work left.
pub async fn exporter_kills(
    harness: &mut Harness,
    config: &ChaosConfig,
    pass_duration: Duration,
    rng: &mut Rng,
    result: &mut ScenarioResult,
) -> anyhow::Result<Option<usize>> {
    result.ran = true;
    let endpoint = harness.setup.s3_endpoint.clone();
    let max_trials = config.kills.saturating_mul(3).saturating_add(10);
    let mut fresh = true;
    while result.faults < config.kills && result.trials < max_trials {
        if fresh {
            harness.new_generation("kills").await?;
            fresh = false;
        }
        result.trials += 1;
        let through = last_closed_now();
        let delay = random_within(rng, pass_duration);
        let end = pass(
            harness,
            &endpoint,
            &[],
            Some(delay),
            pass_limit(pass_duration),
            result,
        )
        .await?;
        match end {
            PassEnd::Killed => {
                result.faults += 1;
                fresh = rng.below(4) == 0;
            }
            PassEnd::Completed => fresh = true,
            _ => {}
        }
        check(
            harness,
            Expectation {
                complete: end == PassEnd::Completed,
                through_hour: Some(through),
            },
            result,
        )
        .await?;
        if result.trials.is_multiple_of(10) {
            progress(&format!(
                "{} kills in {} trials",
                result.faults, result.trials
            ));
        }
    }
    if result.faults < config.kills {
        result.notes.push(format!(
            "only {} of {} kills landed in {} trials (the passes ended first)",
            result.faults, config.kills, result.trials
        ));
    }
    clean_pass(harness, &endpoint, &[], pass_duration, result).await
}

/// Scenario 2: passes from an empty bucket through the fault proxy, a check after each.
pub async fn store_faults(
    harness: &mut Harness,
    config: &ChaosConfig,
    pass_duration: Duration,
    result: &mut ScenarioResult,
) -> anyhow::Result<Option<usize>> {
    result.ran = true;
    let proxy = FaultProxy::start(s3_upstream(harness)?, config.seed ^ 0x5eed_fa17, STALL).await?;
    let endpoint = proxy.endpoint();
    let extra = [("AWS_TIMEOUT", STORE_TIMEOUT)];
    // Stalls and retries lengthen a pass well beyond the measured one.
    let limit = pass_limit(pass_duration) + Duration::from_secs(300);
    for _ in 0..config.fault_passes {
        harness.new_generation("faults").await?;
        result.trials += 1;
        let through = last_closed_now();
        proxy.set_rate(config.fault_rate);
        let end = pass(harness, &endpoint, &extra, None, limit, result).await?;
        proxy.set_rate(0.0);
        check(
            harness,
            Expectation {
                complete: end == PassEnd::Completed,
                through_hour: Some(through),
            },
            result,
        )
        .await?;
    }
    let counts = proxy.counts();
    result.faults = counts.total();
    result.notes.push(format!(
        "{} requests at a fault rate of {}: {}",
        counts.requests,
        config.fault_rate,
        Fault::ALL
            .iter()
            .map(|fault| format!("{} {}", counts.of(*fault), fault.name()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    clean_pass(harness, &endpoint, &extra, pass_duration, result).await
}

/// How late the slow store's first `PUT`s of a pass reach it, how many there are, and the
/// exporter's statement timeout meanwhile: its sessions may idle in a transaction for twice
/// that, 2 s, so before the fence's idle limit followed the store's budget every such pass
/// failed at its first hour.
const SLOW_PUT_DELAY: Duration = Duration::from_secs(3);
const SLOW_PUTS_PER_PASS: u64 = 3;
const SLOW_STORE_STATEMENT_TIMEOUT_MS: &str = "1000";

/// Scenario 2b: passes from an empty bucket through a store whose first `PUT`s reach it
/// later than the exporter's database sessions may idle in a transaction (DESIGN §4.2). A
/// pass that does not complete is a violation: a slow store is not a broken one.
pub async fn slow_store(
    harness: &mut Harness,
    config: &ChaosConfig,
    pass_duration: Duration,
    result: &mut ScenarioResult,
) -> anyhow::Result<Option<usize>> {
    result.ran = true;
    let proxy = FaultProxy::start(s3_upstream(harness)?, config.seed ^ 0x5105, STALL).await?;
    let endpoint = proxy.endpoint();
    let extra = [(
        "DATABASE_STATEMENT_TIMEOUT_MS",
        SLOW_STORE_STATEMENT_TIMEOUT_MS,
    )];
    let limit = pass_limit(pass_duration) + SLOW_PUT_DELAY * 10;
    for _ in 0..config.slow_passes {
        harness.new_generation("slow").await?;
        result.trials += 1;
        let through = last_closed_now();
        let slowed_before = proxy.slowed();
        proxy.slow_puts(SLOW_PUTS_PER_PASS, SLOW_PUT_DELAY);
        let end = pass(harness, &endpoint, &extra, None, limit, result).await?;
        result.faults += proxy.slowed() - slowed_before;
        if end != PassEnd::Completed {
            result.violations.push(Violation::Incomplete {
                what: format!("a pass over a slow store ended {end:?}"),
            });
        }
        check(
            harness,
            Expectation {
                complete: end == PassEnd::Completed,
                through_hour: Some(through),
            },
            result,
        )
        .await?;
    }
    result.notes.push(format!(
        "{} passes, each with its first {SLOW_PUTS_PER_PASS} PUTs {} s late and DATABASE_STATEMENT_TIMEOUT_MS={SLOW_STORE_STATEMENT_TIMEOUT_MS}",
        config.slow_passes,
        SLOW_PUT_DELAY.as_secs()
    ));
    clean_pass(harness, &endpoint, &extra, pass_duration, result).await
}

/// The address of the S3-compatible server, which the proxies forward to.
fn s3_upstream(harness: &Harness) -> anyhow::Result<SocketAddr> {
    harness
        .setup
        .s3_endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| {
            format!(
                "the S3 endpoint {} is not http://IP:PORT",
                harness.setup.s3_endpoint
            )
        })
}

/// Scenario 3: two exporters started together and restarted as they end, for one and a half
/// pass durations per round, while the driver ends the session holding the exporter's
/// advisory lock at random moments; half of them see the closed hours an hour late
/// ([`start_racer`]). A check after each round.
pub async fn lock_races(
    harness: &mut Harness,
    config: &ChaosConfig,
    pass_duration: Duration,
    rng: &mut Rng,
    result: &mut ScenarioResult,
) -> anyhow::Result<Option<usize>> {
    result.ran = true;
    let endpoint = harness.setup.s3_endpoint.clone();
    let limit = pass_limit(pass_duration);
    let round_length = (pass_duration * 3 / 2).max(Duration::from_secs(1));
    let mut lagging = 0;
    let mut overlapping_rounds = 0;
    for _ in 0..config.races {
        harness.new_generation("races").await?;
        result.trials += 1;
        let watcher = harness.watch_index()?;
        let started = Instant::now();
        let round_end = started + round_length;
        let mut next_kill = started + pass_duration / 10 + random_within(rng, pass_duration);
        let mut slots: Vec<Option<ExporterRun>> = vec![
            Some(start_racer(harness, &endpoint, rng, &mut lagging)?),
            Some(start_racer(harness, &endpoint, rng, &mut lagging)?),
        ];
        // When each exporter that did not skip ran, and whether it failed (its lock session
        // ended under it): a failed one overlapping another that took the lock is the race.
        let mut working: Vec<(Instant, Instant, bool)> = Vec::new();
        while Instant::now() < round_end {
            for slot in &mut slots {
                if slot.as_mut().is_some_and(ExporterRun::has_exited) {
                    if let Some(run) = slot.take() {
                        let run_started = run.started();
                        let (end, _) = run.wait(limit).await?;
                        result.passes.add(end);
                        if end != PassEnd::Skipped {
                            working.push((run_started, Instant::now(), end == PassEnd::Failed));
                        }
                    }
                    if Instant::now() < round_end {
                        *slot = Some(start_racer(harness, &endpoint, rng, &mut lagging)?);
                    }
                }
            }
            if Instant::now() >= next_kill {
                result.faults += harness.terminate_lock_holders().await?;
                next_kill = Instant::now() + pass_duration / 10 + random_within(rng, pass_duration);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for run in slots.into_iter().flatten() {
            let run_started = run.started();
            let (end, _) = run.wait(limit).await?;
            result.passes.add(end);
            if end != PassEnd::Skipped {
                working.push((run_started, Instant::now(), end == PassEnd::Failed));
            }
        }
        let overlap = working
            .iter()
            .enumerate()
            .any(|(i, a)| working[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1));
        if overlap {
            overlapping_rounds += 1;
        }
        result.violations.extend(watcher.stop().await);
        harness.wait_unlocked().await?;
        check(harness, Expectation::default(), result).await?;
    }
    result.notes.push(format!(
        "{lagging} of {} exporters started with their clock an hour behind; two exporters \
         worked at the same time in {overlapping_rounds} of {} rounds",
        result.passes.total(),
        config.races
    ));
    clean_pass(harness, &endpoint, &[], pass_duration, result).await
}

/// Starts one racer. Half of them judge the closed hours an hour late
/// (`EXPORT_GRACE_SECONDS` one hour longer): the view of an exporter that started just
/// before an hour closed while the other started just after, which a race across an
/// hour's close gives in production; a round is too short to wait for a real one.
fn start_racer(
    harness: &mut Harness,
    endpoint: &str,
    rng: &mut Rng,
    lagging: &mut u64,
) -> anyhow::Result<ExporterRun> {
    if rng.below(2) == 0 {
        *lagging += 1;
        let grace = (GRACE_SECONDS + 3600).to_string();
        harness.start_exporter(endpoint, &[("EXPORT_GRACE_SECONDS", &grace)])
    } else {
        harness.start_exporter(endpoint, &[])
    }
}

/// Scenario 4, PostgreSQL restarted under upload load: the submit service on a database of
/// the restartable cluster (not the exporter's) under continuous uploads from eight phones,
/// the cluster restarted `config.db_restarts` times with `pg_ctl restart -m fast` at random
/// moments ([`upload_through_restarts`]). Every key of every upload answered 200 must be
/// stored, no request may go unanswered, and uploads must succeed again after the last restart
/// on the same service. Without a restartable cluster the scenario is listed as not run and its
/// figures stay 0, never estimated.
pub async fn db_restarts(
    config: &ChaosConfig,
    result: &mut ScenarioResult,
) -> anyhow::Result<Option<RestartFigures>> {
    let Some(cluster) = &config.restart_cluster else {
        result.notes.push(
            "not run: no restartable cluster (--restart-database-url, --restart-command)"
                .to_owned(),
        );
        return Ok(None);
    };
    let restarts = usize::try_from(config.db_restarts).context("--db-restarts")?;
    let figures = upload_through_restarts(cluster, restarts, LoadSettings::default())
        .await
        .context("restarting PostgreSQL under upload load")?;
    result.ran = true;
    result.trials = figures.restarts as u64;
    result.faults = figures.restarts as u64;
    result.notes.push(figures.to_string());
    for violation in figures.violations() {
        result.notes.push(format!("VIOLATION: {violation}"));
    }
    Ok(Some(figures))
}
