//! Shared core of Diagnosis Server: configuration, telemetry, the clocks and the Postgres
//! store, over the pure domain of `diagnosis-domain` (domain types and their validation, the
//! time rules of DESIGN §2, NaCl box opening), whose modules it re-exports under their own
//! names. Both binaries (`diagnosis-submit`, `diagnosis-exporter`) build on it.
//!
//! `core` performs no network I/O except through the [`store::Store`].

pub use diagnosis_domain::{
    basic_auth, client_ip, crypto, domain, error, redacted, request, upload,
};

mod clock;
pub mod config;
pub mod store;
pub mod telemetry;

/// The time rules of DESIGN §2 (`diagnosis_domain::time`) and the clocks that give "now".
pub mod time {
    pub use diagnosis_domain::time::*;

    #[cfg(any(test, feature = "test-support"))]
    pub use crate::clock::ManualClock;
    pub use crate::clock::SystemClock;
}
