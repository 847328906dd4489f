//! The exporter's integration tests, one binary so that they link once: each module was a test
//! file of its own, and runs alone with `cargo test -p diagnosis-exporter --test it MODULE::`.
//!
//! * [`fixtures`] and [`independent`] — the published bytes: the committed golden files are
//!   reproduced byte for byte, and an independent Python implementation agrees with them.
//! * [`compression`] — published size per key in canonical order.
//! * [`exposure_configuration`] — the shipped exposure configurations pass the exporter's check.
//! * [`storage`] — `Bucket` against real S3 (moto) and Azure Blob (Azurite) servers.
//! * [`verify_command`] — what `diagnosis-exporter verify` adds to `diagnosis-verify`: object-store
//!   buckets and the location syntax of the command.

mod compression;
mod exposure_configuration;
mod fixtures;
mod independent;
mod storage;
mod support;
mod verify_command;
