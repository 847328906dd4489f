//! The pure steps of the exporter pipeline (DESIGN §4, STYLE 6): each turns bytes or keys into
//! bytes, with no database, network or clock, so each can be tested on its own and a rerun
//! reproduces the same files.
//!
//! * [`render`] — keys of one window, in canonical order, become `export.bin`, split into parts.
//! * [`sign`] — `export.bin` becomes `export.sig`; loading, generating and checking P-256 keys.
//! * [`archive`] — the two become the deterministic zip that is published.
//! * [`exposure_config`] — exposure configurations are checked before they are published.
//!
//! [`scheduled::run`] is the scheduled mode itself (a pass at start, then one per tick of
//! `EXPORT_SCHEDULE` on an injected clock); the binary only reads its configuration and
//! calls it.
//!
//! Nothing in this crate's library may log or return private key material.

pub mod archive;
pub mod config;
pub mod exposure_config;
pub mod metrics_listener;
pub mod padding;
pub mod pipeline;
pub mod render;
pub mod scheduled;
pub mod sign;
pub mod storage;
pub mod verify;
