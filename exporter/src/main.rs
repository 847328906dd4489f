//! `diagnosis-exporter`: publishes every closed hour as signed export files
//! (DESIGN §4). Reads its configuration, then runs on its schedule, once, or one
//! of the maintenance commands. All logic lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use diagnosis_core::config::{CommonConfig, ProcessEnv, schema};
use diagnosis_core::store::{Store, StoreConfig};
use diagnosis_core::telemetry::{self, Telemetry, TelemetryConfig};
use diagnosis_core::time::{Clock as _, SystemClock};
use diagnosis_exporter::config::{Config, SigningConfig};
use diagnosis_exporter::metrics_listener::InternalListener;
use diagnosis_exporter::pipeline::{ExportError, Exporter, RunOutcome};
use diagnosis_exporter::scheduled::{self, Schedule};
use diagnosis_exporter::storage::Bucket;
use diagnosis_exporter::verify_command::{VerifyArgs, run_verify};
use diagnosis_format::sign::generate_signing_key;

/// jemalloc, configured at build time (`.cargo/config.toml`) to return freed pages at once.
/// With glibc's allocator the exporter's peak memory grew with the run (about 80 MiB at
/// 1 000 000 keys against 55 MiB of live data): after the first free of a multi-megabyte part
/// buffer glibc raises its mmap threshold and serves the next ones from a heap it does not give
/// back. Measurements in tests/bench/README.md ("Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The name this binary gives its telemetry and its database sessions.
const APPLICATION_NAME: &str = "diagnosis-exporter";

#[derive(Debug, Parser)]
#[command(
    name = "diagnosis-exporter",
    about = "Publishes every closed hour of diagnosis keys as signed export files",
    after_help = "Configuration is read from the environment; see README.md."
)]
struct Cli {
    /// Do not apply database migrations at start.
    #[arg(long, global = true)]
    no_migrate: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One full pass, then exit (non-zero on any failure or refused configuration).
    RunOnce,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print every variable the exporter reads, with its default and accepted values, as JSON
    /// (reads no configuration).
    ConfigSchema,
    /// Write a new P-256 signing key (PKCS#8 PEM, mode 0600) and print its public key.
    Keygen {
        /// Where to write the private key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a published bucket the way a phone would; exit non-zero on any violation.
    Verify {
        /// Where the bucket is: a folder, a file:///path URL, an http:// or https:// URL
        /// serving it (such as the CDN), or an s3://, gs:// or az:// bucket (read with the
        /// standard AWS_*, GOOGLE_* or AZURE_* credentials).
        location: String,
        /// Public key PEM files to check signatures against (default: the public
        /// halves of SIGNING_KEY_FILE).
        #[arg(long = "public-key")]
        public_keys: Vec<PathBuf>,
        /// The export region (default: EXPORT_REGION, else CA).
        #[arg(long)]
        region: Option<String>,
        /// The MCC of the deployed apps' retrieval objects retrieve/{MCC}/{DDDDD} and
        /// retrieve/{MCC}/00000, which are checked too (default: COMPAT_REGION_PATH, else 302).
        #[arg(long = "compat-path", value_name = "MCC")]
        compat_path: Option<String>,
        /// The CDN the apps fetch their retrieval objects through: each is fetched there at
        /// /retrieve/{MCC}/{P}/{hmac}, as the apps do, and must be the bucket's bytes. Needs
        /// --hmac-key-file; without --cdn, an http:// or https:// LOCATION is taken as the CDN.
        #[arg(long, value_name = "URL")]
        cdn: Option<String>,
        /// A file holding the apps' shared HMAC_KEY (hex, at least 32 bytes), to fetch the
        /// retrieval objects through the CDN's edge function.
        #[arg(long = "hmac-key-file", value_name = "FILE")]
        hmac_key_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ConfigSchema) = cli.command {
        println!("{}", schema::to_json(&Config::schema()));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("diagnosis-exporter: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Keygen { out }) => keygen(&out),
            Some(Command::Verify {
                location,
                public_keys,
                region,
                compat_path,
                cdn,
                hmac_key_file,
            }) => {
                let args = VerifyArgs {
                    location,
                    public_key_files: public_keys,
                    region,
                    compat_path,
                    cdn,
                    hmac_key_file,
                };
                run_verify(&args).await
            }
            Some(Command::Migrate) => migrate().await,
            Some(Command::ConfigSchema) => Ok(ExitCode::SUCCESS),
            Some(Command::RunOnce) => run_once(cli.no_migrate).await,
            None => scheduled(cli.no_migrate).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "diagnosis-exporter failed");
            eprintln!("diagnosis-exporter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate() -> anyhow::Result<ExitCode> {
    let common = CommonConfig::from_env(&ProcessEnv).context("configuration")?;
    telemetry::init(&TelemetryConfig::from_common(&common, APPLICATION_NAME))?;
    Store::open(&StoreConfig::from_common(&common, APPLICATION_NAME), true).await?;
    Ok(ExitCode::SUCCESS)
}

/// The exporter's configuration from the environment.
fn configuration() -> anyhow::Result<Config> {
    Config::from_env(&ProcessEnv).context("configuration")
}

/// Reads the signing keys, sets up telemetry, migrates and builds the exporter of `config`.
async fn exporter(
    config: Config,
    no_migrate: bool,
) -> anyhow::Result<(Exporter, Config, Telemetry)> {
    let signing = SigningConfig::from_env(&ProcessEnv)
        .context("configuration")?
        .context("configuration: SIGNING_KEY_FILE: is required but not set")?
        .load()
        .context("configuration")?;
    let telemetry = telemetry::init(&TelemetryConfig::from_common(
        &config.common,
        APPLICATION_NAME,
    ))?;
    for variable in &config.ignored_variables {
        tracing::warn!(
            variable,
            "{variable} is set but ignored: retention goes by the limits the submit service's \
             replicas record in submit_settings; it belongs in the submit service's \
             configuration only"
        );
    }
    // The bucket's URL is configuration: refused before anything connects.
    let bucket = Bucket::from_url(&config.bucket_url).context("BUCKET_URL")?;
    let store = Store::open(
        &StoreConfig::from_common(&config.common, APPLICATION_NAME),
        !no_migrate,
    )
    .await?;
    diagnosis_listener::open_files::claim(config.common.database_pool_size, "DATABASE_POOL_SIZE");
    let exporter = Exporter::new(
        store,
        bucket,
        Arc::new(SystemClock),
        config.settings.clone(),
        signing,
    )
    .await
    .context("while preparing the exporter")?;
    Ok((exporter, config, telemetry))
}

async fn run_once(no_migrate: bool) -> anyhow::Result<ExitCode> {
    let (exporter, _config, telemetry) = exporter(configuration()?, no_migrate).await?;
    let outcome = exporter.run_once().await;
    let _ = telemetry.write_metrics_snapshot();
    let report = match outcome {
        Ok(RunOutcome::Skipped) => {
            println!("another exporter is at work; nothing done");
            return Ok(ExitCode::SUCCESS);
        }
        Ok(RunOutcome::Completed(report)) => report,
        // The steps that ran are reported too; the failed ones are named below.
        Err(ExportError::StepsFailed(report)) => *report,
        Err(e) => return Err(anyhow::Error::new(e).context("export run failed")),
    };
    println!(
        "published {} hourly and {} daily windows: {} files, {} keys, {} bytes; deleted {} old objects",
        report.hours.len(),
        report.days.len(),
        report.files,
        report.keys,
        report.bytes,
        report.deleted_objects
    );
    for failure in &report.failures {
        eprintln!(
            "diagnosis-exporter: step {} failed: {}",
            failure.step.as_str(),
            failure.error
        );
    }
    for refused in &report.refused_configs {
        eprintln!(
            "diagnosis-exporter: exposure configuration refused: {}",
            refused.reason
        );
    }
    if report.failures.is_empty() && report.refused_configs.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

async fn scheduled(no_migrate: bool) -> anyhow::Result<ExitCode> {
    let config = configuration()?;
    // The schedule is configuration: refused before anything connects or migrates (DESIGN §6).
    let schedule = Schedule::parse(&config.schedule)?;
    schedule.check_ticks_after(SystemClock.now())?;
    let (exporter, config, telemetry) = exporter(config, no_migrate).await?;
    let internal = InternalListener::bind(&config, telemetry.prometheus_handle()).await?;
    scheduled::run(Arc::new(exporter), schedule, internal, shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = interrupt.await;
}

fn keygen(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;

    let (private_pem, public_pem) = generate_signing_key().context("while generating a key")?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(out).with_context(|| {
        format!(
            "cannot create {} (an existing key is never overwritten)",
            out.display()
        )
    })?;
    file.write_all(private_pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("while writing {}", out.display()))?;
    eprintln!(
        "wrote a new P-256 signing key to {} (mode 0600). Register this public key with Apple and Google:",
        out.display()
    );
    print!("{public_pem}");
    Ok(ExitCode::SUCCESS)
}
