//! Shared core of Diagnosis Server: domain types and their validation, the time
//! rules of DESIGN §2, NaCl box opening, configuration, telemetry and the Postgres
//! store. Both binaries (`diagnosis-submit`, `diagnosis-exporter`) build on it.
//!
//! `core` performs no network I/O except through the [`store::Store`].

pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod upload;
