//! The operator's kit: the dashboard and the alerting rules in deploy/ query only metrics
//! the gateway exports, counters exist at zero from the start, every route has its own
//! label, and `/health` reports the gateway's own cache hit rate and cannot be made to
//! load the dependencies.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use event_gateway::domain::EventType;
use event_gateway::runtime::metrics::{Label, PublishOutcome};
use serde_json::Value;

use crate::helpers::*;
use crate::proxy::Proxy;

const DASHBOARD: &str = "deploy/grafana/event-gateway.json";
const ALERTS: &str = "deploy/prometheus/alerts.yml";

fn deploy_file(path: &str) -> String {
    let path = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The metric names a PromQL expression (or a Grafana variable query) names.
fn metric_names(expr: &str) -> impl Iterator<Item = String> + '_ {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("gateway_") || word.starts_with("process_"))
        .map(str::to_owned)
}

/// Every PromQL string in the dashboard: panel targets and variable queries.
fn dashboard_queries(value: &Value, queries: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match (key.as_str(), field) {
                    ("expr" | "query" | "definition", Value::String(text)) => {
                        queries.push(text.clone());
                    }
                    _ => dashboard_queries(field, queries),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| dashboard_queries(item, queries)),
        _ => {}
    }
}

/// The `expr` of every rule (the file keeps each on one line).
fn alert_queries(rules: &str) -> Vec<String> {
    let queries: Vec<String> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .map(|expr| expr.trim().to_owned())
        .collect();
    let alerts = rules
        .lines()
        .filter(|line| line.trim().starts_with("- alert:"))
        .count();
    assert_eq!(queries.len(), alerts, "one single-line expr per alert");
    assert!(queries.iter().all(|expr| !expr.is_empty() && expr != "|"));
    queries
}

/// Whether the exposition has `name`: as declared, or as a histogram's series.
fn exported(exposition: &str, name: &str) -> bool {
    let declared = |name: &str, kind: &str| {
        exposition
            .lines()
            .any(|line| line.starts_with(&format!("# TYPE {name} {kind}")))
    };
    declared(name, "")
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| declared(base, "histogram"))
        })
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_query_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(&deploy_file(DASHBOARD)).expect("dashboard JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    queries.extend(alert_queries(&deploy_file(ALERTS)));
    let names: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    for expected in [
        "gateway_queue_messages",
        "gateway_outbox_depth",
        "process_open_fds",
    ] {
        assert!(names.contains(expected), "{expected} among {names:?}");
    }

    let app = spawn_app().await;
    // The queue gauges are refreshed in the background, every few seconds.
    let mut missing = Vec::new();
    for _ in 0..150 {
        let text = app.get("/metrics").await.text().await.unwrap();
        missing = names.iter().filter(|name| !exported(&text, name)).collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(missing.is_empty(), "not in /metrics: {missing:?}");
}

#[tokio::test]
async fn counters_are_exported_at_zero_from_the_start() {
    let app = spawn_app().await;
    let text = app.get("/metrics").await.text().await.unwrap();
    let zero = |series: String| {
        assert!(
            text.lines().any(|line| line == format!("{series} 0")),
            "{series} 0 in\n{text}"
        );
    };
    for event_type in EventType::ALL {
        for outcome in PublishOutcome::ALL {
            zero(format!(
                r#"gateway_events_published_total{{outcome="{}",type="{}"}}"#,
                outcome.as_str(),
                event_type.as_str()
            ));
        }
    }
    for binding in app.topology.family_queues() {
        let queue = &binding.queue;
        zero(format!(r#"gateway_events_failed_total{{queue="{queue}"}}"#));
        zero(format!(r#"gateway_event_retries_total{{queue="{queue}"}}"#));
        for outcome in ["handled", "retried", "dead_lettered"] {
            zero(format!(
                r#"gateway_events_consumed_total{{outcome="{outcome}",queue="{queue}"}}"#
            ));
        }
    }
    for outcome in ["allowed", "limited"] {
        for store in ["redis", "lease", "local"] {
            zero(format!(
                r#"gateway_rate_limit_decisions_total{{outcome="{outcome}",store="{store}"}}"#
            ));
        }
    }
    for dependency in ["redis", "postgres"] {
        zero(format!(
            r#"gateway_circuit_open{{dependency="{dependency}"}}"#
        ));
    }
    for result in ["hit", "miss"] {
        zero(format!(
            r#"gateway_cache_lookups_total{{result="{result}"}}"#
        ));
    }
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(&format!("# TYPE {process} ")), "{process}");
    }
}

#[tokio::test]
async fn reading_an_event_is_counted_under_its_own_route() {
    let mut settings = test_settings();
    // A budget of one: the second read is refused by admission, before any handler.
    settings.rate_limit_rps = 1;
    settings.rate_limit_burst = 1;
    let app = spawn_app_with(settings).await;
    let reader = app.token("support", "events:read");
    let read = || {
        app.http
            .get(format!("{}/v1/events/{}", app.base, uuid::Uuid::new_v4()))
            .bearer_auth(&reader)
            .send()
    };
    assert_eq!(read().await.unwrap().status(), 404);
    assert_eq!(read().await.unwrap().status(), 429);
    // Another caller, with a budget of its own.
    assert_eq!(app.publish(&event("quest.started")).await.status(), 202);
    let text = app.get("/metrics").await.text().await.unwrap();
    for status in [404, 429] {
        let line = format!(
            r#"gateway_http_requests_total{{method="GET",route="/v1/events/{{id}}",status="{status}"}} 1"#
        );
        assert!(text.contains(&line), "{line} in {text}");
    }
    assert!(
        !text.contains(r#"method="GET",route="/v1/events/{type}""#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"gateway_http_requests_total{method="POST",route="/v1/events",status="202"} 1"#
        ),
        "{text}"
    );
}

async fn read_event(app: &TestApp, token: &str, id: &str) -> Value {
    let response = app
        .http
        .get(format!("{}/v1/events/{id}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn hit_rate(app: &TestApp) -> f64 {
    let health: Value = app.get("/health").await.json().await.unwrap();
    health["redis"]["hitRate"].as_f64().expect("hitRate")
}

#[tokio::test]
async fn health_reports_the_gateways_own_cache_hit_rate() {
    let app = spawn_app().await;
    assert_eq!(hit_rate(&app).await, 0.0, "nothing looked up yet");
    let accepted: Value = app
        .publish(&event("achievement.completed"))
        .await
        .json()
        .await
        .unwrap();
    let id = accepted["id"].as_str().expect("id").to_owned();
    let reader = app.token("support", "events:read");
    // Only a published event is cached; the first read of it is a miss that fills the cache.
    eventually(Duration::from_secs(10), || async {
        read_event(&app, &reader, &id).await["delivery"]["state"] == "published"
    })
    .await;
    read_event(&app, &reader, &id).await;

    let text = app.get("/metrics").await.text().await.unwrap();
    let hits = metric(&text, r#"gateway_cache_lookups_total{result="hit"}"#);
    let misses = metric(&text, r#"gateway_cache_lookups_total{result="miss"}"#);
    assert!(hits >= 1.0 && misses >= 1.0, "hits {hits}, misses {misses}");
    let rate = hit_rate(&app).await;
    assert!((rate - hits / (hits + misses)).abs() < 1e-9, "{rate}");
}

#[tokio::test]
async fn a_flood_of_health_calls_asks_redis_about_once_a_second() {
    let redis = Proxy::start("127.0.0.1:6379").await;
    let mut settings = test_settings();
    settings.redis_host = redis.addr.ip().to_string();
    settings.redis_port = redis.addr.port();
    // A fast machine floods past the per-address budget (2,000 + 1,000/s): the limiter is
    // not what this counts, and its own calls would go through the same proxy.
    settings.rate_limit_rps = 0;
    let app = spawn_app_with(settings).await;
    // The command as RESP writes it: `CLIENT SETINFO` at connect does not count.
    redis.count(b"$4\r\nINFO\r\n");
    let flood = Instant::now();
    let mut calls = 0;
    while flood.elapsed() < Duration::from_millis(2500) {
        let answers = futures_util::future::join_all((0..25).map(|_| app.get("/health"))).await;
        for answer in answers {
            assert_eq!(answer.status(), 200);
        }
        calls += 25;
    }
    let asked = redis.counted();
    // One check a second at most: 2.5 s of flood reach Redis three or four times.
    assert!(
        (1..=4).contains(&asked),
        "{calls} calls of /health asked Redis for INFO {asked} times"
    );
    assert!(calls >= 100, "the flood was only {calls} calls");
}
