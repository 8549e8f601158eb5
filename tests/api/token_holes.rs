//! Tokens an attacker would try: critical extensions the gateway does not understand, an
//! audience meant for another service, expiry past a small leeway, an `iat` in the future,
//! two `Authorization` headers, and the `token` command asked for no lifetime.

use std::process::Command;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::*;

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn signed_with(header: &Header, claims: &Value) -> String {
    jsonwebtoken::encode(
        header,
        claims,
        &EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap()
}

fn signed(claims: &Value) -> String {
    signed_with(&Header::new(Algorithm::HS256), claims)
}

fn claims() -> Value {
    json!({"sub": "svc", "scope": "events:publish", "exp": now() + 600})
}

async fn refusal(app: &TestApp, token: &str) -> (u16, String) {
    let (status, problem) = problem(
        app.post_json("/v1/events", token, &event("quest.created"))
            .await,
    )
    .await;
    (
        status,
        problem["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn a_critical_extension_the_gateway_does_not_understand_is_refused() {
    let app = spawn_app().await;
    let mut header = Header::new(Algorithm::HS256);
    header.crit = Some(vec!["urn:example:must-understand".into()]);
    let (status, detail) = refusal(&app, &signed_with(&header, &claims())).await;
    assert_eq!(status, 401);
    assert_eq!(
        detail,
        "the token's header marks extensions as critical (crit: \"urn:example:must-understand\") that this gateway does not understand"
    );
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_when_none_is_configured() {
    let app = spawn_app().await;
    let mut claims = claims();
    claims["aud"] = json!("billing-service");
    let (status, detail) = refusal(&app, &signed(&claims)).await;
    assert_eq!(status, 401);
    assert!(
        detail.starts_with("the token names an audience (aud)"),
        "{detail}"
    );
    claims["aud"] = json!(["billing-service", "event-gateway"]);
    assert_eq!(refusal(&app, &signed(&claims)).await.0, 401, "an array too");
}

#[tokio::test]
async fn an_expired_token_gets_only_the_configured_leeway() {
    let app = spawn_app().await;
    let expired = json!({"sub": "svc", "scope": "events:publish", "exp": now() - 10});
    let (status, detail) = refusal(&app, &signed(&expired)).await;
    assert_eq!(
        (status, detail.as_str()),
        (401, "the token has expired"),
        "10 s past exp, default JWT_LEEWAY 5s"
    );

    let mut settings = test_settings();
    settings.identity.jwt_leeway = Duration::from_secs(60);
    let lenient = spawn_app_with(settings).await;
    let token = signed(&expired);
    assert_eq!(
        lenient
            .post_json("/v1/events", &token, &event("quest.created"))
            .await
            .status(),
        202,
        "JWT_LEEWAY=60s"
    );
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let app = spawn_app().await;
    let ten_years = 10 * 365 * 24 * 3600;
    let mut claims = claims();
    claims["iat"] = json!(now() + ten_years);
    let (status, detail) = refusal(&app, &signed(&claims)).await;
    assert_eq!(status, 401);
    assert!(
        detail.starts_with("the token's iat is in the future"),
        "{detail}"
    );
    claims["iat"] = json!(now() + 2);
    let within = app
        .post_json("/v1/events", &signed(&claims), &event("quest.created"))
        .await;
    assert_eq!(within.status(), 202, "within the leeway");
}

#[tokio::test]
async fn two_authorization_headers_are_a_bad_request() {
    let app = spawn_app().await;
    let good = signed(&claims());
    let answer = app
        .http
        .post(format!("{}/v1/events", app.base))
        .header("authorization", format!("Bearer {good}"))
        .header("authorization", "Bearer not.a.jwt")
        .json(&event("quest.created"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&answer, "content-type"), "application/problem+json");
    let (status, problem) = problem(answer).await;
    assert_eq!(status, 400);
    assert_eq!(
        problem["detail"],
        "the request has more than one Authorization header; send exactly one"
    );
    assert_eq!(app.total_depth().await, 0, "nothing was published");
}

#[test]
fn the_token_command_refuses_a_lifetime_of_zero_or_less() {
    for ttl in ["0s", "-5m", "--ttl=-1h"] {
        let ttl_args = if ttl.starts_with("--") {
            vec![ttl]
        } else {
            vec!["--ttl", ttl]
        };
        let output = Command::new(env!("CARGO_BIN_EXE_event-gateway"))
            .args(["token", "--sub", "svc", "--scope", "events:publish"])
            .args(ttl_args)
            .env_clear()
            .output()
            .expect("run event-gateway");
        assert!(!output.status.success(), "{ttl}: {output:?}");
        assert!(output.stdout.is_empty(), "{ttl}: no token printed");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("must be longer than zero"),
            "{ttl}: {stderr}"
        );
    }
}
