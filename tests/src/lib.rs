//! Test support for Diagnosis Server: a fresh Postgres database per test, a
//! `TestApp` that runs the real submit service on port 0, a small HTTP client,
//! and the app simulator that plays the portal and the phone.
//!
//! Tests never skip: without `DIAGNOSIS_TEST_DATABASE_URL` (set by
//! `infra/dev/test`) they fail and say how to run them.

#![allow(clippy::unwrap_used)]

pub mod app;
pub mod binaries;
pub mod black_hole;
pub mod cdn;
pub mod chaos;
pub mod dataset;
pub mod egress;
pub mod export;
pub mod failing_store;
pub mod http_client;
pub mod lost_answer;
pub mod metrics;
pub mod pg;
pub mod pg_wire;
pub mod process;
pub mod procfs;
pub mod restart_load;
pub mod roles;
pub mod s3;
pub mod simulator;
pub mod soak;
pub mod tls_pg;
pub mod wait;
