//! The `diagnosis-exporter` binary as an operator runs it: `keygen`, `run-once`
//! against real PostgreSQL into a `file://` bucket, `verify` (accepting the
//! result, rejecting a changed byte, asking an `http://` bucket directly whatever
//! proxy the environment names), clear failures for bad configuration and a
//! store that refuses, and the metrics snapshot a pass writes as it exits.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::process::Command;
use std::sync::{Arc, Mutex};

use diagnosis_tests::binaries::text;
use diagnosis_tests::pg::TestDatabase;
use diagnosis_tests::process::{built_binary, run_exporter, temp_dir};

#[tokio::test]
async fn keygen_run_once_and_verify_work_together() {
    let dir = temp_dir("cli");
    let key = dir.join("signing-key.pem");
    let keygen = run_exporter(&["keygen", "--out", key.to_str().unwrap()], &[]);
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    let public_pem = text(&keygen.stdout);
    assert!(
        public_pem.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{public_pem}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let public_key = dir.join("signing-key.pub.pem");
    std::fs::write(&public_key, &public_pem).unwrap();
    let again = run_exporter(&["keygen", "--out", key.to_str().unwrap()], &[]);
    assert!(!again.status.success(), "an existing key was overwritten");

    let db = TestDatabase::new().await;
    let bucket = dir.join("bucket");
    let configs = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/exposure-configuration"
    );
    let env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("BUCKET_URL", format!("file://{}", bucket.display())),
        ("SIGNING_KEY_FILE", key.display().to_string()),
        ("EXPOSURE_CONFIG_DIR", configs.to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
    ];
    let run = run_exporter(&["run-once"], &env);
    assert!(
        run.status.success(),
        "run-once failed: {}",
        text(&run.stderr)
    );
    assert!(bucket.join("CA/index.txt").exists());
    assert!(bucket.join("CA/index.json").exists());
    assert!(bucket.join("exposure-configuration/CA.json").exists());

    let verify = run_exporter(
        &[
            "verify",
            bucket.to_str().unwrap(),
            "--public-key",
            public_key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    // Without --public-key, the public halves of SIGNING_KEY_FILE are used.
    let verify_env = run_exporter(&["verify", &format!("file://{}", bucket.display())], &env);
    assert!(
        verify_env.status.success(),
        "{}{}",
        text(&verify_env.stdout),
        text(&verify_env.stderr)
    );

    let index = std::fs::read_to_string(bucket.join("CA/index.txt")).unwrap();
    let first = bucket.join(index.lines().next().unwrap());
    let mut bytes = std::fs::read(&first).unwrap();
    let last = bytes.len() - 30;
    bytes[last] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let tampered = run_exporter(
        &[
            "verify",
            bucket.to_str().unwrap(),
            "--public-key",
            public_key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        !tampered.status.success(),
        "a tampered bucket passed verification"
    );
    assert!(
        text(&tampered.stdout).contains("violation"),
        "{}",
        text(&tampered.stdout)
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A listener on a free port that answers every request with `answer` and closes the
/// connection; returns its address and the request lines it received, in order.
fn recording_server(answer: &'static [u8]) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    // Runs until the test process ends: it only ever answers this test's requests.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut buffer = [0_u8; 1024];
            while !head.windows(4).any(|end| end == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            let line = text(&head).lines().next().unwrap_or_default().to_owned();
            seen.lock().unwrap().push(line);
            let _ = stream.write_all(answer);
        }
    });
    (address, requests)
}

/// `verify` judges the server it is given: a proxy named in the environment (as a shell or a
/// CI runner may set one) is not asked, for `http://` or for anything else.
#[test]
fn verify_over_http_asks_the_server_it_is_given_not_a_proxy_from_the_environment() {
    let dir = temp_dir("cli-proxy");
    let key = dir.join("signing-key.pem");
    let keygen = run_exporter(&["keygen", "--out", key.to_str().unwrap()], &[]);
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    let public_key = dir.join("signing-key.pub.pem");
    std::fs::write(&public_key, &keygen.stdout).unwrap();
    let (server, asked) = recording_server(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let (proxy, proxied) = recording_server(
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let proxy_url = format!("http://{proxy}");
    let env: Vec<(&str, String)> = [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .map(|name| (name, proxy_url.clone()))
    .collect();

    let verify = run_exporter(
        &[
            "verify",
            &format!("http://{server}/bucket"),
            "--public-key",
            public_key.to_str().unwrap(),
        ],
        &env,
    );
    let output = format!("{}{}", text(&verify.stdout), text(&verify.stderr));
    assert_eq!(*proxied.lock().unwrap(), Vec::<String>::new(), "{output}");
    let asked = asked.lock().unwrap().clone();
    assert!(
        asked.contains(&"GET /bucket/CA/index.txt HTTP/1.1".to_owned()),
        "{asked:?}\n{output}"
    );
    // An empty bucket is reported, not mistaken for a source that failed.
    assert!(!verify.status.success(), "{output}");
    assert!(text(&verify.stdout).contains("CA/index.txt"), "{output}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn bad_configuration_and_a_refusing_store_fail_clearly() {
    let dir = temp_dir("cli-bad");
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../exporter/fixtures/test-signing-key.pem"
    );
    let db = TestDatabase::new().await;
    let base = vec![
        ("DATABASE_URL", db.url.clone()),
        ("BUCKET_URL", format!("file://{}", dir.display())),
        ("SIGNING_KEY_FILE", key.to_owned()),
    ];
    for (name, value) in [
        ("EXPORT_GRACE_SECONDS", "soon"),
        ("EXPORT_REGION", "not a region"),
        ("SIGNING_KEY_FILE", "/nonexistent/key.pem"),
        ("MAX_KEYS_PER_FILE", "0"),
        ("BUCKET_URL", "ftp://bucket/x"),
    ] {
        let mut env = base.clone();
        env.retain(|(n, _)| *n != name);
        env.push((name, value.to_owned()));
        let run = run_exporter(&["run-once"], &env);
        assert!(!run.status.success(), "{name}={value} was accepted");
        assert!(
            text(&run.stderr).contains(name),
            "{name}: {}",
            text(&run.stderr)
        );
    }
    // A bucket URL that cannot work is configuration: refused before the database is reached
    // (there is none at this address), naming the variable once, the URL and the reason.
    let mut env = base.clone();
    env.retain(|(n, _)| *n != "BUCKET_URL" && *n != "DATABASE_URL");
    env.extend([
        ("BUCKET_URL", "s3:///exports".to_owned()),
        (
            "DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/none".to_owned(),
        ),
    ]);
    let run = run_exporter(&["run-once"], &env);
    let stderr = text(&run.stderr);
    assert!(
        !run.status.success(),
        "a bucket URL without a bucket was accepted"
    );
    assert!(stderr.contains("BUCKET_URL: s3:///exports: "), "{stderr}");
    assert!(stderr.contains("no bucket"), "{stderr}");
    for line in stderr.lines() {
        assert!(line.matches("BUCKET_URL").count() <= 1, "{line}");
    }
    assert!(!stderr.contains("127.0.0.1:1"), "{stderr}");

    let endpoint = std::env::var(diagnosis_tests::s3::S3_ENDPOINT_VARIABLE)
        .expect("run the tests through infra/dev/test");
    let mut env = base.clone();
    env.retain(|(n, _)| *n != "BUCKET_URL");
    env.extend([
        ("BUCKET_URL", "s3://no-such-bucket-here/exports".to_owned()),
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]);
    let run = run_exporter(&["run-once"], &env);
    assert!(
        !run.status.success(),
        "a refusing store did not fail the run"
    );
    assert!(
        text(&run.stderr).contains("no-such-bucket-here")
            || text(&run.stderr).contains("object store"),
        "{}",
        text(&run.stderr)
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn the_scheduled_mode_publishes_on_its_schedule_and_stops_on_sigterm() {
    let dir = temp_dir("cli-scheduled");
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../exporter/fixtures/test-signing-key.pem"
    );
    let db = TestDatabase::new().await;
    let bucket = dir.join("bucket");
    let child = Command::new(built_binary("diagnosis-exporter"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("BUCKET_URL", format!("file://{}", bucket.display()))
        .env("SIGNING_KEY_FILE", key)
        .env("EXPORT_SCHEDULE", "*/1 * * * * *")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first pass runs at start; the schedule then fires every second.
    let index = bucket.join("CA/index.txt");
    let mut waited = 0;
    while !index.exists() && waited < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    assert!(index.exists(), "nothing was published within 30 s");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    let pid = i32::try_from(child.id()).unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    let log = text(&output.stderr);
    assert!(output.status.success(), "{log}");
    // Passes with nothing new write nothing (the indexes keep their bytes), so the log tells
    // how many ran.
    let passes = log.matches("export run completed").count();
    assert!(passes >= 2, "the schedule did not run again: {log}");
    std::fs::remove_dir_all(dir).ok();
}

/// Stores `per_hour` keys in each of the `hours` hours before the current one, published in
/// the hour they were stored (relevant, and closed for the real clock but the newest).
async fn store_keys_of_past_hours(db: &TestDatabase, hours: i32, per_hour: i32) {
    let now_hour = i32::try_from(chrono::Utc::now().timestamp() / 3600).unwrap();
    db.client()
        .await
        .execute(
            "INSERT INTO diagnosis_keys (key_data, rolling_start_interval_number, rolling_period,
                                         transmission_risk_level, report_type, region, originator,
                                         hour_of_submission, publish_hour)
             SELECT substring(sha256(('cli' || h || '-' || k)::bytea) FROM 1 FOR 16),
                    h * 6 - 144, 144, 3, 1, '302', 'ON', h, h
               FROM generate_series($1::int - $2::int, $1::int - 1) h,
                    generate_series(1, $3::int) k",
            &[&now_hour, &hours, &per_hour],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_exporter_refuses_a_pool_smaller_than_a_pass_holds_and_works_with_the_minimum() {
    let dir = temp_dir("cli-pool");
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../exporter/fixtures/test-signing-key.pem"
    );
    let db = TestDatabase::new().await;
    // Three days of keys: the pass publishes hours, daily files and retrieval objects, so its
    // render and upload steps both use the database while it holds its lock.
    store_keys_of_past_hours(&db, 72, 3).await;
    let bucket = dir.join("bucket");
    let env = |pool: &str| {
        vec![
            ("DATABASE_URL", db.url.clone()),
            ("BUCKET_URL", format!("file://{}", bucket.display())),
            ("SIGNING_KEY_FILE", key.to_owned()),
            ("DATABASE_POOL_SIZE", pool.to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
        ]
    };

    for pool in ["1", "2"] {
        let run = run_exporter(&["run-once"], &env(pool));
        let stderr = text(&run.stderr);
        assert!(
            !run.status.success(),
            "DATABASE_POOL_SIZE={pool} was accepted"
        );
        assert!(
            stderr.contains("DATABASE_POOL_SIZE: must be at least 3 for the exporter"),
            "DATABASE_POOL_SIZE={pool}: {stderr}"
        );
        // Refused before the pass: no lock was taken, nothing was published.
        let fences: i64 = db
            .client()
            .await
            .query_one("SELECT count(*) FROM exporter_fence", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(fences, 0, "DATABASE_POOL_SIZE={pool} ran a pass: {stderr}");
        assert!(!bucket.join("CA/index.txt").exists());
    }

    let run = run_exporter(&["run-once"], &env("3"));
    let stdout = text(&run.stdout);
    assert!(
        run.status.success(),
        "run-once with DATABASE_POOL_SIZE=3 failed: {}{stdout}",
        text(&run.stderr)
    );
    // Every hour from the first one holding keys to the last closed one (the newest hour of
    // keys closes ten minutes after it ends), and the complete days among them.
    let counts: Vec<usize> = stdout
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    assert!(
        matches!(counts[..], [71 | 72, 2 | 3, ..]),
        "hours and days published: {stdout}"
    );
    let public_key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../exporter/fixtures/test-signing-key.pub.pem"
    );
    let verify = run_exporter(
        &[
            "verify",
            bucket.to_str().unwrap(),
            "--public-key",
            public_key,
        ],
        &[],
    );
    assert!(
        verify.status.success(),
        "{}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_exporter_still_configured_with_the_submit_services_limits_starts_and_ignores_them() {
    let dir = temp_dir("cli-ignored");
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../exporter/fixtures/test-signing-key.pem"
    );
    let db = TestDatabase::new().await;
    let bucket = dir.join("bucket");
    // As an earlier release's configuration has them, one beyond today's range.
    let env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("BUCKET_URL", format!("file://{}", bucket.display())),
        ("SIGNING_KEY_FILE", key.to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("ONE_TIME_CODE_EXPIRY_MINUTES", "1440".to_owned()),
        ("ENCRYPTION_KEY_VALIDITY_DAYS", "31".to_owned()),
        ("CLAIM_KEY_BAN_DURATION_MINUTES", "60".to_owned()),
    ];
    let run = run_exporter(&["run-once"], &env);
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "run-once failed: {stderr}");
    assert!(bucket.join("CA/index.txt").exists());
    for variable in [
        "ONE_TIME_CODE_EXPIRY_MINUTES",
        "ENCRYPTION_KEY_VALIDITY_DAYS",
        "CLAIM_KEY_BAN_DURATION_MINUTES",
    ] {
        assert!(
            stderr.contains(&format!("{variable} is set but ignored")),
            "{variable}: {stderr}"
        );
    }
    // No replica has recorded its limits: retention says it keeps codes, keypairs and bans.
    assert!(
        stderr.contains("no submit replica has recorded its settings"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// The metrics snapshot lines of a `METRIC_PROVIDER=stdout` run's stdout, each as
/// `(type, metric, labels, value)`.
fn snapshot_lines(stdout: &str) -> Vec<(String, String, BTreeMap<String, String>, f64)> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line.get("metric").is_some())
        .map(|line| {
            assert_eq!(line["service"], "diagnosis-exporter", "{line}");
            let labels = line["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(key, value)| (key.clone(), value.as_str().unwrap().to_owned()))
                .collect();
            (
                line["type"].as_str().unwrap().to_owned(),
                line["metric"].as_str().unwrap().to_owned(),
                labels,
                line["value"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// DESIGN §6, `METRIC_PROVIDER`: a `run-once` pass writes its metrics to stdout as it exits,
/// one JSON object per sample with `stdout`, a table with `pretty`: counters, then gauges,
/// then histograms and summaries, each in name and label order.
#[tokio::test]
async fn run_once_writes_its_metrics_snapshot_as_it_exits() {
    let dir = temp_dir("cli-snapshot");
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../exporter/fixtures/test-signing-key.pem"
    );
    let db = TestDatabase::new().await;
    store_keys_of_past_hours(&db, 3, 2).await;
    let env = |provider: &str, bucket: &str| {
        vec![
            ("DATABASE_URL", db.url.clone()),
            (
                "BUCKET_URL",
                format!("file://{}", dir.join(bucket).display()),
            ),
            ("SIGNING_KEY_FILE", key.to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("METRIC_PROVIDER", provider.to_owned()),
        ]
    };

    let run = run_exporter(&["run-once"], &env("stdout", "json"));
    let stdout = text(&run.stdout);
    assert!(
        run.status.success(),
        "run-once failed: {}",
        text(&run.stderr)
    );
    let lines = snapshot_lines(&stdout);
    let runs = ("outcome", "completed");
    let find = |metric: &str, labels: &[(&str, &str)]| {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        lines
            .iter()
            .find(|(_, name, l, _)| name == metric && *l == labels)
            .unwrap_or_else(|| panic!("{metric}{labels:?} missing from\n{stdout}"))
    };
    let counted = find("exporter_runs_total", &[runs]);
    assert_eq!((counted.0.as_str(), counted.3), ("counter", 1.0));
    let timed = find(
        "exporter_run_duration_seconds_bucket",
        &[runs, ("le", "+Inf")],
    );
    assert_eq!((timed.0.as_str(), timed.3), ("histogram", 1.0));

    let rank = |kind: &str| match kind {
        "counter" => 0,
        "gauge" => 1,
        _ => 2,
    };
    let series: Vec<_> = lines
        .iter()
        .filter(|(kind, ..)| rank(kind) < 2)
        .map(|(kind, name, labels, _)| (rank(kind), name, labels))
        .collect();
    let counters = series.iter().filter(|(rank, ..)| *rank == 0).count();
    assert!(counters >= 4, "{stdout}");
    assert!(
        series.is_sorted(),
        "counters and gauges are not in series order:\n{stdout}"
    );
    assert!(
        lines.iter().map(|(kind, ..)| rank(kind)).is_sorted(),
        "{stdout}"
    );

    let run = run_exporter(&["run-once"], &env("pretty", "table"));
    let stdout = text(&run.stdout);
    assert!(
        run.status.success(),
        "run-once failed: {}",
        text(&run.stderr)
    );
    assert!(
        stdout.contains("── metrics of diagnosis-exporter at "),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|line| line.starts_with("  exporter_runs_total{outcome=\"completed\"} "))
        .unwrap_or_else(|| panic!("no row of completed runs in\n{stdout}"));
    assert!(row.ends_with(" 1"), "{row}");
    std::fs::remove_dir_all(dir).ok();
}
