//! W3C trace context from the request to the message (directly and through the outbox),
//! and OTLP export of the spans. Export needs the process's one global subscriber, so that
//! test runs the gateway's binary as a child process, against a receiver inside the test.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use event_gateway::config::Settings;
use lapin::{Connection, ConnectionProperties};

use crate::helpers::{
    AMQP_URL, TEST_SECRET, TestApp, event, eventually, spawn_app, spawn_app_behind_proxy,
    test_settings,
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
}

async fn publish_traced(app: &TestApp, body: &Value, headers: &[(&str, &str)]) -> Value {
    let mut request = app
        .http
        .post(format!("{}/v1/events", app.base))
        .bearer_auth(app.backend_token())
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST");
    assert_eq!(response.status(), 202);
    response.json().await.expect("receipt")
}

fn header(delivery: &Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        _ => None,
    }
}

/// `00-<trace>-<parent>-<flags>` split in its four parts.
fn parts(traceparent: &str) -> Vec<String> {
    traceparent.split('-').map(str::to_owned).collect()
}

#[tokio::test]
async fn the_callers_trace_goes_on_with_the_gateways_span_as_parent() {
    let app = spawn_app().await;
    let headers = [
        ("traceparent", caller_traceparent()),
        ("tracestate", "vendor=opaque".to_owned()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    publish_traced(&app, &event("quest.created"), &headers).await;

    let message = app.next_message(&app.queue("quest")).await;
    let traceparent = header(&message, "traceparent").expect("a traceparent header");
    let parts = parts(&traceparent);
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], TRACE_ID, "the same trace");
    assert_ne!(
        parts[2], CALLER_SPAN,
        "the gateway's own span is the parent"
    );
    assert_eq!(parts[3], "01");
    assert_eq!(
        header(&message, "tracestate").as_deref(),
        Some("vendor=opaque")
    );
}

#[tokio::test]
async fn a_request_without_a_valid_traceparent_starts_a_trace() {
    let app = spawn_app().await;
    let all_zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    // A caller's state belongs to its trace: a new trace starts without one.
    let cases = [
        vec![],
        vec![("traceparent", all_zero), ("tracestate", "vendor=opaque")],
    ];
    for headers in cases {
        publish_traced(&app, &event("quest.created"), &headers).await;
        let message = app.next_message(&app.queue("quest")).await;
        let traceparent = header(&message, "traceparent").expect("a traceparent header");
        let parts = parts(&traceparent);
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!((parts[1].len(), parts[2].len()), (32, 16));
        assert_ne!(parts[1], "0".repeat(32));
        assert_eq!(parts[3], "01");
        assert_eq!(header(&message, "tracestate"), None);
    }
}

#[tokio::test]
async fn keyed_publishes_keep_the_trace_and_an_unbounded_state_is_dropped() {
    let app = spawn_app().await;
    let traceparent = caller_traceparent();
    let oversized = format!("vendor={}", "x".repeat(600));
    let headers = [
        ("traceparent", traceparent.as_str()),
        ("tracestate", oversized.as_str()),
        ("idempotency-key", "traced-once"),
    ];
    publish_traced(&app, &event("quest.created"), &headers).await;
    let message = app.next_message(&app.queue("quest")).await;
    let published = header(&message, "traceparent").expect("a traceparent header");
    assert_eq!(
        parts(&published)[1],
        TRACE_ID,
        "the same trace, though keyed"
    );
    assert_eq!(
        header(&message, "tracestate"),
        None,
        "over 512 bytes: dropped"
    );
}

#[tokio::test]
async fn an_event_held_in_the_outbox_leaves_with_its_trace() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    proxy.cut().await;
    let traceparent = caller_traceparent();
    let receipt = publish_traced(
        &app,
        &event("quest.created"),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(receipt["status"], "queued");
    let held: Option<String> = sqlx::query_scalar("SELECT traceparent FROM outbox")
        .fetch_one(&app.db().await)
        .await
        .expect("the outbox row");

    proxy.restore();
    let message = app.next_message(&app.queue("quest")).await;
    let published = header(&message, "traceparent").expect("a traceparent header");
    assert_eq!(Some(published.clone()), held, "as the row kept it");
    assert_eq!(parts(&published)[1], TRACE_ID);
}

/// Spans posted to `/v1/traces`, flattened from OTLP/JSON.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start(stop: CancellationToken) -> (Self, String) {
        let receiver = Receiver::default();
        let spans = receiver.spans.clone();
        let router = Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| async move {
                let export: Value = serde_json::from_slice(&body).unwrap_or_default();
                let found = flatten(&export);
                spans.lock().expect("spans").extend(found);
                "{}"
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        (receiver, format!("http://{addr}"))
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().expect("spans").clone()
    }
}

fn flatten(export: &Value) -> Vec<Value> {
    let each = |value: &Value, key: &str| value[key].as_array().cloned().unwrap_or_default();
    each(export, "resourceSpans")
        .iter()
        .flat_map(|resource| each(resource, "scopeSpans"))
        .flat_map(|scope| each(&scope, "spans"))
        .collect()
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|span| span["name"] == name && span["traceId"] == TRACE_ID)
        .collect()
}

#[tokio::test]
async fn spans_are_exported_over_otlp_with_their_parents() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (receiver, endpoint) = Receiver::start(stop).await;
    let mut settings = test_settings();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    settings.http_addr = ([127, 0, 0, 1], port).into();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_event-gateway"))
        .envs([
            ("HTTP_ADDR", settings.http_addr.to_string()),
            ("AMQP_URL", AMQP_URL.to_owned()),
            ("AMQP_EXCHANGE", settings.amqp_exchange.clone()),
            ("AMQP_QUEUE_PREFIX", settings.amqp_queue_prefix.clone()),
            ("DATABASE_URL", settings.database_url.expose().to_owned()),
            ("REDIS_KEY_PREFIX", settings.redis_key_prefix.clone()),
            ("JWT_SECRET", TEST_SECRET.to_owned()),
            ("DB_POOL_SIZE", "4".to_owned()),
            ("CONSUMERS_ENABLED", "true".to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info,tower_http=debug".to_owned()),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the gateway binary");
    let logs = read_lines(child.stdout.take().expect("stdout"));
    // The child process takes a moment to listen, longer while the suite runs.
    let addr = settings.http_addr;
    eventually(Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    let app = beside(settings).await;
    app.wait_until_ready().await;

    // reward.created is critical: it is committed (a commit span) before it is published.
    let traceparent = caller_traceparent();
    publish_traced(
        &app,
        &event("reward.created"),
        &[("traceparent", &traceparent)],
    )
    .await;

    eventually(Duration::from_secs(15), || async {
        let spans = receiver.spans();
        [
            "request", "validate", "commit", "publish", "confirm", "consume",
        ]
        .iter()
        .all(|name| !named(&spans, name).is_empty())
    })
    .await;
    let spans = receiver.spans();
    let request = named(&spans, "request")[0];
    assert_eq!(request["parentSpanId"], CALLER_SPAN);
    let consume = named(&spans, "consume")[0];
    let publisher = spans
        .iter()
        .find(|span| span["spanId"] == consume["parentSpanId"])
        .expect("the consumer's parent is a span of the gateway's");
    assert_eq!(publisher["traceId"], TRACE_ID);

    // The request's log lines carry its trace id.
    let _ = child.kill().await;
    let traced = logs.await.expect("the log reader").iter().any(|line| {
        let log: Value = serde_json::from_str(line).unwrap_or_default();
        log["span"]["name"] == "request" && log["span"]["trace_id"] == TRACE_ID
    });
    assert!(traced, "a request log line with its trace_id");
}

/// The child's stdout, read as it comes (so a full pipe never stalls it) until it ends.
fn read_lines(stdout: tokio::process::ChildStdout) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    })
}

/// A [`TestApp`] for a gateway running in another process: it talks to it, reads its
/// queues and cleans up after it, but does not run it.
async fn beside(settings: Settings) -> TestApp {
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("test connection to RabbitMQ");
    TestApp {
        base: format!("http://{}", settings.http_addr),
        http: reqwest::Client::new(),
        topology: event_gateway::topology(&settings),
        settings,
        broker: connection.create_channel().await.expect("channel"),
        shutdown: CancellationToken::new(),
        server: None,
        broker_connection: connection,
    }
}
