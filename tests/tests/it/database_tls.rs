//! TLS to PostgreSQL as DESIGN §6 and §7 ask: `sslmode` and `sslrootcert` honoured as libpq
//! does, against a real cluster that accepts only TLS (started by `infra/dev/test`), through the
//! store and through both binaries as an operator runs them.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use diagnosis_core::store::Store;
use diagnosis_tests::app::PORTAL_TOKEN;
use diagnosis_tests::binaries::{command, exporter_env, finish, submit_env, submit_serves, text};
use diagnosis_tests::pg::TestDatabase;
use diagnosis_tests::process::temp_dir;
use diagnosis_tests::simulator::Portal;
use diagnosis_tests::tls_pg::{TlsCluster, session_is_tls};

/// Every session the server holds for `application` on `database`, and whether all are TLS.
async fn sessions(cluster: &TlsCluster, database: &str, application: &str) -> (i64, bool) {
    let admin = TlsCluster::store(&cluster.url("postgres", &cluster.verify_full())).unwrap();
    let client = admin.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false)
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.datname = $1 AND a.application_name = $2",
            &[&database, &application],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn verify_full_works_end_to_end_for_both_binaries() {
    let cluster = TlsCluster::from_env();
    let database = cluster.create_database().await;
    let url = cluster.url(&database, &cluster.verify_full());

    // The server sees the submit service's sessions as TLS while it serves.
    let env = submit_env(url.clone());
    let bind = env[2].1.clone();
    let mut child = command("diagnosis-submit", &[], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let portal = Portal::new(&format!("http://{bind}"), PORTAL_TOKEN);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "diagnosis-submit stopped"
        );
        if portal.issue_code().await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "diagnosis-submit did not serve within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (count, all_tls) = sessions(&cluster, &database, "diagnosis-submit").await;
    assert!(count >= 1, "no session of diagnosis-submit on {database}");
    assert!(all_tls, "a session of diagnosis-submit is not TLS");
    child.kill().await.unwrap();

    let run = finish(command(
        "diagnosis-exporter",
        &["run-once"],
        &exporter_env(url).await,
    ))
    .await;
    assert!(
        run.status.success(),
        "run-once failed: {}",
        text(&run.stderr)
    );
}

#[tokio::test]
async fn the_server_confirms_each_mode_encrypts() {
    let cluster = TlsCluster::from_env();
    for query in [
        cluster.verify_full(),
        format!("sslmode=verify-ca&sslrootcert={}", cluster.ca),
        format!("sslmode=require&sslrootcert={}", cluster.ca),
        "sslmode=require".to_owned(),
        "sslmode=prefer".to_owned(),
        String::new(),
    ] {
        let store = TlsCluster::store(&cluster.url("postgres", &query)).unwrap();
        store
            .check_connection()
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(session_is_tls(&store).await, "{query}: not TLS");
    }
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let cluster = TlsCluster::from_env();
    let port = cluster.authority().rsplit(':').next().unwrap().to_owned();
    // The certificate names 127.0.0.1 and localhost, not this name; hostaddr still reaches it.
    let other_name = |query: &str| {
        format!("postgres://postgres@db.example.invalid:{port}/postgres?hostaddr=127.0.0.1&{query}")
    };
    let full = TlsCluster::store(&other_name(&cluster.verify_full())).unwrap();
    let error = full
        .check_connection()
        .await
        .expect_err("wrong name accepted");
    let message = error.to_string();
    assert!(
        message.starts_with("DATABASE_URL: the server's certificate does not name the host"),
        "{message}"
    );
    assert!(message.contains("sslmode=verify-full"), "{message}");

    let chain_only = TlsCluster::store(&other_name(&format!(
        "sslmode=verify-ca&sslrootcert={}",
        cluster.ca
    )))
    .unwrap();
    chain_only.check_connection().await.unwrap();
    assert!(session_is_tls(&chain_only).await);

    // The DNS name in the certificate passes verify-full.
    let by_name = TlsCluster::store(&format!(
        "postgres://postgres@localhost:{port}/postgres?{}",
        cluster.verify_full()
    ))
    .unwrap();
    by_name.check_connection().await.unwrap();
}

#[tokio::test]
async fn a_wrong_ca_is_refused_in_every_checking_mode() {
    let cluster = TlsCluster::from_env();
    for mode in ["verify-full", "verify-ca", "require"] {
        let store = TlsCluster::store(&cluster.url(
            "postgres",
            &format!("sslmode={mode}&sslrootcert={}", cluster.other_ca),
        ))
        .unwrap();
        let message = store
            .check_connection()
            .await
            .expect_err("a certificate from another CA was accepted")
            .to_string();
        assert!(
            message.starts_with("DATABASE_URL: the server's certificate is not trusted"),
            "{mode}: {message}"
        );
        assert!(message.contains(&format!("sslmode={mode}")), "{message}");
        assert!(message.contains(&cluster.other_ca), "{message}");
    }
}

#[tokio::test]
async fn both_binaries_stop_at_start_on_a_wrong_ca() {
    let cluster = TlsCluster::from_env();
    let url = cluster.url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", cluster.other_ca),
    );
    let submit = finish(command("diagnosis-submit", &[], &submit_env(url.clone()))).await;
    let exporter = finish(command(
        "diagnosis-exporter",
        &["run-once"],
        &exporter_env(url).await,
    ))
    .await;
    for (name, output) in [("submit", submit), ("exporter", exporter)] {
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{name} started: {stderr}");
        assert!(
            stderr.contains("DATABASE_URL: the server's certificate is not trusted (sslmode=verify-full, sslrootcert="),
            "{name}: {stderr}"
        );
    }
}

#[tokio::test]
async fn both_binaries_stop_at_start_when_the_server_wants_tls_and_sslmode_is_disable() {
    let cluster = TlsCluster::from_env();
    let url = cluster.url("postgres", "sslmode=disable");
    let submit = finish(command("diagnosis-submit", &[], &submit_env(url.clone()))).await;
    let exporter = finish(command(
        "diagnosis-exporter",
        &["run-once"],
        &exporter_env(url).await,
    ))
    .await;
    for (name, output) in [("submit", submit), ("exporter", exporter)] {
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{name} started: {stderr}");
        assert!(
            stderr.contains("DATABASE_URL: the server refuses this connection")
                && stderr.contains("sslmode=disable"),
            "{name}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_bad_root_certificate_file_stops_the_binary_naming_database_url() {
    let cluster = TlsCluster::from_env();
    let dir = temp_dir("tls-bad-ca");
    let not_pem = dir.join("not-a-certificate.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (query, expected) in [
        (
            format!("sslmode=verify-full&sslrootcert={}", not_pem.display()),
            "holds no certificate",
        ),
        (
            format!(
                "sslmode=verify-full&sslrootcert={}",
                dir.join("missing.pem").display()
            ),
            "cannot read sslrootcert",
        ),
        ("sslmode=sometimes".to_owned(), "sslmode must be one of"),
    ] {
        let url = cluster
            .url("postgres", &query)
            .replace("postgres@", "postgres:pw-hunter2@");
        let output = finish(command("diagnosis-submit", &[], &submit_env(url))).await;
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{query}: started");
        assert!(stderr.contains("DATABASE_URL: "), "{query}: {stderr}");
        assert!(stderr.contains(expected), "{query}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{query}: {stderr}");
    }
}

#[tokio::test]
async fn prefer_still_connects_to_a_server_without_tls() {
    let db = TestDatabase::new().await;
    for query in ["?sslmode=prefer", ""] {
        let store = TlsCluster::store(&format!("{}{query}", db.url)).unwrap();
        store
            .check_connection()
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(!session_is_tls(&store).await, "{query}");
    }
    // A mode that needs TLS does not fall back.
    let store = TlsCluster::store(&format!("{}?sslmode=require", db.url)).unwrap();
    let message = store
        .check_connection()
        .await
        .expect_err("plain accepted")
        .to_string();
    assert!(
        message.starts_with("DATABASE_URL: the server does not offer TLS"),
        "{message}"
    );
}

#[tokio::test]
async fn the_store_serves_queries_over_verify_full() {
    let cluster = TlsCluster::from_env();
    let database = cluster.create_database().await;
    let store: Store = TlsCluster::store(&cluster.url(&database, &cluster.verify_full())).unwrap();
    store.migrate().await.unwrap();
    store.check_connection().await.unwrap();
    assert!(session_is_tls(&store).await);
    let env = submit_env(cluster.url(&database, &cluster.verify_full()));
    submit_serves(&env).await;
}

/// A home directory for a binary, whose `~/.postgresql/root.crt` is a copy of `ca` when given.
fn home_with_root_cert(ca: Option<&str>) -> std::path::PathBuf {
    let home = temp_dir("tls-home");
    if let Some(ca) = ca {
        std::fs::create_dir_all(home.join(".postgresql")).unwrap();
        std::fs::copy(ca, home.join(".postgresql/root.crt")).unwrap();
    }
    home
}

/// `diagnosis-exporter migrate` on `url`, run with `HOME` set to `home`.
async fn migrate_at_home(url: &str, home: &Path) -> std::process::Output {
    finish(command(
        "diagnosis-exporter",
        &["migrate"],
        &[
            ("DATABASE_URL", url.to_owned()),
            ("HOME", home.display().to_string()),
        ],
    ))
    .await
}

#[tokio::test]
async fn verify_modes_without_a_root_certificate_stop_at_start_naming_sslrootcert() {
    let cluster = TlsCluster::from_env();
    let home = home_with_root_cert(None);
    let missing = format!("{}/.postgresql/root.crt does not exist", home.display());
    for mode in ["verify-ca", "verify-full"] {
        let url = cluster.url("postgres", &format!("sslmode={mode}"));
        let exporter = migrate_at_home(&url, &home).await;
        let mut env = submit_env(url);
        env.push(("HOME", home.display().to_string()));
        let submit = finish(command("diagnosis-submit", &[], &env)).await;
        for (name, output) in [("exporter", exporter), ("submit", submit)] {
            let stderr = text(&output.stderr);
            assert!(!output.status.success(), "{name} {mode}: started: {stderr}");
            assert!(
                stderr.contains(&format!(
                    "DATABASE_URL: sslmode={mode} needs a root certificate: set sslrootcert"
                )),
                "{name} {mode}: {stderr}"
            );
            assert!(stderr.contains(&missing), "{name} {mode}: {stderr}");
        }
    }
}

#[tokio::test]
async fn the_root_certificate_in_the_home_directory_is_used_without_sslrootcert() {
    let cluster = TlsCluster::from_env();
    let home = home_with_root_cert(Some(&cluster.ca));
    let database = cluster.create_database().await;
    for query in [
        "sslmode=verify-full",
        "sslmode=verify-ca",
        "sslmode=require",
        "",
    ] {
        let run = migrate_at_home(&cluster.url(&database, query), &home).await;
        assert!(run.status.success(), "{query}: {}", text(&run.stderr));
    }
    let mut env = submit_env(cluster.url(&database, "sslmode=verify-full"));
    env.push(("HOME", home.display().to_string()));
    submit_serves(&env).await;
}

#[tokio::test]
async fn another_cas_root_certificate_in_the_home_directory_is_refused_in_every_mode_using_tls() {
    let cluster = TlsCluster::from_env();
    let home = home_with_root_cert(Some(&cluster.other_ca));
    let root_cert = format!("root certificate {}/.postgresql/root.crt", home.display());
    // libpq checks the chain whenever a root certificate exists, require included.
    for mode in ["verify-full", "verify-ca", "require"] {
        let run =
            migrate_at_home(&cluster.url("postgres", &format!("sslmode={mode}")), &home).await;
        let stderr = text(&run.stderr);
        assert!(!run.status.success(), "{mode}: started: {stderr}");
        assert!(
            stderr.contains(&format!(
                "DATABASE_URL: the server's certificate is not trusted (sslmode={mode}, {root_cert}"
            )),
            "{mode}: {stderr}"
        );
    }
    // prefer tries again without TLS, which this server refuses: both reasons are given.
    let run = migrate_at_home(&cluster.url("postgres", "sslmode=prefer"), &home).await;
    let stderr = text(&run.stderr);
    assert!(!run.status.success(), "prefer: started: {stderr}");
    assert!(
        stderr.contains(
            "DATABASE_URL: the server's certificate is not trusted; tried again without TLS, as \
             sslmode=prefer does: the server refuses this connection"
        ),
        "prefer: {stderr}"
    );
    assert!(stderr.contains(&root_cert), "prefer: {stderr}");
}

#[tokio::test]
async fn sslrootcert_system_trusts_the_operating_systems_roots_and_nothing_else() {
    let cluster = TlsCluster::from_env();
    // The cluster's CA at home changes nothing: sslrootcert names where the roots come from.
    let home = home_with_root_cert(Some(&cluster.ca));
    for query in [
        "sslrootcert=system",
        "sslmode=verify-full&sslrootcert=system",
    ] {
        let run = migrate_at_home(&cluster.url("postgres", query), &home).await;
        let stderr = text(&run.stderr);
        assert!(!run.status.success(), "{query}: started: {stderr}");
        assert!(
            stderr.contains(
                "DATABASE_URL: the server's certificate is not trusted (sslmode=verify-full, \
                 sslrootcert=system)"
            ),
            "{query}: {stderr}"
        );
    }
}
