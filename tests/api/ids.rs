//! Event ids belong to their caller: the same id sent by two callers is two events with
//! two `message_id`s (consumers drop redeliveries by it); sent again by the same caller it
//! is the same event; a keyed request retried after its answer was lost carries its first
//! ids.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;
use crate::webhooks::{now, signature};

const SHOP_SECRET: &str = "shop-webhook-secret";
const ORDER: &str = "order-42";
const GAME_SERVER: &str = "/game/server-7";

/// Everything on the family's queue once `expected` messages arrived, as (message_id,
/// body), in publish order.
async fn published(app: &TestApp, family: &str, expected: usize) -> Vec<(String, Value)> {
    let queue = app.queue(family);
    let mut messages = Vec::new();
    for _ in 0..expected {
        let delivery = app.next_message(&queue).await;
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string());
        let body = serde_json::from_slice(&delivery.data).unwrap();
        messages.push((message_id.unwrap_or_default(), body));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.depth(&queue).await,
        0,
        "no message beyond the expected ones"
    );
    messages
}

const JSON: &str = "application/json";

async fn post(
    app: &TestApp,
    (path, content_type): (&str, &str),
    token: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    app.post_as(path, content_type, token, headers, body).await
}

async fn send_webhook(app: &TestApp, webhook_id: &str, body: &Value) -> reqwest::Response {
    let body = serde_json::to_vec(body).unwrap();
    let timestamp = now();
    let signed = signature(SHOP_SECRET.as_bytes(), webhook_id, timestamp, &body);
    app.http
        .post(format!("{}/v1/webhooks/shop", app.base))
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signed)
        .body(body)
        .send()
        .await
        .expect("POST webhook")
}

/// The 202's body.
async fn accepted(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

/// As if the gateway had never recorded its answers (it lost them, or never got to).
async fn forget_answers(app: &TestApp) {
    sqlx::query("DELETE FROM idempotency_keys")
        .execute(&app.db().await)
        .await
        .unwrap();
}

fn distinct(ids: &[&str]) -> usize {
    ids.iter().collect::<HashSet<_>>().len()
}

#[tokio::test]
async fn a_player_cannot_take_the_id_a_backend_or_a_webhook_will_use() {
    let mut settings = test_settings();
    settings.webhook_secrets = format!("shop={SHOP_SECRET}").parse().unwrap();
    let app = spawn_app_with(settings).await;
    let client_id = Uuid::new_v4().to_string();
    let mut body = event("analytics.event_tracked");
    body["id"] = json!(client_id);
    let player = app.token("user-1", "events:publish:self");
    let receipts = [
        accepted(app.post_json("/v1/events", &player, &body).await).await,
        accepted(app.publish(&body).await).await,
        accepted(send_webhook(&app, "msg_1", &body).await).await,
    ];
    let messages = published(&app, "analytics", 3).await;
    let message_ids: Vec<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(distinct(&message_ids), 3, "three callers, three events");
    let callers = ["user-1", "game-backend", "webhook:shop"];
    for ((receipt, (message_id, envelope)), caller) in receipts.iter().zip(&messages).zip(callers) {
        assert_eq!(
            receipt["clientId"],
            client_id.as_str(),
            "{caller}'s receipt"
        );
        assert_eq!(Some(message_id.as_str()), receipt["id"].as_str());
        assert_eq!(envelope["id"], receipt["id"]);
        assert_eq!(envelope["metadata"]["source"], caller);
        assert_eq!(envelope["metadata"]["clientId"], client_id.as_str());
    }
}

#[tokio::test]
async fn the_same_cloud_event_from_three_callers_is_three_events_in_every_mode() {
    let app = spawn_app().await;
    let data = valid_data("analytics.event_tracked");
    let structured = json!({"specversion": "1.0", "id": ORDER, "source": GAME_SERVER,
        "type": "analytics.event_tracked", "data": data});
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", ORDER),
        ("ce-source", GAME_SERVER),
        ("ce-type", "analytics.event_tracked"),
    ];
    let player = app.token("user-1", "events:publish:self");
    let shop = app.token("shop-backend", "events:publish");
    let structured_mode = ("/v1/events", "application/cloudevents+json");
    let batch_mode = ("/v1/events/batch", "application/cloudevents-batch+json");
    let batch = json!([structured]);
    let backend = app.backend_token();
    let receipts = [
        accepted(post(&app, structured_mode, &player, &[], &structured).await).await,
        accepted(post(&app, ("/v1/events", JSON), &backend, &binary, &data).await).await,
        accepted(post(&app, batch_mode, &shop, &[], &batch).await).await["results"][0].clone(),
    ];
    let messages = published(&app, "analytics", 3).await;
    let message_ids: Vec<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(distinct(&message_ids), 3, "three callers, three events");
    let callers = ["user-1", "game-backend", "shop-backend"];
    for ((receipt, (message_id, envelope)), caller) in receipts.iter().zip(&messages).zip(callers) {
        assert_eq!(receipt["clientId"], ORDER, "{caller}'s receipt");
        assert_eq!(Some(message_id.as_str()), receipt["id"].as_str());
        assert_eq!(envelope["metadata"]["source"], caller);
        let origin = &envelope["metadata"]["cloudEvent"];
        assert_eq!(
            (&origin["source"], &origin["id"]),
            (&json!(GAME_SERVER), &json!(ORDER))
        );
    }
}

#[tokio::test]
async fn the_same_caller_sending_its_id_again_gets_the_same_event_even_when_its_answer_was_lost() {
    let app = spawn_app().await;
    let client_id = Uuid::new_v4().to_string();
    let mut body = event("analytics.event_tracked");
    body["id"] = json!(client_id);
    let first = accepted(app.publish(&body).await).await;
    assert_eq!(first["clientId"], client_id.as_str());
    let again = app.publish(&body).await;
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(accepted(again).await, first);
    let (message_id, _) = published(&app, "analytics", 1).await.remove(0);
    assert_eq!(
        Some(message_id.as_str()),
        first["id"].as_str(),
        "published once"
    );

    forget_answers(&app).await;
    let retry = app.publish(&body).await;
    assert_eq!(
        header(&retry, "idempotent-replayed"),
        "",
        "the answer is gone"
    );
    assert_eq!(accepted(retry).await["id"], first["id"]);
    let (copy, _) = published(&app, "analytics", 1).await.remove(0);
    assert_eq!(copy, message_id, "a second copy, with the same message_id");
}

/// A single, a typed and a batch publish, each with its own `Idempotency-Key` and no ids;
/// the event ids of their receipts.
async fn publish_keyed(app: &TestApp, token: &str) -> Vec<Value> {
    let keyed = |key| [("Idempotency-Key", key)];
    let single = event("analytics.event_tracked");
    let typed = ("/v1/events/analytics.event_tracked", JSON);
    let data = valid_data("analytics.event_tracked");
    let batch = json!({"events": [single, single]});
    let responses = [
        post(app, ("/v1/events", JSON), token, &keyed("click-1"), &single).await,
        post(app, typed, token, &keyed("click-2"), &data).await,
        post(
            app,
            ("/v1/events/batch", JSON),
            token,
            &keyed("click-3"),
            &batch,
        )
        .await,
    ];
    let mut ids = Vec::new();
    for response in responses {
        assert_eq!(header(&response, "idempotent-replayed"), "", "not a replay");
        let receipt = accepted(response).await;
        match receipt["results"].as_array() {
            Some(results) => ids.extend(results.iter().map(|r| r["id"].clone())),
            None => ids.push(receipt["id"].clone()),
        }
    }
    ids
}

#[tokio::test]
async fn a_keyed_request_retried_after_its_answer_was_lost_carries_the_same_message_ids() {
    let app = spawn_app().await;
    let first = publish_keyed(&app, &app.backend_token()).await;
    forget_answers(&app).await;
    let retried = publish_keyed(&app, &app.backend_token()).await;
    assert_eq!(retried, first, "the retry's receipts name the first ids");
    let first: Vec<&str> = first.iter().filter_map(Value::as_str).collect();
    assert_eq!(distinct(&first), 4);
    let message_ids: Vec<String> = published(&app, "analytics", 8)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(message_ids[..4], first, "the first try");
    assert_eq!(
        message_ids[4..],
        first,
        "its retry, with the same message_ids"
    );

    let player = app.token("user-1", "events:publish:self");
    let theirs = publish_keyed(&app, &player).await;
    let theirs: Vec<&str> = theirs.iter().filter_map(Value::as_str).collect();
    assert_eq!(
        distinct(&[first, theirs].concat()),
        8,
        "another caller's keys are its own"
    );
}
