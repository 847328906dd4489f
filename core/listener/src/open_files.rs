//! The process's open-file limit (DESIGN §3.4, §6): every accepted connection costs a file
//! descriptor, and the usual soft limit (1024) is below the default `MAX_CONNECTIONS` of one
//! listener, while the hard limit is commonly many times larger. Left at the soft limit, the
//! descriptors rather than `MAX_CONNECTIONS` would bound the clients, and a crowd of idle
//! connections below `MAX_CONNECTIONS` would leave no descriptor for a new client or database
//! connection. This module only reads and raises the limit; it never lowers it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors a process holds whatever its clients do: standard streams, the runtime's, the
/// listening sockets, the log and the TLS roots read at start, with room to spare.
pub const OWN_DESCRIPTORS: u64 = 64;

/// Descriptors the process may hold at once: [`OWN_DESCRIPTORS`] and every [`claim`].
static CLAIMED: AtomicU64 = AtomicU64::new(OWN_DESCRIPTORS);

/// Whether the warning of [`claim`] was given: once a process is enough.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Counts `descriptors` more that the process may hold at once (a listener's
/// `MAX_CONNECTIONS`, a database pool's connections), raises the limit, and warns once when
/// the limit is below all the process has claimed: the descriptors would then bound the
/// clients first, and a crowd of them on one listener would leave none for another listener
/// or the database.
pub fn claim(descriptors: usize, what: &'static str) {
    let added = u64::try_from(descriptors).unwrap_or(u64::MAX);
    let claimed = CLAIMED
        .fetch_add(added, Ordering::Relaxed)
        .saturating_add(added);
    let limit = raise_open_files_limit();
    if limit.is_some_and(|limit| limit < claimed) && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            open_files_limit = limit,
            descriptors_claimed = claimed,
            last_claim = what,
            "the open-file limit is below the connections this process may hold at once \
             (each listener's MAX_CONNECTIONS, the database pool and its own): raise the hard \
             limit (ulimit -Hn, LimitNOFILE, the container's nofile) or lower MAX_CONNECTIONS"
        );
    }
}

/// The soft limit tried when the hard limit is unlimited: Linux's default `fs.nr_open`, the
/// most a process may ask for without a system setting.
const UNLIMITED_TARGET: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard limit (to [`UNLIMITED_TARGET`] under an
/// unlimited one), and returns the soft limit in force afterwards (`None`: unlimited). A
/// refused raise leaves the limit as it was.
fn raise_open_files_limit() -> Option<u64> {
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
