//! One-time code normalisation on arbitrary text (DESIGN §3.2: strip spaces and `-`,
//! upper-case, then the shape of an issued code). No input may panic.

use diagnosis_domain::domain::OneTimeCode;

pub fn one_time_code(data: &[u8]) {
    // The longest valid UTF-8 prefix, as a libFuzzer target over `&str` takes it, so that the
    // inputs of earlier campaigns mean what they meant then.
    let input = data.utf8_chunks().next().map_or("", |chunk| chunk.valid());
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
}
