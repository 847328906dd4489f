//! Derived files are merged only from sources whose bytes are the ledger's (DESIGN §4.2),
//! against real PostgreSQL and a real S3-compatible server: an hourly or daily file that was
//! replaced, damaged or deleted in the bucket is rebuilt from Postgres byte for byte and
//! uploaded again before a daily file or a retrieval object is merged from it, and a file that
//! cannot be rebuilt with its recorded bytes stops the window instead of being merged.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::Duration;
use diagnosis_core::domain::Region;
use diagnosis_core::time::{hour_number, interval_number};
use diagnosis_format::archive::{unzip_export, zip_export};
use diagnosis_format::names::ObjectKind;
use diagnosis_format::render::{ExportWindow, render_window};
use diagnosis_format::sign::sign_export;
use diagnosis_proto::{EXPORT_BIN_HEADER, Message, TemporaryExposureKeyExport};
use diagnosis_tests::app::test_start_time;
use diagnosis_tests::export::{
    ExportHarness, hour_key, key, retrieval_day, test_public_keys, test_signing_keys,
};
use diagnosis_tests::metrics::Exposition;

fn daily_file(day: i64) -> String {
    format!("CA/daily/{}-{}-00001.zip", day * 86_400, (day + 1) * 86_400)
}

/// The key data in a published file, its signature checked with the exporter's public key.
async fn keys_in(h: &ExportHarness, object: &str) -> BTreeSet<Vec<u8>> {
    let zip = h
        .bucket
        .get(object)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{object} is missing"));
    let entries = unzip_export(&zip).unwrap();
    let signatures =
        diagnosis_proto::TekSignatureList::decode(entries.export_sig.as_slice()).unwrap();
    assert!(
        diagnosis_format::sign::verify_signature(
            &entries.export_bin,
            signatures.signatures[0].signature(),
            &test_public_keys()[0],
        ),
        "{object}: bad signature"
    );
    let export =
        TemporaryExposureKeyExport::decode(&entries.export_bin[EXPORT_BIN_HEADER.len()..]).unwrap();
    export.keys.iter().map(|k| k.key_data().to_vec()).collect()
}

/// The key data Postgres holds for the publish hours `first..=last`.
async fn database_keys(h: &ExportHarness, first: i64, last: i64) -> BTreeSet<Vec<u8>> {
    let (first, last) = (i32::try_from(first).unwrap(), i32::try_from(last).unwrap());
    h.db.client()
        .await
        .query(
            "SELECT key_data FROM diagnosis_keys WHERE publish_hour BETWEEN $1 AND $2",
            &[&first, &last],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A file for `hour` holding other keys than the exporter published, signed with the
/// exporter's own key: what someone who can write into the bucket but not into the database
/// could put there.
fn forged_hour_file(hour: i64) -> (Bytes, BTreeSet<Vec<u8>>) {
    let today = interval_number(hour * 3600) / 144 * 144;
    let mut keys: Vec<_> = (0..3).map(|i| key(today - 144, i)).collect();
    let injected = keys
        .iter()
        .map(|k| k.key_data.as_bytes().to_vec())
        .collect();
    let window = ExportWindow::new(
        Region::parse("CA").unwrap(),
        u64::try_from(hour * 3600).unwrap(),
        u64::try_from((hour + 1) * 3600).unwrap(),
    )
    .unwrap();
    let signing = test_signing_keys();
    let parts = render_window(window, &signing.signer_infos(), 500_000, &mut keys).unwrap();
    let export_bin = &parts[0].export_bin;
    let zip = zip_export(export_bin, &sign_export(export_bin, &signing).unwrap()).unwrap();
    (Bytes::from(zip), injected)
}

/// From 15:20: keys land in the hours 15:00 and 16:00 of the test day; at 16:20 the hours up to
/// 15:00–16:00 are published. Returns the harness and the hour 15:00.
async fn a_day_with_keys(
    adjust: impl FnOnce(&mut diagnosis_exporter::config::ExportSettings),
) -> (ExportHarness, i64) {
    let start = test_start_time();
    let h = ExportHarness::with_settings(start, adjust).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[
        key(today - 144, 1),
        key(today - 288, 2),
        key(today - 144, 5),
    ])
    .await;
    h.run().await;
    h.advance(Duration::hours(1));
    h.upload(&[key(today - 144, 3), key(today - 432, 6)]).await;
    h.run().await;
    (h, hour_number(start.timestamp()))
}

async fn put_file(h: &ExportHarness, object: &str, bytes: Bytes) {
    h.bucket
        .put(object, bytes, ObjectKind::ExportFile)
        .await
        .unwrap();
}

/// The object is back with its published bytes and headers.
async fn assert_restored(h: &ExportHarness, object: &str, original: &Bytes) {
    let now = h.bucket.get(object).await.unwrap();
    assert!(
        now.as_ref() == Some(original),
        "{object} was not restored byte for byte"
    );
    let (content_type, cache_control) = h.bucket.attributes(object).await.unwrap().unwrap();
    assert_eq!(content_type.as_deref(), Some("application/zip"));
    assert_eq!(
        cache_control.as_deref(),
        Some("public, max-age=1209600, immutable")
    );
}

/// Completes the test day (01:20 the next day) and checks that its daily file and retrieval
/// object hold exactly the day's keys in Postgres.
async fn complete_the_day_and_check_it(h: &ExportHarness, hour: i64) {
    let day = hour.div_euclid(24);
    h.advance(Duration::hours(9));
    let report = h.run().await;
    assert_eq!(report.days, vec![day]);
    let expected = database_keys(h, day * 24, day * 24 + 23).await;
    assert_eq!(expected.len(), 5);
    assert_eq!(keys_in(h, &daily_file(day)).await, expected);
    assert_eq!(keys_in(h, &retrieval_day(day)).await, expected);
    assert_eq!(keys_in(h, "retrieve/302/00000").await, expected);
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn an_hourly_file_replaced_by_other_signed_keys_is_restored_before_the_day_is_merged() {
    let (h, hour) = a_day_with_keys(|_| {}).await;
    let object = hour_key(hour);
    let original = h.bucket.get(&object).await.unwrap().unwrap();
    let (forged, injected) = forged_hour_file(hour);
    put_file(&h, &object, forged).await;

    complete_the_day_and_check_it(&h, hour).await;
    assert_restored(&h, &object, &original).await;
    let day = hour.div_euclid(24);
    assert!(keys_in(&h, &daily_file(day)).await.is_disjoint(&injected));
}

/// A changed byte in the file with the keys, and an emptied file of the hour before (an
/// object too short for the first read of the merge).
#[tokio::test]
async fn hourly_files_with_changed_bytes_are_restored_before_the_day_is_merged() {
    let (h, hour) = a_day_with_keys(|_| {}).await;
    let object = hour_key(hour);
    let original = h.bucket.get(&object).await.unwrap().unwrap();
    let mut damaged = original.to_vec();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x5a;
    put_file(&h, &object, Bytes::from(damaged)).await;
    let before = hour_key(hour - 1);
    let original_before = h.bucket.get(&before).await.unwrap().unwrap();
    put_file(&h, &before, Bytes::new()).await;

    complete_the_day_and_check_it(&h, hour).await;
    assert_restored(&h, &object, &original).await;
    assert_restored(&h, &before, &original_before).await;
}

#[tokio::test]
async fn a_deleted_hourly_file_is_restored_before_the_day_is_merged() {
    let (h, hour) = a_day_with_keys(|_| {}).await;
    let object = hour_key(hour);
    let original = h.bucket.get(&object).await.unwrap().unwrap();
    h.bucket.delete(&object).await.unwrap();

    complete_the_day_and_check_it(&h, hour).await;
    assert_restored(&h, &object, &original).await;
}

/// A daily file of several parts is sent part by part, so its sources are verified whole
/// before its merge starts.
#[tokio::test]
async fn the_sources_of_a_daily_file_of_several_parts_are_restored_before_its_first_part() {
    let (h, hour) = a_day_with_keys(|s| s.max_keys_per_file = 2).await;
    let object = hour_key(hour); // the first of the hour's two parts
    let original = h.bucket.get(&object).await.unwrap().unwrap();
    let (forged, injected) = forged_hour_file(hour);
    put_file(&h, &object, forged).await;

    let day = hour.div_euclid(24);
    h.advance(Duration::hours(9));
    assert_eq!(h.run().await.days, vec![day]);
    assert_restored(&h, &object, &original).await;
    let mut daily = BTreeSet::new();
    for part in 1..=3 {
        let part_key = format!(
            "CA/daily/{}-{}-{part:05}.zip",
            day * 86_400,
            (day + 1) * 86_400
        );
        daily.extend(keys_in(&h, &part_key).await);
    }
    assert_eq!(daily, database_keys(&h, day * 24, day * 24 + 23).await);
    assert!(daily.is_disjoint(&injected));
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn a_replaced_source_of_todays_retrieval_object_is_restored_before_it_is_merged() {
    let (h, hour) = a_day_with_keys(|_| {}).await;
    let object = hour_key(hour);
    let original = h.bucket.get(&object).await.unwrap().unwrap();
    let (forged, injected) = forged_hour_file(hour);
    put_file(&h, &object, forged).await;

    // 17:20: the hour 16:00 closes and today's retrieval object is merged again.
    h.advance(Duration::hours(1));
    let report = h.run().await;
    assert_eq!(report.hours, vec![hour + 1]);
    assert!(report.days.is_empty());
    assert_restored(&h, &object, &original).await;
    let day = hour.div_euclid(24);
    let today = keys_in(&h, &retrieval_day(day)).await;
    assert_eq!(today, database_keys(&h, day * 24, hour + 1).await);
    assert_eq!(today.len(), 5);
    assert!(today.is_disjoint(&injected));
}

/// The `00000` bundle is merged from daily files: a replaced daily file is rebuilt from its
/// (verified) hourly files.
#[tokio::test]
async fn a_replaced_daily_source_of_the_bundle_is_restored_from_its_hours() {
    let (h, hour) = a_day_with_keys(|_| {}).await;
    let day = hour.div_euclid(24);
    complete_the_day_and_check_it(&h, hour).await;
    let object = daily_file(day);
    let original = h.bucket.get(&object).await.unwrap().unwrap();
    let (forged, injected) = forged_hour_file(hour);
    put_file(&h, &object, forged).await;

    // A day later the bundle is merged again, from this daily file among others.
    h.advance(Duration::hours(24));
    let report = h.run().await;
    assert_eq!(report.days, vec![day + 1]);
    assert_restored(&h, &object, &original).await;
    let bundle = keys_in(&h, "retrieve/302/00000").await;
    assert_eq!(bundle, database_keys(&h, day * 24, day * 24 + 47).await);
    assert!(bundle.is_disjoint(&injected));
}

#[tokio::test]
async fn a_source_that_cannot_be_rebuilt_with_its_recorded_bytes_stops_the_day_naming_it() {
    let (h, hour) = a_day_with_keys(|_| {}).await;
    let object = hour_key(hour);
    let (forged, _) = forged_hour_file(hour);
    put_file(&h, &object, forged.clone()).await;
    // The database no longer holds the hour's keys: a rebuild gives other bytes.
    h.db.client()
        .await
        .execute(
            "DELETE FROM diagnosis_keys WHERE publish_hour = $1",
            &[&i32::try_from(hour).unwrap()],
        )
        .await
        .unwrap();

    h.advance(Duration::hours(9));
    let error = h.exporter().await.run_once().await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&object) && message.contains("could not be rebuilt"),
        "{message}"
    );
    let day = hour.div_euclid(24);
    assert!(
        !h.bucket.exists(&daily_file(day)).await.unwrap(),
        "a daily file was merged from a source that failed its check"
    );
    assert_eq!(
        h.bucket.get(&object).await.unwrap(),
        Some(forged),
        "bytes that differ from the ledger's are not uploaded over the object"
    );
}

/// Every repair is counted by the kind of the source, every failure to repair too. The
/// recorder is this test's own (tokio tests run on one thread), so no other test adds to it.
#[tokio::test]
async fn repairs_and_failures_to_repair_are_counted() {
    let recorder = diagnosis_core::telemetry::prometheus_builder().build_recorder();
    let handle = recorder.handle();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    // Repaired hourly and daily files, and failures to repair.
    let counts = || {
        let metrics = Exposition::parse(&handle.render()).unwrap();
        let repaired = |kind| metrics.counter("exporter_sources_repaired_total", &[("kind", kind)]);
        (
            repaired("hourly"),
            repaired("daily"),
            metrics.counter("exporter_source_repair_failures_total", &[]),
        )
    };

    let (h, hour) = a_day_with_keys(|_| {}).await;
    let day = hour.div_euclid(24);
    h.bucket.delete(&hour_key(hour)).await.unwrap();
    complete_the_day_and_check_it(&h, hour).await;
    assert_eq!(counts(), (1.0, 0.0, 0.0));

    h.bucket.delete(&daily_file(day)).await.unwrap();
    h.advance(Duration::hours(24));
    h.run().await;
    assert_eq!(counts(), (1.0, 1.0, 0.0));

    let (h, hour) = a_day_with_keys(|_| {}).await;
    h.bucket.delete(&hour_key(hour)).await.unwrap();
    h.db.client()
        .await
        .execute(
            "DELETE FROM diagnosis_keys WHERE publish_hour = $1",
            &[&i32::try_from(hour).unwrap()],
        )
        .await
        .unwrap();
    h.advance(Duration::hours(9));
    assert!(h.exporter().await.run_once().await.is_err());
    // Once for each window that needs the hour: the daily file, the day's retrieval object and
    // the `00000` bundle.
    assert_eq!(counts(), (1.0, 1.0, 3.0));
}
