//! The `one_time_code` fuzz target: `diagnosis_fuzz::targets::one_time_code`, where its input format and
//! the properties it checks are described.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diagnosis_fuzz::targets::one_time_code(data));
