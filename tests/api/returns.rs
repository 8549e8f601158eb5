//! Returned messages under load: with many publishes in flight on one channel, each answer
//! still tells the truth about its own event, whatever confirm its return came with.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use serde_json::{Value, json};

use crate::helpers::*;

/// The quest family's queue is deleted, so these are returned; the others are routed.
const UNROUTABLE: [&str; 2] = ["quest.completed", "quest.created"];
const ROUTABLE: [&str; 3] = [
    "achievement.completed",
    "reward.claimed",
    "analytics.event_tracked",
];
const CRITICAL: [&str; 3] = ["quest.completed", "achievement.completed", "reward.claimed"];
const PUBLISHES: usize = 800;

/// What the gateway answered for one event, found again by its unique `userId`.
struct Answer {
    event_type: &'static str,
    user_id: String,
    status: u16,
    body: Value,
}

#[tokio::test]
async fn every_answer_is_about_its_own_event_when_many_are_returned_at_once() {
    let mut settings = test_settings();
    settings.amqp_confirm_timeout = Duration::from_secs(20);
    let app = spawn_app_with(settings).await;
    app.broker
        .queue_delete(
            app.queue("quest").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .expect("delete the quest queue");

    let answers = publish_mixed(&app).await;
    let on_bus = drain(&app, &["achievement", "reward", "analytics"]).await;

    let mut accepted = 0;
    for answer in &answers {
        match answer.status {
            202 => {
                accepted += 1;
                let id = answer.body["id"].as_str().expect("the answer names its id");
                assert_eq!(
                    on_bus.get(&answer.user_id).map(String::as_str),
                    Some(id),
                    "a 202 for {} ({}) but that event is not on the bus",
                    answer.event_type,
                    answer.user_id,
                );
                if CRITICAL.contains(&answer.event_type) {
                    let read = app
                        .http
                        .get(format!("{}/v1/events/{id}", app.base))
                        .bearer_auth(app.token("reader", "events:read"))
                        .send()
                        .await
                        .expect("GET");
                    assert_eq!(read.status(), 200, "the row of critical event {id}");
                }
            }
            500 => {
                assert_eq!(
                    answer.body["title"], "Event could not be routed to any queue",
                    "{}",
                    answer.body
                );
                assert!(
                    !on_bus.contains_key(&answer.user_id),
                    "a 500 for {} ({}) but that event was delivered",
                    answer.event_type,
                    answer.user_id,
                );
            }
            other => panic!(
                "unexpected {other} for {}: {}",
                answer.event_type, answer.body
            ),
        }
    }
    assert_eq!(
        accepted,
        on_bus.len(),
        "nothing on the bus that was refused"
    );
    let unroutable = answers
        .iter()
        .filter(|a| UNROUTABLE.contains(&a.event_type))
        .count();
    assert_eq!(
        accepted,
        answers.len() - unroutable,
        "every routable event is accepted"
    );
}

/// Publishes routable and unroutable events, critical and not, all at once, each with a
/// `userId` of its own.
async fn publish_mixed(app: &TestApp) -> Vec<Answer> {
    let token = app.backend_token();
    let kinds: Vec<&'static str> = UNROUTABLE.iter().chain(&ROUTABLE).copied().collect();
    let requests = (0..PUBLISHES).map(|n| {
        let event_type = kinds[n % kinds.len()];
        let user_id = format!("returns-user-{n}");
        let mut data = valid_data(event_type);
        data["userId"] = json!(user_id);
        let body = json!({"type": event_type, "data": data});
        let token = token.clone();
        async move {
            let response = app.post_json("/v1/events", &token, &body).await;
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(Value::Null);
            Answer {
                event_type,
                user_id,
                status,
                body,
            }
        }
    });
    join_all(requests).await
}

/// Every message on these families' queues, as `userId` → event id.
async fn drain(app: &TestApp, families: &[&str]) -> HashMap<String, String> {
    let mut found = HashMap::new();
    for family in families {
        let queue = app.queue(family);
        while let Some(message) = app
            .broker
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let event: Value = serde_json::from_slice(&message.delivery.data).expect("JSON");
            let id = event["id"].as_str().expect("id").to_owned();
            let message_id = message.delivery.properties.message_id().clone();
            assert_eq!(message_id.map(|m| m.to_string()), Some(id.clone()));
            let user = event["data"]["userId"].as_str().expect("userId").to_owned();
            assert!(
                found.insert(user, id).is_none(),
                "each event is on the bus once"
            );
        }
    }
    found
}
