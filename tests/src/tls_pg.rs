//! The TLS-only PostgreSQL cluster that `infra/dev/test` starts next to the plain one.
//!
//! It accepts TCP connections only over TLS, with a certificate for `IP:127.0.0.1` and
//! `DNS:localhost` signed by a test CA. `DIAGNOSIS_TEST_TLS_DATABASE_URL` names it (without
//! `sslmode`), `DIAGNOSIS_TEST_TLS_CA` is the CA and `DIAGNOSIS_TEST_TLS_OTHER_CA` an unrelated
//! one. Like [`crate::pg`], this module never skips a test: without the cluster it panics and
//! says how to run the tests.

use std::time::Duration;

use diagnosis_core::store::{Store, StoreConfig};

/// The admin URL of the TLS cluster (database `postgres`, no `sslmode`).
pub const TLS_DATABASE_URL_VARIABLE: &str = "DIAGNOSIS_TEST_TLS_DATABASE_URL";
/// The CA that signed the TLS cluster's certificate.
pub const TLS_CA_VARIABLE: &str = "DIAGNOSIS_TEST_TLS_CA";
/// A CA that signed nothing the cluster uses.
pub const TLS_OTHER_CA_VARIABLE: &str = "DIAGNOSIS_TEST_TLS_OTHER_CA";

/// The TLS-only cluster.
#[derive(Debug, Clone)]
pub struct TlsCluster {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub admin_url: String,
    /// The path of the CA certificate that signed the server's certificate.
    pub ca: String,
    /// The path of an unrelated CA certificate.
    pub other_ca: String,
}

fn variable(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{name} is not set: run the tests through infra/dev/test"),
    }
}

impl TlsCluster {
    /// The cluster `infra/dev/test` started.
    ///
    /// # Panics
    /// When the variables are unset: tests never silently skip.
    pub fn from_env() -> TlsCluster {
        TlsCluster {
            admin_url: variable(TLS_DATABASE_URL_VARIABLE),
            ca: variable(TLS_CA_VARIABLE),
            other_ca: variable(TLS_OTHER_CA_VARIABLE),
        }
    }

    /// The host and port of the cluster, e.g. `127.0.0.1:5433`.
    pub fn authority(&self) -> &str {
        let rest = self
            .admin_url
            .split_once('@')
            .map_or(self.admin_url.as_str(), |(_, rest)| rest);
        rest.split('/').next().unwrap_or(rest)
    }

    /// A URL for `database` with `query` (e.g. `sslmode=verify-full&sslrootcert=…`).
    pub fn url(&self, database: &str, query: &str) -> String {
        format!(
            "postgres://postgres@{}/{database}?{query}",
            self.authority()
        )
    }

    /// The `verify-full` query string against the right CA.
    pub fn verify_full(&self) -> String {
        format!("sslmode=verify-full&sslrootcert={}", self.ca)
    }

    /// A store on `url`, as the binaries build it.
    pub fn store(url: &str) -> Result<Store, diagnosis_core::store::StoreError> {
        Store::connect(&StoreConfig {
            database_url: url.to_owned(),
            pool_size: 2,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            application_name: "diagnosis-tls-tests",
        })
    }

    /// A fresh empty database on the cluster (the cluster is thrown away after the run).
    pub async fn create_database(&self) -> String {
        let name = format!("tls_{:016x}", rand::random::<u64>());
        let admin = Self::store(&self.url("postgres", &self.verify_full()))
            .unwrap_or_else(|e| panic!("{e}"));
        let client = admin
            .pool()
            .get()
            .await
            .unwrap_or_else(|e| panic!("cannot reach the TLS cluster: {e}"));
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("cannot create {name}: {e}"));
        name
    }
}

/// Whether the session of one pooled connection of `store` is encrypted, as the server sees it.
pub async fn session_is_tls(store: &Store) -> bool {
    let client = store
        .pool()
        .get()
        .await
        .unwrap_or_else(|e| panic!("no connection: {e}"));
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("reading pg_stat_ssl: {e}"))
        .get(0)
}
