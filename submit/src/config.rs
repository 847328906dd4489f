//! The submit service's configuration (DESIGN §6), read once from the
//! environment. Every error names the variable; secrets are never echoed.

use std::net::SocketAddr;

use diagnosis_core::config::{
    CommonConfig, ConfigError, Env, ListenerConfig, MetricProvider, TimeUnit, bool_var,
    duration_var, integer_var, optional, region_var, secret_optional, secret_required,
    socket_addr_var,
};
use diagnosis_core::domain::{DEFAULT_REGION, KeyClaimTokens};
use diagnosis_core::store::BanPolicy;
use diagnosis_core::store::submit_settings::{MAX_KEYPAIR_VALIDITY_DAYS, MAX_LIMIT_MINUTES};

use crate::client::{ForwardedFor, TrustedProxies};
use crate::state::{MetricsCredentials, Settings, Timeouts};

/// Everything `diagnosis-submit` reads from its environment.
#[derive(Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `BIND_ADDR`: the public API listener.
    pub bind_addr: SocketAddr,
    pub settings: Settings,
}

impl Config {
    pub const DEFAULT_BIND_ADDR: &str = "0.0.0.0:8000";

    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        let common = CommonConfig::from_env(env)?;
        let default_bind = Self::DEFAULT_BIND_ADDR
            .parse()
            .map_err(|_| ConfigError::new("BIND_ADDR", "invalid built-in default"))?;
        let bind_addr = socket_addr_var(env, "BIND_ADDR", default_bind)?;
        let settings = settings_from_env(env, &common)?;
        Ok(Config {
            common,
            bind_addr,
            settings,
        })
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
        let max_minutes = u64::try_from(MAX_LIMIT_MINUTES).unwrap_or(u64::MAX);
        let minutes = |name: &'static str, default: u64| -> Result<chrono::Duration, ConfigError> {
            let duration = duration_var(env, name, TimeUnit::Minutes, default, 1..=max_minutes)?;
            chrono::Duration::from_std(duration).map_err(|_| ConfigError::new(name, "is too large"))
        };
        Ok(SubmissionLimits {
            one_time_code_expiry: minutes("ONE_TIME_CODE_EXPIRY_MINUTES", 1440)?,
            encryption_key_validity_days: integer_var(
                env,
                "ENCRYPTION_KEY_VALIDITY_DAYS",
                15,
                1..=MAX_KEYPAIR_VALIDITY_DAYS,
            )?,
            claim_ban_duration: minutes("CLAIM_KEY_BAN_DURATION_MINUTES", 60)?,
        })
    }
}

/// `CLAIM_RECOVERY_MINUTES` (DESIGN §3.1): at least a minute, so that an app
/// that heard its answer has time to upload; at most a day, the default code
/// expiry, so that a patient whose answer was lost gets a new code the same day.
fn claim_recovery_var(env: &dyn Env) -> Result<chrono::Duration, ConfigError> {
    const NAME: &str = "CLAIM_RECOVERY_MINUTES";
    let wait = duration_var(env, NAME, TimeUnit::Minutes, 10, 1..=1440)?;
    chrono::Duration::from_std(wait).map_err(|_| ConfigError::new(NAME, "is too large"))
}

fn settings_from_env(env: &dyn Env, common: &CommonConfig) -> Result<Settings, ConfigError> {
    let key_claim_tokens = secret_required(env, "KEY_CLAIM_TOKEN", KeyClaimTokens::parse)?;
    let region = region_var(env, "REGION", DEFAULT_REGION)?;
    let cors: String = optional(env, "CORS_ALLOW_ORIGIN", "*".to_owned())?;
    let cors_allow_origin = http::HeaderValue::from_str(&cors).map_err(|_| {
        ConfigError::new(
            "CORS_ALLOW_ORIGIN",
            "must be a valid header value such as * or https://portal.example",
        )
    })?;
    let metrics_credentials = metrics_credentials_var(env)?;
    let limits = SubmissionLimits::from_env(env)?;
    let listener = ListenerConfig::from_env(env)?;
    Ok(Settings {
        key_claim_tokens,
        region,
        forwarded_for: forwarded_for_var(env)?,
        initial_remaining_keys: integer_var(env, "INITIAL_REMAINING_KEYS", 43, 1..=1000)?,
        one_time_code_expiry: limits.one_time_code_expiry,
        encryption_key_validity_days: limits.encryption_key_validity_days,
        ban: BanPolicy {
            max_failures: integer_var(env, "MAX_CONSECUTIVE_CLAIM_KEY_FAILURES", 50, 1..=10_000)?,
            ban_duration: limits.claim_ban_duration,
        },
        claim_recovery: claim_recovery_var(env)?,
        claim_queue_wait: common.database_connect_timeout,
        cors_allow_origin,
        metrics_credentials,
        max_connections: listener.max_connections,
        statement_timeout: common.database_statement_timeout,
        timeouts: Timeouts {
            header_read: listener.read_timeout,
            body_read: listener.read_timeout,
            write: listener.write_timeout,
            shutdown_grace: duration_var(
                env,
                "SHUTDOWN_GRACE_SECONDS",
                TimeUnit::Seconds,
                20,
                0..=600,
            )?,
        },
    })
}

/// `METRICS_USERNAME` and `METRICS_PASSWORD`: both or neither.
fn metrics_credentials_var(env: &dyn Env) -> Result<Option<MetricsCredentials>, ConfigError> {
    let username = secret_optional(env, "METRICS_USERNAME", non_empty)?;
    let password = secret_optional(env, "METRICS_PASSWORD", non_empty)?;
    match (username, password) {
        (Some(username), Some(password)) => Ok(Some(MetricsCredentials { username, password })),
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
    let one_hop = bool_var(env, "TRUST_X_FORWARDED_FOR", false)?;
    let list: String = optional(env, "TRUSTED_PROXIES", String::new())?;
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
    use diagnosis_core::config::MapEnv;

    const TOKEN: &str = "abcdefghijklmnopqrstuvwxyz0123";

    fn env(extra: &[(&str, &str)]) -> MapEnv {
        MapEnv::new([
            ("DATABASE_URL", "postgres://u:secret@localhost/db"),
            ("KEY_CLAIM_TOKEN", "abcdefghijklmnopqrstuvwxyz0123=ON"),
        ])
        .with(extra)
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
