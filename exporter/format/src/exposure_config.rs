//! Exposure configuration step: checks each file of `EXPOSURE_CONFIG_DIR` before it is
//! published as `exposure-configuration/{name}.json` (DESIGN §4, §4.2, §4.3).
//!
//! A file is a **v1** configuration when it has any v1 field (the platforms' original
//! ExposureConfiguration names: `attenuationLevelValues`, `attenuationWeight`, …, plus the
//! COVID Alert apps' `minimumExposureDurationMinutes`), and a **v2** configuration when it has
//! any field named as in Apple's ENExposureConfiguration for ENAPIVersion 2
//! (`immediateDurationWeight`, `infectiousnessForDaysSinceOnsetOfSymptoms`,
//! `reportTypeConfirmedTestWeight`, …). A file may be both; it must be at least one. The rules
//! of every version it claims apply. `region.json` is app UI content and only has to be JSON.
//!
//! Fields this module does not know (`decommissioned`, `steps`, `metadata`, …) are the apps'
//! business and pass through untouched: the caller publishes the **original bytes** of a file
//! that passed, never a re-serialization. This module must never modify a configuration, and
//! never let a file through that would leave a platform with values outside its documented
//! range: an error names the file and the field, and the previously published version stays.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use thiserror::Error;

/// The app UI content file: published after a JSON syntax check only (DESIGN §4.3).
pub const REGION_CONTENT_FILE: &str = "region.json";

/// Why a configuration file may not be published. Every message starts with the file name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExposureConfigError {
    /// The file name cannot become an object key `exposure-configuration/{name}`.
    #[error("{file}: the file name must be 1 to 64 characters of [A-Za-z0-9_-] followed by .json")]
    FileName {
        /// The file.
        file: String,
    },
    /// Not JSON, or a JSON object repeats a key (platforms' parsers disagree on which wins).
    #[error("{file}: not valid JSON: {reason}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// The top level is not a JSON object.
    #[error("{file}: an exposure configuration must be a JSON object")]
    NotAnObject {
        /// The file.
        file: String,
    },
    /// Neither v1 nor v2 fields: nothing would configure the platforms.
    #[error("{file}: no exposure configuration fields (neither v1 nor v2) found")]
    NoConfiguration {
        /// The file.
        file: String,
    },
    /// One field breaks a platform rule.
    #[error("{file}: {field}: {problem}")]
    Field {
        /// The file.
        file: String,
        /// The field, with an index or key where it applies (`attenuationLevelValues[3]`).
        field: String,
        /// What is wrong, with the value found.
        problem: String,
    },
}

impl ExposureConfigError {
    /// The offending field, for errors about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Field { field, .. } => Some(field),
            Self::FileName { .. }
            | Self::Syntax { .. }
            | Self::NotAnObject { .. }
            | Self::NoConfiguration { .. } => None,
        }
    }
}

/// Which platform rules a configuration claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigVersions {
    /// Not an exposure configuration: `region.json`, checked for JSON syntax only.
    RegionContent,
    /// v1 fields only.
    V1,
    /// v2 fields only.
    V2,
    /// Both v1 and v2 fields.
    V1AndV2,
}

// v1: Apple ENExposureConfiguration (ENAPIVersion 1) and Android ExposureConfiguration.
/// Eight risk-level values 0–8, one per attenuation / days / duration / transmission-risk bucket
/// (Apple "attenuationLevelValues": "eight risk-level values in the range 0-8").
const V1_LEVEL_VALUES: [&str; 4] = [
    "attenuationLevelValues",
    "daysSinceLastExposureLevelValues",
    "durationLevelValues",
    "transmissionRiskLevelValues",
];
/// Weights in percent, 0–100 (Android ExposureConfiguration; ENRiskWeightMin/Max on iOS).
const V1_WEIGHTS: [&str; 4] = [
    "attenuationWeight",
    "daysSinceLastExposureWeight",
    "durationWeight",
    "transmissionRiskWeight",
];
/// The COVID Alert apps' own v1 field: minutes in the immediate and near attenuation buckets
/// that count as an exposure. Without it the apps never notify anyone (DESIGN §4.3).
const MINIMUM_EXPOSURE_DURATION_MINUTES: &str = "minimumExposureDurationMinutes";
/// Shared by v1 and v2, with a version-dependent length.
const ATTENUATION_DURATION_THRESHOLDS: &str = "attenuationDurationThresholds";
/// v1: the product of the four level values, at most 8⁴ = 4096; v2: any non-negative score.
const MINIMUM_RISK_SCORE: &str = "minimumRiskScore";

// v2: Apple ENExposureConfiguration (ENAPIVersion 2) names.
/// "Range is 0-250%" (Apple: immediateDurationWeight … otherDurationWeight,
/// infectiousnessStandardWeight / infectiousnessHighWeight, reportType…Weight).
const V2_WEIGHTS: [&str; 10] = [
    "immediateDurationWeight",
    "nearDurationWeight",
    "mediumDurationWeight",
    "otherDurationWeight",
    "infectiousnessStandardWeight",
    "infectiousnessHighWeight",
    "reportTypeConfirmedTestWeight",
    "reportTypeConfirmedClinicalDiagnosisWeight",
    "reportTypeSelfReportedWeight",
    "reportTypeRecursiveWeight",
];
/// Days since onset of symptoms → ENInfectiousness (none 0, standard 1, high 2).
const INFECTIOUSNESS_MAP: &str = "infectiousnessForDaysSinceOnsetOfSymptoms";
/// The ENDiagnosisReportType an unknown report type maps to: confirmedTest (1) …
/// recursive (4); neither unknown (0) nor revoked (5) is a meaningful target.
const REPORT_TYPE_NONE_MAP: &str = "reportTypeNoneMap";
/// Days to consider; "the default value is 0, meaning no filtering is applied" (Apple).
const DAYS_SINCE_LAST_EXPOSURE_THRESHOLD: &str = "daysSinceLastExposureThreshold";
/// Minimum weighted score to report; any non-negative number.
const MINIMUM_SCORE: &str = "minimumScore";

const V1_ONLY_FIELDS: [&str; 9] = [
    V1_LEVEL_VALUES[0],
    V1_LEVEL_VALUES[1],
    V1_LEVEL_VALUES[2],
    V1_LEVEL_VALUES[3],
    V1_WEIGHTS[0],
    V1_WEIGHTS[1],
    V1_WEIGHTS[2],
    V1_WEIGHTS[3],
    MINIMUM_EXPOSURE_DURATION_MINUTES,
];

/// Days the infectiousness map may name, besides `unknown` (DESIGN §3: −14..=14).
const DAYS_SINCE_ONSET: std::ops::RangeInclusive<i64> = -14..=14;

/// Validates one file of `EXPOSURE_CONFIG_DIR`. `name` is the file name (`CA.json`), used in
/// the object key and in every error. On success the caller publishes `bytes` unchanged.
pub fn validate_exposure_config(name: &str, bytes: &[u8]) -> Result<(), ExposureConfigError> {
    check_exposure_config(name, bytes).map(|_| ())
}

/// As [`validate_exposure_config`], also telling which platform rules the file claims.
pub fn check_exposure_config(
    name: &str,
    bytes: &[u8],
) -> Result<ConfigVersions, ExposureConfigError> {
    check_file_name(name)?;
    let value = parse_strict(name, bytes)?;
    if name == REGION_CONTENT_FILE {
        return Ok(ConfigVersions::RegionContent);
    }
    let Value::Object(config) = value else {
        return Err(ExposureConfigError::NotAnObject {
            file: name.to_owned(),
        });
    };
    let is_v1 = V1_ONLY_FIELDS.iter().any(|f| config.contains_key(*f));
    let is_v2 = V2_WEIGHTS
        .iter()
        .chain(&[
            INFECTIOUSNESS_MAP,
            REPORT_TYPE_NONE_MAP,
            DAYS_SINCE_LAST_EXPOSURE_THRESHOLD,
            MINIMUM_SCORE,
        ])
        .any(|f| config.contains_key(*f));
    let versions = match (is_v1, is_v2) {
        (true, false) => ConfigVersions::V1,
        (false, true) => ConfigVersions::V2,
        (true, true) => ConfigVersions::V1AndV2,
        (false, false) => {
            return Err(ExposureConfigError::NoConfiguration {
                file: name.to_owned(),
            });
        }
    };
    let checker = Checker {
        file: name,
        config: &config,
    };
    if is_v1 {
        checker.v1()?;
    }
    if is_v2 {
        checker.v2()?;
    }
    checker.shared(versions)?;
    Ok(versions)
}

fn check_file_name(name: &str) -> Result<(), ExposureConfigError> {
    let well_formed = name.strip_suffix(".json").is_some_and(|stem| {
        (1..=64).contains(&stem.len())
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if well_formed {
        Ok(())
    } else {
        Err(ExposureConfigError::FileName {
            file: name.to_owned(),
        })
    }
}

struct Checker<'a> {
    file: &'a str,
    config: &'a Map<String, Value>,
}

impl Checker<'_> {
    fn error(&self, field: impl Into<String>, problem: impl Into<String>) -> ExposureConfigError {
        ExposureConfigError::Field {
            file: self.file.to_owned(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn required(&self, field: &str, why: &str) -> Result<&Value, ExposureConfigError> {
        self.config
            .get(field)
            .ok_or_else(|| self.error(field, format!("required {why}")))
    }

    /// v1 rules. Every v1 field is required: the deployed apps declare them all and hand
    /// them to the platform without defaults.
    fn v1(&self) -> Result<(), ExposureConfigError> {
        for field in V1_LEVEL_VALUES {
            let value = self.required(field, "in a v1 configuration")?;
            self.integer_array(field, value, 8..=8, 0..=8)?;
        }
        for field in V1_WEIGHTS {
            let value = self.required(field, "in a v1 configuration")?;
            self.number_in(field, value, 0.0, 100.0)?;
        }
        let score = self.required(MINIMUM_RISK_SCORE, "in a v1 configuration")?;
        self.integer_in(MINIMUM_RISK_SCORE, score, 0..=4096)?;
        let minutes = self.required(
            MINIMUM_EXPOSURE_DURATION_MINUTES,
            "in a v1 configuration: without it the COVID Alert apps never notify anyone",
        )?;
        self.number_in(MINIMUM_EXPOSURE_DURATION_MINUTES, minutes, 0.0, f64::MAX)?;
        Ok(())
    }

    /// v2 rules: every field optional (the platform has a default for each), checked when
    /// present.
    fn v2(&self) -> Result<(), ExposureConfigError> {
        for field in V2_WEIGHTS {
            if let Some(value) = self.config.get(field) {
                self.number_in(field, value, 0.0, 250.0)?;
            }
        }
        if let Some(value) = self.config.get(INFECTIOUSNESS_MAP) {
            self.infectiousness_map(value)?;
        }
        if let Some(value) = self.config.get(REPORT_TYPE_NONE_MAP) {
            self.integer_in(REPORT_TYPE_NONE_MAP, value, 1..=4)?;
        }
        if let Some(value) = self.config.get(DAYS_SINCE_LAST_EXPOSURE_THRESHOLD) {
            self.integer_in(DAYS_SINCE_LAST_EXPOSURE_THRESHOLD, value, 0..=i64::MAX)?;
        }
        if let Some(value) = self.config.get(MINIMUM_SCORE) {
            self.number_in(MINIMUM_SCORE, value, 0.0, f64::MAX)?;
        }
        if let Some(value) = self.config.get(MINIMUM_RISK_SCORE) {
            self.number_in(MINIMUM_RISK_SCORE, value, 0.0, f64::MAX)?;
        }
        if let Some(value) = self.config.get(MINIMUM_EXPOSURE_DURATION_MINUTES) {
            self.number_in(MINIMUM_EXPOSURE_DURATION_MINUTES, value, 0.0, f64::MAX)?;
        }
        Ok(())
    }

    /// `attenuationDurationThresholds`: strictly increasing attenuations in dB (0–255,
    /// ENAttenuation is a UInt8). v1 has two thresholds (three buckets); v2 has three
    /// (immediate, near, medium; Apple's defaults 50, 70, 90). A file that is both may use
    /// either length.
    fn shared(&self, versions: ConfigVersions) -> Result<(), ExposureConfigError> {
        let Some(value) = self.config.get(ATTENUATION_DURATION_THRESHOLDS) else {
            return Ok(());
        };
        let lengths = match versions {
            ConfigVersions::V1 => 2..=2,
            ConfigVersions::V2 => 3..=3,
            ConfigVersions::V1AndV2 | ConfigVersions::RegionContent => 2..=3,
        };
        let values =
            self.integer_array(ATTENUATION_DURATION_THRESHOLDS, value, lengths, 0..=255)?;
        for (index, pair) in values.windows(2).enumerate() {
            if let [earlier, later] = pair
                && later <= earlier
            {
                return Err(self.error(
                    format!("{ATTENUATION_DURATION_THRESHOLDS}[{}]", index + 1),
                    format!(
                        "must be greater than {ATTENUATION_DURATION_THRESHOLDS}[{index}] \
                         ({earlier}), got {later}"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn infectiousness_map(&self, value: &Value) -> Result<(), ExposureConfigError> {
        let Value::Object(map) = value else {
            return Err(self.error(
                INFECTIOUSNESS_MAP,
                format!(
                    "must be an object from days since onset (\"-14\" to \"14\", or \
                     \"unknown\") to 0, 1 or 2, got {}",
                    describe(value)
                ),
            ));
        };
        for (day, infectiousness) in map {
            let field = format!("{INFECTIOUSNESS_MAP}[{day:?}]");
            let known_day = day == "unknown"
                || day
                    .parse::<i64>()
                    .ok()
                    .filter(|n| DAYS_SINCE_ONSET.contains(n) && n.to_string() == *day)
                    .is_some();
            if !known_day {
                return Err(self.error(
                    field,
                    "the key must be a day from -14 to 14 (written as an integer) or \"unknown\"",
                ));
            }
            // ENInfectiousness: none 0, standard 1, high 2.
            self.integer_in(&field, infectiousness, 0..=2)?;
        }
        Ok(())
    }

    fn integer_array(
        &self,
        field: &str,
        value: &Value,
        lengths: std::ops::RangeInclusive<usize>,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Vec<i64>, ExposureConfigError> {
        let length_text = if lengths.start() == lengths.end() {
            lengths.start().to_string()
        } else {
            format!("{} to {}", lengths.start(), lengths.end())
        };
        let Value::Array(items) = value else {
            return Err(self.error(
                field,
                format!(
                    "must be an array of {length_text} integers, got {}",
                    describe(value)
                ),
            ));
        };
        if !lengths.contains(&items.len()) {
            return Err(self.error(
                field,
                format!("must have {length_text} values, got {}", items.len()),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(index, item)| self.integer_in(&format!("{field}[{index}]"), item, range.clone()))
            .collect()
    }

    fn integer_in(
        &self,
        field: &str,
        value: &Value,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, ExposureConfigError> {
        let expected = if *range.end() == i64::MAX {
            format!("an integer of at least {}", range.start())
        } else {
            format!("an integer from {} to {}", range.start(), range.end())
        };
        as_integer(value)
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                self.error(
                    field,
                    format!("must be {expected}, got {}", describe(value)),
                )
            })
    }

    fn number_in(
        &self,
        field: &str,
        value: &Value,
        min: f64,
        max: f64,
    ) -> Result<f64, ExposureConfigError> {
        let expected = if max == f64::MAX {
            format!("a number of at least {min}")
        } else {
            format!("a number from {min} to {max}")
        };
        value
            .as_f64()
            .filter(|n| n.is_finite() && (min..=max).contains(n))
            .ok_or_else(|| {
                self.error(
                    field,
                    format!("must be {expected}, got {}", describe(value)),
                )
            })
    }
}

/// An integer, whether written `8` or `8.0` (both arrive as the same NSNumber / Java number).
fn as_integer(value: &Value) -> Option<i64> {
    let Value::Number(number) = value else {
        return None;
    };
    number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            // The filter makes the conversion exact.
            .map(|f| f as i64)
    })
}

/// The value as the operator wrote it, shortened: what an error says it got.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() <= 40 => format!("{s:?}"),
        Value::String(_) => "a long string".to_owned(),
        Value::Array(items) => format!("an array of {} values", items.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Parses JSON, refusing repeated keys in any object: iOS and Android parsers disagree on
/// which of two equal keys wins, so such a file would configure the platforms differently.
fn parse_strict(file: &str, bytes: &[u8]) -> Result<Value, ExposureConfigError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    StrictValue
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|error| ExposureConfigError::Syntax {
            file: file.to_owned(),
            reason: error.to_string(),
        })
}

/// Deserializes a `serde_json::Value`, failing on a repeated object key.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("the key {key:?} appears twice")));
            }
            let value = map.next_value_seed(StrictValue)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The shape of COVID Alert's published `CA.json`: v1 fields plus the apps' own extras.
    fn covid_alert_ca() -> Value {
        json!({
            "minimumRiskScore": 1,
            "attenuationDurationThresholds": [50, 62],
            "attenuationLevelValues": [1, 2, 3, 4, 5, 6, 7, 8],
            "attenuationWeight": 50,
            "daysSinceLastExposureLevelValues": [1, 2, 3, 4, 5, 6, 7, 8],
            "daysSinceLastExposureWeight": 50,
            "durationLevelValues": [1, 2, 3, 4, 5, 6, 7, 8],
            "durationWeight": 50,
            "transmissionRiskLevelValues": [1, 2, 3, 4, 5, 6, 7, 8],
            "transmissionRiskWeight": 50,
            "minimumExposureDurationMinutes": 15,
            "decommissioned": false,
            "steps": [
                {"id": "exposed", "title": {"en": "You were exposed", "fr": "Vous avez été exposé"}}
            ],
            "metadata": {"updated": "2021-06-01"}
        })
    }

    fn v2_config() -> Value {
        json!({
            "attenuationDurationThresholds": [50, 70, 90],
            "immediateDurationWeight": 150,
            "nearDurationWeight": 100,
            "mediumDurationWeight": 50,
            "otherDurationWeight": 0,
            "infectiousnessForDaysSinceOnsetOfSymptoms": {
                "-14": 0, "-3": 1, "-2": 2, "0": 2, "5": 1, "14": 0, "unknown": 1
            },
            "infectiousnessStandardWeight": 100,
            "infectiousnessHighWeight": 250,
            "reportTypeConfirmedTestWeight": 100,
            "reportTypeConfirmedClinicalDiagnosisWeight": 100,
            "reportTypeSelfReportedWeight": 0,
            "reportTypeRecursiveWeight": 0,
            "reportTypeNoneMap": 1,
            "daysSinceLastExposureThreshold": 14,
            "minimumScore": 15
        })
    }

    fn with(mut base: Value, field: &str, value: Option<Value>) -> Value {
        let object = base.as_object_mut().unwrap();
        match value {
            Some(value) => object.insert(field.to_owned(), value),
            None => object.remove(field),
        };
        base
    }

    fn check(config: &Value, expected: Result<ConfigVersions, &str>) {
        let bytes = serde_json::to_vec(config).unwrap();
        let actual = check_exposure_config("CA.json", &bytes).map_err(|e| e.to_string());
        assert_eq!(actual, expected.map_err(str::to_owned), "config {config}");
    }

    #[test]
    fn covid_alert_shapes_pass() {
        check(&covid_alert_ca(), Ok(ConfigVersions::V1));
        check(&v2_config(), Ok(ConfigVersions::V2));
        let mut both = covid_alert_ca();
        both.as_object_mut()
            .unwrap()
            .extend(v2_config().as_object().unwrap().clone());
        check(&both, Ok(ConfigVersions::V1AndV2));
        // A dual file may keep the v1 thresholds.
        check(
            &with(both, "attenuationDurationThresholds", Some(json!([50, 62]))),
            Ok(ConfigVersions::V1AndV2),
        );
        // No thresholds at all: the platform defaults apply.
        check(
            &with(covid_alert_ca(), "attenuationDurationThresholds", None),
            Ok(ConfigVersions::V1),
        );
    }

    #[test]
    fn v1_rules() {
        let table: Vec<(&str, Option<Value>, &str)> = vec![
            (
                "minimumExposureDurationMinutes",
                None,
                "CA.json: minimumExposureDurationMinutes: required in a v1 configuration: \
                 without it the COVID Alert apps never notify anyone",
            ),
            (
                "minimumExposureDurationMinutes",
                Some(json!(-1)),
                "CA.json: minimumExposureDurationMinutes: must be a number of at least 0, got -1",
            ),
            (
                "minimumExposureDurationMinutes",
                Some(json!("15")),
                "CA.json: minimumExposureDurationMinutes: must be a number of at least 0, got \"15\"",
            ),
            (
                "attenuationLevelValues",
                Some(json!([1, 2, 3, 9, 5, 6, 7, 8])),
                "CA.json: attenuationLevelValues[3]: must be an integer from 0 to 8, got 9",
            ),
            (
                "attenuationLevelValues",
                Some(json!([1, 2, 3, 4, 5, 6, 7])),
                "CA.json: attenuationLevelValues: must have 8 values, got 7",
            ),
            (
                "durationLevelValues",
                Some(json!([1, 2, 3, 4, 5, 6, 7, 1.5])),
                "CA.json: durationLevelValues[7]: must be an integer from 0 to 8, got 1.5",
            ),
            (
                "transmissionRiskLevelValues",
                Some(json!({"0": 1})),
                "CA.json: transmissionRiskLevelValues: must be an array of 8 integers, got an object",
            ),
            (
                "daysSinceLastExposureLevelValues",
                None,
                "CA.json: daysSinceLastExposureLevelValues: required in a v1 configuration",
            ),
            (
                "durationWeight",
                Some(json!(101)),
                "CA.json: durationWeight: must be a number from 0 to 100, got 101",
            ),
            (
                "transmissionRiskWeight",
                None,
                "CA.json: transmissionRiskWeight: required in a v1 configuration",
            ),
            (
                "minimumRiskScore",
                Some(json!(4097)),
                "CA.json: minimumRiskScore: must be an integer from 0 to 4096, got 4097",
            ),
            (
                "minimumRiskScore",
                None,
                "CA.json: minimumRiskScore: required in a v1 configuration",
            ),
            (
                "attenuationDurationThresholds",
                Some(json!([50, 70, 90])),
                "CA.json: attenuationDurationThresholds: must have 2 values, got 3",
            ),
            (
                "attenuationDurationThresholds",
                Some(json!([62, 50])),
                "CA.json: attenuationDurationThresholds[1]: must be greater than \
                 attenuationDurationThresholds[0] (62), got 50",
            ),
            (
                "attenuationDurationThresholds",
                Some(json!([50, 256])),
                "CA.json: attenuationDurationThresholds[1]: must be an integer from 0 to 255, got 256",
            ),
        ];
        for (field, value, expected) in table {
            check(&with(covid_alert_ca(), field, value), Err(expected));
        }
        // Integral floats are integers on both platforms.
        check(
            &with(covid_alert_ca(), "minimumRiskScore", Some(json!(4.0))),
            Ok(ConfigVersions::V1),
        );
        check(
            &with(covid_alert_ca(), "attenuationWeight", Some(json!(12.5))),
            Ok(ConfigVersions::V1),
        );
    }

    #[test]
    fn v2_rules() {
        let table: Vec<(&str, Option<Value>, &str)> = vec![
            (
                "immediateDurationWeight",
                Some(json!(251)),
                "CA.json: immediateDurationWeight: must be a number from 0 to 250, got 251",
            ),
            (
                "reportTypeRecursiveWeight",
                Some(json!(-1)),
                "CA.json: reportTypeRecursiveWeight: must be a number from 0 to 250, got -1",
            ),
            (
                "infectiousnessHighWeight",
                Some(json!(null)),
                "CA.json: infectiousnessHighWeight: must be a number from 0 to 250, got null",
            ),
            (
                "attenuationDurationThresholds",
                Some(json!([50, 70])),
                "CA.json: attenuationDurationThresholds: must have 3 values, got 2",
            ),
            (
                "attenuationDurationThresholds",
                Some(json!([50, 70, 70])),
                "CA.json: attenuationDurationThresholds[2]: must be greater than \
                 attenuationDurationThresholds[1] (70), got 70",
            ),
            (
                "infectiousnessForDaysSinceOnsetOfSymptoms",
                Some(json!({"15": 1})),
                "CA.json: infectiousnessForDaysSinceOnsetOfSymptoms[\"15\"]: the key must be a \
                 day from -14 to 14 (written as an integer) or \"unknown\"",
            ),
            (
                "infectiousnessForDaysSinceOnsetOfSymptoms",
                Some(json!({"+1": 1})),
                "CA.json: infectiousnessForDaysSinceOnsetOfSymptoms[\"+1\"]: the key must be a \
                 day from -14 to 14 (written as an integer) or \"unknown\"",
            ),
            (
                "infectiousnessForDaysSinceOnsetOfSymptoms",
                Some(json!({"-2": 3})),
                "CA.json: infectiousnessForDaysSinceOnsetOfSymptoms[\"-2\"]: must be an integer \
                 from 0 to 2, got 3",
            ),
            (
                "infectiousnessForDaysSinceOnsetOfSymptoms",
                Some(json!([0, 1])),
                "CA.json: infectiousnessForDaysSinceOnsetOfSymptoms: must be an object from days \
                 since onset (\"-14\" to \"14\", or \"unknown\") to 0, 1 or 2, got an array of 2 values",
            ),
            (
                "reportTypeNoneMap",
                Some(json!(0)),
                "CA.json: reportTypeNoneMap: must be an integer from 1 to 4, got 0",
            ),
            (
                "reportTypeNoneMap",
                Some(json!(5)),
                "CA.json: reportTypeNoneMap: must be an integer from 1 to 4, got 5",
            ),
            (
                "daysSinceLastExposureThreshold",
                Some(json!(-1)),
                "CA.json: daysSinceLastExposureThreshold: must be an integer of at least 0, got -1",
            ),
            (
                "minimumScore",
                Some(json!(-0.5)),
                "CA.json: minimumScore: must be a number of at least 0, got -0.5",
            ),
            (
                "minimumRiskScore",
                Some(json!(-3)),
                "CA.json: minimumRiskScore: must be a number of at least 0, got -3",
            ),
        ];
        for (field, value, expected) in table {
            check(&with(v2_config(), field, value), Err(expected));
        }
        // Every v2 field is optional.
        check(
            &json!({"immediateDurationWeight": 100}),
            Ok(ConfigVersions::V2),
        );
    }

    #[test]
    fn errors_name_the_field() {
        let bytes = serde_json::to_vec(&with(
            covid_alert_ca(),
            "attenuationLevelValues",
            Some(json!([1, 2, 3, 9, 5, 6, 7, 8])),
        ))
        .unwrap();
        let error = validate_exposure_config("CA.json", &bytes).unwrap_err();
        assert_eq!(error.field(), Some("attenuationLevelValues[3]"));
        assert_eq!(
            error.to_string(),
            "CA.json: attenuationLevelValues[3]: must be an integer from 0 to 8, got 9"
        );
    }

    #[test]
    fn whole_file_problems() {
        fn check_bytes(name: &str, bytes: &[u8], expected: Result<ConfigVersions, &str>) {
            assert_eq!(
                check_exposure_config(name, bytes).map_err(|e| e.to_string()),
                expected.map_err(str::to_owned),
                "{name}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
        check_bytes(
            "CA.json",
            b"{\"minimumRiskScore\": 1,",
            Err("CA.json: not valid JSON: EOF while parsing a value at line 1 column 23"),
        );
        check_bytes(
            "CA.json",
            b"[1, 2]",
            Err("CA.json: an exposure configuration must be a JSON object"),
        );
        check_bytes(
            "CA.json",
            b"{\"decommissioned\": true}",
            Err("CA.json: no exposure configuration fields (neither v1 nor v2) found"),
        );
        check_bytes(
            "CA.json",
            b"{\"immediateDurationWeight\": 1, \"immediateDurationWeight\": 300}",
            Err(
                "CA.json: not valid JSON: the key \"immediateDurationWeight\" appears twice at \
                 line 1 column 56",
            ),
        );
        check_bytes(
            "CA.json",
            b"{\"immediateDurationWeight\": 1} trailing",
            Err("CA.json: not valid JSON: trailing characters at line 1 column 32"),
        );
        // region.json is only checked for syntax.
        check_bytes(
            "region.json",
            b"[\"anything\", {\"at\": 1}]",
            Ok(ConfigVersions::RegionContent),
        );
        check_bytes(
            "region.json",
            b"{\"Version\": 1,",
            Err("region.json: not valid JSON: EOF while parsing a value at line 1 column 14"),
        );
        for bad_name in [
            "CA",
            "CA.JSON",
            "../CA.json",
            "C A.json",
            ".json",
            "ca/on.json",
        ] {
            check_bytes(
                bad_name,
                b"{}",
                Err(&format!(
                    "{bad_name}: the file name must be 1 to 64 characters of [A-Za-z0-9_-] \
                     followed by .json"
                )),
            );
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        for bytes in [
            &b""[..],
            b"\xff\xfe",
            b"{\"attenuationLevelValues\": 1e999}",
            b"{\"minimumRiskScore\": 18446744073709551616}",
            b"{\"attenuationLevelValues\": [1e308, -1e308, 0, 0, 0, 0, 0, 0]}",
            &[b'['; 10_000],
        ] {
            assert!(validate_exposure_config("CA.json", bytes).is_err());
        }
    }
}
