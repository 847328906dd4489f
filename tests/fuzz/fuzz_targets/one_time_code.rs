//! One-time code normalisation on arbitrary text (DESIGN §3.2: strip spaces and `-`,
//! upper-case, then the shape of an issued code). No input may panic.

#![no_main]

use diagnosis_domain::domain::OneTimeCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    if let Some(code) = OneTimeCode::from_user_input(input) {
        let normalised = code.as_str();
        assert_eq!(normalised.len(), 10);
        assert!(
            normalised
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        // Normalising is idempotent.
        assert_eq!(OneTimeCode::from_user_input(normalised), Some(code));
    }
});
