//! The 14-day relevance rule has one definition, `diagnosis_core::time::is_relevant`; the
//! store's queries select keys with the same comparison (DESIGN §2). Against real PostgreSQL:
//! for keys whose expiry lies at and around every boundary, the keys each query selects are
//! exactly those `is_relevant` accepts.

use std::collections::BTreeSet;

use diagnosis_core::domain::{DiagnosisKey, Region, ReportType};
use diagnosis_core::store::Store;
use diagnosis_core::time::{
    HourNumber, RELEVANCE_SECONDS, SECONDS_PER_INTERVAL, UnixSeconds, hour_number, hour_start,
    is_relevant, publish_hour, relevance_cutoff,
};
use diagnosis_tests::app::test_start_time;
use diagnosis_tests::dataset::{Rng, copy_keys};
use diagnosis_tests::pg::TestDatabase;
use futures::TryStreamExt as _;

/// A key of `rolling_period` intervals that expires at `expiry` (a multiple of 600).
fn expiring_at(rng: &mut Rng, expiry: i64, rolling_period: i32) -> DiagnosisKey {
    let end_interval = expiry / SECONDS_PER_INTERVAL;
    DiagnosisKey {
        key_data: rng.key_data(),
        rolling_start_interval_number: i32::try_from(end_interval - i64::from(rolling_period))
            .unwrap(),
        rolling_period,
        transmission_risk_level: 1,
        report_type: ReportType::ConfirmedTest,
        days_since_onset: None,
    }
}

#[tokio::test]
async fn the_store_selects_exactly_the_keys_is_relevant_accepts() {
    let db = TestDatabase::new().await;
    let store = Store::from_pool(db.pool().clone());
    let region = Region::parse("302").unwrap();
    let first_hour = hour_number(test_start_time().timestamp()) - 3;
    let hours = first_hour..=first_hour + 2;
    let mut rng = Rng::new(14);

    // For each publish hour, keys expiring from 40 minutes before to 40 minutes after the
    // cutoff at the end of that hour, and keys that expire long before or after it, with the
    // shortest and the longest rolling period.
    let mut stored: Vec<(i64, DiagnosisKey)> = Vec::new();
    for hour in hours.clone() {
        let cutoff = relevance_cutoff(hour_start(hour + 1));
        assert_eq!(cutoff % SECONDS_PER_INTERVAL, 0);
        let mut expiries: Vec<i64> = (-4..=4)
            .map(|i| cutoff + i * SECONDS_PER_INTERVAL)
            .collect();
        expiries.extend([
            cutoff - RELEVANCE_SECONDS,
            hour_start(hour),
            hour_start(hour + 3),
        ]);
        for expiry in expiries {
            for rolling_period in [1, 144] {
                stored.push((hour, expiring_at(&mut rng, expiry, rolling_period)));
            }
        }
    }
    let client = db.client().await;
    copy_keys(&client, "302", stored.iter().cloned())
        .await
        .unwrap();
    // Stored by submission hour; a key still valid then is published later (DESIGN §2).
    let stored: Vec<(i64, DiagnosisKey)> = stored
        .into_iter()
        .map(|(hour, key)| {
            let published =
                publish_hour(hour, key.rolling_start_interval_number, key.rolling_period);
            (published, key)
        })
        .collect();
    // Another region's keys are never selected.
    copy_keys(
        &client,
        "999",
        stored.iter().take(4).map(|(h, k)| {
            let mut k = k.clone();
            k.key_data = rng.key_data();
            (*h, k)
        }),
    )
    .await
    .unwrap();

    // Instants to be relevant at besides the end of the publish hour: one second either side
    // of and exactly at the 14 days after each expiry near a cutoff, so the instant's cutoff
    // falls just before, on and just after that expiry.
    let mut instants: Vec<Option<i64>> = vec![None];
    for hour in hours.clone() {
        let cutoff = relevance_cutoff(hour_start(hour + 1));
        for expiry in [
            cutoff,
            cutoff + SECONDS_PER_INTERVAL,
            cutoff + 2 * SECONDS_PER_INTERVAL,
        ] {
            for delta in [-1, 0, 1] {
                instants.push(Some(expiry + RELEVANCE_SECONDS + delta));
            }
        }
    }

    let mut seen_relevant = 0;
    let mut seen_irrelevant = 0;
    for relevant_at in instants {
        for (from, to) in [
            (*hours.start(), *hours.end()),
            (*hours.start(), *hours.start()),
            (*hours.end(), *hours.end()),
        ] {
            let expected: BTreeSet<[u8; 16]> = stored
                .iter()
                .filter(|(hour, key)| {
                    let accepted = is_relevant(key.expiry_unix(), hour_start(hour + 1))
                        && relevant_at.is_none_or(|at| is_relevant(key.expiry_unix(), at));
                    (from..=to).contains(hour) && accepted
                })
                .map(|(_, key)| *key.key_data.as_bytes())
                .collect();
            let selected: BTreeSet<[u8; 16]> = store
                .stream_publishable_keys(
                    &region,
                    HourNumber::new(from),
                    HourNumber::new(to),
                    relevant_at.map(UnixSeconds::new),
                )
                .await
                .unwrap()
                .map_ok(|key| *key.key_data.as_bytes())
                .try_collect()
                .await
                .unwrap();
            let differing: Vec<(i64, i64, i32)> = stored
                .iter()
                .filter(|(_, key)| {
                    let data = key.key_data.as_bytes();
                    selected.contains(data) != expected.contains(data)
                })
                .map(|(hour, key)| (*hour, key.expiry_unix(), key.rolling_period))
                .collect();
            assert!(
                differing.is_empty(),
                "hours {from}..={to}, relevant at {relevant_at:?}: the query and is_relevant \
                 disagree on (publish hour, expiry, rolling period) {differing:?}"
            );
            let in_range = stored
                .iter()
                .filter(|(h, _)| (from..=to).contains(h))
                .count();
            seen_relevant += expected.len();
            seen_irrelevant += in_range - expected.len();

            if relevant_at.is_none() {
                // The padding histogram and the first run's earliest hour read the same keys.
                let histogram = store
                    .key_metadata_histogram(&region, HourNumber::new(from), HourNumber::new(to))
                    .await
                    .unwrap();
                let counted: i64 = histogram.iter().map(|bucket| bucket.count).sum();
                assert_eq!(counted, i64::try_from(expected.len()).unwrap());
                let earliest = store
                    .earliest_publish_hour(&region, HourNumber::new(from), HourNumber::new(to))
                    .await
                    .unwrap();
                let expected_earliest = stored
                    .iter()
                    .filter(|(hour, key)| {
                        (from..=to).contains(hour)
                            && is_relevant(key.expiry_unix(), hour_start(hour + 1))
                    })
                    .map(|(hour, _)| HourNumber::new(*hour))
                    .min();
                assert_eq!(earliest, expected_earliest);
            }
        }
    }
    // Both sides of every boundary were exercised.
    assert!(
        seen_relevant > 100 && seen_irrelevant > 100,
        "{seen_relevant} {seen_irrelevant}"
    );
}
