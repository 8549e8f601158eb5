use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn served_openapi_matches_the_committed_document() {
    let app = spawn_app().await;
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    let committed = include_str!("../../openapi/openapi.json");
    let generated = event_gateway::http::openapi_json().unwrap();
    assert_eq!(
        committed.trim_end(),
        generated,
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
    assert_eq!(served, serde_json::from_str::<Value>(committed).unwrap());
    assert_eq!(served["openapi"], "3.1.0");
    for path in [
        "/v1/events",
        "/v1/events/{type}",
        "/v1/events/batch",
        "/health",
        "/metrics",
    ] {
        assert!(served["paths"].get(path).is_some(), "{path} documented");
    }
    let schemas = &served["components"]["schemas"];
    for schema in [
        "AchievementData",
        "QuestData",
        "RewardData",
        "NotificationData",
        "AnalyticsData",
        "Problem",
    ] {
        assert!(schemas.get(schema).is_some(), "{schema} documented");
    }
    assert_eq!(
        served["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external URL: {html}"
    );
    let initializer = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/openapi.json"));
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status(), 200);
}
