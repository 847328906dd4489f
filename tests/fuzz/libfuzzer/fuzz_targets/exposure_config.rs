//! The `exposure_config` fuzz target: `diagnosis_fuzz::targets::exposure_config`, where its input format and
//! the properties it checks are described.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diagnosis_fuzz::targets::exposure_config(data));
