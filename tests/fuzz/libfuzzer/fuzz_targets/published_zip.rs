//! The `published_zip` fuzz target: `diagnosis_fuzz::targets::published_zip`, where its input format and
//! the properties it checks are described.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| diagnosis_fuzz::targets::published_zip(data));
