//! The exporter: every closed hour becomes signed export files in object storage (DESIGN §4).
//!
//! * [`pipeline`] — the named steps of a pass: select windows, load keys, render, sign, zip,
//!   upload, record, index; and the files derived from published ones.
//! * [`storage`] — the bucket the files are published into.
//! * [`padding`] — the optional fake keys that hide a window's real key count.
//! * [`verify_command`] — `diagnosis-exporter verify`: runs `diagnosis-verify`, which checks a
//!   published bucket the way a phone and a monitor would, on folders, HTTP(S) servers and,
//!   through the exporter's own [`storage`], object-store buckets.
//!
//! What a published file is — `export.bin`, its signature, the zip, the object names and their
//! headers — is defined in `diagnosis-format`, which both the pipeline and `diagnosis-verify`
//! use.
//!
//! [`scheduled::run`] is the scheduled mode itself (a pass at start, then one per tick of
//! `EXPORT_SCHEDULE` on an injected clock); the binary only reads its configuration and
//! calls it.
//!
//! Nothing in this crate's library may log or return private key material.

pub mod config;
pub mod metrics_listener;
pub mod padding;
pub mod pipeline;
pub mod scheduled;
pub mod storage;
pub mod verify_command;
