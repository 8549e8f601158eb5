//! Browsers across origins: CORS from `CORS_ORIGINS`, and nothing for other origins.

use crate::helpers::*;

const GAME: &str = "https://game.example";

async fn cors_app() -> TestApp {
    let mut settings = test_settings();
    settings.cors_origins = vec![
        GAME.parse().unwrap(),
        "http://localhost:3000".parse().unwrap(),
    ];
    spawn_app_with(settings).await
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/events", app.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key,x-correlation-id",
        )
        .send()
        .await
        .expect("OPTIONS")
}

fn listed(response: &reqwest::Response, name: &str) -> Vec<String> {
    header(response, name)
        .split(',')
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_gets_the_methods_and_headers_the_api_uses() {
    let app = cors_app().await;
    let response = preflight(&app, GAME).await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(header(&response, "access-control-allow-origin"), GAME);
    assert!(listed(&response, "access-control-allow-methods").contains(&"post".into()));
    assert!(listed(&response, "access-control-allow-methods").contains(&"delete".into()));
    let allowed = listed(&response, "access-control-allow-headers");
    for name in [
        "authorization",
        "content-type",
        "idempotency-key",
        "x-correlation-id",
        "traceparent",
        "tracestate",
    ] {
        assert!(allowed.contains(&name.to_owned()), "{name} in {allowed:?}");
    }

    // The request itself: even a refusal is readable by the page, with its headers.
    let response = app
        .http
        .post(format!("{}/v1/events", app.base))
        .header("origin", GAME)
        .json(&event("analytics.event_tracked"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(header(&response, "access-control-allow-origin"), GAME);
    assert!(listed(&response, "access-control-expose-headers").contains(&"retry-after".into()));
}

#[tokio::test]
async fn other_origins_get_no_cors_headers_at_all() {
    let app = cors_app().await;
    for origin in ["https://evil.example", "https://game.example.evil.example"] {
        let response = preflight(&app, origin).await;
        let granted: Vec<&str> = response
            .headers()
            .keys()
            .map(|name| name.as_str())
            .filter(|name| name.starts_with("access-control-"))
            .collect();
        assert!(granted.is_empty(), "{origin} was granted {granted:?}");
    }
}

#[tokio::test]
async fn without_cors_origins_no_origin_is_allowed() {
    let app = spawn_app().await;
    let response = preflight(&app, GAME).await;
    assert_eq!(header(&response, "access-control-allow-origin"), "");
}
