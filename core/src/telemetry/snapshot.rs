//! The metrics snapshot of `METRIC_PROVIDER=stdout|pretty` (DESIGN §6): the recorder those
//! providers install, read directly, and the two ways its samples are written.
//!
//! The Prometheus recorder keeps its registry private and hands out only rendered text, so the
//! snapshot providers install this recorder instead (a process has one provider, never both) and
//! read its registry directly. Its histograms and summaries are the Prometheus exporter's own
//! `Distribution`s built with the settings of `prometheus_builder`, so a snapshot reports the
//! samples `/metrics` would serve. This module must never render or parse the text exposition.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use metrics::atomics::AtomicU64;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::formatting::{sanitize_label_key, sanitize_metric_name};
use metrics_exporter_prometheus::{Distribution, DistributionBuilder, Matcher};
use metrics_util::registry::{Registry, Storage};
use metrics_util::storage::AtomicBucket;
use quanta::Instant;

use super::{DURATION_BUCKETS_SECONDS, SUMMARY_QUANTILES};

/// A series' labels, in the order they were recorded.
type Labels = Vec<(String, String)>;

/// One sample, as one line of the text exposition would carry it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub(super) name: String,
    /// The family's Prometheus type: `counter`, `gauge`, `histogram` or `summary`.
    pub(super) kind: &'static str,
    pub(super) labels: Labels,
    pub(super) value: f64,
}

impl Sample {
    /// `name{key="value",…}`, or the bare name without labels.
    fn series(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(key, value)| format!("{key}={value:?}"))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// The recorder of the snapshot providers; clones share one registry.
#[derive(Debug, Clone)]
pub(super) struct SnapshotRecorder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry<Key, TimedStorage>,
    /// Histogram samples drained from the registry, aggregated as `/metrics` aggregates them.
    distributions: Mutex<HashMap<Key, Distribution>>,
    builder: DistributionBuilder,
}

/// Counters and gauges as atomics; histogram samples with the instant they were recorded, which
/// the summaries' rolling window goes by.
#[derive(Debug)]
struct TimedStorage;

#[derive(Debug)]
struct TimedBucket(AtomicBucket<(f64, Instant)>);

impl HistogramFn for TimedBucket {
    fn record(&self, value: f64) {
        self.0.push((value, Instant::now()));
    }
}

impl Storage<Key> for TimedStorage {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<AtomicU64>;
    type Histogram = Arc<TimedBucket>;

    fn counter(&self, _: &Key) -> Self::Counter {
        Arc::new(AtomicU64::new(0))
    }

    fn gauge(&self, _: &Key) -> Self::Gauge {
        Arc::new(AtomicU64::new(0))
    }

    fn histogram(&self, _: &Key) -> Self::Histogram {
        Arc::new(TimedBucket(AtomicBucket::new()))
    }
}

impl Recorder for SnapshotRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let registry = &self.inner.registry;
        registry.get_or_create_counter(key, |counter| Counter::from_arc(Arc::clone(counter)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let registry = &self.inner.registry;
        registry.get_or_create_gauge(key, |gauge| Gauge::from_arc(Arc::clone(gauge)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let registry = &self.inner.registry;
        registry.get_or_create_histogram(key, |bucket| Histogram::from_arc(Arc::clone(bucket)))
    }
}

impl Default for SnapshotRecorder {
    fn default() -> Self {
        let duration_buckets = HashMap::from([(
            Matcher::Suffix("_duration_seconds".to_owned()),
            DURATION_BUCKETS_SECONDS.to_vec(),
        )]);
        let builder = DistributionBuilder::new(
            metrics_util::parse_quantiles(SUMMARY_QUANTILES),
            None,
            None,
            None,
            Some(duration_buckets),
            None,
        );
        Self {
            inner: Arc::new(Inner {
                registry: Registry::new(TimedStorage),
                distributions: Mutex::new(HashMap::new()),
                builder,
            }),
        }
    }
}

impl SnapshotRecorder {
    /// Moves recorded histogram samples into their distributions, which bounds the memory that
    /// samples take between snapshots.
    pub(super) fn run_upkeep(&self) {
        let mut distributions = self
            .inner
            .distributions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.inner.registry.visit_histograms(|key, bucket| {
            let distribution = distributions.entry(key.clone()).or_insert_with(|| {
                let name = sanitize_metric_name(key.name());
                self.inner.builder.get_distribution(&name)
            });
            bucket
                .0
                .clear_with(|samples| distribution.record_samples(samples));
        });
    }

    /// Every sample: counters, then gauges, then histograms and summaries, each in series order.
    pub(super) fn samples(&self) -> Vec<Sample> {
        self.run_upkeep();
        let registry = &self.inner.registry;
        let counters = by_series(registry.get_counter_handles());
        let gauges = by_series(registry.get_gauge_handles());
        let distributions = by_series(
            self.inner
                .distributions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        );
        let mut samples = Vec::new();
        for ((name, labels), counter) in counters {
            let value = counter.load(Ordering::Acquire) as f64;
            samples.push(sample(name, "counter", labels, value));
        }
        for ((name, labels), gauge) in gauges {
            let value = f64::from_bits(gauge.load(Ordering::Acquire));
            samples.push(sample(name, "gauge", labels, value));
        }
        for ((name, labels), distribution) in distributions {
            distribution_samples(&mut samples, name, labels, &distribution);
        }
        samples
    }
}

/// Handles keyed by `(name, labels)` as `/metrics` spells them, in that order.
fn by_series<T>(handles: impl IntoIterator<Item = (Key, T)>) -> BTreeMap<(String, Labels), T> {
    handles
        .into_iter()
        .map(|(key, handle)| {
            let labels = key
                .labels()
                .map(|label| (sanitize_label_key(label.key()), label.value().to_owned()))
                .collect();
            ((sanitize_metric_name(key.name()), labels), handle)
        })
        .collect()
}

fn sample(name: String, kind: &'static str, labels: Labels, value: f64) -> Sample {
    Sample {
        name,
        kind,
        labels,
        value,
    }
}

/// A histogram's `_bucket` (with `le`, ending at `+Inf`), `_sum` and `_count`; a summary's
/// quantiles, `_sum` and `_count`, exactly as `/metrics` lists them.
fn distribution_samples(
    out: &mut Vec<Sample>,
    name: String,
    labels: Labels,
    distribution: &Distribution,
) {
    let with = |extra: (&str, String)| {
        let mut labels = labels.clone();
        labels.push((extra.0.to_owned(), extra.1));
        labels
    };
    let (kind, sum, count) = match distribution {
        Distribution::Histogram(histogram) => {
            let bucket = format!("{name}_bucket");
            for (le, count) in histogram.buckets() {
                let labels = with(("le", le.to_string()));
                out.push(sample(bucket.clone(), "histogram", labels, count as f64));
            }
            let total = histogram.count() as f64;
            out.push(sample(
                bucket,
                "histogram",
                with(("le", "+Inf".into())),
                total,
            ));
            ("histogram", histogram.sum(), histogram.count())
        }
        Distribution::Summary(summary, quantiles, sum) => {
            let snapshot = summary.snapshot(Instant::now());
            for quantile in quantiles.iter() {
                let value = snapshot.quantile(quantile.value()).unwrap_or(0.0);
                let labels = with(("quantile", quantile.value().to_string()));
                out.push(sample(name.clone(), "summary", labels, value));
            }
            ("summary", *sum, summary.count() as u64)
        }
        // Not configured here, and `/metrics` leaves them out of the text format too.
        Distribution::NativeHistogram(_) => return,
    };
    out.push(sample(format!("{name}_sum"), kind, labels.clone(), sum));
    out.push(sample(format!("{name}_count"), kind, labels, count as f64));
}

/// `METRIC_PROVIDER=stdout`: one JSON object per sample per line, e.g.
/// `{"labels":{"route":"upload"},"metric":"http_requests_total","service":"diagnosis-submit","timestamp":"…","type":"counter","value":3.0}`.
/// Non-finite values (`NaN`, `+Inf`) are written as strings because JSON has no such numbers.
pub(super) fn snapshot_json_lines(samples: &[Sample], timestamp: &str, service: &str) -> String {
    let mut out = String::new();
    for sample in samples {
        let labels: serde_json::Map<String, serde_json::Value> = sample
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())))
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
pub(super) fn snapshot_table(samples: &[Sample], timestamp: &str, service: &str) -> String {
    let rows: Vec<(String, String)> = samples
        .iter()
        .filter(|sample| !(sample.kind == "histogram" && sample.name.ends_with("_bucket")))
        .map(|sample| (sample.series(), format_value(sample.value)))
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

    fn s(name: &str, kind: &'static str, labels: &[(&str, &str)], value: f64) -> Sample {
        let labels = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        sample(name.to_owned(), kind, labels, value)
    }

    /// One sample of each shape a snapshot writes, a non-finite value and a label value that
    /// needs escaping among them.
    fn fixture() -> Vec<Sample> {
        vec![
            s(
                "http_requests_total",
                "counter",
                &[("route", "upload"), ("status", "200")],
                3.0,
            ),
            s(
                "http_requests_total",
                "counter",
                &[("route", "claim-key"), ("status", "401")],
                1.0,
            ),
            s("pool_connections", "gauge", &[], 4.5),
            s(
                "upload_duration_seconds_bucket",
                "histogram",
                &[("le", "0.001")],
                0.0,
            ),
            s(
                "upload_duration_seconds_bucket",
                "histogram",
                &[("le", "+Inf")],
                2.0,
            ),
            s("upload_duration_seconds_sum", "histogram", &[], 0.25),
            s("upload_duration_seconds_count", "histogram", &[], 2.0),
            s(
                "keys_per_upload",
                "summary",
                &[("quantile", "0.5")],
                f64::NAN,
            ),
            s("keys_per_upload_sum", "summary", &[], 0.0),
            s("keys_per_upload_count", "summary", &[], 0.0),
            s("odd_label", "gauge", &[("path", "a\"b\\c\nd")], 1.0),
        ]
    }

    #[test]
    fn json_snapshot_is_one_object_per_sample_per_line() {
        let out = snapshot_json_lines(&fixture(), "2025-01-02T03:04:05Z", "diagnosis-submit");
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
        assert_eq!(snapshot_json_lines(&[], "t", "s"), "");
    }

    #[test]
    fn table_snapshot_is_aligned_and_skips_buckets() {
        let out = snapshot_table(&fixture(), "2025-01-02T03:04:05Z", "diagnosis-exporter");
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
            snapshot_table(&[], "t", "s"),
            "── metrics of s at t ──\n  (nothing recorded yet)\n"
        );
    }

    /// Records the same things through `recorder`: two counter series, a gauge, a duration
    /// histogram with two label sets and a summary.
    fn record_a_bit_of_everything(recorder: &dyn Recorder) {
        metrics::with_local_recorder(recorder, || {
            metrics::counter!("requests_total", "route" => "upload", "status" => "200")
                .increment(3);
            metrics::counter!("requests_total", "route" => "claim-key", "status" => "401")
                .increment(1);
            metrics::gauge!("pool_connections").set(4.5);
            for (route, seconds) in [("upload", 0.002), ("upload", 0.3), ("claim-key", 12.0)] {
                metrics::histogram!("request_duration_seconds", "route" => route).record(seconds);
            }
            for keys in [1.0, 14.0, 14.0, 28.0] {
                metrics::histogram!("keys_per_upload").record(keys);
            }
        });
    }

    #[test]
    fn a_snapshot_lists_exactly_the_samples_metrics_serves() {
        let prometheus = super::super::prometheus_builder().build_recorder();
        let snapshots = SnapshotRecorder::default();
        record_a_bit_of_everything(&prometheus);
        record_a_bit_of_everything(&snapshots);

        let rendered = prometheus.handle().render();
        let served: Vec<&str> = rendered
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        let samples = snapshots.samples();
        // 2 counters, 1 gauge, 2 × (13 buckets + `+Inf` + sum + count), 7 quantiles + sum + count.
        assert_eq!(samples.len(), 2 + 1 + 2 * 16 + 9, "{samples:#?}");
        assert_eq!(samples.len(), served.len(), "{rendered}");
        for sample in &samples {
            let line = format!("{} {}", sample.series(), format_value(sample.value));
            assert!(
                served.contains(&line.as_str()),
                "{line} is not served in\n{rendered}"
            );
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| sample.name.strip_suffix(suffix))
                .filter(|family| rendered.contains(&format!("# TYPE {family} ")))
                .unwrap_or(&sample.name);
            let declared = format!("# TYPE {family} {}", sample.kind);
            assert!(
                rendered.contains(&declared),
                "{declared} missing from\n{rendered}"
            );
        }
    }

    #[test]
    fn samples_come_by_type_then_in_series_order() {
        let snapshots = SnapshotRecorder::default();
        record_a_bit_of_everything(&snapshots);
        let series: Vec<(&str, String)> = snapshots
            .samples()
            .iter()
            .filter(|sample| !sample.name.ends_with("_bucket"))
            .map(|sample| (sample.kind, sample.series()))
            .collect();
        let expected = [
            (
                "counter",
                r#"requests_total{route="claim-key",status="401"}"#,
            ),
            ("counter", r#"requests_total{route="upload",status="200"}"#),
            ("gauge", "pool_connections"),
        ];
        let expected: Vec<(&str, String)> = expected
            .into_iter()
            .map(|(kind, series)| (kind, series.to_owned()))
            .chain(
                ["0", "0.5", "0.9", "0.95", "0.99", "0.999", "1"]
                    .map(|q| ("summary", format!("keys_per_upload{{quantile=\"{q}\"}}"))),
            )
            .chain([
                ("summary", "keys_per_upload_sum".to_owned()),
                ("summary", "keys_per_upload_count".to_owned()),
                (
                    "histogram",
                    r#"request_duration_seconds_sum{route="claim-key"}"#.to_owned(),
                ),
                (
                    "histogram",
                    r#"request_duration_seconds_count{route="claim-key"}"#.to_owned(),
                ),
                (
                    "histogram",
                    r#"request_duration_seconds_sum{route="upload"}"#.to_owned(),
                ),
                (
                    "histogram",
                    r#"request_duration_seconds_count{route="upload"}"#.to_owned(),
                ),
            ])
            .collect();
        assert_eq!(series, expected);
    }

    #[test]
    fn upkeep_moves_histogram_samples_out_of_the_registry() {
        let snapshots = SnapshotRecorder::default();
        record_a_bit_of_everything(&snapshots);
        snapshots.run_upkeep();
        let mut pending = 0;
        snapshots
            .inner
            .registry
            .visit_histograms(|_, bucket| bucket.0.clear_with(|samples| pending += samples.len()));
        assert_eq!(pending, 0);
        let count = snapshots
            .samples()
            .into_iter()
            .find(|sample| sample.name == "keys_per_upload_count")
            .map(|sample| sample.value);
        assert_eq!(count, Some(4.0));
    }
}
