//! Waiting in a test for something another task or process does on its own time.
//!
//! This module must never turn a wait into a claim about speed: its bound only keeps a broken
//! test from hanging, and is generous.

use std::time::Duration;

/// How long [`eventually`] waits before it fails the test.
pub const EVENTUALLY_WITHIN: Duration = Duration::from_secs(60);

/// Polls `check` every 20 ms until it holds; fails the test naming `what` after
/// [`EVENTUALLY_WITHIN`].
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENTUALLY_WITHIN;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {} s",
            EVENTUALLY_WITHIN.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
