//! Keys from an identity provider: a key set found by URL or by OpenID Connect discovery,
//! keys chosen by `kid`, rotation without a restart, one fetch per interval however many
//! unknown `kid`s arrive, and 503 (not 401, not a crash) while no key set could be fetched.

use std::time::Duration;

use event_gateway::config::Settings;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::identity_provider::{IdentityProvider, signed_by};

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims() -> Value {
    json!({"sub": "svc", "scope": "events:publish", "exp": now() + 600, "iat": now()})
}

fn with_key_set(provider: &IdentityProvider) -> Settings {
    let mut settings = test_settings();
    settings.jwt_secret = None;
    settings.identity.jwt_jwks_url = Some(provider.jwks_url());
    settings
}

async fn publish_with(app: &TestApp, token: &str) -> (u16, Value) {
    problem(
        app.post_json("/v1/events", token, &event("quest.created"))
            .await,
    )
    .await
}

async fn status_with(app: &TestApp, token: &str) -> u16 {
    app.post_json("/v1/events", token, &event("quest.created"))
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn tokens_are_verified_with_the_key_their_kid_names() {
    let provider = IdentityProvider::start(&["rsa-1", "ec-1", "ed-1"]).await;
    let app = spawn_app_with(with_key_set(&provider)).await;
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let token = signed_by(kid, Some(kid), &claims());
        assert_eq!(status_with(&app, &token).await, 202, "{kid}");
    }
    let cases = [
        (
            "signed by another key",
            signed_by("ed-1", Some("ec-1"), &claims()),
        ),
        ("no kid", signed_by("rsa-1", None, &claims())),
        (
            "HS256 with a kid",
            jsonwebtoken::encode(
                &jsonwebtoken::Header {
                    kid: Some("rsa-1".into()),
                    ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
                },
                &claims(),
                &jsonwebtoken::EncodingKey::from_secret(b"guess"),
            )
            .unwrap(),
        ),
    ];
    for (case, token) in cases {
        assert_eq!(status_with(&app, &token).await, 401, "{case}");
    }
    assert_eq!(provider.discovery_requests(), 0);
}

#[tokio::test]
async fn discovery_finds_the_key_set_from_the_issuer() {
    let provider = IdentityProvider::start(&["ec-1"]).await;
    let mut settings = test_settings();
    settings.jwt_secret = None;
    settings.jwt_issuer = Some(provider.base.clone());
    settings.identity.jwt_oidc_discovery = true;
    let app = spawn_app_with(settings).await;
    let mut claims = claims();
    claims["iss"] = json!(provider.base);
    assert_eq!(
        status_with(&app, &signed_by("ec-1", Some("ec-1"), &claims)).await,
        202
    );
    claims["iss"] = json!("https://someone-else.example");
    assert_eq!(
        status_with(&app, &signed_by("ec-1", Some("ec-1"), &claims)).await,
        401
    );
    assert_eq!(provider.discovery_requests(), 1);
    assert_eq!(provider.key_set_requests(), 1);
}

#[tokio::test]
async fn a_rotated_key_set_is_used_without_a_restart() {
    let provider = IdentityProvider::start(&["rsa-1"]).await;
    let mut settings = with_key_set(&provider);
    settings.identity.jwt_jwks_min_refresh = Duration::from_millis(300);
    let app = spawn_app_with(settings).await;
    let old = signed_by("rsa-1", Some("rsa-1"), &claims());
    assert_eq!(status_with(&app, &old).await, 202);

    // The provider publishes a new key and removes the old one.
    provider.publish(&["ed-1"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = signed_by("ed-1", Some("ed-1"), &claims());
    assert_eq!(status_with(&app, &new).await, 202, "the new key is fetched");
    let (status, refusal) = publish_with(&app, &old).await;
    assert_eq!(
        (status, refusal["detail"].as_str().unwrap()),
        (
            401,
            "no key with kid \"rsa-1\" in the identity provider's key set"
        ),
        "a token verified before with a removed key"
    );

    // A provider that fails later leaves the last good set in use.
    provider.fail(true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let unknown = signed_by("ed-1", Some("ed-2"), &claims());
    assert_eq!(status_with(&app, &unknown).await, 401);
    assert_eq!(status_with(&app, &new).await, 202, "the last good set");
    let mut other = claims();
    other["sub"] = json!("svc-2");
    let fresh = signed_by("ed-1", Some("ed-1"), &other);
    assert_eq!(status_with(&app, &fresh).await, 202, "verified anew");
}

/// Sends `count` tokens at once, each naming its own made-up `kid`; all must be 401.
async fn unknown_kid_flood(app: &TestApp, round: usize, count: usize) {
    let requests = (0..count).map(|i| {
        let token = signed_by("rsa-1", Some(&format!("made-up-{round}-{i}")), &claims());
        async move { publish_with(app, &token).await }
    });
    for (status, refusal) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 401);
        assert!(
            refusal["detail"]
                .as_str()
                .unwrap()
                .starts_with("no key with kid \"made-up-"),
            "{refusal}"
        );
    }
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_one_fetch_per_interval() {
    let provider = IdentityProvider::start(&["rsa-1"]).await;
    let mut settings = with_key_set(&provider);
    let interval = Duration::from_secs(2);
    settings.identity.jwt_jwks_min_refresh = interval;
    settings.rate_limit_rps = 0;
    let app = spawn_app_with(settings).await;
    let at_start = provider.key_set_requests();
    assert_eq!(at_start, 1, "the fetch at start");

    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    unknown_kid_flood(&app, 1, 100).await;
    assert_eq!(
        provider.key_set_requests(),
        at_start + 1,
        "one fetch for 100"
    );
    unknown_kid_flood(&app, 2, 100).await;
    assert_eq!(
        provider.key_set_requests(),
        at_start + 1,
        "none within the interval"
    );

    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    unknown_kid_flood(&app, 3, 100).await;
    assert_eq!(
        provider.key_set_requests(),
        at_start + 2,
        "one in the next interval"
    );
    let known = signed_by("rsa-1", Some("rsa-1"), &claims());
    assert_eq!(status_with(&app, &known).await, 202);
}

#[tokio::test]
async fn an_unreachable_key_set_gives_503_until_it_can_be_fetched() {
    let provider = IdentityProvider::start(&["ed-1"]).await;
    provider.fail(true);
    let app = start(with_key_set(&provider)).await;
    let token = signed_by("ed-1", Some("ed-1"), &claims());
    eventually(Duration::from_secs(15), || async {
        let ready = app.get("/health/ready").await;
        ready.status() == 503
            && ready.json::<Value>().await.unwrap()["status"]
                == "identity_provider_keys_unavailable"
    })
    .await;
    let answer = app
        .post_json("/v1/events", &token, &event("quest.created"))
        .await;
    assert_eq!(header(&answer, "retry-after"), "5");
    let (status, refusal) = problem(answer).await;
    assert_eq!(status, 503);
    assert_eq!(
        refusal["type"],
        "urn:problem:event-gateway:keys-unavailable"
    );
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .starts_with("the identity provider's keys (JWT_JWKS_URL) could not be fetched yet"),
        "{refusal}"
    );
    assert!(
        provider.key_set_requests() >= 2,
        "retried in the background"
    );

    provider.fail(false);
    app.wait_until_ready().await;
    assert_eq!(status_with(&app, &token).await, 202);
}
