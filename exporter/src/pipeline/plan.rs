//! Step 1, select closed windows (DESIGN §2, §4.2): which hours and which days
//! a pass publishes. Pure functions of the ledger's state and the clock.

use diagnosis_core::time::{DayNumber, HOURS_PER_DAY, HourNumber, RELEVANCE_DAYS, UnixSeconds};

/// The oldest hour worth publishing at `now`: files older than 14 days leave
/// the indexes, so a long outage is caught up only within that window.
pub fn oldest_indexed_hour(now: UnixSeconds) -> HourNumber {
    now.hour().plus(-RELEVANCE_DAYS * HOURS_PER_DAY)
}

/// The hours a pass publishes, oldest first, with no gap: from the hour after
/// the last published one (or, on the first run, the earliest hour holding a
/// publishable key, else the last closed hour) up to the last closed hour.
pub fn hours_to_publish(
    now: UnixSeconds,
    grace_seconds: i64,
    last_published_hour: Option<HourNumber>,
    earliest_key_hour: Option<HourNumber>,
) -> impl DoubleEndedIterator<Item = HourNumber> {
    let last_closed = HourNumber::last_closed(now, grace_seconds);
    let first = match last_published_hour {
        Some(hour) => hour.plus(1),
        None => earliest_key_hour.map_or(last_closed, |h| h.min(last_closed)),
    };
    first.max(oldest_indexed_hour(now)).through(last_closed)
}

/// The UTC days whose 24 hours are all published, from the day of
/// `first_published_hour` (never older than the index window) up to the day of
/// `last_published_hour`. A day is complete only once its hour 23 is published.
pub fn complete_days(
    now: UnixSeconds,
    first_published_hour: HourNumber,
    last_published_hour: HourNumber,
) -> impl DoubleEndedIterator<Item = DayNumber> {
    let first_day = first_published_hour.max(oldest_indexed_hour(now)).day();
    let last_day = last_published_hour.plus(1).day().plus(-1);
    (first_day.get()..=last_day.get()).map(DayNumber::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: i64 = 600;
    // 2025-11-28 15:20 UTC
    const NOW: UnixSeconds = UnixSeconds::new(1_764_343_200);

    fn hour(h: i64) -> HourNumber {
        NOW.hour().plus(h)
    }

    fn hours(
        now: UnixSeconds,
        last_published: Option<HourNumber>,
        earliest: Option<HourNumber>,
    ) -> Vec<HourNumber> {
        hours_to_publish(now, GRACE, last_published, earliest).collect()
    }

    fn span(first: i64, last: i64) -> Vec<HourNumber> {
        hour(first).through(hour(last)).collect()
    }

    #[test]
    fn a_first_run_without_keys_starts_at_the_last_closed_hour() {
        // 15:20 with 10 minutes of grace: 14:00–15:00 is closed, 15:00 is not.
        assert_eq!(hours(NOW, None, None), span(-1, -1));
        // At 15:09, 14:00–15:00 is still within its grace period.
        let early = UnixSeconds::new(NOW.get() - 11 * 60);
        assert_eq!(hours(early, None, None), span(-2, -2));
    }

    #[test]
    fn a_first_run_starts_at_the_earliest_hour_with_keys() {
        assert_eq!(hours(NOW, None, Some(hour(-30))), span(-30, -1));
    }

    #[test]
    fn later_runs_continue_without_a_gap_and_catch_up_an_outage() {
        assert_eq!(hours(NOW, Some(hour(-2)), Some(hour(-100))), span(-1, -1));
        assert!(hours(NOW, Some(hour(-1)), None).is_empty());
        assert_eq!(hours(NOW, Some(hour(-32)), None), span(-31, -1));
    }

    #[test]
    fn catch_up_never_reaches_past_the_fourteen_day_index() {
        let range = hours(NOW, Some(hour(-1000)), None);
        assert_eq!(range.first(), Some(&oldest_indexed_hour(NOW)));
        assert_eq!(range.last(), Some(&hour(-1)));
        assert_eq!(range.len(), 14 * 24);
    }

    #[test]
    fn a_day_is_complete_once_its_last_hour_is_published() {
        let day = NOW.day();
        let midnight = day.first_hour();
        let days = |first: i64, last: i64| -> Vec<DayNumber> {
            complete_days(NOW, midnight.plus(first), midnight.plus(last)).collect()
        };
        assert_eq!(days(-30, -2), vec![day.plus(-2)]);
        assert_eq!(days(-30, -1), vec![day.plus(-2), day.plus(-1)]);
        assert!(days(3, 14).is_empty());
    }
}
