//! `POST /upload` against a real database: one test per row of DESIGN §3.3.

use diagnosis_core::time::{hour_number, interval_number, publish_hour};
use diagnosis_proto::encrypted_upload_response::ErrorCode;
use diagnosis_proto::{EncryptedUploadRequest, Message, TemporaryExposureKey, Upload};
use diagnosis_tests::app::TestApp;
use diagnosis_tests::simulator::{Phone, UploadReply, app_keys, upload_of};

fn code_of(reply: &UploadReply) -> ErrorCode {
    ErrorCode::try_from(reply.response.error.expect("error field present")).expect("known code")
}

fn outcome(reply: &UploadReply) -> (u16, ErrorCode) {
    (reply.status.as_u16(), code_of(reply))
}

async fn stored_keys(app: &TestApp) -> i64 {
    let client = app.db.client().await;
    client
        .query_one("SELECT count(*) FROM diagnosis_keys", &[])
        .await
        .unwrap()
        .get(0)
}

async fn remaining_keys(app: &TestApp, phone: &Phone) -> i32 {
    let client = app.db.client().await;
    client
        .query_one(
            "SELECT remaining_keys FROM encryption_keys WHERE app_public_key = $1",
            &[&phone.app_public.as_bytes().as_slice()],
        )
        .await
        .unwrap()
        .get(0)
}

fn key(rsin: i64) -> TemporaryExposureKey {
    let mut data = vec![0_u8; 16];
    rand::fill(&mut data[..]);
    TemporaryExposureKey {
        key_data: Some(data),
        transmission_risk_level: Some(1),
        rolling_start_interval_number: i32::try_from(rsin).ok(),
        rolling_period: Some(144),
        report_type: None,
        days_since_onset_of_symptoms: None,
    }
}

#[tokio::test]
async fn the_apps_upload_is_stored_with_publish_hours_and_answers_none() {
    let app = TestApp::spawn().await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let keys = app_keys(now, 14);
    let reply = phone.upload(&upload_of(keys.clone(), now)).await.unwrap();
    assert_eq!(outcome(&reply), (200, ErrorCode::None));

    // The error field is present even for NONE: the body is exactly 08 00.
    let raw = phone
        .send_upload(
            phone
                .sealed_request(&upload_of(app_keys(now, 1), now))
                .unwrap()
                .encode_to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(raw.response.encode_to_vec(), vec![0x08, 0x00]);

    let client = app.db.client().await;
    let rows = client
        .query(
            "SELECT key_data, rolling_start_interval_number, rolling_period, transmission_risk_level,
                    report_type, days_since_onset, region, originator, hour_of_submission, publish_hour
               FROM diagnosis_keys",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 15);
    let submission_hour = hour_number(now);
    for key in &keys {
        let row = rows
            .iter()
            .find(|r| r.get::<_, Vec<u8>>(0) == *key.key_data.as_ref().unwrap())
            .expect("key stored");
        let rsin = key.rolling_start_interval_number.unwrap();
        assert_eq!(row.get::<_, i32>(1), rsin);
        assert_eq!(row.get::<_, i16>(2), 144);
        assert_eq!(row.get::<_, i16>(3), 1);
        assert_eq!(
            row.get::<_, i16>(4),
            1,
            "absent report type is stored as CONFIRMED_TEST"
        );
        assert_eq!(row.get::<_, Option<i16>>(5), None);
        assert_eq!(row.get::<_, String>(6), "302");
        assert_eq!(row.get::<_, String>(7), "ON");
        assert_eq!(i64::from(row.get::<_, i32>(8)), submission_hour);
        assert_eq!(
            i64::from(row.get::<_, i32>(9)),
            publish_hour(submission_hour, rsin, 144)
        );
    }
    // Today's key is still valid: embargoed until 2 hours after it expires.
    let today = keys[0].rolling_start_interval_number.unwrap();
    let today_row = rows.iter().find(|r| r.get::<_, i32>(1) == today).unwrap();
    assert_eq!(
        i64::from(today_row.get::<_, i32>(9)),
        (i64::from(today) + 144) * 600 / 3600 + 2
    );
    assert_eq!(remaining_keys(&app, &phone).await, 43 - 15);
}

#[tokio::test]
async fn bad_envelopes_fail_in_contract_order_and_change_nothing() {
    let app = TestApp::spawn().await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let good = phone
        .sealed_request(&upload_of(app_keys(now, 2), now))
        .unwrap();
    let with = |edit: &dyn Fn(&mut EncryptedUploadRequest)| {
        let mut request = good.clone();
        edit(&mut request);
        request.encode_to_vec()
    };
    let mut oversize = good.encode_to_vec();
    oversize.extend(std::iter::repeat_n(0, 4097 - oversize.len()));
    let mut tampered_payload = good.payload().to_vec();
    tampered_payload[20] ^= 1;
    let other_phone = app.claimed_phone().await;

    let cases: Vec<(&str, Vec<u8>, u16, ErrorCode)> = vec![
        ("oversize body", oversize, 400, ErrorCode::Unknown),
        ("not protobuf", vec![0xff, 0xff], 400, ErrorCode::Unknown),
        (
            "short server key",
            with(&|r| r.server_public_key = Some(vec![1; 31])),
            400,
            ErrorCode::InvalidCryptoParameters,
        ),
        (
            "no server key, bad nonce",
            with(&|r| {
                r.server_public_key = None;
                r.nonce = None;
            }),
            400,
            ErrorCode::InvalidCryptoParameters,
        ),
        (
            "unknown server key",
            with(&|r| r.server_public_key = Some(vec![9; 32])),
            401,
            ErrorCode::InvalidKeypair,
        ),
        (
            "unknown server key, bad nonce",
            with(&|r| {
                r.server_public_key = Some(vec![9; 32]);
                r.nonce = Some(vec![1; 3]);
            }),
            401,
            ErrorCode::InvalidKeypair,
        ),
        (
            "short nonce",
            with(&|r| r.nonce = Some(vec![0; 23])),
            400,
            ErrorCode::InvalidCryptoParameters,
        ),
        (
            "long app key",
            with(&|r| r.app_public_key = Some(vec![0; 33])),
            400,
            ErrorCode::InvalidCryptoParameters,
        ),
        (
            "tampered box",
            with(&|r| r.payload = Some(tampered_payload.clone())),
            400,
            ErrorCode::DecryptionFailed,
        ),
        (
            "wrong nonce",
            with(&|r| r.nonce = Some(vec![0; 24])),
            400,
            ErrorCode::DecryptionFailed,
        ),
        (
            "another app's key",
            with(&|r| r.app_public_key = Some(other_phone.app_public.as_bytes().to_vec())),
            400,
            ErrorCode::DecryptionFailed,
        ),
        (
            "sealed garbage",
            phone.seal_raw(&[0xff, 0xff, 0xff]).unwrap().encode_to_vec(),
            400,
            ErrorCode::InvalidPayload,
        ),
    ];
    let before = app.db.snapshot().await;
    for (name, body, status, code) in cases {
        let reply = phone.send_upload(body).await.unwrap();
        assert_eq!(outcome(&reply), (status, code), "{name}");
    }
    assert_eq!(app.db.snapshot().await, before);
}

#[tokio::test]
async fn bad_payloads_get_their_exact_error_and_change_nothing() {
    let app = TestApp::spawn().await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let today = interval_number(now) / 144 * 144;
    let edited = |edit: &dyn Fn(&mut TemporaryExposureKey)| {
        let mut k = key(today - 144);
        edit(&mut k);
        upload_of(vec![key(today - 288), k], now)
    };
    let cases: Vec<(&str, Upload, ErrorCode)> = vec![
        (
            "no keys",
            upload_of(vec![], now),
            ErrorCode::NoKeysInPayload,
        ),
        (
            "29 keys",
            upload_of((0..29).map(|i| key(today - 144 * (i % 14))).collect(), now),
            ErrorCode::TooManyKeys,
        ),
        (
            "no timestamp",
            Upload {
                timestamp: None,
                keys: vec![key(today)],
            },
            ErrorCode::InvalidTimestamp,
        ),
        (
            "timestamp an hour and a second late",
            upload_of(vec![key(today)], now - 3601),
            ErrorCode::InvalidTimestamp,
        ),
        (
            "timestamp an hour and a second early",
            upload_of(vec![key(today)], now + 3601),
            ErrorCode::InvalidTimestamp,
        ),
        (
            "rolling period 0",
            edited(&|k| k.rolling_period = Some(0)),
            ErrorCode::InvalidRollingPeriod,
        ),
        (
            "rolling period 145",
            edited(&|k| k.rolling_period = Some(145)),
            ErrorCode::InvalidRollingPeriod,
        ),
        (
            "key data of 15 bytes",
            edited(&|k| k.key_data = Some(vec![1; 15])),
            ErrorCode::InvalidKeyData,
        ),
        (
            "no key data",
            edited(&|k| k.key_data = None),
            ErrorCode::InvalidKeyData,
        ),
        (
            "rolling start 0",
            edited(&|k| k.rolling_start_interval_number = Some(0)),
            ErrorCode::InvalidRollingStartIntervalNumber,
        ),
        (
            "rolling start in the future",
            edited(&|k| {
                k.rolling_start_interval_number = i32::try_from(interval_number(now) + 7).ok()
            }),
            ErrorCode::InvalidRollingStartIntervalNumber,
        ),
        (
            "risk 9",
            edited(&|k| k.transmission_risk_level = Some(9)),
            ErrorCode::InvalidTransmissionRiskLevel,
        ),
        (
            "risk -1",
            edited(&|k| k.transmission_risk_level = Some(-1)),
            ErrorCode::InvalidTransmissionRiskLevel,
        ),
        (
            "report type RECURSIVE",
            edited(&|k| k.report_type = Some(4)),
            ErrorCode::InvalidPayload,
        ),
        (
            "report type 17",
            edited(&|k| k.report_type = Some(17)),
            ErrorCode::InvalidPayload,
        ),
        (
            "days since onset 15",
            edited(&|k| k.days_since_onset_of_symptoms = Some(15)),
            ErrorCode::InvalidPayload,
        ),
        (
            "period and key data both bad",
            edited(&|k| {
                k.rolling_period = Some(0);
                k.key_data = None;
            }),
            ErrorCode::InvalidRollingPeriod,
        ),
        (
            "span over 15 days",
            upload_of(vec![key(today), key(today - 2160 + 143)], now),
            ErrorCode::InvalidRollingStartIntervalNumber,
        ),
    ];
    let before = app.db.snapshot().await;
    for (name, upload, code) in cases {
        let reply = phone.upload(&upload).await.unwrap();
        assert_eq!(outcome(&reply), (400, code), "{name}");
    }
    assert_eq!(app.db.snapshot().await, before);
}

#[tokio::test]
async fn boundary_values_are_accepted() {
    let app = TestApp::spawn().await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let latest = interval_number(now) + 6;
    // The widest span allowed: (latest + 144) − earliest = 2160.
    let mut keys = vec![key(latest + 144 - 2160), key(latest)];
    keys[0].rolling_period = Some(1);
    keys[0].transmission_risk_level = Some(0);
    keys[0].report_type = Some(3);
    keys[0].days_since_onset_of_symptoms = Some(-14);
    keys[1].rolling_period = None;
    keys[1].transmission_risk_level = Some(8);
    keys[1].days_since_onset_of_symptoms = Some(14);
    let reply = phone.upload(&upload_of(keys, now + 3600)).await.unwrap();
    assert_eq!(outcome(&reply), (200, ErrorCode::None));
    assert_eq!(stored_keys(&app).await, 2);
}

#[tokio::test]
async fn keys_no_longer_relevant_are_accepted_and_dropped() {
    let app = TestApp::spawn().await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let today = interval_number(now) / 144 * 144;
    let reply = phone
        .upload(&upload_of(
            vec![key(today - 144 * 14), key(today - 144 * 15 + 1)],
            now,
        ))
        .await
        .unwrap();
    assert_eq!(outcome(&reply), (200, ErrorCode::None));
    assert_eq!(stored_keys(&app).await, 1);
    assert_eq!(remaining_keys(&app, &phone).await, 42);
}

#[tokio::test]
async fn duplicates_never_consume_quota_and_a_replay_is_harmless() {
    let app = TestApp::spawn().await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let upload = upload_of(app_keys(now, 10), now);
    let request = phone.sealed_request(&upload).unwrap().encode_to_vec();
    assert_eq!(
        outcome(&phone.send_upload(request.clone()).await.unwrap()),
        (200, ErrorCode::None)
    );
    let after_first = app.db.snapshot().await;
    assert_eq!(remaining_keys(&app, &phone).await, 33);
    // The very same request again (a replay), and the same keys sealed anew.
    assert_eq!(
        outcome(&phone.send_upload(request).await.unwrap()),
        (200, ErrorCode::None)
    );
    assert_eq!(
        outcome(&phone.upload(&upload).await.unwrap()),
        (200, ErrorCode::None)
    );
    assert_eq!(remaining_keys(&app, &phone).await, 33);
    assert_eq!(stored_keys(&app).await, 10);
    let client = app.db.client().await;
    let uploads: i64 = client
        .query_one("SELECT count(*) FROM tek_upload_count", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        uploads, 1,
        "an upload is counted once: its replays and resealed repeats add nothing"
    );
    drop(after_first);
}

#[tokio::test]
async fn the_quota_is_enforced_and_an_overflow_stores_nothing() {
    let app = TestApp::spawn_with(|s| s.initial_remaining_keys = 20).await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    assert_eq!(
        outcome(
            &phone
                .upload(&upload_of(app_keys(now, 14), now))
                .await
                .unwrap()
        ),
        (200, ErrorCode::None)
    );

    let before = app.db.snapshot().await;
    let reply = phone
        .upload(&upload_of(app_keys(now, 7), now))
        .await
        .unwrap();
    assert_eq!(outcome(&reply), (400, ErrorCode::TooManyKeys));
    assert_eq!(
        app.db.snapshot().await,
        before,
        "an overflowing upload stores nothing"
    );

    assert_eq!(
        outcome(
            &phone
                .upload(&upload_of(app_keys(now, 6), now))
                .await
                .unwrap()
        ),
        (200, ErrorCode::None)
    );
    assert_eq!(remaining_keys(&app, &phone).await, 0);
    let before = app.db.snapshot().await;
    let reply = phone
        .upload(&upload_of(app_keys(now, 1), now))
        .await
        .unwrap();
    assert_eq!(
        outcome(&reply),
        (400, ErrorCode::InvalidKeypair),
        "quota used up"
    );
    assert_eq!(app.db.snapshot().await, before);
}

/// More keys than the quota left, but only the new ones count: the quota drops by the new
/// keys alone (DESIGN §3.3), however many keys the upload carries.
#[tokio::test]
async fn an_upload_whose_new_keys_fit_the_quota_is_stored_whatever_its_duplicates() {
    let app = TestApp::spawn_with(|s| s.initial_remaining_keys = 20).await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let first = app_keys(now, 14);
    let reply = phone.upload(&upload_of(first.clone(), now)).await.unwrap();
    assert_eq!(outcome(&reply), (200, ErrorCode::None));
    assert_eq!(remaining_keys(&app, &phone).await, 6);

    let mut again = first;
    again.extend(app_keys(now, 3));
    let reply = phone.upload(&upload_of(again, now)).await.unwrap();
    assert_eq!(outcome(&reply), (200, ErrorCode::None));
    assert_eq!(remaining_keys(&app, &phone).await, 3);
    assert_eq!(stored_keys(&app).await, 17);
}

#[tokio::test]
async fn concurrent_uploads_on_one_keypair_never_exceed_its_quota() {
    let app = TestApp::spawn().await;
    let phone = std::sync::Arc::new(app.claimed_phone().await);
    let now = app.now_unix();
    let uploads = (0..10).map(|_| {
        let phone = std::sync::Arc::clone(&phone);
        let upload = upload_of(app_keys(now, 14), now);
        tokio::spawn(async move { outcome(&phone.upload(&upload).await.unwrap()) })
    });
    let mut accepted = 0;
    for upload in uploads {
        match upload.await.unwrap() {
            (200, ErrorCode::None) => accepted += 1,
            (400, ErrorCode::TooManyKeys | ErrorCode::InvalidKeypair) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(accepted, 3);
    assert_eq!(stored_keys(&app).await, 42);
    assert_eq!(remaining_keys(&app, &phone).await, 1);
}

#[tokio::test]
async fn an_expired_keypair_is_an_invalid_keypair() {
    let app = TestApp::spawn().await;
    let phone = app.claimed_phone().await;
    // Issued 2026-11-28: valid until 2026-12-13 00:00 UTC (15 days from midnight).
    app.clock.set(
        chrono::DateTime::parse_from_rfc3339("2026-12-12T23:59:00Z")
            .unwrap()
            .into(),
    );
    let now = app.now_unix();
    assert_eq!(
        outcome(
            &phone
                .upload(&upload_of(app_keys(now, 1), now))
                .await
                .unwrap()
        ),
        (200, ErrorCode::None)
    );
    app.clock.set(
        chrono::DateTime::parse_from_rfc3339("2026-12-13T00:00:00Z")
            .unwrap()
            .into(),
    );
    let now = app.now_unix();
    let before = app.db.snapshot().await;
    let reply = phone
        .upload(&upload_of(app_keys(now, 1), now))
        .await
        .unwrap();
    assert_eq!(outcome(&reply), (401, ErrorCode::InvalidKeypair));
    assert_eq!(app.db.snapshot().await, before);
}

#[tokio::test]
async fn a_database_failure_is_a_server_error_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let phone = app.claimed_phone().await;
    let client = app.db.client().await;
    client
        .batch_execute("ALTER TABLE tek_upload_count RENAME TO tek_upload_count_gone")
        .await
        .unwrap();
    let now = app.now_unix();
    let reply = phone
        .upload(&upload_of(app_keys(now, 3), now))
        .await
        .unwrap();
    assert_eq!(outcome(&reply), (500, ErrorCode::ServerError));
    assert_eq!(stored_keys(&app).await, 0, "the transaction rolled back");
    assert_eq!(remaining_keys(&app, &phone).await, 43);
}

#[tokio::test]
async fn wrong_methods_are_not_allowed() {
    let app = TestApp::spawn().await;
    let client = app.phone().client;
    for path in ["/upload", "/claim-key"] {
        let reply = client
            .get(&format!("{}{path}", app.base_url))
            .await
            .unwrap();
        assert_eq!(reply.status, 405, "{path}");
        assert_eq!(reply.header("allow"), Some("POST"));
    }
}

#[tokio::test]
async fn an_invalid_upload_on_a_spent_keypair_fails_as_invalid() {
    // The quota is judged only when storing, after every check of the upload itself.
    let app = TestApp::spawn_with(|settings| settings.initial_remaining_keys = 1).await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let reply = phone
        .upload(&upload_of(app_keys(now, 1), now))
        .await
        .unwrap();
    assert_eq!(outcome(&reply), (200, ErrorCode::None));
    assert_eq!(remaining_keys(&app, &phone).await, 0);

    let before = app.db.snapshot().await;
    let mut sealed = phone
        .sealed_request(&upload_of(app_keys(now, 1), now))
        .unwrap();
    if let Some(byte) = sealed.payload.as_mut().and_then(|p| p.last_mut()) {
        *byte ^= 1;
    }
    let reply = phone.send_upload(sealed.encode_to_vec()).await.unwrap();
    assert_eq!(outcome(&reply), (400, ErrorCode::DecryptionFailed));
    let reply = phone.upload(&upload_of(Vec::new(), now)).await.unwrap();
    assert_eq!(outcome(&reply), (400, ErrorCode::NoKeysInPayload));
    assert_eq!(app.db.snapshot().await, before);
}

/// Statements a PostgreSQL client sends, counted by a proxy between the service and the
/// database: every simple `Query` and every extended-protocol `Sync` is one statement whose
/// answer the client waits for.
#[tokio::test]
async fn an_accepted_upload_is_one_transaction_of_six_statements() {
    use diagnosis_core::store::{Store, StoreConfig};
    use diagnosis_tests::black_hole::upstream_of;
    use diagnosis_tests::pg::TestDatabase;

    let db = std::sync::Arc::new(TestDatabase::new().await);
    let proxy = diagnosis_tests::pg_wire::CountingProxy::start(upstream_of(&db.url))
        .await
        .unwrap();
    // One connection, so that the first upload prepares every statement the second one uses.
    let store = Store::connect(&StoreConfig {
        database_url: proxy.url_for(&db.url),
        pool_size: 1,
        statement_timeout: std::time::Duration::from_secs(5),
        connect_timeout: std::time::Duration::from_secs(5),
        application_name: "diagnosis-upload-tests",
    })
    .unwrap();
    let app = TestApp::spawn_with_store(std::sync::Arc::clone(&db), store).await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let reply = phone
        .upload(&upload_of(app_keys(now, 7), now))
        .await
        .unwrap();
    assert_eq!(outcome(&reply), (200, ErrorCode::None));

    let before = proxy.statements();
    let reply = phone
        .upload(&upload_of(app_keys(now, 14), now))
        .await
        .unwrap();
    assert_eq!(outcome(&reply), (200, ErrorCode::None));
    assert_eq!(
        proxy.statements() - before,
        6,
        "BEGIN, the seal lock and the keypair read and locked (sent together), the keys (which \
         count the upload), the quota, COMMIT"
    );
    assert_eq!(stored_keys(&app).await, 21);
}

/// The statements of an accepted upload that do not depend on one another go out together
/// (DESIGN §3.3 storing): BEGIN; the seal lock with the keypair read and locked; the keys, the
/// quota and the upload count; COMMIT.
#[tokio::test]
async fn an_accepted_upload_takes_four_round_trips_to_the_database() {
    use diagnosis_core::store::{Store, StoreConfig};
    use diagnosis_tests::black_hole::upstream_of;
    use diagnosis_tests::pg::TestDatabase;

    let db = std::sync::Arc::new(TestDatabase::new().await);
    let proxy = diagnosis_tests::pg_wire::CountingProxy::start(upstream_of(&db.url))
        .await
        .unwrap();
    // One connection, so that the first upload prepares every statement the second one uses.
    let store = Store::connect(&StoreConfig {
        database_url: proxy.url_for(&db.url),
        pool_size: 1,
        statement_timeout: std::time::Duration::from_secs(5),
        connect_timeout: std::time::Duration::from_secs(5),
        application_name: "diagnosis-upload-tests",
    })
    .unwrap();
    let app = TestApp::spawn_with_store(std::sync::Arc::clone(&db), store).await;
    let first = app.claimed_phone().await;
    let now = app.now_unix();
    let reply = first
        .upload(&upload_of(app_keys(now, 14), now))
        .await
        .unwrap();
    assert_eq!(outcome(&reply), (200, ErrorCode::None));

    let phone = app.claimed_phone().await;
    let quota = remaining_keys(&app, &phone).await;
    let before = proxy.round_trips();
    let reply = phone
        .upload(&upload_of(app_keys(now, 14), now))
        .await
        .unwrap();
    assert_eq!(outcome(&reply), (200, ErrorCode::None));
    assert_eq!(
        proxy.round_trips() - before,
        4,
        "BEGIN; the seal lock and the keypair; the keys, the quota and the upload count; COMMIT"
    );
    assert_eq!(stored_keys(&app).await, 28);
    assert_eq!(remaining_keys(&app, &phone).await, quota - 14);
}

/// An upload whose `COMMIT` reaches the database while its answer is lost (a failover, a dropped
/// connection) is answered `SERVER_ERROR`, yet its keys are stored; the app's repeat of the same
/// upload is acknowledged and stores nothing twice, nor takes the quota twice.
/// An app whose upload's answer was lost (the connection dropped after the database committed)
/// with the service behind a proxy that can lose the next `COMMIT`'s answer.
struct LostUpload {
    app: TestApp,
    phone: Phone,
    /// The code the phone claimed, as the portal gave it.
    code: String,
    upload: Upload,
    _proxy: diagnosis_tests::lost_answer::LostAnswerProxy,
}

impl LostUpload {
    /// Claims a code, sets the keypair's quota to `quota`, then loses the answer of an upload of
    /// 14 keys the database committed.
    async fn new(quota: i32) -> LostUpload {
        use std::sync::Arc;
        use std::time::Duration;

        use diagnosis_core::store::{Store, StoreConfig};
        use diagnosis_tests::black_hole::upstream_of;
        use diagnosis_tests::lost_answer::LostAnswerProxy;
        use diagnosis_tests::pg::TestDatabase;
        use tokio::time::timeout;

        let db = Arc::new(TestDatabase::new().await);
        let proxy = LostAnswerProxy::start(upstream_of(&db.url)).await;
        let store = Store::connect(&StoreConfig {
            database_url: proxy.url_for(&db.url),
            pool_size: 2,
            statement_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            application_name: "diagnosis-upload-tests",
        })
        .unwrap();
        let app = TestApp::spawn_with_store(Arc::clone(&db), store).await;
        let code = app.portal().issue_code().await.unwrap();
        let mut phone = app.phone();
        assert_eq!(phone.claim(&code).await.unwrap().status, 200);
        app.db
            .client()
            .await
            .execute(
                "UPDATE encryption_keys SET remaining_keys = $1 WHERE app_public_key = $2",
                &[&quota, &phone.app_public.as_bytes().as_slice()],
            )
            .await
            .unwrap();
        let now = app.now_unix();
        let upload = upload_of(app_keys(now, 14), now);

        proxy.arm();
        let lost = phone.upload(&upload).await.unwrap();
        assert_eq!(outcome(&lost), (500, ErrorCode::ServerError));
        timeout(Duration::from_secs(10), proxy.answer_lost())
            .await
            .expect("the upload's COMMIT never reached the database");
        assert_eq!(
            stored_keys(&app).await,
            14,
            "the committed upload is stored"
        );
        assert_eq!(remaining_keys(&app, &phone).await, quota - 14);
        LostUpload {
            app,
            phone,
            code,
            upload,
            _proxy: proxy,
        }
    }

    /// Sends the very same upload again, as an app whose answer was lost does.
    async fn repeat(&mut self) -> (u16, ErrorCode) {
        outcome(&self.phone.upload(&self.upload).await.unwrap())
    }

    async fn uploads_counted(&self) -> i64 {
        let client = self.app.db.client().await;
        client
            .query_one("SELECT count(*) FROM tek_upload_count", &[])
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test]
async fn an_upload_whose_answer_was_lost_is_stored_once_and_its_repeat_acknowledged() {
    let mut lost = LostUpload::new(43).await;
    assert_eq!(lost.repeat().await, (200, ErrorCode::None));
    assert_eq!(stored_keys(&lost.app).await, 14);
    assert_eq!(remaining_keys(&lost.app, &lost.phone).await, 43 - 14);
    assert_eq!(
        lost.uploads_counted().await,
        1,
        "the repeat is not a second upload"
    );
}

/// The upload whose answer was lost spent the last of the keypair's quota: its repeat adds
/// nothing, so it is acknowledged like any repeat, while an upload with a new key is still
/// refused as a spent keypair and changes nothing.
#[tokio::test]
async fn the_repeat_of_a_lost_upload_that_spent_the_quota_is_acknowledged() {
    let mut lost = LostUpload::new(14).await;
    assert_eq!(lost.repeat().await, (200, ErrorCode::None));
    assert_eq!(stored_keys(&lost.app).await, 14);
    assert_eq!(remaining_keys(&lost.app, &lost.phone).await, 0);
    assert_eq!(lost.uploads_counted().await, 1);
    let exhausted: i64 = lost
        .app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM event_log WHERE identifier = 'OTKExhausted'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(exhausted, 1, "the keypair was exhausted once");

    let now = lost.app.now_unix();
    let fresh = upload_of(app_keys(now, 1), now);
    let refused = outcome(&lost.phone.upload(&fresh).await.unwrap());
    assert_eq!(refused, (400, ErrorCode::InvalidKeypair));
    assert_eq!(
        stored_keys(&lost.app).await,
        14,
        "a refused upload stores nothing"
    );
    assert_eq!(lost.uploads_counted().await, 1);
}

/// A late repeat of the claim, arriving after the upload that spent the quota (its answer
/// lost), is answered as a repeat and leaves that upload recognisable: its repeat is still
/// acknowledged, counted once (DESIGN §3.2, §3.3).
#[tokio::test]
async fn a_repeated_claim_after_the_spending_upload_leaves_its_repeat_acknowledged() {
    let mut lost = LostUpload::new(14).await;
    let code = lost.code.clone();
    let repeated = lost.phone.claim(&code).await.unwrap();
    assert_eq!(repeated.status, 200, "the same app's repeated claim");
    assert_eq!(lost.repeat().await, (200, ErrorCode::None));
    assert_eq!(stored_keys(&lost.app).await, 14);
    assert_eq!(lost.uploads_counted().await, 1);
}

/// A spent keypair is no oracle of which keys are stored (DESIGN §3.3): keys that another
/// keypair stored are refused as a spent keypair, as new keys are, alone or with the keypair's
/// own; only the repeat of the upload that spent the quota is acknowledged, however often it
/// comes, and nothing changes.
#[tokio::test]
async fn a_spent_keypair_cannot_probe_the_keys_another_keypair_stored() {
    let app = TestApp::spawn_with(|settings| settings.initial_remaining_keys = 2).await;
    let now = app.now_unix();
    let prober = app.claimed_phone().await;
    let own = upload_of(app_keys(now, 2), now);
    assert_eq!(
        outcome(&prober.upload(&own).await.unwrap()),
        (200, ErrorCode::None)
    );
    assert_eq!(remaining_keys(&app, &prober).await, 0);
    let patient = app.claimed_phone().await;
    let theirs = app_keys(now, 1);
    let stored = patient
        .upload(&upload_of(theirs.clone(), now))
        .await
        .unwrap();
    assert_eq!(outcome(&stored), (200, ErrorCode::None));

    let before = app.db.snapshot().await;
    for _ in 0..2 {
        let repeat = prober.upload(&own).await.unwrap();
        assert_eq!(outcome(&repeat), (200, ErrorCode::None), "the repeat");
    }
    let unknown = prober
        .upload(&upload_of(app_keys(now, 1), now))
        .await
        .unwrap();
    assert_eq!(outcome(&unknown), (400, ErrorCode::InvalidKeypair));
    let known = prober
        .upload(&upload_of(theirs.clone(), now))
        .await
        .unwrap();
    assert_eq!(
        outcome(&known),
        outcome(&unknown),
        "a spent keypair tells a stored key from a new one"
    );
    let mixed = [own.keys[..1].to_vec(), theirs].concat();
    let mixed = prober.upload(&upload_of(mixed, now)).await.unwrap();
    assert_eq!(
        outcome(&mixed),
        (400, ErrorCode::InvalidKeypair),
        "own and theirs"
    );
    assert_eq!(app.db.snapshot().await, before, "nothing changed");
}
