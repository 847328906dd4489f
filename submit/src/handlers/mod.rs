//! One file per endpoint: parse → verify → one transaction → respond.

pub mod claim_key;
pub mod events;
pub mod new_key_claim;
pub mod services;
pub mod upload;
