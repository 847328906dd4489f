//! `diagnosis-submit`: reads its configuration, prepares the database and serves
//! until SIGTERM or SIGINT. All logic lives in the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use diagnosis_core::config::{ProcessEnv, schema};
use diagnosis_core::store::{Store, StoreConfig};
use diagnosis_core::telemetry;
use diagnosis_core::time::SystemClock;
use diagnosis_submit::config::Config;
use diagnosis_submit::{AppState, Listeners, Version};

const USAGE: &str = "usage: diagnosis-submit [migrate | config-schema] [--no-migrate]

  (no command)   apply pending migrations, then serve BIND_ADDR (and METRICS_ADDR
                 when METRIC_PROVIDER=prometheus or METRICS_USERNAME is set)
  migrate        apply pending migrations and exit
  config-schema  print every variable read, with its default and accepted values, as
                 JSON, and exit (reads no configuration)
  --no-migrate   serve without touching the schema

Configuration is read from the environment; see README.md.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (migrate_only, no_migrate) = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => (false, false),
        ["migrate"] => (true, false),
        ["config-schema"] => {
            println!("{}", schema::to_json(&Config::schema()));
            return ExitCode::SUCCESS;
        }
        ["--no-migrate"] => (false, true),
        ["-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env(&ProcessEnv) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("diagnosis-submit: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("diagnosis-submit: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, migrate_only, no_migrate)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "diagnosis-submit stopped");
            eprintln!("diagnosis-submit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, migrate_only: bool, no_migrate: bool) -> anyhow::Result<()> {
    let telemetry = telemetry::init(&telemetry::TelemetryConfig::from_common(
        &config.common,
        "diagnosis-submit",
    ))
    .context("while setting up telemetry")?;
    let store = Store::open(
        &StoreConfig::from_common(&config.common, "diagnosis-submit"),
        !no_migrate,
    )
    .await?;
    if migrate_only {
        return Ok(());
    }
    diagnosis_listener::open_files::claim(config.common.database_pool_size, "DATABASE_POOL_SIZE");
    let listeners = bind_listeners(&config)?;
    let mut state = AppState::start(
        store,
        Arc::new(SystemClock),
        config.settings,
        Version::of_build(),
    )
    .await?;
    state.prometheus = telemetry.prometheus_handle().cloned();
    tracing::info!(
        instance = state.instance.id(),
        "this replica's limits are recorded in submit_settings"
    );
    let state = Arc::new(state);
    diagnosis_submit::run(state, listeners, shutdown_signal()).await?;
    tracing::info!("diagnosis-submit stopped");
    Ok(())
}

/// Binds `BIND_ADDR` and, when something is served there, `METRICS_ADDR`, and says where the
/// service listens (server addresses only, never a client's).
fn bind_listeners(config: &Config) -> anyhow::Result<Listeners> {
    let api = diagnosis_submit::bind(config.bind_addr)
        .with_context(|| format!("while binding BIND_ADDR {}", config.bind_addr))?;
    let internal = if config.serves_internal_listener() {
        let listener = diagnosis_submit::bind(config.common.metrics_addr).with_context(|| {
            format!("while binding METRICS_ADDR {}", config.common.metrics_addr)
        })?;
        Some(listener)
    } else {
        None
    };
    // Server addresses only (never a client's), as actually bound.
    let bind_addr = api
        .local_addr()
        .context("while reading BIND_ADDR's address")?;
    match &internal {
        Some(internal) => {
            let metrics_addr = internal
                .local_addr()
                .context("while reading METRICS_ADDR's address")?;
            tracing::info!(
                %bind_addr,
                %metrics_addr,
                max_connections = config.settings.max_connections,
                portals = config.settings.key_claim_tokens.len(),
                "diagnosis-submit listening on the public and the internal listener"
            );
        }
        None => tracing::info!(
            %bind_addr,
            max_connections = config.settings.max_connections,
            portals = config.settings.key_claim_tokens.len(),
            "diagnosis-submit listening on the public listener; the internal listener \
             (METRICS_ADDR) is not opened: neither METRIC_PROVIDER=prometheus nor \
             METRICS_USERNAME/METRICS_PASSWORD is set"
        ),
    }
    Ok(Listeners { api, internal })
}

/// Completes on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
