//! What every handler shares: the store, the clock and the settings.

use std::sync::Arc;
use std::time::Duration;

pub use diagnosis_core::basic_auth::MetricsCredentials;
use diagnosis_core::config::ListenerConfig;
use diagnosis_core::domain::{KeyClaimTokens, Region};
use diagnosis_core::store::{
    BanPolicy, ClaimCodeKey, ClientIdentityKey, Store, StoreError, SubmitInstance, SubmitLimits,
};
use diagnosis_core::time::Clock;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::claim_queue::ClaimQueue;
use crate::client_ip::ForwardedFor;
use crate::replica::CurrentKey;

/// The submit service's behaviour, parsed from the environment by
/// [`crate::config`] or built directly by tests.
#[derive(Debug, Clone)]
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
    /// `CLAIM_RECOVERY_MINUTES` (DESIGN §3.1): a keypair claimed longer ago than
    /// this that never received an upload is given back to its hash ID.
    pub claim_recovery: chrono::Duration,
    /// How long a claim may wait for the earlier claims of its client
    /// ([`ClaimQueue`]): as long as a request may wait for a pooled connection
    /// (`DATABASE_CONNECT_TIMEOUT_SECONDS`), and it fails the same way.
    pub claim_queue_wait: Duration,
    pub cors_allow_origin: http::HeaderValue,
    pub metrics_credentials: Option<MetricsCredentials>,
    /// `MAX_CONNECTIONS`: open connections each listener holds at most
    /// (DESIGN §3.4); further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// `DATABASE_STATEMENT_TIMEOUT_MS`, which every statement of an upload runs under: recorded
    /// with the limits, since the exporter's grace must exceed it (DESIGN §2).
    pub statement_timeout: Duration,
    pub timeouts: Timeouts,
}

impl Settings {
    /// The default of `MAX_CONNECTIONS`.
    pub const DEFAULT_MAX_CONNECTIONS: usize = ListenerConfig::DEFAULT_MAX_CONNECTIONS;

    /// The limits this replica records in `submit_settings` (DESIGN §6).
    pub fn limits(&self) -> SubmitLimits {
        SubmitLimits {
            one_time_code_expiry: self.one_time_code_expiry,
            encryption_key_validity_days: self.encryption_key_validity_days,
            claim_ban_duration: self.ban.ban_duration,
            statement_timeout: self.statement_timeout,
        }
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
    /// [`Store::client_identity_key`] and read again every minute while the service runs.
    pub client_identity: CurrentKey<ClientIdentityKey>,
    /// Keys the hashes claims keep of their codes; loaded at start with
    /// [`Store::claim_code_key`] and read again every minute, as the identity key is.
    pub claim_code: CurrentKey<ClaimCodeKey>,
    /// Where the claims of one client wait for each other.
    pub claim_queue: ClaimQueue,
    /// This process, as its row of `submit_settings` names it.
    pub instance: SubmitInstance,
    pub version: Version,
    pub prometheus: Option<PrometheusHandle>,
}

/// Why the service could not start on its database.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("while loading the client-identity secret from submit_secrets: {0}")]
    IdentityKey(StoreError),
    #[error("while loading the claim-code secret from submit_secrets: {0}")]
    ClaimCodeKey(StoreError),
    #[error("while recording this replica's settings in submit_settings: {0}")]
    Settings(StoreError),
}

impl AppState {
    /// The state of a service starting now, as the binary starts it: loads the client-identity
    /// and claim-code secrets (the first replica creates them) and records this replica's limits in
    /// `submit_settings` under a new instance id (DESIGN §6), so the exporter goes by them
    /// before the first request is served.
    pub async fn start(
        store: Store,
        clock: Arc<dyn Clock>,
        settings: Settings,
        version: Version,
    ) -> Result<AppState, StartError> {
        let now = clock.now();
        let key = store
            .client_identity_key(now)
            .await
            .map_err(StartError::IdentityKey)?;
        let claim_code = store
            .claim_code_key(now)
            .await
            .map_err(StartError::ClaimCodeKey)?;
        let instance = SubmitInstance::new(now);
        store
            .record_submit_settings(&instance, &settings.limits())
            .await
            .map_err(StartError::Settings)?;
        Ok(AppState {
            store,
            clock,
            settings,
            client_identity: CurrentKey::new(key),
            claim_code: CurrentKey::new(claim_code),
            claim_queue: ClaimQueue::default(),
            instance,
            version,
            prometheus: None,
        })
    }
}
