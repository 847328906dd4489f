//! The Prometheus text exposition (what `/metrics` serves) as the tests read it: every test
//! that checks a metric parses the text here and looks series up by name and labels, so no
//! test carries a parser of its own or matches lines by their spelling.
//!
//! It reads the text format strictly (a line it cannot read is an error naming the line), so a
//! change in what the services write fails the tests instead of reading as a missing series.
//! It must never be used by the services: they record metrics, they never read them back.

use std::collections::BTreeMap;
use std::fmt;

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A text exposition that does not parse: the line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub problem: &'static str,
    pub text: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {:?}", self.line, self.problem, self.text)
    }
}

impl std::error::Error for ParseError {}

/// The samples of one exposition, in the order it lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    samples: Vec<Sample>,
}

impl Exposition {
    /// Reads every sample line; comments (`# TYPE`, `# HELP`) and blank lines are skipped.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut samples = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample = parse_sample(line).map_err(|problem| ParseError {
                line: index + 1,
                problem,
                text: line.to_owned(),
            })?;
            samples.push(sample);
        }
        Ok(Self { samples })
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The value of the series `name` with exactly `labels` (in any order), if it is listed.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|sample| sample.name == name && sample.labels == wanted)
            .map(|sample| sample.value)
    }

    /// Like [`Exposition::value`], but the series must be listed; the panic lists the label
    /// sets of `name` that are.
    pub fn require(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            let present: Vec<String> = self
                .samples
                .iter()
                .filter(|sample| sample.name == name)
                .map(|sample| format!("{:?} {}", sample.labels, sample.value))
                .collect();
            panic!("{name}{labels:?} is missing; present: {present:#?}")
        })
    }

    /// A counter's value, 0 while it is not listed: a counter appears only once it has
    /// counted something.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// The sum of `name` over every label set listed (0 when none is).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .map(|sample| sample.value)
            .sum()
    }
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("not a metric name");
    }
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(inside) => parse_labels(inside)?,
        None => (BTreeMap::new(), &line[name_end..]),
    };
    if !rest.starts_with(char::is_whitespace) {
        return Err("no space before the value");
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or("no value")?)?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().map_err(|_| "not a timestamp")?;
    }
    if fields.next().is_some() {
        return Err("more than a value and a timestamp");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads `key="value",…}` (just after the `{`) and returns the labels and what follows the `}`.
fn parse_labels(mut rest: &str) -> Result<(BTreeMap<String, String>, &str), &'static str> {
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after_key) = rest.split_once('=').ok_or("a label without `=`")?;
        let key = key.trim();
        if !is_metric_name(key) || key.contains(':') {
            return Err("not a label name");
        }
        let quoted = after_key
            .trim_start()
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let (value, after_value) = unquote(quoted)?;
        if labels.insert(key.to_owned(), value).is_some() {
            return Err("a label named twice");
        }
        rest = after_value.trim_start();
        if let Some(after_comma) = rest.strip_prefix(',') {
            rest = after_comma;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by `,`");
        }
    }
}

/// Reads a label value up to its closing quote, resolving `\\`, `\"` and `\n`; returns the
/// value and what follows the quote.
fn unquote(quoted: &str) -> Result<(String, &str), &'static str> {
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &quoted[index + 1..])),
            '\\' => match chars.next().map(|(_, escaped)| escaped) {
                Some('n') => value.push('\n'),
                Some(escaped @ ('\\' | '"')) => value.push(escaped),
                _ => return Err("an unknown escape in a label value"),
            },
            c => value.push(c),
        }
    }
    Err("an unterminated label value")
}

fn parse_value(text: &str) -> Result<f64, &'static str> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        other => other.parse().map_err(|_| "not a number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE http_requests_total counter
# HELP http_requests_total Requests.
http_requests_total{route="upload",status="200"} 3
http_requests_total{status="401", route="claim-key",} 1 1700000000000

pool_connections 4.5
upload_duration_seconds_bucket{le="0.001"} 0
upload_duration_seconds_bucket{le="+Inf"} 2
keys_per_upload{quantile="0.5"} NaN
odd_label{path="a\"b\\c\nd"} -Inf
"#;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn reads_names_labels_values_and_skips_comments() {
        let exposition = Exposition::parse(TEXT).unwrap();
        let samples = exposition.samples();
        assert_eq!(samples.len(), 7);
        assert_eq!(
            samples[0],
            Sample {
                name: "http_requests_total".into(),
                labels: labels(&[("route", "upload"), ("status", "200")]),
                value: 3.0,
            }
        );
        assert_eq!(
            samples[1].labels,
            labels(&[("route", "claim-key"), ("status", "401")])
        );
        assert_eq!(samples[1].value, 1.0);
        assert_eq!(samples[2].value, 4.5);
        assert_eq!(samples[4].labels, labels(&[("le", "+Inf")]));
        assert!(samples[5].value.is_nan());
        assert_eq!(samples[6].labels, labels(&[("path", "a\"b\\c\nd")]));
        assert_eq!(samples[6].value, f64::NEG_INFINITY);
    }

    #[test]
    fn finds_a_series_by_name_and_exactly_its_labels() {
        let exposition = Exposition::parse(TEXT).unwrap();
        let claim = [("status", "401"), ("route", "claim-key")];
        assert_eq!(exposition.value("http_requests_total", &claim), Some(1.0));
        assert_eq!(exposition.value("http_requests_total", &claim[..1]), None);
        assert_eq!(exposition.value("pool_connections", &[]), Some(4.5));
        assert_eq!(exposition.require("pool_connections", &[]), 4.5);
        assert_eq!(exposition.counter("absent_total", &[]), 0.0);
        assert_eq!(exposition.counter("http_requests_total", &claim), 1.0);
        assert_eq!(exposition.sum("http_requests_total"), 4.0);
        assert_eq!(exposition.sum("absent_total"), 0.0);
    }

    #[test]
    #[should_panic(expected = "http_requests_total[(\"route\", \"portal\")] is missing")]
    fn require_names_the_missing_series() {
        Exposition::parse(TEXT)
            .unwrap()
            .require("http_requests_total", &[("route", "portal")]);
    }

    /// What the services' own recorder writes, a histogram and a summary among it, reads back.
    #[test]
    fn reads_what_the_recorder_renders() {
        let recorder = diagnosis_core::telemetry::prometheus_builder().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("runs_total", "outcome" => "said \"no\"").increment(2);
            metrics::gauge!("lag_hours").set(-1.5);
            metrics::histogram!("run_duration_seconds").record(0.3);
            metrics::histogram!("keys_per_upload").record(14.0);
        });
        let exposition = Exposition::parse(&recorder.handle().render()).unwrap();
        assert_eq!(
            exposition.require("runs_total", &[("outcome", "said \"no\"")]),
            2.0
        );
        assert_eq!(exposition.require("lag_hours", &[]), -1.5);
        let bucket = |le| exposition.require("run_duration_seconds_bucket", &[("le", le)]);
        assert_eq!(
            (bucket("0.25"), bucket("0.5"), bucket("+Inf")),
            (0.0, 1.0, 1.0)
        );
        assert_eq!(exposition.require("run_duration_seconds_sum", &[]), 0.3);
        assert_eq!(
            exposition.require("keys_per_upload", &[("quantile", "1")]),
            14.0
        );
        assert_eq!(exposition.require("keys_per_upload_count", &[]), 1.0);
    }

    #[test]
    fn a_line_it_cannot_read_is_an_error_naming_it() {
        for (line, problem) in [
            ("novalue", "no value"),
            ("empty{}", "no space before the value"),
            ("bad-name 1", "not a metric name"),
            ("broken{le=\"1\" 3", "labels not separated by `,`"),
            ("bad{x=1} 2", "a label value without quotes"),
            ("bad{x=\"1} 2", "an unterminated label value"),
            ("bad{x=\"\\t\"} 2", "an unknown escape in a label value"),
            ("bad{x=\"1\",x=\"2\"} 2", "a label named twice"),
            ("bad{x} 2", "a label without `=`"),
            ("bad{x=\"1\"}2", "no space before the value"),
            ("bad three", "not a number"),
            ("bad 1 later", "not a timestamp"),
            ("bad 1 2 3", "more than a value and a timestamp"),
        ] {
            let text = format!("ok 1\n\n{line}\n");
            assert_eq!(
                Exposition::parse(&text),
                Err(ParseError {
                    line: 3,
                    problem,
                    text: line.to_owned(),
                }),
                "{line}"
            );
        }
        assert_eq!(Exposition::parse(""), Ok(Exposition::default()));
    }
}
