//! `diagnosis-bench`: the measuring instruments of `infra/dev/bench`
//! (tests/bench/README.md). Each subcommand does one measurement, or prepares one,
//! and prints its result as one JSON object on the last line of its output.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use diagnosis_core::domain::Region;
use diagnosis_core::store::{Store, StoreConfig};
use diagnosis_core::time::ManualClock;
use diagnosis_exporter::pipeline::{Exporter, RunOutcome};
use diagnosis_exporter::storage::Bucket;
use diagnosis_format::archive::zip_export;
use diagnosis_format::render::{ExportWindow, PartNumber, SignerInfo, render_window};
use diagnosis_format::sign::{SigningKey, SigningKeys, sign_export};
use diagnosis_format::testing::export_bin_in_order;
use diagnosis_proto::Message as _;
use diagnosis_proto::encrypted_upload_response::ErrorCode;
use diagnosis_tests::app::TestApp;
use diagnosis_tests::black_hole::upstream_of;
use diagnosis_tests::dataset::{Latencies, Rng, catch_up, copy_keys, history, population};
use diagnosis_tests::export::{test_export_settings, test_signing_keys};
use diagnosis_tests::http_client::HttpClient;
use diagnosis_tests::pg::TestDatabase;
use diagnosis_tests::pg_wire::CountingProxy;
use diagnosis_tests::procfs::{self, Pid};
use diagnosis_tests::simulator::{Phone, Portal, UploadReply, app_keys, upload_now, upload_of};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "diagnosis-bench", about = "Benchmark instruments")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stores synthetic keys (whole cases of 28) with a binary COPY: `keys` uploaded during
    /// the 24 hours of UTC day `day`, spread evenly over its hours; or, with `last_hour`,
    /// `keys` a day for `days` days of hours ending with `last_hour`, each hour's keys
    /// already expired when uploaded, so that each hour publishes its own keys.
    Seed {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Keys in all (with `day`) or a day (with `last_hour`).
        #[arg(long)]
        keys: usize,
        /// UTC day number (days since 1970-01-01).
        #[arg(
            long,
            required_unless_present = "last_hour",
            conflicts_with = "last_hour"
        )]
        day: Option<i64>,
        /// The newest hour of a history (hours since 1970-01-01).
        #[arg(long)]
        last_hour: Option<i64>,
        /// The days of hours a history spans, ending with `last_hour`.
        #[arg(long, default_value_t = 14, requires = "last_hour")]
        days: i64,
        #[arg(long, default_value = "302")]
        region: String,
        #[arg(long, default_value_t = 2020)]
        seed: u64,
    },
    /// Bytes per key of one published hour of `keys` keys, canonical order against random order.
    Size {
        #[arg(long, default_value_t = 100_000)]
        keys: usize,
        #[arg(long, default_value_t = 2020)]
        seed: u64,
    },
    /// The fewest requests with which a phone offline for 14 days obtains every key it can
    /// still match, at every hour of one UTC day, with the exporter running each hour.
    Catchup {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value_t = 20)]
        keys_per_hour: usize,
    },
    /// What a phone downloads in a day on each path, and how long after an hour closes its
    /// file is listed: the exporter's real passes on a simulated clock, every five minutes
    /// (the default schedule) over one UTC day of `keys_per_day` keys.
    Egress {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value_t = 100_000)]
        keys_per_day: usize,
    },
    /// The round trips to the database of accepted 14-key uploads, counted by a proxy between
    /// the submit service (in-process) and Postgres, in a database created in the cluster
    /// `DIAGNOSIS_TEST_DATABASE_URL` names.
    RoundTrips,
    /// Concurrent phones against a running diagnosis-submit: codes issued beforehand (not
    /// timed), then a claim phase and an upload phase of `seconds` each.
    Load {
        #[arg(long, env = "SUBMIT_URL")]
        url: String,
        #[arg(long, env = "PORTAL_TOKEN")]
        token: String,
        #[arg(long)]
        phones: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Codes issued before the clock starts; the phases stop early if they run out.
        #[arg(long, default_value_t = 10_000)]
        codes: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("diagnosis-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Seed {
                database_url,
                keys,
                day,
                last_hour,
                days,
                region,
                seed,
            } => match (day, last_hour) {
                (Some(day), _) => seed_command(&database_url, keys, day, &region, seed).await,
                (None, Some(last_hour)) => {
                    seed_history(&database_url, keys, last_hour, days, &region, seed).await
                }
                (None, None) => Err(anyhow::anyhow!("seed needs --day or --last-hour")),
            },
            Command::Size { keys, seed } => size(keys, seed),
            Command::Catchup {
                database_url,
                keys_per_hour,
            } => catchup(&database_url, keys_per_hour).await,
            Command::Egress {
                database_url,
                keys_per_day,
            } => diagnosis_tests::egress::measure(&database_url, keys_per_day).await,
            Command::RoundTrips => round_trips().await,
            Command::Load {
                url,
                token,
                phones,
                seconds,
                codes,
            } => load(&url, &token, phones, seconds, codes).await,
        }
    });
    match result {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("diagnosis-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(database_url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to DATABASE_URL")?;
    tokio::spawn(connection);
    Ok(client)
}

async fn seed_command(
    database_url: &str,
    keys: usize,
    day: i64,
    region: &str,
    seed: u64,
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let client = connect(database_url).await?;
    let mut rng = Rng::new(seed);
    // Cases are generated hour by hour so that memory stays small at 10 million keys.
    let per_hour = keys / 24;
    let mut written = 0;
    let mut all = Vec::new();
    for h in 0..24_usize {
        let count = if h == 23 {
            keys - per_hour * 23
        } else {
            per_hour
        };
        let hour = day * 24 + i64::try_from(h)?;
        all.clear();
        all.extend(
            population(&mut rng, day, count)
                .into_iter()
                .map(|k| (hour, k)),
        );
        written += copy_keys(&client, region, all.drain(..)).await?;
    }
    client.batch_execute("ANALYZE diagnosis_keys").await?;
    Ok(json!({
        "keys": written,
        "day": day,
        "first_hour": day * 24,
        "last_hour": day * 24 + 23,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// `keys_per_day` keys a day over the `days × 24` hours ending with `last_hour`, in one
/// COPY; each hour publishes its own keys ([`history`]).
async fn seed_history(
    database_url: &str,
    keys_per_day: usize,
    last_hour: i64,
    days: i64,
    region: &str,
    seed: u64,
) -> anyhow::Result<serde_json::Value> {
    if days < 1 {
        bail!("--days must be at least 1");
    }
    let started = Instant::now();
    let client = connect(database_url).await?;
    let first_hour = last_hour - days * 24 + 1;
    let rows = history(Rng::new(seed), keys_per_day, first_hour, last_hour);
    let written = copy_keys(&client, region, rows).await?;
    client.batch_execute("ANALYZE diagnosis_keys").await?;
    Ok(json!({
        "keys": written,
        "days": days,
        "first_hour": first_hour,
        "last_hour": last_hour,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// One hour of keys, rendered and zipped exactly as the exporter publishes it, and the
/// same keys in random order (the baseline) through the same zip step.
fn size(keys: usize, seed: u64) -> anyhow::Result<serde_json::Value> {
    let mut rng = Rng::new(seed);
    let day = 20_400;
    let mut shuffled = population(&mut rng, day, keys);
    // Fisher-Yates: the population comes case by case, which is itself an order.
    for i in (1..shuffled.len()).rev() {
        let j = usize::try_from(rng.next_u64() % (i as u64 + 1))?;
        shuffled.swap(i, j);
    }
    let (private_pem, _) = diagnosis_format::sign::generate_signing_key()?;
    let signer = SignerInfo::new("v1", "302")?;
    let signing = SigningKeys::new(vec![(SigningKey::from_pem(&private_pem)?, signer.clone())])?;
    let start = u64::try_from(day * 86_400)?;
    let window = ExportWindow::new(Region::parse("CA").context("region")?, start, start + 3600)?;

    let mut canonical = shuffled.clone();
    let parts = render_window(
        window.clone(),
        std::slice::from_ref(&signer),
        750_000,
        &mut canonical,
    )?;
    let [part] = parts.as_slice() else {
        bail!(
            "one hour of {keys} keys rendered into {} parts",
            parts.len()
        );
    };
    let canonical_zip = zip_export(&part.export_bin, &sign_export(&part.export_bin, &signing)?)?;

    let random_bin = export_bin_in_order(
        &window,
        PartNumber::FIRST,
        std::slice::from_ref(&signer),
        &shuffled,
    );
    if random_bin.len() != part.export_bin.len() {
        bail!("the two orders encode to different sizes");
    }
    let random_zip = zip_export(&random_bin, &sign_export(&random_bin, &signing)?)?;
    let per_key = |bytes: usize| bytes as f64 / keys as f64;
    Ok(json!({
        "keys": keys,
        "export_bin_bytes_per_key": per_key(part.export_bin.len()),
        "canonical_bytes_per_key": per_key(canonical_zip.len()),
        "random_bytes_per_key": per_key(random_zip.len()),
    }))
}

async fn catchup(database_url: &str, keys_per_hour: usize) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let store = Store::connect(&StoreConfig {
        database_url: database_url.to_owned(),
        pool_size: 4,
        statement_timeout: Duration::from_secs(300),
        connect_timeout: Duration::from_secs(5),
        application_name: "diagnosis-bench",
    })?;
    store.migrate().await?;
    // A fixed day, so that every run measures the same thing.
    let today = 20_400_i64;
    let mut rng = Rng::new(14);
    let client = connect(database_url).await?;
    let settings = test_export_settings();
    for hour in (today - 15) * 24..(today + 1) * 24 {
        let keys = population(&mut rng, hour.div_euclid(24), keys_per_hour);
        copy_keys(
            &client,
            settings.key_region.as_str(),
            keys.into_iter().map(|k| (hour, k)),
        )
        .await?;
    }
    let at = |hour: i64| -> anyhow::Result<DateTime<Utc>> {
        DateTime::from_timestamp(hour * 3600 + 900, 0).context("time out of range")
    };
    let clock = ManualClock::new(at(today * 24)?);
    let bucket = Bucket::in_memory();
    let exporter = Exporter::new(
        // The fixed day's clock stands in for the database's too.
        store.with_database_clock(Arc::new(clock.clone())),
        bucket.clone(),
        Arc::new(clock.clone()),
        settings.clone(),
        test_signing_keys(),
    )
    .await?;
    let mut per_hour = Vec::new();
    let mut worst = 0;
    for hour in today * 24..(today + 1) * 24 {
        clock.set(at(hour)?);
        match exporter.run_once().await? {
            RunOutcome::Completed(_) => {}
            RunOutcome::Skipped => bail!("the exporter skipped a run"),
        }
        let now = hour * 3600 + 900;
        let result = catch_up(
            &bucket,
            settings.export_region.as_str(),
            &settings.compat_region_path,
            now,
        )
        .await?;
        worst = worst.max(result.requests());
        per_hour.push(json!({
            "utc_hour": hour - today * 24,
            "keys": result.keys,
            "requests": result.requests(),
            "retrieval_requests": result.retrieval_requests,
            "index_requests": result.index_requests,
        }));
    }
    Ok(json!({
        "catchup_requests_14d": worst,
        "keys_per_hour": keys_per_hour,
        "day": today,
        "per_hour": per_hour,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// Six uploads, each on a newly claimed keypair through one pooled connection: the first
/// prepares the statements, the others show the steady state.
async fn round_trips() -> anyhow::Result<serde_json::Value> {
    let db = Arc::new(TestDatabase::new().await);
    let proxy = CountingProxy::start(upstream_of(&db.url)).await?;
    let store = Store::connect(&StoreConfig {
        database_url: proxy.url_for(&db.url),
        pool_size: 1,
        statement_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        application_name: "diagnosis-bench",
    })?;
    let app = TestApp::spawn_with_store(Arc::clone(&db), store).await;
    let mut trips = Vec::new();
    let mut statements = Vec::new();
    for _ in 0..6 {
        let phone = app.claimed_phone().await;
        let now = app.now_unix();
        let before = (proxy.round_trips(), proxy.statements());
        let reply = phone.upload(&upload_of(app_keys(now, 14), now)).await?;
        if reply.response.error() != ErrorCode::None {
            bail!("an upload was refused: {:?}", reply.response.error());
        }
        trips.push(proxy.round_trips() - before.0);
        statements.push(proxy.statements() - before.1);
    }
    Ok(json!({
        "upload_round_trips": trips.iter().skip(1).max(),
        "upload_statements": statements.iter().skip(1).max(),
        "first_upload_round_trips": trips.first(),
        "round_trips": trips,
    }))
}

/// Work shared by the phones of one phase: take the next item until none is left or
/// the phase is over.
type Queue<T> = Arc<Mutex<VecDeque<T>>>;

fn take<T>(queue: &Queue<T>) -> Option<T> {
    queue.lock().ok()?.pop_front()
}

async fn load(
    url: &str,
    token: &str,
    phones: usize,
    seconds: u64,
    codes: usize,
) -> anyhow::Result<serde_json::Value> {
    let phones = phones.max(1);
    let phase = Duration::from_secs(seconds);
    let codes = issue_codes(url, token, phones, codes).await?;
    let (mut claims, claim_failures, claim_seconds, claimed) =
        claim_phase(url, phones, phase, codes).await?;
    // Every body is sealed before the upload phase starts, so the generator does no
    // cryptography while it is timed: it only replays bytes.
    let bodies = claimed
        .iter()
        .map(|phone| Ok(phone.sealed_request(&upload_now(14))?.encode_to_vec()))
        .collect::<anyhow::Result<VecDeque<Vec<u8>>>>()?;
    let cpu_before = procfs::cpu_seconds(Pid::Own)?;
    let (mut uploads, upload_failures, upload_seconds) =
        upload_phase(url, phones, phase, bodies).await?;
    let upload_client_cpu_seconds = procfs::cpu_seconds(Pid::Own)? - cpu_before;
    if claim_failures + upload_failures > 0 {
        bail!("{claim_failures} claims and {upload_failures} uploads failed");
    }
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    Ok(json!({
        "phones": phones,
        "claims": claims.0.len(),
        "claim_seconds": claim_seconds,
        "claim_per_s": rate(claims.0.len(), claim_seconds),
        "claim_p50_ms": claims.percentile_ms(50.0),
        "claim_p99_ms": claims.percentile_ms(99.0),
        "uploads": uploads.0.len(),
        "upload_seconds": upload_seconds,
        "upload_per_s": rate(uploads.0.len(), upload_seconds),
        "upload_p50_ms": uploads.percentile_ms(50.0),
        "upload_p99_ms": uploads.percentile_ms(99.0),
        "upload_client_cpu_seconds": upload_client_cpu_seconds,
    }))
}

/// Codes issued by as many portals as there are phones; not timed.
async fn issue_codes(
    url: &str,
    token: &str,
    phones: usize,
    codes: usize,
) -> anyhow::Result<Queue<String>> {
    let mut issuers = Vec::new();
    for i in 0..phones {
        let portal = Portal::new(url, token);
        let count = codes / phones + usize::from(i < codes % phones);
        issuers.push(tokio::spawn(async move {
            let mut issued = Vec::with_capacity(count);
            for _ in 0..count {
                issued.push(issue_code(&portal).await?);
            }
            anyhow::Ok(issued)
        }));
    }
    let queue: Queue<String> = Arc::new(Mutex::new(VecDeque::new()));
    for issuer in issuers {
        let issued = issuer.await??;
        queue
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .extend(issued);
    }
    Ok(queue)
}

/// One code, asked for again up to twice if the service fails to issue it: issuing is not
/// timed, and a busy shared machine may make one portal call fail.
async fn issue_code(portal: &Portal) -> anyhow::Result<String> {
    let mut tries = 0;
    loop {
        tries += 1;
        match portal.issue_code().await {
            Ok(code) => return Ok(code),
            Err(e) if tries >= 3 => return Err(e),
            Err(e) => eprintln!("diagnosis-bench: issuing a code failed ({e:#}); asking again"),
        }
    }
}

/// `phones` phones claim codes for `phase`, each claim from a new phone (a new keypair and a
/// new connection, as a new app install); returns the claimed phones besides the figures.
async fn claim_phase(
    url: &str,
    phones: usize,
    phase: Duration,
    codes: Queue<String>,
) -> anyhow::Result<(Latencies, u64, f64, Vec<Phone>)> {
    let claimed: Queue<Phone> = Arc::new(Mutex::new(VecDeque::new()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..phones {
        let (codes, claimed, url) = (codes.clone(), claimed.clone(), url.to_owned());
        workers.push(tokio::spawn(async move {
            let mut latencies = Latencies::default();
            let mut failures = 0_u64;
            while started.elapsed() < phase {
                let Some(code) = take(&codes) else { break };
                let mut phone = Phone::new(&url);
                let t = Instant::now();
                match phone.claim(&code).await {
                    Ok(reply) if reply.status.is_success() => {
                        latencies.record(t);
                        if let Ok(mut claimed) = claimed.lock() {
                            claimed.push_back(phone);
                        }
                    }
                    _ => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let (latencies, failures, seconds) = gather(workers, started).await?;
    let claimed = std::mem::take(&mut *claimed.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok((latencies, failures, seconds, claimed.into()))
}

/// `connections` workers, each with one kept-alive connection, post the pre-sealed bodies
/// for `phase` or until none is left: the same concurrency as pgbench's clients.
async fn upload_phase(
    url: &str,
    connections: usize,
    phase: Duration,
    bodies: VecDeque<Vec<u8>>,
) -> anyhow::Result<(Latencies, u64, f64)> {
    let bodies: Queue<Vec<u8>> = Arc::new(Mutex::new(bodies));
    let upload_url = format!("{}/upload", url.trim_end_matches('/'));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (bodies, upload_url) = (bodies.clone(), upload_url.clone());
        workers.push(tokio::spawn(async move {
            let client = HttpClient::new();
            let mut latencies = Latencies::default();
            let mut failures = 0_u64;
            while started.elapsed() < phase {
                let Some(body) = take(&bodies) else { break };
                let t = Instant::now();
                let reply = client.post_protobuf(&upload_url, body).await;
                match reply.and_then(|reply| UploadReply::read(&reply)) {
                    Ok(reply) if reply.response.error() == ErrorCode::None => latencies.record(t),
                    _ => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    gather(workers, started).await
}

/// Joins a phase's workers: their latencies, failures, and the phase's wall time.
async fn gather(
    workers: Vec<tokio::task::JoinHandle<(Latencies, u64)>>,
    started: Instant,
) -> anyhow::Result<(Latencies, u64, f64)> {
    let mut all = Latencies::default();
    let mut failures = 0;
    for worker in workers {
        let (latencies, f) = worker.await?;
        all.0.extend(latencies.0);
        failures += f;
    }
    Ok((all, failures, started.elapsed().as_secs_f64()))
}
