//! `POST /claim-key` against a real database: one test per row of DESIGN §3.2.

use std::sync::Arc;

use diagnosis_core::store::CLIENT_IDENTITY_SECRET;
use diagnosis_proto::key_claim_response::ErrorCode;
use diagnosis_proto::{KeyClaimRequest, KeyClaimResponse, Message};
use diagnosis_submit::client::{ForwardedFor, TrustedProxies};
use diagnosis_tests::app::TestApp;
use diagnosis_tests::http_client::HttpClient;
use tokio::sync::Barrier;

fn code_of(response: &KeyClaimResponse) -> ErrorCode {
    ErrorCode::try_from(response.error.expect("error field present")).expect("known error code")
}

async fn post_claim(app: &TestApp, body: Vec<u8>) -> (u16, KeyClaimResponse) {
    let reply = app
        .phone()
        .client
        .post_protobuf(&format!("{}/claim-key", app.base_url), body)
        .await
        .unwrap();
    assert_eq!(reply.header("content-type"), Some("application/x-protobuf"));
    (
        reply.status.as_u16(),
        KeyClaimResponse::decode(reply.body.as_ref()).unwrap(),
    )
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
        let (status, response) = post_claim(&app, body).await;
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
        let (status, response) = post_claim(&app, claim_body(&code, len)).await;
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
        let (status, response) = post_claim(&app, body).await;
        assert_eq!((status, code_of(&response)), (401, ErrorCode::InvalidKey));
    }
    assert_eq!(app.db.snapshot().await, before);
}

#[tokio::test]
async fn wrong_codes_count_down_to_a_ban_that_expires_afresh() {
    let app = TestApp::spawn_with(|s| s.ban.max_failures = 3).await;
    let wrong = || claim_body("AEF-245-HJKL", 32);

    let (status, response) = post_claim(&app, wrong()).await;
    assert_eq!(
        (status, code_of(&response)),
        (401, ErrorCode::InvalidOneTimeCode)
    );
    assert_eq!(response.tries_remaining, Some(2));
    assert_eq!(response.remaining_ban_duration.map(|d| d.seconds), Some(0));

    post_claim(&app, wrong()).await;
    let (status, response) = post_claim(&app, wrong()).await;
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
    let (status, response) = post_claim(&app, claim_body(&code, 32)).await;
    assert_eq!((status, code_of(&response)), (429, ErrorCode::TemporaryBan));
    assert_eq!(response.tries_remaining, Some(0));
    assert_eq!(
        response.remaining_ban_duration.map(|d| d.seconds),
        Some(3000)
    );
    // A banned request is refused before its body is even read.
    let (status, _) = post_claim(&app, vec![0xff; 300]).await;
    assert_eq!(status, 429);
    assert_eq!(app.db.snapshot().await, before);

    // After the ban the count starts afresh: one failure leaves max − 1 tries.
    app.clock.advance(chrono::Duration::minutes(50));
    let (status, response) = post_claim(&app, wrong()).await;
    assert_eq!((status, response.tries_remaining), (401, Some(2)));
}

#[tokio::test]
async fn a_success_clears_the_failures() {
    let app = TestApp::spawn_with(|s| s.ban.max_failures = 3).await;
    post_claim(&app, claim_body("AEF-245-HJKL", 32)).await;
    post_claim(&app, claim_body("AEF-245-HJKL", 32)).await;
    app.claimed_phone().await;
    let (_, response) = post_claim(&app, claim_body("AEF-245-HJKL", 32)).await;
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
        let (status, _) = post_claim(app, claim_body("AEF-245-HJKL", 32)).await;
        assert_eq!(status, 401, "failure {i}");
    }
    for app in [&first, &second] {
        let (status, response) = post_claim(app, claim_body("AEF-245-HJKL", 32)).await;
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
    use hmac::{Hmac, Mac};
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
        let (status, _) = post_claim(&app, claim_body("AEF-245-HJKL", 32)).await;
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
        let (status, _) = post_claim(&app, claim_body("AEF-245-HJKL", 32)).await;
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
