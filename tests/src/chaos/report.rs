//! What a chaos run reports: a table for people and one JSON line for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Scenario;
use super::check::Violation;
use super::harness::PassEnd;
use super::seed::Seeded;
use crate::restart_load::RestartFigures;

/// How the passes of a scenario ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassCounts {
    pub completed: u64,
    pub skipped: u64,
    pub failed: u64,
    pub killed: u64,
    pub timed_out: u64,
}

impl PassCounts {
    pub fn add(&mut self, end: PassEnd) {
        match end {
            PassEnd::Completed => self.completed += 1,
            PassEnd::Skipped => self.skipped += 1,
            PassEnd::Failed => self.failed += 1,
            PassEnd::Killed => self.killed += 1,
            PassEnd::TimedOut => self.timed_out += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.completed + self.skipped + self.failed + self.killed + self.timed_out
    }
}

/// One scenario's outcome.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    /// False for a scenario that was not run; its figures are all zero.
    pub ran: bool,
    /// Trials (kills attempted, faulty passes, racing rounds).
    pub trials: u64,
    /// Faults delivered: exporters killed, store faults injected, lock sessions ended.
    pub faults: u64,
    /// Full bucket checks made.
    pub checks: u64,
    /// Every violation found, by checks and by index samples.
    pub violations: Vec<Violation>,
    pub passes: PassCounts,
    /// How the closing pass without faults ended.
    pub clean_pass: Option<PassEnd>,
    pub seconds: f64,
    /// Details for the table (fault kinds, what was not run and why).
    pub notes: Vec<String>,
    /// Checks after an interrupted pass that found the manifest and the two `index.txt`
    /// listing the files of two successive passes (`check::one_pass_apart`; not violations).
    pub indexes_one_pass_apart: u64,
    /// Checks after an interrupted pass that found a retrieval object absent or out of step
    /// with `index.txt` (`check::retrieval_out_of_step`; not violations).
    pub retrieval_out_of_step: u64,
}

impl ScenarioResult {
    pub fn new(scenario: Scenario) -> Self {
        ScenarioResult {
            scenario,
            ran: false,
            trials: 0,
            faults: 0,
            checks: 0,
            violations: Vec::new(),
            passes: PassCounts::default(),
            clean_pass: None,
            seconds: 0.0,
            notes: Vec::new(),
            indexes_one_pass_apart: 0,
            retrieval_out_of_step: 0,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub seeded: Seeded,
    /// Duration of a full pass from an empty bucket, without faults.
    pub pass_seconds: f64,
    /// What the checks after the measuring pass found.
    pub measuring_violations: Vec<Violation>,
    pub scenarios: Vec<ScenarioResult>,
    pub bucket_checks: u64,
    pub immutable_objects_changed: u64,
    pub index_regressions: u64,
    pub max_index_regressions: i64,
    /// Daily files in the last complete check.
    pub daily_files: usize,
    /// What the db-restarts scenario saw, when it ran.
    pub restart: Option<RestartFigures>,
    pub seconds: f64,
}

impl Summary {
    fn total(&self, scenario: Scenario) -> u64 {
        self.scenarios
            .iter()
            .filter(|result| result.scenario == scenario && result.ran)
            .map(|result| result.faults)
            .sum()
    }

    /// The trials of `scenario` (for the slow store: its passes), 0 when it did not run.
    fn trials(&self, scenario: Scenario) -> u64 {
        self.scenarios
            .iter()
            .filter(|result| result.scenario == scenario && result.ran)
            .map(|result| result.trials)
            .sum()
    }

    pub fn bucket_violations(&self) -> u64 {
        let scenarios: u64 = self
            .scenarios
            .iter()
            .map(|result| result.violations.len() as u64)
            .sum();
        scenarios + self.measuring_violations.len() as u64
    }

    /// The machine-readable line: exactly these fields, in this order.
    pub fn json(&self) -> String {
        let fields: [(&str, serde_json::Value); 11] = [
            ("exporter_kills", self.total(Scenario::ExporterKills).into()),
            ("store_faults", self.total(Scenario::StoreFaults).into()),
            ("slow_store_passes", self.trials(Scenario::SlowStore).into()),
            // Counted by the restart scenario when it runs; never estimated.
            ("db_restarts", self.total(Scenario::DbRestarts).into()),
            ("lock_kills", self.total(Scenario::LockRaces).into()),
            ("bucket_checks", self.bucket_checks.into()),
            ("bucket_violations", self.bucket_violations().into()),
            (
                "acknowledged_uploads",
                self.restart
                    .as_ref()
                    .map_or(0, |figures| figures.acknowledged_uploads)
                    .into(),
            ),
            (
                "acknowledged_keys_lost",
                self.restart
                    .as_ref()
                    .map_or(0, |figures| figures.acknowledged_keys_lost)
                    .into(),
            ),
            (
                "immutable_objects_changed",
                self.immutable_objects_changed.into(),
            ),
            ("max_index_regressions", self.max_index_regressions.into()),
        ];
        let body: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("\"{name}\": {value}"))
            .collect();
        format!("{{{}}}", body.join(", "))
    }

    /// A scenario's violations: what its bucket checks found, and for db-restarts the promises
    /// to phones that did not hold.
    fn scenario_violations(&self, result: &ScenarioResult) -> usize {
        let restart = match (&self.restart, result.scenario) {
            (Some(figures), Scenario::DbRestarts) => figures.violations().len(),
            _ => 0,
        };
        result.violations.len() + restart
    }

    /// True when nothing was violated.
    pub fn passed(&self) -> bool {
        self.bucket_violations() == 0
            && self.immutable_objects_changed == 0
            && self.max_index_regressions == 0
            && self
                .restart
                .as_ref()
                .is_none_or(|figures| figures.violations().is_empty())
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "seeded {} keys ({} publishable) over hours {}..={} ({} hours); a full pass took {:.1} s",
            self.seeded.keys,
            self.seeded.publishable,
            self.seeded.first_hour,
            self.seeded.last_hour,
            self.seeded.last_hour - self.seeded.first_hour + 1,
            self.pass_seconds
        );
        for violation in &self.measuring_violations {
            let _ = writeln!(out, "measuring pass: violation: {violation}");
        }
        let _ = writeln!(
            out,
            "\n{:<16} {:>6} {:>7} {:>7} {:>10} {:>9} {:>6} {:>6} {:>6} {:>8} {:>7}  clean pass",
            "scenario",
            "trials",
            "faults",
            "checks",
            "violations",
            "completed",
            "failed",
            "killed",
            "skipped",
            "timedout",
            "seconds",
        );
        for result in &self.scenarios {
            if !result.ran {
                let _ = writeln!(out, "{:<16} not run", result.scenario.name());
                continue;
            }
            let clean = match result.clean_pass {
                Some(PassEnd::Completed) => "completed",
                Some(PassEnd::Failed) => "FAILED",
                Some(PassEnd::TimedOut) => "TIMED OUT",
                Some(PassEnd::Skipped) => "skipped",
                Some(PassEnd::Killed) => "killed",
                None => "-",
            };
            let _ = writeln!(
                out,
                "{:<16} {:>6} {:>7} {:>7} {:>10} {:>9} {:>6} {:>6} {:>6} {:>8} {:>7.1}  {}",
                result.scenario.name(),
                result.trials,
                result.faults,
                result.checks,
                self.scenario_violations(result),
                result.passes.completed,
                result.passes.failed,
                result.passes.killed,
                result.passes.skipped,
                result.passes.timed_out,
                result.seconds,
                clean
            );
        }
        for result in &self.scenarios {
            if result.notes.is_empty()
                && result.violations.is_empty()
                && result.indexes_one_pass_apart == 0
                && result.retrieval_out_of_step == 0
            {
                continue;
            }
            let _ = writeln!(out, "\n{}:", result.scenario.name());
            for note in &result.notes {
                let _ = writeln!(out, "  {note}");
            }
            if result.indexes_one_pass_apart > 0 {
                let _ = writeln!(
                    out,
                    "  {} finding(s) of index.json and index.txt one pass apart after a pass died \
                     between them (not violations)",
                    result.indexes_one_pass_apart
                );
            }
            if result.retrieval_out_of_step > 0 {
                let _ = writeln!(
                    out,
                    "  {} finding(s) of retrieval objects absent or behind index.txt after a pass \
                     died before deriving them (not violations)",
                    result.retrieval_out_of_step
                );
            }
            let mut categories: BTreeMap<String, usize> = BTreeMap::new();
            for violation in &result.violations {
                *categories.entry(violation.category()).or_default() += 1;
            }
            for (category, count) in &categories {
                let _ = writeln!(out, "  {count:>5} × {category}");
            }
            for violation in result.violations.iter().take(8) {
                let _ = writeln!(out, "  violation: {violation}");
            }
            if result.violations.len() > 8 {
                let _ = writeln!(out, "  … and {} more", result.violations.len() - 8);
            }
        }
        let _ = writeln!(
            out,
            "\nbucket checks {}, violations {}, immutable objects changed {}, index went backwards {} time(s), \
             largest step back {} hour(s); {} daily file(s) at the last complete check; {:.0} s in all",
            self.bucket_checks,
            self.bucket_violations(),
            self.immutable_objects_changed,
            self.index_regressions,
            self.max_index_regressions,
            self.daily_files,
            self.seconds
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        let mut kills = ScenarioResult::new(Scenario::ExporterKills);
        kills.ran = true;
        kills.faults = 3;
        kills
            .violations
            .push(Violation::IndexGap { after: 1, next: 3 });
        let mut races = ScenarioResult::new(Scenario::LockRaces);
        races.ran = true;
        races.faults = 2;
        let mut slow = ScenarioResult::new(Scenario::SlowStore);
        slow.ran = true;
        slow.trials = 4;
        slow.faults = 12;
        Summary {
            seeded: Seeded {
                keys: 10,
                publishable: 10,
                first_hour: 1,
                last_hour: 48,
            },
            pass_seconds: 1.0,
            measuring_violations: vec![Violation::Incomplete {
                what: "x".to_owned(),
            }],
            scenarios: vec![
                kills,
                ScenarioResult::new(Scenario::StoreFaults),
                races,
                ScenarioResult::new(Scenario::DbRestarts),
                slow,
            ],
            bucket_checks: 7,
            immutable_objects_changed: 0,
            index_regressions: 0,
            max_index_regressions: 0,
            daily_files: 1,
            restart: None,
            seconds: 2.0,
        }
    }

    #[test]
    fn the_json_line_has_exactly_the_agreed_fields_in_order() {
        let line = summary().json();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let names: Vec<&str> = line
            .trim_matches(['{', '}'])
            .split(", ")
            .map(|field| field.split(':').next().unwrap().trim_matches('"'))
            .collect();
        assert_eq!(
            names,
            [
                "exporter_kills",
                "store_faults",
                "slow_store_passes",
                "db_restarts",
                "lock_kills",
                "bucket_checks",
                "bucket_violations",
                "acknowledged_uploads",
                "acknowledged_keys_lost",
                "immutable_objects_changed",
                "max_index_regressions",
            ]
        );
        assert_eq!(value["exporter_kills"], 3);
        assert_eq!(value["lock_kills"], 2);
        assert_eq!(value["store_faults"], 0);
        assert_eq!(value["slow_store_passes"], 4);
        assert_eq!(value["db_restarts"], 0);
        assert_eq!(value["bucket_checks"], 7);
        // One from a scenario's checks, one from the measuring pass's.
        assert_eq!(value["bucket_violations"], 2);
        assert!(!summary().passed());
    }

    #[test]
    fn the_restart_figures_fill_their_fields_and_a_lost_key_fails_the_run() {
        let mut clean = summary();
        clean.scenarios[0].violations.clear();
        clean.measuring_violations.clear();
        clean.scenarios[3].ran = true;
        clean.scenarios[3].faults = 5;
        let figures = RestartFigures {
            restarts: 5,
            uploads_attempted: 120,
            acknowledged_uploads: 100,
            acknowledged_keys: 1400,
            uploads_after_last_restart: 20,
            uploads_after_last_restart_ok: 20,
            ..RestartFigures::default()
        };
        clean.restart = Some(figures.clone());
        let value: serde_json::Value = serde_json::from_str(&clean.json()).unwrap();
        assert_eq!(value["db_restarts"], 5);
        assert_eq!(value["acknowledged_uploads"], 100);
        assert_eq!(value["acknowledged_keys_lost"], 0);
        assert!(clean.passed(), "{}", clean.table());

        let mut lossy = clean;
        lossy.restart = Some(RestartFigures {
            acknowledged_keys_lost: 3,
            ..figures
        });
        let value: serde_json::Value = serde_json::from_str(&lossy.json()).unwrap();
        assert_eq!(value["acknowledged_keys_lost"], 3);
        assert!(!lossy.passed());
        let table = lossy.table();
        let row = table
            .lines()
            .find(|line| line.starts_with("db-restarts"))
            .unwrap();
        assert_eq!(row.split_whitespace().nth(4), Some("1"), "{table}");
    }

    #[test]
    fn a_scenario_not_run_is_listed_as_such() {
        let table = summary().table();
        assert!(table.contains("db-restarts      not run"), "{table}");
        assert!(table.contains("store-faults     not run"), "{table}");
        assert!(table.contains("1 × index.txt has a gap"), "{table}");
    }
}
