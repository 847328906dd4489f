//! The pure domain of Diagnosis Server: domain types and their validation, the time rules of
//! DESIGN §2, the request bodies of `/claim-key` and `/upload` and the upload rules of DESIGN
//! §3.2 and §3.3, the client's address behind proxies (DESIGN §3.2), the events API's Basic
//! credentials (DESIGN §3.4), NaCl box opening (DESIGN §3.1) and the walk over error chains. Everything that reads or publishes keys builds on it: `diagnosis-core` (which
//! re-exports these modules next to its store, configuration and telemetry), the export format,
//! `verify` and the fuzz targets.
//!
//! This crate must never do I/O or depend on an async runtime, a database, TLS, sockets or a
//! log subscriber; `tests/layering.rs` holds it, `diagnosis-format` and `diagnosis-verify` to
//! that.

pub mod basic_auth;
pub mod client_ip;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod redacted;
pub mod request;
pub mod time;
pub mod upload;
