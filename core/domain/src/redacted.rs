//! [`Redacted`]: the one wrapper that keeps a secret or a piece of personal data out of `Debug`
//! output (DESIGN §7: no codes, tokens, keys or addresses in logs).
//!
//! A type holding such a value wraps the value (or itself, where the whole value is secret) and
//! derives `Debug`: `KeyData(..)`, `Padding { secret: .., min_keys: 5 }`. The wrapper has no
//! `Display`, and the value is reached only through [`Redacted::expose`], so every place that
//! sends or stores the raw value says so. This module must never print the value it wraps.

use std::fmt;

use zeroize::Zeroize;

/// What `Debug` prints in place of a redacted value.
pub const MARKER: &str = "..";

/// A value whose `Debug` is [`MARKER`], whatever the value and the format flags.
///
/// Equality, order and hash are the value's own, so a wrapped field keeps its type's derives.
/// `==` on a wrapped secret is not constant-time: a type whose secret must never be compared
/// in variable time (`ServerSecretKey`, `BearerToken`) derives no equality.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for the places that must send, store or use it.
    pub const fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MARKER)
    }
}

impl<T: Zeroize> Zeroize for Redacted<T> {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[expect(dead_code, reason = "the fields are read only by the derived Debug")]
    struct Credentials {
        user: &'static str,
        password: Redacted<&'static str>,
    }

    #[derive(Debug)]
    #[expect(dead_code, reason = "the field is read only by the derived Debug")]
    struct Secret(Redacted<[u8; 4]>);

    #[test]
    fn debug_shows_the_marker_and_never_the_value() {
        let value = Redacted::new("hunter2");
        for rendered in [
            format!("{value:?}"),
            format!("{value:#?}"),
            format!("{value:>20?}"),
            format!("{:?}", Some(value)),
            format!("{:?}", [value, value]),
        ] {
            assert!(!rendered.contains("hunter2"), "{rendered}");
            assert!(rendered.contains(MARKER), "{rendered}");
        }
        assert_eq!(format!("{value:?}"), "..");
        assert_eq!(value.expose(), &"hunter2");
    }

    #[test]
    fn a_derived_debug_shows_the_other_fields_and_the_marker_in_place_of_the_secret() {
        let credentials = Credentials {
            user: "ops",
            password: Redacted::new("hunter2"),
        };
        assert_eq!(
            format!("{credentials:?}"),
            r#"Credentials { user: "ops", password: .. }"#
        );
        let pretty = format!("{credentials:#?}");
        assert!(!pretty.contains("hunter2"), "{pretty}");
        assert!(pretty.contains("password: ..,"), "{pretty}");
        // A tuple struct wrapping its whole value reads `Name(..)`.
        assert_eq!(
            format!("{:?}", Secret(Redacted::new([0xab; 4]))),
            "Secret(..)"
        );
    }

    #[test]
    fn zeroize_wipes_the_value() {
        let mut secret = Redacted::new([0xab_u8; 4]);
        secret.zeroize();
        assert_eq!(secret.expose(), &[0; 4]);
    }
}
