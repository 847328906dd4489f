//! Reading configuration from the environment (DESIGN §6).
//!
//! Every binary builds one typed config once at start from an [`Env`]. The helpers here turn a
//! missing or malformed variable into a [`ConfigError`] whose message starts with the variable's
//! name and says what was wrong, so an operator can fix a deployment from the first log line.
//! [`CommonConfig`] holds the variables that `submit` and `exporter` share; each binary adds its own
//! on top with the same helpers.
//!
//! This module must never echo a secret: values read through [`secret_required`] /
//! [`secret_optional`] and the `DATABASE_URL` (which carries the database password) never appear
//! in an error or in a `Debug` rendering. It reads the environment and nothing else: no files, no
//! network.

use std::collections::HashMap;
use std::fmt;
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

pub mod schema;

pub use schema::{BoolVar, ChoiceVar, DurationVar, IntVar, RecordingEnv, TextVar, VarSchema};

/// How many characters of a rejected (non-secret) value an error message quotes.
const MAX_QUOTED_CHARS: usize = 80;

/// A configuration variable that is missing or invalid.
///
/// `Display` is `"{variable}: {message}"`, so the first word of the message is always the
/// variable to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable that is wrong, e.g. `DATABASE_POOL_SIZE`.
    pub variable: &'static str,
    /// What is wrong with it, e.g. `must be a whole number from 1 to 1000, got "abc"`.
    pub message: String,
}

impl ConfigError {
    /// An error about `variable`.
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }

    fn missing(variable: &'static str) -> Self {
        Self::new(variable, "is required but not set")
    }
}

/// A source of configuration variables.
///
/// An empty value counts as unset everywhere, so `FOO=` in an env file behaves like leaving
/// `FOO` out (and picks the default).
pub trait Env {
    /// The value of `name`, or `None` when it is unset or empty.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
///
/// A value that is not valid UTF-8 is read lossily: the replacement characters it then
/// contains make every parser here reject it with a message naming the variable, instead of the
/// variable silently counting as unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        let value = std::env::var_os(name)?;
        let value = value.to_string_lossy().into_owned();
        (!value.is_empty()).then_some(value)
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .filter(|value| !value.is_empty())
            .cloned()
    }
}

/// A fixed set of variables, for tests and for tools that build a config without touching the
/// process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapEnv(HashMap<String, String>);

impl MapEnv {
    /// An environment holding exactly `vars`.
    pub fn new<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self(
            vars.into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        )
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    /// The same variables with `overrides` set on top (tests build variants this way).
    pub fn with(mut self, overrides: &[(&str, &str)]) -> Self {
        for (name, value) in overrides {
            self.set(*name, *value);
        }
        self
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }
}

impl Env for MapEnv {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|value| !value.is_empty()).cloned()
    }
}

/// Quotes a rejected non-secret value for an error message, shortened so that a pasted file
/// cannot flood the log.
fn quoted(value: &str) -> String {
    if value.chars().count() <= MAX_QUOTED_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{head:?}…")
    }
}

/// A required variable, parsed with `FromStr`.
///
/// The error quotes the rejected value and the parser's own message; do not use this for secrets
/// (see [`secret_required`]).
pub fn required<T>(env: &dyn Env, name: &'static str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    let value = env.get(name).ok_or_else(|| ConfigError::missing(name))?;
    parse_value(name, &value)
}

/// An optional variable, parsed with `FromStr`; `default` when unset.
pub fn optional<T>(env: &dyn Env, name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    Ok(optional_opt(env, name)?.unwrap_or(default))
}

/// An optional variable without a default: `None` when unset.
pub fn optional_opt<T>(env: &dyn Env, name: &'static str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    env.get(name)
        .map(|value| parse_value(name, &value))
        .transpose()
}

fn parse_value<T>(name: &'static str, value: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    value
        .parse()
        .map_err(|err| ConfigError::new(name, format!("invalid value {}: {err}", quoted(value))))
}

/// A whole number in `range`; `default` when unset.
///
/// The error reads `must be a whole number from 1 to 1000, got "abc"`.
pub fn integer_var<T>(
    env: &dyn Env,
    name: &'static str,
    default: T,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display,
{
    match env.get(name) {
        None => Ok(default),
        Some(value) => parse_integer(name, &value, &range, ""),
    }
}

fn parse_integer<T>(
    name: &'static str,
    value: &str,
    range: &RangeInclusive<T>,
    unit: &str,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Display,
{
    match value.parse::<T>() {
        Ok(number) if range.contains(&number) => Ok(number),
        _ => Err(ConfigError::new(
            name,
            format!(
                "must be a whole number{unit} from {} to {}, got {}",
                range.start(),
                range.end(),
                quoted(value)
            ),
        )),
    }
}

/// The unit a duration variable is written in; the variable's name says which (`…_MS`,
/// `…_SECONDS`, `…_MINUTES`, `…_DAYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// Minutes.
    Minutes,
    /// Hours.
    Hours,
    /// Days of 86 400 seconds.
    Days,
}

impl TimeUnit {
    fn name(self) -> &'static str {
        match self {
            Self::Milliseconds => "milliseconds",
            Self::Seconds => "seconds",
            Self::Minutes => "minutes",
            Self::Hours => "hours",
            Self::Days => "days",
        }
    }

    fn duration(self, count: u64) -> Duration {
        match self {
            Self::Milliseconds => Duration::from_millis(count),
            Self::Seconds => Duration::from_secs(count),
            Self::Minutes => Duration::from_secs(count.saturating_mul(60)),
            Self::Hours => Duration::from_secs(count.saturating_mul(3_600)),
            Self::Days => Duration::from_secs(count.saturating_mul(86_400)),
        }
    }
}

/// A duration written as a whole number of `unit`s within `range`; `default` (in `unit`s) when
/// unset.
///
/// The error reads `must be a whole number of milliseconds from 1 to 3600000, got "5s"`.
pub fn duration_var(
    env: &dyn Env,
    name: &'static str,
    unit: TimeUnit,
    default: u64,
    range: RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    let count = match env.get(name) {
        None => default,
        Some(value) => parse_integer(name, &value, &range, &format!(" of {}", unit.name()))?,
    };
    Ok(unit.duration(count))
}

/// A boolean: `true`/`false`, `1`/`0`, `yes`/`no`, in any case; `default` when unset.
pub fn bool_var(env: &dyn Env, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    let Some(value) = env.get(name) else {
        return Ok(default);
    };
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::new(
            name,
            format!(
                "must be true or false (or 1/0, yes/no), got {}",
                quoted(&value)
            ),
        )),
    }
}

/// A socket address such as `127.0.0.1:2222` or `[::1]:8000`; `default` when unset.
pub fn socket_addr_var(
    env: &dyn Env,
    name: &'static str,
    default: SocketAddr,
) -> Result<SocketAddr, ConfigError> {
    let Some(value) = env.get(name) else {
        return Ok(default);
    };
    value.parse().map_err(|_| {
        ConfigError::new(
            name,
            format!(
                "must be an IP address and port such as 0.0.0.0:8000 or [::1]:8000, got {}",
                quoted(&value)
            ),
        )
    })
}

/// One of a fixed set of words (compared case-insensitively); `None` when unset.
///
/// `choices` pairs each accepted word with its value; the error lists the words.
pub fn choice_var<T: Clone>(
    env: &dyn Env,
    name: &'static str,
    choices: &[(&str, T)],
) -> Result<Option<T>, ConfigError> {
    let Some(value) = env.get(name) else {
        return Ok(None);
    };
    let wanted = value.to_ascii_lowercase();
    choices
        .iter()
        .find(|(word, _)| word.eq_ignore_ascii_case(&wanted))
        .map(|(_, choice)| Some(choice.clone()))
        .ok_or_else(|| {
            let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
            ConfigError::new(
                name,
                format!(
                    "must be one of {} (or unset), got {}",
                    words.join(", "),
                    quoted(&value)
                ),
            )
        })
}

/// A required secret (a token, a password, a key), checked by `parse`.
///
/// The value is never echoed: `parse` returns a description of what is wrong (for example
/// `"must be 20 to 63 characters"`) and that description must not quote the value either. A
/// missing variable reads `is required but not set`.
pub fn secret_required<T, E, F>(
    env: &dyn Env,
    name: &'static str,
    parse: F,
) -> Result<T, ConfigError>
where
    F: FnOnce(&str) -> Result<T, E>,
    E: Display,
{
    secret_optional(env, name, parse)?.ok_or_else(|| ConfigError::missing(name))
}

/// An optional secret: `None` when unset; otherwise as [`secret_required`].
pub fn secret_optional<T, E, F>(
    env: &dyn Env,
    name: &'static str,
    parse: F,
) -> Result<Option<T>, ConfigError>
where
    F: FnOnce(&str) -> Result<T, E>,
    E: Display,
{
    let Some(value) = env.get(name) else {
        return Ok(None);
    };
    parse(&value).map(Some).map_err(|what| {
        ConfigError::new(name, format!("{what} (the value is secret and not shown)"))
    })
}

/// Where metrics go (`METRIC_PROVIDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricProvider {
    /// Served as Prometheus text on the internal listener's `/metrics`.
    Prometheus,
    /// A snapshot every 60 s on stdout, one JSON object per line.
    Stdout,
    /// A snapshot every 60 s on stdout as a readable table.
    Pretty,
    /// No metrics (the variable is unset): every metrics call is a no-op.
    #[default]
    None,
}

/// Where finished spans go (`TRACER_PROVIDER`); unset means nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracerProvider {
    /// One JSON line per closed span, with its timings, on stdout.
    Stdout,
    /// The same, pretty-printed.
    Pretty,
}

/// How logs are written to stderr (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// The default `RUST_LOG` filter.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// The configuration shared by `submit` and `exporter` (DESIGN §6, "Common").
#[derive(Clone, PartialEq, Eq)]
pub struct CommonConfig {
    /// `DATABASE_URL` (required): `postgres://` or `postgresql://`. Holds the database password.
    pub database_url: String,
    /// `DATABASE_POOL_SIZE`: connections per process, 1 to 1000, default 16.
    pub database_pool_size: usize,
    /// `DATABASE_STATEMENT_TIMEOUT_MS`: Postgres `statement_timeout` for every pooled
    /// connection, [`CommonConfig::MIN_STATEMENT_TIMEOUT_MS`] to 3 600 000 ms, default 5000.
    pub database_statement_timeout: Duration,
    /// `DATABASE_CONNECT_TIMEOUT_SECONDS`: bounds opening a connection (TCP, TLS and
    /// authentication), waiting for a pooled one, and paces TCP keepalive; 1 to 300 s, default 5.
    pub database_connect_timeout: Duration,
    /// `METRIC_PROVIDER`: `prometheus`, `stdout`, `pretty` or unset.
    pub metric_provider: MetricProvider,
    /// `METRICS_ADDR`: the internal listener (metrics and operational endpoints), default
    /// `127.0.0.1:2222`.
    pub metrics_addr: SocketAddr,
    /// `TRACER_PROVIDER`: `stdout`, `pretty` or unset.
    pub tracer_provider: Option<TracerProvider>,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// `RUST_LOG`: which logs and spans are recorded, in `tracing_subscriber::EnvFilter` syntax,
    /// default `info`.
    pub log_filter: String,
}

impl CommonConfig {
    /// Default `DATABASE_POOL_SIZE`.
    pub const DEFAULT_POOL_SIZE: usize = 16;
    /// Default `DATABASE_STATEMENT_TIMEOUT_MS`.
    pub const DEFAULT_STATEMENT_TIMEOUT_MS: u64 = 5_000;
    /// The shortest `DATABASE_STATEMENT_TIMEOUT_MS` that works (DESIGN §6: every accepted value
    /// works). A session may idle inside a transaction for twice the statement timeout, and that
    /// idle time includes the service's own work between statements (a keypair generated, a box
    /// opened) and any CPU starvation of its process, so a few milliseconds fail requests at
    /// random; an upload may also wait up to a second behind the exporter's seal (DESIGN §4.2).
    pub const MIN_STATEMENT_TIMEOUT_MS: u64 = 1_000;
    /// Default `DATABASE_CONNECT_TIMEOUT_SECONDS`.
    pub const DEFAULT_CONNECT_TIMEOUT_SECONDS: u64 = 5;

    /// `DATABASE_URL`.
    pub const DATABASE_URL: TextVar = TextVar {
        name: "DATABASE_URL",
        default: None,
        required: true,
        accepts: "a postgres:// or postgresql:// URL; sslmode and sslrootcert as in libpq",
    };
    /// `DATABASE_POOL_SIZE`.
    pub const POOL_SIZE: IntVar<usize> = IntVar {
        name: "DATABASE_POOL_SIZE",
        default: Self::DEFAULT_POOL_SIZE,
        min: 1,
        max: 1000,
    };
    /// `DATABASE_STATEMENT_TIMEOUT_MS`.
    pub const STATEMENT_TIMEOUT: DurationVar = DurationVar {
        name: "DATABASE_STATEMENT_TIMEOUT_MS",
        unit: TimeUnit::Milliseconds,
        default: Self::DEFAULT_STATEMENT_TIMEOUT_MS,
        min: Self::MIN_STATEMENT_TIMEOUT_MS,
        max: 3_600_000,
    };
    /// `DATABASE_CONNECT_TIMEOUT_SECONDS`.
    pub const CONNECT_TIMEOUT: DurationVar = DurationVar {
        name: "DATABASE_CONNECT_TIMEOUT_SECONDS",
        unit: TimeUnit::Seconds,
        default: Self::DEFAULT_CONNECT_TIMEOUT_SECONDS,
        min: 1,
        max: 300,
    };
    /// `METRIC_PROVIDER`.
    pub const METRIC_PROVIDER: ChoiceVar<MetricProvider> = ChoiceVar {
        name: "METRIC_PROVIDER",
        choices: &[
            ("prometheus", MetricProvider::Prometheus),
            ("stdout", MetricProvider::Stdout),
            ("pretty", MetricProvider::Pretty),
        ],
        default: None,
    };
    /// `METRICS_ADDR`.
    pub const METRICS_ADDR: TextVar = TextVar {
        name: "METRICS_ADDR",
        default: Some("127.0.0.1:2222"),
        required: false,
        accepts: "an IP address and port",
    };
    /// `TRACER_PROVIDER`.
    pub const TRACER_PROVIDER: ChoiceVar<TracerProvider> = ChoiceVar {
        name: "TRACER_PROVIDER",
        choices: &[
            ("stdout", TracerProvider::Stdout),
            ("pretty", TracerProvider::Pretty),
        ],
        default: None,
    };
    /// `LOG_FORMAT`.
    pub const LOG_FORMAT: ChoiceVar<LogFormat> = ChoiceVar {
        name: "LOG_FORMAT",
        choices: &[("json", LogFormat::Json), ("pretty", LogFormat::Pretty)],
        default: Some("json"),
    };
    /// `RUST_LOG`.
    pub const LOG_FILTER: TextVar = TextVar {
        name: "RUST_LOG",
        default: Some(DEFAULT_LOG_FILTER),
        required: false,
        accepts: "a tracing EnvFilter such as info or info,diagnosis_submit=debug",
    };

    /// Reads and checks every common variable.
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        Ok(Self {
            database_url: database_url_var(env, Self::DATABASE_URL.name)?,
            database_pool_size: Self::POOL_SIZE.read(env)?,
            database_statement_timeout: Self::STATEMENT_TIMEOUT.read(env)?,
            database_connect_timeout: Self::CONNECT_TIMEOUT.read(env)?,
            metric_provider: Self::METRIC_PROVIDER
                .read_or_default(env)?
                .unwrap_or_default(),
            metrics_addr: Self::METRICS_ADDR.socket_addr(env)?,
            tracer_provider: Self::TRACER_PROVIDER.read_or_default(env)?,
            log_format: Self::LOG_FORMAT.read_or_default(env)?.unwrap_or_default(),
            log_filter: log_filter_var(env, Self::LOG_FILTER.name)?,
        })
    }

    /// The specs of the common variables, in reading order.
    pub fn schema() -> Vec<VarSchema> {
        vec![
            Self::DATABASE_URL.schema(),
            Self::POOL_SIZE.schema(),
            Self::STATEMENT_TIMEOUT.schema(),
            Self::CONNECT_TIMEOUT.schema(),
            Self::METRIC_PROVIDER.schema(),
            Self::METRICS_ADDR.schema(),
            Self::TRACER_PROVIDER.schema(),
            Self::LOG_FORMAT.schema(),
            Self::LOG_FILTER.schema(),
        ]
    }
}

impl fmt::Debug for CommonConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonConfig")
            .field("database_url", &redact_database_url(&self.database_url))
            .field("database_pool_size", &self.database_pool_size)
            .field(
                "database_statement_timeout",
                &self.database_statement_timeout,
            )
            .field("database_connect_timeout", &self.database_connect_timeout)
            .field("metric_provider", &self.metric_provider)
            .field("metrics_addr", &self.metrics_addr)
            .field("tracer_provider", &self.tracer_provider)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .finish()
    }
}

/// A required PostgreSQL URL, with `sslmode` and `sslrootcert` read as libpq reads them
/// ([`crate::store::tls`]; the certificate file itself is read when the store is built). Errors
/// never quote the URL: it usually holds a password.
pub fn database_url_var(env: &dyn Env, name: &'static str) -> Result<String, ConfigError> {
    let url = env.get(name).ok_or_else(|| ConfigError::missing(name))?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::new(
            name,
            "must be a URL starting with postgres:// or postgresql:// \
             (the value is not shown: it may hold a password)",
        ));
    }
    crate::store::tls::DatabaseUrl::parse(&url).map_err(|message| {
        ConfigError::new(
            name,
            format!("{message} (the value is not shown: it may hold a password)"),
        )
    })?;
    Ok(url)
}

/// `RUST_LOG`, checked against the `EnvFilter` syntax; [`DEFAULT_LOG_FILTER`] when unset.
pub fn log_filter_var(env: &dyn Env, name: &'static str) -> Result<String, ConfigError> {
    let filter = env
        .get(name)
        .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned());
    EnvFilter::builder()
        .with_regex(false)
        .parse(&filter)
        .map_err(|err| {
            ConfigError::new(
                name,
                format!(
                    "must be a filter such as \"info\" or \"info,diagnosis_submit=debug\", got {}: {err}",
                    quoted(&filter)
                ),
            )
        })?;
    Ok(filter)
}

/// A PostgreSQL URL with its password replaced by `***`, for `Debug` output and logs.
///
/// Mirrors how `tokio_postgres` reads a URL: the credentials are everything before the first
/// `@`, the password everything after the first `:` in them; a `password=` query parameter is
/// masked too.
pub fn redact_database_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let rest = match rest.split_once('@') {
        Some((credentials, host_and_more)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host_and_more}"),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

/// A region code (`REGION`, `EXPORT_REGION`): 1 to 16 characters of
/// `[A-Za-z0-9_]`; `default` when unset.
pub fn region_var(
    env: &dyn Env,
    name: &'static str,
    default: &str,
) -> Result<crate::domain::Region, ConfigError> {
    let value: String = optional(env, name, default.to_owned())?;
    crate::domain::Region::parse(&value)
        .ok_or_else(|| ConfigError::new(name, "must be 1 to 16 characters of A-Z, a-z, 0-9 or _"))
}

/// The bounds of every HTTP listener of both binaries (DESIGN §3.4, §6): the
/// submit service's public and internal listeners and the scheduled exporter's
/// internal one are capped and timed by the same three variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerConfig {
    /// `MAX_CONNECTIONS`: open connections each listener holds at most
    /// (default 4096); further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// `HTTP_READ_TIMEOUT_SECONDS`: time a client gets to send its request head,
    /// and again its body; also the longest a connection may sit idle (default 10).
    pub read_timeout: Duration,
    /// `HTTP_WRITE_TIMEOUT_SECONDS`: the longest a response write may make no
    /// progress before its connection is closed (default 10).
    pub write_timeout: Duration,
}

impl ListenerConfig {
    /// Default `MAX_CONNECTIONS`.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    /// The largest `MAX_CONNECTIONS`: each connection costs a file descriptor and
    /// some memory, and more than this is a typo rather than a plan.
    pub const MAX_CONNECTIONS_LIMIT: usize = 262_144;
    /// Default `HTTP_READ_TIMEOUT_SECONDS`.
    pub const DEFAULT_READ_TIMEOUT_SECONDS: u64 = 10;
    /// Default `HTTP_WRITE_TIMEOUT_SECONDS`.
    pub const DEFAULT_WRITE_TIMEOUT_SECONDS: u64 = 10;

    /// `MAX_CONNECTIONS`.
    pub const MAX_CONNECTIONS: IntVar<usize> = IntVar {
        name: "MAX_CONNECTIONS",
        default: Self::DEFAULT_MAX_CONNECTIONS,
        min: 1,
        max: Self::MAX_CONNECTIONS_LIMIT,
    };
    /// `HTTP_READ_TIMEOUT_SECONDS`.
    pub const READ_TIMEOUT: DurationVar = DurationVar {
        name: "HTTP_READ_TIMEOUT_SECONDS",
        unit: TimeUnit::Seconds,
        default: Self::DEFAULT_READ_TIMEOUT_SECONDS,
        min: 1,
        max: 300,
    };
    /// `HTTP_WRITE_TIMEOUT_SECONDS`. A client on a bad mobile link may stall for some seconds;
    /// ten minutes without a single byte taken is a client that is not reading.
    pub const WRITE_TIMEOUT: DurationVar = DurationVar {
        name: "HTTP_WRITE_TIMEOUT_SECONDS",
        unit: TimeUnit::Seconds,
        default: Self::DEFAULT_WRITE_TIMEOUT_SECONDS,
        min: 1,
        max: 600,
    };

    pub fn from_env(env: &dyn Env) -> Result<ListenerConfig, ConfigError> {
        Ok(ListenerConfig {
            max_connections: Self::MAX_CONNECTIONS.read(env)?,
            read_timeout: Self::READ_TIMEOUT.read(env)?,
            write_timeout: Self::WRITE_TIMEOUT.read(env)?,
        })
    }

    /// The specs of the listener variables, in reading order.
    pub fn schema() -> Vec<VarSchema> {
        vec![
            Self::MAX_CONNECTIONS.schema(),
            Self::READ_TIMEOUT.schema(),
            Self::WRITE_TIMEOUT.schema(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://diagnosis:s3cr3t-pw@db.internal:5432/diagnosis";

    fn env(vars: &[(&str, &str)]) -> MapEnv {
        let mut env = MapEnv::new([("DATABASE_URL", URL)]);
        for (name, value) in vars {
            env.set(*name, *value);
        }
        env
    }

    #[test]
    fn defaults() {
        let config = CommonConfig::from_env(&env(&[])).unwrap();
        assert_eq!(config.database_url, URL);
        assert_eq!(config.database_pool_size, 16);
        assert_eq!(config.database_statement_timeout, Duration::from_secs(5));
        assert_eq!(config.database_connect_timeout, Duration::from_secs(5));
        assert_eq!(config.metric_provider, MetricProvider::None);
        assert_eq!(
            config.metrics_addr,
            "127.0.0.1:2222".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.tracer_provider, None);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.log_filter, "info");
    }

    #[test]
    fn every_variable_is_read() {
        let config = CommonConfig::from_env(&env(&[
            ("DATABASE_URL", "postgresql://u@localhost/db"),
            ("DATABASE_POOL_SIZE", "1000"),
            ("DATABASE_STATEMENT_TIMEOUT_MS", "1250"),
            ("DATABASE_CONNECT_TIMEOUT_SECONDS", "300"),
            ("METRIC_PROVIDER", "Prometheus"),
            ("METRICS_ADDR", "[::1]:9000"),
            ("TRACER_PROVIDER", "pretty"),
            ("LOG_FORMAT", "PRETTY"),
            ("RUST_LOG", "warn,diagnosis_submit=debug"),
        ]))
        .unwrap();
        assert_eq!(config.database_url, "postgresql://u@localhost/db");
        assert_eq!(config.database_pool_size, 1000);
        assert_eq!(
            config.database_statement_timeout,
            Duration::from_millis(1250)
        );
        assert_eq!(config.database_connect_timeout, Duration::from_secs(300));
        assert_eq!(config.metric_provider, MetricProvider::Prometheus);
        assert_eq!(config.metrics_addr, "[::1]:9000".parse().unwrap());
        assert_eq!(config.tracer_provider, Some(TracerProvider::Pretty));
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.log_filter, "warn,diagnosis_submit=debug");
    }

    #[test]
    fn each_provider_word_is_accepted() {
        for (word, expected) in [
            ("prometheus", MetricProvider::Prometheus),
            ("stdout", MetricProvider::Stdout),
            ("pretty", MetricProvider::Pretty),
        ] {
            let config = CommonConfig::from_env(&env(&[("METRIC_PROVIDER", word)])).unwrap();
            assert_eq!(config.metric_provider, expected, "{word}");
        }
        let config = CommonConfig::from_env(&env(&[("TRACER_PROVIDER", "stdout")])).unwrap();
        assert_eq!(config.tracer_provider, Some(TracerProvider::Stdout));
        let config = CommonConfig::from_env(&env(&[("LOG_FORMAT", "json")])).unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
    }

    #[test]
    fn an_empty_value_counts_as_unset() {
        let config = CommonConfig::from_env(&env(&[
            ("DATABASE_POOL_SIZE", ""),
            ("METRIC_PROVIDER", ""),
            ("LOG_FORMAT", ""),
        ]))
        .unwrap();
        assert_eq!(config.database_pool_size, 16);
        assert_eq!(config.metric_provider, MetricProvider::None);
        assert_eq!(config.log_format, LogFormat::Json);

        let err = CommonConfig::from_env(&env(&[("DATABASE_URL", "")])).unwrap_err();
        assert_eq!(err.to_string(), "DATABASE_URL: is required but not set");
    }

    /// `(variable, value or None for unset, expected message)`.
    #[test]
    fn invalid_values_name_the_variable() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("DATABASE_URL", None, "is required but not set"),
            (
                "DATABASE_URL",
                Some("mysql://root:hunter2@db/x"),
                "must be a URL starting with postgres:// or postgresql:// \
                 (the value is not shown: it may hold a password)",
            ),
            (
                "DATABASE_URL",
                Some("postgres://root:hunter2@db:notaport/x"),
                "is not a valid PostgreSQL URL: invalid value for option `port` \
                 (the value is not shown: it may hold a password)",
            ),
            (
                "DATABASE_URL",
                Some("postgres://u:hunter2@db/x?sslmode=sometimes"),
                "sslmode must be one of disable, prefer, require, verify-ca, verify-full, \
                 got \"sometimes\" (the value is not shown: it may hold a password)",
            ),
            (
                "DATABASE_CONNECT_TIMEOUT_SECONDS",
                Some("0"),
                "must be a whole number of seconds from 1 to 300, got \"0\"",
            ),
            (
                "DATABASE_CONNECT_TIMEOUT_SECONDS",
                Some("5s"),
                "must be a whole number of seconds from 1 to 300, got \"5s\"",
            ),
            (
                "DATABASE_URL",
                Some("postgres://u:hunter2@db/x?hunter2=1"),
                "is not a valid PostgreSQL URL: check the user, host, port, database name and \
                 query parameters (the value is not shown: it may hold a password)",
            ),
            (
                "DATABASE_POOL_SIZE",
                Some("abc"),
                "must be a whole number from 1 to 1000, got \"abc\"",
            ),
            (
                "DATABASE_POOL_SIZE",
                Some("0"),
                "must be a whole number from 1 to 1000, got \"0\"",
            ),
            (
                "DATABASE_POOL_SIZE",
                Some("1001"),
                "must be a whole number from 1 to 1000, got \"1001\"",
            ),
            (
                "DATABASE_POOL_SIZE",
                Some("-1"),
                "must be a whole number from 1 to 1000, got \"-1\"",
            ),
            (
                "DATABASE_STATEMENT_TIMEOUT_MS",
                Some("5s"),
                "must be a whole number of milliseconds from 1000 to 3600000, got \"5s\"",
            ),
            (
                "DATABASE_STATEMENT_TIMEOUT_MS",
                Some("0"),
                "must be a whole number of milliseconds from 1000 to 3600000, got \"0\"",
            ),
            (
                "DATABASE_STATEMENT_TIMEOUT_MS",
                Some("999"),
                "must be a whole number of milliseconds from 1000 to 3600000, got \"999\"",
            ),
            (
                "METRIC_PROVIDER",
                Some("otlp"),
                "must be one of prometheus, stdout, pretty (or unset), got \"otlp\"",
            ),
            (
                "METRICS_ADDR",
                Some("localhost:2222"),
                "must be an IP address and port such as 0.0.0.0:8000 or [::1]:8000, \
                 got \"localhost:2222\"",
            ),
            (
                "METRICS_ADDR",
                Some("127.0.0.1"),
                "must be an IP address and port such as 0.0.0.0:8000 or [::1]:8000, \
                 got \"127.0.0.1\"",
            ),
            (
                "TRACER_PROVIDER",
                Some("jaeger"),
                "must be one of stdout, pretty (or unset), got \"jaeger\"",
            ),
            (
                "LOG_FORMAT",
                Some("text"),
                "must be one of json, pretty (or unset), got \"text\"",
            ),
        ];
        for (variable, value, message) in cases {
            let mut env = env(&[]);
            match value {
                Some(value) => env.set(*variable, *value),
                None => env.remove(variable),
            }
            let err = CommonConfig::from_env(&env).unwrap_err();
            assert_eq!(err.variable, *variable, "{variable}={value:?}");
            assert_eq!(err.message, *message, "{variable}={value:?}");
            assert!(
                err.to_string().starts_with(&format!("{variable}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn listener_bounds_have_their_defaults_and_ranges() {
        let defaults = ListenerConfig::from_env(&env(&[])).unwrap();
        assert_eq!(
            defaults,
            ListenerConfig {
                max_connections: 4096,
                read_timeout: Duration::from_secs(10),
                write_timeout: Duration::from_secs(10),
            }
        );
        let edges = ListenerConfig::from_env(&env(&[
            ("MAX_CONNECTIONS", "262144"),
            ("HTTP_READ_TIMEOUT_SECONDS", "300"),
            ("HTTP_WRITE_TIMEOUT_SECONDS", "600"),
        ]))
        .unwrap();
        assert_eq!(edges.max_connections, 262_144);
        assert_eq!(edges.read_timeout, Duration::from_secs(300));
        assert_eq!(edges.write_timeout, Duration::from_secs(600));
        let cases: &[(&str, &str, &str)] = &[
            (
                "MAX_CONNECTIONS",
                "0",
                "must be a whole number from 1 to 262144, got \"0\"",
            ),
            (
                "MAX_CONNECTIONS",
                "262145",
                "must be a whole number from 1 to 262144, got \"262145\"",
            ),
            (
                "HTTP_READ_TIMEOUT_SECONDS",
                "0",
                "must be a whole number of seconds from 1 to 300, got \"0\"",
            ),
            (
                "HTTP_WRITE_TIMEOUT_SECONDS",
                "0",
                "must be a whole number of seconds from 1 to 600, got \"0\"",
            ),
            (
                "HTTP_WRITE_TIMEOUT_SECONDS",
                "601",
                "must be a whole number of seconds from 1 to 600, got \"601\"",
            ),
            (
                "HTTP_WRITE_TIMEOUT_SECONDS",
                "10s",
                "must be a whole number of seconds from 1 to 600, got \"10s\"",
            ),
        ];
        for (variable, value, message) in cases {
            let err = ListenerConfig::from_env(&env(&[(variable, value)])).unwrap_err();
            assert_eq!(
                (err.variable, err.message.as_str()),
                (*variable, *message),
                "{variable}={value}"
            );
        }
    }

    #[test]
    fn an_invalid_log_filter_names_rust_log() {
        let err = CommonConfig::from_env(&env(&[("RUST_LOG", "info,[")])).unwrap_err();
        assert_eq!(err.variable, "RUST_LOG");
        assert!(
            err.to_string().starts_with("RUST_LOG: must be a filter"),
            "{err}"
        );
    }

    #[test]
    fn database_url_errors_never_echo_the_password() {
        for url in [
            "mysql://root:hunter2@db/x",
            "postgres://root:hunter2@db:notaport/x",
            "postgres://root:hunter2@db/x?hunter2=1",
            "postgres://root:hunter2@db/x?sslmode=hunter",
            "postgres://root:hunter2@db/x?sslmode=require&sslrootcert=system",
        ] {
            let err = CommonConfig::from_env(&env(&[("DATABASE_URL", url)])).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
    }

    #[test]
    fn debug_hides_the_database_password() {
        let config = CommonConfig::from_env(&env(&[])).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-pw"), "{debug}");
        assert!(
            debug.contains("postgres://diagnosis:***@db.internal:5432/diagnosis"),
            "{debug}"
        );
    }

    #[test]
    fn redact_database_url_masks_every_password() {
        let cases = [
            ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgresql://h:5432/db", "postgresql://h:5432/db"),
            (
                "postgres://u:p:w@h1:1,h2:2/db?sslmode=disable&password=pw2",
                "postgres://u:***@h1:1,h2:2/db?sslmode=disable&password=***",
            ),
            (
                "postgres://h/db?PASSWORD=pw",
                "postgres://h/db?PASSWORD=***",
            ),
            ("no scheme at all pw", "***"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_database_url(url), expected, "{url}");
        }
    }

    #[test]
    fn bool_var_accepts_the_usual_spellings() {
        let cases: &[(Option<&str>, Result<bool, &str>)] = &[
            (None, Ok(false)),
            (Some("true"), Ok(true)),
            (Some("TRUE"), Ok(true)),
            (Some("1"), Ok(true)),
            (Some("Yes"), Ok(true)),
            (Some("false"), Ok(false)),
            (Some("0"), Ok(false)),
            (Some("no"), Ok(false)),
            (
                Some("maybe"),
                Err("FLAG: must be true or false (or 1/0, yes/no), got \"maybe\""),
            ),
        ];
        for (value, expected) in cases {
            let env = MapEnv::new(value.map(|value| ("FLAG", value)));
            let got = bool_var(&env, "FLAG", false).map_err(|err| err.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{value:?}");
        }
    }

    #[test]
    fn required_and_optional_parse_with_from_str() {
        let env = MapEnv::new([("N", "7"), ("BAD", "x")]);
        assert_eq!(required::<u32>(&env, "N"), Ok(7));
        assert_eq!(
            required::<u32>(&env, "MISSING").unwrap_err().to_string(),
            "MISSING: is required but not set"
        );
        assert_eq!(
            required::<u32>(&env, "BAD").unwrap_err().to_string(),
            "BAD: invalid value \"x\": invalid digit found in string"
        );
        assert_eq!(optional::<u32>(&env, "MISSING", 3), Ok(3));
        assert_eq!(optional::<u32>(&env, "N", 3), Ok(7));
        assert_eq!(optional_opt::<u32>(&env, "MISSING"), Ok(None));
        assert_eq!(optional_opt::<u32>(&env, "N"), Ok(Some(7)));
        assert_eq!(
            optional_opt::<u32>(&env, "BAD").unwrap_err().variable,
            "BAD"
        );
    }

    #[test]
    fn integer_and_duration_helpers() {
        let env = MapEnv::new([("N", "43"), ("M", "90")]);
        assert_eq!(integer_var(&env, "N", 1u32, 1..=100), Ok(43));
        assert_eq!(integer_var(&env, "UNSET", 5u32, 1..=100), Ok(5));
        assert_eq!(
            duration_var(&env, "M", TimeUnit::Minutes, 60, 1..=1440),
            Ok(Duration::from_secs(90 * 60))
        );
        assert_eq!(
            duration_var(&env, "UNSET", TimeUnit::Days, 15, 1..=30),
            Ok(Duration::from_secs(15 * 86_400))
        );
        assert_eq!(
            duration_var(&env, "N", TimeUnit::Seconds, 600, 60..=3600)
                .unwrap_err()
                .to_string(),
            "N: must be a whole number of seconds from 60 to 3600, got \"43\""
        );
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let long = "x".repeat(1000);
        let env = MapEnv::new([("N", long.as_str())]);
        let err = integer_var(&env, "N", 1u32, 1..=10).unwrap_err();
        assert!(err.message.len() < 200, "{err}");
        assert!(err.message.ends_with('…'), "{err}");
    }

    #[test]
    fn secrets_are_never_echoed() {
        let check = |token: &str| {
            if (20..=63).contains(&token.len()) {
                Ok(token.to_owned())
            } else {
                Err("must be 20 to 63 characters")
            }
        };
        let env = MapEnv::new([
            ("TOKEN", "short-secret"),
            ("GOOD", "a-token-of-good-length"),
        ]);
        let err = secret_required(&env, "TOKEN", check).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TOKEN: must be 20 to 63 characters (the value is secret and not shown)"
        );
        assert!(!format!("{err:?}").contains("short-secret"));
        assert_eq!(
            secret_required(&env, "UNSET", check)
                .unwrap_err()
                .to_string(),
            "UNSET: is required but not set"
        );
        assert_eq!(
            secret_required(&env, "GOOD", check),
            Ok("a-token-of-good-length".to_owned())
        );
        assert_eq!(secret_optional(&env, "UNSET", check), Ok(None));
    }

    #[test]
    fn hash_map_env_treats_empty_as_unset() {
        let map: HashMap<String, String> = [
            ("A".to_owned(), "1".to_owned()),
            ("B".to_owned(), String::new()),
        ]
        .into();
        assert_eq!(Env::get(&map, "A"), Some("1".to_owned()));
        assert_eq!(Env::get(&map, "B"), None);
        assert_eq!(Env::get(&map, "C"), None);
    }
}
