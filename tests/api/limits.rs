//! What a client can hold: body size, JSON depth, slow bodies, big heads, idle
//! connections. Each is refused without holding up anybody else.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn strict_app() -> TestApp {
    let mut settings = test_settings();
    settings.body_read_timeout = Duration::from_secs(1);
    settings.header_read_timeout = Duration::from_secs(1);
    spawn_app_with(settings).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Everything the server sends until it closes the connection; the test fails if it
/// keeps it open for `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    assert!(closed.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn oversized_and_deeply_nested_bodies_are_refused() {
    let app = spawn_app().await;
    let padding = "x".repeat(300 * 1024);
    let big = json!({"type": "analytics.event_tracked", "data": {"analyticsId": padding}});
    let (status, answer) = problem(app.publish(&big).await).await;
    assert_eq!(status, 413);
    assert!(answer["detail"].as_str().unwrap().contains("262144"));

    let deep = format!(
        r#"{{"type": "analytics.event_tracked", "data": {}{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    let response = app
        .http
        .post(format!("{}/v1/events", app.base))
        .bearer_auth(app.backend_token())
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    let (status, answer) = problem(response).await;
    assert_eq!(status, 400);
    assert_eq!(answer["title"], "JSON nested too deeply");

    assert_eq!(app.publish(&event("quest.started")).await.status(), 202);
    assert_eq!(
        app.total_depth().await,
        1,
        "only the good event was published"
    );
}

#[tokio::test]
async fn a_slow_body_is_answered_408_while_other_requests_flow() {
    let mut settings = test_settings();
    settings.body_read_timeout = Duration::from_secs(3);
    let app = spawn_app_with(settings).await;
    let mut slow = connect(&app).await;
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 200\r\n\r\n{{\"type\":",
        app.backend_token()
    );
    slow.write_all(head.as_bytes()).await.unwrap();

    // While that body trickles, everyone else is served.
    for _ in 0..3 {
        assert_eq!(app.publish(&event("quest.started")).await.status(), 202);
    }
    let mut nothing = [0u8; 1];
    assert!(
        slow.try_read(&mut nothing).is_err(),
        "the others were served while the slow body was still being waited for"
    );
    let answer = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("BODY_READ_TIMEOUT"), "{answer}");
    assert_eq!(app.total_depth().await, 3);
}

#[tokio::test]
async fn big_heads_slow_heads_and_idle_connections_are_cut() {
    let app = strict_app().await;
    let response = app
        .http
        .get(format!("{}/health/live", app.base))
        .header("x-padding", "y".repeat(32 * 1024))
        .send()
        .await
        .unwrap();
    let (status, answer) = problem(response).await;
    assert_eq!(status, 431);
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("MAX_HEADER_BYTES")
    );

    let mut idle = connect(&app).await;
    let mut slow_head = connect(&app).await;
    slow_head
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: gateway\r\n")
        .await
        .unwrap();
    assert_eq!(app.get("/health/live").await.status(), 200);
    read_until_closed(&mut idle, Duration::from_secs(5)).await;
    read_until_closed(&mut slow_head, Duration::from_secs(5)).await;
}
