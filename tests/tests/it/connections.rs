//! Bounded connections and the internal listeners (DESIGN §3.4, §7): the
//! public listener holds at most `MAX_CONNECTIONS` connections and leaves the
//! rest in the kernel's accept queue, idle and silent connections are closed
//! after the header timeout, memory stays bounded under a crowd of idle
//! clients, clients that pipeline requests and never read the answers give
//! their slots back after the write timeout on every listener (the submit
//! service's two and the exporter's), accepted sockets have TCP keepalive, and
//! `METRICS_ADDR` is opened only when it serves something, so the binaries
//! started with defaults share a host.

use std::collections::HashSet;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diagnosis_tests::app::{PORTAL_LABEL, PORTAL_TOKEN, TestApp};
use diagnosis_tests::http_client::HttpClient;
use diagnosis_tests::metrics::Exposition;
use diagnosis_tests::pg::TestDatabase;
use diagnosis_tests::process::{built_binary, temp_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

const PING: &[u8] = b"GET /services/ping HTTP/1.1\r\nHost: x\r\n\r\n";

/// A local port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A spawned binary, killed when the test ends however it ends. Its stderr
/// (the logs) goes to a file, shown when an assertion about it fails.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, args: &[&str], env: &[(&str, String)], dir: &Path) -> Process {
        let mut command = Command::new(built_binary(name));
        command.args(args);
        Process::start(name, command, env, dir)
    }

    /// Starts `command`, which runs the binary `name`, with only `env` (and `PATH`), its
    /// stderr into a log file in `dir`.
    fn start(
        name: &'static str,
        mut command: Command,
        env: &[(&str, String)],
        dir: &Path,
    ) -> Process {
        let log = dir.join(format!("{name}-{:08x}.log", rand::random::<u32>()));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        for (variable, value) in env {
            command.env(variable, value);
        }
        Process {
            name,
            child: command.spawn().unwrap(),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the logs if the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited ({status}); its logs:\n{}",
                self.name,
                self.logs()
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of a submit service over `db` answering on `bind_port`.
fn submit_env(db: &TestDatabase, bind_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        ("DATABASE_POOL_SIZE", "2".to_owned()),
        ("KEY_CLAIM_TOKEN", format!("{PORTAL_TOKEN}={PORTAL_LABEL}")),
        ("BIND_ADDR", format!("127.0.0.1:{bind_port}")),
    ]
}

/// Waits until `url` answers `expected`, or panics after 60 s with the logs.
async fn wait_for(process: &mut Process, url: &str, expected: u16) {
    let client = HttpClient::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        process.assert_running();
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(5), client.get(url)).await
            && reply.status == expected
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer {expected} within 60 s; logs of {}:\n{}",
            process.name,
            process.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scheduled exporter over `db` (migrated already), publishing into a folder
/// of `dir` with a fresh signing key, with `extra` variables on top.
fn spawn_exporter(db: &TestDatabase, dir: &Path, extra: &[(&str, String)]) -> Process {
    let key = dir.join("signing-key.pem");
    let keygen = Command::new(built_binary("diagnosis-exporter"))
        .args(["keygen", "--out", key.to_str().unwrap()])
        .env_clear()
        .output()
        .unwrap();
    assert!(
        keygen.status.success(),
        "{}",
        String::from_utf8_lossy(&keygen.stderr)
    );
    let bucket = dir.join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let mut env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("BUCKET_URL", format!("file://{}", bucket.display())),
        ("SIGNING_KEY_FILE", key.display().to_string()),
    ];
    env.extend(extra.iter().cloned());
    Process::spawn("diagnosis-exporter", &["--no-migrate"], &env, dir)
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How many sockets a process has open (listeners, database, clients).
fn open_sockets(pid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let sockets = entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count();
    u64::try_from(sockets).unwrap()
}

/// The public listener's open connections as the service reports them.
async fn open_connections_gauge(client: &HttpClient, metrics_url: &str) -> Option<u64> {
    let reply = client.get(metrics_url).await.ok()?;
    let metrics = Exposition::parse(&reply.text()).ok()?;
    let open = metrics.value("submit_open_connections", &[("listener", "api")])?;
    Some(open as u64)
}

/// Reads from a connection until the server closes it; panics if it stays
/// open for `within`.
async fn assert_closed_by_server(stream: &mut TcpStream, within: Duration, what: &str) {
    let mut sink = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "{what}: the server kept the connection open");
}

/// Sends one keep-alive request and reads its whole response, leaving the
/// connection open.
async fn one_keep_alive_ping(stream: &mut TcpStream) {
    stream.write_all(PING).await.unwrap();
    let mut response = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !response.ends_with(b"\r\n\r\nOK\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buffer))
            .await
            .expect("a ping was answered")
            .unwrap();
        assert!(n > 0, "the connection closed before the ping was answered");
        response.extend_from_slice(&buffer[..n]);
    }
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let app = TestApp::spawn_with(|s| s.timeouts.header_read = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    assert_closed_by_server(&mut silent, Duration::from_secs(10), "silent connection").await;
}

#[tokio::test]
async fn a_keep_alive_connection_left_idle_is_closed() {
    let app = TestApp::spawn_with(|s| s.timeouts.header_read = Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    one_keep_alive_ping(&mut stream).await;
    assert_closed_by_server(&mut stream, Duration::from_secs(10), "idle keep-alive").await;
}

#[tokio::test]
async fn clients_beyond_max_connections_wait_until_a_slot_is_free() {
    let app = TestApp::spawn_with(|s| {
        s.max_connections = 2;
        s.timeouts.header_read = Duration::from_secs(120);
    })
    .await;
    let mut first = TcpStream::connect(app.addr).await.unwrap();
    one_keep_alive_ping(&mut first).await;
    let mut second = TcpStream::connect(app.addr).await.unwrap();
    one_keep_alive_ping(&mut second).await;

    // Both slots are held by idle connections: a third client is queued, not answered...
    let client = HttpClient::new();
    let url = format!("{}/services/ping", app.base_url);
    let third = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move { client.get(&url).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served while two were open with MAX_CONNECTIONS=2"
    );
    // ...while the connections the service holds are still answered.
    one_keep_alive_ping(&mut second).await;

    // Closing one connection frees its slot for the queued client.
    drop(first);
    let reply = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the queued client was served once a slot was free")
        .unwrap()
        .unwrap();
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (200, "OK\n".to_owned())
    );
}

/// 200 idle clients against `MAX_CONNECTIONS=50`: 50 that completed one
/// keep-alive request (holding every slot) and 150 that never send a byte. A
/// new client is answered once the idle ones time out, the service never holds
/// more than 50 of them, and its memory stays bounded.
#[tokio::test]
async fn a_crowd_of_idle_connections_neither_starves_new_clients_nor_grows_memory() {
    const MAX_CONNECTIONS: u64 = 50;
    const KEEP_ALIVE: usize = 50;
    const SILENT: usize = 150;

    let db = TestDatabase::new().await;
    let dir = temp_dir("connections");
    let (api_port, metrics_port) = (free_port(), free_port());
    let mut env = submit_env(&db, api_port);
    env.extend([
        ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
        ("METRIC_PROVIDER", "prometheus".to_owned()),
        ("MAX_CONNECTIONS", MAX_CONNECTIONS.to_string()),
        ("HTTP_READ_TIMEOUT_SECONDS", "2".to_owned()),
    ]);
    let mut submit = Process::spawn("diagnosis-submit", &[], &env, &dir);
    let ping_url = format!("http://127.0.0.1:{api_port}/services/ping");
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    wait_for(&mut submit, &ping_url, 200).await;
    let pid = submit.pid();
    let (rss_before, hwm_before) = memory_kib(pid);

    // Watch the gauge and the process's sockets until the test is done.
    let done = Arc::new(AtomicBool::new(false));
    let (most_gauge, most_sockets) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let watcher = tokio::spawn({
        let (done, most_gauge, most_sockets) = (
            Arc::clone(&done),
            Arc::clone(&most_gauge),
            Arc::clone(&most_sockets),
        );
        async move {
            let client = HttpClient::new();
            while !done.load(Ordering::SeqCst) {
                if let Some(open) = open_connections_gauge(&client, &metrics_url).await {
                    most_gauge.fetch_max(open, Ordering::SeqCst);
                }
                most_sockets.fetch_max(open_sockets(pid), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    let address = format!("127.0.0.1:{api_port}");
    let mut idle = Vec::with_capacity(KEEP_ALIVE + SILENT);
    for _ in 0..KEEP_ALIVE {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        one_keep_alive_ping(&mut stream).await;
        idle.push(stream);
    }
    for _ in 0..SILENT {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }

    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(30), HttpClient::new().get(&ping_url))
        .await
        .expect("a new client was answered within 30 s")
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (200, "OK\n".to_owned())
    );

    // Every idle connection, kept-alive or silent, was closed by the service.
    for (i, stream) in idle.iter_mut().enumerate() {
        assert_closed_by_server(stream, Duration::from_secs(30), &format!("idle client {i}")).await;
    }
    done.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    submit.assert_running();

    let (rss_after, hwm_after) = memory_kib(pid);
    let most_gauge = most_gauge.load(Ordering::SeqCst);
    let most_sockets = most_sockets.load(Ordering::SeqCst);
    eprintln!(
        "new client answered after {waited:?}; most open connections {most_gauge}, most sockets \
         {most_sockets}; VmRSS {rss_before} -> {rss_after} KiB, VmHWM {hwm_before} -> {hwm_after} KiB"
    );
    assert_eq!(
        most_gauge, MAX_CONNECTIONS,
        "the service held more than MAX_CONNECTIONS connections, or the test never filled them"
    );
    // Two listeners, at most two database connections, the watcher's own
    // connection and a little slack: never the 200 idle clients.
    assert!(
        most_sockets <= MAX_CONNECTIONS + 10,
        "the service had {most_sockets} sockets open"
    );
    let bound_kib = 64 * 1024;
    assert!(
        rss_after.saturating_sub(rss_before) < bound_kib,
        "VmRSS grew from {rss_before} to {rss_after} KiB"
    );
    assert!(
        hwm_after.saturating_sub(hwm_before) < bound_kib,
        "VmHWM grew from {hwm_before} to {hwm_after} KiB"
    );
}

/// The shipped defaults on one host: two submit services and a scheduled
/// exporter, none with `METRIC_PROVIDER`, all on the default `METRICS_ADDR`.
#[tokio::test]
async fn services_started_with_defaults_share_a_host() {
    let db = TestDatabase::new().await;
    let dir = temp_dir("defaults");
    let (first_port, second_port) = (free_port(), free_port());
    let mut first = Process::spawn("diagnosis-submit", &[], &submit_env(&db, first_port), &dir);
    wait_for(
        &mut first,
        &format!("http://127.0.0.1:{first_port}/services/ping"),
        200,
    )
    .await;
    let mut second = Process::spawn(
        "diagnosis-submit",
        &["--no-migrate"],
        &submit_env(&db, second_port),
        &dir,
    );
    wait_for(
        &mut second,
        &format!("http://127.0.0.1:{second_port}/services/ping"),
        200,
    )
    .await;
    let mut exporter = spawn_exporter(&db, &dir, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    first.assert_running();
    second.assert_running();
    exporter.assert_running();
    for port in [first_port, second_port] {
        let ping = HttpClient::new()
            .get(&format!("http://127.0.0.1:{port}/services/ping"))
            .await
            .unwrap();
        assert_eq!(ping.status, 200);
    }
    for (process, says) in [
        (&first, "(METRICS_ADDR) is not opened"),
        (&second, "(METRICS_ADDR) is not opened"),
        (&exporter, "opens no listener"),
    ] {
        let logs = process.logs();
        assert!(logs.contains(says), "{}: {logs}", process.name);
    }
}

/// The internal listener is opened when it serves something: Prometheus
/// metrics (either binary) or the events API (submit); the exporter's closes a
/// connection that never completes its headers.
#[tokio::test]
async fn the_internal_listener_opens_when_it_serves_something() {
    let db = TestDatabase::new().await;
    let dir = temp_dir("internal");
    let client = HttpClient::new();

    let (api_port, metrics_port) = (free_port(), free_port());
    let mut env = submit_env(&db, api_port);
    env.extend([
        ("METRIC_PROVIDER", "prometheus".to_owned()),
        ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
    ]);
    let mut prometheus = Process::spawn("diagnosis-submit", &[], &env, &dir);
    wait_for(
        &mut prometheus,
        &format!("http://127.0.0.1:{metrics_port}/metrics"),
        200,
    )
    .await;

    let (api_port, events_port) = (free_port(), free_port());
    let mut env = submit_env(&db, api_port);
    env.extend([
        ("METRICS_USERNAME", "ops".to_owned()),
        ("METRICS_PASSWORD", "metrics-password".to_owned()),
        ("METRICS_ADDR", format!("127.0.0.1:{events_port}")),
    ]);
    let mut events = Process::spawn("diagnosis-submit", &["--no-migrate"], &env, &dir);
    wait_for(
        &mut events,
        &format!("http://127.0.0.1:{events_port}/events/2026-11-28"),
        401,
    )
    .await;
    let authorized = client
        .send(
            hyper::Method::GET,
            &format!("http://127.0.0.1:{events_port}/events/2026-11-28"),
            &[("authorization", "Basic b3BzOm1ldHJpY3MtcGFzc3dvcmQ=")],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(authorized.status, 200, "{}", authorized.text());

    let exporter_port = free_port();
    let mut exporter = spawn_exporter(
        &db,
        &dir,
        &[
            ("METRIC_PROVIDER", "prometheus".to_owned()),
            ("METRICS_ADDR", format!("127.0.0.1:{exporter_port}")),
            ("HTTP_READ_TIMEOUT_SECONDS", "1".to_owned()),
        ],
    );
    wait_for(
        &mut exporter,
        &format!("http://127.0.0.1:{exporter_port}/metrics"),
        200,
    )
    .await;
    let mut half_sent = TcpStream::connect(("127.0.0.1", exporter_port))
        .await
        .unwrap();
    half_sent
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_closed_by_server(
        &mut half_sent,
        Duration::from_secs(15),
        "exporter, half-sent headers",
    )
    .await;
    let mut silent = TcpStream::connect(("127.0.0.1", exporter_port))
        .await
        .unwrap();
    assert_closed_by_server(&mut silent, Duration::from_secs(15), "exporter, silent").await;
    let logs = exporter.logs();
    assert!(
        logs.contains("serving /metrics on the internal listener"),
        "{logs}"
    );
    exporter.assert_running();
    prometheus.assert_running();
    events.assert_running();
}

/// A client that pipelines `GET path` for as long as the server reads its
/// requests and never reads an answer. Its receive buffer is 4 KiB, so once the
/// kernels on both sides hold what they can of its responses, the server's
/// writes stall (DESIGN §3.4).
struct Stalling {
    unread: OwnedReadHalf,
    writer: JoinHandle<()>,
}

impl Stalling {
    async fn connect(addr: SocketAddr, path: &str) -> Stalling {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let (unread, mut write) = socket.connect(addr).await.unwrap().into_split();
        let requests = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").repeat(100);
        // Ends when a write fails: the server closed or reset the connection.
        let writer =
            tokio::spawn(
                async move { while write.write_all(requests.as_bytes()).await.is_ok() {} },
            );
        Stalling { unread, writer }
    }

    /// Waits until the server has answered at least once (the answer waits,
    /// unread, in the receive buffer): the connection holds a slot.
    async fn wait_answered(&mut self, what: &str) {
        let mut first = [0_u8; 1];
        let peeked = tokio::time::timeout(Duration::from_secs(60), self.unread.peek(&mut first))
            .await
            .unwrap_or_else(|_| panic!("{what}: not answered within 60 s"));
        assert_eq!(peeked.ok(), Some(1), "{what}: closed before any answer");
    }

    /// Waits until the server has closed the connection, which ends the
    /// writer's pipeline with an error, without reading a byte (reading would
    /// be the progress that keeps the connection going).
    async fn wait_closed_by_server(&mut self, within: Duration, what: &str) {
        tokio::time::timeout(within, &mut self.writer)
            .await
            .unwrap_or_else(|_| panic!("{what}: the server kept it open for {within:?}"))
            .unwrap();
    }
}

impl Drop for Stalling {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

/// The connections the process `pid` has accepted on `port` (IPv4) and holds
/// open: its sockets whose local port is `port`. Connections still waiting in
/// the accept queue belong to no process, so they are not counted.
fn accepted_connections(pid: u32, port: u16) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: HashSet<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| {
            let local_port = fields[1].rsplit(':').next().unwrap();
            u16::from_str_radix(local_port, 16).unwrap() == port
                && fields[3] == "01"
                && inodes.contains(fields[9])
        })
        .count()
}

/// The server side of the connection from client port `client_port` to
/// `port`, from `/proc/net/tcp`: its timer kind (`tr`: 2 is keepalive) and the
/// time until the timer fires, in clock ticks (`tm->when`).
fn server_socket_timer(port: u16, client_port: u16) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    let remote = format!(":{client_port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !(fields[1].ends_with(&local) && fields[2].ends_with(&remote)) {
            return None;
        }
        let (kind, when) = fields[5].split_once(':')?;
        Some((
            u8::from_str_radix(kind, 16).ok()?,
            u64::from_str_radix(when, 16).ok()?,
        ))
    })
}

/// The write timeout of the stalling tests, and the bound within which they
/// expect a slot back: the stalled connections time out, then the two queued
/// behind them stall and time out in turn, plus a generous margin for a loaded
/// machine. The header timeout is far longer, so only the write timeout can
/// close a stalled connection within the bound.
const STALL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
const STALL_BOUND: Duration = Duration::from_secs(2 + 20);
const STALL_MAX_CONNECTIONS: usize = 4;

/// `STALL_MAX_CONNECTIONS + 2` clients pipeline requests to `path` on the
/// listener at `port` of the process `pid` and never read: the first hold
/// every slot, two more wait in the accept queue. A new client is still
/// answered within [`STALL_BOUND`], every stalling client is closed by the
/// server within it, and the process never holds more than
/// `STALL_MAX_CONNECTIONS` of them. Returns how long the new client waited.
async fn stalled_readers_give_their_slots_back(pid: u32, port: u16, path: &str) -> Duration {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let done = Arc::new(AtomicBool::new(false));
    let most = Arc::new(AtomicU64::new(0));
    let watcher = tokio::spawn({
        let (done, most) = (Arc::clone(&done), Arc::clone(&most));
        async move {
            while !done.load(Ordering::SeqCst) {
                most.fetch_max(accepted_connections(pid, port) as u64, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let mut stalling = Vec::new();
    for _ in 0..STALL_MAX_CONNECTIONS + 2 {
        stalling.push(Stalling::connect(addr, path).await);
    }
    for (i, client) in stalling.iter_mut().take(STALL_MAX_CONNECTIONS).enumerate() {
        client.wait_answered(&format!("stalling client {i}")).await;
    }

    let started = Instant::now();
    let reply = tokio::time::timeout(
        STALL_BOUND,
        HttpClient::new().get(&format!("http://{addr}{path}")),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("{path}: a new client was not answered within {STALL_BOUND:?} while clients stalled")
    })
    .unwrap();
    let waited = started.elapsed();
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    let assert_capped = || {
        let now = accepted_connections(pid, port) as u64;
        let most = most.fetch_max(now, Ordering::SeqCst).max(now);
        assert!(
            most <= STALL_MAX_CONNECTIONS as u64,
            "{path}: the listener held {most} connections with \
             MAX_CONNECTIONS={STALL_MAX_CONNECTIONS}"
        );
    };
    assert_capped();

    for (i, client) in stalling.iter_mut().enumerate() {
        client
            .wait_closed_by_server(STALL_BOUND, &format!("{path}: stalling client {i}"))
            .await;
    }
    done.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    assert_capped();
    waited
}

/// DESIGN §3.4, "No connection keeps its slot forever", on both listeners of
/// the submit service: clients that pipeline requests and never read cannot
/// keep a new client from being answered, and the connections they held are
/// counted as closed by the write timeout.
#[tokio::test]
async fn clients_that_never_read_give_their_slots_back_on_both_submit_listeners() {
    let db = TestDatabase::new().await;
    let dir = temp_dir("stalled-submit");
    let (api_port, metrics_port) = (free_port(), free_port());
    let mut env = submit_env(&db, api_port);
    env.extend([
        ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
        ("METRIC_PROVIDER", "prometheus".to_owned()),
        ("MAX_CONNECTIONS", STALL_MAX_CONNECTIONS.to_string()),
        ("HTTP_READ_TIMEOUT_SECONDS", "60".to_owned()),
        (
            "HTTP_WRITE_TIMEOUT_SECONDS",
            STALL_WRITE_TIMEOUT.as_secs().to_string(),
        ),
    ]);
    let mut submit = Process::spawn("diagnosis-submit", &[], &env, &dir);
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    wait_for(&mut submit, &metrics_url, 200).await;
    let pid = submit.pid();

    let api = stalled_readers_give_their_slots_back(pid, api_port, "/services/ping").await;
    let internal = stalled_readers_give_their_slots_back(pid, metrics_port, "/metrics").await;
    eprintln!(
        "a new client waited {api:?} on the public listener, {internal:?} on the internal one"
    );
    submit.assert_running();

    let metrics = HttpClient::new().get(&metrics_url).await.unwrap().text();
    let metrics = Exposition::parse(&metrics).unwrap();
    for listener in ["api", "internal"] {
        let labels = [("listener", listener), ("reason", "write_timeout")];
        assert_eq!(
            metrics.counter("submit_connections_closed_total", &labels),
            (STALL_MAX_CONNECTIONS + 2) as f64,
            "submit_connections_closed_total{labels:?}"
        );
    }
}

/// The same on the scheduled exporter's internal listener, which is capped by
/// `MAX_CONNECTIONS` and timed by `HTTP_WRITE_TIMEOUT_SECONDS` as the submit
/// service's listeners are (DESIGN §3.4).
#[tokio::test]
async fn clients_that_never_read_give_their_slots_back_on_the_exporter_listener() {
    let db = TestDatabase::new().await;
    let dir = temp_dir("stalled-exporter");
    let port = free_port();
    let mut exporter = spawn_exporter(
        &db,
        &dir,
        &[
            ("METRIC_PROVIDER", "prometheus".to_owned()),
            ("METRICS_ADDR", format!("127.0.0.1:{port}")),
            ("MAX_CONNECTIONS", STALL_MAX_CONNECTIONS.to_string()),
            ("HTTP_READ_TIMEOUT_SECONDS", "60".to_owned()),
            (
                "HTTP_WRITE_TIMEOUT_SECONDS",
                STALL_WRITE_TIMEOUT.as_secs().to_string(),
            ),
        ],
    );
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    wait_for(&mut exporter, &metrics_url, 200).await;

    let waited = stalled_readers_give_their_slots_back(exporter.pid(), port, "/metrics").await;
    eprintln!("a new client waited {waited:?} on the exporter's listener");
    exporter.assert_running();
    let metrics = HttpClient::new().get(&metrics_url).await.unwrap().text();
    let metrics = Exposition::parse(&metrics).unwrap();
    assert_eq!(
        metrics.counter(
            "exporter_connections_closed_total",
            &[("reason", "write_timeout")]
        ),
        (STALL_MAX_CONNECTIONS + 2) as f64
    );

    // Accepted sockets have keepalive there too.
    assert_keepalive_on_the_server_side(port).await;
}

/// Connects to `port` and checks, in `/proc/net/tcp`, that the server's side of
/// the idle connection runs the keepalive timer, due within the 30 s of silence
/// after which the first probe goes out (DESIGN §3.4).
async fn assert_keepalive_on_the_server_side(port: u16) {
    let client = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let client_port = client.local_addr().unwrap().port();
    // The accept happens on the server's own time: wait for its socket.
    let deadline = Instant::now() + Duration::from_secs(30);
    let timer = loop {
        match server_socket_timer(port, client_port) {
            Some(timer @ (2, _)) => break timer,
            other => assert!(
                Instant::now() < deadline,
                "the server's socket has no keepalive timer: (timer kind, ticks) {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // `tm->when` is in clock ticks, 100 a second.
    assert!(timer.1 <= 30 * 100, "keepalive due in {} ticks", timer.1);
    drop(client);
}

#[tokio::test]
async fn accepted_sockets_have_tcp_keepalive() {
    let app = TestApp::spawn_with(|s| s.timeouts.header_read = Duration::from_secs(120)).await;
    assert_keepalive_on_the_server_side(app.addr.port()).await;
}

/// A process's soft open-file limit is often far below `MAX_CONNECTIONS` (1024 is the usual
/// default, under a hard limit many times larger): the service raises it to the hard limit at
/// start, so that `MAX_CONNECTIONS`, not the file descriptors, bounds its clients, and a crowd
/// below `MAX_CONNECTIONS` leaves room for new clients and database connections.
#[tokio::test]
async fn a_soft_open_file_limit_below_max_connections_is_raised_at_start() {
    const SOFT_LIMIT: usize = 64;
    const SILENT: usize = 90;

    let db = TestDatabase::new().await;
    let dir = temp_dir("connections-nofile");
    let api_port = free_port();
    let mut env = submit_env(&db, api_port);
    env.extend([
        ("MAX_CONNECTIONS", "200".to_owned()),
        ("HTTP_READ_TIMEOUT_SECONDS", "120".to_owned()),
    ]);
    let mut submit = submit_under_ulimit(&format!("-Sn {SOFT_LIMIT}"), &env, &dir);
    let ping_url = format!("http://127.0.0.1:{api_port}/services/ping");
    wait_for(&mut submit, &ping_url, 200).await;

    let address = format!("127.0.0.1:{api_port}");
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(&address).await.unwrap());
    }
    let portal =
        diagnosis_tests::simulator::Portal::new(&format!("http://{address}"), PORTAL_TOKEN);
    let issued = tokio::time::timeout(Duration::from_secs(30), portal.issue_code()).await;
    submit.assert_running();
    assert!(
        matches!(issued, Ok(Ok(_))),
        "no code within 30 s beside {SILENT} silent clients (MAX_CONNECTIONS 200, soft limit \
         {SOFT_LIMIT}): {issued:?}; logs:\n{}",
        submit.logs()
    );
    drop(silent);
}

/// `diagnosis-submit` with `env`, its open-file limit set by `ulimit {ulimit}` first, logging
/// into `dir`.
fn submit_under_ulimit(ulimit: &str, env: &[(&'static str, String)], dir: &Path) -> Process {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        &format!("ulimit {ulimit} && exec \"$0\""),
        built_binary("diagnosis-submit").to_str().unwrap(),
    ]);
    Process::start("diagnosis-submit", command, env, dir)
}

/// The open-file limit must hold every connection the process may keep at once: each
/// listener's `MAX_CONNECTIONS` and the database pool, not one listener's alone. Under a limit
/// of 300, two listeners of 200 (a crowd on the public one would leave the internal one and
/// the database no descriptor) are warned of at start; under 1000 nothing is said.
#[tokio::test]
async fn the_open_file_warning_counts_every_listener_and_the_pool() {
    const WARNING: &str = "the open-file limit is below the connections this process may hold";
    let db = TestDatabase::new().await;
    for (limit, warns) in [(300, true), (1000, false)] {
        let dir = temp_dir("connections-nofile-warning");
        let (api_port, metrics_port) = (free_port(), free_port());
        let mut env = submit_env(&db, api_port);
        env.extend([
            ("MAX_CONNECTIONS", "200".to_owned()),
            ("METRIC_PROVIDER", "prometheus".to_owned()),
            ("METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
        ]);
        let mut submit = submit_under_ulimit(&format!("-n {limit}"), &env, &dir);
        wait_for(
            &mut submit,
            &format!("http://127.0.0.1:{api_port}/services/ping"),
            200,
        )
        .await;
        wait_for(
            &mut submit,
            &format!("http://127.0.0.1:{metrics_port}/metrics"),
            200,
        )
        .await;
        let logs = submit.logs();
        assert_eq!(
            logs.contains(WARNING),
            warns,
            "open-file limit {limit}, two listeners of 200: warned? logs:\n{logs}"
        );
    }
}
