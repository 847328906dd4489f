//! What every scenario of `infra/dev/chaos` works with: the database, the S3-compatible
//! server, the exporter binary run as a child process, bucket prefixes ("generations") and the
//! checker.
//!
//! A generation is one bucket prefix with an empty ledger: starting one truncates `exports`,
//! so the next pass publishes every seeded hour again, into a prefix nobody has written to.
//! The previous generation's objects are deleted then (the S3 server keeps them in memory).
//! Only one generation is live at a time, and no exporter runs while one starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use diagnosis_core::time::last_closed_hour;
use diagnosis_exporter::storage::Bucket;
use diagnosis_format::names::hourly_index_key;
use hyper::Method;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::check::{BucketChecker, CheckReport, Expectation, IndexTracker, Violation, index_hours};
use crate::http_client::HttpClient;

/// The grace period the exporter runs with (its default): an hour is closed 600 s after it ends.
pub const GRACE_SECONDS: i64 = 600;
/// The export region and retrieval path (the exporter's defaults, passed explicitly).
pub const EXPORT_REGION: &str = "CA";
pub const COMPAT_REGION_PATH: &str = "302";
/// The region the seeded keys are stored under (`REGION`).
pub const KEY_REGION: &str = "302";

/// The last hour closed now, as the exporter judges it.
pub fn last_closed_now() -> i64 {
    last_closed_hour(chrono::Utc::now().timestamp(), GRACE_SECONDS)
}

/// Where everything is.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The exporter's database (migrated by [`Harness::new`]).
    pub database_url: String,
    /// The S3-compatible server, `http://127.0.0.1:PORT`.
    pub s3_endpoint: String,
    /// The `diagnosis-exporter` binary.
    pub exporter: PathBuf,
    /// A private folder for the signing key and the exporters' logs.
    pub work_dir: PathBuf,
}

/// How a run of `diagnosis-exporter run-once` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassEnd {
    /// It published and exited 0.
    Completed,
    /// Another exporter held the lock; it did nothing and exited 0.
    Skipped,
    /// It exited non-zero.
    Failed,
    /// SIGKILL ended it.
    Killed,
    /// It outlived its time limit and was killed for it.
    TimedOut,
}

/// One `diagnosis-exporter run-once` child process.
#[derive(Debug)]
pub struct ExporterRun {
    child: Child,
    started: Instant,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ExporterRun {
    /// Sends SIGKILL if the process is still running; true when it was.
    pub fn kill_if_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None)) && self.child.start_kill().is_ok()
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the end (killing it after `limit`) and says how it ended and how long it ran.
    pub async fn wait(mut self, limit: Duration) -> anyhow::Result<(PassEnd, Duration)> {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.context("waiting for diagnosis-exporter")?,
            Err(_) => {
                let _ = self.child.start_kill();
                self.child.wait().await?;
                return Ok((PassEnd::TimedOut, self.started.elapsed()));
            }
        };
        let elapsed = self.started.elapsed();
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt as _;
            if status.signal() == Some(9) {
                return Ok((PassEnd::Killed, elapsed));
            }
        }
        if !status.success() {
            return Ok((PassEnd::Failed, elapsed));
        }
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        if out.contains("another exporter is at work") {
            Ok((PassEnd::Skipped, elapsed))
        } else if out.contains("published ") {
            Ok((PassEnd::Completed, elapsed))
        } else {
            bail!(
                "diagnosis-exporter run-once exited 0 without saying what it did (see {})",
                self.stdout.display()
            )
        }
    }

    /// The last lines of the process's error output, for a report.
    pub fn stderr_tail(path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }
}

/// The live bucket prefix.
#[derive(Debug, Clone)]
pub struct Generation {
    pub prefix: String,
    /// The prefix read directly from the S3 server (never through a fault proxy).
    pub bucket: Bucket,
}

/// A task that reads `index.txt` every 100 ms and feeds the index tracker, so an index that
/// goes backwards while exporters run is seen even if it moves forward again before a check.
#[derive(Debug)]
pub struct IndexWatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<Violation>>,
}

impl IndexWatcher {
    /// Stops watching; returns what it saw go backwards.
    pub async fn stop(self) -> Vec<Violation> {
        self.stop.send_replace(true);
        self.task.await.unwrap_or_default()
    }
}

/// The services, the checker and the generation in use.
#[derive(Debug)]
pub struct Harness {
    pub setup: Setup,
    db: tokio_postgres::Client,
    signing_key_file: PathBuf,
    pub checker: BucketChecker,
    bucket_name: String,
    generation: Option<Generation>,
    generations: u64,
    runs: u64,
}

impl Harness {
    /// Connects, migrates the database, creates the bucket and a signing key.
    pub async fn new(setup: Setup) -> anyhow::Result<Harness> {
        std::fs::create_dir_all(setup.work_dir.join("logs"))
            .with_context(|| format!("creating {}", setup.work_dir.display()))?;
        let output = Command::new(&setup.exporter)
            .arg("migrate")
            .env_clear()
            .env("DATABASE_URL", &setup.database_url)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .with_context(|| format!("starting {}", setup.exporter.display()))?;
        if !output.status.success() {
            bail!(
                "diagnosis-exporter migrate failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let signing_key_file = setup.work_dir.join("signing-key.pem");
        let output = Command::new(&setup.exporter)
            .arg("keygen")
            .arg("--out")
            .arg(&signing_key_file)
            .env_clear()
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "diagnosis-exporter keygen failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let public_key =
            diagnosis_format::sign::SigningKey::from_file(&signing_key_file)?.public_key();

        let (db, connection) = tokio_postgres::connect(&setup.database_url, tokio_postgres::NoTls)
            .await
            .context("connecting to the database")?;
        tokio::spawn(connection);

        let bucket_name = format!("chaos-{:08x}", rand::random::<u32>());
        let reply = HttpClient::new()
            .send(
                Method::PUT,
                &format!("{}/{bucket_name}", setup.s3_endpoint),
                &[],
                Vec::new(),
            )
            .await
            .with_context(|| format!("creating bucket {bucket_name}"))?;
        if !reply.status.is_success() {
            bail!("creating bucket {bucket_name}: HTTP {}", reply.status);
        }
        Ok(Harness {
            checker: BucketChecker::new(EXPORT_REGION, COMPAT_REGION_PATH, vec![public_key]),
            setup,
            db,
            signing_key_file,
            bucket_name,
            generation: None,
            generations: 0,
            runs: 0,
        })
    }

    /// The database session the driver itself uses.
    pub fn db(&self) -> &tokio_postgres::Client {
        &self.db
    }

    /// The live generation.
    pub fn generation(&self) -> anyhow::Result<&Generation> {
        self.generation
            .as_ref()
            .context("no bucket prefix has been started")
    }

    /// Starts a new generation named after `label`: an empty ledger and a fresh prefix. The
    /// previous generation's objects are deleted.
    pub async fn new_generation(&mut self, label: &str) -> anyhow::Result<Generation> {
        self.wait_unlocked().await?;
        if let Some(old) = self.generation.take() {
            for key in old.bucket.list("").await? {
                old.bucket.delete(&key).await?;
            }
            self.checker.forget(&old.prefix);
        }
        self.db.batch_execute("TRUNCATE exports").await?;
        self.generations += 1;
        let prefix = format!("{label}-{:04}", self.generations);
        let bucket = Bucket::from_url_with_options(
            &format!("s3://{}/{prefix}", self.bucket_name),
            s3_options(&self.setup.s3_endpoint),
            Bucket::default_retry(),
        )?;
        let generation = Generation { prefix, bucket };
        self.generation = Some(generation.clone());
        Ok(generation)
    }

    /// Starts `diagnosis-exporter run-once` on the live generation, its S3 requests going to
    /// `endpoint` (the server itself, or a fault proxy in front of it), with `extra`
    /// variables.
    pub fn start_exporter(
        &mut self,
        endpoint: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<ExporterRun> {
        let generation = self.generation()?.clone();
        self.runs += 1;
        let logs = self.setup.work_dir.join("logs");
        let stdout = logs.join(format!("run-{:05}.out", self.runs));
        let stderr = logs.join(format!("run-{:05}.err", self.runs));
        let mut command = Command::new(&self.setup.exporter);
        command
            .args(["--no-migrate", "run-once"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.setup.database_url)
            .env(
                "BUCKET_URL",
                format!("s3://{}/{}", self.bucket_name, generation.prefix),
            )
            .env("SIGNING_KEY_FILE", &self.signing_key_file)
            .env("AWS_ENDPOINT", endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("REGION", KEY_REGION)
            .env("EXPORT_REGION", EXPORT_REGION)
            .env("COMPAT_REGION_PATH", COMPAT_REGION_PATH)
            .env("EXPORT_GRACE_SECONDS", GRACE_SECONDS.to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(std::fs::File::create(&stderr)?)
            .kill_on_drop(true);
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.setup.exporter.display()))?;
        Ok(ExporterRun {
            child,
            started: Instant::now(),
            stdout,
            stderr,
        })
    }

    /// Waits until no session holds an advisory lock (a killed exporter's session goes when
    /// the server notices its client is gone), ending any that still does after 10 s.
    pub async fn wait_unlocked(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let held: i64 = self
                .db
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
                       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    &[],
                )
                .await?
                .get(0);
            if held == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.terminate_lock_holders().await?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends every session that holds an advisory lock on the database; returns how many.
    pub async fn terminate_lock_holders(&self) -> anyhow::Result<u64> {
        let rows = self
            .db
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_locks
                  WHERE locktype = 'advisory' AND granted
                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await?;
        Ok(rows.iter().filter(|row| row.get::<_, bool>(0)).count() as u64)
    }

    /// A full check of the live generation.
    pub async fn check(&mut self, expectation: Expectation) -> anyhow::Result<CheckReport> {
        let generation = self.generation()?.clone();
        self.checker
            .check(&generation.bucket, &generation.prefix, expectation)
            .await
            .with_context(|| format!("checking {}", generation.prefix))
    }

    /// Starts sampling the live generation's `index.txt`.
    pub fn watch_index(&self) -> anyhow::Result<IndexWatcher> {
        let generation = self.generation()?.clone();
        let tracker: Arc<Mutex<IndexTracker>> = self.checker.tracker();
        let (stop, mut stopped) = watch::channel(false);
        let key = hourly_index_key(EXPORT_REGION);
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                // A failed read is no observation: the full checks report unreadable buckets.
                if let Ok(Some(bytes)) = generation.bucket.get(&key).await {
                    let (hours, _) = index_hours(EXPORT_REGION, &String::from_utf8_lossy(&bytes));
                    let last = hours.iter().copied().max();
                    if last.is_some() {
                        let violation = tracker
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .observe(&generation.prefix, last);
                        seen.extend(violation);
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.wait_for(|stop| *stop) => return seen,
                }
            }
        });
        Ok(IndexWatcher { stop, task })
    }
}

/// The object_store options that reach the S3 server with the credentials it accepts.
pub fn s3_options(endpoint: &str) -> Vec<(String, String)> {
    [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}
