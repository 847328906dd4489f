//! The submit service's configuration (DESIGN §6), read once from the
//! environment. Every error names the variable; secrets are never echoed.

use std::net::SocketAddr;

use diagnosis_core::config::{
    BoolVar, CommonConfig, ConfigError, DurationVar, Env, IntVar, ListenerConfig, MetricProvider,
    TextVar, TimeUnit, VarSchema, optional, region_var, secret_optional, secret_required,
};
use diagnosis_core::domain::{DEFAULT_REGION, KeyClaimTokens};
use diagnosis_core::redacted::Redacted;
use diagnosis_core::store::BanPolicy;
use diagnosis_core::store::submit_settings::{MAX_KEYPAIR_VALIDITY_DAYS, MAX_LIMIT_MINUTES};

use crate::client_ip::{ForwardedFor, TrustedProxies};
use crate::state::{MetricsCredentials, Settings, Timeouts};

/// Everything `diagnosis-submit` reads from its environment.
#[derive(Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `BIND_ADDR`: the public API listener.
    pub bind_addr: SocketAddr,
    pub settings: Settings,
}

/// The submit service's own variables: the parser reads them through these specs and
/// `diagnosis-submit config-schema` prints them.
pub mod vars {
    use super::*;

    pub const BIND_ADDR: TextVar = TextVar {
        name: "BIND_ADDR",
        default: Some("0.0.0.0:8000"),
        required: false,
        accepts: "an IP address and port",
    };
    pub const KEY_CLAIM_TOKEN: &str = "KEY_CLAIM_TOKEN";
    pub const REGION: TextVar = TextVar {
        name: "REGION",
        default: Some(DEFAULT_REGION),
        required: false,
        accepts: "1 to 16 characters of A-Z, a-z, 0-9 or _",
    };
    pub const TRUST_X_FORWARDED_FOR: BoolVar = BoolVar {
        name: "TRUST_X_FORWARDED_FOR",
        default: false,
    };
    pub const TRUSTED_PROXIES: TextVar = TextVar {
        name: "TRUSTED_PROXIES",
        default: None,
        required: false,
        accepts: "comma-separated CIDRs or addresses, none holding every address",
    };
    pub const INITIAL_REMAINING_KEYS: IntVar<i32> = IntVar {
        name: "INITIAL_REMAINING_KEYS",
        default: 43,
        min: 1,
        max: 1000,
    };
    pub const ONE_TIME_CODE_EXPIRY: DurationVar =
        limit_minutes("ONE_TIME_CODE_EXPIRY_MINUTES", 1440);
    pub const ENCRYPTION_KEY_VALIDITY_DAYS: IntVar<u32> = IntVar {
        name: "ENCRYPTION_KEY_VALIDITY_DAYS",
        default: 15,
        min: 1,
        max: MAX_KEYPAIR_VALIDITY_DAYS,
    };
    pub const MAX_CONSECUTIVE_CLAIM_KEY_FAILURES: IntVar<u32> = IntVar {
        name: "MAX_CONSECUTIVE_CLAIM_KEY_FAILURES",
        default: 50,
        min: 1,
        max: 10_000,
    };
    pub const CLAIM_KEY_BAN_DURATION: DurationVar =
        limit_minutes("CLAIM_KEY_BAN_DURATION_MINUTES", 60);
    pub const CLAIM_RECOVERY: DurationVar = DurationVar {
        name: "CLAIM_RECOVERY_MINUTES",
        unit: TimeUnit::Minutes,
        default: 10,
        min: 1,
        max: 1440,
    };
    pub const CORS_ALLOW_ORIGIN: TextVar = TextVar {
        name: "CORS_ALLOW_ORIGIN",
        default: Some("*"),
        required: false,
        accepts: "a valid header value such as * or https://portal.example",
    };
    pub const METRICS_USERNAME: &str = "METRICS_USERNAME";
    pub const METRICS_PASSWORD: &str = "METRICS_PASSWORD";
    pub const SHUTDOWN_GRACE: DurationVar = DurationVar {
        name: "SHUTDOWN_GRACE_SECONDS",
        unit: TimeUnit::Seconds,
        default: 20,
        min: 0,
        max: 600,
    };

    /// A limit recorded in `submit_settings`: at most [`MAX_LIMIT_MINUTES`], a week.
    const fn limit_minutes(name: &'static str, default: u64) -> DurationVar {
        DurationVar {
            name,
            unit: TimeUnit::Minutes,
            default,
            min: 1,
            max: MAX_LIMIT_MINUTES.unsigned_abs(),
        }
    }
}

impl Config {
    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        let common = CommonConfig::from_env(env)?;
        let bind_addr = vars::BIND_ADDR.socket_addr(env)?;
        let settings = settings_from_env(env, &common)?;
        Ok(Config {
            common,
            bind_addr,
            settings,
        })
    }

    /// Every variable the service reads, with its default and accepted values.
    pub fn schema() -> Vec<VarSchema> {
        use vars::*;
        let mut schema = CommonConfig::schema();
        schema.extend([
            BIND_ADDR.schema(),
            VarSchema::secret(
                KEY_CLAIM_TOKEN,
                true,
                "token=label[:token=label…]; tokens 20 to 63 characters, labels at most 31",
            ),
            REGION.schema(),
            TRUST_X_FORWARDED_FOR.schema(),
            TRUSTED_PROXIES.schema(),
            INITIAL_REMAINING_KEYS.schema(),
            ONE_TIME_CODE_EXPIRY.schema(),
            ENCRYPTION_KEY_VALIDITY_DAYS.schema(),
            MAX_CONSECUTIVE_CLAIM_KEY_FAILURES.schema(),
            CLAIM_KEY_BAN_DURATION.schema(),
            CLAIM_RECOVERY.schema(),
            CORS_ALLOW_ORIGIN.schema(),
            VarSchema::secret(METRICS_USERNAME, false, "any non-empty text without ':'"),
            VarSchema::secret(METRICS_PASSWORD, false, "any non-empty text"),
        ]);
        schema.extend(ListenerConfig::schema());
        schema.push(SHUTDOWN_GRACE.schema());
        schema
    }

    /// Whether the internal listener (`METRICS_ADDR`) has anything to serve:
    /// Prometheus `/metrics` or the `/events/...` API. Otherwise it is not
    /// opened (DESIGN §3.4), so a submit service and an exporter started with
    /// the default `METRICS_ADDR` on one host both run.
    pub fn serves_internal_listener(&self) -> bool {
        let prometheus = match self.common.metric_provider {
            MetricProvider::Prometheus => true,
            MetricProvider::Stdout | MetricProvider::Pretty | MetricProvider::None => false,
        };
        prometheus || self.settings.metrics_credentials.is_some()
    }
}

/// The limits of codes, keypairs and claim bans (DESIGN §3.1–§3.2, §6). They are the submit
/// service's alone: each replica records them in `submit_settings`, where the exporter's
/// retention reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubmissionLimits {
    /// `ONE_TIME_CODE_EXPIRY_MINUTES` (default 1440, at most a week).
    one_time_code_expiry: chrono::Duration,
    /// `ENCRYPTION_KEY_VALIDITY_DAYS` (default 15, at most 20: counted from UTC midnight of the
    /// issue day, with retention on every exporter pass, no keypair outlives 21 days).
    encryption_key_validity_days: u32,
    /// `CLAIM_KEY_BAN_DURATION_MINUTES` (default 60, at most a week).
    claim_ban_duration: chrono::Duration,
}

impl SubmissionLimits {
    fn from_env(env: &dyn Env) -> Result<SubmissionLimits, ConfigError> {
        Ok(SubmissionLimits {
            one_time_code_expiry: minutes(env, &vars::ONE_TIME_CODE_EXPIRY)?,
            encryption_key_validity_days: vars::ENCRYPTION_KEY_VALIDITY_DAYS.read(env)?,
            claim_ban_duration: minutes(env, &vars::CLAIM_KEY_BAN_DURATION)?,
        })
    }
}

/// `CLAIM_RECOVERY_MINUTES` (DESIGN §3.1): at least a minute, so that an app
/// that heard its answer has time to upload; at most a day, the default code
/// expiry, so that a patient whose answer was lost gets a new code the same day.
fn minutes(env: &dyn Env, var: &DurationVar) -> Result<chrono::Duration, ConfigError> {
    let duration = var.read(env)?;
    chrono::Duration::from_std(duration).map_err(|_| ConfigError::new(var.name, "is too large"))
}

fn settings_from_env(env: &dyn Env, common: &CommonConfig) -> Result<Settings, ConfigError> {
    let key_claim_tokens = secret_required(env, vars::KEY_CLAIM_TOKEN, KeyClaimTokens::parse)?;
    let region = region_var(env, vars::REGION.name, DEFAULT_REGION)?;
    let cors = &vars::CORS_ALLOW_ORIGIN;
    let origin: String = optional(env, cors.name, cors.default.unwrap_or_default().to_owned())?;
    let cors_allow_origin = http::HeaderValue::from_str(&origin)
        .map_err(|_| ConfigError::new(cors.name, format!("must be {}", cors.accepts)))?;
    let metrics_credentials = metrics_credentials_var(env)?;
    let limits = SubmissionLimits::from_env(env)?;
    let listener = ListenerConfig::from_env(env)?;
    Ok(Settings {
        key_claim_tokens,
        region,
        forwarded_for: forwarded_for_var(env)?,
        initial_remaining_keys: vars::INITIAL_REMAINING_KEYS.read(env)?,
        one_time_code_expiry: limits.one_time_code_expiry,
        encryption_key_validity_days: limits.encryption_key_validity_days,
        ban: BanPolicy {
            max_failures: vars::MAX_CONSECUTIVE_CLAIM_KEY_FAILURES.read(env)?,
            ban_duration: limits.claim_ban_duration,
        },
        claim_recovery: minutes(env, &vars::CLAIM_RECOVERY)?,
        claim_queue_wait: common.database_connect_timeout,
        cors_allow_origin,
        metrics_credentials,
        max_connections: listener.max_connections,
        statement_timeout: common.database_statement_timeout,
        timeouts: Timeouts {
            header_read: listener.read_timeout,
            body_read: listener.read_timeout,
            write: listener.write_timeout,
            shutdown_grace: vars::SHUTDOWN_GRACE.read(env)?,
        },
    })
}

/// `METRICS_USERNAME` and `METRICS_PASSWORD`: both or neither.
fn metrics_credentials_var(env: &dyn Env) -> Result<Option<MetricsCredentials>, ConfigError> {
    let username = secret_optional(env, vars::METRICS_USERNAME, basic_user_name)?;
    let password = secret_optional(env, vars::METRICS_PASSWORD, non_empty)?;
    match (username, password) {
        (Some(username), Some(password)) => Ok(Some(MetricsCredentials {
            username: Redacted::new(username),
            password: Redacted::new(password),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new(
            "METRICS_PASSWORD",
            "must be set when METRICS_USERNAME is",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "METRICS_USERNAME",
            "must be set when METRICS_PASSWORD is",
        )),
    }
}

/// `TRUST_X_FORWARDED_FOR` and `TRUSTED_PROXIES` (DESIGN §3.2). Both at once
/// would leave it unclear which proxies are believed, so that is refused.
fn forwarded_for_var(env: &dyn Env) -> Result<ForwardedFor, ConfigError> {
    let one_hop = vars::TRUST_X_FORWARDED_FOR.read(env)?;
    let list: String = optional(env, vars::TRUSTED_PROXIES.name, String::new())?;
    let trusted =
        TrustedProxies::parse(&list).map_err(|e| ConfigError::new("TRUSTED_PROXIES", e))?;
    match (one_hop, trusted) {
        (false, None) => Ok(ForwardedFor::Ignored),
        (true, None) => Ok(ForwardedFor::OneHop),
        (false, Some(trusted)) => Ok(ForwardedFor::TrustedProxies(trusted)),
        (true, Some(_)) => Err(ConfigError::new(
            "TRUSTED_PROXIES",
            "cannot be combined with TRUST_X_FORWARDED_FOR=true; list the proxies in \
             TRUSTED_PROXIES and set TRUST_X_FORWARDED_FOR=false",
        )),
    }
}

/// A user name HTTP Basic credentials can carry: they end it at the first `:` (RFC 7617), so
/// a name holding one could never be presented (DESIGN §6: every accepted value works).
fn basic_user_name(value: &str) -> Result<String, &'static str> {
    if value.contains(':') {
        return Err("must not contain ':', which ends the user name in HTTP Basic credentials");
    }
    non_empty(value)
}

fn non_empty(value: &str) -> Result<String, &'static str> {
    if value.is_empty() {
        Err("must not be empty")
    } else {
        Ok(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diagnosis_core::config::schema::range_violations;
    use diagnosis_core::config::{MapEnv, RecordingEnv};

    const TOKEN: &str = "abcdefghijklmnopqrstuvwxyz0123";

    fn env(extra: &[(&str, &str)]) -> MapEnv {
        MapEnv::new([
            ("DATABASE_URL", "postgres://u:secret@localhost/db"),
            ("KEY_CLAIM_TOKEN", "abcdefghijklmnopqrstuvwxyz0123=ON"),
        ])
        .with(extra)
    }

    /// HTTP Basic credentials end the user name at the first `:` (RFC 7617), so a
    /// `METRICS_USERNAME` holding one could never be presented: the events API would answer
    /// every request 401. It is refused at start, naming the variable.
    #[test]
    fn a_metrics_username_holding_a_colon_is_refused() {
        let error = Config::from_env(&env(&[
            ("METRICS_USERNAME", "ops:team"),
            ("METRICS_PASSWORD", "pw"),
        ]))
        .unwrap_err();
        assert_eq!(error.variable, "METRICS_USERNAME");
        assert!(error.message.contains("':'"), "{error}");
        assert!(!error.to_string().contains("ops:team"), "{error}");
        let config = Config::from_env(&env(&[
            ("METRICS_USERNAME", "ops"),
            ("METRICS_PASSWORD", "p:w"),
        ]))
        .unwrap();
        assert!(config.settings.metrics_credentials.is_some());
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = Config::from_env(&env(&[])).unwrap();
        let s = &config.settings;
        assert_eq!(config.bind_addr.to_string(), "0.0.0.0:8000");
        assert_eq!(s.region.as_str(), "302");
        assert_eq!(s.initial_remaining_keys, 43);
        assert_eq!(s.one_time_code_expiry, chrono::Duration::hours(24));
        assert_eq!(s.encryption_key_validity_days, 15);
        assert_eq!(s.ban.max_failures, 50);
        assert_eq!(s.ban.ban_duration, chrono::Duration::hours(1));
        assert_eq!(s.claim_recovery, chrono::Duration::minutes(10));
        assert_eq!(s.claim_queue_wait, std::time::Duration::from_secs(5));
        assert_eq!(s.cors_allow_origin, "*");
        assert_eq!(s.forwarded_for, ForwardedFor::Ignored);
        assert!(s.metrics_credentials.is_none());
        assert_eq!(s.max_connections, 4096);
        assert_eq!(s.timeouts.header_read, std::time::Duration::from_secs(10));
        assert_eq!(s.timeouts.body_read, std::time::Duration::from_secs(10));
        assert_eq!(s.timeouts.write, std::time::Duration::from_secs(10));
        assert!(!config.serves_internal_listener());
        assert_eq!(
            s.key_claim_tokens.authenticate(TOKEN).map(|l| l.as_str()),
            Some("ON")
        );
    }

    #[test]
    fn debug_shows_no_token_credential_or_database_password() {
        let config = Config::from_env(&env(&[
            ("METRICS_USERNAME", "ops-user-q7"),
            ("METRICS_PASSWORD", "metrics-pw-z9"),
        ]))
        .unwrap();
        let debug = format!("{config:?}");
        for secret in [TOKEN, "ops-user-q7", "metrics-pw-z9", "secret"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(
            debug.contains("MetricsCredentials { username: .., password: .. }"),
            "{debug}"
        );
        assert!(debug.contains("OriginatorLabel(\"ON\")"), "{debug}");
    }

    #[test]
    fn the_schema_lists_exactly_the_variables_the_parser_reads() {
        let vars = env(&[("METRICS_USERNAME", "ops"), ("METRICS_PASSWORD", "pw")]);
        let recording = RecordingEnv::new(&vars);
        Config::from_env(&recording).unwrap();
        let schema: std::collections::BTreeSet<String> = Config::schema()
            .iter()
            .map(|var| var.name.to_owned())
            .collect();
        assert_eq!(recording.asked(), schema);
    }

    #[test]
    fn the_schema_ranges_and_words_are_the_enforced_ones() {
        let violations = range_violations(&Config::schema(), &env(&[]), &|env| {
            Config::from_env(env).map(|_| ())
        });
        assert!(violations.is_empty(), "{violations:#?}");
    }

    #[test]
    fn each_invalid_variable_is_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("BIND_ADDR", "nowhere")], "BIND_ADDR"),
            (&[("KEY_CLAIM_TOKEN", "short=ON")], "KEY_CLAIM_TOKEN"),
            (&[("REGION", "3 0 2")], "REGION"),
            (
                &[("TRUST_X_FORWARDED_FOR", "maybe")],
                "TRUST_X_FORWARDED_FOR",
            ),
            (&[("INITIAL_REMAINING_KEYS", "0")], "INITIAL_REMAINING_KEYS"),
            (
                &[("ONE_TIME_CODE_EXPIRY_MINUTES", "x")],
                "ONE_TIME_CODE_EXPIRY_MINUTES",
            ),
            (
                &[("ENCRYPTION_KEY_VALIDITY_DAYS", "99")],
                "ENCRYPTION_KEY_VALIDITY_DAYS",
            ),
            (
                &[("MAX_CONSECUTIVE_CLAIM_KEY_FAILURES", "-1")],
                "MAX_CONSECUTIVE_CLAIM_KEY_FAILURES",
            ),
            (
                &[("CLAIM_KEY_BAN_DURATION_MINUTES", "0")],
                "CLAIM_KEY_BAN_DURATION_MINUTES",
            ),
            (&[("CLAIM_RECOVERY_MINUTES", "0")], "CLAIM_RECOVERY_MINUTES"),
            (
                &[("CLAIM_RECOVERY_MINUTES", "1441")],
                "CLAIM_RECOVERY_MINUTES",
            ),
            (
                &[("CLAIM_RECOVERY_MINUTES", "soon")],
                "CLAIM_RECOVERY_MINUTES",
            ),
            (&[("TRUSTED_PROXIES", "10.0.0.0/33")], "TRUSTED_PROXIES"),
            (&[("TRUSTED_PROXIES", "0.0.0.0/0")], "TRUSTED_PROXIES"),
            (&[("TRUSTED_PROXIES", "10.0.0.0/8,::/0")], "TRUSTED_PROXIES"),
            (
                &[("TRUSTED_PROXIES", "10.0.0.0/8,proxy")],
                "TRUSTED_PROXIES",
            ),
            (
                &[
                    ("TRUSTED_PROXIES", "10.0.0.0/8"),
                    ("TRUST_X_FORWARDED_FOR", "true"),
                ],
                "TRUSTED_PROXIES",
            ),
            (&[("CORS_ALLOW_ORIGIN", "bad\nvalue")], "CORS_ALLOW_ORIGIN"),
            (&[("METRICS_USERNAME", "ops")], "METRICS_PASSWORD"),
            (&[("METRICS_PASSWORD", "pw")], "METRICS_USERNAME"),
            (
                &[("HTTP_READ_TIMEOUT_SECONDS", "0")],
                "HTTP_READ_TIMEOUT_SECONDS",
            ),
            (
                &[("HTTP_WRITE_TIMEOUT_SECONDS", "0")],
                "HTTP_WRITE_TIMEOUT_SECONDS",
            ),
            (
                &[("HTTP_WRITE_TIMEOUT_SECONDS", "601")],
                "HTTP_WRITE_TIMEOUT_SECONDS",
            ),
            (&[("MAX_CONNECTIONS", "0")], "MAX_CONNECTIONS"),
            (&[("MAX_CONNECTIONS", "262145")], "MAX_CONNECTIONS"),
            (&[("MAX_CONNECTIONS", "many")], "MAX_CONNECTIONS"),
        ];
        for (vars, variable) in cases {
            let error = Config::from_env(&env(vars)).unwrap_err();
            assert!(
                error.to_string().starts_with(variable),
                "{vars:?}: expected an error naming {variable}, got {error}"
            );
        }
    }

    #[test]
    fn no_keypair_is_valid_past_twenty_days() {
        for (days, expected) in [("1", 1), ("20", 20)] {
            let config = Config::from_env(&env(&[("ENCRYPTION_KEY_VALIDITY_DAYS", days)])).unwrap();
            assert_eq!(config.settings.encryption_key_validity_days, expected);
        }
        for days in ["21", "30", "0"] {
            let error =
                Config::from_env(&env(&[("ENCRYPTION_KEY_VALIDITY_DAYS", days)])).unwrap_err();
            assert_eq!(error.variable, "ENCRYPTION_KEY_VALIDITY_DAYS");
            assert_eq!(
                error.message,
                format!("must be a whole number from 1 to 20, got \"{days}\"")
            );
        }
        for name in [
            "ONE_TIME_CODE_EXPIRY_MINUTES",
            "CLAIM_KEY_BAN_DURATION_MINUTES",
        ] {
            assert!(Config::from_env(&env(&[(name, "10080")])).is_ok(), "{name}");
            let error = Config::from_env(&env(&[(name, "10081")])).unwrap_err();
            assert_eq!(error.variable, name);
        }
    }

    #[test]
    fn the_recorded_limits_are_the_enforced_ones() {
        let config = Config::from_env(&env(&[
            ("ONE_TIME_CODE_EXPIRY_MINUTES", "90"),
            ("ENCRYPTION_KEY_VALIDITY_DAYS", "20"),
            ("CLAIM_KEY_BAN_DURATION_MINUTES", "120"),
            ("DATABASE_STATEMENT_TIMEOUT_MS", "7500"),
        ]))
        .unwrap();
        assert_eq!(
            config.settings.limits(),
            diagnosis_core::store::SubmitLimits {
                one_time_code_expiry: chrono::Duration::minutes(90),
                encryption_key_validity_days: 20,
                claim_ban_duration: chrono::Duration::minutes(120),
                statement_timeout: std::time::Duration::from_millis(7500),
            }
        );
    }

    #[test]
    fn forwarded_for_follows_the_two_variables() {
        let rule =
            |vars: &[(&str, &str)]| Config::from_env(&env(vars)).unwrap().settings.forwarded_for;
        assert_eq!(rule(&[("TRUSTED_PROXIES", "")]), ForwardedFor::Ignored);
        assert_eq!(
            rule(&[("TRUST_X_FORWARDED_FOR", "true")]),
            ForwardedFor::OneHop
        );
        assert_eq!(
            rule(&[("TRUST_X_FORWARDED_FOR", "true"), ("TRUSTED_PROXIES", " ")]),
            ForwardedFor::OneHop
        );
        assert_eq!(
            rule(&[("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1")]),
            ForwardedFor::TrustedProxies(
                TrustedProxies::parse("10.0.0.0/8,192.168.1.1")
                    .unwrap()
                    .unwrap()
            )
        );
    }

    #[test]
    fn claim_recovery_and_the_claim_queue_wait_are_read() {
        let config = Config::from_env(&env(&[
            ("CLAIM_RECOVERY_MINUTES", "1440"),
            ("DATABASE_CONNECT_TIMEOUT_SECONDS", "7"),
        ]))
        .unwrap();
        assert_eq!(config.settings.claim_recovery, chrono::Duration::days(1));
        assert_eq!(
            config.settings.claim_queue_wait,
            std::time::Duration::from_secs(7)
        );
        let config = Config::from_env(&env(&[("CLAIM_RECOVERY_MINUTES", "1")])).unwrap();
        assert_eq!(config.settings.claim_recovery, chrono::Duration::minutes(1));
    }

    #[test]
    fn the_write_timeout_is_read_in_seconds() {
        let config = Config::from_env(&env(&[("HTTP_WRITE_TIMEOUT_SECONDS", "2")])).unwrap();
        assert_eq!(
            config.settings.timeouts.write,
            std::time::Duration::from_secs(2)
        );
    }

    #[test]
    fn max_connections_is_read_within_its_range() {
        for (value, expected) in [("1", 1), ("50", 50), ("262144", 262_144)] {
            let config = Config::from_env(&env(&[("MAX_CONNECTIONS", value)])).unwrap();
            assert_eq!(config.settings.max_connections, expected, "{value}");
        }
    }

    #[test]
    fn the_internal_listener_is_opened_only_when_it_serves_something() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], false),
            (&[("METRIC_PROVIDER", "stdout")], false),
            (&[("METRIC_PROVIDER", "pretty")], false),
            (&[("METRIC_PROVIDER", "prometheus")], true),
            (
                &[("METRICS_USERNAME", "ops"), ("METRICS_PASSWORD", "pw")],
                true,
            ),
            (
                &[
                    ("METRIC_PROVIDER", "stdout"),
                    ("METRICS_USERNAME", "ops"),
                    ("METRICS_PASSWORD", "pw"),
                ],
                true,
            ),
        ];
        for (vars, expected) in cases {
            let config = Config::from_env(&env(vars)).unwrap();
            assert_eq!(config.serves_internal_listener(), *expected, "{vars:?}");
        }
    }

    #[test]
    fn missing_token_is_named_and_secrets_are_not_echoed() {
        let mut vars = env(&[]);
        vars.remove("KEY_CLAIM_TOKEN");
        let error = Config::from_env(&vars).unwrap_err().to_string();
        assert!(error.starts_with("KEY_CLAIM_TOKEN"), "{error}");

        let leaked = "tooshort=ON";
        let error = Config::from_env(&env(&[("KEY_CLAIM_TOKEN", leaked)]))
            .unwrap_err()
            .to_string();
        assert!(!error.contains("tooshort"), "{error}");
    }
}
