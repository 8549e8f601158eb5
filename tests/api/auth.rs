use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::*;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The status and detail of a refused publish.
async fn refusal(app: &TestApp, token: &str, body: &Value) -> (u16, String) {
    let (status, refusal) = problem(app.post_json("/v1/events", token, body).await).await;
    (
        status,
        refusal["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn status_with(app: &TestApp, token: &str, body: &Value) -> u16 {
    app.post_json("/v1/events", token, body)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn bad_credentials_are_401_problems() {
    let app = spawn_app().await;
    let body = event("quest.created");
    let no_token = app
        .http
        .post(format!("{}/v1/events", app.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        no_token.headers()["www-authenticate"],
        "Bearer",
        "no credentials: no error code (RFC 6750 3.1)"
    );
    assert_eq!(problem(no_token).await.0, 401);
    let bad_token = app.post_json("/v1/events", "not.a.jwt", &body).await;
    assert_eq!(
        bad_token.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );

    let basic = app
        .http
        .post(format!("{}/v1/events", app.base))
        .basic_auth("user", Some("pw"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401, "not a bearer token");

    let claims = json!({"sub": "svc", "scope": "events:publish", "exp": now() + 600});
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let cases = [
        ("malformed", "not.a.jwt".to_owned()),
        ("garbage", "abc".to_owned()),
        ("wrong secret", signed(&claims, "another-secret")),
        ("alg none", format!("{header}.{payload}.")),
        (
            "expired",
            signed(
                &json!({"sub": "svc", "scope": "events:publish", "exp": now() - 3600}),
                TEST_SECRET,
            ),
        ),
        (
            "no exp",
            signed(
                &json!({"sub": "svc", "scope": "events:publish"}),
                TEST_SECRET,
            ),
        ),
        (
            "not yet valid",
            signed(
                &json!({"sub": "svc", "scope": "events:publish", "exp": now() + 7200, "nbf": now() + 3600}),
                TEST_SECRET,
            ),
        ),
    ];
    for (case, token) in cases {
        assert_eq!(status_with(&app, &token, &body).await, 401, "{case}");
    }
    let lowercase = app
        .http
        .post(format!("{}/v1/events", app.base))
        .header(
            "authorization",
            format!("bearer {}", signed(&claims, TEST_SECRET)),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        lowercase.status(),
        202,
        "the scheme name is case-insensitive"
    );
    app.next_message(&app.queue("quest")).await;
    assert_eq!(
        status_with(&app, &signed(&claims, TEST_SECRET), &body).await,
        202,
        "the same claims, well signed"
    );
    app.next_message(&app.queue("quest")).await;
    assert_eq!(app.total_depth().await, 0);
}

#[tokio::test]
async fn issuer_and_audience_are_required_when_configured() {
    let mut settings = test_settings();
    settings.jwt_issuer = Some("https://auth.example".into());
    settings.jwt_audience = Some("event-gateway".into());
    let app = spawn_app_with(settings).await;
    let body = event("quest.created");
    let claims = |iss: Option<&str>, aud: Option<&str>| {
        let mut claims = json!({"sub": "svc", "scope": "events:publish", "exp": now() + 600});
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            claims["aud"] = json!(aud);
        }
        signed(&claims, TEST_SECRET)
    };
    let cases = [
        (Some("https://auth.example"), Some("event-gateway"), 202),
        (Some("https://evil.example"), Some("event-gateway"), 401),
        (Some("https://auth.example"), Some("other"), 401),
        (None, Some("event-gateway"), 401),
        (Some("https://auth.example"), None, 401),
    ];
    for (iss, aud, expected) in cases {
        let status = status_with(&app, &claims(iss, aud), &body).await;
        assert_eq!(status, expected, "iss {iss:?}, aud {aud:?}");
    }
    let mut as_array = json!({"sub": "svc", "scope": "events:publish", "exp": now() + 600,
        "iss": "https://auth.example", "aud": ["another-service", "event-gateway"]});
    assert_eq!(
        status_with(&app, &signed(&as_array, TEST_SECRET), &body).await,
        202,
        "aud may be an array"
    );
    as_array["aud"] = json!(["another-service"]);
    assert_eq!(
        status_with(&app, &signed(&as_array, TEST_SECRET), &body).await,
        401
    );
    assert_eq!(
        status_with(&app, &app.backend_token(), &body).await,
        202,
        "minted tokens carry both"
    );
}

#[tokio::test]
async fn scopes_decide_what_may_be_published() {
    let app = spawn_app().await;
    let reader = app.token("dashboard", "events:read");
    let (status, detail) = refusal(&app, &reader, &event("quest.created")).await;
    assert_eq!(status, 403);
    assert!(detail.contains("no events:publish scope"), "{detail}");
    let mut invalid = event("quest.created");
    invalid["data"] = json!({});
    let (status, _) = refusal(&app, &reader, &invalid).await;
    assert_eq!(
        status, 403,
        "no publish right: refused before the body is judged"
    );
    let analytics_only = app.token("tracker", "events:publish:analytics");
    let (status, detail) = refusal(&app, &analytics_only, &event("quest.created")).await;
    assert_eq!(status, 403);
    assert!(detail.contains("quest.created"), "{detail}");

    let analytics = app.token("tracker", "events:publish:analytics");
    assert_eq!(
        status_with(&app, &analytics, &event("analytics.event_tracked")).await,
        202
    );
    assert_eq!(
        status_with(&app, &analytics, &event("reward.claimed")).await,
        403
    );
}

#[tokio::test]
async fn player_tokens_publish_only_their_own_few_events() {
    let app = spawn_app().await;
    let player = app.token("user-1", "events:publish:self");
    for allowed in [
        "analytics.event_tracked",
        "notification.read",
        "notification.archived",
    ] {
        assert_eq!(
            status_with(&app, &player, &event(allowed)).await,
            202,
            "{allowed}"
        );
    }
    let mut for_other = event("notification.read");
    for_other["data"]["userId"] = json!("user-2");
    assert_eq!(status_with(&app, &player, &for_other).await, 403);
    assert_eq!(
        status_with(&app, &player, &event("reward.claimed")).await,
        403
    );
    assert_eq!(
        status_with(&app, &player, &event("achievement.completed")).await,
        403
    );

    let batch = json!({"events": [event("notification.read"), for_other]});
    let (status, problem_body) =
        problem(app.post_json("/v1/events/batch", &player, &batch).await).await;
    assert_eq!(
        (status, pointers(&problem_body)),
        (403, vec!["/events/1".to_owned()])
    );

    let wide_player = app.token("user-1", "events:publish events:publish:self");
    assert_eq!(
        status_with(&app, &wide_player, &event("reward.claimed")).await,
        202
    );
    let mut reward_for_other = event("reward.claimed");
    reward_for_other["data"]["userId"] = json!("user-2");
    assert_eq!(
        status_with(&app, &wide_player, &reward_for_other).await,
        403
    );

    let published = app.depth(&app.queue("analytics")).await
        + app.depth(&app.queue("notification")).await
        + app.depth(&app.queue("reward")).await;
    assert_eq!(published, 4, "exactly the accepted events were published");
}

#[tokio::test]
async fn a_public_key_accepts_only_its_own_algorithm() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut settings = test_settings();
    settings.jwt_secret = None;
    settings.jwt_public_key_file = Some(format!("{fixtures}/es256-public.pem").into());
    settings.jwt_private_key_file = Some(format!("{fixtures}/es256-private.pem").into());
    let app = spawn_app_with(settings).await;
    let token = app.backend_token();
    assert_eq!(
        status_with(&app, &token, &event("quest.created")).await,
        202,
        "ES256 token from the token command"
    );

    // Algorithm confusion: an HS256 token keyed with the public key must not pass.
    let public_pem = std::fs::read_to_string(format!("{fixtures}/es256-public.pem")).unwrap();
    let claims = json!({"sub": "svc", "scope": "events:publish", "exp": now() + 600});
    assert_eq!(
        status_with(&app, &signed(&claims, &public_pem), &event("quest.created")).await,
        401
    );
}
