//! CloudEvents 1.0 over HTTP: structured, binary and batched modes.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

fn cloud_event(id: &str, event_type: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/game/server-7", "type": event_type,
        "time": "2026-11-26T10:00:00Z", "subject": "user-1", "sequence": 7, "traced": true,
        "datacontenttype": "application/json", "data": valid_data(event_type)})
}

async fn post(
    app: &TestApp,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> reqwest::Response {
    app.post_as(path, content_type, &app.backend_token(), headers, body)
        .await
}

async fn message_body(app: &TestApp, family: &str) -> Value {
    let delivery = app.next_message(&app.queue(family)).await;
    serde_json::from_slice(&delivery.data).unwrap()
}

#[tokio::test]
async fn structured_mode_publishes_under_the_callers_id_for_the_cloud_event_id() {
    let app = spawn_app().await;
    let id = Uuid::new_v4().to_string();
    let response = post(
        &app,
        "/v1/events",
        "application/cloudevents+json; charset=utf-8",
        &[],
        &cloud_event(&id, "quest.started"),
    )
    .await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["clientId"], id.as_str());
    let body = message_body(&app, "quest").await;
    assert_eq!(body["id"], receipt["id"]);
    assert_eq!(body["type"], "quest.started");
    assert_eq!(body["data"], valid_data("quest.started"));
    assert_eq!(
        body["metadata"]["source"], "game-backend",
        "the CloudEvent source cannot impersonate the caller"
    );
    assert_eq!(
        body["metadata"]["cloudEvent"],
        json!({"id": id, "source": "/game/server-7", "time": "2026-11-26T10:00:00Z",
            "subject": "user-1"})
    );
}

#[tokio::test]
async fn binary_mode_reads_attributes_from_headers_and_data_from_the_body() {
    let app = spawn_app().await;
    let id = Uuid::new_v4().to_string();
    let response = post(
        &app,
        "/v1/events",
        "application/json",
        &[
            ("ce-specversion", "1.0"),
            ("ce-id", &id),
            ("ce-source", "urn:shop"),
            ("ce-type", "reward.claimed"),
        ],
        &valid_data("reward.claimed"),
    )
    .await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["clientId"], id.as_str());
    let body = message_body(&app, "reward").await;
    assert_eq!(body["id"], receipt["id"]);
    assert_eq!(body["type"], "reward.claimed");
    assert_eq!(body["metadata"]["cloudEvent"]["source"], "urn:shop");
    assert_eq!(body["metadata"]["cloudEvent"]["id"], id.as_str());
}

#[tokio::test]
async fn batched_mode_publishes_each_in_order() {
    let app = spawn_app().await;
    let ids = [Uuid::new_v4().to_string(), Uuid::new_v4().to_string()];
    let batch = json!([
        cloud_event(&ids[0], "analytics.event_tracked"),
        cloud_event(&ids[1], "analytics.event_tracked"),
    ]);
    let response = post(
        &app,
        "/v1/events/batch",
        "application/cloudevents-batch+json",
        &[],
        &batch,
    )
    .await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    let receipts = receipt["results"].as_array().unwrap();
    let client_ids: Vec<&str> = receipts
        .iter()
        .map(|r| r["clientId"].as_str().unwrap())
        .collect();
    assert_eq!(client_ids, ids);
    for (id, receipt) in ids.iter().zip(receipts) {
        let body = message_body(&app, "analytics").await;
        assert_eq!(body["id"], receipt["id"]);
        assert_eq!(body["metadata"]["cloudEvent"]["id"], id.as_str());
    }
}

#[tokio::test]
async fn a_repeated_cloud_event_is_published_once_even_with_a_non_uuid_id() {
    let app = spawn_app().await;
    let event = cloud_event("order-42", "reward.claimed");
    let first = post(
        &app,
        "/v1/events",
        "application/cloudevents+json",
        &[],
        &event,
    )
    .await;
    assert_eq!(first.status(), 202);
    let receipt: Value = first.json().await.unwrap();
    let again = post(
        &app,
        "/v1/events",
        "application/cloudevents+json",
        &[],
        &event,
    )
    .await;
    assert_eq!(again.status(), 202);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(again.json::<Value>().await.unwrap(), receipt);
    let body = message_body(&app, "reward").await;
    assert_eq!(body["metadata"]["cloudEvent"]["id"], "order-42");
    assert_eq!(app.depth(&app.queue("reward")).await, 0, "published once");
}

/// A refused request's status and the pointers its problem names.
async fn refused(
    app: &TestApp,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Vec<String>) {
    let (status, answer) = problem(post(app, path, content_type, headers, body).await).await;
    (status, pointers(&answer))
}

#[tokio::test]
async fn bad_cloud_events_name_each_problem_and_publish_nothing() {
    let app = spawn_app().await;
    let structured = "application/cloudevents+json";
    let mut bad_data = cloud_event(&Uuid::new_v4().to_string(), "achievement.completed");
    bad_data["data"]["points"] = json!(-5);
    assert_eq!(
        refused(&app, "/v1/events", structured, &[], &bad_data).await,
        (422, vec!["/data/points".to_owned()])
    );

    let attributes = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
    ];
    let data = valid_data("quest.started");
    assert_eq!(
        refused(&app, "/v1/events", "application/json", &attributes, &data).await,
        (400, vec!["/headers/ce-type".to_owned()]),
        "missing ce-type"
    );

    let mut missing = cloud_event("2", "quest.started");
    missing.as_object_mut().unwrap().remove("source");
    missing.as_object_mut().unwrap().remove("specversion");
    let batch = json!([cloud_event("3", "quest.started"), missing]);
    let batched = "application/cloudevents-batch+json";
    assert_eq!(
        refused(&app, "/v1/events/batch", batched, &[], &batch).await,
        (400, vec!["/1/specversion".to_owned(), "/1/source".into()])
    );

    let unknown_type = cloud_event("4", "quest.exploded");
    assert_eq!(
        refused(&app, "/v1/events", structured, &[], &unknown_type).await,
        (422, vec!["/type".to_owned()])
    );
    assert_eq!(app.total_depth().await, 0);
}
