use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;
use crate::proxy::Proxy;

fn quest_progress(user: &str, progress: u32) -> Value {
    json!({"type": "quest.progress_updated",
        "data": {"questId": "q-1", "userId": user, "progress": progress}})
}

fn quest_completed(user: &str, quest: &str) -> Value {
    json!({"type": "quest.completed", "data": {"questId": quest, "userId": user}})
}

async fn state_of(app: &TestApp, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM events WHERE id = $1::uuid")
        .bind(id)
        .fetch_optional(&app.db().await)
        .await
        .unwrap()
}

async fn outbox_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.db().await)
        .await
        .unwrap()
}

/// Every message on `queue`, in order, as parsed bodies.
async fn drain(app: &TestApp, queue: &str, expected: usize) -> Vec<Value> {
    let mut bodies = Vec::new();
    for _ in 0..expected {
        let delivery = app.next_message(queue).await;
        bodies.push(serde_json::from_slice(&delivery.data).unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.depth(queue).await,
        0,
        "no message beyond the expected ones"
    );
    bodies
}

#[tokio::test]
async fn a_critical_event_is_kept_with_its_delivery_state_and_others_are_not() {
    let app = spawn_app().await;
    let critical: Value = app
        .publish(&event("achievement.completed"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(critical["status"], "published");
    assert_eq!(critical["persisted"], true);
    let id = critical["id"].as_str().unwrap();
    eventually(Duration::from_secs(5), || async {
        state_of(&app, id).await.as_deref() == Some("published")
    })
    .await;
    let published_at: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT published_at FROM events WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.db().await)
            .await
            .unwrap();
    assert!(published_at.is_some());
    assert_eq!(
        outbox_rows(&app).await,
        0,
        "a confirmed event leaves the outbox"
    );

    let plain: Value = app
        .publish(&event("quest.started"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plain["persisted"], false);
    assert_eq!(state_of(&app, plain["id"].as_str().unwrap()).await, None);

    let reader = app.token("support", "events:read");
    let response = app
        .http
        .get(format!("{}/v1/events/{id}", app.base))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stored: Value = response.json().await.unwrap();
    assert_eq!(stored["id"], id);
    assert_eq!(stored["type"], "achievement.completed");
    assert_eq!(stored["data"], valid_data("achievement.completed"));
    assert_eq!(stored["metadata"]["source"], "game-backend");
    assert_eq!(stored["delivery"]["state"], "published");
    let missing = app
        .http
        .get(format!(
            "{}/v1/events/{}",
            app.base,
            plain["id"].as_str().unwrap()
        ))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(missing).await.0,
        404,
        "non-critical events are not kept"
    );
}

#[tokio::test]
async fn while_the_broker_is_cut_events_queue_then_arrive_once_in_per_user_order() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    proxy.cut().await;
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    let mut slowest = Duration::ZERO;
    for step in 0..6 {
        for user in ["alice", "bob"] {
            let body = if step % 3 == 2 {
                quest_completed(user, &format!("q-{step}"))
            } else {
                quest_progress(user, step)
            };
            let started = Instant::now();
            let response = app.publish(&body).await;
            slowest = slowest.max(started.elapsed());
            assert_eq!(response.status(), 202);
            let receipt: Value = response.json().await.unwrap();
            assert_eq!(receipt["status"], "queued", "{receipt}");
            sent.entry(user.into())
                .or_default()
                .push(receipt["id"].as_str().unwrap().into());
        }
    }
    eprintln!("slowest 202 while the broker was cut: {slowest:?}");
    assert_eq!(outbox_rows(&app).await, 12);
    assert_eq!(
        app.depth(&app.queue("quest")).await,
        0,
        "nothing reached the broker"
    );

    proxy.restore();
    let bodies = drain(&app, &app.queue("quest"), 12).await;
    let mut arrived: HashMap<String, Vec<String>> = HashMap::new();
    for body in &bodies {
        let user = body["metadata"]["userId"].as_str().unwrap().to_owned();
        arrived
            .entry(user)
            .or_default()
            .push(body["id"].as_str().unwrap().into());
    }
    assert_eq!(
        arrived, sent,
        "each user's events arrive once, in the order they were sent"
    );
    eventually(Duration::from_secs(5), || async {
        outbox_rows(&app).await == 0
    })
    .await;
    for id in sent.values().flatten() {
        if let Some(state) = state_of(&app, id).await {
            assert_eq!(state, "published");
        }
    }
}

#[tokio::test]
async fn with_broker_and_database_both_cut_nothing_is_accepted_or_appears_later() {
    let broker = Proxy::start("127.0.0.1:5672").await;
    let database = Proxy::start("127.0.0.1:5432").await;
    let settings = through_db_proxy(through_broker_proxy(test_settings(), &broker), &database);
    let app = spawn_app_with(settings).await;
    broker.cut().await;
    database.cut().await;
    for body in [event("quest.started"), event("quest.completed")] {
        let response = app.publish(&body).await;
        assert_eq!(response.headers()["retry-after"], "5");
        assert_eq!(problem(response).await.0, 503);
    }
    broker.restore();
    database.restore();
    app.wait_until_ready().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.depth(&app.queue("quest")).await,
        0,
        "a 503 leaves nothing behind"
    );
    assert_eq!(outbox_rows(&app).await, 0);
}

#[tokio::test]
async fn clients_that_give_up_mid_flight_leave_the_pool_healthy() {
    let broker = Proxy::start("127.0.0.1:5672").await;
    let mut settings = through_broker_proxy(test_settings(), &broker);
    settings.db_pool_size = 2;
    let app = spawn_app_with(settings).await;
    broker.stall();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    for index in 0..8 {
        let gave_up = impatient
            .post(format!("{}/v1/events", app.base))
            .bearer_auth(app.backend_token())
            .json(&quest_completed("carol", &format!("q-{index}")))
            .send()
            .await;
        assert!(gave_up.is_err(), "the client timed out");
    }
    broker.restore();
    eventually(Duration::from_secs(15), || async {
        app.publish(&quest_completed("carol", "after"))
            .await
            .status()
            == 202
    })
    .await;

    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["postgres"]["connected"], true);
    let persisted: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert!(
        persisted >= 9,
        "requests that were dropped after their commit are still kept"
    );
    eventually(Duration::from_secs(15), || async {
        outbox_rows(&app).await == 0
    })
    .await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_answer_and_publishes_once() {
    let app = spawn_app().await;
    let send = |key: &'static str, body: Value| {
        app.http
            .post(format!("{}/v1/events", app.base))
            .bearer_auth(app.backend_token())
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = send("order-42", event("quest.started")).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let retry = send("order-42", event("quest.started")).await.unwrap();
    assert_eq!(retry.status(), 202);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry, first, "the retry gets the first answer");
    assert_eq!(drain(&app, &app.queue("quest"), 1).await.len(), 1);

    let mut other = event("quest.started");
    other["data"]["questId"] = json!("another");
    let (status, refusal) = problem(send("order-42", other).await.unwrap()).await;
    assert_eq!(status, 422);
    assert_eq!(pointers(&refusal), vec!["/headers/idempotency-key"]);
}

#[tokio::test]
async fn concurrent_duplicates_publish_once() {
    let app = spawn_app().await;
    let token = app.backend_token();
    let requests = (0..20).map(|_| {
        app.http
            .post(format!("{}/v1/events", app.base))
            .bearer_auth(&token)
            .header("Idempotency-Key", "same-click")
            .json(&event("reward.claimed"))
            .send()
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut ids = HashSet::new();
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 202);
        let receipt: Value = answer.json().await.unwrap();
        ids.insert(receipt["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "every duplicate got the first answer");
    assert_eq!(drain(&app, &app.queue("reward"), 1).await.len(), 1);
}

#[tokio::test]
async fn a_client_chosen_id_is_an_idempotency_key() {
    let app = spawn_app().await;
    let mut body = event("achievement.completed");
    body["id"] = json!(Uuid::new_v4().to_string());
    let first: Value = app.publish(&body).await.json().await.unwrap();
    let again = app.publish(&body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(drain(&app, &app.queue("achievement"), 1).await.len(), 1);
    body["data"]["points"] = json!(1);
    let (status, refusal) = problem(app.publish(&body).await).await;
    assert_eq!((status, pointers(&refusal)), (422, vec!["/id".to_owned()]));
}

#[tokio::test]
async fn two_gateways_drain_one_outbox_without_publishing_twice() {
    let shared = test_settings();
    let (proxy_a, proxy_b) = (
        Proxy::start("127.0.0.1:5672").await,
        Proxy::start("127.0.0.1:5672").await,
    );
    let a = spawn_app_with(through_broker_proxy(shared.clone(), &proxy_a)).await;
    let b = spawn_app_with(through_broker_proxy(shared.clone(), &proxy_b)).await;
    proxy_a.cut().await;
    proxy_b.cut().await;
    let mut expected = HashSet::new();
    for step in 0..40 {
        for (app, user) in [
            (&a, format!("user-{}", step % 5)),
            (&b, format!("user-{}", 5 + step % 5)),
        ] {
            let receipt: Value = app
                .publish(&quest_progress(&user, step))
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(receipt["status"], "queued");
            expected.insert(receipt["id"].as_str().unwrap().to_owned());
        }
    }
    let order: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT event_id, ordering_key FROM outbox ORDER BY seq")
            .fetch_all(&a.db().await)
            .await
            .unwrap();
    proxy_a.restore();
    proxy_b.restore();
    let bodies = drain(&a, &a.queue("quest"), 80).await;
    let arrived: Vec<String> = bodies
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        arrived.iter().cloned().collect::<HashSet<_>>(),
        expected,
        "each event exactly once"
    );
    let position: HashMap<&str, usize> = arrived
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut last_seen: HashMap<&str, usize> = HashMap::new();
    for (id, user) in &order {
        let at = position[id.to_string().as_str()];
        if let Some(previous) = last_seen.insert(user.as_str(), at) {
            assert!(previous < at, "{user}'s events arrived out of order");
        }
    }
}

#[tokio::test]
async fn an_outbox_event_that_can_never_be_published_stops_blocking_its_user() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    proxy.cut().await;
    // A row no broker can route (say, written by an older version with a retired type).
    let stuck = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, ordering_key, correlation_id, timestamp_secs, body, critical)
         VALUES ($1, 'quest.retired', 'user-1', 'c', 0, '{}', false)",
    )
    .bind(stuck)
    .execute(&app.db().await)
    .await
    .unwrap();
    let next: Value = app
        .publish(&event("notification.read"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["status"], "queued");
    proxy.restore();
    let delivered = drain(&app, &app.queue("notification"), 1).await;
    assert_eq!(
        delivered[0]["id"], next["id"],
        "the user's next event is not held back"
    );
    let parked: (String, String) =
        sqlx::query_as("SELECT queue, last_error FROM dead_letters WHERE event_id = $1")
            .bind(stuck.to_string())
            .fetch_one(&app.db().await)
            .await
            .unwrap();
    assert_eq!(parked.0, "outbox");
    assert!(parked.1.contains("quest.retired"), "{}", parked.1);
    eventually(Duration::from_secs(5), || async {
        outbox_rows(&app).await == 0
    })
    .await;
}
