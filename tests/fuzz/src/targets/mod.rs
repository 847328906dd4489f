//! The fuzz targets of DESIGN §7, one function per target, each taking the raw bytes libFuzzer
//! hands it. The cargo-fuzz binaries of `tests/fuzz/libfuzzer/` call these and nothing else,
//! and the replay test (`tests/fuzz/tests/replay.rs`) runs every committed input through the
//! same functions on stable Rust, so a target has one definition wherever it runs.
//!
//! A target panics (through `assert!` or `panic!`) exactly when it has found a defect; it must
//! never panic on its own account, whatever the bytes.

mod basic_auth;
mod claim_body;
mod derive_reader;
mod exposure_config;
mod forwarded_for;
mod one_time_code;
mod published_zip;
mod upload_body;
mod upload_sealed;
mod verify_export_file;
mod verify_indexes;

pub use basic_auth::basic_auth;
pub use claim_body::claim_body;
pub use derive_reader::derive_reader;
pub use exposure_config::exposure_config;
pub use forwarded_for::forwarded_for;
pub use one_time_code::one_time_code;
pub use published_zip::published_zip;
pub use upload_body::upload_body;
pub use upload_sealed::upload_sealed;
pub use verify_export_file::verify_export_file;
pub use verify_indexes::verify_indexes;

/// A fuzz target: its name (the binary of `tests/fuzz/libfuzzer/`, the directory of its
/// corpus and of its regressions) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order `infra/dev/fuzz` runs them.
pub const TARGETS: [Target; 11] = [
    ("claim_body", claim_body),
    ("upload_body", upload_body),
    ("upload_sealed", upload_sealed),
    ("one_time_code", one_time_code),
    ("published_zip", published_zip),
    ("derive_reader", derive_reader),
    ("verify_export_file", verify_export_file),
    ("verify_indexes", verify_indexes),
    ("exposure_config", exposure_config),
    ("forwarded_for", forwarded_for),
    ("basic_auth", basic_auth),
];
