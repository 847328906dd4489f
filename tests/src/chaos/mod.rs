//! `infra/dev/chaos`: evidence that the exporter leaves a correct bucket whatever happens to
//! it. The real `diagnosis-exporter run-once` runs as a child process against a real
//! PostgreSQL and a real S3-compatible server while the driver ([`run`]) injects faults, and
//! after every trial [`check::BucketChecker`] judges the bucket a phone would read.
//!
//! The scenarios ([`Scenario`]):
//! * **exporter kills** — SIGKILL at random moments of passes over seeded keys;
//! * **store faults** — passes through [`proxy::FaultProxy`], which answers 503, drops
//!   connections, stalls past the client timeout and truncates bodies;
//! * **slow store** — passes through [`proxy::FaultProxy`] whose first `PUT`s reach the store
//!   later than the exporter's database sessions may idle in a transaction; each pass must
//!   publish everything (DESIGN §4.2: a slow store is not a broken one);
//! * **lock races** — two exporters started over and over, half of them judging the closed
//!   hours an hour late, while the driver ends the session that holds the exporter's advisory
//!   lock;
//! * **database restarts** — PostgreSQL restarted under upload load; reported as not run until
//!   its driver is wired in here (its figures stay 0: none is ever estimated).
//!
//! Each scenario ends with a pass without faults and a check that the bucket is complete.
//! Everything runs on 127.0.0.1 with bounded counts, and every child process has a time
//! limit.

pub mod check;
pub mod harness;
pub mod proxy;
pub mod report;
mod scenarios;
pub mod seed;

use std::time::{Duration, Instant};

use anyhow::Context as _;

use self::harness::{Harness, KEY_REGION, Setup, last_closed_now};
use self::report::{ScenarioResult, Summary};
use crate::restart_load::RestartableCluster;

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    ExporterKills,
    StoreFaults,
    SlowStore,
    LockRaces,
    DbRestarts,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::ExporterKills,
        Scenario::StoreFaults,
        Scenario::SlowStore,
        Scenario::LockRaces,
        Scenario::DbRestarts,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::ExporterKills => "exporter-kills",
            Scenario::StoreFaults => "store-faults",
            Scenario::SlowStore => "slow-store",
            Scenario::LockRaces => "lock-races",
            Scenario::DbRestarts => "db-restarts",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.name() == name)
    }
}

/// How much of each fault, on how many keys.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Exporters to kill.
    pub kills: u64,
    /// Share of object-store requests that fail in the store-fault passes.
    pub fault_rate: f64,
    /// Passes through the fault proxy.
    pub fault_passes: u64,
    /// Passes through a store whose first `PUT`s are slower than the database's limits.
    pub slow_passes: u64,
    /// Rounds of two racing exporters.
    pub races: u64,
    /// Restarts of PostgreSQL under upload load.
    pub db_restarts: u64,
    /// The cluster the db-restarts scenario restarts (not the exporter's); without one that
    /// scenario is listed as not run.
    pub restart_cluster: Option<RestartableCluster>,
    /// Keys seeded.
    pub keys: usize,
    /// Closed hours they are spread over (48 or more always hold a complete UTC day).
    pub hours: usize,
    pub seed: u64,
    /// The scenarios to run.
    pub scenarios: Vec<Scenario>,
}

/// Seeds the keys, runs the chosen scenarios and sums them up.
pub async fn run(setup: Setup, config: &ChaosConfig) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let mut harness = Harness::new(setup).await?;
    let mut rng = crate::dataset::Rng::new(config.seed);

    progress(&format!(
        "seeding {} keys over the {} hours up to the last closed one",
        config.keys, config.hours
    ));
    let seeded = seed::seed_keys(
        harness.db(),
        KEY_REGION,
        config.keys,
        config.hours,
        last_closed_now(),
        config.seed,
    )
    .await
    .context("seeding keys")?;

    let pass = scenarios::measure_pass(&mut harness).await?;
    progress(&format!(
        "a full pass takes {:.1} s and publishes {} daily file(s)",
        pass.duration.as_secs_f64(),
        pass.report.daily_files
    ));
    let mut daily_files = pass.report.daily_files;
    let mut results = Vec::new();
    let mut restart = None;
    for scenario in Scenario::ALL {
        let mut result = ScenarioResult::new(scenario);
        if config.scenarios.contains(&scenario) {
            progress(&format!("scenario {}", scenario.name()));
            let scenario_started = Instant::now();
            let checks_before = harness.checker.checks();
            let daily = match scenario {
                Scenario::ExporterKills => {
                    scenarios::exporter_kills(
                        &mut harness,
                        config,
                        pass.duration,
                        &mut rng,
                        &mut result,
                    )
                    .await?
                }
                Scenario::StoreFaults => {
                    scenarios::store_faults(&mut harness, config, pass.duration, &mut result)
                        .await?
                }
                Scenario::SlowStore => {
                    scenarios::slow_store(&mut harness, config, pass.duration, &mut result).await?
                }
                Scenario::LockRaces => {
                    scenarios::lock_races(
                        &mut harness,
                        config,
                        pass.duration,
                        &mut rng,
                        &mut result,
                    )
                    .await?
                }
                Scenario::DbRestarts => {
                    restart = scenarios::db_restarts(config, &mut result).await?;
                    None
                }
            };
            daily_files = daily.unwrap_or(daily_files);
            result.checks = harness.checker.checks() - checks_before;
            result.seconds = scenario_started.elapsed().as_secs_f64();
        } else {
            result.notes.push("not selected".to_owned());
        }
        results.push(result);
    }
    let (regressions, largest_step) = {
        let tracker = harness.checker.tracker();
        let tracker = tracker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (tracker.regressions(), tracker.largest_step())
    };
    Ok(Summary {
        seeded,
        pass_seconds: pass.duration.as_secs_f64(),
        measuring_violations: pass.violations,
        scenarios: results,
        bucket_checks: harness.checker.checks(),
        immutable_objects_changed: harness.checker.immutable_changed(),
        index_regressions: regressions,
        max_index_regressions: largest_step,
        daily_files,
        restart,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A progress line on standard error.
pub(crate) fn progress(message: &str) {
    eprintln!("chaos: {message}");
}

/// A uniformly random duration in `[0, of)`.
pub(crate) fn random_within(rng: &mut crate::dataset::Rng, of: Duration) -> Duration {
    let micros = u64::try_from(of.as_micros()).unwrap_or(u64::MAX).max(1);
    Duration::from_micros(rng.next_u64() % micros)
}
