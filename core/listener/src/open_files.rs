//! The process's open-file limit (DESIGN §3.4, §6): every accepted connection costs a file
//! descriptor, and the usual soft limit (1024) is below the default `MAX_CONNECTIONS` of one
//! listener, while the hard limit is commonly many times larger. Left at the soft limit, the
//! descriptors rather than `MAX_CONNECTIONS` would bound the clients, and a crowd of idle
//! connections below `MAX_CONNECTIONS` would leave no descriptor for a new client or database
//! connection. This module only reads and raises the limit; it never lowers it.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The soft limit tried when the hard limit is unlimited: Linux's default `fs.nr_open`, the
/// most a process may ask for without a system setting.
const UNLIMITED_TARGET: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard limit (to [`UNLIMITED_TARGET`] under an
/// unlimited one), and returns the soft limit in force afterwards (`None`: unlimited). A
/// refused raise leaves the limit as it was.
pub fn raise_open_files_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current?;
    let target = limit.maximum.unwrap_or(UNLIMITED_TARGET);
    if current >= target {
        return Some(current);
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => Some(target),
        Err(_) => Some(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit_and_never_lower() {
        let before = getrlimit(Resource::Nofile);
        let after = raise_open_files_limit();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, after);
        assert_eq!(now.maximum, before.maximum);
        assert!(now.current.unwrap_or(u64::MAX) >= before.current.unwrap_or(u64::MAX));
        if let Some(maximum) = before.maximum {
            assert_eq!(now.current, Some(maximum));
        }
    }
}
