//! The real binaries started as an operator starts them: a clean environment holding only what
//! a test gives, JSON logs on stderr, and the submit service watched until it serves.
//!
//! This module must never let a started binary outlive its test: every command is killed when
//! dropped, and a command that should end by itself is bounded.

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

use crate::app::{PORTAL_LABEL, PORTAL_TOKEN};
use crate::http_client::HttpClient;
use crate::process::{built_binary, free_addr, temp_dir};
use crate::simulator::Portal;

/// How long a binary may take to start serving, or to end by itself.
const BOUND: Duration = Duration::from_secs(60);

/// `name` (a binary of the workspace) with `args` and nothing in its environment but `PATH`,
/// `LOG_FORMAT=json` and `env`. It is killed when dropped.
pub fn command(name: &str, args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(built_binary(name));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Runs a command that must end by itself; fails the test if it runs for a minute.
pub async fn finish(mut command: Command) -> Output {
    tokio::time::timeout(BOUND, command.output())
        .await
        .expect("the binary did not stop within 60 s")
        .unwrap()
}

/// Bytes as text, for messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The environment of `diagnosis-submit` on `database_url`, with free addresses for both
/// listeners and the test portal's token.
pub fn submit_env(database_url: String) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url),
        ("KEY_CLAIM_TOKEN", format!("{PORTAL_TOKEN}={PORTAL_LABEL}")),
        ("BIND_ADDR", free_addr()),
        ("METRICS_ADDR", free_addr()),
    ]
}

/// The environment of `diagnosis-exporter run-once` on `database_url` into a fresh `file://`
/// bucket, with a fresh signing key.
pub async fn exporter_env(database_url: String) -> Vec<(&'static str, String)> {
    let dir = temp_dir("exporter-env");
    let key = dir.join("signing-key.pem");
    let keygen = finish(command(
        "diagnosis-exporter",
        &["keygen", "--out", key.to_str().unwrap()],
        &[],
    ))
    .await;
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    vec![
        ("DATABASE_URL", database_url),
        (
            "BUCKET_URL",
            format!("file://{}", dir.join("bucket").display()),
        ),
        ("SIGNING_KEY_FILE", key.display().to_string()),
        (
            "EXPOSURE_CONFIG_DIR",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../infra/exposure-configuration"
            )
            .to_owned(),
        ),
    ]
}

/// Starts `diagnosis-submit` with `env` (from [`submit_env`]), waits until `/services/ping`
/// answers 200 and a code is issued through it (a write to the database), stops it, and returns
/// what it logged. Fails the test, with the service's log, if it stops or does not serve within
/// a minute.
pub async fn submit_serves(env: &[(&str, String)]) -> String {
    let bind = env
        .iter()
        .find(|(name, _)| *name == "BIND_ADDR")
        .map(|(_, value)| value.clone())
        .expect("BIND_ADDR is in the environment");
    let mut child = command("diagnosis-submit", &[], env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base_url = format!("http://{bind}");
    let http = HttpClient::new();
    let portal = Portal::new(&base_url, PORTAL_TOKEN);
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().await.unwrap();
            panic!(
                "diagnosis-submit stopped ({}): {}",
                output.status,
                text(&output.stderr)
            );
        }
        let served = match http.get(&format!("{base_url}/services/ping")).await {
            Ok(reply) if reply.status == 200 => portal.issue_code().await.map(|_| ()),
            Ok(reply) => Err(anyhow::anyhow!("/services/ping answered {}", reply.status)),
            Err(e) => Err(e),
        };
        match served {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() > deadline => {
                child.start_kill().unwrap();
                let output = child.wait_with_output().await.unwrap();
                panic!(
                    "diagnosis-submit did not serve within 60 s ({e:#}): {}",
                    text(&output.stderr)
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    child.start_kill().unwrap();
    text(&child.wait_with_output().await.unwrap().stderr)
}
