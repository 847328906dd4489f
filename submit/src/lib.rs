//! `diagnosis-submit`: the submission service of Diagnosis Server (DESIGN §3).
//!
//! A health portal issues one-time codes (`/new-key-claim`), an app claims a
//! code for a NaCl keypair (`/claim-key`) and uploads its keys sealed to that
//! keypair (`/upload`). Everything lands in Postgres through
//! [`diagnosis_core::store::Store`]; the service keeps no state of its own and
//! never holds the export signing key.
//!
//! The binary only reads configuration and calls [`run`]; tests call the same
//! [`run`] on port 0.

mod claim_queue;
pub mod client_ip;
pub mod config;
mod error;
mod handlers;
mod http;
mod replica;
mod router;
mod server;
mod state;

pub use claim_queue::ClaimQueue;
pub use handlers::new_key_claim::MAX_CODE_ATTEMPTS;
pub use replica::CurrentKey;
pub use server::{ACCEPT_BACKLOG, Listeners, bind, run};
pub use state::{AppState, MetricsCredentials, Settings, StartError, Timeouts, Version};
