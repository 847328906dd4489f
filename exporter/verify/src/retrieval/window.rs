//! Which retrieval objects a bucket must hold and which window each must have (DESIGN §4.3),
//! judged from the hours `{region}/index.txt` lists, the one clock a bucket carries.
//!
//! The rule, written down:
//!
//! * `N` is the newest hour `index.txt` lists and `O` the oldest. Without a listed hour nothing
//!   is required: the exporter derives nothing before it has published an hour.
//! * `retrieve/{MCC}/00000` must exist. Its start names the day it was built on, "today"
//!   `T = day(start) + 15`; a pass runs after the newest hour it publishes has closed, at most
//!   `EXPORT_GRACE_SECONDS` (at most a day) and an hour later, so `T` lies from `day(N)` to
//!   `day(N) + 2`, and a bundle that names another day is out of step (taken as `day(N)`, or
//!   `day(N) + 2`). Its window is `(T − 15) 00:00` to `min(end of N, T 00:00)`.
//! * `retrieve/{MCC}/{D}` must exist for every day `D` from `max(T − 14, day(O))` to `T`: the
//!   days the apps may ask for that hold a published hour, and the days after `N`'s up to
//!   today, present and empty from 00:00. Its window is `D 00:00` to the end of the last hour
//!   of `D` up to `N` (`D 00:00` itself when it holds none).
//! * A day object holds exactly the keys of the hourly files of its window; `00000` exactly the
//!   keys of the files of its window that are relevant at its end (DESIGN §2). An object with
//!   more than the platforms' 750 000 holds the first 750 000 in canonical order, in one part:
//!   the apps fetch one object per path.
//! * Hours before `O` are no longer listed when the index is cut by its 14 days
//!   (`day(O) = T − 14`): their day's daily file stands for them. When `day(O) > T − 14` they
//!   were never published (the first pass publishes from the earliest hour holding a key), so
//!   they hold no key.
//!
//! Pure functions over seconds and day numbers, with no I/O and no clock.

use std::ops::RangeInclusive;

use diagnosis_domain::time::RELEVANCE_DAYS;

use super::RetrievalWindow;
use crate::names::{DAY, HOUR};

/// `00000` starts this many days before the day it is built on (DESIGN §4.3).
pub(crate) const BUNDLE_DAYS: u64 = 15;

/// Days before today whose objects the apps may still ask for (DESIGN §4.3).
const DAYS_BACK: u64 = RELEVANCE_DAYS.unsigned_abs();

/// The furthest a pass's today can be from the day of the newest hour it publishes: the hour
/// closes at most `EXPORT_GRACE_SECONDS` (at most a day) after it ends, and the pass that sees
/// it closed runs within the next hour.
const MAX_DAYS_AFTER_NEWEST: u64 = 2;

/// The hours `index.txt` lists: the starts of the oldest and the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListedHours {
    pub(crate) oldest: u64,
    pub(crate) newest: u64,
}

/// How a window found in an object compares with the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The window the newest listed hour calls for.
    Expected,
    /// A window the object has at another pass.
    OutOfStep,
    /// No window this object can have.
    NotItsWindow,
}

impl ListedHours {
    fn newest_end(self) -> u64 {
        self.newest.saturating_add(HOUR)
    }

    fn newest_day(self) -> u64 {
        self.newest / DAY
    }

    /// The day the bucket's objects were built on: the one `00000` names (its `start`), kept
    /// within what can follow the newest listed hour.
    pub(crate) fn today(self, bundle_start: Option<u64>) -> u64 {
        let newest_day = self.newest_day();
        bundle_start.map_or(newest_day, |start| {
            (start / DAY)
                .saturating_add(BUNDLE_DAYS)
                .clamp(newest_day, newest_day.saturating_add(MAX_DAYS_AFTER_NEWEST))
        })
    }

    /// The days whose objects must exist.
    pub(crate) fn required_days(self, today: u64) -> RangeInclusive<u64> {
        today.saturating_sub(DAYS_BACK).max(self.oldest / DAY)..=today
    }

    /// Whether the hours before the oldest listed one were never published, rather than cut
    /// from the index by its 14 days.
    pub(crate) fn nothing_before_oldest(self, today: u64) -> bool {
        self.oldest / DAY > today.saturating_sub(DAYS_BACK)
    }

    /// The window of `retrieve/{MCC}/{day}`.
    pub(crate) fn day_window(self, day: u64) -> RetrievalWindow {
        let start = day.saturating_mul(DAY);
        RetrievalWindow {
            start,
            end: self.newest_end().clamp(start, start.saturating_add(DAY)),
        }
    }

    /// The window of `retrieve/{MCC}/00000` built on `today`.
    pub(crate) fn bundle_window(self, today: u64) -> RetrievalWindow {
        let start = today.saturating_sub(BUNDLE_DAYS).saturating_mul(DAY);
        let end = self.newest_end().min(today.saturating_mul(DAY)).max(start);
        RetrievalWindow { start, end }
    }
}

/// Whether `found` (`None`: the header lacks a timestamp) is the window of day `day`'s object.
pub(crate) fn judge_day(
    day: u64,
    found: Option<RetrievalWindow>,
    expected: RetrievalWindow,
) -> Verdict {
    judge(found, expected, |window| {
        window.start == day.saturating_mul(DAY) && window.end - window.start <= DAY
    })
}

/// Whether `found` is the window of `00000`.
pub(crate) fn judge_bundle(found: Option<RetrievalWindow>, expected: RetrievalWindow) -> Verdict {
    judge(found, expected, |window| {
        window.start % DAY == 0 && window.end - window.start <= BUNDLE_DAYS * DAY
    })
}

/// Whole hours from a possible start: `possible` is asked only of a window with
/// `start ≤ end`.
fn judge(
    found: Option<RetrievalWindow>,
    expected: RetrievalWindow,
    possible: impl Fn(RetrievalWindow) -> bool,
) -> Verdict {
    match found {
        Some(window) if window == expected => Verdict::Expected,
        Some(window)
            if window.start <= window.end && window.end % HOUR == 0 && possible(window) =>
        {
            Verdict::OutOfStep
        }
        _ => Verdict::NotItsWindow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: u64 = 20_410;

    fn hours(oldest: u64, newest: u64) -> ListedHours {
        ListedHours { oldest, newest }
    }

    fn window(start: u64, end: u64) -> RetrievalWindow {
        RetrievalWindow { start, end }
    }

    #[test]
    fn today_is_the_bundles_day_within_what_can_follow_the_newest_hour() {
        let listed = hours((D - 14) * DAY + 15 * HOUR, D * DAY + 14 * HOUR);
        assert_eq!(listed.today(None), D);
        assert_eq!(listed.today(Some((D - 15) * DAY)), D);
        // After midnight, before the day's last hour closed.
        assert_eq!(listed.today(Some((D - 14) * DAY)), D + 1);
        assert_eq!(listed.today(Some((D - 13) * DAY)), D + 2);
        // A stale bundle, and one from the future.
        assert_eq!(listed.today(Some((D - 16) * DAY)), D);
        assert_eq!(listed.today(Some((D + 3) * DAY)), D + 2);
    }

    #[test]
    fn windows_follow_the_newest_hour() {
        let listed = hours((D - 14) * DAY + 15 * HOUR, D * DAY + 14 * HOUR);
        assert_eq!(listed.day_window(D - 1), window((D - 1) * DAY, D * DAY));
        assert_eq!(listed.day_window(D), window(D * DAY, D * DAY + 15 * HOUR));
        assert_eq!(
            listed.day_window(D + 1),
            window((D + 1) * DAY, (D + 1) * DAY)
        );
        assert_eq!(listed.bundle_window(D), window((D - 15) * DAY, D * DAY));
        assert_eq!(
            listed.bundle_window(D + 1),
            window((D - 14) * DAY, D * DAY + 15 * HOUR)
        );
        assert_eq!(listed.required_days(D), D - 14..=D);
        assert!(!listed.nothing_before_oldest(D));
        // A young bucket: nothing was published before its first hour.
        let young = hours((D - 3) * DAY + 15 * HOUR, D * DAY + 14 * HOUR);
        assert_eq!(young.required_days(D + 1), D - 3..=D + 1);
        assert!(young.nothing_before_oldest(D));
    }

    #[test]
    fn a_window_is_expected_out_of_step_or_none_of_the_objects() {
        let expected = window(D * DAY, D * DAY + 5 * HOUR);
        let judged = |start, end| judge_day(D, Some(window(start, end)), expected);
        assert_eq!(judged(D * DAY, D * DAY + 5 * HOUR), Verdict::Expected);
        assert_eq!(judged(D * DAY, D * DAY + 4 * HOUR), Verdict::OutOfStep);
        assert_eq!(judged(D * DAY, D * DAY), Verdict::OutOfStep);
        assert_eq!(judged(D * DAY, (D + 1) * DAY), Verdict::OutOfStep);
        assert_eq!(judged(D * DAY, (D + 1) * DAY + HOUR), Verdict::NotItsWindow);
        assert_eq!(judged(D * DAY, D * DAY + 600), Verdict::NotItsWindow);
        assert_eq!(judged(D * DAY - HOUR, D * DAY), Verdict::NotItsWindow);
        assert_eq!(judged(D * DAY + HOUR, D * DAY), Verdict::NotItsWindow);
        assert_eq!(judge_day(D, None, expected), Verdict::NotItsWindow);

        let expected = window((D - 15) * DAY, D * DAY);
        let judged = |start, end| judge_bundle(Some(window(start, end)), expected);
        assert_eq!(judged((D - 15) * DAY, D * DAY), Verdict::Expected);
        assert_eq!(judged((D - 16) * DAY, (D - 1) * DAY), Verdict::OutOfStep);
        assert_eq!(judged((D - 15) * DAY, D * DAY - HOUR), Verdict::OutOfStep);
        assert_eq!(
            judged((D - 15) * DAY + HOUR, D * DAY),
            Verdict::NotItsWindow
        );
        assert_eq!(judged((D - 16) * DAY, D * DAY), Verdict::NotItsWindow);
        assert_eq!(judged(u64::MAX - 5, u64::MAX), Verdict::NotItsWindow);
    }

    proptest::proptest! {
        /// Whatever a hostile bucket lists and writes into a header, the rule gives a verdict.
        #[test]
        fn any_hours_and_windows_are_judged_without_panic(
            oldest: u64,
            newest: u64,
            start: u64,
            end: u64,
            bundle_start: Option<u64>,
        ) {
            let listed = hours(oldest.min(newest), oldest.max(newest));
            let today = listed.today(bundle_start);
            let days = listed.required_days(today);
            proptest::prop_assert!(days.end() - days.start() <= DAYS_BACK);
            let found = Some(window(start, end));
            let _ = judge_bundle(found, listed.bundle_window(today));
            let _ = judge_day(*days.start(), found, listed.day_window(*days.start()));
            let _ = listed.nothing_before_oldest(today);
        }
    }

    #[test]
    fn hours_at_the_end_of_time_do_not_overflow() {
        let listed = hours(u64::MAX - 2 * HOUR, u64::MAX - HOUR);
        let today = listed.today(Some(u64::MAX - DAY));
        let _ = listed.required_days(today);
        let _ = listed.day_window(today);
        let _ = listed.bundle_window(today);
        let _ = listed.nothing_before_oldest(today);
    }
}
