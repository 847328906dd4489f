//! Operational endpoints, the `/events/...` metrics API, timeouts and graceful
//! shutdown (DESIGN §3.4, §7).

use std::time::Duration;

use base64::Engine;
use diagnosis_core::redacted::Redacted;
use diagnosis_submit::MetricsCredentials;
use diagnosis_tests::app::TestApp;
use diagnosis_tests::simulator::{app_keys, upload_of};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn services_answer_without_caching() {
    let app = TestApp::spawn().await;
    let client = app.phone().client;
    let ping = client
        .get(&format!("{}/services/ping", app.base_url))
        .await
        .unwrap();
    assert_eq!(
        (ping.status.as_u16(), ping.text()),
        (200, "OK\n".to_owned())
    );
    assert_eq!(ping.header("cache-control"), Some("no-store"));
    let present = client
        .get(&format!("{}/services/present", app.base_url))
        .await
        .unwrap();
    assert_eq!(present.status, 204);
    assert_eq!(present.header("cache-control"), Some("no-store"));
    let version = client
        .get(&format!("{}/services/version.json", app.base_url))
        .await
        .unwrap();
    assert_eq!(version.status, 200);
    assert_eq!(version.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&version.body).unwrap();
    assert!(
        json["branch"].is_string() && json["revision"].is_string(),
        "{json}"
    );
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Dates that are not `YYYY-MM-DD` (DESIGN §3.4), however a date parser might read them,
/// are a bad request: never a server error, never a database query. Years before 4713 BC
/// are dates to a parser but not to PostgreSQL.
#[tokio::test]
async fn the_events_api_answers_every_date_that_is_not_yyyy_mm_dd_as_a_bad_date() {
    let app = TestApp::spawn_with(|s| {
        s.metrics_credentials = Some(MetricsCredentials {
            username: Redacted::new("ops".into()),
            password: Redacted::new("metrics-password".into()),
        });
    })
    .await;
    let client = app.phone().client;
    let auth = basic("ops", "metrics-password");
    for report in ["/events/", "/events/uploads/", "/events/otkdurations/"] {
        for date in [
            "-4713-11-23",
            "-262143-01-01",
            "+262142-12-31",
            "12026-11-28",
            "2026-1-28",
            "2026-11-8",
            "2026-11-28x",
            "x2026-11-28",
            "2026-02-30",
        ] {
            let url = format!("{}{report}{date}", app.internal_url);
            let reply = client
                .send(
                    hyper::Method::GET,
                    &url,
                    &[("authorization", &auth)],
                    Vec::new(),
                )
                .await
                .unwrap();
            assert_eq!(
                (reply.status.as_u16(), reply.text()),
                (400, "date must be YYYY-MM-DD\n".to_owned()),
                "{report}{date}"
            );
        }
        let url = format!("{}{report}0001-01-01", app.internal_url);
        let reply = client
            .send(
                hyper::Method::GET,
                &url,
                &[("authorization", &auth)],
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            (200, "[]".to_owned())
        );
    }
}

#[tokio::test]
async fn the_events_api_reports_a_days_activity_behind_basic_auth() {
    let app = TestApp::spawn_with(|s| {
        s.metrics_credentials = Some(MetricsCredentials {
            username: Redacted::new("ops".into()),
            password: Redacted::new("metrics-password".into()),
        });
    })
    .await;
    let phone = app.claimed_phone().await;
    app.clock.advance(chrono::Duration::minutes(5));
    let now = app.now_unix();
    phone
        .upload(&upload_of(app_keys(now, 3), now))
        .await
        .unwrap();
    app.portal().issue_code().await.unwrap();

    let client = app.phone().client;
    let get = |path: &str, auth: Option<String>| {
        let client = client.clone();
        let url = format!("{}{path}", app.internal_url);
        async move {
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            client
                .send(hyper::Method::GET, &url, &headers, Vec::new())
                .await
                .unwrap()
        }
    };
    assert_eq!(get("/events/2026-11-28", None).await.status, 401);
    assert_eq!(
        get("/events/2026-11-28", Some(basic("ops", "wrong")))
            .await
            .status,
        401
    );
    let auth = Some(basic("ops", "metrics-password"));
    assert_eq!(get("/events/28-11-2026", auth.clone()).await.status, 400);

    let events = get("/events/2026-11-28", auth.clone()).await;
    assert_eq!(events.status, 200);
    let events: serde_json::Value = serde_json::from_slice(&events.body).unwrap();
    let counts: Vec<(String, i64)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["identifier"].as_str().unwrap().to_owned(),
                e["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![("OTKClaimed".into(), 1), ("OTKGenerated".into(), 2)]
    );
    assert_eq!(events[0]["source"], "ON");
    assert_eq!(events[0]["date"], "2026-11-28");

    let uploads: serde_json::Value =
        serde_json::from_slice(&get("/events/uploads/2026-11-28", auth.clone()).await.body)
            .unwrap();
    assert_eq!(
        uploads,
        serde_json::json!([{"source": "ON", "date": "2026-11-28", "keys": 3, "uploads": 1}])
    );

    let durations: serde_json::Value = serde_json::from_slice(
        &get("/events/otkdurations/2026-11-28", auth.clone())
            .await
            .body,
    )
    .unwrap();
    assert_eq!(
        durations,
        serde_json::json!([{"source": "ON", "date": "2026-11-28", "hours": 0, "count": 1}])
    );

    let nothing: serde_json::Value =
        serde_json::from_slice(&get("/events/2026-11-27", auth).await.body).unwrap();
    assert_eq!(nothing, serde_json::json!([]));
}

/// The day's counts of every event and claim latency, as the events API reads them.
async fn day_counts(app: &TestApp) -> (Vec<(String, i64)>, Vec<(i32, i64)>) {
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    let events = app.store.events_on(day).await.unwrap();
    let durations = app.store.otk_durations_on(day).await.unwrap();
    (
        events
            .into_iter()
            .map(|e| (e.identifier, e.count))
            .collect(),
        durations.into_iter().map(|d| (d.hours, d.count)).collect(),
    )
}

/// Requests append their events to a log that replicas fold into the daily tables (DESIGN §5):
/// the events API counts every event exactly once before, during and after folds, two replicas
/// folding at once included, and a fold empties the logs into the tables a release before the
/// log reads.
#[tokio::test]
async fn every_event_is_counted_once_whether_folded_or_not() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        app.claimed_phone().await;
    }
    app.portal().issue_code().await.unwrap();
    let expected = (
        vec![("OTKClaimed".to_owned(), 3), ("OTKGenerated".to_owned(), 4)],
        vec![(0, 3)],
    );
    assert_eq!(day_counts(&app).await, expected);

    let (first, second) = tokio::join!(app.store.fold_event_logs(), app.store.fold_event_logs());
    let folded = [first.unwrap(), second.unwrap()];
    assert!(
        folded.contains(&Some(3)),
        "one fold wrote the three daily rows: {folded:?}"
    );
    assert_eq!(day_counts(&app).await, expected);
    app.claimed_phone().await;
    assert_eq!(app.store.fold_event_logs().await.unwrap(), Some(3));

    let client = app.db.client().await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM event_log").await, 0);
    assert_eq!(count("SELECT count(*) FROM otk_life_duration_log").await, 0);
    assert_eq!(count("SELECT sum(count)::int8 FROM events").await, 4 + 5);
    assert_eq!(
        count("SELECT sum(count)::int8 FROM otk_life_duration").await,
        4
    );
    assert_eq!(
        day_counts(&app).await,
        (
            vec![("OTKClaimed".to_owned(), 4), ("OTKGenerated".to_owned(), 5)],
            vec![(0, 4)],
        )
    );
}

/// A transaction holding the day's counter rows (as a request of the release before this one
/// does until its commit is flushed, during a rolling release) holds up no code issued and no
/// claim: requests count their events in rows of their own (DESIGN §5).
#[tokio::test]
async fn a_days_counter_rows_held_by_another_transaction_hold_up_no_request() {
    let app = TestApp::spawn().await;
    let mut holder = app.db.client().await;
    let held = holder.transaction().await.unwrap();
    for (table, statement) in [
        (
            "events",
            "INSERT INTO events (identifier, source, date, count) VALUES \
                    ('OTKGenerated', 'ON', '2026-11-28', 1), ('OTKClaimed', 'ON', '2026-11-28', 1)",
        ),
        (
            "otk_life_duration",
            "INSERT INTO otk_life_duration (originator, date, hours, count) \
                               VALUES ('ON', '2026-11-28', 0, 1)",
        ),
    ] {
        held.execute(statement, &[])
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    let served = tokio::time::timeout(Duration::from_secs(3), async {
        let code = app.portal().issue_code().await.unwrap();
        let mut phone = app.phone();
        phone.claim(&code).await.unwrap().status
    })
    .await
    .expect("a request waited for the counter rows another transaction holds");
    assert_eq!(served, 200);
    held.commit().await.unwrap();
    assert_eq!(
        day_counts(&app).await,
        (
            vec![("OTKClaimed".to_owned(), 2), ("OTKGenerated".to_owned(), 2)],
            vec![(0, 2)],
        )
    );
}

#[tokio::test]
async fn the_events_api_is_closed_without_credentials() {
    let app = TestApp::spawn().await;
    let reply = app
        .phone()
        .client
        .send(
            hyper::Method::GET,
            &format!("{}/events/2026-11-28", app.internal_url),
            &[("authorization", &basic("", ""))],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let app = TestApp::spawn_with(|s| s.timeouts.header_read = Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /claim-key HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the server kept a half-sent request open");
}

#[tokio::test]
async fn a_body_that_never_arrives_is_a_bad_request() {
    let app = TestApp::spawn_with(|s| s.timeouts.body_read = Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /claim-key HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut buffer = vec![0_u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("the server answered")
        .unwrap();
    let head = String::from_utf8_lossy(&buffer[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let app = TestApp::spawn().await;
    let phone = app.claimed_phone().await;
    let now = app.now_unix();
    let body = phone
        .sealed_request(&upload_of(app_keys(now, 2), now))
        .unwrap();
    let body = diagnosis_proto::Message::encode_to_vec(&body);
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let db = std::sync::Arc::clone(&app.db);
    let base_url = app.base_url.clone();
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused once shutdown has begun...
    let refused = diagnosis_tests::http_client::HttpClient::new()
        .get(&format!("{base_url}/services/ping"))
        .await;
    assert!(
        refused.is_err(),
        "a new connection was accepted during shutdown"
    );
    // ...but the request in flight completes.
    stream.write_all(&body[10..]).await.unwrap();
    let mut buffer = vec![0_u8; 1024];
    let n = stream.read(&mut buffer).await.unwrap();
    let response = String::from_utf8_lossy(&buffer[..n]);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stopped")
        .unwrap();
    let client = db.client().await;
    let stored: i64 = client
        .query_one("SELECT count(*) FROM diagnosis_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 2);
}
