//! The `basic_auth` fuzz target: `diagnosis_fuzz::targets::basic_auth`, where its input format and
//! the properties it checks are described.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diagnosis_fuzz::targets::basic_auth(data));
