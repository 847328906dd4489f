//! The real binaries, as the end-to-end tests start them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A binary of the workspace built next to the running test (`target/debug/NAME`); the test
/// command builds every binary before the tests.
pub fn built_binary(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().unwrap();
    let target = test_exe.parent().and_then(Path::parent).unwrap();
    let binary = target.join(name);
    assert!(
        binary.exists(),
        "{} is not built: run the tests through infra/dev/test (it builds every binary first)",
        binary.display()
    );
    binary
}

/// A fresh, uniquely named directory under the system's temporary directory.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("diagnosis-{label}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `diagnosis-exporter` with `args` to its end, with nothing in its environment but
/// `PATH` and `env`, as an operator's one-off command runs it.
pub fn run_exporter(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(built_binary("diagnosis-exporter"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// libfaketime as Debian installs it (package `faketime`; `infra/dev/test` installs it).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The environment that runs a binary with its wall clock `offset` away from the machine's
/// (libfaketime's relative form: `-3000` is 3 000 s behind, `+2h` two hours ahead). Timers
/// and timeouts keep the real monotonic clock, so only what the binary reads as "now" moves.
pub fn faketime_env(offset: &str) -> Vec<(&'static str, String)> {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: run the tests through infra/dev/test (it installs faketime)"
    );
    vec![
        ("LD_PRELOAD", LIBFAKETIME.to_owned()),
        ("FAKETIME", offset.to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ("FAKETIME_NO_CACHE", "1".to_owned()),
    ]
}

/// A free port on 127.0.0.1, as `host:port` (free when asked: the binary binds it next).
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A real `diagnosis-submit` process, killed when dropped.
#[derive(Debug)]
pub struct SubmitProcess {
    pub base_url: String,
    child: tokio::process::Child,
}

impl SubmitProcess {
    /// Starts `diagnosis-submit` on `database_url` with the test portal token, fresh ports and
    /// `extra` variables, and waits until it answers `/services/ping` (at most a minute).
    pub async fn start(database_url: &str, extra: &[(&str, String)]) -> SubmitProcess {
        use crate::app::{PORTAL_LABEL, PORTAL_TOKEN};
        let bind = free_addr();
        let mut command = tokio::process::Command::new(built_binary("diagnosis-submit"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url)
            .env("KEY_CLAIM_TOKEN", format!("{PORTAL_TOKEN}={PORTAL_LABEL}"))
            .env("BIND_ADDR", &bind)
            .env("METRICS_ADDR", free_addr())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        for (name, value) in extra {
            command.env(name, value);
        }
        let mut process = SubmitProcess {
            base_url: format!("http://{bind}"),
            child: command.spawn().unwrap(),
        };
        process.wait_until_serving().await;
        process
    }

    async fn wait_until_serving(&mut self) {
        let client = crate::http_client::HttpClient::new();
        let ping = format!("{}/services/ping", self.base_url);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("diagnosis-submit stopped before serving ({status})");
            }
            match client.get(&ping).await {
                Ok(reply) if reply.status == 200 => return,
                _ if tokio::time::Instant::now() > deadline => {
                    panic!("diagnosis-submit did not serve within 60 s")
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
}
