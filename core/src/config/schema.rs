//! The specification of each configuration variable: its name, default and accepted values
//! (DESIGN §6).
//!
//! The parsers read a variable through its spec ([`IntVar::read`], [`DurationVar::read`],
//! [`ChoiceVar::read`], [`TextVar`]'s name and default), and each binary's `config-schema`
//! command prints the same specs as JSON, which `infra/dev/check-docs` compares with README's
//! configuration table. A default or range therefore exists once, where it is enforced.
//!
//! This module must never hold or print a value read from the environment: only the built-in
//! defaults and limits.

use std::fmt::Display;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use super::{
    ConfigError, Env, TimeUnit, bool_var, choice_var, duration_var, integer_var, socket_addr_var,
};

/// One variable as `config-schema` prints it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VarSchema {
    /// The environment variable, e.g. `DATABASE_POOL_SIZE`.
    pub name: &'static str,
    /// `integer`, `duration`, `choice`, `bool`, `text`, `secret` or `ignored`.
    pub kind: &'static str,
    /// Whether the binary refuses to start without it.
    pub required: bool,
    /// The value used when it is unset, as the documentation writes it (`None`: no value).
    pub default: Option<String>,
    /// The smallest accepted whole number (integers and durations).
    pub min: Option<i64>,
    /// The largest accepted whole number (integers and durations).
    pub max: Option<i64>,
    /// The unit of a duration: `milliseconds`, `seconds`, `minutes`, `hours` or `days`.
    pub unit: Option<&'static str>,
    /// The accepted words of a choice or a boolean.
    pub allowed: Vec<&'static str>,
    /// What a text or secret variable accepts, in words.
    pub accepts: Option<&'static str>,
}

impl VarSchema {
    fn new(name: &'static str, kind: &'static str) -> Self {
        Self {
            name,
            kind,
            required: false,
            default: None,
            min: None,
            max: None,
            unit: None,
            allowed: Vec::new(),
            accepts: None,
        }
    }

    /// The same variable with a different smallest value, for a binary that refuses less than
    /// the shared parser accepts (the exporter's `DATABASE_POOL_SIZE`).
    pub fn with_min(mut self, min: i64) -> Self {
        self.min = Some(min);
        self
    }

    /// A variable read only to warn that it is ignored.
    pub fn ignored(name: &'static str) -> Self {
        Self::new(name, "ignored")
    }

    /// A secret: required or not, never shown.
    pub fn secret(name: &'static str, required: bool, accepts: &'static str) -> Self {
        Self {
            required,
            accepts: Some(accepts),
            ..Self::new(name, "secret")
        }
    }
}

/// A boolean: `true`/`false`, `1`/`0`, `yes`/`no`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoolVar {
    pub name: &'static str,
    pub default: bool,
}

impl BoolVar {
    /// The value of the variable; its default when unset.
    pub fn read(&self, env: &dyn Env) -> Result<bool, ConfigError> {
        bool_var(env, self.name, self.default)
    }

    pub fn schema(&self) -> VarSchema {
        VarSchema {
            default: Some(self.default.to_string()),
            allowed: vec!["true", "false"],
            ..VarSchema::new(self.name, "bool")
        }
    }
}

/// A number written as its decimal digits, for the schema; every limit here fits an `i64`.
fn number<T: Display>(value: T) -> Option<i64> {
    value.to_string().parse().ok()
}

/// A whole-number variable within `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntVar<T: 'static> {
    pub name: &'static str,
    pub default: T,
    pub min: T,
    pub max: T,
}

impl<T> IntVar<T>
where
    T: FromStr + PartialOrd + Display + Copy,
{
    /// The value of the variable; its default when unset.
    pub fn read(&self, env: &dyn Env) -> Result<T, ConfigError> {
        integer_var(env, self.name, self.default, self.min..=self.max)
    }

    pub fn schema(&self) -> VarSchema {
        VarSchema {
            default: Some(self.default.to_string()),
            min: number(self.min),
            max: number(self.max),
            ..VarSchema::new(self.name, "integer")
        }
    }
}

/// A duration written as a whole number of `unit`s within `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationVar {
    pub name: &'static str,
    pub unit: TimeUnit,
    pub default: u64,
    pub min: u64,
    pub max: u64,
}

impl DurationVar {
    /// The value of the variable; its default when unset.
    pub fn read(&self, env: &dyn Env) -> Result<Duration, ConfigError> {
        duration_var(env, self.name, self.unit, self.default, self.min..=self.max)
    }

    pub fn schema(&self) -> VarSchema {
        VarSchema {
            default: Some(self.default.to_string()),
            min: number(self.min),
            max: number(self.max),
            unit: Some(self.unit.name()),
            ..VarSchema::new(self.name, "duration")
        }
    }
}

/// One of a fixed set of words; `default` names the value used when it is unset (`None`: the
/// feature is off).
#[derive(Debug, Clone, Copy)]
pub struct ChoiceVar<T: 'static> {
    pub name: &'static str,
    pub choices: &'static [(&'static str, T)],
    pub default: Option<&'static str>,
}

impl<T: Clone> ChoiceVar<T> {
    /// The chosen value; `None` when unset.
    pub fn read(&self, env: &dyn Env) -> Result<Option<T>, ConfigError> {
        choice_var(env, self.name, self.choices)
    }

    /// The chosen value, else the one `default` names; `None` when both are absent.
    pub fn read_or_default(&self, env: &dyn Env) -> Result<Option<T>, ConfigError> {
        Ok(self.read(env)?.or_else(|| {
            let default = self.default?;
            self.choices
                .iter()
                .find(|(word, _)| *word == default)
                .map(|(_, value)| value.clone())
        }))
    }

    pub fn schema(&self) -> VarSchema {
        VarSchema {
            default: self.default.map(str::to_owned),
            allowed: self.choices.iter().map(|(word, _)| *word).collect(),
            ..VarSchema::new(self.name, "choice")
        }
    }
}

/// A variable with a free-form value checked by its own parser: an address, a URL, a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextVar {
    pub name: &'static str,
    /// The value used when it is unset; `None` with `required: false` means off or empty.
    pub default: Option<&'static str>,
    pub required: bool,
    /// What the parser accepts, in words.
    pub accepts: &'static str,
}

impl TextVar {
    /// A socket address such as `127.0.0.1:2222`; the default when unset.
    pub fn socket_addr(&self, env: &dyn Env) -> Result<SocketAddr, ConfigError> {
        let default = self
            .default
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| ConfigError::new(self.name, "has no valid built-in default"))?;
        socket_addr_var(env, self.name, default)
    }

    pub fn schema(&self) -> VarSchema {
        VarSchema {
            default: self.default.map(str::to_owned),
            required: self.required,
            accepts: Some(self.accepts),
            ..VarSchema::new(self.name, "text")
        }
    }
}

/// An [`Env`] that records every variable asked for, so tests can hold a binary's schema to
/// exactly the variables its parser reads.
pub struct RecordingEnv<'a> {
    inner: &'a dyn Env,
    asked: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for RecordingEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingEnv")
            .field("asked", &self.asked())
            .finish_non_exhaustive()
    }
}

impl<'a> RecordingEnv<'a> {
    pub fn new(inner: &'a dyn Env) -> Self {
        Self {
            inner,
            asked: std::sync::Mutex::default(),
        }
    }

    /// Every variable asked for so far.
    pub fn asked(&self) -> std::collections::BTreeSet<String> {
        match self.asked.lock() {
            Ok(asked) => asked.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Env for RecordingEnv<'_> {
    fn get(&self, name: &str) -> Option<String> {
        match self.asked.lock() {
            Ok(mut asked) => asked.insert(name.to_owned()),
            Err(poisoned) => poisoned.into_inner().insert(name.to_owned()),
        };
        self.inner.get(name)
    }
}

/// The schema as the JSON `config-schema` prints: one object per variable, in reading order.
pub fn to_json(schema: &[VarSchema]) -> String {
    serde_json::to_string_pretty(schema).unwrap_or_else(|_| "[]".to_owned())
}

/// Where a binary's parser disagrees with its schema: for every integer and duration, the
/// smallest and largest value must be accepted and the values just outside refused with an
/// error naming the variable; every word of a choice or boolean must be accepted. `base` holds
/// the required variables; `parse` is the binary's whole configuration parser. Empty when they
/// agree (the binaries' tests assert that).
pub fn range_violations(
    schema: &[VarSchema],
    base: &super::MapEnv,
    parse: &dyn Fn(&dyn Env) -> Result<(), ConfigError>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut expect = |name: &'static str, value: String, accepted: bool| {
        let env = base.clone().with(&[(name, value.as_str())]);
        match (parse(&env), accepted) {
            (Ok(()), true) => {}
            (Err(e), false) if e.variable == name => {}
            (outcome, _) => violations.push(format!(
                "{name}={value}: expected {}, got {outcome:?}",
                if accepted {
                    "acceptance"
                } else {
                    "an error naming it"
                }
            )),
        }
    };
    for var in schema {
        if let (Some(min), Some(max)) = (var.min, var.max) {
            expect(var.name, min.to_string(), true);
            expect(var.name, max.to_string(), true);
            expect(var.name, (min - 1).to_string(), false);
            expect(var.name, (max + 1).to_string(), false);
        }
        for word in &var.allowed {
            expect(var.name, (*word).to_owned(), true);
        }
        if !var.allowed.is_empty() {
            expect(var.name, "no-such-word".to_owned(), false);
        }
    }
    violations
}
