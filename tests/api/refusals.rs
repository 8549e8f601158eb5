//! Input that PostgreSQL would refuse is the client's error: a 4xx naming the field,
//! before any query, and never a failure of the database in its circuit breaker.

use event_gateway::store::StoreError;
use serde_json::{Value, json};

use crate::helpers::*;

async fn list_dead_letters(app: &TestApp, query: &str) -> reqwest::Response {
    app.http
        .get(format!("{}/v1/dead-letters{query}", app.base))
        .bearer_auth(app.token("ops", "admin"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_nul_in_a_query_parameter_is_a_400_and_the_database_stays_trusted() {
    let app = spawn_app().await;
    for _ in 0..10 {
        let (status, body) = problem(list_dead_letters(&app, "?routingKey=%00").await).await;
        assert_eq!(status, 400);
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("routingKey") && detail.contains("NUL"),
            "{detail}"
        );
    }
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["postgres"]["connected"], true);
    assert_eq!(health["postgres"]["circuit"], "closed");
    let response = app.publish(&event("achievement.completed")).await;
    assert_eq!(response.status(), 202, "critical events are still taken");
    let listed = list_dead_letters(&app, "?routingKey=quest.started").await;
    assert_eq!(listed.status(), 200, "a clean filter is read as before");
}

#[tokio::test]
async fn a_nul_anywhere_in_an_event_is_a_422_at_its_pointer_and_nothing_is_published() {
    let app = spawn_app().await;
    let mut nested = event("achievement.completed");
    nested["data"]["metadata"] = json!({"level": 3, "note": "before\u{0}after"});
    let (status, body) = problem(app.publish(&nested).await).await;
    assert_eq!(status, 422);
    assert_eq!(pointers(&body), vec!["/data/metadata/note"]);

    let cloud_event = json!({"specversion": "1.0", "id": "ce-1", "source": "/game",
        "type": "reward.claimed", "subject": "player\u{0}", "data": valid_data("reward.claimed")});
    let response = app
        .http
        .post(format!("{}/v1/events", app.base))
        .bearer_auth(app.backend_token())
        .header("content-type", "application/cloudevents+json")
        .body(cloud_event.to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = problem(response).await;
    assert_eq!(status, 422);
    assert_eq!(pointers(&body), vec!["/subject"]);

    assert_eq!(app.total_depth().await, 0, "nothing on the bus");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing persisted");
}

#[tokio::test]
async fn the_store_tells_values_it_refuses_from_a_database_in_trouble() {
    let app = spawn_app().await;
    let pool = app.db().await;
    let nul_text = sqlx::query("SELECT $1::text")
        .bind("a\0b")
        .execute(&pool)
        .await
        .unwrap_err();
    let nul_json = sqlx::query("SELECT $1::jsonb")
        .bind(sqlx::types::Json(json!({"note": "a\u{0}b"})))
        .execute(&pool)
        .await
        .unwrap_err();
    for refused in [nul_text, nul_json] {
        let error = StoreError::from(refused);
        assert!(matches!(error, StoreError::Refused(_)), "{error}");
    }
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query("SET statement_timeout = 10")
        .execute(&mut *connection)
        .await
        .unwrap();
    let timed_out = sqlx::query("SELECT pg_sleep(1)")
        .execute(&mut *connection)
        .await
        .unwrap_err();
    let error = StoreError::from(timed_out);
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
}
