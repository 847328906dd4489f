//! Retention (DESIGN §4.2): an object that left the indexes stays in the bucket for
//! `DELETE_UNINDEXED_AFTER_HOURS` before it is deleted.

use chrono::Duration;
use diagnosis_core::time::hour_number;
use diagnosis_tests::app::test_start_time;
use diagnosis_tests::export::ExportHarness;

fn hour_key(hour: i64) -> String {
    format!("CA/{}-{}-00001.zip", hour * 3600, (hour + 1) * 3600)
}

/// Publishes the first hour, lets it leave the index 14 days later, then runs passes until
/// `delay - 1 min` after that pass, each of which must keep the object, and one at
/// `delay + 1 min`, which must delete it.
async fn the_object_outlives_its_index_entry_by(h: &ExportHarness, delay: Duration) {
    let start = h.now();
    h.run().await;
    let first = hour_key(hour_number(start.timestamp()) - 1);
    assert_eq!(h.index("CA/index.txt").await, vec![first.clone()]);

    h.advance(Duration::days(14) + Duration::hours(1));
    h.run().await;
    assert!(!h.index("CA/index.txt").await.contains(&first));
    let unindexed_at = h.now();

    for after in [
        Duration::minutes(5),
        delay / 2,
        delay - Duration::minutes(1),
    ] {
        h.advance(unindexed_at + after - h.now());
        let report = h.run().await;
        assert_eq!(
            report.deleted_objects, 0,
            "an object was deleted {after} after it left the indexes"
        );
        assert!(
            h.bucket.exists(&first).await.unwrap(),
            "{first} was gone {after} after it left the index"
        );
    }
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");

    h.advance(unindexed_at + delay + Duration::minutes(1) - h.now());
    let report = h.run().await;
    assert!(report.deleted_objects >= 1, "{report:?}");
    assert!(
        !h.bucket.exists(&first).await.unwrap(),
        "{first} outlived its index entry by more than {delay}"
    );
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn an_unindexed_object_is_deleted_a_day_after_it_left_the_indexes() {
    let h = ExportHarness::new(test_start_time()).await;
    assert_eq!(h.settings.delete_unindexed_after, Duration::hours(24));
    the_object_outlives_its_index_entry_by(&h, Duration::hours(24)).await;
}

#[tokio::test]
async fn delete_unindexed_after_hours_sets_how_long_an_unindexed_object_stays() {
    let h = ExportHarness::with_settings(test_start_time(), |s| {
        s.delete_unindexed_after = Duration::hours(2)
    })
    .await;
    the_object_outlives_its_index_entry_by(&h, Duration::hours(2)).await;
}
