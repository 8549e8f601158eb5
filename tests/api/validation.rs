use serde_json::{Value, json};

use crate::helpers::*;

/// Posts `body`, expects `status` as problem+json, and checks nothing reached the bus.
async fn refused(app: &TestApp, body: &Value) -> (u16, Value) {
    let answer = problem(app.publish(body).await).await;
    assert_eq!(
        app.total_depth().await,
        0,
        "a refused event changes nothing"
    );
    answer
}

/// One bad `data` per rule of the field table: the type, the data, the field named.
pub fn refused_cases() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "reward.claimed",
            json!({"rewardId": "r", "userId": "u", "name": "a\u{0}b", "type": "coins", "value": 1}),
            "/data/name",
        ),
        (
            "achievement.created",
            json!({"achievementId": ""}),
            "/data/achievementId",
        ),
        (
            "achievement.created",
            json!({"achievementId": "a b"}),
            "/data/achievementId",
        ),
        (
            "achievement.created",
            json!({"achievementId": "x".repeat(129)}),
            "/data/achievementId",
        ),
        (
            "achievement.created",
            json!({"achievementId": "a", "points": -1}),
            "/data/points",
        ),
        (
            "achievement.created",
            json!({"achievementId": "a", "points": 2.5}),
            "/data/points",
        ),
        (
            "achievement.created",
            json!({"achievementId": "a", "progress": 100.5}),
            "/data/progress",
        ),
        (
            "achievement.created",
            json!({"achievementId": "a", "progress": "50"}),
            "/data/progress",
        ),
        (
            "achievement.created",
            json!({"achievementId": "a", "completedAt": "31/01/2026"}),
            "/data/completedAt",
        ),
        (
            "achievement.created",
            json!({"achievementId": "a", "name": 7}),
            "/data/name",
        ),
        (
            "achievement.created",
            json!({"achievementId": "a", "color": "red"}),
            "/data/color",
        ),
        ("achievement.created", json!({}), "/data/achievementId"),
        (
            "achievement.completed",
            json!({"achievementId": "a"}),
            "/data/userId",
        ),
        ("quest.started", json!({"questId": "q"}), "/data/userId"),
        (
            "quest.progress_updated",
            json!({"questId": "q", "userId": "u"}),
            "/data/progress",
        ),
        (
            "reward.claimed",
            json!({"rewardId": "r", "userId": "u", "name": "n", "type": "t"}),
            "/data/value",
        ),
        (
            "notification.read",
            json!({"notificationId": "n", "userId": "u", "title": "t", "type": "x"}),
            "/data/message",
        ),
        (
            "analytics.event_tracked",
            json!({"analyticsId": "a", "userId": "u", "type": "t",
            "category": "c", "event": "e", "value": "big"}),
            "/data/value",
        ),
        (
            "achievement.created",
            json!({"achievementId": "a", "metadata": {"a": {"b": {"c": {"d": {}}}}}}),
            "/data/metadata",
        ),
        (
            "achievement.created",
            json!({"achievementId": "a", "metadata": {"blob": "x".repeat(9000)}}),
            "/data/metadata",
        ),
    ]
}

#[tokio::test]
async fn every_rule_is_refused_with_its_pointer() {
    let app = spawn_app().await;
    let cases = refused_cases();
    for (event_type, data, pointer) in cases {
        let (status, problem) = refused(&app, &json!({"type": event_type, "data": data})).await;
        assert_eq!(status, 422, "{event_type} {data}");
        assert_eq!(pointers(&problem), vec![pointer], "{event_type} {data}");
        assert_eq!(problem["title"], "The request is invalid");
    }
}

#[tokio::test]
async fn all_bad_fields_are_named_in_one_answer() {
    let app = spawn_app().await;
    let body = json!({"type": "achievement.progress_updated", "extra": true,
        "data": {"achievementId": "", "points": -1}, "metadata": {"version": "2.0"}});
    let (status, problem) = refused(&app, &body).await;
    assert_eq!(status, 422);
    assert_eq!(
        pointers(&problem),
        vec![
            "/extra",
            "/metadata/version",
            "/data/achievementId",
            "/data/userId",
            "/data/points",
            "/data/progress"
        ]
    );
}

#[tokio::test]
async fn unknown_event_type_is_named() {
    let app = spawn_app().await;
    let (status, problem) = refused(&app, &json!({"type": "quest.abandoned", "data": {}})).await;
    assert_eq!(status, 422);
    assert_eq!(pointers(&problem), vec!["/type"]);
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("quest.abandoned")
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_with_its_position() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/v1/events", app.base))
        .bearer_auth(app.backend_token())
        .header("content-type", "application/json")
        .body("{\"type\": \"quest.started\",\n  \"data\": {,}}")
        .send()
        .await
        .unwrap();
    let (status, problem) = problem(response).await;
    assert_eq!(status, 400);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("line 2, column"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_body_over_256_kib_is_a_413_problem() {
    let app = spawn_app().await;
    let mut body = event("achievement.created");
    body["data"]["name"] = json!("x".repeat(300 * 1024));
    let (status, _) = refused(&app, &body).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn a_non_json_body_is_a_415_problem() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/v1/events", app.base))
        .bearer_auth(app.backend_token())
        .header("content-type", "text/plain")
        .body(event("quest.started").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response).await.0, 415);
}

#[tokio::test]
async fn a_bad_correlation_header_is_a_400() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/v1/events", app.base))
        .bearer_auth(app.backend_token())
        .header("X-Correlation-Id", "has spaces in it")
        .json(&event("quest.started"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response).await.0, 400);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let app = spawn_app().await;
    assert_eq!(problem(app.get("/v1/nothing-here").await).await.0, 404);
    assert_eq!(problem(app.get("/v1/events").await).await.0, 405);
}
