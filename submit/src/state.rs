//! What every handler shares: the store, the clock and the settings.

use std::sync::Arc;
use std::time::Duration;

use diagnosis_core::config::ListenerConfig;
use diagnosis_core::domain::{KeyClaimTokens, Region};
use diagnosis_core::store::{BanPolicy, ClientIdentityKey, Store};
use diagnosis_core::time::Clock;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::client::ForwardedFor;

/// The submit service's behaviour, parsed from the environment by
/// [`crate::config`] or built directly by tests.
#[derive(Clone)]
pub struct Settings {
    pub key_claim_tokens: KeyClaimTokens,
    /// Stored with each code and key (`REGION`, the MCC, default `302`).
    pub region: Region,
    /// Which `X-Forwarded-For` entries name the claiming client
    /// (`TRUST_X_FORWARDED_FOR`, `TRUSTED_PROXIES`).
    pub forwarded_for: ForwardedFor,
    pub initial_remaining_keys: i32,
    pub one_time_code_expiry: chrono::Duration,
    pub encryption_key_validity_days: u32,
    pub ban: BanPolicy,
    pub cors_allow_origin: http::HeaderValue,
    pub metrics_credentials: Option<MetricsCredentials>,
    /// `MAX_CONNECTIONS`: open connections each listener holds at most
    /// (DESIGN §3.4); further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    pub timeouts: Timeouts,
}

impl Settings {
    /// The default of `MAX_CONNECTIONS`.
    pub const DEFAULT_MAX_CONNECTIONS: usize = ListenerConfig::DEFAULT_MAX_CONNECTIONS;
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("key_claim_tokens", &self.key_claim_tokens)
            .field("region", &self.region)
            .field("forwarded_for", &self.forwarded_for)
            .field("initial_remaining_keys", &self.initial_remaining_keys)
            .field("one_time_code_expiry", &self.one_time_code_expiry)
            .field(
                "encryption_key_validity_days",
                &self.encryption_key_validity_days,
            )
            .field("ban", &self.ban)
            .field("cors_allow_origin", &self.cors_allow_origin)
            .field("metrics_credentials", &self.metrics_credentials)
            .field("max_connections", &self.max_connections)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// HTTP Basic credentials of the `/events/...` API.
#[derive(Clone)]
pub struct MetricsCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for MetricsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsCredentials(..)")
    }
}

/// Bounds on how long a client may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time allowed to send the request line and headers. It is also the
    /// longest a connection may sit idle (DESIGN §3.4): hyper's HTTP/1 server
    /// starts this timer when a connection is accepted and again as soon as a
    /// response has been written, so a client that never sends a first or a
    /// next request is disconnected and its connection slot freed (pinned by
    /// the `connections` tests).
    pub header_read: Duration,
    /// Time allowed to send the body once the headers are in.
    pub body_read: Duration,
    /// The longest a response write may make no progress before its
    /// connection is closed (DESIGN §3.4): a client that pipelines requests and
    /// never reads the answers gives its slot back after this long.
    pub write: Duration,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(10),
            write: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// The build's identity, served at `/services/version.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Version {
    pub branch: String,
    pub revision: String,
}

impl Version {
    /// The branch and revision recorded when the binary was built.
    pub fn of_build() -> Version {
        Version {
            branch: env!("DIAGNOSIS_BUILD_BRANCH").to_owned(),
            revision: env!("DIAGNOSIS_BUILD_REVISION").to_owned(),
        }
    }
}

/// Shared by every connection.
#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub settings: Settings,
    /// Keys the identifiers of claiming clients; loaded at start with
    /// [`Store::client_identity_key`].
    pub client_identity: ClientIdentityKey,
    pub version: Version,
    pub prometheus: Option<PrometheusHandle>,
}
