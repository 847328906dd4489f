//! `POST /new-key-claim[/{hashID}]` against a real database (DESIGN §3.1).

use std::sync::Arc;

use diagnosis_core::domain::OneTimeCode;
use diagnosis_proto::encrypted_upload_response::ErrorCode as UploadCode;
use diagnosis_tests::app::{PORTAL_LABEL, PORTAL_TOKEN, TestApp};
use diagnosis_tests::simulator::{Phone, Portal, app_keys, upload_of};
use hyper::Method;
use tokio::sync::Barrier;

fn hash_id(c: char) -> String {
    std::iter::repeat_n(c, 128).collect()
}

#[tokio::test]
async fn issues_a_code_in_the_published_format() {
    let app = TestApp::spawn().await;
    let reply = app.portal().request_code(None).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.text();
    assert!(body.ends_with('\n'), "{body:?}");
    let code = body.trim_end();
    assert_eq!(code.len(), 10);
    assert!(
        OneTimeCode::from_user_input(code).is_some(),
        "{code:?} is not a valid code"
    );

    let client = app.db.client().await;
    let row = client
        .query_one(
            "SELECT originator, region, remaining_keys, one_time_code, hash_id IS NULL FROM encryption_keys",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        PORTAL_LABEL,
        "the label, never the token, is stored"
    );
    assert_eq!(row.get::<_, String>(1), "302");
    assert_eq!(row.get::<_, i32>(2), 43);
    assert_eq!(row.get::<_, String>(3), code);
    assert!(row.get::<_, bool>(4));
    let snapshot = app.db.snapshot().await;
    assert!(
        !snapshot.contains(PORTAL_TOKEN),
        "a token reached the database"
    );
}

#[tokio::test]
async fn codes_are_unique_and_random() {
    let app = TestApp::spawn().await;
    let portal = app.portal();
    let mut codes = std::collections::HashSet::new();
    for _ in 0..40 {
        assert!(codes.insert(portal.issue_code().await.unwrap()));
    }
}

#[tokio::test]
async fn bad_or_missing_token_and_other_methods_are_unauthorized() {
    let app = TestApp::spawn().await;
    let url = format!("{}/new-key-claim", app.base_url);
    let client = app.portal().client;
    let cases: Vec<(Method, Vec<(&str, String)>)> = vec![
        (Method::POST, vec![]),
        (
            Method::POST,
            vec![(
                "authorization",
                "Bearer wrong-token-0123456789abc".to_owned(),
            )],
        ),
        (
            Method::POST,
            vec![("authorization", format!("Basic {PORTAL_TOKEN}"))],
        ),
        (
            Method::POST,
            vec![("authorization", format!("Bearer {PORTAL_TOKEN}x"))],
        ),
        (
            Method::GET,
            vec![("authorization", format!("Bearer {PORTAL_TOKEN}"))],
        ),
        (
            Method::PUT,
            vec![("authorization", format!("Bearer {PORTAL_TOKEN}"))],
        ),
        (
            Method::DELETE,
            vec![("authorization", format!("Bearer {PORTAL_TOKEN}"))],
        ),
    ];
    let before = app.db.snapshot().await;
    for (method, headers) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = client
            .send(method.clone(), &url, &headers, Vec::new())
            .await
            .unwrap();
        assert_eq!(reply.status, 401, "{method} {headers:?}");
        assert_eq!(reply.text(), "unauthorized\n");
    }
    assert_eq!(
        app.db.snapshot().await,
        before,
        "a refused request changed the database"
    );
}

#[tokio::test]
async fn preflight_answers_with_cors_headers() {
    let app = TestApp::spawn_with(|s| {
        s.cors_allow_origin = http::HeaderValue::from_static("https://portal.example");
    })
    .await;
    let client = app.portal().client;
    for path in [
        "/new-key-claim".to_owned(),
        format!("/new-key-claim/{}", hash_id('a')),
    ] {
        let reply = client
            .send(
                Method::OPTIONS,
                &format!("{}{path}", app.base_url),
                &[],
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("https://portal.example")
        );
        assert_eq!(reply.header("access-control-allow-methods"), Some("POST"));
        let allowed = reply
            .header("access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
    }
}

#[tokio::test]
async fn hash_id_must_be_128_lowercase_alphanumerics() {
    let app = TestApp::spawn().await;
    let portal = app.portal();
    let before = app.db.snapshot().await;
    for bad in [
        "a".repeat(127),
        "a".repeat(129),
        "A".repeat(128),
        format!("{}-", "a".repeat(127)),
        format!("{}/", "a".repeat(128)),
        String::new(),
    ] {
        let reply = portal.request_code(Some(&bad)).await.unwrap();
        assert_eq!(reply.status, 404, "hash ID {bad:?}");
    }
    assert_eq!(app.db.snapshot().await, before);
    let reply = portal.request_code(Some(&"0a9z".repeat(32))).await.unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn same_hash_id_regenerates_until_claimed_then_is_forbidden() {
    let app = TestApp::spawn().await;
    let portal = app.portal();
    let id = hash_id('7');
    let first = portal.request_code(Some(&id)).await.unwrap().text();
    let second = portal.request_code(Some(&id)).await.unwrap().text();
    assert_ne!(first, second);

    // The first code was replaced: claiming it fails, the second works.
    let mut phone = app.phone();
    assert_eq!(phone.claim(first.trim_end()).await.unwrap().status, 401);
    assert_eq!(phone.claim(second.trim_end()).await.unwrap().status, 200);

    let before = app.db.snapshot().await;
    let reply = portal.request_code(Some(&id)).await.unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.text(), "forbidden\n");
    assert_eq!(app.db.snapshot().await, before);

    let events = app.db.event_counts(None).await;
    assert_eq!(
        events,
        vec![
            ("OTKClaimed".to_owned(), 1),
            ("OTKGenerated".to_owned(), 1),
            ("OTKRegenerated".to_owned(), 1)
        ]
    );
}

#[tokio::test]
async fn trailing_slashes_and_unknown_paths_are_not_found() {
    let app = TestApp::spawn().await;
    let client = app.portal().client;
    for path in [
        "/new-key-claim/",
        "/claim-key/",
        "/upload/",
        "/services/ping/",
        "/nope",
        "/",
    ] {
        let reply = client
            .send(
                Method::POST,
                &format!("{}{path}", app.base_url),
                &[("authorization", &format!("Bearer {PORTAL_TOKEN}"))],
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 404, "{path}");
    }
}

#[tokio::test]
async fn every_configured_portal_gets_its_own_label() {
    let tokens = "first-portal-token-000000=ON:second-portal-token-11111=QC";
    let app = TestApp::spawn_with(|s| {
        s.key_claim_tokens = diagnosis_core::domain::KeyClaimTokens::parse(tokens).unwrap();
    })
    .await;
    Portal::new(&app.base_url, "first-portal-token-000000")
        .issue_code()
        .await
        .unwrap();
    Portal::new(&app.base_url, "second-portal-token-11111")
        .issue_code()
        .await
        .unwrap();
    let client = app.db.client().await;
    let labels: Vec<String> = client
        .query(
            "SELECT originator FROM encryption_keys ORDER BY originator",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(labels, vec!["ON", "QC"]);
}

/// `POST /new-key-claim/{id}`: the status and the code (without its newline).
async fn regenerate(portal: &Portal, id: &str) -> (u16, String) {
    let reply = portal.request_code(Some(id)).await.unwrap();
    (reply.status.as_u16(), reply.text().trim_end().to_owned())
}

/// An upload of three keys from `phone`: its status and error code.
async fn upload_from(app: &TestApp, phone: &Phone) -> (u16, Option<i32>) {
    let now = app.now_unix();
    let reply = phone
        .upload(&upload_of(app_keys(now, 3), now))
        .await
        .unwrap();
    (reply.status.as_u16(), reply.response.error)
}

const UPLOADED: (u16, Option<i32>) = (200, Some(UploadCode::None as i32));
const NO_KEYPAIR: (u16, Option<i32>) = (401, Some(UploadCode::InvalidKeypair as i32));

async fn event_counts(app: &TestApp) -> Vec<(String, i32)> {
    app.db.event_counts(None).await
}

#[tokio::test]
async fn an_unused_keypair_is_given_back_once_claimed_longer_than_the_recovery_window() {
    let app = TestApp::spawn().await;
    let portal = app.portal();
    let id = hash_id('r');
    let (_, first) = regenerate(&portal, &id).await;
    let mut lost = app.phone();
    assert_eq!(lost.claim(&first).await.unwrap().status, 200);

    // Exactly CLAIM_RECOVERY_MINUTES after the claim: still the app's.
    app.clock.advance(chrono::Duration::minutes(10));
    let before = app.db.snapshot().await;
    assert_eq!(regenerate(&portal, &id).await.0, 403);
    assert_eq!(app.db.snapshot().await, before);

    // A second later the unused keypair is given back and a new code issued.
    app.clock.advance(chrono::Duration::seconds(1));
    let (status, second) = regenerate(&portal, &id).await;
    assert_eq!(status, 200);
    assert_ne!(second, first);
    assert_eq!(upload_from(&app, &lost).await, NO_KEYPAIR);
    assert_eq!(lost.claim(&first).await.unwrap().status, 401);
    let mut phone = app.phone();
    assert_eq!(phone.claim(&second).await.unwrap().status, 200);
    assert_eq!(upload_from(&app, &phone).await, UPLOADED);
    assert_eq!(
        event_counts(&app).await,
        vec![
            ("OTKClaimed".to_owned(), 2),
            ("OTKGenerated".to_owned(), 1),
            ("OTKRegenerated".to_owned(), 1)
        ]
    );
}

#[tokio::test]
async fn a_keypair_that_received_an_upload_is_never_given_back() {
    let app = TestApp::spawn().await;
    let portal = app.portal();
    let id = hash_id('u');
    let (_, code) = regenerate(&portal, &id).await;
    let mut phone = app.phone();
    assert_eq!(phone.claim(&code).await.unwrap().status, 200);
    assert_eq!(upload_from(&app, &phone).await, UPLOADED);
    let before = app.db.snapshot().await;
    for later in [chrono::Duration::minutes(11), chrono::Duration::days(2)] {
        app.clock.advance(later);
        assert_eq!(regenerate(&portal, &id).await.0, 403, "after {later}");
    }
    assert_eq!(app.db.snapshot().await, before);
    assert_eq!(upload_from(&app, &phone).await, UPLOADED);
}

#[tokio::test]
async fn a_repeated_claim_starts_the_recovery_window_afresh() {
    let app = TestApp::spawn().await;
    let portal = app.portal();
    let id = hash_id('w');
    let (_, code) = regenerate(&portal, &id).await;
    let mut phone = app.phone();
    assert_eq!(phone.claim(&code).await.unwrap().status, 200);
    // The app heard its answer only now, eleven minutes later.
    app.clock.advance(chrono::Duration::minutes(11));
    assert_eq!(phone.claim(&code).await.unwrap().status, 200);
    assert_eq!(regenerate(&portal, &id).await.0, 403);
    app.clock
        .advance(chrono::Duration::minutes(10) + chrono::Duration::seconds(1));
    assert_eq!(regenerate(&portal, &id).await.0, 200);
}

#[tokio::test]
async fn a_regenerate_racing_a_claim_of_its_code_has_one_winner() {
    let app = TestApp::spawn().await;
    let portal = app.portal();
    let (mut claims_won, mut regenerates_won) = (0, 0);
    for round in 0..48 {
        let id = format!("{round:03}{}", "x".repeat(125));
        let (_, code) = regenerate(&portal, &id).await;
        let start = Arc::new(Barrier::new(2));
        // The claim has more to do before it reaches the row; starting the regenerate up to
        // a few milliseconds later sweeps the moments at which the two meet.
        let offset = std::time::Duration::from_micros(1000 * (round % 12));
        let regenerating = {
            let (portal, id, start) = (portal.clone(), id.clone(), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                tokio::time::sleep(offset).await;
                regenerate(&portal, &id).await.0
            })
        };
        let claiming = {
            let mut phone = app.phone();
            tokio::spawn(async move {
                start.wait().await;
                let status = phone.claim(&code).await.unwrap().status.as_u16();
                (status, phone)
            })
        };
        let regenerated = regenerating.await.unwrap();
        let (claimed, phone) = claiming.await.unwrap();
        // An app answered 200 must be able to upload, whoever else won.
        if claimed == 200 {
            assert_eq!(
                upload_from(&app, &phone).await,
                UPLOADED,
                "round {round}: the app was answered 200 and cannot upload (regenerate {regenerated})"
            );
        }
        match (regenerated, claimed) {
            (403, 200) => claims_won += 1,
            (200, 401) => regenerates_won += 1,
            other => panic!("round {round}: (regenerate, claim) = {other:?}, not one winner"),
        }
    }
    eprintln!("claims won {claims_won}, regenerates won {regenerates_won}");
}
