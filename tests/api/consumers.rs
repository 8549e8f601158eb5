use std::time::Duration;

use lapin::BasicProperties;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::proxy::Proxy;

/// Settings with consumers on and a quick retry schedule.
fn consuming(mut settings: event_gateway::config::Settings) -> event_gateway::config::Settings {
    settings.consumers_enabled = true;
    settings.consumer_prefetch = 1;
    settings.retry_initial_delay = Duration::from_millis(200);
    settings
}

async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

pub(crate) async fn set_keys(app: &TestApp, keys: &[&str]) {
    let mut redis = redis_connection().await;
    for key in keys {
        let _: () = redis::cmd("SET")
            .arg(format!("{}{key}", app.settings.redis_key_prefix))
            .arg("cached")
            .query_async(&mut redis)
            .await
            .unwrap();
    }
}

pub(crate) async fn existing(app: &TestApp, keys: &[&str]) -> Vec<String> {
    let mut redis = redis_connection().await;
    let mut found = Vec::new();
    for key in keys {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("{}{key}", app.settings.redis_key_prefix))
            .query_async(&mut redis)
            .await
            .unwrap();
        if exists {
            found.push((*key).to_owned());
        }
    }
    found
}

pub(crate) async fn dead_letters(app: &TestApp, query: &str) -> Value {
    let admin = app.token("ops", "admin");
    let response = app
        .http
        .get(format!("{}/v1/dead-letters{query}", app.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn replay(app: &TestApp, id: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/dead-letters/{id}/replay", app.base))
        .bearer_auth(app.token("ops", "admin"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_family_deletes_exactly_the_keys_of_its_rule() {
    let app = spawn_app_with(consuming(test_settings())).await;
    let cases: [(&str, Vec<&str>); 5] = [
        (
            "achievement.completed",
            vec![
                "achievements:ach-1",
                "achievements:user:user-1",
                "user_data:user-1",
                "user_events:user-1",
            ],
        ),
        (
            "quest.started",
            vec![
                "quests:quest-1",
                "quests:user:user-1",
                "user_data:user-1",
                "user_events:user-1",
            ],
        ),
        (
            "reward.claimed",
            vec![
                "rewards:user:user-1",
                "user_data:user-1",
                "user_events:user-1",
            ],
        ),
        (
            "notification.read",
            vec!["notifications:user:user-1", "user_events:user-1"],
        ),
        (
            "analytics.event_tracked",
            vec!["analytics:user:user-1", "user_events:user-1"],
        ),
    ];
    let bystanders = [
        "achievements:ach-2",
        "achievements:user:user-2",
        "quests:quest-2",
        "user_data:user-2",
        "rewards:user:user-2",
        "notifications:user:user-2",
        "analytics:user:user-2",
        "leaderboard:global",
    ];
    let all_rule_keys: Vec<&str> = cases
        .iter()
        .flat_map(|(_, keys)| keys.iter().copied())
        .collect();
    for (event_type, stale) in &cases {
        set_keys(&app, &all_rule_keys).await;
        set_keys(&app, &bystanders).await;
        assert_eq!(app.publish(&event(event_type)).await.status(), 202);
        eventually(Duration::from_secs(5), || async {
            existing(&app, stale).await.is_empty()
        })
        .await;
        let kept: Vec<&str> = all_rule_keys
            .iter()
            .copied()
            .filter(|k| !stale.contains(k))
            .collect();
        assert_eq!(
            existing(&app, &kept).await.len(),
            kept.len(),
            "{event_type} deleted only its keys"
        );
        assert_eq!(existing(&app, &bystanders).await.len(), bystanders.len());
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    let handled: f64 = cases
        .iter()
        .map(|(t, _)| {
            let queue = app.queue(t.split('.').next().unwrap());
            metric(
                &text,
                &format!(r#"gateway_events_consumed_total{{outcome="handled",queue="{queue}"}}"#),
            )
        })
        .sum();
    assert_eq!(handled, 5.0, "one handled message per event sent");
}

#[tokio::test]
async fn with_redis_cut_messages_retry_then_dead_letter_and_replay_once() {
    let redis_proxy = Proxy::start("127.0.0.1:6379").await;
    let mut settings = consuming(test_settings());
    settings.redis_host = redis_proxy.addr.ip().to_string();
    settings.redis_port = redis_proxy.addr.port();
    let app = spawn_app_with(settings).await;
    redis_proxy.cut().await;
    let first: Value = app
        .publish(&event("quest.started"))
        .await
        .json()
        .await
        .unwrap();
    let second: Value = app
        .publish(&event("quest.created"))
        .await
        .json()
        .await
        .unwrap();

    // Both are tried 4 times, the first and 3 retries (neither blocks the other), and land
    // in failed_events.
    eventually(Duration::from_secs(15), || async {
        dead_letters(&app, "").await["deadLetters"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let listed = dead_letters(&app, "?routingKey=quest.started").await;
    let letter = &listed["deadLetters"][0];
    assert_eq!(letter["eventId"], first["id"]);
    assert_eq!(letter["routingKey"], "quest.started");
    assert_eq!(letter["queue"], app.queue("quest"));
    assert_eq!(letter["attempts"], 4);
    assert!(
        letter["lastError"].as_str().unwrap().contains("redis"),
        "{letter}"
    );
    assert_eq!(letter["event"]["id"], first["id"]);
    assert!(letter["replayedAt"].is_null());
    let text = app.get("/metrics").await.text().await.unwrap();
    let quest = app.queue("quest");
    assert_eq!(
        metric(
            &text,
            &format!(r#"gateway_event_retries_total{{queue="{quest}"}}"#)
        ),
        6.0
    );
    assert_eq!(
        metric(
            &text,
            &format!(r#"gateway_events_failed_total{{queue="{quest}"}}"#)
        ),
        2.0
    );
    let _ = second;

    // /health answers, bounded, while Redis is unreachable.
    let bounded = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let health = bounded
        .get(format!("{}/health", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    assert_eq!(
        health.json::<Value>().await.unwrap()["redis"]["connected"],
        false
    );

    redis_proxy.restore();
    set_keys(&app, &["quests:quest-1", "user_data:user-1"]).await;
    let id = letter["id"].as_str().unwrap();
    assert_eq!(replay(&app, id).await.status(), 202);
    eventually(Duration::from_secs(10), || async {
        existing(&app, &["quests:quest-1", "user_data:user-1"])
            .await
            .is_empty()
    })
    .await;
    assert_eq!(
        problem(replay(&app, id).await).await.0,
        409,
        "a second replay publishes nothing"
    );
    let replayed = dead_letters(&app, "?replayed=true").await;
    assert_eq!(replayed["deadLetters"].as_array().unwrap().len(), 1);
    let text = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(
            &text,
            &format!(r#"gateway_events_consumed_total{{outcome="handled",queue="{quest}"}}"#)
        ),
        1.0,
        "the replay was handled once"
    );
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_at_once() {
    let app = spawn_app_with(consuming(test_settings())).await;
    app.broker
        .basic_publish(
            app.topology.exchange.as_str().into(),
            "reward.created".into(),
            Default::default(),
            b"this is not json",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(5), || async {
        !dead_letters(&app, "").await["deadLetters"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    let letter = dead_letters(&app, "").await["deadLetters"][0].clone();
    assert_eq!(letter["attempts"], 1, "not retried");
    assert_eq!(letter["routingKey"], "reward.created");
    assert!(letter["lastError"].as_str().unwrap().contains("not JSON"));
    assert_eq!(letter["event"], json!("this is not json"));
    let (status, _) = problem(
        app.http
            .get(format!("{}/v1/dead-letters", app.base))
            .bearer_auth(app.backend_token())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "dead letters need the admin scope");
}

#[tokio::test]
async fn a_replay_while_the_broker_is_down_is_held_in_the_outbox_and_published_on_its_return() {
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (app, broker) = spawn_app_behind_proxy().await;
    let (letter, event_id) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let body = json!({
        "id": event_id,
        "type": "quest.started",
        "data": {"questId": "quest-1", "userId": "user-1"},
        "metadata": {"correlationId": "corr-replayed", "userId": "user-1"},
    });
    sqlx::query(
        "INSERT INTO dead_letters (id, event_id, routing_key, queue, attempts, last_error, body,
                                   traceparent)
         VALUES ($1, $2, 'quest.started', 'quest_events', 3, 'redis: down', $3, $4)",
    )
    .bind(letter)
    .bind(event_id.to_string())
    .bind(body.to_string().into_bytes())
    .bind(TRACEPARENT)
    .execute(&app.db().await)
    .await
    .unwrap();

    broker.cut().await;
    let response = replay(&app, &letter.to_string()).await;
    assert_eq!(response.status(), 202, "safe in the outbox");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "queued");
    let text = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(
            &text,
            r#"gateway_events_published_total{outcome="queued",type="quest.started"}"#
        ),
        1.0,
        "a replay is counted like any event"
    );
    assert_eq!(
        problem(replay(&app, &letter.to_string()).await).await.0,
        409,
        "claimed once, even while it waits"
    );

    broker.restore();
    // The gateway reconnects, then the relay publishes what the outbox holds.
    let queue = app.queue("quest");
    eventually(Duration::from_secs(20), || async {
        app.depth(&queue).await == 1
    })
    .await;
    let message = app.next_message(&queue).await;
    let message_id = message
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string());
    assert_eq!(message_id, Some(event_id.to_string()), "the same event id");
    let published: Value = serde_json::from_slice(&message.data).unwrap();
    assert_eq!(published, body, "the same envelope");
    let traceparent = message
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("traceparent").cloned());
    assert_eq!(
        traceparent,
        Some(lapin::types::AMQPValue::LongString(TRACEPARENT.into())),
        "the trace it was first published in"
    );
}
