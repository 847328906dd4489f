//! `POST /new-key-claim[/{hashID}]` against a real database (DESIGN §3.1).

use diagnosis_core::domain::OneTimeCode;
use diagnosis_tests::app::{PORTAL_LABEL, PORTAL_TOKEN, TestApp};
use diagnosis_tests::simulator::Portal;
use hyper::Method;

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

    let client = app.db.client().await;
    let events: Vec<(String, i32)> = client
        .query(
            "SELECT identifier, count FROM events ORDER BY identifier",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
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
