//! The exporter's configuration (DESIGN §6), read once from the environment.
//! Every error names the variable; key material is never echoed.

use std::path::PathBuf;

use diagnosis_core::config::{
    CommonConfig, ConfigError, DurationVar, Env, IntVar, ListenerConfig, MetricProvider, TextVar,
    TimeUnit, VarSchema, optional, optional_opt, region_var,
};
use diagnosis_core::domain::{DEFAULT_EXPORT_REGION, DEFAULT_REGION, Region};
use diagnosis_format::render::{DEFAULT_MAX_KEYS_PER_FILE, PLATFORM_MAX_KEYS_PER_FILE, PartNumber};
use diagnosis_format::sign::{DEFAULT_KEY_ID, DEFAULT_KEY_VERSION, SigningKeys};

/// What one export pass does, independent of where it reads and writes.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// `REGION`: the region the submit service stores keys under (default `302`).
    pub key_region: Region,
    /// `EXPORT_REGION`: the region written into files and object keys (default `CA`).
    pub export_region: Region,
    /// `EXPORT_GRACE_SECONDS`: how long after its end an hour is closed (default 600).
    pub grace_seconds: i64,
    /// `MAX_KEYS_PER_FILE` (default 500 000, at most 750 000).
    pub max_keys_per_file: usize,
    /// `PAD_MIN_KEYS` (0 or unset: no padding).
    pub pad_min_keys: u64,
    /// `EXPOSURE_CONFIG_DIR`: exposure configurations to validate and publish.
    pub exposure_config_dir: Option<PathBuf>,
    /// `COMPAT_REGION_PATH`: the MCC in the deployed apps' retrieval path
    /// (`retrieve/{MCC}/…`, DESIGN §4.3), default `302`.
    pub compat_region_path: String,
    /// `DELETE_UNINDEXED_AFTER_HOURS`: how long an object that left the indexes stays in the
    /// bucket before it is deleted (default 24 h; 0 deletes it on the next pass), since phones
    /// and CDN caches may still hold an index that names it (DESIGN §4.2).
    pub delete_unindexed_after: chrono::Duration,
}

/// Everything `diagnosis-exporter` reads from its environment.
#[derive(Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `BUCKET_URL`: where files are published.
    pub bucket_url: String,
    /// `EXPORT_SCHEDULE`: six-field cron (seconds first), default every 5 minutes.
    pub schedule: String,
    pub settings: ExportSettings,
    /// `MAX_CONNECTIONS`, `HTTP_READ_TIMEOUT_SECONDS`, `HTTP_WRITE_TIMEOUT_SECONDS`:
    /// the bounds of the internal listener, the same variables and defaults as
    /// the submit service's listeners (DESIGN §3.4).
    pub listener: ListenerConfig,
    /// The submit service's variables set in this environment, which the exporter ignores
    /// ([`IGNORED_SUBMIT_VARIABLES`]); the binary warns about each.
    pub ignored_variables: Vec<&'static str>,
}

/// Variables an exporter of an earlier release read for its retention. They are the submit
/// service's settings alone (DESIGN §6): retention reads them from `submit_settings`, where its
/// replicas record them. An exporter whose environment still sets them starts all the same,
/// whatever their values, so that a rolling release needs no change of its configuration first.
/// The exporter's own variables: the parser reads them through these specs and
/// `diagnosis-exporter config-schema` prints them.
pub mod vars {
    use super::*;

    pub const REGION: TextVar = TextVar {
        name: "REGION",
        default: Some(DEFAULT_REGION),
        required: false,
        accepts: "1 to 16 characters of A-Z, a-z, 0-9 or _",
    };
    pub const EXPORT_REGION: TextVar = TextVar {
        name: "EXPORT_REGION",
        default: Some(DEFAULT_EXPORT_REGION),
        ..REGION
    };
    pub const EXPORT_GRACE_SECONDS: IntVar<i64> = IntVar {
        name: "EXPORT_GRACE_SECONDS",
        default: 600,
        min: MIN_EXPORT_GRACE_SECONDS,
        max: 86_400,
    };
    pub const MAX_KEYS_PER_FILE: IntVar<usize> = IntVar {
        name: "MAX_KEYS_PER_FILE",
        default: DEFAULT_MAX_KEYS_PER_FILE,
        min: 1,
        max: PLATFORM_MAX_KEYS_PER_FILE,
    };
    pub const PAD_MIN_KEYS: IntVar<u64> = IntVar {
        name: "PAD_MIN_KEYS",
        default: 0,
        min: 0,
        max: 1_000_000,
    };
    pub const EXPOSURE_CONFIG_DIR: TextVar = TextVar {
        name: "EXPOSURE_CONFIG_DIR",
        default: None,
        required: false,
        accepts: "a folder of exposure configurations (*.json)",
    };
    pub const COMPAT_REGION_PATH: TextVar = TextVar {
        name: "COMPAT_REGION_PATH",
        default: Some(DEFAULT_REGION),
        required: false,
        accepts: "the three-digit MCC the apps send, such as 302",
    };
    pub const DELETE_UNINDEXED_AFTER: DurationVar = DurationVar {
        name: "DELETE_UNINDEXED_AFTER_HOURS",
        unit: TimeUnit::Hours,
        default: 24,
        min: 0,
        max: MAX_DELETE_UNINDEXED_AFTER_HOURS,
    };
    pub const BUCKET_URL: TextVar = TextVar {
        name: "BUCKET_URL",
        default: None,
        required: true,
        accepts: "file://, s3://, gs://, az:// or memory:// URL",
    };
    pub const EXPORT_SCHEDULE: TextVar = TextVar {
        name: "EXPORT_SCHEDULE",
        default: Some(DEFAULT_SCHEDULE),
        required: false,
        accepts: "a six-field cron expression, seconds first, UTC",
    };
    pub const SIGNING_KEY_FILE: TextVar = TextVar {
        name: "SIGNING_KEY_FILE",
        default: None,
        required: true,
        accepts: "PEM key files, comma-separated, newest first, at most 10",
    };
    pub const SIGNING_KEY_VERSION: TextVar = TextVar {
        name: "SIGNING_KEY_VERSION",
        default: Some(DEFAULT_KEY_VERSION),
        required: false,
        accepts: "the keys' versions, comma-separated, in the same order",
    };
    pub const SIGNING_KEY_ID: TextVar = TextVar {
        name: "SIGNING_KEY_ID",
        default: Some(DEFAULT_KEY_ID),
        required: false,
        accepts: "the verification_key_id of every signature",
    };
}

pub const IGNORED_SUBMIT_VARIABLES: [&str; 3] = [
    "ONE_TIME_CODE_EXPIRY_MINUTES",
    "ENCRYPTION_KEY_VALIDITY_DAYS",
    "CLAIM_KEY_BAN_DURATION_MINUTES",
];

/// `SIGNING_KEY_FILE`, `SIGNING_KEY_VERSION`, `SIGNING_KEY_ID` as read, before
/// the files are opened (the `verify` command needs only the public halves).
#[derive(Debug, Clone)]
pub struct SigningConfig {
    pub key_files: String,
    pub versions: Option<String>,
    pub key_id: Option<String>,
}

impl SigningConfig {
    pub fn from_env(env: &dyn Env) -> Result<Option<SigningConfig>, ConfigError> {
        let Some(key_files) = optional_opt::<String>(env, vars::SIGNING_KEY_FILE.name)? else {
            return Ok(None);
        };
        Ok(Some(SigningConfig {
            key_files,
            versions: optional_opt(env, vars::SIGNING_KEY_VERSION.name)?,
            key_id: optional_opt(env, vars::SIGNING_KEY_ID.name)?,
        }))
    }

    /// Opens and parses the key files.
    pub fn load(&self) -> Result<SigningKeys, ConfigError> {
        SigningKeys::from_env_values(
            &self.key_files,
            self.versions.as_deref(),
            self.key_id.as_deref(),
        )
        .map_err(|e| ConfigError::new(vars::SIGNING_KEY_FILE.name, e.to_string()))
    }
}

pub const DEFAULT_SCHEDULE: &str = "0 */5 * * * *";

fn compat_region_path(env: &dyn Env) -> Result<String, ConfigError> {
    let var = &vars::COMPAT_REGION_PATH;
    let value: String = optional(env, var.name, DEFAULT_REGION.to_owned())?;
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            var.name,
            format!("must be {}", var.accepts),
        ))
    }
}

/// The longest `DELETE_UNINDEXED_AFTER_HOURS`: a file leaves the indexes 14 days after its
/// window, so a week more has it gone about 21 days after its window, the longest DESIGN §4.2
/// keeps personal data.
pub const MAX_DELETE_UNINDEXED_AFTER_HOURS: u64 = 7 * 24;

fn delete_unindexed_after(env: &dyn Env) -> Result<chrono::Duration, ConfigError> {
    let var = &vars::DELETE_UNINDEXED_AFTER;
    let delay = var.read(env)?;
    chrono::Duration::from_std(delay).map_err(|_| ConfigError::new(var.name, "is too large"))
}

/// The shortest `EXPORT_GRACE_SECONDS`: it must exceed the statement timeout, which is at least
/// [`CommonConfig::MIN_STATEMENT_TIMEOUT_MS`] (a second).
pub const MIN_EXPORT_GRACE_SECONDS: i64 = 2;

/// Refuses a `PAD_MIN_KEYS` whose padding alone may fill a day with more keys than
/// `MAX_KEYS_PER_FILE` parts of five-digit numbers hold: that day's file could never be
/// named, and its step would fail every pass (DESIGN §4.1 parts and padding, §6: every
/// accepted value works). A day holds its 24 hours' fake keys, each hour up to a quarter
/// more than `PAD_MIN_KEYS`.
fn check_padding_fits_in_parts(
    pad_min_keys: u64,
    max_keys_per_file: usize,
) -> Result<(), ConfigError> {
    let most_padded_day = 24 * (pad_min_keys + pad_min_keys / 4);
    let per_part = u64::try_from(max_keys_per_file).unwrap_or(u64::MAX);
    let parts = most_padded_day.div_ceil(per_part.max(1));
    if parts <= u64::from(PartNumber::MAX) {
        return Ok(());
    }
    Err(ConfigError::new(
        vars::PAD_MIN_KEYS.name,
        format!(
            "{pad_min_keys} may pad a day to {most_padded_day} keys, more than {} parts of \
             MAX_KEYS_PER_FILE={max_keys_per_file} keys can hold: raise MAX_KEYS_PER_FILE or \
             lower PAD_MIN_KEYS",
            PartNumber::MAX
        ),
    ))
}

impl ExportSettings {
    pub fn from_env(env: &dyn Env) -> Result<ExportSettings, ConfigError> {
        let max_keys = vars::MAX_KEYS_PER_FILE.read(env)?;
        let pad_min_keys = vars::PAD_MIN_KEYS.read(env)?;
        check_padding_fits_in_parts(pad_min_keys, max_keys)?;
        Ok(ExportSettings {
            key_region: region_var(env, vars::REGION.name, DEFAULT_REGION)?,
            export_region: region_var(env, vars::EXPORT_REGION.name, DEFAULT_EXPORT_REGION)?,
            grace_seconds: vars::EXPORT_GRACE_SECONDS.read(env)?,
            max_keys_per_file: max_keys,
            pad_min_keys,
            exposure_config_dir: optional_opt::<String>(env, vars::EXPOSURE_CONFIG_DIR.name)?
                .map(PathBuf::from),
            compat_region_path: compat_region_path(env)?,
            delete_unindexed_after: delete_unindexed_after(env)?,
        })
    }
}

/// The fewest pooled connections a pass works with: a pass holds its lock session for its
/// whole length, and meanwhile its upload step holds a fenced write (DESIGN §4.2) while its
/// render step reads the ledger or repairs a source under a fence of its own. The key streams
/// are sessions of their own outside the pool. With fewer, a step waits for a connection the
/// others hold for as long as a bucket write takes, and fails after
/// `DATABASE_CONNECT_TIMEOUT_SECONDS` (DESIGN §6: every accepted value works).
pub const MIN_DATABASE_POOL_SIZE: usize = 3;

fn check_pool_size(common: &CommonConfig) -> Result<(), ConfigError> {
    if common.database_pool_size < MIN_DATABASE_POOL_SIZE {
        return Err(ConfigError::new(
            "DATABASE_POOL_SIZE",
            format!(
                "must be at least {MIN_DATABASE_POOL_SIZE} for the exporter, got {}: a pass holds \
                 its lock session, a fenced write and a ledger read at once",
                common.database_pool_size
            ),
        ));
    }
    Ok(())
}

impl Config {
    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        let common = CommonConfig::from_env(env)?;
        check_pool_size(&common)?;
        let settings = ExportSettings::from_env(env)?;
        let statement_timeout_s =
            i64::try_from(common.database_statement_timeout.as_secs()).unwrap_or(i64::MAX);
        if settings.grace_seconds <= statement_timeout_s {
            return Err(ConfigError::new(
                "EXPORT_GRACE_SECONDS",
                format!(
                    "must exceed the statement timeout ({statement_timeout_s} s, DATABASE_STATEMENT_TIMEOUT_MS) so no late upload can write into a closed hour"
                ),
            ));
        }
        let bucket_url = diagnosis_core::config::required::<String>(env, vars::BUCKET_URL.name)?;
        Ok(Config {
            common,
            bucket_url,
            schedule: optional(env, vars::EXPORT_SCHEDULE.name, DEFAULT_SCHEDULE.to_owned())?,
            settings,
            listener: ListenerConfig::from_env(env)?,
            ignored_variables: IGNORED_SUBMIT_VARIABLES
                .into_iter()
                .filter(|name| env.get(name).is_some())
                .collect(),
        })
    }

    /// Whether the scheduled exporter opens its internal listener
    /// (`METRICS_ADDR`): only to serve Prometheus `/metrics` (DESIGN §3.4), so
    /// that it and a submit service started with the default `METRICS_ADDR`
    /// on one host both run.
    /// Every variable the exporter reads, with its default and accepted values.
    pub fn schema() -> Vec<VarSchema> {
        use vars::*;
        let mut schema: Vec<VarSchema> = CommonConfig::schema()
            .into_iter()
            .map(|var| match var.name {
                "DATABASE_POOL_SIZE" => var.with_min(MIN_DATABASE_POOL_SIZE as i64),
                _ => var,
            })
            .collect();
        schema.extend([
            REGION.schema(),
            EXPORT_REGION.schema(),
            EXPORT_GRACE_SECONDS.schema(),
            MAX_KEYS_PER_FILE.schema(),
            PAD_MIN_KEYS.schema(),
            EXPOSURE_CONFIG_DIR.schema(),
            COMPAT_REGION_PATH.schema(),
            DELETE_UNINDEXED_AFTER.schema(),
            BUCKET_URL.schema(),
            EXPORT_SCHEDULE.schema(),
        ]);
        schema.extend(ListenerConfig::schema());
        schema.extend(IGNORED_SUBMIT_VARIABLES.map(VarSchema::ignored));
        schema.extend([
            SIGNING_KEY_FILE.schema(),
            SIGNING_KEY_VERSION.schema(),
            SIGNING_KEY_ID.schema(),
        ]);
        schema
    }

    pub fn serves_internal_listener(&self) -> bool {
        match self.common.metric_provider {
            MetricProvider::Prometheus => true,
            MetricProvider::Stdout | MetricProvider::Pretty | MetricProvider::None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diagnosis_core::config::schema::range_violations;
    use diagnosis_core::config::{MapEnv, RecordingEnv};
    use std::time::Duration;

    fn env(extra: &[(&str, &str)]) -> MapEnv {
        MapEnv::new([
            ("DATABASE_URL", "postgres://u:secret@localhost/db"),
            ("BUCKET_URL", "memory://"),
        ])
        .with(extra)
    }

    #[test]
    fn the_schema_lists_exactly_the_variables_the_parser_reads() {
        let vars = env(&[("SIGNING_KEY_FILE", "/keys/a.pem")]);
        let recording = RecordingEnv::new(&vars);
        Config::from_env(&recording).unwrap();
        SigningConfig::from_env(&recording).unwrap();
        let schema: std::collections::BTreeSet<String> = Config::schema()
            .iter()
            .map(|var| var.name.to_owned())
            .collect();
        assert_eq!(recording.asked(), schema);
    }

    #[test]
    fn the_schema_ranges_and_words_are_the_enforced_ones() {
        // The longest grace and the shortest statement timeout, so each bound of one is
        // tried against an accepted value of the other.
        let base = env(&[
            ("EXPORT_GRACE_SECONDS", "86400"),
            ("DATABASE_STATEMENT_TIMEOUT_MS", "1000"),
        ]);
        let violations = range_violations(&Config::schema(), &base, &|env| {
            Config::from_env(env).map(|_| ())
        });
        assert!(violations.is_empty(), "{violations:#?}");
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = Config::from_env(&env(&[])).unwrap();
        let s = &config.settings;
        assert_eq!(s.key_region.as_str(), "302");
        assert_eq!(s.export_region.as_str(), "CA");
        assert_eq!(s.grace_seconds, 600);
        assert_eq!(s.max_keys_per_file, 500_000);
        assert_eq!(s.pad_min_keys, 0);
        assert_eq!(s.delete_unindexed_after, chrono::Duration::hours(24));
        assert_eq!(config.schedule, "0 */5 * * * *");
        assert!(s.exposure_config_dir.is_none());
        assert_eq!(config.listener.max_connections, 4096);
        assert_eq!(config.listener.read_timeout, Duration::from_secs(10));
        assert_eq!(config.listener.write_timeout, Duration::from_secs(10));
        assert!(!config.serves_internal_listener());
    }

    #[test]
    fn the_internal_listener_serves_only_prometheus() {
        for (provider, expected) in [("prometheus", true), ("stdout", false), ("pretty", false)] {
            let config = Config::from_env(&env(&[("METRIC_PROVIDER", provider)])).unwrap();
            assert_eq!(config.serves_internal_listener(), expected, "{provider}");
        }
        let config = Config::from_env(&env(&[
            ("HTTP_READ_TIMEOUT_SECONDS", "2"),
            ("HTTP_WRITE_TIMEOUT_SECONDS", "3"),
            ("MAX_CONNECTIONS", "4"),
        ]))
        .unwrap();
        assert_eq!(
            config.listener,
            ListenerConfig {
                max_connections: 4,
                read_timeout: Duration::from_secs(2),
                write_timeout: Duration::from_secs(3),
            }
        );
    }

    #[test]
    fn unindexed_objects_may_be_deleted_from_the_next_pass_to_a_week_later() {
        for (hours, expected) in [("0", 0), ("2", 2), ("168", 168)] {
            let config =
                Config::from_env(&env(&[("DELETE_UNINDEXED_AFTER_HOURS", hours)])).unwrap();
            assert_eq!(
                config.settings.delete_unindexed_after,
                chrono::Duration::hours(expected)
            );
        }
    }

    #[test]
    fn the_submit_services_limits_are_ignored_whatever_their_values() {
        let config = Config::from_env(&env(&[])).unwrap();
        assert!(config.ignored_variables.is_empty());
        let config = Config::from_env(&env(&[
            ("ONE_TIME_CODE_EXPIRY_MINUTES", "1440"),
            ("ENCRYPTION_KEY_VALIDITY_DAYS", "30"),
            ("CLAIM_KEY_BAN_DURATION_MINUTES", "soon"),
        ]))
        .unwrap();
        assert_eq!(config.ignored_variables, IGNORED_SUBMIT_VARIABLES);
    }

    /// A day's file holds its hours' fake keys in parts of `MAX_KEYS_PER_FILE`, named with
    /// five digits: padding that may need a 100 000th part is refused, naming `PAD_MIN_KEYS`,
    /// and the largest padding that fits is accepted.
    #[test]
    fn padding_that_may_need_more_parts_than_five_digits_name_is_refused() {
        for (pad, max_keys, accepted) in [
            ("3333", "1", true),
            ("3334", "1", false),
            ("1000000", "301", true),
            ("1000000", "300", false),
            ("1000000", "500000", true),
        ] {
            let result = Config::from_env(&env(&[
                ("PAD_MIN_KEYS", pad),
                ("MAX_KEYS_PER_FILE", max_keys),
            ]));
            match result {
                Ok(config) => {
                    assert!(accepted, "PAD_MIN_KEYS={pad} MAX_KEYS_PER_FILE={max_keys}");
                    assert_eq!(config.settings.pad_min_keys.to_string(), pad);
                }
                Err(error) => {
                    assert!(!accepted, "{pad} {max_keys}: {error}");
                    assert_eq!(error.variable, "PAD_MIN_KEYS");
                    assert!(error.message.contains("MAX_KEYS_PER_FILE"), "{error}");
                }
            }
        }
    }

    #[test]
    fn the_pool_holds_what_a_pass_holds_at_once() {
        for size in ["1", "2"] {
            let error = Config::from_env(&env(&[("DATABASE_POOL_SIZE", size)])).unwrap_err();
            assert_eq!(error.variable, "DATABASE_POOL_SIZE");
            assert_eq!(
                error.message,
                format!(
                    "must be at least 3 for the exporter, got {size}: a pass holds its lock \
                     session, a fenced write and a ledger read at once"
                )
            );
        }
        for (size, expected) in [("3", 3), ("4", 4), ("1000", 1000)] {
            let config = Config::from_env(&env(&[("DATABASE_POOL_SIZE", size)])).unwrap();
            assert_eq!(config.common.database_pool_size, expected);
        }
        let config = Config::from_env(&env(&[])).unwrap();
        assert_eq!(config.common.database_pool_size, 16);
    }

    #[test]
    fn the_shortest_statement_timeout_and_grace_are_accepted_together() {
        let config = Config::from_env(&env(&[
            ("EXPORT_GRACE_SECONDS", "2"),
            ("DATABASE_STATEMENT_TIMEOUT_MS", "1000"),
        ]))
        .unwrap();
        assert_eq!(config.settings.grace_seconds, MIN_EXPORT_GRACE_SECONDS);
        assert_eq!(
            config.common.database_statement_timeout,
            Duration::from_millis(CommonConfig::MIN_STATEMENT_TIMEOUT_MS)
        );
    }

    #[test]
    fn each_invalid_variable_is_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("EXPORT_REGION", "C A")], "EXPORT_REGION"),
            (&[("REGION", "")], "BUCKET_URL"),
            (&[("EXPORT_GRACE_SECONDS", "abc")], "EXPORT_GRACE_SECONDS"),
            (&[("EXPORT_GRACE_SECONDS", "5")], "EXPORT_GRACE_SECONDS"),
            (&[("EXPORT_GRACE_SECONDS", "1")], "EXPORT_GRACE_SECONDS"),
            (
                &[
                    ("EXPORT_GRACE_SECONDS", "1"),
                    ("DATABASE_STATEMENT_TIMEOUT_MS", "1000"),
                ],
                "EXPORT_GRACE_SECONDS",
            ),
            (
                &[
                    ("EXPORT_GRACE_SECONDS", "2"),
                    ("DATABASE_STATEMENT_TIMEOUT_MS", "999"),
                ],
                "DATABASE_STATEMENT_TIMEOUT_MS",
            ),
            (&[("MAX_KEYS_PER_FILE", "750001")], "MAX_KEYS_PER_FILE"),
            (&[("PAD_MIN_KEYS", "-1")], "PAD_MIN_KEYS"),
            (
                &[("PAD_MIN_KEYS", "3334"), ("MAX_KEYS_PER_FILE", "1")],
                "PAD_MIN_KEYS",
            ),
            (
                &[("PAD_MIN_KEYS", "1000000"), ("MAX_KEYS_PER_FILE", "300")],
                "PAD_MIN_KEYS",
            ),
            (&[("COMPAT_REGION_PATH", "30")], "COMPAT_REGION_PATH"),
            (
                &[("DELETE_UNINDEXED_AFTER_HOURS", "-1")],
                "DELETE_UNINDEXED_AFTER_HOURS",
            ),
            (
                &[("DELETE_UNINDEXED_AFTER_HOURS", "169")],
                "DELETE_UNINDEXED_AFTER_HOURS",
            ),
            (
                &[("DELETE_UNINDEXED_AFTER_HOURS", "1d")],
                "DELETE_UNINDEXED_AFTER_HOURS",
            ),
            (
                &[("HTTP_READ_TIMEOUT_SECONDS", "0")],
                "HTTP_READ_TIMEOUT_SECONDS",
            ),
            (
                &[("HTTP_WRITE_TIMEOUT_SECONDS", "0")],
                "HTTP_WRITE_TIMEOUT_SECONDS",
            ),
            (&[("MAX_CONNECTIONS", "0")], "MAX_CONNECTIONS"),
        ];
        for (vars, variable) in cases {
            let mut vars_env = env(vars);
            if *variable == "BUCKET_URL" {
                vars_env.remove("BUCKET_URL");
            }
            let error = Config::from_env(&vars_env).unwrap_err();
            assert!(error.to_string().starts_with(variable), "{vars:?}: {error}");
        }
    }
}
