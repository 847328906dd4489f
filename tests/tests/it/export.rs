//! The export pipeline end to end against real PostgreSQL and a real
//! S3-compatible server (DESIGN §2, §4): publication order, outage catch-up,
//! crash recovery, the single-exporter lock, the embargo, padding, retention,
//! exposure configurations and a failing object store.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::Duration;
use diagnosis_core::time::{hour_number, interval_number, is_relevant, key_expiry};
use diagnosis_exporter::pipeline::RunOutcome;
use diagnosis_format::archive::unzip_export;
use diagnosis_proto::{EXPORT_BIN_HEADER, Message, TemporaryExposureKeyExport};
use diagnosis_tests::app::test_start_time;
use diagnosis_tests::export::{ExportHarness, hour_key, key};

/// The keys of a published zip, as key_data (its signature checked).
async fn keys_in(harness: &ExportHarness, object: &str) -> Vec<Vec<u8>> {
    retrieval(harness, object).await.2
}

async fn all_objects(harness: &ExportHarness) -> BTreeMap<String, Bytes> {
    let mut objects = BTreeMap::new();
    for key in harness.bucket.list("").await.unwrap() {
        let bytes = harness.bucket.get(&key).await.unwrap().unwrap();
        objects.insert(key, bytes);
    }
    objects
}

#[tokio::test]
async fn every_closed_hour_is_published_in_order_empty_ones_too() {
    let start = test_start_time(); // 15:20
    let h = ExportHarness::new(start).await;
    let now_hour = hour_number(start.timestamp());
    let expired = interval_number(start.timestamp()) / 144 * 144 - 3 * 144;
    let keys = vec![key(expired, 1), key(expired + 144, 2), key(expired, 5)];
    h.upload(&keys).await;

    // 15:20: only 14:00–15:00 is closed, and it holds no key yet.
    let report = h.run().await;
    assert_eq!(report.hours, vec![now_hour - 1]);
    assert_eq!(h.index("CA/index.txt").await, vec![hour_key(now_hour - 1)]);
    assert!(keys_in(&h, &hour_key(now_hour - 1)).await.is_empty());

    // 16:20: the keys' hour is closed and published; then three empty hours.
    h.advance(Duration::hours(1));
    assert_eq!(h.run().await.hours, vec![now_hour]);
    let mut published = keys_in(&h, &hour_key(now_hour)).await;
    published.sort();
    let mut uploaded: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| k.key_data.as_bytes().to_vec())
        .collect();
    uploaded.sort();
    assert_eq!(published, uploaded);

    h.advance(Duration::hours(3));
    assert_eq!(
        h.run().await.hours,
        vec![now_hour + 1, now_hour + 2, now_hour + 3]
    );
    let expected: Vec<String> = (now_hour - 1..=now_hour + 3).map(hour_key).collect();
    assert_eq!(h.index("CA/index.txt").await, expected);

    // Within the grace period of the next hour nothing more is published.
    h.advance(Duration::minutes(49)); // 20:09
    assert!(h.run().await.hours.is_empty());

    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
    let attributes = h
        .bucket
        .attributes(&hour_key(now_hour))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attributes.0.as_deref(), Some("application/zip"));
    assert_eq!(
        attributes.1.as_deref(),
        Some("public, max-age=1209600, immutable")
    );
    let attributes = h.bucket.attributes("CA/index.txt").await.unwrap().unwrap();
    assert_eq!(attributes.0.as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(attributes.1.as_deref(), Some("public, max-age=300"));
}

#[tokio::test]
async fn a_thirty_hour_outage_is_caught_up_hour_by_hour_with_daily_files() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[key(today - 2 * 144, 1)]).await;
    h.run().await;
    let last = hour_number(start.timestamp()) - 1;

    h.advance(Duration::hours(30));
    h.upload(&[key(today - 144, 3), key(today - 144, 4)]).await;
    let report = h.run().await;
    let expected: Vec<i64> = (last + 1..=last + 30).collect();
    assert_eq!(report.hours, expected);
    // 2026-11-28 became complete during the outage.
    let day = start.timestamp().div_euclid(86_400);
    assert_eq!(report.days, vec![day]);
    assert_eq!(
        h.index("CA/daily/index.txt").await,
        vec![format!(
            "CA/daily/{}-{}-00001.zip",
            day * 86_400,
            (day + 1) * 86_400
        )]
    );
    let index = h.index("CA/index.txt").await;
    assert_eq!(index.len(), 31);
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn a_crash_between_upload_and_ledger_is_finished_by_the_next_run() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[key(today - 144, 1), key(today - 288, 2)]).await;
    h.run().await;
    h.advance(Duration::hours(12));
    h.upload(&[key(today - 144, 6)]).await;
    h.advance(Duration::hours(2));
    h.run().await;
    let before = all_objects(&h).await;

    // The objects of the last five hours and the new day exist, but their
    // ledger rows never committed.
    let client = h.db.client().await;
    let forgotten = client
        .execute(
            "DELETE FROM exports WHERE object_key IN
                (SELECT object_key FROM exports WHERE kind = 'hourly' ORDER BY start_ts DESC LIMIT 5)
             OR kind = 'daily'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(forgotten, 6);

    let report = h.run().await;
    assert_eq!(report.hours.len(), 5);
    assert_eq!(report.days.len(), 1);
    let after = all_objects(&h).await;
    let keys_before: Vec<&String> = before.keys().collect();
    let keys_after: Vec<&String> = after.keys().collect();
    assert_eq!(
        keys_after, keys_before,
        "no object appeared twice or went missing"
    );
    let is_export = |key: &str| key.ends_with(".zip") || key.starts_with("retrieve/");
    for (key, bytes) in &before {
        if is_export(key) {
            assert_eq!(&after[key], bytes, "{key} was rebuilt with different bytes");
        }
    }
    let ledger: i64 = client
        .query_one("SELECT count(*) FROM exports", &[])
        .await
        .unwrap()
        .get(0);
    let zips = after.keys().filter(|k| is_export(k)).count();
    assert_eq!(ledger, i64::try_from(zips).unwrap());
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn a_second_exporter_skips_while_one_is_at_work() {
    let h = ExportHarness::new(test_start_time()).await;
    let lock = h
        .store
        .try_lock_exporter("CA")
        .await
        .unwrap()
        .expect("the lock is free");
    let outcome = h.exporter().await.run_once().await.unwrap();
    assert_eq!(outcome, RunOutcome::Skipped);
    assert!(
        h.bucket.list("").await.unwrap().is_empty(),
        "a skipped run published nothing"
    );
    lock.release().await.unwrap();

    let (first, second) = (h.exporter().await, h.exporter().await);
    let (a, b) = tokio::join!(first.run_once(), second.run_once());
    let completed = [a.unwrap(), b.unwrap()]
        .iter()
        .filter(|o| matches!(o, RunOutcome::Completed(r) if !r.hours.is_empty()))
        .count();
    assert_eq!(
        completed, 1,
        "exactly one of two concurrent exporters published the hour"
    );
    assert_eq!(h.index("CA/index.txt").await.len(), 1);
}

#[tokio::test]
async fn a_key_uploaded_today_stays_embargoed_until_two_hours_after_it_expires() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    let todays_key = key(today, 1);
    h.upload(std::slice::from_ref(&todays_key)).await;
    let midnight_hour = (today + 144) * 600 / 3600;

    // Through the rest of today and until 02:00 tomorrow the key is in no file.
    h.advance(Duration::hours(11)); // 02:20 tomorrow
    h.run().await;
    for object in h.index("CA/index.txt").await {
        assert!(
            !keys_in(&h, &object)
                .await
                .contains(&todays_key.key_data.as_bytes().to_vec()),
            "{object} published a key that is still valid"
        );
    }
    assert_eq!(
        h.index("CA/index.txt").await.last().unwrap(),
        &hour_key(midnight_hour + 1)
    );

    // 03:10 tomorrow: the 02:00 hour is closed and carries the key.
    h.advance(Duration::minutes(50));
    assert_eq!(h.run().await.hours, vec![midnight_hour + 2]);
    assert_eq!(
        keys_in(&h, &hour_key(midnight_hour + 2)).await,
        vec![todays_key.key_data.as_bytes().to_vec()]
    );
}

#[tokio::test]
async fn padding_hides_the_count_and_keeps_daily_equal_to_the_union_of_hours() {
    let start = test_start_time();
    let h = ExportHarness::with_settings(start, |s| s.pad_min_keys = 20).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[key(today - 144, 1), key(today - 288, 4)]).await;
    h.run().await;
    h.advance(Duration::hours(10)); // 01:20 tomorrow: today is complete
    let report = h.run().await;
    assert_eq!(report.days.len(), 1);
    let mut counts = Vec::new();
    for object in h.index("CA/index.txt").await {
        let n = keys_in(&h, &object).await.len();
        assert!((20..=25).contains(&n), "{object} has {n} keys");
        counts.push(n);
    }
    counts.sort_unstable();
    counts.dedup();
    assert!(counts.len() > 1, "padded counts vary: {counts:?}");
    // verify checks that each complete day equals the union of its hours.
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");

    // A rebuild reproduces the padded files byte for byte. It starts at the earliest hour
    // holding a key (RUNBOOK §4.3), so 14:00, published first without one, is not published
    // again, and the day's daily file is the union of the hours indexed now, without that
    // hour's fake keys.
    let first_hour = hour_key(hour_number(start.timestamp()) - 1);
    let day = start.timestamp().div_euclid(86_400);
    let before = all_objects(&h).await;
    let client = h.db.client().await;
    client.execute("DELETE FROM exports", &[]).await.unwrap();
    h.run().await;
    assert!(!h.index("CA/index.txt").await.contains(&first_hour));
    let rebuilt = day_keys(&h, day).await;
    assert_eq!(rebuilt.daily_keys, rebuilt.hourly);
    let after = all_objects(&h).await;
    for (key, bytes) in before
        .iter()
        .filter(|(k, _)| k.ends_with(".zip") && **k != rebuilt.daily)
    {
        assert_eq!(&after[key], bytes, "{key} changed on rebuild");
    }
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

/// A day's keys as published: those of the hourly files `index.txt` lists for it, and those
/// of its daily file, each sorted.
#[derive(Debug)]
struct DayKeys {
    hourly: Vec<Vec<u8>>,
    daily: String,
    daily_keys: Vec<Vec<u8>>,
}

async fn day_keys(h: &ExportHarness, day: i64) -> DayKeys {
    let day_start = day * 86_400;
    let mut hourly = Vec::new();
    for object in h.index("CA/index.txt").await {
        let hour_start: i64 = object[3..].split('-').next().unwrap().parse().unwrap();
        if (day_start..day_start + 86_400).contains(&hour_start) {
            hourly.extend(keys_in(h, &object).await);
        }
    }
    hourly.sort();
    let daily = format!("CA/daily/{day_start}-{}-00001.zip", day_start + 86_400);
    let mut daily_keys = keys_in(h, &daily).await;
    daily_keys.sort();
    DayKeys {
        hourly,
        daily,
        daily_keys,
    }
}

/// With padding, fake keys are published only in the hours that have their hourly file
/// (DESIGN §4.1: a daily file equals the union of its hourly files; §4.3: a retrieval object
/// holds the keys published in its window). A publication that began at an hour without keys
/// (the first pass publishes the last closed hour) has no file for the day's earlier hours,
/// so the day's daily file and retrieval object hold none of their fake keys; and `00000`,
/// read from Postgres here since those hours have no file, holds only keys still relevant at
/// its end, fake ones too, as when it is merged from files.
#[tokio::test]
async fn padded_derived_files_hold_only_the_fake_keys_of_published_hours() {
    let start = test_start_time(); // 15:20
    let h = ExportHarness::with_settings(start, |s| s.pad_min_keys = 20).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[key(today - 144, 1), key(today - 288, 4)]).await;
    h.run().await; // 14:00, the last closed hour, without keys
    h.advance(Duration::hours(10)); // 01:20 tomorrow: the day is complete
    h.run().await;
    let day = start.timestamp().div_euclid(86_400);
    let published = day_keys(&h, day).await;
    assert!(published.hourly.len() >= 10 * 20, "{published:?}");
    assert_eq!(
        published.daily_keys, published.hourly,
        "{} is not the union of its hourly files",
        published.daily
    );
    let (_, _, mut retrieved) = retrieval(&h, &format!("retrieve/302/{day:05}")).await;
    retrieved.sort();
    assert_eq!(retrieved, published.hourly, "the day's retrieval object");

    let zip = h.bucket.get("retrieve/302/00000").await.unwrap().unwrap();
    let entries = unzip_export(&zip).unwrap();
    let bundle =
        TemporaryExposureKeyExport::decode(&entries.export_bin[EXPORT_BIN_HEADER.len()..]).unwrap();
    let end = i64::try_from(bundle.end_timestamp()).unwrap();
    let irrelevant = bundle
        .keys
        .iter()
        .filter(|k| {
            !is_relevant(
                key_expiry(k.rolling_start_interval_number(), k.rolling_period()),
                end,
            )
        })
        .count();
    assert_eq!(irrelevant, 0, "of {} keys in 00000", bundle.keys.len());
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn retention_removes_files_from_the_indexes_before_deleting_them() {
    let start = test_start_time();
    // DELETE_UNINDEXED_AFTER_HOURS=0: the object goes on the pass after the one that
    // unindexed it (retention:: tests the default delay).
    let h =
        ExportHarness::with_settings(start, |s| s.delete_unindexed_after = Duration::zero()).await;
    h.run().await;
    let first = hour_key(hour_number(start.timestamp()) - 1);
    assert_eq!(h.index("CA/index.txt").await, vec![first.clone()]);

    // Fourteen days and an hour later the first file leaves the index...
    h.advance(Duration::days(14) + Duration::hours(1));
    h.run().await;
    let index = h.index("CA/index.txt").await;
    assert!(!index.contains(&first));
    assert!(
        h.bucket.exists(&first).await.unwrap(),
        "the object outlives its index entry"
    );
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");

    // ...and the object goes on a later run.
    h.advance(Duration::minutes(5));
    let report = h.run().await;
    assert!(report.deleted_objects >= 1);
    assert!(!h.bucket.exists(&first).await.unwrap());
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

#[tokio::test]
async fn an_invalid_exposure_configuration_is_refused_and_the_old_one_stays() {
    let dir = std::env::temp_dir().join(format!("diagnosis-config-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let valid = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/exposure-configuration/CA.json"
    ))
    .unwrap();
    std::fs::write(dir.join("CA.json"), &valid).unwrap();
    let config_dir = dir.clone();
    let h = ExportHarness::with_settings(test_start_time(), move |s| {
        s.exposure_config_dir = Some(config_dir)
    })
    .await;
    let report = h.run().await;
    assert_eq!(report.configs_published, 1);
    assert_eq!(
        h.bucket
            .get("exposure-configuration/CA.json")
            .await
            .unwrap()
            .unwrap(),
        Bytes::from(valid.clone())
    );
    let attributes = h
        .bucket
        .attributes("exposure-configuration/CA.json")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attributes.1.as_deref(), Some("public, max-age=3600"));

    let mut invalid: serde_json::Value = serde_json::from_slice(&valid).unwrap();
    invalid["attenuationLevelValues"][3] = serde_json::json!(9);
    std::fs::write(dir.join("CA.json"), serde_json::to_vec(&invalid).unwrap()).unwrap();
    h.advance(Duration::minutes(5));
    let report = h.run().await;
    assert_eq!(report.configs_published, 0);
    assert_eq!(report.refused_configs.len(), 1);
    let reason = &report.refused_configs[0].reason;
    assert!(
        reason.contains("CA.json") && reason.contains("attenuationLevelValues"),
        "{reason}"
    );
    assert_eq!(
        h.bucket
            .get("exposure-configuration/CA.json")
            .await
            .unwrap()
            .unwrap(),
        Bytes::from(valid)
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn verify_rejects_a_changed_byte_and_a_deleted_object_of_a_real_export() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    let shared = key(today - 144, 2);
    h.upload(&[shared.clone(), key(today - 288, 1)]).await;
    h.advance(Duration::hours(2));
    h.run().await;
    assert!(h.verify().await.is_ok());
    let index = h.index("CA/index.txt").await;
    let with_keys = hour_key(hour_number(start.timestamp()));
    assert!(index.contains(&with_keys));

    // One byte of one file changed.
    let original = h.bucket.get(&with_keys).await.unwrap().unwrap();
    let mut tampered = original.to_vec();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    h.bucket
        .put(
            &with_keys,
            Bytes::from(tampered),
            diagnosis_format::names::ObjectKind::ExportFile,
        )
        .await
        .unwrap();
    let report = h.verify().await;
    assert!(!report.is_ok(), "a changed byte went unnoticed");
    h.bucket
        .put(
            &with_keys,
            original.clone(),
            diagnosis_format::names::ObjectKind::ExportFile,
        )
        .await
        .unwrap();
    assert!(h.verify().await.is_ok());

    // One object deleted.
    h.bucket.delete(&index[0]).await.unwrap();
    assert!(!h.verify().await.is_ok(), "a deleted object went unnoticed");
}

#[tokio::test]
async fn a_store_that_fails_midway_leaves_indexes_naming_only_existing_objects() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    h.run().await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[key(today - 144, 1)]).await;
    h.advance(Duration::hours(5));

    // Two objects go through, then every write is refused.
    let failing = diagnosis_exporter::storage::Bucket::from_store(
        std::sync::Arc::new(diagnosis_tests::failing_store::FailingStore::new(
            h.test_bucket.store(),
            2,
        )),
        "",
    );
    let error = h.exporter_with(failing).await.run_once().await.unwrap_err();
    assert!(error.to_string().contains("refused"), "{error}");
    let report = h.verify().await;
    assert!(report.is_ok(), "after a failed run: {report}");
    assert_eq!(
        h.index("CA/index.txt").await.len(),
        1,
        "the index still names only the first run's file"
    );

    // The next run with a working store finishes the work.
    let report = h.run().await;
    assert_eq!(report.hours.len(), 3);
    assert_eq!(h.index("CA/index.txt").await.len(), 6);
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

/// `(start, end, key_data…)` of a retrieval object, read the way iOS does:
/// unzip, `export.bin` and `export.sig` at the root, signature checked.
async fn retrieval(h: &ExportHarness, object: &str) -> (u64, u64, Vec<Vec<u8>>) {
    let zip = h
        .bucket
        .get(object)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{object} missing"));
    let entries = unzip_export(&zip).unwrap();
    let public = &diagnosis_tests::export::test_public_keys()[0];
    let signatures =
        diagnosis_proto::TekSignatureList::decode(entries.export_sig.as_slice()).unwrap();
    assert!(
        diagnosis_format::sign::verify_signature(
            &entries.export_bin,
            signatures.signatures[0].signature(),
            public
        ),
        "{object}: bad signature"
    );
    let export =
        TemporaryExposureKeyExport::decode(&entries.export_bin[EXPORT_BIN_HEADER.len()..]).unwrap();
    assert_eq!(export.region(), "CA");
    let keys = export.keys.iter().map(|k| k.key_data().to_vec()).collect();
    (export.start_timestamp(), export.end_timestamp(), keys)
}

#[tokio::test]
async fn the_deployed_apps_retrieval_objects_follow_the_closed_hours() {
    let start = test_start_time(); // 15:20
    let h = ExportHarness::new(start).await;
    let day = start.timestamp().div_euclid(86_400);
    let day_start = u64::try_from(day * 86_400).unwrap();
    let today = interval_number(start.timestamp()) / 144 * 144;
    let early = key(today - 144, 1);
    h.upload(std::slice::from_ref(&early)).await; // published in hour 15
    h.run().await;

    // Today's object exists at once, up to the last closed hour (14:00–15:00).
    let today_key = format!("retrieve/302/{day:05}");
    let (s, e, keys) = retrieval(&h, &today_key).await;
    assert_eq!((s, e), (day_start, day_start + 15 * 3600));
    assert!(keys.is_empty());
    let headers = h.bucket.attributes(&today_key).await.unwrap().unwrap();
    assert_eq!(
        headers.1.as_deref(),
        Some("public, max-age=3600, max-stale=600")
    );
    let (_, _, bundle) = retrieval(&h, "retrieve/302/00000").await;
    assert!(
        bundle.is_empty(),
        "the bundle always exists, empty at first"
    );

    // After 15:00–16:00 closes, today's object is rebuilt with a new end and the key.
    h.advance(Duration::hours(1));
    h.run().await;
    let (_, e, keys) = retrieval(&h, &today_key).await;
    assert_eq!(e, day_start + 16 * 3600);
    assert_eq!(keys, vec![early.key_data.as_bytes().to_vec()]);

    // 00:05 tomorrow: 23:00 is not closed yet; tomorrow's object already exists, empty.
    h.advance(Duration::hours(8) - Duration::minutes(15));
    h.run().await;
    let tomorrow_key = format!("retrieve/302/{:05}", day + 1);
    let (s, e, keys) = retrieval(&h, &tomorrow_key).await;
    assert_eq!((s, e), (day_start + 86_400, day_start + 86_400));
    assert!(keys.is_empty());
    let (_, e, _) = retrieval(&h, &today_key).await;
    assert_eq!(e, day_start + 23 * 3600);

    // 00:15: the day is complete, final and immutable; the bundle now holds it.
    h.advance(Duration::minutes(10));
    h.run().await;
    let (_, e, keys) = retrieval(&h, &today_key).await;
    assert_eq!(e, day_start + 86_400);
    assert_eq!(keys, vec![early.key_data.as_bytes().to_vec()]);
    let headers = h.bucket.attributes(&today_key).await.unwrap().unwrap();
    assert_eq!(
        headers.1.as_deref(),
        Some("public, max-age=1209600, immutable")
    );
    let (s, e, bundle) = retrieval(&h, "retrieve/302/00000").await;
    assert_eq!(
        (s, e),
        (day_start + 86_400 - 15 * 86_400, day_start + 86_400)
    );
    assert_eq!(bundle, vec![early.key_data.as_bytes().to_vec()]);
    let headers = h
        .bucket
        .attributes("retrieve/302/00000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        headers.1.as_deref(),
        Some("public, max-age=3600, max-stale=600")
    );

    // Nothing changes without a newly closed hour: the ledger shows them current.
    let report = h.run().await;
    assert_eq!(report.retrieval_objects, 0);
    let report = h.verify().await;
    assert!(report.is_ok(), "{report}");
}

/// Daily files and retrieval objects are merged from the hourly files already published; when
/// the ledger lacks one of their hourly files they are read from Postgres instead. Both ways give
/// the same bytes.
#[tokio::test]
async fn files_merged_from_hourly_files_equal_files_read_from_postgres() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(
        &(0..13)
            .map(|i| key(today - 144 * (i + 1), 1 + (i % 8) as i32))
            .collect::<Vec<_>>(),
    )
    .await;
    h.run().await;
    h.advance(Duration::hours(3));
    h.upload(
        &(0..13)
            .map(|i| key(today - 144 * (i + 2), 8 - (i % 8) as i32))
            .collect::<Vec<_>>(),
    )
    .await;
    h.advance(Duration::hours(7)); // 01:20 tomorrow: today is complete
    let report = h.run().await;
    assert_eq!(report.days.len(), 1);
    let merged = all_objects(&h).await;
    let day = start.timestamp().div_euclid(86_400);
    let derived = [
        format!("CA/daily/{}-{}-00001.zip", day * 86_400, (day + 1) * 86_400),
        format!("retrieve/302/{day:05}"),
        "retrieve/302/00000".to_owned(),
    ];
    for object in &derived {
        let n = keys_in(&h, object).await.len();
        assert!(n >= 25, "{object}: {n}");
    }

    // One hourly file of the day leaves the ledger: the same windows now come from Postgres.
    let client = h.db.client().await;
    let first_hour = hour_number(start.timestamp()) - 1;
    client
        .execute(
            "UPDATE exports SET deleted_at = now() WHERE kind = 'hourly' AND start_ts = $1",
            &[&(first_hour * 3600)],
        )
        .await
        .unwrap();
    client
        .execute("DELETE FROM exports WHERE kind <> 'hourly'", &[])
        .await
        .unwrap();
    for object in &derived {
        h.bucket.delete(object).await.unwrap();
    }
    let report = h.run().await;
    assert_eq!(report.days.len(), 1);
    let from_postgres = all_objects(&h).await;
    for object in &derived {
        assert_eq!(
            from_postgres.get(object),
            merged.get(object),
            "{object} differs between the two ways of building it"
        );
    }
}

/// Most passes have nothing new to publish: such a pass writes no object, so the indexes keep
/// their bytes, ETag and Last-Modified; the next closed hour rewrites all three.
#[tokio::test]
async fn a_pass_with_nothing_new_writes_nothing_and_the_next_hour_rewrites_the_indexes() {
    let start = test_start_time();
    let h = ExportHarness::new(start).await;
    let today = interval_number(start.timestamp()) / 144 * 144;
    h.upload(&[key(today - 144, 1)]).await;
    h.advance(Duration::hours(1));
    h.run().await;
    let before = all_objects(&h).await;

    let counting = |h: &ExportHarness| {
        std::sync::Arc::new(diagnosis_tests::failing_store::FailingStore::new(
            h.test_bucket.store(),
            usize::MAX,
        ))
    };
    let idle = counting(&h);
    let bucket = diagnosis_exporter::storage::Bucket::from_store(idle.clone(), "");
    h.advance(Duration::minutes(5));
    let outcome = h.exporter_with(bucket).await.run_once().await.unwrap();
    assert!(
        matches!(&outcome, RunOutcome::Completed(report) if report.hours.is_empty()),
        "{outcome:?}"
    );
    assert_eq!(idle.writes_started(), 0, "an idle pass wrote objects");
    assert_eq!(all_objects(&h).await, before);

    let next = counting(&h);
    let bucket = diagnosis_exporter::storage::Bucket::from_store(next.clone(), "");
    h.advance(Duration::hours(1));
    h.exporter_with(bucket).await.run_once().await.unwrap();
    let after = all_objects(&h).await;
    for index in ["CA/index.txt", "CA/daily/index.txt", "CA/index.json"] {
        assert!(after.contains_key(index), "{index} is missing");
    }
    assert_ne!(after["CA/index.txt"], before["CA/index.txt"]);
    assert_ne!(after["CA/index.json"], before["CA/index.json"]);
    assert!(h.verify().await.is_ok());
    assert!(next.writes_started() >= 3, "{}", next.writes_started());
}
