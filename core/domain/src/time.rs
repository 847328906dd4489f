//! Time rules of DESIGN §2: interval, hour and day numbers, key expiry, publish hours, relevance
//! and closed hours, plus the injectable [`Clock`].
//!
//! All functions work on `i64` Unix seconds in UTC and are pure; floor division is Euclidean so
//! instants before 1970 fall into the right bucket. Code outside this module must not read the
//! wall clock directly: it asks a [`Clock`], so tests can set the time instead of sleeping.
//! Nothing here may do I/O. The clocks themselves need a timer, so they live with the async
//! runtime in `diagnosis-core` (`diagnosis_core::time::{SystemClock, ManualClock}`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

/// Length of one Exposure Notification interval (DESIGN §2).
pub const SECONDS_PER_INTERVAL: i64 = 600;
/// Intervals in one day; also the largest `rolling_period` (DESIGN §2, §3.3).
pub const INTERVALS_PER_DAY: i64 = 144;
/// Length of one hour, the unit of submission, publication and export files (DESIGN §2).
pub const SECONDS_PER_HOUR: i64 = 3600;
/// Hours in one UTC day.
pub const HOURS_PER_DAY: i64 = 24;
/// Length of one UTC day (DESIGN §2).
pub const SECONDS_PER_DAY: i64 = 86_400;
/// How long after its expiry a key stays relevant (DESIGN §2).
pub const RELEVANCE_DAYS: i64 = 14;
/// How far an upload's timestamp may be from server time (DESIGN §3.3).
pub const MAX_UPLOAD_CLOCK_SKEW_SECONDS: i64 = 3600;

/// Hours a key that is still valid at upload is held back after its expiry (DESIGN §2,
/// the Apple/Google rule).
const PUBLISH_DELAY_HOURS: i64 = 2;

/// A Unix time in whole seconds, UTC: the unit of the ledger, file headers and time rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixSeconds(i64);

/// An EN interval number, `floor(unix / 600)` (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntervalNumber(i64);

/// An hour number, `floor(unix / 3600)`: the unit of submission, publication and hourly
/// files (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HourNumber(i64);

/// A UTC day number, `floor(unix / 86400)`: the unit of daily files (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DayNumber(i64);

impl UnixSeconds {
    pub const fn new(seconds: i64) -> Self {
        Self(seconds)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// The whole second `instant` is in.
    pub fn from_datetime(instant: DateTime<Utc>) -> Self {
        Self(instant.timestamp())
    }

    /// The value as the unsigned seconds of an export file's header, or `None` before 1970.
    pub fn to_u64(self) -> Option<u64> {
        u64::try_from(self.0).ok()
    }

    /// The interval containing this second.
    pub fn interval(self) -> IntervalNumber {
        IntervalNumber(interval_number(self.0))
    }

    /// The hour containing this second.
    pub fn hour(self) -> HourNumber {
        HourNumber(hour_number(self.0))
    }

    /// The UTC day containing this second.
    pub fn day(self) -> DayNumber {
        DayNumber(day_number(self.0))
    }
}

impl From<DateTime<Utc>> for UnixSeconds {
    fn from(instant: DateTime<Utc>) -> Self {
        Self::from_datetime(instant)
    }
}

impl fmt::Display for UnixSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl IntervalNumber {
    pub const fn new(interval: i64) -> Self {
        Self(interval)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// Its first second.
    pub fn start(self) -> UnixSeconds {
        UnixSeconds(self.0.saturating_mul(SECONDS_PER_INTERVAL))
    }
}

impl HourNumber {
    pub const fn new(hour: i64) -> Self {
        Self(hour)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// Its first second.
    pub fn start(self) -> UnixSeconds {
        UnixSeconds(hour_start(self.0))
    }

    /// The first second after it (the `end` a file of this hour carries).
    pub fn end(self) -> UnixSeconds {
        UnixSeconds(hour_start(self.0.saturating_add(1)))
    }

    /// The hour that ends at `end` (the last hour of a window whose end is `end`).
    pub fn ending_at(end: UnixSeconds) -> Self {
        Self(end.0.div_euclid(SECONDS_PER_HOUR).saturating_sub(1))
    }

    /// The UTC day it belongs to.
    pub fn day(self) -> DayNumber {
        DayNumber(self.0.div_euclid(HOURS_PER_DAY))
    }

    /// The hour `hours` later (earlier when negative).
    pub fn plus(self, hours: i64) -> Self {
        Self(self.0.saturating_add(hours))
    }

    /// Hours from `earlier` to this one.
    pub fn since(self, earlier: HourNumber) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Every hour from this one through `last`, in order (none when `last` is earlier).
    pub fn through(self, last: HourNumber) -> impl DoubleEndedIterator<Item = HourNumber> {
        (self.0..=last.0).map(HourNumber)
    }

    /// The latest hour closed at `now` ([`last_closed_hour`]).
    pub fn last_closed(now: UnixSeconds, grace_seconds: i64) -> Self {
        Self(last_closed_hour(now.0, grace_seconds))
    }
}

impl fmt::Display for HourNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl DayNumber {
    pub const fn new(day: i64) -> Self {
        Self(day)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// Its first second (00:00 UTC).
    pub fn start(self) -> UnixSeconds {
        UnixSeconds(day_start(self.0))
    }

    /// Its first hour (00:00–01:00).
    pub fn first_hour(self) -> HourNumber {
        HourNumber(self.0.saturating_mul(HOURS_PER_DAY))
    }

    /// Its last hour (23:00–24:00).
    pub fn last_hour(self) -> HourNumber {
        self.first_hour().plus(HOURS_PER_DAY - 1)
    }

    /// The day `days` later (earlier when negative).
    pub fn plus(self, days: i64) -> Self {
        Self(self.0.saturating_add(days))
    }
}

impl fmt::Display for DayNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A future that completes once a [`Clock`] has reached an instant.
pub type Wait<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The source of "now", and of waiting for a later instant. Production uses `SystemClock`;
/// tests use `ManualClock`, whose waits complete when the test moves it, so code that runs
/// on a schedule is tested without sleeping.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant, in UTC.
    fn now(&self) -> DateTime<Utc>;

    /// The current instant in whole Unix seconds.
    fn unix_now(&self) -> UnixSeconds {
        UnixSeconds::from_datetime(self.now())
    }

    /// Completes once [`Clock::now`] is at or after `instant` (at once if it already is).
    /// Dropping the future abandons the wait.
    fn wait_until(&self, instant: DateTime<Utc>) -> Wait<'_>;
}

/// EN interval number containing `unix`: `floor(unix / 600)` (DESIGN §2).
pub fn interval_number(unix: i64) -> i64 {
    unix.div_euclid(SECONDS_PER_INTERVAL)
}

/// Hour number containing `unix`: `floor(unix / 3600)` (DESIGN §2).
pub fn hour_number(unix: i64) -> i64 {
    unix.div_euclid(SECONDS_PER_HOUR)
}

/// UTC day number containing `unix`: `floor(unix / 86400)` (DESIGN §2).
pub fn day_number(unix: i64) -> i64 {
    unix.div_euclid(SECONDS_PER_DAY)
}

/// First second of hour `hour`.
pub fn hour_start(hour: i64) -> i64 {
    hour.saturating_mul(SECONDS_PER_HOUR)
}

/// First second (00:00 UTC) of day `day`.
pub fn day_start(day: i64) -> i64 {
    day.saturating_mul(SECONDS_PER_DAY)
}

/// Unix second at which a key stops being valid: `(rsin + rolling_period) × 600` (DESIGN §2).
///
/// Computed in `i64`, so no pair of `i32` inputs can overflow.
pub fn key_expiry(rolling_start_interval_number: i32, rolling_period: i32) -> i64 {
    (i64::from(rolling_start_interval_number) + i64::from(rolling_period)) * SECONDS_PER_INTERVAL
}

/// Hour in which a key is published: `max(submission hour, ceil(expiry / 3600) + 2)`
/// (DESIGN §2). A key still valid at upload is held back until two hours after it expires.
pub fn publish_hour(
    submission_hour: i64,
    rolling_start_interval_number: i32,
    rolling_period: i32,
) -> i64 {
    submission_hour.max(held_back_until(
        rolling_start_interval_number,
        rolling_period,
    ))
}

/// The earliest hour a key may be published in, whenever it is submitted: two hours after the
/// hour its expiry falls in (rounded up), the hold-back half of [`publish_hour`]. The store
/// files an upload's keys under `max(this, the submission hour the database's clock gives)`.
pub fn held_back_until(rolling_start_interval_number: i32, rolling_period: i32) -> i64 {
    earliest_publish_hour(key_expiry(rolling_start_interval_number, rolling_period))
}

/// The earliest hour a key expiring at `expiry_unix` may be published in (DESIGN §2): two
/// hours after the hour its expiry falls in, rounded up. So an hour holds no key that expired
/// later than two hours before it began, which is what a reader of published files may rely
/// on.
pub fn earliest_publish_hour(expiry_unix: i64) -> i64 {
    // Ceiling division that is also right for negative numbers: -floor(-x / d).
    let expiry_hour_ceiling = -expiry_unix.saturating_neg().div_euclid(SECONDS_PER_HOUR);
    expiry_hour_ceiling.saturating_add(PUBLISH_DELAY_HOURS)
}

/// [`RELEVANCE_DAYS`] in seconds.
pub const RELEVANCE_SECONDS: i64 = RELEVANCE_DAYS * SECONDS_PER_DAY;

/// The latest expiry that is no longer relevant at `now_unix`: `now − 14 × 86400`. A key is
/// relevant exactly when its expiry is after this ([`is_relevant`]).
pub fn relevance_cutoff(now_unix: i64) -> i64 {
    now_unix.saturating_sub(RELEVANCE_SECONDS)
}

/// Whether a key with this expiry is still relevant at `now_unix` (DESIGN §2: its expiry is
/// within the last 14 days).
///
/// Boundary: relevant while `expiry > now − 14 × 86400`. A key that expired exactly 14 days
/// ago has had its full 14 days and is no longer relevant; a key that expired one second less
/// long ago still is. Keys whose expiry is in the future are relevant.
///
/// This is the one definition: the store's queries select relevant keys with the same
/// comparison against [`relevance_cutoff`] (`store::diagnosis_keys`), and an end-to-end test
/// checks that the keys they select at and around every boundary are exactly those this
/// function accepts.
pub fn is_relevant(expiry_unix: i64, now_unix: i64) -> bool {
    expiry_unix > relevance_cutoff(now_unix)
}

/// The latest hour that is closed at `now_unix` (DESIGN §2); every earlier hour is closed too.
/// Hour `h` is closed once `now ≥ (h + 1) × 3600 + grace`. The grace must exceed the submit
/// service's statement timeout, so no transaction that started inside the hour can still write
/// into it.
pub fn last_closed_hour(now_unix: i64, grace_seconds: i64) -> i64 {
    now_unix
        .saturating_sub(grace_seconds)
        .div_euclid(SECONDS_PER_HOUR)
        .saturating_sub(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000;

    /// Whether hour `hour` is closed at `now_unix`: the rule as DESIGN §2 states it, one hour at
    /// a time, against which `last_closed_hour` is checked.
    fn is_hour_closed(hour: i64, now_unix: i64, grace_seconds: i64) -> bool {
        let closes_at = hour
            .saturating_add(1)
            .saturating_mul(SECONDS_PER_HOUR)
            .saturating_add(grace_seconds);
        now_unix >= closes_at
    }

    #[test]
    fn interval_hour_and_day_numbers() {
        fn check(unix: i64, interval: i64, hour: i64, day: i64) {
            assert_eq!(interval_number(unix), interval, "interval of {unix}");
            assert_eq!(hour_number(unix), hour, "hour of {unix}");
            assert_eq!(day_number(unix), day, "day of {unix}");
        }
        check(0, 0, 0, 0);
        check(599, 0, 0, 0);
        check(600, 1, 0, 0);
        check(3599, 5, 0, 0);
        check(3600, 6, 1, 0);
        check(86_399, 143, 23, 0);
        check(86_400, 144, 24, 1);
        check(-1, -1, -1, -1);
        check(-600, -1, -1, -1);
        check(-601, -2, -1, -1);
        check(NOW, 2_833_333, 472_222, 19_675);
    }

    #[test]
    fn key_expiry_is_the_end_of_the_rolling_period() {
        fn check(rsin: i32, rolling_period: i32, expected: i64) {
            assert_eq!(key_expiry(rsin, rolling_period), expected);
        }
        check(0, 0, 0);
        check(0, 144, 86_400);
        check(2_833_200, 144, 1_700_006_400);
        check(2_833_200, 1, 1_699_920_600);
        check(i32::MAX, i32::MAX, 2 * i64::from(i32::MAX) * 600);
        check(i32::MIN, i32::MIN, 2 * i64::from(i32::MIN) * 600);
    }

    #[test]
    fn publish_hour_holds_valid_keys_back_two_hours_after_expiry() {
        fn check(submission_hour: i64, rsin: i32, rolling_period: i32, expected: i64) {
            assert_eq!(
                publish_hour(submission_hour, rsin, rolling_period),
                expected,
                "submitted in {submission_hour}, rsin {rsin}, period {rolling_period}"
            );
        }
        // Day 19675 starts at interval 2833200 and hour 472200; a full-day key expires at
        // the start of hour 472224.
        check(472_222, 2_833_200, 144, 472_226);
        // An already expired key is published in its submission hour.
        check(472_230, 2_833_200, 144, 472_230);
        check(472_226, 2_833_200, 144, 472_226);
        check(472_225, 2_833_200, 144, 472_226);
        // Expiry inside an hour rounds up: rsin 2833200 + 1 expires at 10 min past hour 472200.
        check(472_200, 2_833_200, 1, 472_203);
        // Expiry exactly on an hour boundary: 6 intervals = 1 hour.
        check(472_200, 2_833_200, 6, 472_203);
        check(472_200, 2_833_200, 7, 472_204);
        // Negative time still rounds up.
        check(-100, -6, 5, 2);
        check(-100, -12, 5, 1);
    }

    #[test]
    fn relevance_boundary() {
        fn check(expiry: i64, now: i64, expected: bool) {
            assert_eq!(
                is_relevant(expiry, now),
                expected,
                "expiry {expiry} now {now}"
            );
        }
        let fourteen_days = RELEVANCE_DAYS * SECONDS_PER_DAY;
        check(NOW + 86_400, NOW, true);
        check(NOW, NOW, true);
        check(NOW - fourteen_days + 1, NOW, true);
        check(NOW - fourteen_days, NOW, false);
        check(NOW - fourteen_days - 1, NOW, false);
        check(0, NOW, false);
        check(i64::MIN, i64::MIN, false);
        check(i64::MAX, i64::MIN, true);
    }

    #[test]
    fn hour_closes_after_its_end_plus_grace() {
        fn check(hour: i64, now: i64, grace: i64, expected: bool) {
            assert_eq!(
                is_hour_closed(hour, now, grace),
                expected,
                "hour {hour} now {now} grace {grace}"
            );
        }
        check(10, 11 * 3600 + 600, 600, true);
        check(10, 11 * 3600 + 599, 600, false);
        check(10, 11 * 3600, 0, true);
        check(10, 11 * 3600 - 1, 0, false);
        check(10, 10 * 3600, 600, false);
        check(-1, 600, 600, true);
        check(i64::MAX, i64::MAX, 600, true);
        check(i64::MAX, i64::MAX - 1, 600, false);
    }

    #[test]
    fn last_closed_hour_examples() {
        fn check(now: i64, grace: i64, expected: i64) {
            assert_eq!(
                last_closed_hour(now, grace),
                expected,
                "now {now} grace {grace}"
            );
        }
        check(11 * 3600 + 600, 600, 10);
        check(11 * 3600 + 599, 600, 9);
        check(11 * 3600, 0, 10);
        check(0, 600, -2);
        check(NOW, 600, 472_221);
    }

    #[test]
    fn the_typed_numbers_convert_as_the_rules_say() {
        let now = UnixSeconds::new(NOW);
        assert_eq!(now.interval(), IntervalNumber::new(2_833_333));
        assert_eq!(now.hour(), HourNumber::new(472_222));
        assert_eq!(now.day(), DayNumber::new(19_675));
        assert_eq!(
            IntervalNumber::new(2_833_333).start(),
            UnixSeconds::new(1_699_999_800)
        );
        let hour = now.hour();
        assert_eq!(hour.start(), UnixSeconds::new(1_699_999_200));
        assert_eq!(hour.end(), UnixSeconds::new(1_700_002_800));
        assert_eq!(HourNumber::ending_at(hour.end()), hour);
        assert_eq!(hour.day(), now.day());
        assert_eq!(hour.plus(-2).since(hour), -2);
        assert_eq!(
            hour.plus(-2).through(hour).collect::<Vec<_>>(),
            vec![hour.plus(-2), hour.plus(-1), hour]
        );
        assert_eq!(hour.through(hour.plus(-1)).count(), 0);
        let day = now.day();
        assert_eq!(day.start(), UnixSeconds::new(1_699_920_000));
        assert_eq!(day.first_hour(), HourNumber::new(472_200));
        assert_eq!(day.last_hour(), HourNumber::new(472_223));
        assert_eq!(day.last_hour().end(), day.plus(1).start());
        assert_eq!(HourNumber::ending_at(day.plus(1).start()), day.last_hour());
        assert_eq!(UnixSeconds::new(-1).to_u64(), None);
        assert_eq!(now.to_u64(), Some(1_700_000_000));
        assert_eq!(
            HourNumber::last_closed(now, 600),
            HourNumber::new(last_closed_hour(NOW, 600))
        );
        let last_closed = HourNumber::last_closed(now, 600);
        assert!(is_hour_closed(last_closed.get(), NOW, 600));
        assert!(!is_hour_closed(last_closed.plus(1).get(), NOW, 600));
        let instant = DateTime::from_timestamp(NOW, 999_000_000).unwrap();
        assert_eq!(UnixSeconds::from(instant), now);
    }

    #[test]
    fn hour_and_day_starts() {
        assert_eq!(hour_start(472_222), 1_699_999_200);
        assert_eq!(day_start(19_675), 1_699_920_000);
        assert_eq!(hour_start(-1), -3600);
        assert_eq!(day_start(i64::MAX), i64::MAX);
    }

    proptest! {
        #[test]
        fn publish_hour_is_never_before_submission_or_expiry_plus_two(
            submission_hour in -1_000_000_i64..1_000_000_000,
            rsin in any::<i32>(),
            rolling_period in 0_i32..=144,
        ) {
            let hour = publish_hour(submission_hour, rsin, rolling_period);
            prop_assert!(hour >= submission_hour);
            let expiry = key_expiry(rsin, rolling_period);
            // The publish hour starts at least two full hours after expiry.
            prop_assert!(hour_start(hour) >= expiry + 2 * SECONDS_PER_HOUR);
            prop_assert!(hour >= hour_number(expiry) + 2);
            // And no later than needed.
            prop_assert!(hour == submission_hour || hour_start(hour - 1) < expiry + 2 * SECONDS_PER_HOUR);
        }

        #[test]
        fn interval_hour_and_day_agree(unix in -10_000_000_000_i64..10_000_000_000) {
            let interval = interval_number(unix);
            let hour = hour_number(unix);
            let day = day_number(unix);
            prop_assert!(interval * SECONDS_PER_INTERVAL <= unix);
            prop_assert!(unix < (interval + 1) * SECONDS_PER_INTERVAL);
            prop_assert!(hour_start(hour) <= unix && unix < hour_start(hour + 1));
            prop_assert!(day_start(day) <= unix && unix < day_start(day + 1));
            prop_assert_eq!(interval.div_euclid(6), hour);
            prop_assert_eq!(interval.div_euclid(INTERVALS_PER_DAY), day);
            prop_assert_eq!(hour.div_euclid(24), day);
        }

        #[test]
        fn last_closed_hour_is_closed_and_the_next_is_not(
            now in -10_000_000_000_i64..10_000_000_000,
            grace in 0_i64..7200,
        ) {
            let hour = last_closed_hour(now, grace);
            prop_assert!(is_hour_closed(hour, now, grace));
            prop_assert!(!is_hour_closed(hour + 1, now, grace));
        }

        #[test]
        fn relevance_is_monotonic_in_expiry(
            now in 0_i64..10_000_000_000,
            expiry in 0_i64..10_000_000_000,
            later in 0_i64..1_000_000,
        ) {
            if is_relevant(expiry, now) {
                prop_assert!(is_relevant(expiry + later, now));
            }
            prop_assert_eq!(is_relevant(expiry, now), now - expiry < RELEVANCE_DAYS * SECONDS_PER_DAY);
        }
    }
}
