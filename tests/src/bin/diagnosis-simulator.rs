//! `diagnosis-simulator`: plays health portals and phones against a running
//! `diagnosis-submit`, through the real HTTP API, exactly as the COVID Alert
//! apps do; downloads and checks what a phone would from the CDN; and fills a
//! database with a labelled, synthetic history for demonstrations.

use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use diagnosis_proto::encrypted_upload_response::ErrorCode;
use diagnosis_tests::dataset::Latencies;
use diagnosis_tests::simulator::{Phone, Portal, upload_now};

#[derive(Debug, Parser)]
#[command(
    name = "diagnosis-simulator",
    about = "Simulated health portal and phones"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Diagnosed phones: the portal issues a code per phone, each phone claims
    /// it and uploads its last 14 days of keys.
    Demo {
        /// Base URL of diagnosis-submit, e.g. http://127.0.0.1:8000
        #[arg(long, env = "SUBMIT_URL")]
        url: String,
        /// A portal bearer token configured in KEY_CLAIM_TOKEN.
        #[arg(long, env = "PORTAL_TOKEN")]
        token: String,
        /// How many diagnosed phones to simulate.
        #[arg(long, default_value_t = 10)]
        phones: usize,
    },
    /// Load: N concurrent diagnosed phones, each in a loop issuing a code,
    /// claiming it and uploading 14 keys, for a fixed time; prints the rates
    /// and latency percentiles of claims and uploads.
    Load {
        #[arg(long, env = "SUBMIT_URL")]
        url: String,
        #[arg(long, env = "PORTAL_TOKEN")]
        token: String,
        /// Concurrent phones.
        #[arg(long, default_value_t = 8)]
        phones: usize,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Inserts SYNTHETIC keys (originator label `SYNTHETIC`) published in each
    /// hour of the last DAYS days, so an export has a history to show.
    Backfill {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value_t = 14)]
        days: i64,
        #[arg(long, default_value_t = 40)]
        keys_per_hour: i64,
        /// The region the submit service stores keys under.
        #[arg(long, default_value = "302")]
        region: String,
    },
    /// What phones do: fetch the indexes and files from the CDN, and the deployed
    /// apps' retrieve/{MCC}/… objects through its edge function, check every
    /// signature, count the keys.
    Download {
        /// Base URL of the CDN (or the local stand-in).
        #[arg(long)]
        cdn: String,
        /// The signing key's public half (PEM).
        #[arg(long)]
        public_key: std::path::PathBuf,
        #[arg(long, default_value = "CA")]
        region: String,
        /// The apps' shared HMAC key (hex), which the edge function checks.
        #[arg(long, env = "HMAC_KEY", hide_env_values = true)]
        hmac_key: String,
        /// The MCC in the apps' retrieval path.
        #[arg(long, env = "COMPAT_REGION_PATH", default_value = "302")]
        region_path: String,
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
        Command::Demo { url, token, phones } => runtime.block_on(demo(&url, &token, phones)),
        Command::Load {
            url,
            token,
            phones,
            seconds,
        } => runtime.block_on(load(&url, &token, phones, seconds)),
        Command::Backfill {
            database_url,
            days,
            keys_per_hour,
            region,
        } => runtime.block_on(backfill(&database_url, days, keys_per_hour, &region)),
        Command::Download {
            cdn,
            public_key,
            region,
            hmac_key,
            region_path,
        } => {
            let edge = Retrieval {
                hmac_key,
                region_path,
            };
            runtime.block_on(download(&cdn, &public_key, &region, edge))
        }
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
        let reply = phone.upload(&upload_now(14)).await?;
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

async fn backfill(
    database_url: &str,
    days: i64,
    keys_per_hour: i64,
    region: &str,
) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to DATABASE_URL")?;
    tokio::spawn(connection);
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let last_hour = now / 3600 - 1;
    let first_hour = last_hour - days * 24 + 1;
    let started = Instant::now();
    for day in 0..days {
        let from = i32::try_from(first_hour + day * 24)?;
        let to = from + 23;
        // Keys of whole days 2 to 13 days before their publish hour (expired,
        // still relevant), risk and onset spread like real uploads, random key data.
        let inserted = client
            .execute(
                "INSERT INTO diagnosis_keys
                     (key_data, rolling_start_interval_number, rolling_period, transmission_risk_level,
                      report_type, days_since_onset, region, originator, hour_of_submission, publish_hour)
                 SELECT decode(md5(random()::text || clock_timestamp()::text || h::text || i::text), 'hex'),
                        ((h / 24) - 2 - (random() * 11)::int) * 144, 144, (random() * 8)::int,
                        1, CASE WHEN random() < 0.3 THEN NULL ELSE (random() * 28)::int - 14 END,
                        $3, 'SYNTHETIC', h, h
                   FROM generate_series($1::int, $2::int) h, generate_series(1, $4::int) i
                 ON CONFLICT (key_data) DO NOTHING",
                &[&from, &to, &region, &i32::try_from(keys_per_hour)?],
            )
            .await
            .context("inserting synthetic keys")?;
        println!(
            "  backfill: day {:>2}/{days}: {inserted} synthetic keys",
            day + 1
        );
    }
    println!(
        "backfilled {days} days of SYNTHETIC keys ({keys_per_hour} per hour) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How the deployed apps reach their objects through the CDN's edge function.
struct Retrieval {
    hmac_key: String,
    region_path: String,
}

async fn download(
    cdn: &str,
    public_key: &std::path::Path,
    region: &str,
    retrieval: Retrieval,
) -> anyhow::Result<()> {
    use diagnosis_verify::{CdnCheck, Edge, HttpSource, VerifyOptions, verify_bucket};
    let pem = std::fs::read_to_string(public_key)
        .with_context(|| format!("reading {}", public_key.display()))?;
    let key = diagnosis_format::sign::PublicKey::from_pem(&pem)?;
    let started = Instant::now();
    let source = HttpSource::new(cdn)?;
    let edge = Edge::new(
        source.clone(),
        &retrieval.region_path,
        &retrieval.hmac_key,
        std::sync::Arc::new(diagnosis_core::time::SystemClock),
    )
    .context("HMAC_KEY")?;
    let report = verify_bucket(
        &source,
        &VerifyOptions {
            region: region.to_owned(),
            public_keys: vec![key],
            compat_path: retrieval.region_path,
            cdn: Some(CdnCheck::ReadThrough(edge)),
        },
    )
    .await?;
    println!("{report}");
    println!(
        "downloaded and checked in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    if !report.is_ok() {
        bail!("the published files did not pass the phone's checks");
    }
    Ok(())
}

async fn load(url: &str, token: &str, phones: usize, seconds: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..phones {
        let portal = Portal::new(url, token);
        let url = url.to_owned();
        workers.push(tokio::spawn(async move {
            let mut claims = Latencies::default();
            let mut uploads = Latencies::default();
            let mut failures = 0_u64;
            while Instant::now() < deadline {
                let Ok(code) = portal.issue_code().await else {
                    failures += 1;
                    continue;
                };
                let mut phone = Phone::new(&url);
                let t = Instant::now();
                match phone.claim(&code).await {
                    Ok(reply) if reply.status.is_success() => {
                        claims.record(t);
                    }
                    _ => {
                        failures += 1;
                        continue;
                    }
                }
                let upload = upload_now(14);
                let t = Instant::now();
                match phone.upload(&upload).await {
                    Ok(reply) if reply.response.error() == ErrorCode::None => {
                        uploads.record(t);
                    }
                    _ => failures += 1,
                }
            }
            (claims, uploads, failures)
        }));
    }
    let mut claims = Latencies::default();
    let mut uploads = Latencies::default();
    let mut failures = 0;
    for worker in workers {
        let (c, u, f) = worker.await?;
        claims.0.extend(c.0);
        uploads.0.extend(u.0);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{phones} phones for {elapsed:.1} s: {} claims ({:.0}/s, p50 {:.2} ms, p99 {:.2} ms), {} uploads of 14 keys ({:.0}/s, p50 {:.2} ms, p99 {:.2} ms), {failures} failures",
        claims.0.len(),
        claims.0.len() as f64 / elapsed,
        claims.percentile_ms(50.0),
        claims.percentile_ms(99.0),
        uploads.0.len(),
        uploads.0.len() as f64 / elapsed,
        uploads.percentile_ms(50.0),
        uploads.percentile_ms(99.0),
    );
    if failures > 0 {
        bail!("{failures} requests failed");
    }
    Ok(())
}
