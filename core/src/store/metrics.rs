//! Connection-pool gauges, shared by both binaries:
//!
//! * `db_pool_connections{state="idle"|"in_use"}` — open connections, idle in the pool or lent out;
//! * `db_pool_max_connections` — the pool's ceiling (`DATABASE_POOL_SIZE`);
//! * `db_pool_waiting` — callers waiting for a connection right now.
//!
//! [`Store::spawn_pool_metrics`] samples them every [`POOL_METRICS_INTERVAL`] until the returned
//! guard is dropped. Without a metrics recorder every sample is a no-op.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::Store;

/// How often the pool gauges are sampled.
pub const POOL_METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// The connection pool at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// The most connections the pool opens.
    pub max: usize,
    /// Open connections waiting in the pool.
    pub idle: usize,
    /// Open connections lent out to a caller.
    pub in_use: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

impl Store {
    /// The pool's current state (no database round trip).
    pub fn pool_status(&self) -> PoolStatus {
        let status = self.pool.status();
        PoolStatus {
            max: status.max_size,
            idle: status.available,
            in_use: status.size.saturating_sub(status.available),
            waiting: status.waiting,
        }
    }

    /// Sets the pool gauges once from [`Store::pool_status`].
    pub fn record_pool_metrics(&self) {
        let status = self.pool_status();
        ::metrics::gauge!("db_pool_connections", "state" => "idle").set(status.idle as f64);
        ::metrics::gauge!("db_pool_connections", "state" => "in_use").set(status.in_use as f64);
        ::metrics::gauge!("db_pool_max_connections").set(status.max as f64);
        ::metrics::gauge!("db_pool_waiting").set(status.waiting as f64);
    }

    /// Samples the pool gauges now and then every [`POOL_METRICS_INTERVAL`], until the returned
    /// guard is dropped. Call it from inside the Tokio runtime.
    pub fn spawn_pool_metrics(&self) -> PoolMetricsTask {
        let store = self.clone();
        PoolMetricsTask(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(POOL_METRICS_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                store.record_pool_metrics();
            }
        }))
    }
}

/// The sampling task of [`Store::spawn_pool_metrics`]; dropping it stops the task.
#[derive(Debug)]
pub struct PoolMetricsTask(JoinHandle<()>);

impl Drop for PoolMetricsTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn store(pool_size: usize) -> Store {
        Store::connect(&StoreConfig {
            database_url: "postgres://nobody@127.0.0.1:9/none".to_owned(),
            pool_size,
            statement_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            application_name: "pool-metrics-test",
        })
        .unwrap_or_else(|e| panic!("building the pool: {e}"))
    }

    #[test]
    fn a_fresh_pool_has_no_connections() {
        assert_eq!(
            store(7).pool_status(),
            PoolStatus {
                max: 7,
                idle: 0,
                in_use: 0,
                waiting: 0,
            }
        );
    }

    #[test]
    fn the_gauges_carry_the_pool_status() {
        let recorder = crate::telemetry::prometheus_builder().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || store(3).record_pool_metrics());
        let text = handle.render();
        for line in [
            "db_pool_connections{state=\"idle\"} 0",
            "db_pool_connections{state=\"in_use\"} 0",
            "db_pool_max_connections 3",
            "db_pool_waiting 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[tokio::test]
    async fn dropping_the_guard_stops_the_sampler() {
        let task = store(2).spawn_pool_metrics();
        let handle = task.0.abort_handle();
        drop(task);
        tokio::task::yield_now().await;
        for _ in 0..100 {
            if handle.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the pool sampler kept running after its guard was dropped");
    }
}
