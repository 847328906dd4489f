//! The scheduled mode of `diagnosis-exporter` (DESIGN §4): a pass at start, so a fresh start
//! catches up at once, then one pass at every tick of `EXPORT_SCHEDULE`, until shutdown.
//!
//! The ticks are computed from the exporter's [`Clock`](diagnosis_core::time::Clock) and waited for on it, so with a
//! [`ManualClock`](diagnosis_core::time::ManualClock) a test moves the clock past a tick and
//! sees the pass run, without sleeping. The binary only reads its configuration and calls
//! [`run`], as the tests do.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use diagnosis_core::config::ConfigError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics_listener::InternalListener;
use crate::pipeline::Exporter;

/// `EXPORT_SCHEDULE`, parsed: six-field cron, seconds first, in UTC. A seventh field (the
/// year) is accepted; day of month and day of week must both match when both are given.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
}

impl Schedule {
    /// Parses `EXPORT_SCHEDULE`; a five-field cron is refused.
    pub fn parse(expression: &str) -> Result<Schedule, ConfigError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expression)
            .map_err(|e| {
                ConfigError::new(
                    "EXPORT_SCHEDULE",
                    format!("invalid six-field cron expression {expression:?}: {e}"),
                )
            })?;
        Ok(Schedule {
            expression: expression.to_owned(),
            cron,
        })
    }

    /// Refuses an expression with no tick after `now` (a date that never comes, such as
    /// 31 February, or a year gone by), naming `EXPORT_SCHEDULE`: the exporter would run its
    /// first pass and then never another, while it looks healthy (DESIGN §6: a value that
    /// cannot work is refused at start).
    pub fn check_ticks_after(&self, now: DateTime<Utc>) -> Result<(), ConfigError> {
        match self.next_after(now) {
            Some(_) => Ok(()),
            None => Err(ConfigError::new(
                "EXPORT_SCHEDULE",
                format!(
                    "{:?} has no tick after {}: no pass would run after the first",
                    self.expression,
                    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            )),
        }
    }

    /// The first tick strictly after `after`, on a whole second, or `None` when the expression
    /// has no later one.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The cron library keeps the fraction of a second it is given; ticks fall on whole
        // seconds, and the tick of the second `after` is in has passed.
        self.cron
            .find_next_occurrence(&after.trunc_subsecs(0), false)
            .ok()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

/// Stops a spawned task when dropped, so nothing `run` started outlives it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the scheduled mode until `shutdown` completes: a pass at once, then a pass at every
/// tick of `schedule` on the exporter's clock, while serving `/metrics` on `internal` (if
/// any) and sampling the connection-pool gauges (`db_pool_*`).
///
/// Passes never overlap: the next tick is computed when a pass ends, so ticks that pass
/// while a pass runs are not made up one by one (the next pass publishes everything that
/// closed meanwhile). A failed pass is logged and the schedule goes on. On shutdown a pass
/// in progress finishes (it is never cut off between an upload and its ledger rows), then
/// `run` returns; shutdown is watched from the start, so a signal during the first pass is
/// not lost.
pub async fn run(
    exporter: Arc<Exporter>,
    schedule: Schedule,
    internal: Option<InternalListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let _pool_metrics = exporter.spawn_pool_metrics();
    let _internal = internal.map(|listener| AbortOnDrop(tokio::spawn(listener.serve())));
    let (stop, mut stopped) = watch::channel(false);
    let _shutdown = AbortOnDrop(tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    }));
    tracing::info!(schedule = %schedule, "diagnosis-exporter scheduled");
    // A fresh start catches up at once rather than at the next tick.
    pass(&exporter, "export run failed").await;
    let clock = exporter.clock();
    loop {
        let stopping = *stopped.borrow();
        if stopping {
            break;
        }
        let Some(tick) = schedule.next_after(clock.now()) else {
            tracing::error!(
                schedule = %schedule,
                "EXPORT_SCHEDULE has no further tick; no pass runs until the exporter is restarted"
            );
            let _ = stopped.wait_for(|stop| *stop).await;
            break;
        };
        tokio::select! {
            // A dropped sender means the shutdown future panicked: stop as well.
            _ = stopped.wait_for(|stop| *stop) => break,
            () = clock.wait_until(tick) => {}
        }
        pass(&exporter, "scheduled export run failed").await;
    }
    tracing::info!("diagnosis-exporter stopped");
}

/// One pass; its failure is logged with `failure` (the outcome is in the metrics and logs).
async fn pass(exporter: &Exporter, failure: &'static str) {
    if let Err(e) = exporter.run_once().await {
        tracing::error!(error = %e, "{failure}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn ticks_follow_the_six_field_expression_in_utc() {
        let every_five = Schedule::parse("0 */5 * * * *").unwrap();
        assert_eq!(
            every_five.next_after(at("2025-11-28T15:20:00Z")),
            Some(at("2025-11-28T15:25:00Z")),
            "a tick is strictly after the instant"
        );
        assert_eq!(
            every_five.next_after(at("2025-11-28T15:24:59.900Z")),
            Some(at("2025-11-28T15:25:00Z"))
        );
        assert_eq!(
            every_five.next_after(at("2025-11-28T15:25:00.001Z")),
            Some(at("2025-11-28T15:30:00Z"))
        );
        let hourly = Schedule::parse("30 20 * * * *").unwrap();
        assert_eq!(
            hourly.next_after(at("2025-11-28T23:21:00Z")),
            Some(at("2025-11-29T00:20:30Z"))
        );
        let every_second = Schedule::parse("*/1 * * * * *").unwrap();
        assert_eq!(
            every_second.next_after(at("2025-11-28T15:20:00Z")),
            Some(at("2025-11-28T15:20:01Z"))
        );
        assert_eq!(every_five.to_string(), "0 */5 * * * *");
    }

    #[test]
    fn a_five_field_or_broken_expression_is_refused_by_name() {
        for expression in [
            "*/5 * * * *",
            "",
            "0 */5 * * * * * *",
            "61 * * * * *",
            "every day",
        ] {
            let error = Schedule::parse(expression).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!(
                    "EXPORT_SCHEDULE: invalid six-field cron expression {expression:?}"
                )),
                "{expression}: {error}"
            );
        }
    }

    #[test]
    fn an_expression_without_a_later_tick_has_none() {
        let past = Schedule::parse("0 0 0 1 1 * 2001").unwrap();
        assert_eq!(past.next_after(at("2025-11-28T15:20:00Z")), None);
    }

    #[test]
    fn an_expression_that_never_ticks_again_is_refused_by_name() {
        let now = at("2025-11-28T15:20:00Z");
        for expression in ["0 0 0 31 2 *", "0 0 0 30 2 *", "0 0 0 1 1 * 2001"] {
            let error = Schedule::parse(expression)
                .unwrap()
                .check_ticks_after(now)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(&format!(
                    "EXPORT_SCHEDULE: {expression:?} has no tick after"
                )),
                "{expression}: {error}"
            );
        }
        for expression in ["0 */5 * * * *", "0 0 0 29 2 *", "0 0 0 1 1 * 2030"] {
            assert_eq!(
                Schedule::parse(expression).unwrap().check_ticks_after(now),
                Ok(()),
                "{expression}"
            );
        }
    }
}
