//! `diagnosis-soak`: the driver of `infra/dev/soak` (README "Soak", DESIGN §3.4). Against a
//! running diagnosis-submit it measures the capacity, then holds the service at 80 % of it
//! for MINUTES, and prints a table per window and, as its last line, one JSON object. It exits
//! 1 when an enforced condition of the goal is not met, 2 when the soak could not run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use diagnosis_tests::soak::load::Target;
use diagnosis_tests::soak::{self, SoakSettings};

#[derive(Debug, Parser)]
#[command(
    name = "diagnosis-soak",
    about = "A long steady load on diagnosis-submit, its memory, files and latency watched"
)]
struct Cli {
    /// The service's public listener, http://HOST:PORT.
    #[arg(long, env = "SUBMIT_URL")]
    url: String,
    /// A portal token the service accepts (KEY_CLAIM_TOKEN).
    #[arg(long, env = "PORTAL_TOKEN")]
    token: String,
    /// The service's process id, whose /proc entries are read.
    #[arg(long)]
    service_pid: u32,
    /// PostgreSQL's postmaster, whose CPU (with its backends') is reported.
    #[arg(long)]
    database_pid: Option<u32>,
    /// The service's /metrics, scraped every 15 s as Prometheus would.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Length of the paced run; 1 is the short run (10-second windows, flatness reported only).
    #[arg(long, default_value_t = 10)]
    minutes: usize,
    /// Length of a window, to look closer at a run [default: 60; 10 for a one-minute soak];
    /// it must divide the run.
    #[arg(long)]
    window_seconds: Option<u64>,
    /// Connections of the capacity run (the benchmark's knee).
    #[arg(long, default_value_t = 8)]
    capacity_connections: usize,
    /// Connections of the paced run [default: --capacity-connections].
    #[arg(long)]
    connections: Option<usize>,
    /// Writes the paced run second by second to this file: the slowest request of each kind
    /// per second, tab-separated, with wall-clock times.
    #[arg(long)]
    per_second: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let connections = cli.connections.unwrap_or(cli.capacity_connections);
    if cli.minutes == 0 || cli.capacity_connections == 0 || connections == 0 {
        eprintln!(
            "diagnosis-soak: --minutes, --capacity-connections and --connections must be at least 1"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("diagnosis-soak: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let target = Target {
        base_url: cli.url,
        token: cli.token,
        request_bound: Duration::from_secs(10),
    };
    let mut settings = SoakSettings::for_minutes(cli.minutes, target, cli.service_pid);
    settings.capacity_connections = cli.capacity_connections;
    settings.connections = connections;
    settings.database_pid = cli.database_pid;
    settings.metrics_url = cli.metrics_url;
    if let Some(seconds) = cli.window_seconds {
        let run = u64::try_from(cli.minutes)
            .unwrap_or(u64::MAX)
            .saturating_mul(60);
        if seconds == 0 || run % seconds != 0 {
            eprintln!("diagnosis-soak: --window-seconds must divide the run of {run} s");
            return ExitCode::from(2);
        }
        settings.window = Duration::from_secs(seconds);
        settings.windows = usize::try_from(run / seconds).unwrap_or(usize::MAX);
    }
    let figures = match runtime.block_on(soak::run(&settings)) {
        Ok(figures) => figures,
        Err(e) => {
            eprintln!("diagnosis-soak: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &cli.per_second
        && let Err(e) = std::fs::write(path, figures.per_second_tsv())
    {
        eprintln!("diagnosis-soak: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    let checks = figures.checks(settings.enforce_flatness);
    eprint!("{}", figures.table(&checks));
    let json = figures.to_json(&checks);
    println!("{json}");
    if json["enforced_met"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
