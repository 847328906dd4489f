//! The soak's figures and its goal (DESIGN §3.4): per window the requests, errors, latency
//! percentiles and the service's resources; the least-squares slope of each series; the
//! checks the goal is made of; the table and the JSON object. Pure: no I/O, no clock.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::load::SecondTally;

/// RSS and open files may grow by less than this, in %, from the second window to the last.
pub const MAX_GROWTH_PCT: f64 = 2.0;
/// The p99 latency of every later window stays within this multiple of the first window's.
pub const MAX_P99_RATIO: f64 = 1.5;

/// One window of the paced run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowFigures {
    pub requests: u64,
    /// Issues, claims, uploads.
    pub by_kind: [u64; 3],
    pub unexpected: u64,
    pub unanswered: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The p99 of issues, claims and uploads.
    pub p99_ms_by_kind: [f64; 3],
    /// The service's resident memory and open files: the medians of the window's samples.
    pub rss_kib: u64,
    pub open_files: u64,
    pub cpu: CpuShares,
}

/// CPU time over a stretch as a share of one core: the service, PostgreSQL (when its
/// postmaster is known), the load generator, and the whole machine (every process and the
/// kernel, up to the number of cores). They share the machine's cores, so what the machine
/// spent beyond the three was taken by other work.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuShares {
    pub service: f64,
    pub database: Option<f64>,
    pub generator: f64,
    pub machine: f64,
}

impl CpuShares {
    /// What the rest of the machine spent: every process but the three, and the kernel.
    pub fn others(&self) -> f64 {
        (self.machine - self.service - self.database.unwrap_or(0.0) - self.generator).max(0.0)
    }
}

/// Everything a soak measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub window: Duration,
    pub capacity_connections: usize,
    pub capacity_rps: f64,
    pub capacity_p99_ms: f64,
    /// Unexpected answers and unanswered requests of the capacity run.
    pub capacity_errors: u64,
    pub capacity_cpu: CpuShares,
    pub connections: usize,
    pub target_rps: f64,
    pub windows: Vec<WindowFigures>,
    /// From the paced run's start until its last request was answered.
    pub run_seconds: f64,
    pub metrics_scrapes: u64,
    pub metrics_scrape_errors: u64,
    /// The generator's CPU over the whole paced run, as a share of one core.
    pub generator_cpu: f64,
    /// The paced run second by second, and the wall-clock time of its start (seconds since
    /// the Unix epoch), to set beside the database's log and the machine's counters.
    pub seconds: Vec<SecondTally>,
    pub started_unix: f64,
}

/// One condition of the goal.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub value: f64,
    pub limit: &'static str,
    pub met: bool,
    /// Whether a failure makes the soak fail (the short run only reports the flatness).
    pub enforced: bool,
}

/// The least-squares slope of `ys` per step of the index; 0 with fewer than two values.
pub fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    if ys.len() < 2 {
        return 0.0;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = ys.iter().sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 - mean_x;
        covariance += dx * (y - mean_y);
        variance += dx * dx;
    }
    covariance / variance
}

/// How much the series grew from its second value (the first window holds the service's
/// warm-up) to its last, in % of the second: the rise of the least-squares line through them,
/// so that a trend counts and one noisy value at either end does not; 0 with fewer than three
/// values.
pub fn growth_pct(ys: &[f64]) -> f64 {
    let Some(after_warm_up) = ys.get(1..).filter(|rest| rest.len() >= 2) else {
        return 0.0;
    };
    let n = after_warm_up.len() as f64;
    let slope = slope(after_warm_up);
    let mean = after_warm_up.iter().sum::<f64>() / n;
    let from = mean - slope * (n - 1.0) / 2.0;
    if from > 0.0 {
        slope * (n - 1.0) / from * 100.0
    } else {
        0.0
    }
}

/// The worst p99 of a later window against the first window's.
pub fn p99_ratio(p99: &[f64]) -> f64 {
    let Some((&first, later)) = p99.split_first() else {
        return 1.0;
    };
    if later.is_empty() {
        return 1.0;
    }
    let worst = later.iter().copied().fold(0.0, f64::max);
    if first > 0.0 {
        worst / first
    } else if worst > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

impl Figures {
    pub fn requests(&self) -> u64 {
        self.windows.iter().map(|w| w.requests).sum()
    }

    pub fn unanswered(&self) -> u64 {
        self.windows.iter().map(|w| w.unanswered).sum()
    }

    /// Unexpected answers and unanswered requests of both runs, and failed metrics scrapes.
    pub fn errors(&self) -> u64 {
        let requests: u64 = self
            .windows
            .iter()
            .map(|w| w.unexpected + w.unanswered)
            .sum();
        requests + self.capacity_errors + self.metrics_scrape_errors
    }

    fn series(&self, f: impl Fn(&WindowFigures) -> f64) -> Vec<f64> {
        self.windows.iter().map(f).collect()
    }

    pub fn rss_growth_pct(&self) -> f64 {
        growth_pct(&self.series(|w| w.rss_kib as f64))
    }

    pub fn open_files_growth_pct(&self) -> f64 {
        growth_pct(&self.series(|w| w.open_files as f64))
    }

    pub fn p99_ratio(&self) -> f64 {
        p99_ratio(&self.series(|w| w.p99_ms))
    }

    /// The goal's checks; the flatness ones fail the soak only when `enforce_flatness`.
    pub fn checks(&self, enforce_flatness: bool) -> Vec<Check> {
        let check = |name, value: f64, limit, met, enforced| Check {
            name,
            value,
            limit,
            met,
            enforced,
        };
        let (rss, files, ratio) = (
            self.rss_growth_pct(),
            self.open_files_growth_pct(),
            self.p99_ratio(),
        );
        vec![
            check(
                "errors",
                self.errors() as f64,
                "= 0",
                self.errors() == 0,
                true,
            ),
            check(
                "unanswered",
                self.unanswered() as f64,
                "= 0",
                self.unanswered() == 0,
                true,
            ),
            check(
                "rss_growth_pct",
                rss,
                "< 2",
                rss < MAX_GROWTH_PCT,
                enforce_flatness,
            ),
            check(
                "open_files_growth_pct",
                files,
                "< 2",
                files < MAX_GROWTH_PCT,
                enforce_flatness,
            ),
            check(
                "p99_ratio",
                ratio,
                "<= 1.5",
                ratio <= MAX_P99_RATIO,
                enforce_flatness,
            ),
        ]
    }

    /// The least-squares slope of a series per minute, and as % of its first value.
    fn slope_json(&self, f: impl Fn(&WindowFigures) -> f64) -> Value {
        let ys = self.series(f);
        let per_minute = slope(&ys) * 60.0 / self.window.as_secs_f64().max(f64::MIN_POSITIVE);
        let first = ys.first().copied().unwrap_or(0.0);
        let pct = (first != 0.0).then(|| per_minute / first * 100.0);
        json!({ "per_minute": per_minute, "pct_of_first_per_minute": pct })
    }

    /// The result as one JSON object (README, "Soak").
    pub fn to_json(&self, checks: &[Check]) -> Value {
        let seconds = self.window.as_secs_f64() * self.windows.len() as f64;
        let kind = |i: usize| self.windows.iter().map(|w| w.by_kind[i]).sum::<u64>();
        json!({
            "soak_minutes": seconds / 60.0,
            "window_seconds": self.window.as_secs_f64(),
            "capacity_connections": self.capacity_connections,
            "capacity_rps": self.capacity_rps,
            "capacity_p99_ms": self.capacity_p99_ms,
            "capacity_errors": self.capacity_errors,
            "capacity_cpu_share": cpu_json(&self.capacity_cpu),
            "connections": self.connections,
            "target_rps": self.target_rps,
            "run_seconds": self.run_seconds,
            "achieved_rps": self.requests() as f64 / self.run_seconds.max(f64::MIN_POSITIVE),
            "requests": self.requests(),
            "mix": { "issue": kind(0), "claim": kind(1), "upload": kind(2) },
            "errors": self.errors(),
            "unexpected_answers": self.windows.iter().map(|w| w.unexpected).sum::<u64>(),
            "unanswered": self.unanswered(),
            "metrics_scrapes": self.metrics_scrapes,
            "metrics_scrape_errors": self.metrics_scrape_errors,
            "p50_ms": self.series(|w| w.p50_ms),
            "p99_ms": self.series(|w| w.p99_ms),
            "per_window": self.per_window_json(),
            "slopes": {
                "requests": self.slope_json(|w| w.requests as f64),
                "errors": self.slope_json(|w| (w.unexpected + w.unanswered) as f64),
                "p50_ms": self.slope_json(|w| w.p50_ms),
                "p99_ms": self.slope_json(|w| w.p99_ms),
                "rss_kib": self.slope_json(|w| w.rss_kib as f64),
                "open_files": self.slope_json(|w| w.open_files as f64),
            },
            "rss_growth_pct": self.rss_growth_pct(),
            "open_files_growth_pct": self.open_files_growth_pct(),
            "p99_ratio": self.p99_ratio(),
            "generator_cpu_share": self.generator_cpu,
            "checks": checks.iter().map(|c| json!({
                "name": c.name, "value": c.value, "limit": c.limit,
                "met": c.met, "enforced": c.enforced,
            })).collect::<Vec<_>>(),
            "goal_met": checks.iter().all(|c| c.met),
            "enforced_met": checks.iter().all(|c| c.met || !c.enforced),
        })
    }

    fn per_window_json(&self) -> Value {
        json!({
            "requests": self.series(|w| w.requests as f64),
            "errors": self.series(|w| (w.unexpected + w.unanswered) as f64),
            "unanswered": self.series(|w| w.unanswered as f64),
            "issue_p99_ms": self.series(|w| w.p99_ms_by_kind[0]),
            "claim_p99_ms": self.series(|w| w.p99_ms_by_kind[1]),
            "upload_p99_ms": self.series(|w| w.p99_ms_by_kind[2]),
            "rss_kib": self.series(|w| w.rss_kib as f64),
            "open_files": self.series(|w| w.open_files as f64),
            "service_cpu_share": self.series(|w| w.cpu.service),
            "database_cpu_share": self.windows.iter().map(|w| w.cpu.database).collect::<Vec<_>>(),
            "generator_cpu_share": self.series(|w| w.cpu.generator),
            "other_cpu_share": self.series(|w| w.cpu.others()),
        })
    }

    /// The paced run second by second, tab-separated with a header: the second's wall-clock
    /// start, its requests, the slowest issue, claim and upload (from the due moment), the
    /// slowest service time of each kind (from sending) and the longest send delay (ms).
    pub fn per_second_tsv(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let mut out = String::from(
            "unix_time\trequests\tissue_max_ms\tclaim_max_ms\tupload_max_ms\t\
             issue_service_max_ms\tclaim_service_max_ms\tupload_service_max_ms\t\
             send_delay_max_ms\n",
        );
        for (i, s) in self.seconds.iter().enumerate() {
            let [issue, claim, upload] = s.max_latency_us.map(ms);
            let [issue_service, claim_service, upload_service] = s.max_service_us.map(ms);
            let _ = writeln!(
                out,
                "{:.0}\t{}\t{issue:.1}\t{claim:.1}\t{upload:.1}\t{issue_service:.1}\t\
                 {claim_service:.1}\t{upload_service:.1}\t{:.1}",
                self.started_unix + i as f64,
                s.requests,
                ms(s.max_send_delay_us)
            );
        }
        out
    }

    /// One line per window, then the checks.
    pub fn table(&self, checks: &[Check]) -> String {
        let mut out = String::from(
            "window  requests  issue/claim/upload  errors  p50 ms  p99 ms  p99 issue/claim/upload  \
             RSS MiB  files  CPU submit/postgres/generator/others\n",
        );
        for (i, w) in self.windows.iter().enumerate() {
            let database = w
                .cpu
                .database
                .map_or_else(|| "-".to_owned(), |c| format!("{:.0}%", c * 100.0));
            let _ = writeln!(
                out,
                "{:>6}  {:>8}  {:>18}  {:>6}  {:>6.2}  {:>6.2}  {:>22}  {:>7.1}  {:>5}  {:.0}%/{}/{:.0}%/{:.0}%",
                i + 1,
                w.requests,
                format!("{}/{}/{}", w.by_kind[0], w.by_kind[1], w.by_kind[2]),
                w.unexpected + w.unanswered,
                w.p50_ms,
                w.p99_ms,
                format!(
                    "{:.1}/{:.1}/{:.1}",
                    w.p99_ms_by_kind[0], w.p99_ms_by_kind[1], w.p99_ms_by_kind[2]
                ),
                w.rss_kib as f64 / 1024.0,
                w.open_files,
                w.cpu.service * 100.0,
                database,
                w.cpu.generator * 100.0,
                w.cpu.others() * 100.0,
            );
        }
        for c in checks {
            let verdict = match (c.met, c.enforced) {
                (true, _) => "met",
                (false, true) => "NOT met",
                (false, false) => "not met (reported, not enforced)",
            };
            let _ = writeln!(
                out,
                "{:<22} {:>10.3}  {:<5} {verdict}",
                c.name, c.value, c.limit
            );
        }
        out
    }
}

fn cpu_json(cpu: &CpuShares) -> Value {
    json!({
        "service": cpu.service, "database": cpu.database, "generator": cpu.generator,
        "others": cpu.others(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(requests: u64, p99_ms: f64, rss_kib: u64, open_files: u64) -> WindowFigures {
        WindowFigures {
            requests,
            by_kind: [0, 0, requests],
            p50_ms: p99_ms / 2.0,
            p99_ms,
            rss_kib,
            open_files,
            ..WindowFigures::default()
        }
    }

    fn flat() -> Figures {
        Figures {
            window: Duration::from_secs(60),
            windows: (0..10).map(|_| window(1000, 10.0, 40_000, 50)).collect(),
            run_seconds: 600.0,
            ..Figures::default()
        }
    }

    fn failed(figures: &Figures, enforce_flatness: bool) -> Vec<&'static str> {
        figures
            .checks(enforce_flatness)
            .into_iter()
            .filter(|c| !c.met)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn the_slope_is_the_least_squares_fit() {
        assert_eq!(slope(&[]), 0.0);
        assert_eq!(slope(&[5.0]), 0.0);
        assert!((slope(&[1.0, 3.0, 5.0, 7.0]) - 2.0).abs() < 1e-12);
        assert!((slope(&[2.0, 1.0, 2.0, 1.0]) - -0.2).abs() < 1e-12);
    }

    #[test]
    fn growth_counts_from_the_second_window_and_p99_against_the_first() {
        assert_eq!(growth_pct(&[10.0, 100.0, 101.0, 102.0]), 2.0);
        assert_eq!(growth_pct(&[10.0]), 0.0);
        assert_eq!(growth_pct(&[10.0, 100.0]), 0.0);
        // A steady series whose last value is a high outlier has not grown by that outlier.
        let noisy = [
            50.0, 100.0, 101.0, 99.0, 101.0, 100.0, 99.0, 100.0, 100.0, 102.5,
        ];
        let growth = growth_pct(&noisy);
        assert!(growth < 2.0 && growth > 0.0, "{growth}");
        // A leak of 0.5 % a window grows 4 % over nine windows, whatever the noise.
        let leak: Vec<f64> = (0..10)
            .map(|i| 100.0 * (1.0 + 0.005 * f64::from(i)) + if i % 2 == 0 { 0.4 } else { -0.4 })
            .collect();
        let growth = growth_pct(&leak);
        assert!((3.5..4.5).contains(&growth), "{growth}");
        assert_eq!(p99_ratio(&[10.0, 12.0, 15.0, 11.0]), 1.5);
        assert_eq!(p99_ratio(&[10.0, 5.0]), 0.5);
        assert_eq!(p99_ratio(&[10.0]), 1.0);
        assert_eq!(p99_ratio(&[0.0, 1.0]), f64::INFINITY);
    }

    #[test]
    fn a_flat_run_without_errors_meets_the_goal() {
        let figures = flat();
        assert!(failed(&figures, true).is_empty());
        let json = figures.to_json(&figures.checks(true));
        assert_eq!(json["goal_met"], true);
        assert_eq!(json["requests"], 10_000);
        assert_eq!(json["p99_ms"].as_array().map(Vec::len), Some(10));
        assert_eq!(json["slopes"]["rss_kib"]["per_minute"], 0.0);
    }

    #[test]
    fn each_broken_condition_fails_its_own_check() {
        let mut figures = flat();
        figures.windows[3].unanswered = 1;
        for (i, window) in figures.windows.iter_mut().enumerate() {
            window.rss_kib += 120 * i as u64;
            window.open_files += i as u64 / 2;
        }
        figures.windows[5].p99_ms = 15.1;
        assert_eq!(
            failed(&figures, true),
            [
                "errors",
                "unanswered",
                "rss_growth_pct",
                "open_files_growth_pct",
                "p99_ratio"
            ]
        );
        figures.windows[3].unanswered = 0;
        figures.metrics_scrape_errors = 1;
        assert_eq!(failed(&figures, true)[0], "errors");
        figures.metrics_scrape_errors = 0;
        figures.capacity_errors = 1;
        assert_eq!(failed(&figures, true)[0], "errors");
        let json = figures.to_json(&figures.checks(true));
        assert_eq!(json["goal_met"], false);
        assert_eq!(json["enforced_met"], false);
    }

    #[test]
    fn without_enforced_flatness_only_errors_fail_the_run() {
        let mut figures = flat();
        figures.windows[9].rss_kib = 80_000;
        figures.windows[5].p99_ms = 100.0;
        let checks = figures.checks(false);
        let json = figures.to_json(&checks);
        assert_eq!(json["goal_met"], false);
        assert_eq!(json["enforced_met"], true);
        figures.windows[0].unexpected = 1;
        let json = figures.to_json(&figures.checks(false));
        assert_eq!(json["enforced_met"], false);
    }
}
