//! Logs, span traces and metrics for both binaries (DESIGN §6: `LOG_FORMAT`, `RUST_LOG`,
//! `TRACER_PROVIDER`, `METRIC_PROVIDER`).
//!
//! [`init`] installs, once per process:
//! * **logs** — `tracing` events filtered by `RUST_LOG` (default `info`), as JSON lines or
//!   pretty-printed, on **stderr**;
//! * **span traces** — with `TRACER_PROVIDER=stdout`, one JSON line per closed span with its busy
//!   and idle time on **stdout**; `pretty` prints the same readably; unset prints none;
//! * **metrics** — the `metrics` facade backed by a Prometheus recorder. With
//!   `METRIC_PROVIDER=prometheus` the caller serves [`Telemetry::render_prometheus`] on its internal
//!   `/metrics` route (this module opens no listener); with `stdout` / `pretty` a snapshot is
//!   written to stdout every [`METRICS_SNAPSHOT_INTERVAL`] (60 s) — one JSON object per sample
//!   per line, or a table; unset installs no recorder and every metrics call is a no-op.
//!
//! DESIGN §7 applies to everything recorded through here: no IP addresses, codes, tokens, keys
//! or payloads in log fields, span fields or metric labels. This module must never add such
//! data itself, and it must never open a network socket.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter, fmt};

use crate::config::{CommonConfig, LogFormat, MetricProvider, TracerProvider};

/// How often `METRIC_PROVIDER=stdout|pretty` writes a metrics snapshot to stdout.
pub const METRICS_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

/// How often the recorder drains recorded histogram samples into its buckets, which bounds the
/// memory that unscraped samples can take.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Histogram buckets (seconds) for every metric named `*_duration_seconds`: 1 ms to 10 s.
/// Other histograms are rendered as summaries.
pub const DURATION_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Set by the first [`init`]; a second call fails instead of replacing the global subscriber.
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// What [`init`] installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `RUST_LOG`, in `EnvFilter` syntax.
    pub log_filter: String,
    /// `TRACER_PROVIDER`.
    pub tracer_provider: Option<TracerProvider>,
    /// `METRIC_PROVIDER`.
    pub metric_provider: MetricProvider,
    /// The binary's name (`diagnosis-submit`, `diagnosis-exporter`), written into metrics
    /// snapshots and the start-up log line.
    pub service_name: &'static str,
}

impl TelemetryConfig {
    /// The telemetry part of the common configuration.
    pub fn from_common(common: &CommonConfig, service_name: &'static str) -> Self {
        Self {
            log_format: common.log_format,
            log_filter: common.log_filter.clone(),
            tracer_provider: common.tracer_provider,
            metric_provider: common.metric_provider,
            service_name,
        }
    }
}

/// Why [`init`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// [`init`] already ran in this process.
    #[error("telemetry is already initialised in this process")]
    AlreadyInitialised,
    /// The log filter does not parse.
    #[error("RUST_LOG: {0}")]
    InvalidLogFilter(String),
    /// Another global `tracing` subscriber or `log` logger was installed first.
    #[error("could not install the log subscriber: {0}")]
    Logs(String),
    /// Metrics need a Tokio runtime for their upkeep and snapshot tasks.
    #[error("METRIC_PROVIDER: metrics need a Tokio runtime; start telemetry from inside one")]
    NoRuntime,
    /// The metrics recorder could not be built or installed.
    #[error("could not install the metrics recorder: {0}")]
    Metrics(#[from] BuildError),
}

/// What [`init`] installed; keep it for the life of the process.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// The installed recorder, whatever the provider.
    recorder: Option<PrometheusHandle>,
    provider: MetricProvider,
    service_name: &'static str,
}

impl Telemetry {
    /// Starts the recorder's upkeep and, for `stdout` and `pretty`, the periodic snapshot.
    fn spawn_metrics_tasks(&self, runtime: &tokio::runtime::Handle) {
        let Some(upkeep) = self.recorder.clone() else {
            return;
        };
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                ticks.tick().await;
                upkeep.run_upkeep();
            }
        });
        if matches!(
            self.provider,
            MetricProvider::Stdout | MetricProvider::Pretty
        ) {
            let snapshots = self.clone();
            runtime.spawn(async move {
                let start = tokio::time::Instant::now() + METRICS_SNAPSHOT_INTERVAL;
                let mut ticks = tokio::time::interval_at(start, METRICS_SNAPSHOT_INTERVAL);
                loop {
                    ticks.tick().await;
                    if let Err(err) = snapshots.write_metrics_snapshot() {
                        tracing::warn!(error = %err, "could not write the metrics snapshot to stdout");
                    }
                }
            });
        }
    }

    /// Telemetry that serves the given recorder's metrics on `/metrics`, for tests that build a
    /// local recorder with [`prometheus_builder`] instead of installing a global one.
    ///
    /// Only with the `test-support` feature: the binaries install their recorder with [`init`].
    #[cfg(any(test, feature = "test-support"))]
    pub fn from_prometheus_handle(handle: PrometheusHandle) -> Self {
        Self {
            recorder: Some(handle),
            provider: MetricProvider::Prometheus,
            service_name: "",
        }
    }

    /// The Prometheus text exposition for `/metrics`, when `METRIC_PROVIDER=prometheus`.
    pub fn render_prometheus(&self) -> Option<String> {
        self.prometheus_handle().map(PrometheusHandle::render)
    }

    /// The recorder's handle, when `METRIC_PROVIDER=prometheus`.
    pub fn prometheus_handle(&self) -> Option<&PrometheusHandle> {
        match self.provider {
            MetricProvider::Prometheus => self.recorder.as_ref(),
            MetricProvider::Stdout | MetricProvider::Pretty | MetricProvider::None => None,
        }
    }

    /// With `METRIC_PROVIDER=stdout|pretty`, writes a snapshot to stdout now; otherwise does
    /// nothing. A job that exits before the first periodic snapshot (`diagnosis-exporter
    /// run-once`) calls this before it exits so its metrics are not lost.
    pub fn write_metrics_snapshot(&self) -> io::Result<()> {
        let format = match self.provider {
            MetricProvider::Stdout => SnapshotFormat::Json,
            MetricProvider::Pretty => SnapshotFormat::Table,
            MetricProvider::Prometheus | MetricProvider::None => return Ok(()),
        };
        match &self.recorder {
            Some(recorder) => write_snapshot(recorder, format, self.service_name),
            None => Ok(()),
        }
    }
}

/// The Prometheus recorder settings used by [`init`]: `*_duration_seconds` histograms get
/// [`DURATION_BUCKETS_SECONDS`]. Tests use it to build a local recorder that renders exactly
/// like production.
pub fn prometheus_builder() -> PrometheusBuilder {
    // Cannot fail: the bucket list is a non-empty constant. Fall back to the defaults anyway
    // rather than panic.
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".to_owned()),
            DURATION_BUCKETS_SECONDS,
        )
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

/// Libraries whose verbose levels print query parameters or peer addresses
/// (tokio-postgres logs every statement's parameters at `debug`, which would
/// be codes and keys). They are capped at `info` whatever `RUST_LOG` asks for
/// (DESIGN §7), and never raised above the most verbose level it asks for.
const PRIVACY_CAPS: &[&str] = &["tokio_postgres", "postgres", "hyper_util", "hyper"];

/// The `RUST_LOG` filter the binaries use: the operator's directives, then the
/// privacy caps, which override any directive for the same target.
pub fn log_filter(spec: &str) -> Result<EnvFilter, TelemetryError> {
    let mut filter = EnvFilter::builder()
        .with_regex(false)
        .parse(spec)
        .map_err(|err| TelemetryError::InvalidLogFilter(err.to_string()))?;
    // `None` from the hint means nothing is enabled at all.
    let level = match filter.max_level_hint() {
        Some(hint) => hint.min(filter::LevelFilter::INFO),
        None => filter::LevelFilter::OFF,
    };
    for target in PRIVACY_CAPS {
        let directive = format!("{target}={level}")
            .parse()
            .map_err(|err: filter::ParseError| TelemetryError::InvalidLogFilter(err.to_string()))?;
        filter = filter.add_directive(directive);
    }
    Ok(filter)
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync + 'static>;

/// Installs logging, span output and the metrics recorder for this process.
///
/// Call it once, early in `main`, from inside the Tokio runtime when metrics are on. A second
/// call returns [`TelemetryError::AlreadyInitialised`] and changes nothing.
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = log_filter(&config.log_filter)?;
    let runtime = match config.metric_provider {
        MetricProvider::None => None,
        MetricProvider::Prometheus | MetricProvider::Stdout | MetricProvider::Pretty => {
            Some(tokio::runtime::Handle::try_current().map_err(|_| TelemetryError::NoRuntime)?)
        }
    };
    if INITIALISED.swap(true, Ordering::SeqCst) {
        return Err(TelemetryError::AlreadyInitialised);
    }

    let mut layers: Vec<BoxedLayer> = vec![log_layer(config.log_format)];
    if let Some(tracer) = config.tracer_provider {
        layers.push(span_layer(tracer));
    }
    tracing_subscriber::registry()
        .with(layers.with_filter(filter))
        .try_init()
        .map_err(|err| TelemetryError::Logs(err.to_string()))?;

    let mut telemetry = Telemetry {
        recorder: None,
        provider: config.metric_provider,
        service_name: config.service_name,
    };
    if let Some(runtime) = runtime {
        telemetry.recorder = Some(prometheus_builder().install_recorder()?);
        telemetry.spawn_metrics_tasks(&runtime);
    }

    tracing::info!(
        service = config.service_name,
        log_format = ?config.log_format,
        tracer_provider = ?config.tracer_provider,
        metric_provider = ?config.metric_provider,
        "telemetry initialised"
    );
    Ok(telemetry)
}

fn log_layer(format: LogFormat) -> BoxedLayer {
    match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(io::stderr)
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .pretty()
            .with_ansi(io::stderr().is_terminal())
            .with_writer(io::stderr)
            .boxed(),
    }
}

/// Span close events only: plain events are the log layer's business.
fn span_layer(tracer: TracerProvider) -> BoxedLayer {
    let spans_only = filter::filter_fn(|metadata| metadata.is_span());
    match tracer {
        TracerProvider::Stdout => fmt::layer()
            .json()
            .with_span_events(FmtSpan::CLOSE)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(io::stdout)
            .with_filter(spans_only)
            .boxed(),
        TracerProvider::Pretty => fmt::layer()
            .pretty()
            .with_span_events(FmtSpan::CLOSE)
            .with_ansi(io::stdout().is_terminal())
            .with_writer(io::stdout)
            .with_filter(spans_only)
            .boxed(),
    }
}

/// How a metrics snapshot is written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotFormat {
    /// One JSON object per sample per line (`METRIC_PROVIDER=stdout`).
    Json,
    /// A readable table (`METRIC_PROVIDER=pretty`).
    Table,
}

/// Writes the recorder's current state to stdout in one locked write, so snapshot lines do not
/// interleave with span lines written from other threads.
fn write_snapshot(
    recorder: &PrometheusHandle,
    format: SnapshotFormat,
    service: &str,
) -> io::Result<()> {
    let exposition = recorder.render();
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = match format {
        SnapshotFormat::Json => snapshot_json_lines(&exposition, &timestamp, service),
        SnapshotFormat::Table => snapshot_table(&exposition, &timestamp, service),
    };
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

/// One sample line of the Prometheus text exposition format.
#[derive(Debug, Clone, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    /// The family's `# TYPE`: `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    kind: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

/// Reads the samples of a Prometheus text exposition; lines it cannot read are skipped (the
/// text comes from our own recorder, so there are none in practice).
fn parse_exposition(text: &str) -> Vec<Sample<'_>> {
    let mut kinds = std::collections::HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let mut words = declaration.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                kinds.insert(name, kind);
            }
        } else if !line.is_empty()
            && !line.starts_with('#')
            && let Some(mut sample) = parse_sample(line)
        {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| sample.name.strip_suffix(suffix))
                .find(|family| kinds.contains_key(family))
                .unwrap_or(sample.name);
            sample.kind = kinds.get(family).copied().unwrap_or("untyped");
            samples.push(sample);
        }
    }
    samples
}

fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let rest = &line[name_end..];
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inside) => parse_labels(inside)?,
        None => (Vec::new(), rest),
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        kind: "untyped",
        labels,
        value,
    })
}

/// Reads `key="value",…}` (just after the `{`) and returns the labels and what follows the `}`.
fn parse_labels(mut rest: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = rest.split_once('=')?;
        let quoted = after_key.strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let closing_quote = loop {
            let (index, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    escaped => value.push(escaped),
                },
                '"' => break index,
                c => value.push(c),
            }
        };
        labels.push((key.trim(), value));
        rest = &quoted[closing_quote + 1..];
    }
}

/// `METRIC_PROVIDER=stdout`: one JSON object per sample per line, e.g.
/// `{"labels":{"route":"upload"},"metric":"http_requests_total","service":"diagnosis-submit","timestamp":"…","type":"counter","value":3.0}`.
/// Non-finite values (`NaN`, `+Inf`) are written as strings because JSON has no such numbers.
fn snapshot_json_lines(exposition: &str, timestamp: &str, service: &str) -> String {
    let mut out = String::new();
    for sample in parse_exposition(exposition) {
        let labels: serde_json::Map<String, serde_json::Value> = sample
            .labels
            .into_iter()
            .map(|(key, value)| (key.to_owned(), serde_json::Value::String(value)))
            .collect();
        let value = serde_json::Number::from_f64(sample.value)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| serde_json::Value::String(format_value(sample.value)));
        let line = serde_json::json!({
            "timestamp": timestamp,
            "service": service,
            "metric": sample.name,
            "type": sample.kind,
            "labels": labels,
            "value": value,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// `METRIC_PROVIDER=pretty`: a header line, then one aligned `name{labels}  value` row per
/// sample. Histogram `_bucket` rows are left out (their `_sum` and `_count` stay) to keep the
/// table readable; `/metrics` and the JSON form carry the buckets.
fn snapshot_table(exposition: &str, timestamp: &str, service: &str) -> String {
    let rows: Vec<(String, String)> = parse_exposition(exposition)
        .into_iter()
        .filter(|sample| !(sample.kind == "histogram" && sample.name.ends_with("_bucket")))
        .map(|sample| {
            let mut series = sample.name.to_owned();
            if !sample.labels.is_empty() {
                let labels: Vec<String> = sample
                    .labels
                    .iter()
                    .map(|(key, value)| format!("{key}={value:?}"))
                    .collect();
                series = format!("{series}{{{}}}", labels.join(","));
            }
            (series, format_value(sample.value))
        })
        .collect();
    let mut out = format!("── metrics of {service} at {timestamp} ──\n");
    if rows.is_empty() {
        out.push_str("  (nothing recorded yet)\n");
    }
    let width = rows.iter().map(|(series, _)| series.chars().count()).max();
    for (series, value) in &rows {
        let width = width.unwrap_or_default();
        out.push_str(&format!("  {series:<width$}  {value}\n"));
    }
    out
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privacy_caps_lower_verbose_levels_and_never_raise_quiet_ones() {
        let hint = |spec: &str| log_filter(spec).unwrap().max_level_hint();
        // Asking for error everywhere leaves tokio_postgres at error too.
        assert_eq!(hint("error"), Some(filter::LevelFilter::ERROR));
        assert_eq!(
            hint("warn,diagnosis_core=error"),
            Some(filter::LevelFilter::WARN)
        );
        // Trace elsewhere is kept; the capped libraries stay at info (checked end to end by
        // the privacy test of the submit service).
        assert_eq!(hint("trace"), Some(filter::LevelFilter::TRACE));
        let capped = log_filter("tokio_postgres=trace,info").unwrap().to_string();
        assert!(capped.contains("tokio_postgres=info"), "{capped}");
        let quiet = log_filter("off").unwrap().to_string();
        assert!(quiet.contains("tokio_postgres=off"), "{quiet}");
    }

    const EXPOSITION: &str = r#"# TYPE http_requests_total counter
http_requests_total{route="upload",status="200"} 3
http_requests_total{route="claim-key",status="401"} 1

# TYPE pool_connections gauge
# HELP pool_connections Open connections.
pool_connections 4.5

# TYPE upload_duration_seconds histogram
upload_duration_seconds_bucket{le="0.001"} 0
upload_duration_seconds_bucket{le="+Inf"} 2
upload_duration_seconds_sum 0.25
upload_duration_seconds_count 2

# TYPE keys_per_upload summary
keys_per_upload{quantile="0.5"} NaN
keys_per_upload_sum 0
keys_per_upload_count 0
odd_label{path="a\"b\\c\nd"} 1
"#;

    #[test]
    fn parses_the_prometheus_text_format() {
        let samples = parse_exposition(EXPOSITION);
        assert_eq!(samples.len(), 11);
        assert_eq!(
            samples[0],
            Sample {
                name: "http_requests_total",
                kind: "counter",
                labels: vec![("route", "upload".into()), ("status", "200".into())],
                value: 3.0,
            }
        );
        assert_eq!(samples[2].kind, "gauge");
        assert_eq!(samples[2].value, 4.5);
        assert_eq!(samples[4].kind, "histogram");
        assert_eq!(samples[4].labels, vec![("le", "+Inf".to_owned())]);
        assert_eq!(samples[6].name, "upload_duration_seconds_count");
        assert_eq!(samples[6].kind, "histogram");
        assert_eq!(samples[7].kind, "summary");
        assert!(samples[7].value.is_nan());
        assert_eq!(samples[10].kind, "untyped");
        assert_eq!(samples[10].labels, vec![("path", "a\"b\\c\nd".to_owned())]);
    }

    #[test]
    fn unreadable_lines_are_skipped() {
        let samples = parse_exposition("broken{le=\"1\" 3\nnovalue\nok 1\nbad{x=1} 2\n");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].name, "ok");
    }

    #[test]
    fn json_snapshot_is_one_object_per_sample_per_line() {
        let out = snapshot_json_lines(EXPOSITION, "2025-01-02T03:04:05Z", "diagnosis-submit");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 11);
        assert_eq!(
            lines[0],
            r#"{"labels":{"route":"upload","status":"200"},"metric":"http_requests_total","service":"diagnosis-submit","timestamp":"2025-01-02T03:04:05Z","type":"counter","value":3.0}"#
        );
        assert_eq!(
            lines[7],
            r#"{"labels":{"quantile":"0.5"},"metric":"keys_per_upload","service":"diagnosis-submit","timestamp":"2025-01-02T03:04:05Z","type":"summary","value":"NaN"}"#
        );
        for line in lines {
            let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(parsed.is_object());
        }
        assert_eq!(snapshot_json_lines("", "t", "s"), "");
    }

    #[test]
    fn table_snapshot_is_aligned_and_skips_buckets() {
        let out = snapshot_table(EXPOSITION, "2025-01-02T03:04:05Z", "diagnosis-exporter");
        let expected = r#"── metrics of diagnosis-exporter at 2025-01-02T03:04:05Z ──
  http_requests_total{route="upload",status="200"}     3
  http_requests_total{route="claim-key",status="401"}  1
  pool_connections                                     4.5
  upload_duration_seconds_sum                          0.25
  upload_duration_seconds_count                        2
  keys_per_upload{quantile="0.5"}                      NaN
  keys_per_upload_sum                                  0
  keys_per_upload_count                                0
  odd_label{path="a\"b\\c\nd"}                         1
"#;
        assert_eq!(out, expected);
        assert_eq!(
            snapshot_table("", "t", "s"),
            "── metrics of s at t ──\n  (nothing recorded yet)\n"
        );
    }

    #[test]
    fn duration_histograms_get_millisecond_to_ten_second_buckets() {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("upload_duration_seconds").record(0.002);
            metrics::histogram!("keys_per_upload").record(14.0);
        });
        let text = Telemetry::from_prometheus_handle(handle)
            .render_prometheus()
            .unwrap();
        assert!(
            text.contains("upload_duration_seconds_bucket{le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("upload_duration_seconds_bucket{le=\"0.0025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("upload_duration_seconds_bucket{le=\"10\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE keys_per_upload summary"), "{text}");
    }

    #[test]
    fn disabled_telemetry_renders_nothing() {
        let telemetry = Telemetry::default();
        assert_eq!(telemetry.render_prometheus(), None);
        assert!(telemetry.write_metrics_snapshot().is_ok());
    }

    #[test]
    fn an_invalid_filter_is_rejected_before_anything_is_installed() {
        let config = TelemetryConfig {
            log_format: LogFormat::Json,
            log_filter: "info,[".to_owned(),
            tracer_provider: None,
            metric_provider: MetricProvider::None,
            service_name: "test",
        };
        assert!(matches!(
            init(&config),
            Err(TelemetryError::InvalidLogFilter(_))
        ));
    }

    /// The only test in this crate that installs the global subscriber and recorder; with the
    /// filter `off` it prints nothing into other tests' output.
    #[tokio::test]
    async fn init_installs_prometheus_once() {
        let config = TelemetryConfig {
            log_format: LogFormat::Json,
            log_filter: "off".to_owned(),
            tracer_provider: Some(TracerProvider::Stdout),
            metric_provider: MetricProvider::Prometheus,
            service_name: "diagnosis-test",
        };
        let telemetry = init(&config).unwrap();
        metrics::counter!("telemetry_test_total").increment(2);
        let text = telemetry.render_prometheus().unwrap();
        assert!(text.contains("telemetry_test_total 2"), "{text}");
        assert!(matches!(
            init(&config),
            Err(TelemetryError::AlreadyInitialised)
        ));
    }
}
