//! Step 1, select closed windows (DESIGN §2, §4.2): which hours and which days
//! a pass publishes. Pure functions of the ledger's state and the clock.

use std::ops::RangeInclusive;

use diagnosis_core::time::{RELEVANCE_DAYS, hour_number, last_closed_hour};

/// Hours per UTC day.
pub const HOURS_PER_DAY: i64 = 24;

/// The oldest hour worth publishing at `now`: files older than 14 days leave
/// the indexes, so a long outage is caught up only within that window.
pub fn oldest_indexed_hour(now_unix: i64) -> i64 {
    hour_number(now_unix) - RELEVANCE_DAYS * HOURS_PER_DAY
}

/// The hours a pass publishes, oldest first, with no gap: from the hour after
/// the last published one (or, on the first run, the earliest hour holding a
/// publishable key, else the last closed hour) up to the last closed hour.
pub fn hours_to_publish(
    now_unix: i64,
    grace_seconds: i64,
    last_published_hour: Option<i64>,
    earliest_key_hour: Option<i64>,
) -> RangeInclusive<i64> {
    let last_closed = last_closed_hour(now_unix, grace_seconds);
    let first = match last_published_hour {
        Some(hour) => hour + 1,
        None => earliest_key_hour.map_or(last_closed, |h| h.min(last_closed)),
    };
    first.max(oldest_indexed_hour(now_unix))..=last_closed
}

/// The UTC days whose 24 hours are all published, from the day of
/// `first_published_hour` (never older than the index window) up to the day of
/// `last_published_hour`. A day is complete only once its hour 23 is published.
pub fn complete_days(
    now_unix: i64,
    first_published_hour: i64,
    last_published_hour: i64,
) -> RangeInclusive<i64> {
    let first_day = first_published_hour
        .max(oldest_indexed_hour(now_unix))
        .div_euclid(HOURS_PER_DAY);
    let last_day = (last_published_hour + 1).div_euclid(HOURS_PER_DAY) - 1;
    first_day..=last_day
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: i64 = 600;
    // 2025-11-28 15:20 UTC
    const NOW: i64 = 1_764_343_200;

    fn hour(h: i64) -> i64 {
        hour_number(NOW) + h
    }

    #[test]
    fn a_first_run_without_keys_starts_at_the_last_closed_hour() {
        // 15:20 with 10 minutes of grace: 14:00–15:00 is closed, 15:00 is not.
        assert_eq!(
            hours_to_publish(NOW, GRACE, None, None),
            hour(-1)..=hour(-1)
        );
        // At 15:09, 14:00–15:00 is still within its grace period.
        let early = NOW - 11 * 60;
        assert_eq!(
            hours_to_publish(early, GRACE, None, None),
            hour(-2)..=hour(-2)
        );
    }

    #[test]
    fn a_first_run_starts_at_the_earliest_hour_with_keys() {
        assert_eq!(
            hours_to_publish(NOW, GRACE, None, Some(hour(-30))),
            hour(-30)..=hour(-1)
        );
    }

    #[test]
    fn later_runs_continue_without_a_gap_and_catch_up_an_outage() {
        assert_eq!(
            hours_to_publish(NOW, GRACE, Some(hour(-2)), Some(hour(-100))),
            hour(-1)..=hour(-1)
        );
        assert!(hours_to_publish(NOW, GRACE, Some(hour(-1)), None).is_empty());
        assert_eq!(
            hours_to_publish(NOW, GRACE, Some(hour(-32)), None),
            hour(-31)..=hour(-1)
        );
    }

    #[test]
    fn catch_up_never_reaches_past_the_fourteen_day_index() {
        let range = hours_to_publish(NOW, GRACE, Some(hour(-1000)), None);
        assert_eq!(*range.start(), oldest_indexed_hour(NOW));
        assert_eq!(*range.end(), hour(-1));
    }

    #[test]
    fn a_day_is_complete_once_its_last_hour_is_published() {
        let day = NOW.div_euclid(86_400);
        let midnight = day * 24;
        assert!(complete_days(NOW, midnight - 30, midnight - 2).eq(day - 2..=day - 2));
        assert!(complete_days(NOW, midnight - 30, midnight - 1).eq(day - 2..=day - 1));
        assert!(complete_days(NOW, midnight + 3, midnight + 14).is_empty());
    }
}
