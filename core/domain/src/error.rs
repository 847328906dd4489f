//! Walking an error's chain of causes, the links `Error::source` makes.
//!
//! The store and the exporter look through a chain to say why something failed in an operator's
//! words (the socket error under a driver error, the rustls error under a handshake failure) and
//! to repeat only the parts that are safe to repeat; these functions are the one way they walk it.

use std::error::Error;

/// `error` itself, then each of its causes in turn, outermost first.
pub fn chain<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&current| current.source())
}

/// The causes of `error`, outermost first, without `error` itself.
pub fn causes<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    chain(error).skip(1)
}

/// The outermost error of type `T` in `error`'s chain, `error` itself included.
pub fn find_cause<'a, T: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a T> {
    chain(error).find_map(|current| current.downcast_ref::<T>())
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// An error with a name and an optional cause.
    #[derive(Debug)]
    struct Link {
        name: &'static str,
        cause: Option<Box<dyn Error + 'static>>,
    }

    impl fmt::Display for Link {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.name)
        }
    }

    impl Error for Link {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.cause.as_deref()
        }
    }

    fn link(name: &'static str, cause: impl Error + 'static) -> Link {
        Link {
            name,
            cause: Some(Box::new(cause)),
        }
    }

    fn end(name: &'static str) -> Link {
        Link { name, cause: None }
    }

    fn names<'a>(errors: impl Iterator<Item = &'a (dyn Error + 'static)>) -> Vec<String> {
        errors.map(ToString::to_string).collect()
    }

    #[test]
    fn the_chain_starts_at_the_error_and_follows_every_source() {
        let error = link("outer", link("middle", end("inner")));
        assert_eq!(names(chain(&error)), ["outer", "middle", "inner"]);
        assert_eq!(names(causes(&error)), ["middle", "inner"]);
        let alone = end("alone");
        assert_eq!(names(chain(&alone)), ["alone"]);
        assert!(causes(&alone).next().is_none());
    }

    #[test]
    fn the_outermost_error_of_the_type_is_found_at_any_depth() {
        let io = || std::io::Error::other("refused");
        let deep = link("outer", link("middle", io()));
        assert_eq!(
            find_cause::<std::io::Error>(&deep).map(ToString::to_string),
            Some("refused".to_owned())
        );
        // The error itself counts.
        let itself = io();
        assert!(find_cause::<std::io::Error>(&itself).is_some());
        // Of two, the outer one is found.
        let two = link("outer", link("first", link("second", end("inner"))));
        assert_eq!(
            find_cause::<Link>(&two).map(ToString::to_string),
            Some("outer".to_owned())
        );
        assert_eq!(
            causes(&two)
                .find_map(|cause| cause.downcast_ref::<Link>())
                .map(ToString::to_string),
            Some("first".to_owned())
        );
        // None when no error of the type is in the chain.
        let without = link("outer", end("inner"));
        assert!(find_cause::<std::io::Error>(&without).is_none());
    }
}
