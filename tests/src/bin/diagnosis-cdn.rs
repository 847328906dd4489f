//! `diagnosis-cdn`: a stand-in for the CDN on localhost. Serves a `file://`
//! bucket folder with the Content-Type and Cache-Control its object keys imply
//! at the current time, and answers the deployed apps' `GET /retrieve/{MCC}/{P}/{hmac}` with the
//! edge function's checks and rewrite (`infra/cdn/retrieve.js`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use diagnosis_core::redacted::Redacted;
use diagnosis_core::time::SystemClock;
use diagnosis_exporter::storage::Bucket;
use diagnosis_tests::cdn::{CdnClock, Edge, serve_on};

#[derive(Debug, Parser)]
#[command(
    name = "diagnosis-cdn",
    about = "Serve a published bucket folder like the CDN does"
)]
struct Cli {
    /// The bucket folder (what BUCKET_URL=file://… points at).
    #[arg(long)]
    bucket: std::path::PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The apps' shared HMAC key, hex (enables /retrieve/…).
    #[arg(long, env = "HMAC_KEY")]
    hmac_key: Option<String>,
    /// The MCC in the retrieval path.
    #[arg(long, env = "COMPAT_REGION_PATH", default_value = "302")]
    region_path: String,
    /// The exporter's EXPORT_GRACE_SECONDS: today's retrieval object is served as growing
    /// until this long after the day's last hour ends.
    #[arg(long, env = "EXPORT_GRACE_SECONDS", default_value_t = 600)]
    grace_seconds: i64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let edge = match cli.hmac_key.as_deref().map(hex::decode) {
        None => None,
        Some(Ok(key)) if key.len() >= 32 => Some(Edge {
            hmac_key: Redacted::new(key),
            region_path: cli.region_path.clone(),
        }),
        Some(_) => {
            eprintln!("diagnosis-cdn: HMAC_KEY must be at least 32 bytes of hex");
            return ExitCode::from(2);
        }
    };
    let url = format!("file://{}", cli.bucket.display());
    let bucket = match Bucket::from_url(&url) {
        Ok(bucket) => bucket,
        Err(e) => {
            eprintln!("diagnosis-cdn: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("diagnosis-cdn: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(cli.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("diagnosis-cdn: cannot listen on {}: {e}", cli.listen);
                return ExitCode::FAILURE;
            }
        };
        let clock = CdnClock {
            clock: Arc::new(SystemClock),
            grace_seconds: cli.grace_seconds,
        };
        serve_on(listener, bucket, edge, clock);
        let _ = tokio::signal::ctrl_c().await;
        ExitCode::SUCCESS
    })
}
