//! `POST /new-key-claim[/{hashID}]`: a health portal issues a one-time code (DESIGN §3.1).

use std::iter;

use diagnosis_core::domain::{HashId, OneTimeCode};
use diagnosis_core::store::{IssueOutcome, NewCode};
use http::{HeaderMap, Response, StatusCode, header};

use crate::error::PortalError;
use crate::http::{Body, text};
use crate::state::AppState;

/// Candidate codes tried before giving up with a 500 (never an empty code).
pub const MAX_CODE_ATTEMPTS: usize = 5;

/// Issues a code for the portal whose bearer token is in `headers`.
pub async fn new_key_claim(
    state: &AppState,
    headers: &HeaderMap,
    hash_id: Option<&HashId>,
) -> Result<Response<Body>, PortalError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
        .ok_or(PortalError::Unauthorized)?;
    let originator = state
        .settings
        .key_claim_tokens
        .authenticate(token)
        .ok_or(PortalError::Unauthorized)?;
    let new = NewCode {
        region: &state.settings.region,
        originator,
        hash_id,
        initial_remaining_keys: state.settings.initial_remaining_keys,
        claim_recovery: state.settings.claim_recovery,
    };
    let candidates = iter::repeat_with(OneTimeCode::generate).take(MAX_CODE_ATTEMPTS);
    match state
        .store
        .issue_one_time_code(&new, state.clock.now(), candidates)
        .await?
    {
        IssueOutcome::Issued {
            code,
            regenerated,
            recovered,
        } => {
            metrics::counter!("submit_codes_issued_total", "regenerated" => regenerated.to_string())
                .increment(1);
            if recovered {
                // An unused keypair given back (DESIGN §3.1): its own outcome,
                // so operators can tell recoveries from first codes.
                metrics::counter!("submit_keypairs_recovered_total").increment(1);
                return Ok(text(StatusCode::OK, code.as_str(), "recovered"));
            }
            Ok(text(StatusCode::OK, code.as_str(), "issued"))
        }
        IssueOutcome::HashIdAlreadyClaimed => Err(PortalError::HashIdAlreadyClaimed),
        IssueOutcome::CodeCollisions => Err(PortalError::CodeCollisions),
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }
}
