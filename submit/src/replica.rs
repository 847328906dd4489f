//! What a running replica keeps in step with the others through the database (DESIGN §6): it
//! refreshes its row of `submit_settings` (the limits it enforces, which the exporter's
//! retention and grace check go by) and reads the client-identity and claim-code secrets of
//! `submit_secrets` again, every [`REFRESH_PERIOD`] of its clock, so that replicas cannot keep
//! disagreeing about who a client is, or which claim is a repeat, after a secret's row was
//! restored or re-created. It also folds the event logs the requests append to into the daily
//! aggregates (DESIGN §5).
//!
//! A failed refresh is logged and tried again a period later: the replica keeps serving with
//! the key it has. This module must never log the secret or anything derived from it.

use std::sync::{Arc, RwLock};

use diagnosis_core::redacted::Redacted;
use diagnosis_core::store::submit_settings::REFRESH_PERIOD;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// A key derived from a secret of `submit_secrets` that a replica uses now; replaced when the
/// stored secret changes.
#[derive(Debug)]
pub struct CurrentKey<K>(Redacted<RwLock<K>>);

impl<K: Clone> CurrentKey<K> {
    pub fn new(key: K) -> CurrentKey<K> {
        CurrentKey(Redacted::new(RwLock::new(key)))
    }

    /// The key in use.
    pub fn get(&self) -> K {
        match self.0.expose().read() {
            Ok(key) => key.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, key: K) {
        match self.0.expose().write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }
}

/// The refresh loop of [`spawn_refresh`]; dropping it stops the loop.
pub(crate) struct RefreshTask(JoinHandle<()>);

impl Drop for RefreshTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Refreshes the replica's settings row and identity key one [`REFRESH_PERIOD`] after start (the
/// start itself recorded both, [`AppState::start`]), then every period, waiting on the state's
/// clock, until the returned task is dropped.
pub(crate) fn spawn_refresh(state: Arc<AppState>) -> RefreshTask {
    RefreshTask(tokio::spawn(async move {
        loop {
            let next = state.clock.now() + REFRESH_PERIOD;
            state.clock.wait_until(next).await;
            refresh(&state).await;
        }
    }))
}

async fn refresh(state: &AppState) {
    let now = state.clock.now();
    let limits = state.settings.limits();
    if let Err(error) = state
        .store
        .record_submit_settings(&state.instance, &limits)
        .await
    {
        tracing::warn!(
            %error,
            "cannot refresh this replica's settings in submit_settings; trying again in a minute"
        );
    }
    match state.store.client_identity_key(now).await {
        Ok(key) => state.client_identity.replace(key),
        Err(error) => tracing::warn!(
            %error,
            "cannot read the client-identity secret again; keeping the one in use and trying \
             again in a minute"
        ),
    }
    match state.store.claim_code_key(now).await {
        Ok(key) => state.claim_code.replace(key),
        Err(error) => tracing::warn!(
            %error,
            "cannot read the claim-code secret again; keeping the one in use and trying again \
             in a minute"
        ),
    }
    if let Err(error) = state.store.fold_event_logs().await {
        tracing::warn!(
            %error,
            "cannot fold the event logs into the daily aggregates; the events API still counts \
             them, trying again in a minute"
        );
    }
}
