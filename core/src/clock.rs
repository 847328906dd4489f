//! The clocks behind [`Clock`](crate::time::Clock): the operating system's, and the manual one
//! of the tests (`test-support`). They live here rather than with the time rules in
//! `diagnosis-domain` because a wait needs the async runtime's timer, and the domain crate has
//! no runtime. Reached as `diagnosis_core::time::{SystemClock, ManualClock}`. Nothing here may
//! do I/O.

#[cfg(any(test, feature = "test-support"))]
use std::sync::Arc;

use chrono::{DateTime, Utc};
#[cfg(any(test, feature = "test-support"))]
use tokio::sync::watch;

use crate::time::{Clock, Wait};

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The longest [`SystemClock`] sleeps before reading the wall clock again: a wait follows the
/// wall clock even when it is stepped (the timer underneath counts monotonic time).
const SYSTEM_WAIT_STEP: std::time::Duration = std::time::Duration::from_secs(1);

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn wait_until(&self, instant: DateTime<Utc>) -> Wait<'_> {
        Box::pin(async move {
            loop {
                let Ok(left) = (instant - Utc::now()).to_std() else {
                    return;
                };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(SYSTEM_WAIT_STEP)).await;
            }
        })
    }
}

/// A clock that moves only when told to. Clones share the same time, so a test can keep one
/// handle and give another to the code under test.
///
/// The clock also keeps the instants tasks wait for ([`Clock::wait_until`]): moving it takes
/// every instant it reaches off that list before the move returns, so a test can tell at once
/// whether the code under test is still waiting ([`ManualClock::waiting`]), and can wait until
/// it waits again ([`ManualClock::next_wait`]), which for a loop means its work is done.
///
/// Only with the `test-support` feature: no binary sets its own time.
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug, Clone)]
pub struct ManualClock {
    state: Arc<watch::Sender<ManualState>>,
}

#[cfg(any(test, feature = "test-support"))]
#[derive(Debug)]
struct ManualState {
    now: DateTime<Utc>,
    /// The instants not yet reached that tasks wait for, one entry per wait, with its number.
    waiting: Vec<(u64, DateTime<Utc>)>,
    /// Waits begun since the clock was made; also numbers them.
    waits_begun: u64,
}

#[cfg(any(test, feature = "test-support"))]
impl ManualClock {
    /// A clock stopped at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        let (state, _) = watch::channel(ManualState {
            now,
            waiting: Vec::new(),
            waits_begun: 0,
        });
        Self {
            state: Arc::new(state),
        }
    }

    /// Moves the clock to `now` (backwards is allowed); every wait for an instant at or before
    /// `now` completes.
    pub fn set(&self, now: DateTime<Utc>) {
        self.state.send_modify(|state| {
            state.now = now;
            state.waiting.retain(|&(_, instant)| instant > now);
        });
    }

    /// Moves the clock by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let now = self.now() + by;
        self.set(now);
    }

    /// The instants tasks are waiting for and the clock has not reached, earliest first.
    pub fn waiting(&self) -> Vec<DateTime<Utc>> {
        let mut instants: Vec<DateTime<Utc>> = self
            .state
            .borrow()
            .waiting
            .iter()
            .map(|&(_, instant)| instant)
            .collect();
        instants.sort();
        instants
    }

    /// How many waits have begun on this clock (and its clones) so far.
    pub fn waits_begun(&self) -> u64 {
        self.state.borrow().waits_begun
    }

    /// Completes once at least `count` waits for instants the clock has not reached are
    /// pending: after a move of the clock, the loops it woke have done their work and wait
    /// again.
    pub async fn until_waiting(&self, count: usize) {
        let mut changes = self.state.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = changes.wait_for(|state| state.waiting.len() >= count).await;
    }

    /// Completes once some task waits for an instant the clock has not reached, and returns
    /// the earliest such instant.
    pub async fn next_wait(&self) -> DateTime<Utc> {
        let mut changes = self.state.subscribe();
        loop {
            if let Some(instant) = self.waiting().first() {
                return *instant;
            }
            // The sender lives as long as `self`, so this cannot fail.
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
/// Takes an abandoned wait off its clock's list.
struct WaitEntry<'a> {
    state: &'a watch::Sender<ManualState>,
    number: u64,
}

#[cfg(any(test, feature = "test-support"))]
impl Drop for WaitEntry<'_> {
    fn drop(&mut self) {
        let number = self.number;
        self.state.send_if_modified(|state| {
            let before = state.waiting.len();
            state.waiting.retain(|&(n, _)| n != number);
            state.waiting.len() != before
        });
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.state.borrow().now
    }

    fn wait_until(&self, instant: DateTime<Utc>) -> Wait<'_> {
        // Registered at once, not on the first poll, so the list is right as soon as the
        // waiting task has asked.
        let mut changes = self.state.subscribe();
        let mut number = 0;
        self.state.send_modify(|state| {
            state.waits_begun += 1;
            number = state.waits_begun;
            if instant > state.now {
                state.waiting.push((number, instant));
            }
        });
        let entry = WaitEntry {
            state: &self.state,
            number,
        };
        Box::pin(async move {
            let _entry = entry;
            // The sender lives as long as the clock this borrows, so this cannot fail.
            let _ = changes.wait_for(|state| state.now >= instant).await;
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn manual_clock_is_shared_between_clones() {
        let start = DateTime::from_timestamp(NOW, 0).unwrap();
        let clock = ManualClock::new(start);
        let handle = clock.clone();
        let shared: Arc<dyn Clock> = Arc::new(clock);
        assert_eq!(shared.unix_now().get(), NOW);
        handle.advance(chrono::Duration::seconds(3600));
        assert_eq!(shared.unix_now().get(), NOW + 3600);
        handle.set(start - chrono::Duration::days(1));
        assert_eq!(shared.unix_now().get(), NOW - 86_400);
    }

    #[tokio::test]
    async fn a_manual_wait_completes_when_the_clock_reaches_its_instant() {
        let start = DateTime::from_timestamp(NOW, 0).unwrap();
        let clock = ManualClock::new(start);
        let tick = start + chrono::Duration::seconds(60);
        let handle = clock.clone();
        let waiter = tokio::spawn(async move { handle.wait_until(tick).await });
        assert_eq!(clock.next_wait().await, tick);
        assert_eq!(clock.waits_begun(), 1);
        clock.advance(chrono::Duration::seconds(59));
        assert_eq!(clock.waiting(), vec![tick], "woken a second early");
        assert!(!waiter.is_finished());
        clock.advance(chrono::Duration::seconds(1));
        assert!(clock.waiting().is_empty());
        waiter.await.unwrap();
        // An instant already reached does not wait.
        clock.wait_until(start).await;
        assert_eq!(clock.waits_begun(), 2);
        assert!(clock.waiting().is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_manual_wait_leaves_the_list() {
        let start = DateTime::from_timestamp(NOW, 0).unwrap();
        let clock = ManualClock::new(start);
        let later = start + chrono::Duration::hours(1);
        let wait = clock.wait_until(later);
        assert_eq!(clock.waiting(), vec![later]);
        drop(wait);
        assert!(clock.waiting().is_empty());
    }

    #[tokio::test]
    async fn a_system_wait_for_the_past_returns_at_once() {
        SystemClock
            .wait_until(DateTime::from_timestamp(NOW, 0).unwrap())
            .await;
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.unix_now().get() > 1_577_836_800);
    }
}
