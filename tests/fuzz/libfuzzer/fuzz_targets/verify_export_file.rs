//! The `verify_export_file` fuzz target: `diagnosis_fuzz::targets::verify_export_file`, where its input format and
//! the properties it checks are described.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diagnosis_fuzz::targets::verify_export_file(data));
