//! `POST /claim-key`: an app trades a one-time code for the server's public key
//! (DESIGN §3.2). Checks run in the contract's order; only wrong codes count
//! towards the client's ban.
//!
//! A banned client is refused twice over: first by a quick read before its
//! body is read, then by the claim transaction itself, which serialises the
//! claims of one client so that concurrent wrong codes cannot slip past the ban
//! (see `Store::claim_one_time_code`). Both wait for the client's turn in the
//! [`ClaimQueue`](crate::claim_queue::ClaimQueue) before they check out a
//! database connection, and give the turn back before the body is read, so one
//! client's claims hold at most one pooled connection of this replica and a
//! slow body holds none.
//!
//! A claim that repeats one whose answer was lost is answered again, with the
//! same server key (DESIGN §3.2).

use diagnosis_core::domain::ServerPublicKey;
use diagnosis_core::request::{MAX_CLAIM_BODY_BYTES, parse_claim_request};
use diagnosis_core::store::{ClaimOutcome, ClaimWindow, ClientIdentifier, HashedCode};
use diagnosis_proto::KeyClaimResponse;
use diagnosis_proto::key_claim_response::ErrorCode;
use http::{Response, StatusCode};
use hyper::body::Incoming;

use crate::error::ClaimError;
use crate::http::{Body, protobuf, read_body};
use crate::state::AppState;

/// A claim that succeeded: its server key, and whether it repeated an earlier one.
struct Claimed {
    server_public: ServerPublicKey,
    repeated: bool,
}

pub async fn claim_key(
    state: &AppState,
    body: Incoming,
    client: &ClientIdentifier,
) -> Result<Response<Body>, ClaimError> {
    let result = claim(state, body, client).await;
    metrics::counter!("submit_claims_total", "outcome" => claim_outcome(&result)).increment(1);
    let claimed = result?;
    let response = KeyClaimResponse {
        error: Some(ErrorCode::None as i32),
        server_public_key: Some(claimed.server_public.as_bytes().to_vec()),
        tries_remaining: Some(state.settings.ban.max_failures),
        remaining_ban_duration: None,
    };
    Ok(protobuf(
        StatusCode::OK,
        &response,
        ErrorCode::None.as_str_name(),
    ))
}

/// The `outcome` label of `submit_claims_total`: a fixed set of names, never
/// anything the client sent.
fn claim_outcome(result: &Result<Claimed, ClaimError>) -> &'static str {
    match result {
        Ok(Claimed {
            repeated: false, ..
        }) => "claimed",
        Ok(Claimed { repeated: true, .. }) => "repeated",
        Err(ClaimError::InvalidCode { .. }) => "invalid_code",
        Err(ClaimError::Banned { .. }) => "banned",
        Err(ClaimError::AppKeyAlreadyRegistered) => "app_key_registered",
        Err(ClaimError::BadRequest | ClaimError::InvalidKey) => "bad_request",
        Err(ClaimError::QueueTimeout(_)) => "queue_timeout",
        Err(ClaimError::Store(_)) => "server_error",
    }
}

async fn claim(
    state: &AppState,
    body: Incoming,
    client: &ClientIdentifier,
) -> Result<Claimed, ClaimError> {
    let settings = &state.settings;
    let now = state.clock.now();
    // Spares a banned client's body the read; the transaction below decides.
    let ban = {
        let _turn = state
            .claim_queue
            .turn(client, settings.claim_queue_wait)
            .await?;
        state.store.active_ban(client, now, settings.ban).await?
    };
    if let Some(remaining) = ban {
        return Err(ClaimError::Banned { remaining });
    }
    let body = read_body(body, MAX_CLAIM_BODY_BYTES, settings.timeouts.body_read)
        .await
        .map_err(|_| ClaimError::BadRequest)?;
    let request = parse_claim_request(&body)?;
    // A code that cannot be one of ours is simply a wrong code.
    let code = request
        .code
        .map(|code| HashedCode::new(&state.claim_code.get(), code));
    let outcome = {
        let _turn = state
            .claim_queue
            .turn(client, settings.claim_queue_wait)
            .await?;
        state
            .store
            .claim_one_time_code(
                code.as_ref(),
                &request.app_public,
                client,
                now,
                ClaimWindow {
                    code_expiry: settings.one_time_code_expiry,
                    keypair_validity_days: settings.encryption_key_validity_days,
                },
                settings.ban,
            )
            .await?
    };
    answer_of(settings, outcome)
}

/// The answer the store's verdict on a claim means (DESIGN §3.2).
fn answer_of(
    settings: &crate::state::Settings,
    outcome: ClaimOutcome,
) -> Result<Claimed, ClaimError> {
    match outcome {
        ClaimOutcome::Claimed(server_public) => Ok(Claimed {
            server_public,
            repeated: false,
        }),
        ClaimOutcome::Repeated(server_public) => Ok(Claimed {
            server_public,
            repeated: true,
        }),
        ClaimOutcome::Banned { remaining } => Err(ClaimError::Banned { remaining }),
        ClaimOutcome::AppKeyAlreadyRegistered => Err(ClaimError::AppKeyAlreadyRegistered),
        ClaimOutcome::InvalidCode { failures } => Err(invalid_code(settings, failures)),
    }
}

/// A wrong code, with the tries left and the ban it may start.
fn invalid_code(settings: &crate::state::Settings, failures: u32) -> ClaimError {
    // Claims of one client are serialised, so exactly one failure reaches the
    // limit and starts the ban.
    let banned_now = failures >= settings.ban.max_failures;
    if banned_now {
        metrics::counter!("submit_claim_bans_total").increment(1);
    }
    ClaimError::InvalidCode {
        tries_remaining: settings.ban.max_failures.saturating_sub(failures),
        ban: if banned_now {
            settings.ban.ban_duration
        } else {
            chrono::Duration::zero()
        },
    }
}
