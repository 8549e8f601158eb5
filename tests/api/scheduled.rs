//! Scheduled events (`deliverAt`): committed before the 202, on the bus at their time and
//! not before, seen and cancelled through the API, refused outside the window.

use std::time::Duration;

use lapin::options::BasicGetOptions;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

/// An RFC 3339 time `after` from now, in whole milliseconds (as the gateway answers them).
pub fn in_(after: Duration) -> String {
    let at = OffsetDateTime::now_utc() + after;
    let at = at.replace_nanosecond(at.millisecond() as u32 * 1_000_000);
    at.expect("a time").format(&Rfc3339).expect("format")
}

pub fn at(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &Rfc3339).expect("an RFC 3339 time")
}

/// A reward expiring for `user` at `deliver_at` (reward.expired is critical by default).
pub fn expiry(user: &str, reward: &str, deliver_at: &str) -> Value {
    json!({"type": "reward.expired", "deliverAt": deliver_at,
        "data": {"rewardId": reward, "userId": user, "name": "Gold", "type": "coins", "value": 5}})
}

/// Every message on `queue` until `count` arrived (or `limit` passed): the body and when it
/// was taken off the queue.
pub async fn collect(
    app: &TestApp,
    queue: &str,
    count: usize,
    limit: Duration,
) -> Vec<(Value, OffsetDateTime)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < count && tokio::time::Instant::now() < deadline {
        let message = app
            .broker
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        match message {
            Some(message) => {
                let body = serde_json::from_slice(&message.delivery.data).expect("JSON body");
                got.push((body, OffsetDateTime::now_utc()));
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    got
}

pub async fn read(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET")
}

pub async fn cancel(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    app.http
        .delete(format!("{}/v1/events/{id}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("DELETE")
}

pub async fn state_of(app: &TestApp, id: &str) -> Value {
    let reader = app.token("ops", "events:read");
    let response = read(app, &reader, &format!("/v1/events/{id}")).await;
    assert_eq!(response.status(), 200, "GET /v1/events/{id}");
    response.json::<Value>().await.expect("event")["delivery"].clone()
}

#[tokio::test]
async fn a_scheduled_event_is_published_at_its_time_and_not_before() {
    let app = spawn_app().await;
    let due = in_(Duration::from_secs(3));
    let response = app.publish(&expiry("user-7", "rew-9", &due)).await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.expect("receipt");
    assert_eq!(receipt["status"], "scheduled");
    assert_eq!(at(receipt["deliverAt"].as_str().unwrap()), at(&due));
    assert_eq!(receipt["persisted"], true);
    let id = receipt["id"].as_str().unwrap().to_owned();
    let delivery = state_of(&app, &id).await;
    assert_eq!(delivery["state"], "scheduled");
    assert_eq!(at(delivery["deliverAt"].as_str().unwrap()), at(&due));
    let reader = app.token("ops", "events:read");
    let listed: Value = read(&app, &reader, "/v1/users/user-7/events")
        .await
        .json()
        .await
        .expect("listing");
    assert_eq!(listed["events"][0]["id"], id.as_str());
    assert_eq!(listed["events"][0]["delivery"]["state"], "scheduled");

    let queue = app.queue("reward");
    let got = collect(&app, &queue, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "the event arrived");
    let (body, arrived) = &got[0];
    assert!(*arrived >= at(&due), "arrived {arrived}, before {due}");
    assert!(
        *arrived - at(&due) < time::Duration::seconds(2),
        "arrived {arrived}, long after {due}"
    );
    assert_eq!(body["id"], id.as_str());
    assert_eq!(
        at(body["metadata"]["scheduledFor"].as_str().unwrap()),
        at(&due)
    );
    eventually(Duration::from_secs(5), || async {
        state_of(&app, &id).await["state"] == "published"
    })
    .await;
    let again = collect(&app, &queue, 1, Duration::from_secs(1)).await;
    assert!(again.is_empty(), "published once");
}

#[tokio::test]
async fn a_batch_mixes_scheduled_and_immediate_events_and_keeps_a_users_order() {
    let app = spawn_app().await;
    let due = in_(Duration::from_secs(2));
    let batch = json!({"events": [
        expiry("user-1", "first", &due),
        event("reward.created"),
        expiry("user-1", "second", &due),
        expiry("user-1", "third", &due),
    ]});
    let response = app
        .post_json("/v1/events/batch", &app.backend_token(), &batch)
        .await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.expect("receipt");
    let statuses: Vec<&str> = receipt["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["scheduled", "published", "scheduled", "scheduled"]
    );
    let queue = app.queue("reward");
    let now = collect(&app, &queue, 1, Duration::from_secs(1)).await;
    assert_eq!(
        now[0].0["type"], "reward.created",
        "the immediate one is not held back"
    );
    let later = collect(&app, &queue, 3, Duration::from_secs(10)).await;
    let rewards: Vec<&str> = later
        .iter()
        .map(|(body, _)| body["data"]["rewardId"].as_str().unwrap())
        .collect();
    assert_eq!(
        rewards,
        ["first", "second", "third"],
        "in the order accepted"
    );
    assert!(later.iter().all(|(_, arrived)| *arrived >= at(&due)));
}

#[tokio::test]
async fn cloud_events_schedule_with_the_deliverat_extension_in_both_modes() {
    let app = spawn_app().await;
    let due = in_(Duration::from_secs(2));
    let data = valid_data("quest.started");
    let structured = json!({"specversion": "1.0", "id": "ce-1", "source": "/quests",
        "type": "quest.started", "deliverat": due, "data": data});
    let response = app
        .post_as(
            "/v1/events",
            "application/cloudevents+json",
            &app.backend_token(),
            &[],
            &structured,
        )
        .await;
    assert_eq!(response.status(), 202);
    let first: Value = response.json().await.expect("receipt");
    assert_eq!(first["status"], "scheduled");
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "ce-2"),
        ("ce-source", "/quests"),
        ("ce-type", "quest.started"),
        ("ce-deliverat", due.as_str()),
    ];
    let response = app
        .post_as(
            "/v1/events",
            "application/json",
            &app.backend_token(),
            &headers,
            &data,
        )
        .await;
    assert_eq!(response.status(), 202);
    let second: Value = response.json().await.expect("receipt");
    assert_eq!(second["status"], "scheduled");
    let queue = app.queue("quest");
    assert!(
        collect(&app, &queue, 1, Duration::from_millis(500))
            .await
            .is_empty()
    );
    let got = collect(&app, &queue, 2, Duration::from_secs(10)).await;
    let mut ids: Vec<&str> = got.iter().map(|(b, _)| b["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut sent = [
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    ];
    sent.sort_unstable();
    assert_eq!(ids, sent);
    assert!(got.iter().all(|(_, arrived)| *arrived >= at(&due)));
}

#[tokio::test]
async fn a_time_in_the_past_or_too_far_ahead_is_a_422_naming_it_and_schedules_nothing() {
    let mut settings = test_settings();
    settings.schedule_max_ahead = Duration::from_secs(3600);
    let app = spawn_app_with(settings).await;
    let past = in_(Duration::ZERO);
    let far = in_(Duration::from_secs(7200));
    let cases = [
        (
            "/v1/events",
            "application/json",
            expiry("u", "r", &past),
            "/deliverAt",
        ),
        (
            "/v1/events/batch",
            "application/json",
            json!({"events": [expiry("u", "ok", &in_(Duration::from_secs(60))),
                expiry("u", "r", &far)]}),
            "/events/1/deliverAt",
        ),
        (
            "/v1/events",
            "application/cloudevents+json",
            json!({"specversion": "1.0", "id": "x", "source": "/s", "type": "quest.started",
                "deliverat": far, "data": valid_data("quest.started")}),
            "/deliverat",
        ),
        (
            "/v1/events",
            "application/json",
            expiry("u", "r", "next friday"),
            "/deliverAt",
        ),
    ];
    for (path, content_type, body, pointer) in cases {
        let response = app
            .post_as(path, content_type, &app.backend_token(), &[], &body)
            .await;
        let (status, problem) = problem(response).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(pointers(&problem), [pointer], "{body}");
    }
    let reader = app.token("ops", "events:read");
    let listed: Value = read(&app, &reader, "/v1/users/u/events")
        .await
        .json()
        .await
        .expect("listing");
    assert_eq!(listed["events"], json!([]), "nothing was scheduled");
}

#[tokio::test]
async fn the_schedule_is_counted_in_health_and_metrics() {
    let app = spawn_app().await;
    let due = in_(Duration::from_secs(600));
    for reward in ["a", "b"] {
        assert_eq!(
            app.publish(&expiry("user-4", reward, &due)).await.status(),
            202
        );
    }
    eventually(Duration::from_secs(12), || async {
        let health: Value = app.get("/health").await.json().await.expect("health");
        health["scheduled"]["pending"] == 2
            && health["scheduled"]["overdue"] == 0
            && health["scheduled"]["nextDue"].as_str().map(at) == Some(at(&due))
    })
    .await;
    let text = app.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(
        metric(&text, "gateway_scheduled_events{state=\"scheduled\"}"),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "gateway_events_published_total{outcome=\"scheduled\",type=\"reward.expired\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn a_settled_event_is_dropped_after_the_idempotency_ttl() {
    let mut settings = test_settings();
    settings.idempotency_ttl = Duration::from_secs(1);
    let app = spawn_app_with(settings).await;
    let body = json!({"type": "quest.started", "deliverAt": in_(Duration::from_millis(1500)),
        "data": valid_data("quest.started")});
    let receipt: Value = app.publish(&body).await.json().await.expect("receipt");
    let id = receipt["id"].as_str().unwrap().to_owned();
    let pending = json!({"type": "quest.started", "deliverAt": in_(Duration::from_secs(600)),
        "data": valid_data("quest.started")});
    let pending: Value = app.publish(&pending).await.json().await.expect("receipt");
    let pending: uuid::Uuid = pending["id"].as_str().unwrap().parse().expect("uuid");
    assert_eq!(
        collect(&app, &app.queue("quest"), 1, Duration::from_secs(5))
            .await
            .len(),
        1
    );
    let db = app.db().await;
    let id: uuid::Uuid = id.parse().expect("uuid");
    // The table itself: a cached read of a published event may outlive its row.
    eventually(Duration::from_secs(15), || async {
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM scheduled_events WHERE event_id = $1")
                .bind(id)
                .fetch_one(&db)
                .await
                .expect("count");
        rows == 0
    })
    .await;
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM scheduled_events WHERE event_id = $1")
            .bind(pending)
            .fetch_one(&db)
            .await
            .expect("count");
    assert_eq!(waiting, 1, "an event still waiting for its time is kept");
}
