//! Protobuf wire types of Diagnosis Server (DESIGN §3).
//!
//! This is the only crate that speaks protobuf: the generated message types and
//! [`export_bin`], the streaming writer and reader of `export.bin` (DESIGN §4.1).
//! Nothing here checks lengths or ranges: domain code turns wire messages into
//! domain types through validation functions that return the exact protocol
//! error code (`diagnosis_domain::upload::validate_upload` for an `Upload`, the
//! `parse` constructors of `diagnosis_domain::domain` for single fields).

#![allow(missing_docs, missing_debug_implementations)]

/// Generated from `proto/covidshield.proto` (package `covidshield`).
#[allow(clippy::all, unused_qualifications)]
pub mod covidshield {
    include!(concat!(env!("OUT_DIR"), "/covidshield.rs"));
}

pub mod export_bin;

pub use covidshield::*;
pub use prost::Message;
pub use prost_types::{Duration, Timestamp};

/// The 16-byte header that precedes the `TemporaryExposureKeyExport` in `export.bin` (DESIGN §4.1).
pub const EXPORT_BIN_HEADER: &[u8; 16] = b"EK Export v1    ";

/// The signature algorithm OID the platforms require: ECDSA P-256 with SHA-256.
pub const SIGNATURE_ALGORITHM: &str = "1.2.840.10045.4.3.2";
