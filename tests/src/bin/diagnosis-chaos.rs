//! `diagnosis-chaos`: the driver of `infra/dev/chaos` (README "Chaos"). It runs the real
//! `diagnosis-exporter run-once` against the PostgreSQL database and S3-compatible server it is
//! given, injects faults, checks the bucket after every trial, and prints a table and, as its
//! last line, one JSON object. It exits non-zero when any check found a violation.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use diagnosis_tests::chaos::harness::Setup;
use diagnosis_tests::chaos::{ChaosConfig, Scenario, run};
use diagnosis_tests::restart_load::RestartableCluster;

#[derive(Debug, Parser)]
#[command(
    name = "diagnosis-chaos",
    about = "Faults against the exporter, and a bucket check after each"
)]
struct Cli {
    /// The exporter's database (it is migrated, and its `exports` ledger truncated between
    /// trials).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The S3-compatible server, http://127.0.0.1:PORT.
    #[arg(long)]
    s3_endpoint: String,
    /// The diagnosis-exporter binary to run.
    #[arg(long)]
    exporter: PathBuf,
    /// A folder for the signing key and the exporters' logs.
    #[arg(long)]
    work_dir: PathBuf,
    /// A few trials of each scenario on 20 000 keys (the test command's run); the options
    /// below override its figures.
    #[arg(long)]
    short: bool,
    /// Exporters to SIGKILL at random moments of their passes [default: 50; --short: 4].
    #[arg(long)]
    kills: Option<u64>,
    /// Share of object-store requests that fail in the store-fault passes [default: 0.05;
    /// --short: 0.03].
    #[arg(long)]
    fault_rate: Option<f64>,
    /// Passes through the fault proxy [default: 8; --short: 2].
    #[arg(long)]
    fault_passes: Option<u64>,
    /// Passes through a store whose first PUTs of each pass reach it 3 s late, longer than the
    /// exporter's sessions may idle in a transaction [default: 4; --short: 1].
    #[arg(long)]
    slow_passes: Option<u64>,
    /// Rounds of two racing exporters with the lock session ended [default: 10; --short: 2].
    #[arg(long)]
    races: Option<u64>,
    /// Keys to seed [default: 200000; --short: 20000].
    #[arg(long)]
    keys: Option<usize>,
    /// Closed hours the keys are spread over, ending with the last closed one; 48 or more
    /// always hold a complete UTC day [default: 48].
    #[arg(long)]
    hours: Option<usize>,
    /// Restarts of PostgreSQL under upload load [default: 5; --short: 2].
    #[arg(long)]
    db_restarts: Option<u64>,
    /// A cluster the db-restarts scenario may restart (a postgres:// URL of any database on
    /// it, as a user who may create databases); without it that scenario is not run.
    #[arg(long, env = "DIAGNOSIS_TEST_RESTART_DATABASE_URL")]
    restart_database_url: Option<String>,
    /// A program that restarts that cluster and returns once it accepts connections again.
    #[arg(long, env = "DIAGNOSIS_TEST_RESTART_COMMAND")]
    restart_command: Option<PathBuf>,
    /// Seed of every random choice (keys, kill moments, faults).
    #[arg(long, default_value_t = 2020)]
    seed: u64,
    /// Run only this scenario (repeatable): exporter-kills, store-faults, slow-store,
    /// lock-races, db-restarts [default: all].
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
}

fn config(cli: &Cli) -> Result<ChaosConfig, String> {
    let short = cli.short;
    let pick = |value: Option<u64>, long: u64, short_value: u64| {
        value.unwrap_or(if short { short_value } else { long })
    };
    let fault_rate = cli.fault_rate.unwrap_or(if short { 0.03 } else { 0.05 });
    if !(0.0..=1.0).contains(&fault_rate) {
        return Err(format!("--fault-rate {fault_rate} is not between 0 and 1"));
    }
    let hours = cli.hours.unwrap_or(48);
    if !(1..=14 * 24).contains(&hours) {
        return Err(format!(
            "--hours {hours}: between 1 and 336 (the exporter publishes 14 days)"
        ));
    }
    let mut scenarios = Vec::new();
    for name in &cli.scenarios {
        let scenario = Scenario::parse(name).ok_or_else(|| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            format!("--scenario {name}: one of {}", names.join(", "))
        })?;
        scenarios.push(scenario);
    }
    if scenarios.is_empty() {
        scenarios = Scenario::ALL.to_vec();
    }
    let restart_cluster = match (&cli.restart_database_url, &cli.restart_command) {
        (Some(url), Some(command)) => Some(RestartableCluster::new(
            url.clone(),
            command.clone(),
            Vec::<OsString>::new(),
        )),
        (None, None) => None,
        _ => {
            return Err("--restart-database-url and --restart-command go together".to_owned());
        }
    };
    Ok(ChaosConfig {
        kills: pick(cli.kills, 50, 4),
        fault_rate,
        fault_passes: pick(cli.fault_passes, 8, 2),
        slow_passes: pick(cli.slow_passes, 4, 1),
        races: pick(cli.races, 10, 2),
        db_restarts: pick(cli.db_restarts, 5, 2),
        restart_cluster,
        keys: cli.keys.unwrap_or(if short { 20_000 } else { 200_000 }),
        hours,
        seed: cli.seed,
        scenarios,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("diagnosis-chaos: {message}");
            return ExitCode::from(2);
        }
    };
    let setup = Setup {
        database_url: cli.database_url,
        s3_endpoint: cli.s3_endpoint.trim_end_matches('/').to_owned(),
        exporter: cli.exporter,
        work_dir: cli.work_dir,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("diagnosis-chaos: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(setup, &config)) {
        Ok(summary) => {
            print!("{}", summary.table());
            println!("{}", summary.json());
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("diagnosis-chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}
