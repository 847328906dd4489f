//! Logs, span traces and metrics for both binaries (DESIGN §6: `LOG_FORMAT`, `RUST_LOG`,
//! `TRACER_PROVIDER`, `METRIC_PROVIDER`).
//!
//! [`init`] installs, once per process:
//! * **logs** — `tracing` events filtered by `RUST_LOG` (default `info`), as JSON lines or
//!   pretty-printed, on **stderr**;
//! * **span traces** — with `TRACER_PROVIDER=stdout`, one JSON line per closed span with its busy
//!   and idle time on **stdout**; `pretty` prints the same readably; unset prints none;
//! * **metrics** — the `metrics` facade. With `METRIC_PROVIDER=prometheus` a Prometheus recorder,
//!   whose text the caller serves ([`Telemetry::render_prometheus`]) on its internal `/metrics`
//!   route (this module opens no listener); with `stdout` / `pretty` a recorder read directly
//!   (`snapshot`), whose samples are written to stdout every [`METRICS_SNAPSHOT_INTERVAL`]
//!   (60 s) — one JSON object per sample per line, or a table, in series order; unset installs
//!   no recorder and every metrics call is a no-op.
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

mod snapshot;

use snapshot::{SnapshotRecorder, snapshot_json_lines, snapshot_table};

/// How often `METRIC_PROVIDER=stdout|pretty` writes a metrics snapshot to stdout.
pub const METRICS_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

/// How often the recorder drains recorded histogram samples into its buckets, which bounds the
/// memory that unscraped samples can take.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The quantiles of every histogram rendered as a summary (those of the Prometheus exporter's
/// default), on `/metrics` and in snapshots alike.
const SUMMARY_QUANTILES: &[f64] = &[0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];

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
    /// Another global `metrics` recorder was installed first.
    #[error("could not install the metrics recorder: another one is installed")]
    RecorderAlreadyInstalled,
}

/// What [`init`] installed; keep it for the life of the process.
#[derive(Debug, Clone, Default)]
pub struct Telemetry {
    /// The installed recorder, if metrics are on.
    recorder: Option<MetricsRecorder>,
    service_name: &'static str,
}

/// The global recorder: Prometheus's for `/metrics`, or one read directly for the snapshots.
#[derive(Debug, Clone)]
enum MetricsRecorder {
    Prometheus(PrometheusHandle),
    Snapshot(SnapshotRecorder, SnapshotFormat),
}

/// How a metrics snapshot is written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotFormat {
    /// One JSON object per sample per line (`METRIC_PROVIDER=stdout`).
    Json,
    /// A readable table (`METRIC_PROVIDER=pretty`).
    Table,
}

impl MetricsRecorder {
    fn run_upkeep(&self) {
        match self {
            Self::Prometheus(handle) => handle.run_upkeep(),
            Self::Snapshot(recorder, _) => recorder.run_upkeep(),
        }
    }
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
        if matches!(self.recorder, Some(MetricsRecorder::Snapshot(..))) {
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
            recorder: Some(MetricsRecorder::Prometheus(handle)),
            service_name: "",
        }
    }

    /// The Prometheus text exposition for `/metrics`, when `METRIC_PROVIDER=prometheus`.
    pub fn render_prometheus(&self) -> Option<String> {
        self.prometheus_handle().map(PrometheusHandle::render)
    }

    /// The recorder's handle, when `METRIC_PROVIDER=prometheus`.
    pub fn prometheus_handle(&self) -> Option<&PrometheusHandle> {
        match &self.recorder {
            Some(MetricsRecorder::Prometheus(handle)) => Some(handle),
            Some(MetricsRecorder::Snapshot(..)) | None => None,
        }
    }

    /// With `METRIC_PROVIDER=stdout|pretty`, writes a snapshot to stdout now; otherwise does
    /// nothing. A job that exits before the first periodic snapshot (`diagnosis-exporter
    /// run-once`) calls this before it exits so its metrics are not lost.
    pub fn write_metrics_snapshot(&self) -> io::Result<()> {
        let Some(MetricsRecorder::Snapshot(recorder, format)) = &self.recorder else {
            return Ok(());
        };
        let samples = recorder.samples();
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let text = match format {
            SnapshotFormat::Json => snapshot_json_lines(&samples, &timestamp, self.service_name),
            SnapshotFormat::Table => snapshot_table(&samples, &timestamp, self.service_name),
        };
        // One locked write, so snapshot lines do not interleave with span lines written from
        // other threads.
        let mut stdout = io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()
    }
}

/// The Prometheus recorder settings used by [`init`]: `*_duration_seconds` histograms get
/// [`DURATION_BUCKETS_SECONDS`]. Tests use it to build a local recorder that renders exactly
/// like production.
pub fn prometheus_builder() -> PrometheusBuilder {
    // Cannot fail: the bucket list is a non-empty constant. Fall back to the defaults anyway
    // rather than panic.
    PrometheusBuilder::new()
        .set_quantiles(SUMMARY_QUANTILES)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Suffix("_duration_seconds".to_owned()),
                DURATION_BUCKETS_SECONDS,
            )
        })
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
        service_name: config.service_name,
    };
    if let Some(runtime) = runtime {
        telemetry.recorder = install_recorder(config.metric_provider)?;
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

/// Installs the global recorder `provider` reads from, if any.
fn install_recorder(provider: MetricProvider) -> Result<Option<MetricsRecorder>, TelemetryError> {
    let format = match provider {
        MetricProvider::None => return Ok(None),
        MetricProvider::Prometheus => {
            let handle = prometheus_builder().install_recorder()?;
            return Ok(Some(MetricsRecorder::Prometheus(handle)));
        }
        MetricProvider::Stdout => SnapshotFormat::Json,
        MetricProvider::Pretty => SnapshotFormat::Table,
    };
    let recorder = SnapshotRecorder::default();
    metrics::set_global_recorder(recorder.clone())
        .map_err(|_| TelemetryError::RecorderAlreadyInstalled)?;
    Ok(Some(MetricsRecorder::Snapshot(recorder, format)))
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
