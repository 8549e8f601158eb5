//! What an answer promises when the gateway cannot learn in time whether an event was
//! taken: `outcome-unknown` naming the events, never a refusal for an event that then goes
//! out; a COMMIT whose connection died is written again rather than taken for a failure;
//! and a row left by a request that failed does not hold its user's events for long.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{
    TestApp, event, eventually, problem, spawn_app_with, test_settings, through_broker_proxy,
    through_db_proxy,
};
use crate::proxy::Proxy;

const OUTCOME_UNKNOWN: &str = "urn:problem:event-gateway:outcome-unknown";

/// The ids an `outcome-unknown` answer names (and that it is one).
async fn unknown_ids(response: reqwest::Response) -> Vec<String> {
    let (status, body) = problem(response).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], OUTCOME_UNKNOWN, "{body}");
    body["eventIds"]
        .as_array()
        .expect("eventIds")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect()
}

/// Waits until the message with `id` arrives on `queue`, skipping others.
async fn arrives(app: &TestApp, queue: &str, id: &str) {
    eventually(Duration::from_secs(20), || async {
        let message = tokio::time::timeout(Duration::from_secs(1), app.next_message(queue)).await;
        message.is_ok_and(|m| serde_json::from_slice::<Value>(&m.data).unwrap()["id"] == id)
    })
    .await;
}

#[tokio::test]
async fn a_request_timing_out_while_its_event_may_go_out_says_outcome_unknown() {
    let broker = Proxy::start("127.0.0.1:5672").await;
    let mut settings = through_broker_proxy(test_settings(), &broker);
    settings.request_timeout = Duration::from_millis(800);
    let app = spawn_app_with(settings).await;
    broker.stall();
    let response = app.publish(&event("analytics.event_tracked")).await;
    let ids = unknown_ids(response).await;
    assert_eq!(ids.len(), 1, "the one event it handed over");
    broker.restore();
    // It was sent before the answer: once the broker hears it, it is delivered, so a
    // refusal would have been untrue.
    arrives(&app, &app.queue("analytics"), &ids[0]).await;
}

#[tokio::test]
async fn a_critical_event_whose_commit_hangs_past_the_deadline_is_unknown_then_kept() {
    let database = Proxy::start("127.0.0.1:5432").await;
    let mut settings = through_db_proxy(test_settings(), &database);
    settings.request_timeout = Duration::from_millis(800);
    let app = spawn_app_with(settings).await;
    database.stall();
    let ids = unknown_ids(app.publish(&event("achievement.completed")).await).await;
    database.restore();
    arrives(&app, &app.queue("achievement"), &ids[0]).await;
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM events WHERE id = $1::uuid")
        .bind(&ids[0])
        .fetch_optional(&app.db().await)
        .await
        .unwrap();
    assert!(
        state.is_some(),
        "the row committed after the answer is kept"
    );
}

#[tokio::test]
async fn a_commit_whose_connection_is_cut_in_flight_is_looked_up_and_accepted() {
    let database = Proxy::start("127.0.0.1:5432").await;
    let app = spawn_app_with(through_db_proxy(test_settings(), &database)).await;
    // The server gets the COMMIT and commits; the gateway never hears the answer.
    database.cut_after_next(b"COMMIT\0");
    let response = app.publish(&event("achievement.completed")).await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let receipt: Value = response.json().await.unwrap();
    let id = receipt["id"].as_str().unwrap().to_owned();
    arrives(&app, &app.queue("achievement"), &id).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

/// A critical event for `user`, told apart by `name`.
fn achievement(user: &str, name: &str) -> Value {
    let mut body = event("achievement.completed");
    body["data"]["userId"] = user.into();
    body["data"]["name"] = name.into();
    body
}

#[tokio::test]
async fn a_row_left_leased_by_a_failed_request_holds_its_user_only_briefly() {
    let broker = Proxy::start("127.0.0.1:5672").await;
    let database = Proxy::start("127.0.0.1:5432").await;
    let settings = through_db_proxy(through_broker_proxy(test_settings(), &broker), &database);
    let app = spawn_app_with(settings).await;
    broker.stall();
    let first = tokio::spawn({
        let (http, base, token) = (app.http.clone(), app.base.clone(), app.backend_token());
        async move {
            let url = format!("{base}/v1/events");
            let body = achievement("dora", "first");
            http.post(url).bearer_auth(token).json(&body).send().await
        }
    });
    // Committed and sent; the confirm will not come, and the row cannot be handed back.
    tokio::time::sleep(Duration::from_millis(700)).await;
    database.cut().await;
    let first = first.await.unwrap().unwrap();
    assert_eq!(
        first.status(),
        202,
        "the row was committed: {:?}",
        first.text().await
    );
    let first: Value = first.json().await.unwrap();
    database.restore();
    broker.restore();
    app.wait_until_ready().await;
    // Refusals while the database's circuit cools down publish nothing: retried.
    let mut second = app.publish(&achievement("dora", "second")).await;
    for _ in 0..50 {
        if second.status() != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        second = app.publish(&achievement("dora", "second")).await;
    }
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await.unwrap();
    // The first row's lease (the confirm timeout and a margin) ends; then both go out,
    // in order. With a 30 s lease this took half a minute.
    let queue = app.queue("achievement");
    let started = std::time::Instant::now();
    arrives(&app, &queue, first["id"].as_str().unwrap()).await;
    arrives(&app, &queue, second["id"].as_str().unwrap()).await;
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the user's events waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_confirmed_event_whose_mark_failed_is_marked_later_and_not_sent_again() {
    let database = Proxy::start("127.0.0.1:5432").await;
    let app = spawn_app_with(through_db_proxy(test_settings(), &database)).await;
    database.cut_after_next(b"UPDATE events SET state = 'published'");
    let response = app.publish(&achievement("erin", "marked")).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let db = app.db().await;
    eventually(Duration::from_secs(5), || async {
        let state: String = sqlx::query_scalar("SELECT state FROM events WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&db)
            .await
            .unwrap();
        state == "published"
    })
    .await;
    // Past the request's lease: the relay found nothing left to publish again.
    tokio::time::sleep(app.settings.amqp_confirm_timeout + Duration::from_secs(3)).await;
    assert_eq!(app.depth(&app.queue("achievement")).await, 1, "one copy");
}

#[tokio::test]
async fn an_accepted_event_whose_queue_was_deleted_waits_for_it_and_is_not_dropped() {
    let app = spawn_app_with(test_settings()).await;
    let queue = app.queue("quest");
    app.broker
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    // A row the outbox owes the broker, as a 202 "queued" leaves it.
    let id = uuid::Uuid::now_v7();
    let mut body = event("quest.started");
    body["id"] = id.to_string().into();
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, ordering_key, correlation_id, timestamp_secs, body, critical)
         VALUES ($1, 'quest.started', 'user-1', 'c', 0, $2, false)",
    )
    .bind(id)
    .bind(serde_json::to_vec(&body).unwrap())
    .execute(&app.db().await)
    .await
    .unwrap();
    // The relay finds it unroutable, more than once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(parked, 0, "an accepted event is not given up on");
    app.topology.declare(&app.broker).await.unwrap();
    arrives(&app, &queue, &id.to_string()).await;
}

#[tokio::test]
async fn a_retried_critical_event_with_its_own_id_gets_202_and_goes_out_once() {
    let app = spawn_app_with(test_settings()).await;
    let mut item = achievement("fay", "retried");
    item["id"] = uuid::Uuid::new_v4().to_string().into();
    // A batch keeps no idempotency answer for its items' ids: the retry reaches the outbox.
    let batch = serde_json::json!({"events": [item]});
    let token = app.backend_token();
    let first: Value = app
        .post_json("/v1/events/batch", &token, &batch)
        .await
        .json()
        .await
        .unwrap();
    let retry = app.post_json("/v1/events/batch", &token, &batch).await;
    assert_eq!(retry.status(), 202, "an accepted event is no conflict");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["results"][0]["id"], first["results"][0]["id"]);
    let queue = app.queue("achievement");
    arrives(&app, &queue, first["results"][0]["id"].as_str().unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.depth(&queue).await, 0, "published once");
}
