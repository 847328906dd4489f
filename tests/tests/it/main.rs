//! The end-to-end tests, against a real PostgreSQL, the real binaries and object-store servers
//! (`infra/dev/test` starts them). One test binary with one module per area, so the tests link
//! once: `infra/dev/test --test it claim::` runs the claim tests, and a test's full name is
//! `module::test_name`.
//!
//! Two files stay binaries of their own, because each installs something a process holds only
//! one of and reads back what the whole process put there: `tests/metrics.rs` the global metrics
//! recorder (the other tests here would add to the counters it checks) and `tests/privacy.rs`
//! the global log subscriber at its most verbose (it would capture every other test's logs for
//! the rest of the run).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app_replay;
mod claim;
mod connections;
mod database_faults;
mod database_tls;
mod export;
mod exporter_cli;
mod exporter_faults;
mod harness;
mod least_privilege;
mod migrations;
mod operations;
mod pg_restart;
mod portal;
mod publication_clock;
mod relevance;
mod retention;
mod scheduled;
mod settings_extremes;
mod soak;
mod sources;
mod store;
mod submit_settings;
mod upload;
mod verify_retrieval;
