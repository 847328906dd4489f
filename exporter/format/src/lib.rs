//! What the exporter publishes, defined once (DESIGN §4, STYLE 6a): the pipeline that writes a
//! bucket and the `verify` command that checks one both take the format from here.
//!
//! * [`render`] — keys of one window, in canonical order, become `export.bin`, split into parts.
//! * [`sign`] — `export.bin` becomes `export.sig`; loading, generating and checking P-256 keys.
//! * [`archive`] — the two become the deterministic zip that is published, and the zip's first
//!   entry is found again when a published file is read back.
//! * [`reader`] — the keys of a published file are read back from its bytes, handed in pieces
//!   of any size (the exporter's merges and the fuzz targets), with no I/O of its own.
//! * [`exposure_config`] — exposure configurations are checked before they are published.
//! * [`names`] — the object names, the one rule for safe object keys, and each object's
//!   Content-Type and Cache-Control.
//!
//! Every step is pure: bytes or keys in, bytes out, with no database, network or clock, so each
//! can be tested on its own and a rerun reproduces the same files. This crate must never depend
//! on an object store, the network, the pipeline or the database, and nothing in it may log or
//! return private key material. The protobuf field numbers live in
//! [`diagnosis_proto::export_bin`].

pub mod archive;
pub mod exposure_config;
pub mod names;
pub mod reader;
pub mod render;
pub mod sign;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
