//! `POST /claim-key` against a real database: one test per row of DESIGN §3.2.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diagnosis_core::store::{
    CLIENT_IDENTITY_SECRET, ClientIdentifier, Store, StoreConfig, take_claim_lock,
};
use diagnosis_core::time::Clock;
use diagnosis_proto::encrypted_upload_response::ErrorCode as UploadCode;
use diagnosis_proto::key_claim_response::ErrorCode;
use diagnosis_proto::{KeyClaimRequest, KeyClaimResponse, Message};
use diagnosis_submit::client_ip::{ForwardedFor, TrustedProxies};
use diagnosis_tests::app::TestApp;
use diagnosis_tests::black_hole::upstream_of;
use diagnosis_tests::http_client::HttpClient;
use diagnosis_tests::lost_answer::LostAnswerProxy;
use diagnosis_tests::pg::TestDatabase;
use diagnosis_tests::simulator::{Phone, app_keys, upload_of};
use tokio::sync::Barrier;
use tokio::time::{Instant, timeout};

fn code_of(response: &KeyClaimResponse) -> ErrorCode {
    ErrorCode::try_from(response.error.expect("error field present")).expect("known error code")
}

fn claim_body(code: &str, key_len: usize) -> Vec<u8> {
    KeyClaimRequest {
        one_time_code: Some(code.to_owned()),
        app_public_key: Some(vec![7; key_len]),
    }
    .encode_to_vec()
}

#[tokio::test]
async fn a_code_typed_like_a_person_types_it_is_claimed_once() {
    let app = TestApp::spawn().await;
    let code = app.portal().issue_code().await.unwrap();
    let typed = format!(
        " {}-{} {} ",
        &code[..3].to_lowercase(),
        &code[3..6],
        &code[6..].to_lowercase()
    );
    let mut phone = app.phone();
    let reply = phone.claim(&typed).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(code_of(&reply.response), ErrorCode::None);
    assert_eq!(reply.response.server_public_key().len(), 32);
    assert_eq!(reply.response.tries_remaining, Some(50));

    let client = app.db.client().await;
    let row = client
        .query_one("SELECT one_time_code IS NULL, app_public_key, claimed IS NOT NULL FROM encryption_keys", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the code is erased on claim");
    assert_eq!(
        row.get::<_, Vec<u8>>(1),
        phone.app_public.as_bytes().to_vec()
    );
    assert!(row.get::<_, bool>(2));

    // Claimed codes are wrong codes from then on.
    let mut other = app.phone();
    let again = other.claim(&code).await.unwrap();
    assert_eq!(again.status, 401);
    assert_eq!(code_of(&again.response), ErrorCode::InvalidOneTimeCode);
}

#[tokio::test]
async fn malformed_bodies_are_unknown_and_change_nothing() {
    let app = TestApp::spawn().await;
    let code = app.portal().issue_code().await.unwrap();
    let before = app.db.snapshot().await;
    let mut oversize = claim_body(&code, 32);
    oversize.resize(257, 0);
    for body in [vec![0xff, 0xff, 0xff], vec![0x0a, 0x05, b'a'], oversize] {
        let (status, response) = app.post_claim(body).await;
        assert_eq!((status, code_of(&response)), (400, ErrorCode::Unknown));
        assert_eq!(response.tries_remaining, Some(0));
    }
    assert_eq!(app.db.snapshot().await, before);
}

#[tokio::test]
async fn an_app_key_of_the_wrong_length_is_invalid_and_not_a_failure() {
    let app = TestApp::spawn().await;
    let code = app.portal().issue_code().await.unwrap();
    let before = app.db.snapshot().await;
    for len in [0, 31, 33] {
        let (status, response) = app.post_claim(claim_body(&code, len)).await;
        assert_eq!(
            (status, code_of(&response)),
            (400, ErrorCode::InvalidKey),
            "key of {len} bytes"
        );
    }
    assert_eq!(
        app.db.snapshot().await,
        before,
        "nothing counted, nothing claimed"
    );
}

#[tokio::test]
async fn an_already_registered_app_key_is_refused_before_the_code() {
    let app = TestApp::spawn().await;
    let phone = app.claimed_phone().await;
    let code = app.portal().issue_code().await.unwrap();
    let before = app.db.snapshot().await;
    for typed in [code.as_str(), "not-a-code"] {
        let body = KeyClaimRequest {
            one_time_code: Some(typed.to_owned()),
            app_public_key: Some(phone.app_public.as_bytes().to_vec()),
        }
        .encode_to_vec();
        let (status, response) = app.post_claim(body).await;
        assert_eq!((status, code_of(&response)), (401, ErrorCode::InvalidKey));
    }
    assert_eq!(app.db.snapshot().await, before);
}

#[tokio::test]
async fn wrong_codes_count_down_to_a_ban_that_expires_afresh() {
    let app = TestApp::spawn_with(|s| s.ban.max_failures = 3).await;
    let wrong = || claim_body("AEF-245-HJKL", 32);

    let (status, response) = app.post_claim(wrong()).await;
    assert_eq!(
        (status, code_of(&response)),
        (401, ErrorCode::InvalidOneTimeCode)
    );
    assert_eq!(response.tries_remaining, Some(2));
    assert_eq!(response.remaining_ban_duration.map(|d| d.seconds), Some(0));

    app.post_claim(wrong()).await;
    let (status, response) = app.post_claim(wrong()).await;
    assert_eq!(
        (status, code_of(&response)),
        (401, ErrorCode::InvalidOneTimeCode)
    );
    assert_eq!(response.tries_remaining, Some(0));
    assert_eq!(
        response.remaining_ban_duration.map(|d| d.seconds),
        Some(3600),
        "this failure starts the ban"
    );

    // Banned: even a valid code is refused, and the ban's remaining time is told.
    let code = app.portal().issue_code().await.unwrap();
    app.clock.advance(chrono::Duration::minutes(10));
    let before = app.db.snapshot().await;
    let (status, response) = app.post_claim(claim_body(&code, 32)).await;
    assert_eq!((status, code_of(&response)), (429, ErrorCode::TemporaryBan));
    assert_eq!(response.tries_remaining, Some(0));
    assert_eq!(
        response.remaining_ban_duration.map(|d| d.seconds),
        Some(3000)
    );
    // A banned request is refused before its body is even read.
    let (status, _) = app.post_claim(vec![0xff; 300]).await;
    assert_eq!(status, 429);
    assert_eq!(app.db.snapshot().await, before);

    // After the ban the count starts afresh: one failure leaves max − 1 tries.
    app.clock.advance(chrono::Duration::minutes(50));
    let (status, response) = app.post_claim(wrong()).await;
    assert_eq!((status, response.tries_remaining), (401, Some(2)));
}

#[tokio::test]
async fn a_success_clears_the_failures() {
    let app = TestApp::spawn_with(|s| s.ban.max_failures = 3).await;
    app.post_claim(claim_body("AEF-245-HJKL", 32)).await;
    app.post_claim(claim_body("AEF-245-HJKL", 32)).await;
    app.claimed_phone().await;
    let (_, response) = app.post_claim(claim_body("AEF-245-HJKL", 32)).await;
    assert_eq!(response.tries_remaining, Some(2));
}

#[tokio::test]
async fn an_expired_code_is_a_wrong_code() {
    let app = TestApp::spawn().await;
    let code = app.portal().issue_code().await.unwrap();
    app.clock.advance(chrono::Duration::hours(24));
    let mut phone = app.phone();
    let reply = phone.claim(&code).await.unwrap();
    assert_eq!(
        (reply.status.as_u16(), code_of(&reply.response)),
        (401, ErrorCode::InvalidOneTimeCode)
    );
    assert_eq!(reply.response.tries_remaining, Some(49));
}

#[tokio::test]
async fn a_code_just_inside_its_validity_is_claimed() {
    let app = TestApp::spawn().await;
    let code = app.portal().issue_code().await.unwrap();
    app.clock
        .advance(chrono::Duration::hours(24) - chrono::Duration::seconds(1));
    assert_eq!(app.phone().claim(&code).await.unwrap().status, 200);
}

/// A code is claimable only while its keypair could still accept an upload (DESIGN §3.2): a
/// code issued at 23:00 with `ENCRYPTION_KEY_VALIDITY_DAYS=1` and claimed at 00:30 would give the
/// app a server key that every upload refuses, so it is a wrong code instead. The same code
/// claimed at 23:30 is answered and can upload.
#[tokio::test]
async fn a_code_whose_keypair_could_no_longer_upload_is_not_claimed() {
    use chrono::TimeZone;
    let late = chrono::Utc
        .with_ymd_and_hms(2026, 11, 28, 23, 0, 0)
        .single()
        .unwrap();
    let app = TestApp::spawn_with(|s| s.encryption_key_validity_days = 1).await;
    app.clock.set(late);
    let in_time = app.portal().issue_code().await.unwrap();
    let too_late = app.portal().issue_code().await.unwrap();

    app.clock.advance(chrono::Duration::minutes(30));
    let mut phone = app.phone();
    assert_eq!(phone.claim(&in_time).await.unwrap().status, 200);
    let now = app.now_unix();
    let reply = phone
        .upload(&upload_of(app_keys(now, 2), now))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.response);

    app.clock.advance(chrono::Duration::hours(1));
    let mut phone = app.phone();
    let reply = phone.claim(&too_late).await.unwrap();
    assert_eq!(
        (reply.status.as_u16(), code_of(&reply.response)),
        (401, ErrorCode::InvalidOneTimeCode),
        "a claim answered with a keypair no upload can use"
    );
}

#[tokio::test]
async fn a_database_failure_is_a_server_error() {
    let app = TestApp::spawn().await;
    let code = app.portal().issue_code().await.unwrap();
    let client = app.db.client().await;
    client
        .batch_execute("ALTER TABLE encryption_keys RENAME TO encryption_keys_gone")
        .await
        .unwrap();
    let mut phone = app.phone();
    let reply = phone.claim(&code).await.unwrap();
    assert_eq!(
        (reply.status.as_u16(), code_of(&reply.response)),
        (500, ErrorCode::ServerError)
    );
}

#[tokio::test]
async fn eight_concurrent_claims_of_one_code_have_exactly_one_winner() {
    let app = TestApp::spawn().await;
    let code = app.portal().issue_code().await.unwrap();
    let claims = (0..8).map(|_| {
        let mut phone = app.phone();
        let code = code.clone();
        tokio::spawn(async move { phone.claim(&code).await.unwrap().status.as_u16() })
    });
    let mut statuses = Vec::new();
    for claim in claims {
        statuses.push(claim.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 401, 401, 401, 401, 401, 401, 401]);
}

#[tokio::test]
async fn two_replicas_share_one_ban() {
    let first = TestApp::spawn_with(|s| s.ban.max_failures = 50).await;
    let second = first.replica().await;
    for i in 0..50 {
        let app = if i % 2 == 0 { &first } else { &second };
        let (status, _) = app.post_claim(claim_body("AEF-245-HJKL", 32)).await;
        assert_eq!(status, 401, "failure {i}");
    }
    for app in [&first, &second] {
        let (status, response) = app.post_claim(claim_body("AEF-245-HJKL", 32)).await;
        assert_eq!((status, code_of(&response)), (429, ErrorCode::TemporaryBan));
    }
}

#[tokio::test]
async fn forwarded_for_is_used_only_when_trusted() {
    let app = TestApp::spawn_with(|s| {
        s.ban.max_failures = 1;
        s.forwarded_for = ForwardedFor::OneHop;
    })
    .await;
    let send = |forwarded: &'static str| {
        let client = app.phone().client;
        let url = format!("{}/claim-key", app.base_url);
        async move {
            client
                .send(
                    hyper::Method::POST,
                    &url,
                    &[("x-forwarded-for", forwarded)],
                    claim_body("AEF-245-HJKL", 32),
                )
                .await
                .unwrap()
                .status
                .as_u16()
        }
    };
    assert_eq!(send("203.0.113.1, 198.51.100.1").await, 401);
    // Same balancer-appended address → banned, whatever the client claims before it.
    assert_eq!(send("192.0.2.99, 198.51.100.1").await, 429);
    // Another client behind the same balancer is not.
    assert_eq!(send("198.51.100.2").await, 401);
}

/// The test client connects from loopback: trusting it makes the test a proxy.
fn behind_a_trusted_loopback_proxy() -> ForwardedFor {
    ForwardedFor::TrustedProxies(TrustedProxies::parse("127.0.0.1/32").unwrap().unwrap())
}

/// A wrong claim sent with these `X-Forwarded-For` lines; its status.
async fn wrong_claim_forwarded_for(app: &TestApp, forwarded: &[&str]) -> u16 {
    let lines: Vec<&[u8]> = forwarded.iter().map(|line| line.as_bytes()).collect();
    wrong_claim_forwarded_for_bytes(app, &lines).await
}

/// A wrong claim sent with these `X-Forwarded-For` lines, as raw bytes; its status.
async fn wrong_claim_forwarded_for_bytes(app: &TestApp, forwarded: &[&[u8]]) -> u16 {
    let headers: Vec<(&str, &[u8])> = forwarded.iter().map(|v| ("x-forwarded-for", *v)).collect();
    app.phone()
        .client
        .send_raw(
            hyper::Method::POST,
            &format!("{}/claim-key", app.base_url),
            &headers,
            claim_body("AEF-245-HJKL", 32),
        )
        .await
        .unwrap()
        .status
        .as_u16()
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_banned_separately_whatever_they_prepend() {
    let app = TestApp::spawn_with(|s| {
        s.ban.max_failures = 2;
        s.forwarded_for = behind_a_trusted_loopback_proxy();
    })
    .await;
    assert_eq!(
        wrong_claim_forwarded_for(&app, &["198.51.100.1"]).await,
        401
    );
    assert_eq!(
        wrong_claim_forwarded_for(&app, &["198.51.100.1:4711"]).await,
        401
    );
    // Banned, however the client dresses up the entries left of its own.
    for forged in [
        &["198.51.100.1"][..],
        &["203.0.113.50, 198.51.100.1"],
        &["127.0.0.1, 198.51.100.1"],
        &["203.0.113.50", "198.51.100.1"],
        &["198.51.100.1, 127.0.0.1"],
        &["::ffff:198.51.100.1"],
    ] {
        assert_eq!(
            wrong_claim_forwarded_for(&app, forged).await,
            429,
            "{forged:?}"
        );
    }
    // Another client behind the same proxy is not banned.
    assert_eq!(
        wrong_claim_forwarded_for(&app, &["198.51.100.2"]).await,
        401
    );
    // Bytes that are not ASCII left of the address the proxy appended do not
    // make the client the proxy (DESIGN §3.2, "Raw bytes"): it keeps its own ban...
    for forged in [
        &[&b"\xff, 198.51.100.1"[..]][..],
        &[b"\xff198.51.100.9, 198.51.100.1"],
        &[b"caf\xc3\xa9 \xfe\xff, 198.51.100.1"],
        &[b"\xff", b"203.0.113.50, 198.51.100.1"],
    ] {
        assert_eq!(
            wrong_claim_forwarded_for_bytes(&app, forged).await,
            429,
            "{:?}",
            forged
                .iter()
                .map(|line| line.escape_ascii().to_string())
                .collect::<Vec<_>>()
        );
    }
    // ...and its failures count against itself, never against the proxy.
    assert_eq!(
        wrong_claim_forwarded_for_bytes(&app, &[b"\xff, 198.51.100.2"]).await,
        401
    );
    assert_eq!(
        wrong_claim_forwarded_for(&app, &["198.51.100.2"]).await,
        429
    );
    assert_eq!(
        wrong_claim_forwarded_for(&app, &[]).await,
        401,
        "the proxy itself was counted"
    );

    // One IPv6 /64 is one client; the next /64 is another.
    assert_eq!(
        wrong_claim_forwarded_for(&app, &["2001:db8:1:2::1"]).await,
        401
    );
    assert_eq!(
        wrong_claim_forwarded_for(&app, &["[2001:db8:1:2::2]:80"]).await,
        401
    );
    assert_eq!(
        wrong_claim_forwarded_for(&app, &["2001:db8:1:2:ffff::9"]).await,
        429
    );
    assert_eq!(
        wrong_claim_forwarded_for(&app, &["2001:db8:1:3::1"]).await,
        401
    );
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_identity() {
    let proxies_elsewhere =
        ForwardedFor::TrustedProxies(TrustedProxies::parse("10.0.0.0/8").unwrap().unwrap());
    for rule in [ForwardedFor::Ignored, proxies_elsewhere] {
        let app = TestApp::spawn_with(|s| {
            s.ban.max_failures = 1;
            s.forwarded_for = rule.clone();
        })
        .await;
        assert_eq!(
            wrong_claim_forwarded_for(&app, &["198.51.100.1"]).await,
            401
        );
        assert_eq!(
            wrong_claim_forwarded_for(&app, &["198.51.100.2"]).await,
            429,
            "{rule:?}"
        );
        assert_eq!(wrong_claim_forwarded_for(&app, &[]).await, 429, "{rule:?}");
    }
}

#[tokio::test]
async fn the_stored_identifier_is_a_keyed_hash_made_with_the_stored_secret() {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};

    let app = TestApp::spawn_with(|s| s.forwarded_for = behind_a_trusted_loopback_proxy()).await;
    let db = app.db.client().await;
    let secret_of = || async {
        db.query(
            "SELECT secret FROM submit_secrets WHERE name = $1",
            &[&CLIENT_IDENTITY_SECRET],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, Vec<u8>>(0))
        .collect::<Vec<_>>()
    };
    let secrets = secret_of().await;
    assert_eq!(secrets.len(), 1, "the secret is created at start");
    let secret = secrets[0].clone();
    assert_eq!(secret.len(), 32);
    assert_ne!(secret, vec![0; 32]);

    assert_eq!(wrong_claim_forwarded_for(&app, &["203.0.113.7"]).await, 401);
    let stored: Vec<String> = db
        .query("SELECT identifier FROM failed_key_claim_attempts", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stored.len(), 1);
    let identifier = &stored[0];
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
    mac.update(b"203.0.113.7/32");
    assert_eq!(identifier, &hex::encode(mac.finalize().into_bytes()));
    assert!(!identifier.contains("203.0.113"));
    for unkeyed in ["203.0.113.7", "203.0.113.7/32"] {
        assert_ne!(identifier, &hex::encode(Sha256::digest(unkeyed.as_bytes())));
    }

    // A second replica reads the same secret instead of making its own, so a
    // client is one client on every replica.
    let replica = app.replica().await;
    assert_eq!(secret_of().await, vec![secret]);
    let _ = replica;
}

#[tokio::test]
async fn replicas_follow_a_replaced_identity_secret_within_a_refresh_period() {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    let first = TestApp::spawn().await;
    let db = first.db.client().await;
    // The secret's row is restored from an older backup, and a replica starts after that.
    let restored = [0x5a_u8; 32];
    db.execute(
        "UPDATE submit_secrets SET secret = $2 WHERE name = $1",
        &[&CLIENT_IDENTITY_SECRET, &&restored[..]],
    )
    .await
    .unwrap();
    let second = first.replica().await;
    let identifiers = || async {
        db.query(
            "SELECT identifier, failures FROM failed_key_claim_attempts ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i32>(1)))
        .collect::<Vec<_>>()
    };
    let wrong = || claim_body("AEF-245-HJKL", 32);

    // Within the period, one client failing on each replica is two clients.
    for app in [&first, &second] {
        assert_eq!(app.post_claim(wrong()).await.0, 401);
    }
    assert_eq!(identifiers().await.len(), 2, "the replicas did disagree");
    db.execute("DELETE FROM failed_key_claim_attempts", &[])
        .await
        .unwrap();

    // A refresh period later both use the restored secret: one client, one count.
    first
        .advance_past_refresh(chrono::Duration::minutes(1), 2)
        .await;
    for app in [&first, &second, &first] {
        assert_eq!(app.post_claim(wrong()).await.0, 401);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&restored).unwrap();
    mac.update(b"127.0.0.1/32");
    assert_eq!(
        identifiers().await,
        vec![(hex::encode(mac.finalize().into_bytes()), 3)]
    );
}

/// Sends `bodies` to `/claim-key` all at once, each on a connection of its own;
/// the statuses in order.
async fn concurrent_claims(app: &TestApp, bodies: Vec<Vec<u8>>) -> Vec<u16> {
    let url = format!("{}/claim-key", app.base_url);
    let start = Arc::new(Barrier::new(bodies.len()));
    let claims: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let client = HttpClient::new();
            let (url, start) = (url.clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                client
                    .post_protobuf(&url, body)
                    .await
                    .unwrap()
                    .status
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for claim in claims {
        statuses.push(claim.await.unwrap());
    }
    statuses
}

async fn failures_stored(app: &TestApp) -> Vec<i32> {
    app.db
        .client()
        .await
        .query("SELECT failures FROM failed_key_claim_attempts", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn the_ban_holds_under_concurrency() {
    let app = TestApp::spawn_with(|s| s.ban.max_failures = 5).await;
    for _ in 0..3 {
        let (status, _) = app.post_claim(claim_body("AEF-245-HJKL", 32)).await;
        assert_eq!(status, 401);
    }
    let statuses = concurrent_claims(&app, vec![claim_body("AEF-245-HJKL", 32); 20]).await;
    let count = |status| statuses.iter().filter(|s| **s == status).count();
    assert_eq!((count(401), count(429)), (2, 18), "{statuses:?}");
    assert_eq!(
        failures_stored(&app).await,
        vec![5],
        "only two more codes were checked"
    );
}

#[tokio::test]
async fn concurrent_right_codes_of_a_client_with_failures_all_succeed() {
    let app = TestApp::spawn_with(|s| s.ban.max_failures = 5).await;
    for _ in 0..4 {
        let (status, _) = app.post_claim(claim_body("AEF-245-HJKL", 32)).await;
        assert_eq!(status, 401);
    }
    let mut bodies = Vec::new();
    for _ in 0..8 {
        let code = app.portal().issue_code().await.unwrap();
        bodies.push(
            KeyClaimRequest {
                one_time_code: Some(code),
                app_public_key: Some(app.phone().app_public.as_bytes().to_vec()),
            }
            .encode_to_vec(),
        );
    }
    let statuses = concurrent_claims(&app, bodies).await;
    assert_eq!(statuses, vec![200; 8]);
    assert_eq!(
        failures_stored(&app).await,
        Vec::<i32>::new(),
        "a success clears the count"
    );
}

/// The server key bound to `phone`'s app key, read from the database.
async fn server_key_of(app: &TestApp, phone: &Phone) -> Vec<u8> {
    app.db
        .client()
        .await
        .query_one(
            "SELECT server_public_key FROM encryption_keys WHERE app_public_key = $1",
            &[&phone.app_public.as_bytes().as_slice()],
        )
        .await
        .unwrap()
        .get(0)
}

/// A claim with the app key of `phone`, answered; its status and error code.
async fn claim_status(phone: &mut Phone, code: &str) -> (u16, ErrorCode) {
    let reply = phone.claim(code).await.unwrap();
    (reply.status.as_u16(), code_of(&reply.response))
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_answered_again_and_the_app_uploads() {
    let db = Arc::new(TestDatabase::new().await);
    let proxy = LostAnswerProxy::start(upstream_of(&db.url)).await;
    let store = Store::connect(&StoreConfig {
        database_url: proxy.url_for(&db.url),
        pool_size: 2,
        statement_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        application_name: "diagnosis-claim-tests",
    })
    .unwrap();
    let app = TestApp::spawn_with_store(Arc::clone(&db), store).await;
    let code = app.portal().issue_code().await.unwrap();
    let mut phone = app.phone();

    // The claim commits and its connection dies before the service hears it.
    proxy.arm();
    assert_eq!(
        claim_status(&mut phone, &code).await,
        (500, ErrorCode::ServerError)
    );
    timeout(Duration::from_secs(10), proxy.answer_lost())
        .await
        .expect("the claim's COMMIT never reached the database");
    let committed = server_key_of(&app, &phone).await;

    // The app repeats the very same claim: the same server key, and its upload is stored.
    let again = phone.claim(&code).await.unwrap();
    assert_eq!(
        (again.status.as_u16(), code_of(&again.response)),
        (200, ErrorCode::None)
    );
    assert_eq!(again.response.server_public_key(), committed.as_slice());
    assert_eq!(again.response.tries_remaining, Some(50));
    let now = app.now_unix();
    let upload = phone
        .upload(&upload_of(app_keys(now, 3), now))
        .await
        .unwrap();
    assert_eq!(upload.status, 200, "{:?}", upload.response);

    // Any other app key is refused the code, and that counts.
    let mut other = app.phone();
    let refused = other.claim(&code).await.unwrap();
    assert_eq!(
        (refused.status.as_u16(), code_of(&refused.response)),
        (401, ErrorCode::InvalidOneTimeCode)
    );
    assert_eq!(refused.response.tries_remaining, Some(49));
    // Repeating again neither counts nor clears the client's failures.
    assert_eq!(
        claim_status(&mut phone, &code).await,
        (200, ErrorCode::None)
    );
    assert_eq!(failures_stored(&app).await, vec![1]);
}

#[tokio::test]
async fn a_repeated_claim_is_answered_while_its_code_would_be_valid_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let code = app.portal().issue_code().await.unwrap();
    let mut phone = app.phone();
    assert_eq!(
        claim_status(&mut phone, &code).await,
        (200, ErrorCode::None)
    );
    let server_key = server_key_of(&app, &phone).await;
    let before = app.db.snapshot().await;

    // The same code, typed another way: answered again, nothing counted or recorded.
    let typed = format!(
        "{}-{} {}",
        &code[..3].to_lowercase(),
        &code[3..6],
        &code[6..]
    );
    let again = phone.claim(&typed).await.unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.response.server_public_key(), server_key.as_slice());
    assert_eq!(app.db.snapshot().await, before);

    // Another code with the registered app key is no repeat: refused, and not counted.
    let second = app.portal().issue_code().await.unwrap();
    let before = app.db.snapshot().await;
    for other in [second.as_str(), "AEF-245-HJKL", "not a code"] {
        assert_eq!(
            claim_status(&mut phone, other).await,
            (401, ErrorCode::InvalidKey),
            "{other}"
        );
    }
    assert_eq!(app.db.snapshot().await, before);

    // Valid as long as the code would be: the last second of its 24 hours, then no more.
    app.clock
        .advance(chrono::Duration::hours(24) - chrono::Duration::seconds(1));
    assert_eq!(
        claim_status(&mut phone, &code).await,
        (200, ErrorCode::None)
    );
    app.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(
        claim_status(&mut phone, &code).await,
        (401, ErrorCode::InvalidKey)
    );
    assert_eq!(failures_stored(&app).await, Vec::<i32>::new());
}

#[tokio::test]
async fn a_claim_stores_a_keyed_hash_of_its_code_and_never_the_code() {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    let app = TestApp::spawn().await;
    let code = app.portal().issue_code().await.unwrap();
    app.phone().claim(&code).await.unwrap();
    let db = app.db.client().await;
    let secrets: Vec<(String, Vec<u8>)> = db
        .query("SELECT name, secret FROM submit_secrets ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let names: Vec<&str> = secrets.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["claim-code", CLIENT_IDENTITY_SECRET]);
    assert_ne!(secrets[0].1, secrets[1].1, "the two secrets are one");
    let stored: Vec<u8> = db
        .query_one("SELECT claimed_code_hash FROM encryption_keys", &[])
        .await
        .unwrap()
        .get(0);
    let mut mac = Hmac::<Sha256>::new_from_slice(&secrets[0].1).unwrap();
    mac.update(code.as_bytes());
    assert_eq!(stored, mac.finalize().into_bytes().to_vec());
    assert!(!app.db.snapshot().await.contains(&code), "the code is kept");
}

/// The client whose claims flood the service.
const FLOODER: &str = "198.51.100.1";

/// Claims waiting for a claim lock (an advisory lock), across the database.
async fn claims_waiting_for_the_lock(db: &TestDatabase) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits at most `limit` for `step` and returns its result.
async fn promptly<T>(what: &str, limit: Duration, step: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let reply = timeout(limit, step)
        .await
        .unwrap_or_else(|_| panic!("{what} had no answer within {limit:?}"));
    eprintln!("{what} answered in {:?}", started.elapsed());
    reply
}

#[tokio::test]
async fn a_flood_of_one_clients_claims_leaves_the_other_clients_served() {
    // A small pool, so that a few waiting claims would take all of it.
    let db = Arc::new(TestDatabase::new().await);
    let store = Store::connect(&StoreConfig {
        database_url: db.url.clone(),
        pool_size: 4,
        statement_timeout: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(1),
        application_name: "diagnosis-claim-tests",
    })
    .unwrap();
    let app = TestApp::spawn_with_store_and(Arc::clone(&db), store, |s| {
        s.forwarded_for = ForwardedFor::OneHop;
        s.claim_queue_wait = Duration::from_secs(1);
    })
    .await;
    // The flood: claims with an app key that holds a keypair (never counted, never banned).
    let registered = app.claimed_phone().await;
    let body = KeyClaimRequest {
        one_time_code: Some("AEF-245-HJKL".to_owned()),
        app_public_key: Some(registered.app_public.as_bytes().to_vec()),
    }
    .encode_to_vec();
    // A claim of the flooder in progress elsewhere (another replica) holds its claim lock,
    // so every claim of the flooder here waits.
    let key = app
        .store
        .client_identity_key(app.clock.now())
        .await
        .unwrap();
    let flooder = ClientIdentifier::new(&key, FLOODER.parse().unwrap());
    let mut elsewhere = db.client().await;
    let held = elsewhere.transaction().await.unwrap();
    take_claim_lock(&held, &flooder).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..24)
        .map(|_| {
            let (app_url, body, stop) = (app.base_url.clone(), body.clone(), Arc::clone(&stop));
            let app = FloodTarget(app_url);
            tokio::spawn(async move { app.flood(body, stop).await })
        })
        .collect();
    while claims_waiting_for_the_lock(&db).await == 0 {
        tokio::task::yield_now().await;
    }

    // Every other client is served as before: a code, its claim, an upload.
    let bound = Duration::from_secs(5);
    let mut waiting = vec![claims_waiting_for_the_lock(&db).await];
    let code = promptly("new-key-claim", bound, app.portal().request_code(None))
        .await
        .unwrap();
    assert_eq!(code.status, 200, "new-key-claim: {}", code.text());
    waiting.push(claims_waiting_for_the_lock(&db).await);
    let mut phone = app.phone();
    let claim = promptly("claim-key", bound, phone.claim(code.text().trim_end()))
        .await
        .unwrap();
    assert_eq!(
        (claim.status.as_u16(), code_of(&claim.response)),
        (200, ErrorCode::None)
    );
    waiting.push(claims_waiting_for_the_lock(&db).await);
    let now = app.now_unix();
    let upload = promptly(
        "upload",
        bound,
        phone.upload(&upload_of(app_keys(now, 3), now)),
    )
    .await
    .unwrap();
    assert_eq!(
        (upload.status.as_u16(), upload.response.error),
        (200, Some(UploadCode::None as i32))
    );
    waiting.push(claims_waiting_for_the_lock(&db).await);
    // The flooder's claims held at most one connection of this replica at a time.
    assert!(waiting.iter().all(|w| *w <= 1), "{waiting:?}");

    // The lock released, the flooder's claims are answered again; none hung.
    held.rollback().await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for flood in floods {
        statuses.extend(flood.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| [401, 500].contains(s)),
        "{statuses:?}"
    );
    let last = FloodTarget(app.base_url.clone()).claim(body).await;
    assert_eq!(last, 401);
}

/// Where the flood goes.
struct FloodTarget(String);

impl FloodTarget {
    async fn claim(&self, body: Vec<u8>) -> u16 {
        HttpClient::new()
            .send(
                hyper::Method::POST,
                &format!("{}/claim-key", self.0),
                &[("x-forwarded-for", FLOODER)],
                body,
            )
            .await
            .unwrap()
            .status
            .as_u16()
    }

    async fn flood(&self, body: Vec<u8>, stop: Arc<AtomicBool>) -> Vec<u16> {
        let mut statuses = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            statuses.push(self.claim(body.clone()).await);
        }
        statuses
    }
}
