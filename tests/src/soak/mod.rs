//! The soak (DESIGN §3.4, README "Soak"): the real submit service measured for its capacity,
//! then held at 80 % of it for a long run while its memory, open files and latency are watched
//! for growth. Driven by `diagnosis-soak`, which `infra/dev/soak` runs.
//!
//! 1. **Capacity.** `capacity_connections` connections send the day's mix ([`load`]) as fast
//!    as the service answers: a warm-up, then a measured stretch whose rate of expected answers
//!    is the capacity.
//! 2. **The paced run.** `connections` connections send `LOAD_SHARE × capacity` requests a
//!    second, evenly spaced, whatever the answers do (open loop), for `windows` windows.
//!    Latency counts from the moment each request was due, so a service that falls behind
//!    shows in its latency instead of slowing the load down.
//!
//! Meanwhile the service's resident memory (`/proc/PID/status` VmRSS) and open files
//! (`/proc/PID/fd`) are read every second, and the CPU of the service, PostgreSQL, the
//! generator and the whole machine at the end of every window; the metrics endpoint is scraped
//! as Prometheus would. What the service
//! does is data, judged by [`report`]; only a run that cannot take place (the service's
//! process is gone, a task failed) is an error. Nothing here prints a code, key or token.

pub mod load;
pub mod report;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

use crate::http_client::HttpClient;
use crate::procfs::{self, Pid};
use load::{Pace, Progress, Schedule, Target, WindowTally};
use report::{CpuShares, Figures, WindowFigures};

/// The paced run's rate as a share of the measured capacity (DESIGN §3.4).
pub const LOAD_SHARE: f64 = 0.8;

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    pub target: Target,
    /// Connections of the capacity run (the benchmark's knee).
    pub capacity_connections: usize,
    /// The capacity run's warm-up, not counted, and its measured stretch.
    pub warm_up: Duration,
    pub capacity_run: Duration,
    /// Connections of the paced run (by default the capacity run's: past the benchmark's knee
    /// the service carries less, so more connections would pace it beyond 80 % of what it
    /// holds once it runs late), and its rate as a share of the capacity.
    pub connections: usize,
    pub load_share: f64,
    pub windows: usize,
    pub window: Duration,
    /// Whether RSS, open files and p99 flatness fail the soak, or are only reported.
    pub enforce_flatness: bool,
    /// The service's process, and PostgreSQL's postmaster when known.
    pub service_pid: u32,
    pub database_pid: Option<u32>,
    /// The service's `/metrics`, scraped every `scrape_every` during the paced run.
    pub metrics_url: Option<String>,
    pub scrape_every: Duration,
}

impl SoakSettings {
    /// `infra/dev/soak MINUTES`: one-minute windows, every check enforced; a one-minute soak
    /// (the test command's) has six 10-second windows and a shorter capacity run, and only
    /// reports its flatness, which a shared machine cannot hold steady over seconds.
    pub fn for_minutes(minutes: usize, target: Target, service_pid: u32) -> SoakSettings {
        let short = minutes <= 1;
        SoakSettings {
            target,
            capacity_connections: 8,
            warm_up: Duration::from_secs(if short { 3 } else { 10 }),
            capacity_run: Duration::from_secs(if short { 10 } else { 30 }),
            connections: 8,
            load_share: LOAD_SHARE,
            windows: if short { 6 } else { minutes },
            window: Duration::from_secs(if short { 10 } else { 60 }),
            enforce_flatness: !short,
            service_pid,
            database_pid: None,
            metrics_url: None,
            scrape_every: Duration::from_secs(15),
        }
    }
}

/// The capacity run's result.
#[derive(Debug, Clone, Copy)]
struct Capacity {
    rps: f64,
    p99_ms: f64,
    errors: u64,
    cpu: CpuShares,
}

/// Runs the soak and returns its figures.
pub async fn run(settings: &SoakSettings) -> anyhow::Result<Figures> {
    let capacity = measure_capacity(settings).await?;
    let target_rps = settings.load_share * capacity.rps;
    if target_rps <= 0.0 {
        bail!("the capacity run had no answered request");
    }
    announce(settings, &capacity, target_rps);
    let schedule = Schedule::even(settings.windows, settings.window);
    let progress = Arc::new(Progress::default());
    let watcher = tokio::spawn(watch(settings.clone(), schedule.clone(), progress.clone()));
    let scraper = settings.metrics_url.clone().map(|url| {
        let (every, bound) = (settings.scrape_every, settings.target.request_bound);
        tokio::spawn(scrape(url, every, bound, schedule.end()))
    });
    let cpu_before = procfs::cpu_seconds(Pid::Own)?;
    let started_unix = unix_now() - schedule.start.elapsed().as_secs_f64();
    let pace = Pace::Fixed { rate: target_rps };
    let finished = load::run(
        &settings.target,
        settings.connections,
        pace,
        &schedule,
        &progress,
    )
    .await?;
    let run_seconds = schedule.start.elapsed().as_secs_f64();
    let generator_cpu =
        (procfs::cpu_seconds(Pid::Own)? - cpu_before) / run_seconds.max(f64::MIN_POSITIVE);
    let resources = watcher.await??;
    let tallies = finished.tallies;
    let (metrics_scrapes, metrics_scrape_errors) = match scraper {
        Some(scraper) => scraper.await?,
        None => (0, 0),
    };
    Ok(Figures {
        window: settings.window,
        capacity_connections: settings.capacity_connections,
        capacity_rps: capacity.rps,
        capacity_p99_ms: capacity.p99_ms,
        capacity_errors: capacity.errors,
        capacity_cpu: capacity.cpu,
        connections: settings.connections,
        target_rps,
        windows: window_figures(tallies, &resources),
        run_seconds,
        metrics_scrapes,
        metrics_scrape_errors,
        generator_cpu,
        seconds: finished.seconds,
        started_unix,
    })
}

/// The wall-clock time, in seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn announce(settings: &SoakSettings, capacity: &Capacity, target_rps: f64) {
    let database = capacity
        .cpu
        .database
        .map_or_else(|| "-".to_owned(), |c| format!("{:.0}%", c * 100.0));
    eprintln!(
        "capacity: {:.0} requests/s on {} connections (p99 {:.2} ms; CPU of a core: submit \
         {:.0}%, postgres {database}, generator {:.0}%, others {:.0}%)\npaced run: \
         {target_rps:.0} requests/s on {} connections, {} windows of {} s",
        capacity.rps,
        settings.capacity_connections,
        capacity.p99_ms,
        capacity.cpu.service * 100.0,
        capacity.cpu.generator * 100.0,
        capacity.cpu.others() * 100.0,
        settings.connections,
        settings.windows,
        settings.window.as_secs()
    );
}

/// The closed-loop run: a warm-up, then the measured stretch.
async fn measure_capacity(settings: &SoakSettings) -> anyhow::Result<Capacity> {
    let schedule = Schedule {
        start: Instant::now(),
        boundaries: vec![settings.warm_up, settings.warm_up + settings.capacity_run],
    };
    let (service, database) = (settings.service_pid, settings.database_pid);
    let (measured_from, measured_to) = (schedule.start + settings.warm_up, schedule.end());
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measured_from).await;
        let before = sample(service, database)?;
        tokio::time::sleep_until(measured_to).await;
        anyhow::Ok(sample(service, database)?.cpu_since(&before))
    });
    let tallies = load::run(
        &settings.target,
        settings.capacity_connections,
        Pace::AsAnswered,
        &schedule,
        &Arc::new(Progress::default()),
    )
    .await?
    .tallies;
    let errors = tallies.iter().map(WindowTally::errors).sum();
    let Some(measured) = tallies.into_iter().nth(1) else {
        bail!("the capacity run has no measured stretch");
    };
    Ok(Capacity {
        rps: (measured.requests - measured.errors()) as f64 / settings.capacity_run.as_secs_f64(),
        p99_ms: measured.all_latencies().percentile_ms(99.0),
        errors,
        cpu: cpu.await??,
    })
}

/// What `/proc` says at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    rss_kib: u64,
    open_files: u64,
    service_cpu: f64,
    database_cpu: Option<f64>,
    generator_cpu: f64,
    machine_busy: f64,
}

impl Sample {
    /// The CPU used since `before`, as shares of one core.
    fn cpu_since(&self, before: &Sample) -> CpuShares {
        let seconds = (self.at - before.at).as_secs_f64().max(f64::MIN_POSITIVE);
        CpuShares {
            service: (self.service_cpu - before.service_cpu) / seconds,
            database: self
                .database_cpu
                .zip(before.database_cpu)
                .map(|(after, before)| (after - before) / seconds),
            generator: (self.generator_cpu - before.generator_cpu) / seconds,
            machine: (self.machine_busy - before.machine_busy) / seconds,
        }
    }
}

/// The service's resident memory (KiB) and open files.
fn memory(service_pid: u32) -> anyhow::Result<(u64, u64)> {
    let service = Pid::Of(service_pid);
    let gone = || format!("reading the service's process {service_pid} (has it ended?)");
    Ok((
        procfs::rss_kib(service).with_context(gone)?,
        procfs::open_files(service).with_context(gone)?,
    ))
}

fn sample(service_pid: u32, database_pid: Option<u32>) -> anyhow::Result<Sample> {
    let (rss_kib, open_files) = memory(service_pid)?;
    let service = Pid::Of(service_pid);
    let gone = || format!("reading the service's process {service_pid} (has it ended?)");
    Ok(Sample {
        at: Instant::now(),
        rss_kib,
        open_files,
        service_cpu: procfs::cpu_seconds(service).with_context(gone)?,
        database_cpu: database_pid
            .map(procfs::tree_cpu_seconds)
            .transpose()
            .context("reading PostgreSQL's processes")?,
        generator_cpu: procfs::cpu_seconds(Pid::Own)?,
        machine_busy: procfs::machine_busy_seconds()?,
    })
}

/// The service's memory and open files: the median of a window's samples, so that one
/// sample caught while the allocator holds a freed block or a connection is being replaced
/// does not stand for the window; and the CPU used over the window.
#[derive(Debug, Clone, Copy)]
struct Resources {
    rss_kib: u64,
    open_files: u64,
    cpu: CpuShares,
}

/// How often the service's memory and open files are read within a window.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The middle value (the upper one of an even count); 0 when empty.
fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Reads the service every second and, at the end of each window, what the window used, with
/// a progress line.
async fn watch(
    settings: SoakSettings,
    schedule: Schedule,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<Resources>> {
    let (service, database) = (settings.service_pid, settings.database_pid);
    let mut before = sample(service, database)?;
    let mut windows = Vec::with_capacity(schedule.boundaries.len());
    for (w, end) in schedule.boundaries.iter().enumerate() {
        let end = schedule.start + *end;
        let (mut rss, mut files) = (Vec::new(), Vec::new());
        let now = loop {
            let next = (Instant::now() + MEMORY_SAMPLE_EVERY).min(end);
            tokio::time::sleep_until(next).await;
            if next >= end {
                let now = sample(service, database)?;
                rss.push(now.rss_kib);
                files.push(now.open_files);
                break now;
            }
            let (kib, open) = memory(service)?;
            rss.push(kib);
            files.push(open);
        };
        let resources = Resources {
            rss_kib: median(rss),
            open_files: median(files),
            cpu: now.cpu_since(&before),
        };
        before = now;
        eprintln!(
            "  window {}/{}: {} requests so far, {} errors, RSS {:.1} MiB, {} open files",
            w + 1,
            schedule.boundaries.len(),
            progress.requests.load(Ordering::Relaxed),
            progress.errors.load(Ordering::Relaxed),
            resources.rss_kib as f64 / 1024.0,
            resources.open_files
        );
        windows.push(resources);
    }
    Ok(windows)
}

/// GETs `url` every `every` until `end`: the scrapes and the failed ones.
async fn scrape(url: String, every: Duration, bound: Duration, end: Instant) -> (u64, u64) {
    let client = HttpClient::new();
    let (mut scrapes, mut failures) = (0, 0);
    let mut next = Instant::now();
    while next < end {
        tokio::time::sleep_until(next).await;
        scrapes += 1;
        match tokio::time::timeout(bound, client.get(&url)).await {
            Ok(Ok(reply)) if reply.status == hyper::StatusCode::OK => {}
            _ => failures += 1,
        }
        next += every;
    }
    (scrapes, failures)
}

/// Each window's requests with the resources it used.
fn window_figures(tallies: Vec<WindowTally>, resources: &[Resources]) -> Vec<WindowFigures> {
    tallies
        .into_iter()
        .zip(resources)
        .map(|(mut tally, resources)| WindowFigures {
            requests: tally.requests,
            by_kind: tally.by_kind,
            unexpected: tally.unexpected,
            unanswered: tally.unanswered,
            p50_ms: tally.all_latencies().percentile_ms(50.0),
            p99_ms: tally.all_latencies().percentile_ms(99.0),
            p99_ms_by_kind: tally.latencies.each_mut().map(|l| l.percentile_ms(99.0)),
            rss_kib: resources.rss_kib,
            open_files: resources.open_files,
            cpu: resources.cpu,
        })
        .collect()
}
