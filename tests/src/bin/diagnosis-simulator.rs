//! `diagnosis-simulator`: plays health portals and phones against a running
//! `diagnosis-submit`, through the real HTTP API, exactly as the COVID Alert
//! apps do. Used by `infra/dev/run` to demonstrate the submission path.

use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use diagnosis_proto::encrypted_upload_response::ErrorCode;
use diagnosis_tests::simulator::{Phone, Portal, app_keys, upload_of};

#[derive(Debug, Parser)]
#[command(
    name = "diagnosis-simulator",
    about = "Simulated health portal and phones"
)]
struct Cli {
    /// Base URL of diagnosis-submit, e.g. http://127.0.0.1:8000
    #[arg(long, env = "SUBMIT_URL")]
    url: String,
    /// A portal bearer token configured in KEY_CLAIM_TOKEN.
    #[arg(long, env = "PORTAL_TOKEN")]
    token: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Diagnosed phones: the portal issues a code per phone, each phone claims
    /// it and uploads its last 14 days of keys.
    Demo {
        /// How many diagnosed phones to simulate.
        #[arg(long, default_value_t = 10)]
        phones: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("diagnosis-simulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Demo { phones } => runtime.block_on(demo(&cli.url, &cli.token, phones)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diagnosis-simulator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(url: &str, token: &str, phones: usize) -> anyhow::Result<()> {
    let portal = Portal::new(url, token);
    let started = Instant::now();
    let mut keys_uploaded = 0;
    for n in 1..=phones {
        let code = portal
            .issue_code()
            .await
            .context("the portal could not issue a code")?;
        // People type codes in lower case with dashes; the server normalises them.
        let typed = format!("{}-{}-{}", &code[..3], &code[3..6], &code[6..]).to_lowercase();
        let mut phone = Phone::new(url);
        let claim = phone.claim(&typed).await?;
        if !claim.status.is_success() {
            bail!(
                "phone {n}: claim-key answered {} {:?}",
                claim.status,
                claim.response.error()
            );
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let now = i64::try_from(now)?;
        let keys = app_keys(now, 14);
        let reply = phone.upload(&upload_of(keys, now)).await?;
        if reply.response.error() != ErrorCode::None {
            bail!(
                "phone {n}: upload answered {} {:?}",
                reply.status,
                reply.response.error()
            );
        }
        keys_uploaded += 14;
        println!(
            "  phone {n:>3}: code issued, claimed as {:?}-style input, 14 keys uploaded",
            "abc-def-ghij"
        );
    }
    println!(
        "{phones} diagnosed phones uploaded {keys_uploaded} keys in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
