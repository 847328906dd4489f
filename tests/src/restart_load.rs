//! Acknowledged uploads are never lost across a restart of PostgreSQL (DESIGN §6, §7).
//!
//! [`upload_through_restarts`] runs the real submit service on a fresh database of a
//! [`RestartableCluster`], with its store built by `Store::open` as the binary builds it, and
//! drives phones through it as the apps do (a code from the portal, a claim, a sealed upload),
//! several at once, while the cluster is restarted at random moments. An upload answered 200
//! is a promise: afterwards every key it carried must be in `diagnosis_keys`. Uploads that fail
//! while the database is away are expected, but every request gets an answer within a bound,
//! and after the last restart uploads succeed again on the same service: its pool recovers on
//! its own.
//!
//! The outcome is data ([`RestartFigures`]) for a test to assert on or a chaos run to report;
//! a fault of the service is never an error here. Only a run that cannot take place (the
//! cluster cannot be reached or refuses to restart) is one. Nothing here logs a key or a code.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use diagnosis_core::config::CommonConfig;
use diagnosis_core::redacted::Redacted;
use diagnosis_core::store::{Store, StoreConfig};
use diagnosis_core::time::SystemClock;
use diagnosis_submit::{AppState, Listeners, Version};
use hyper::StatusCode;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::app::{PORTAL_TOKEN, test_settings};
use crate::simulator::{Phone, Portal, app_keys, upload_of};

/// The admin URL of the cluster `infra/dev/test` starts for tests that restart it.
pub const RESTART_DATABASE_URL_VARIABLE: &str = "DIAGNOSIS_TEST_RESTART_DATABASE_URL";
/// The program, run without arguments, that restarts that cluster.
pub const RESTART_COMMAND_VARIABLE: &str = "DIAGNOSIS_TEST_RESTART_COMMAND";

/// How long a restart command may run before the run gives up on the cluster.
const RESTART_COMMAND_BOUND: Duration = Duration::from_secs(90);

/// A phone waits this long after a failed request before its next exchange, so that phones do
/// not spin while the database is away.
const BACKOFF_AFTER_FAILURE: Duration = Duration::from_millis(50);

/// Keys looked up per query when the run checks what is stored.
const KEYS_PER_LOOKUP: usize = 5_000;

/// Where the submit service's sessions say they come from.
const APPLICATION_NAME: &str = "diagnosis-restart-load";

/// A PostgreSQL cluster that this code may restart: no one else may be relying on it.
///
/// `Debug` never shows the admin URL, which may hold a password.
#[derive(Debug, Clone)]
pub struct RestartableCluster {
    admin_url: Redacted<String>,
    restart_program: OsString,
    restart_args: Vec<OsString>,
}

impl RestartableCluster {
    /// The cluster reached at `admin_url` (a `postgres://` URL of any database on it, as a user
    /// who may create databases) and restarted by running `program` with `args`, which must
    /// return, with status 0, once the cluster accepts connections again
    /// (`pg_ctl restart -m fast -w` does).
    pub fn new(
        admin_url: impl Into<String>,
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> RestartableCluster {
        RestartableCluster {
            admin_url: Redacted::new(admin_url.into()),
            restart_program: program.into(),
            restart_args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// The restartable cluster of `infra/dev/test`
    /// ([`RESTART_DATABASE_URL_VARIABLE`], [`RESTART_COMMAND_VARIABLE`]).
    pub fn from_env() -> anyhow::Result<RestartableCluster> {
        let variable = |name: &str| match std::env::var(name) {
            Ok(value) if !value.is_empty() => Ok(value),
            _ => Err(anyhow::anyhow!(
                "{name} is not set: run the tests through infra/dev/test"
            )),
        };
        Ok(RestartableCluster::new(
            variable(RESTART_DATABASE_URL_VARIABLE)?,
            variable(RESTART_COMMAND_VARIABLE)?,
            Vec::<OsString>::new(),
        ))
    }

    /// The admin URL.
    pub fn url(&self) -> &str {
        self.admin_url.expose()
    }

    /// A URL for `database` on the cluster: the admin URL with its database replaced
    /// (a `dbname` parameter overrides the path, as in libpq).
    pub fn database_url(&self, database: &str) -> String {
        let separator = if self.admin_url.expose().contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{separator}dbname={database}", self.admin_url.expose())
    }

    /// Restarts the cluster and returns how long the restart command took. Fails when the
    /// command fails, runs longer than 90 s, or returns while the server has not in fact
    /// restarted (its start time is unchanged), since the run would then prove nothing.
    pub async fn restart(&self) -> anyhow::Result<Duration> {
        let before = self.started_at().await?;
        let started = Instant::now();
        let output = tokio::process::Command::new(&self.restart_program)
            .args(&self.restart_args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(RESTART_COMMAND_BOUND, output)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the restart command {:?} did not finish within {RESTART_COMMAND_BOUND:?}",
                    self.restart_program
                )
            })?
            .with_context(|| {
                format!(
                    "while running the restart command {:?}",
                    self.restart_program
                )
            })?;
        let took = started.elapsed();
        if !output.status.success() {
            bail!(
                "the restart command {:?} failed ({}): {}",
                self.restart_program,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let after = self.started_at().await?;
        if after <= before {
            bail!(
                "the restart command {:?} succeeded but the server was not restarted \
                 (it started at {before} and still reports that)",
                self.restart_program
            );
        }
        Ok(took)
    }

    /// When the server started, through a connection of its own.
    async fn started_at(&self) -> anyhow::Result<DateTime<Utc>> {
        let store = own_store(self.admin_url.expose())?;
        let client = store
            .pool()
            .get()
            .await
            .context("while connecting to the restartable cluster")?;
        let row = client
            .query_one("SELECT pg_postmaster_start_time()", &[])
            .await
            .context("while reading the server's start time")?;
        Ok(row.try_get(0)?)
    }
}

/// How [`upload_through_restarts`] loads the service and configures its store.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Phones working at once, each running one exchange (code, claim, upload) after another.
    pub phones: usize,
    /// Keys per upload, 1 to 14 (an app's keys of its last days).
    pub keys_per_upload: usize,
    /// The load runs for a random time in this range before each restart.
    pub before_restart: RangeInclusive<Duration>,
    /// How long the load goes on after the last restart.
    pub after_last_restart: Duration,
    /// Exchanges run one after another once the load has stopped, each of which must succeed.
    pub final_uploads: usize,
    /// A request without a complete answer within this counts as unanswered. The service's own
    /// bounds (statement and connect timeouts, DESIGN §6) lie well inside it.
    pub request_bound: Duration,
    /// The service's `DATABASE_POOL_SIZE`.
    pub pool_size: usize,
    /// The service's `DATABASE_STATEMENT_TIMEOUT_MS`.
    pub statement_timeout: Duration,
    /// The service's `DATABASE_CONNECT_TIMEOUT_SECONDS`.
    pub connect_timeout: Duration,
}

impl Default for LoadSettings {
    /// Eight phones uploading 14 keys each, one to three seconds between restarts, and the
    /// binaries' default store settings.
    fn default() -> Self {
        LoadSettings {
            phones: 8,
            keys_per_upload: 14,
            before_restart: Duration::from_secs(1)..=Duration::from_secs(3),
            after_last_restart: Duration::from_secs(2),
            final_uploads: 20,
            request_bound: Duration::from_secs(10),
            pool_size: CommonConfig::DEFAULT_POOL_SIZE,
            statement_timeout: Duration::from_millis(CommonConfig::DEFAULT_STATEMENT_TIMEOUT_MS),
            connect_timeout: Duration::from_secs(CommonConfig::DEFAULT_CONNECT_TIMEOUT_SECONDS),
        }
    }
}

/// What a run of [`upload_through_restarts`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartFigures {
    /// Restarts of the cluster, all completed under load.
    pub restarts: usize,
    /// The longest a restart command took.
    pub longest_restart: Duration,
    /// `POST /upload` requests sent.
    pub uploads_attempted: usize,
    /// Uploads answered 200.
    pub acknowledged_uploads: usize,
    /// Keys those uploads carried.
    pub acknowledged_keys: usize,
    /// Keys of acknowledged uploads missing from the database afterwards: must be 0.
    pub acknowledged_keys_lost: usize,
    /// Keys of uploads not answered 200 that are stored all the same: the commit went through
    /// and its answer was lost with the connection. A failed answer promises nothing.
    pub unacknowledged_keys_stored: usize,
    /// Requests of any endpoint answered with a status other than 200 (expected while the
    /// database restarts).
    pub requests_failed: usize,
    /// Requests without a complete answer within the bound: must be 0.
    pub requests_unanswered: usize,
    /// The longest any request took to be answered.
    pub slowest_answer: Duration,
    /// Exchanges run once the load had stopped, after the last restart.
    pub uploads_after_last_restart: usize,
    /// Of those, the ones whose code, claim and upload were all answered 200: must be all.
    pub uploads_after_last_restart_ok: usize,
}

impl RestartFigures {
    /// Each way the run broke a promise, in words; empty when every promise held.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        if self.acknowledged_keys_lost > 0 {
            violations.push(format!(
                "{} of {} keys of acknowledged uploads are not in the database",
                self.acknowledged_keys_lost, self.acknowledged_keys
            ));
        }
        if self.requests_unanswered > 0 {
            violations.push(format!(
                "{} requests got no answer within the bound",
                self.requests_unanswered
            ));
        }
        if self.uploads_after_last_restart_ok < self.uploads_after_last_restart {
            violations.push(format!(
                "only {} of {} uploads after the last restart succeeded",
                self.uploads_after_last_restart_ok, self.uploads_after_last_restart
            ));
        }
        if self.acknowledged_uploads == 0 {
            violations.push("no upload was acknowledged, so nothing was proven".to_owned());
        }
        violations
    }
}

impl fmt::Display for RestartFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} restarts (longest {:.1} s): {} uploads, {} acknowledged with {} keys, {} of them \
             lost; {} keys of failed uploads stored; {} requests failed, {} unanswered, slowest \
             answer {:.2} s; {} of {} uploads after the last restart succeeded",
            self.restarts,
            self.longest_restart.as_secs_f64(),
            self.uploads_attempted,
            self.acknowledged_uploads,
            self.acknowledged_keys,
            self.acknowledged_keys_lost,
            self.unacknowledged_keys_stored,
            self.requests_failed,
            self.requests_unanswered,
            self.slowest_answer.as_secs_f64(),
            self.uploads_after_last_restart_ok,
            self.uploads_after_last_restart,
        )
    }
}

/// Runs the submit service on a fresh database of `cluster` under continuous upload from
/// `load.phones` phones, restarts the cluster `restarts` times at random moments, lets the load
/// run on after the last restart, then runs `load.final_uploads` exchanges one by one on the
/// same service, and finally looks up every key of every acknowledged upload in the database.
/// The database is dropped at the end.
///
/// Errors only when the run cannot take place: the database cannot be created, migrated or
/// read, or a restart fails.
pub async fn upload_through_restarts(
    cluster: &RestartableCluster,
    restarts: usize,
    load: LoadSettings,
) -> anyhow::Result<RestartFigures> {
    let database = format!("restart_{:016x}", rand::random::<u64>());
    execute_as_admin(cluster, &format!("CREATE DATABASE \"{database}\""))
        .await
        .with_context(|| format!("while creating the database {database}"))?;
    let url = cluster.database_url(&database);
    let outcome = run(cluster, &url, restarts, &load).await;
    let dropped = execute_as_admin(
        cluster,
        &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
    )
    .await;
    let figures = outcome?;
    dropped.with_context(|| format!("while dropping the database {database}"))?;
    Ok(figures)
}

async fn run(
    cluster: &RestartableCluster,
    url: &str,
    restarts: usize,
    load: &LoadSettings,
) -> anyhow::Result<RestartFigures> {
    // As the binary starts: the pool, a first connection, the migrations.
    let store = Store::open(&store_config(url, load), true)
        .await
        .context("while opening the run's database")?;
    let service = Service::start(store).await?;
    let mut figures = RestartFigures::default();
    let (stop, stopped) = watch::channel(false);
    let mut phones = JoinSet::new();
    for _ in 0..load.phones {
        phones.spawn(keep_uploading(
            service.base_url.clone(),
            load.clone(),
            stopped.clone(),
        ));
    }

    let mut restarted = Ok(());
    for _ in 0..restarts {
        tokio::time::sleep(random_duration(&load.before_restart)).await;
        match cluster.restart().await {
            Ok(took) => {
                figures.restarts += 1;
                figures.longest_restart = figures.longest_restart.max(took);
            }
            Err(error) => {
                restarted = Err(error);
                break;
            }
        }
    }
    if restarted.is_ok() {
        tokio::time::sleep(load.after_last_restart).await;
    }
    let _ = stop.send(true);
    let mut tally = Tally::default();
    while let Some(phone) = phones.join_next().await {
        tally.add(phone.context("a phone's task failed")?);
    }
    if let Err(error) = restarted {
        service.stop().await;
        return Err(error);
    }

    let mut after = Tally::default();
    for _ in 0..load.final_uploads {
        if exchange(&service.base_url, load, &mut after).await == Exchange::Acknowledged {
            figures.uploads_after_last_restart_ok += 1;
        }
    }
    figures.uploads_after_last_restart = load.final_uploads;
    tally.add(after);
    service.stop().await;

    // Read through a connection of its own, as any later reader of the database would.
    let reader = own_store(url)?;
    let acknowledged_stored = count_stored(&reader, &tally.acknowledged).await?;
    let unacknowledged_stored = count_stored(&reader, &tally.unacknowledged).await?;
    figures.uploads_attempted = tally.uploads_attempted;
    figures.acknowledged_uploads = tally.acknowledged_uploads;
    figures.acknowledged_keys = tally.acknowledged.len();
    figures.acknowledged_keys_lost = tally.acknowledged.len().saturating_sub(acknowledged_stored);
    figures.unacknowledged_keys_stored = unacknowledged_stored;
    figures.requests_failed = tally.requests_failed;
    figures.requests_unanswered = tally.requests_unanswered;
    figures.slowest_answer = tally.slowest_answer;
    Ok(figures)
}

/// The store settings of the service.
fn store_config(url: &str, load: &LoadSettings) -> StoreConfig {
    StoreConfig {
        database_url: url.to_owned(),
        pool_size: load.pool_size,
        statement_timeout: load.statement_timeout,
        connect_timeout: load.connect_timeout,
        application_name: APPLICATION_NAME,
    }
}

/// A store of one connection for this module's own statements, with the binaries' default
/// timeouts.
fn own_store(url: &str) -> anyhow::Result<Store> {
    let defaults = LoadSettings::default();
    Ok(Store::connect(&StoreConfig {
        pool_size: 1,
        ..store_config(url, &defaults)
    })?)
}

async fn execute_as_admin(cluster: &RestartableCluster, statement: &str) -> anyhow::Result<()> {
    let admin = own_store(cluster.url())?;
    let client = admin
        .pool()
        .get()
        .await
        .context("while connecting to the cluster's admin URL")?;
    client.batch_execute(statement).await?;
    Ok(())
}

/// How many of `keys` are in `diagnosis_keys`.
async fn count_stored(store: &Store, keys: &[Vec<u8>]) -> anyhow::Result<usize> {
    let client = store
        .pool()
        .get()
        .await
        .context("while connecting to check the stored keys")?;
    let lookup = client
        .prepare("SELECT count(*) FROM diagnosis_keys WHERE key_data = ANY($1::bytea[])")
        .await?;
    let mut stored = 0;
    for chunk in keys.chunks(KEYS_PER_LOOKUP) {
        let chunk: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        let count: i64 = client.query_one(&lookup, &[&chunk]).await?.try_get(0)?;
        stored += usize::try_from(count).context("a negative count")?;
    }
    Ok(stored)
}

fn random_duration(range: &RangeInclusive<Duration>) -> Duration {
    let low = u64::try_from(range.start().as_millis()).unwrap_or(u64::MAX);
    let high = u64::try_from(range.end().as_millis()).unwrap_or(u64::MAX);
    if high <= low {
        return *range.start();
    }
    Duration::from_millis(rand::random_range(low..=high))
}

/// The real submit service on `127.0.0.1:0`, as the binary runs it (system clock, no internal
/// listener).
struct Service {
    base_url: String,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Service {
    async fn start(store: Store) -> anyhow::Result<Service> {
        let state = Arc::new(
            AppState::start(
                store,
                Arc::new(SystemClock),
                test_settings(),
                Version::of_build(),
            )
            .await
            .context("while starting the service on its database")?,
        );
        let api = diagnosis_submit::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .context("while binding the service's port")?;
        let addr = api.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(diagnosis_submit::run(
            state,
            Listeners {
                api,
                internal: None,
            },
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Service {
            base_url: format!("http://{addr}"),
            shutdown,
            task,
        })
    }

    /// Stops the service gracefully; once the load has stopped nothing is in flight.
    async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
    }
}

/// What the phones saw, merged at the end.
#[derive(Debug, Default)]
struct Tally {
    uploads_attempted: usize,
    acknowledged_uploads: usize,
    /// Key data of every acknowledged upload.
    acknowledged: Vec<Vec<u8>>,
    /// Key data of every upload sent but not acknowledged.
    unacknowledged: Vec<Vec<u8>>,
    requests_failed: usize,
    requests_unanswered: usize,
    slowest_answer: Duration,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.uploads_attempted += other.uploads_attempted;
        self.acknowledged_uploads += other.acknowledged_uploads;
        self.acknowledged.extend(other.acknowledged);
        self.unacknowledged.extend(other.unacknowledged);
        self.requests_failed += other.requests_failed;
        self.requests_unanswered += other.requests_unanswered;
        self.slowest_answer = self.slowest_answer.max(other.slowest_answer);
    }

    /// `request`'s reply when a complete one came within `bound`.
    async fn answer<T>(
        &mut self,
        bound: Duration,
        request: impl Future<Output = anyhow::Result<T>>,
    ) -> Option<T> {
        let started = Instant::now();
        match tokio::time::timeout(bound, request).await {
            Ok(Ok(reply)) => {
                self.slowest_answer = self.slowest_answer.max(started.elapsed());
                Some(reply)
            }
            Ok(Err(_)) | Err(_) => {
                self.requests_unanswered += 1;
                None
            }
        }
    }

    /// Whether `status` is a 200, counting it as a failure otherwise.
    fn succeeded(&mut self, status: StatusCode) -> bool {
        if status == StatusCode::OK {
            return true;
        }
        self.requests_failed += 1;
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    /// The upload was answered 200.
    Acknowledged,
    /// Some request of the exchange failed or went unanswered.
    Failed,
}

/// One phone: exchange after exchange until `stopped`.
async fn keep_uploading(
    base_url: String,
    load: LoadSettings,
    mut stopped: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::default();
    while !*stopped.borrow_and_update() {
        if exchange(&base_url, &load, &mut tally).await == Exchange::Failed {
            tokio::time::sleep(BACKOFF_AFTER_FAILURE).await;
        }
    }
    tally
}

/// A code from the portal, a claim and an upload, by a new phone.
async fn exchange(base_url: &str, load: &LoadSettings, tally: &mut Tally) -> Exchange {
    let bound = load.request_bound;
    let portal = Portal::new(base_url, PORTAL_TOKEN);
    let Some(issued) = tally.answer(bound, portal.request_code(None)).await else {
        return Exchange::Failed;
    };
    if !tally.succeeded(issued.status) {
        return Exchange::Failed;
    }
    let code = issued.text();
    let mut phone = Phone::new(base_url);
    let Some(claimed) = tally.answer(bound, phone.claim(code.trim_end())).await else {
        return Exchange::Failed;
    };
    if !tally.succeeded(claimed.status) {
        return Exchange::Failed;
    }
    let now = Utc::now().timestamp();
    let keys = app_keys(now, load.keys_per_upload);
    let key_data: Vec<Vec<u8>> = keys.iter().filter_map(|key| key.key_data.clone()).collect();
    tally.uploads_attempted += 1;
    let uploaded = tally
        .answer(bound, phone.upload(&upload_of(keys, now)))
        .await;
    match uploaded {
        Some(reply) if tally.succeeded(reply.status) => {
            tally.acknowledged_uploads += 1;
            tally.acknowledged.extend(key_data);
            Exchange::Acknowledged
        }
        Some(_) | None => {
            tally.unacknowledged.extend(key_data);
            Exchange::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_names_the_database_whatever_the_admin_url_holds() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/postgres?dbname=restart_1",
            ),
            (
                "postgres://u@h/db?sslmode=verify-full&sslrootcert=system",
                "postgres://u@h/db?sslmode=verify-full&sslrootcert=system&dbname=restart_1",
            ),
        ];
        for (admin, expected) in cases {
            let cluster = RestartableCluster::new(admin, "true", Vec::<OsString>::new());
            let url = cluster.database_url("restart_1");
            assert_eq!(url, expected);
            let parsed = diagnosis_core::store::tls::DatabaseUrl::parse(&url).unwrap();
            assert_eq!(parsed.config.get_dbname(), Some("restart_1"), "{admin}");
        }
    }

    #[test]
    fn the_figures_name_every_broken_promise() {
        let held = RestartFigures {
            restarts: 2,
            uploads_attempted: 10,
            acknowledged_uploads: 8,
            acknowledged_keys: 112,
            uploads_after_last_restart: 3,
            uploads_after_last_restart_ok: 3,
            ..RestartFigures::default()
        };
        assert_eq!(held.violations(), Vec::<String>::new());
        let broken = RestartFigures {
            acknowledged_keys_lost: 14,
            requests_unanswered: 1,
            uploads_after_last_restart_ok: 2,
            ..held.clone()
        };
        assert_eq!(
            broken.violations(),
            [
                "14 of 112 keys of acknowledged uploads are not in the database",
                "1 requests got no answer within the bound",
                "only 2 of 3 uploads after the last restart succeeded",
            ]
        );
        let idle = RestartFigures::default();
        assert_eq!(
            idle.violations(),
            ["no upload was acknowledged, so nothing was proven"]
        );
    }

    #[test]
    fn random_gaps_stay_in_their_range() {
        let range = Duration::from_millis(200)..=Duration::from_millis(400);
        for _ in 0..100 {
            assert!(range.contains(&random_duration(&range)));
        }
        let fixed = Duration::from_secs(1)..=Duration::from_secs(1);
        assert_eq!(random_duration(&fixed), Duration::from_secs(1));
    }
}
