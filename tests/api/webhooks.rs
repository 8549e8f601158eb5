//! Signed webhooks: Standard Webhooks signatures, key rotation, replays.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::helpers::*;

const OLD_KEY: &[u8] = b"shop-key-2025-rotated-out-soon!!";
const NEW_KEY: &[u8] = b"shop-key-2026-the-current-one!!!";
const CRM_SECRET: &str = "crm-plain-secret";

/// A sender's signature, computed here from the scheme's definition, not by the gateway's
/// code.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

async fn webhook_app() -> TestApp {
    let mut settings = test_settings();
    settings.webhook_secrets = format!(
        "shop=whsec_{},crm={CRM_SECRET},shop=whsec_{}",
        STANDARD.encode(OLD_KEY),
        STANDARD.encode(NEW_KEY)
    )
    .parse()
    .unwrap();
    spawn_app_with(settings).await
}

struct Delivery<'a> {
    source: &'a str,
    id: &'a str,
    timestamp: i64,
    signature: String,
    body: Vec<u8>,
}

impl<'a> Delivery<'a> {
    fn signed(source: &'a str, id: &'a str, secret: &[u8], body: &Value) -> Self {
        let body = serde_json::to_vec(body).unwrap();
        let timestamp = now();
        Delivery {
            source,
            id,
            timestamp,
            signature: signature(secret, id, timestamp, &body),
            body,
        }
    }

    async fn send(&self, app: &TestApp) -> reqwest::Response {
        self.send_without(app, "").await
    }

    async fn send_without(&self, app: &TestApp, header: &str) -> reqwest::Response {
        let mut request = app
            .http
            .post(format!("{}/v1/webhooks/{}", app.base, self.source))
            .header("content-type", "application/json")
            .body(self.body.clone());
        for (name, value) in [
            ("webhook-id", self.id.to_owned()),
            ("webhook-timestamp", self.timestamp.to_string()),
            ("webhook-signature", self.signature.clone()),
        ] {
            if name != header {
                request = request.header(name, value);
            }
        }
        request.send().await.expect("POST webhook")
    }
}

#[tokio::test]
async fn signed_webhooks_publish_with_the_source_as_principal_under_either_rotated_key() {
    let app = webhook_app().await;
    let one = Delivery::signed("shop", "msg_1", OLD_KEY, &event("reward.claimed"));
    let response = one.send(&app).await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["status"], "published");
    let message = app.next_message(&app.queue("reward")).await;
    let body: Value = serde_json::from_slice(&message.data).unwrap();
    assert_eq!(body["id"], receipt["id"]);
    assert_eq!(body["metadata"]["source"], "webhook:shop");

    let batch = json!({"events": [event("quest.started"), event("quest.completed")]});
    let two = Delivery::signed("shop", "msg_2", NEW_KEY, &batch);
    let response = two.send(&app).await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["results"].as_array().unwrap().len(), 2);
    for expected in ["quest.started", "quest.completed"] {
        let message = app.next_message(&app.queue("quest")).await;
        assert_eq!(message.routing_key.as_str(), expected);
    }

    let plain = Delivery::signed(
        "crm",
        "msg_3",
        CRM_SECRET.as_bytes(),
        &event("notification.created"),
    );
    assert_eq!(plain.send(&app).await.status(), 202);
}

#[tokio::test]
async fn unverified_webhooks_are_401_and_publish_nothing() {
    let app = webhook_app().await;
    let body = event("reward.claimed");
    let good = || Delivery::signed("shop", "msg_1", NEW_KEY, &body);

    let mut tampered = good();
    tampered.body = serde_json::to_vec(&event("reward.expired")).unwrap();
    let wrong_secret = Delivery::signed("shop", "msg_1", b"not-the-shop-key", &body);
    let unknown_source = Delivery::signed("nobody", "msg_1", NEW_KEY, &body);
    // Well past the 5 minutes, so a clock tick during the test cannot bring them back in.
    let mut stale = good();
    stale.timestamp -= 330;
    stale.signature = signature(NEW_KEY, "msg_1", stale.timestamp, &stale.body);
    let mut future = good();
    future.timestamp += 330;
    future.signature = signature(NEW_KEY, "msg_1", future.timestamp, &future.body);
    let mut garbage = good();
    garbage.signature = "v1,not-base64!! v2,whatever".into();

    for (case, delivery) in [
        ("tampered body", &tampered),
        ("wrong secret", &wrong_secret),
        ("unknown source", &unknown_source),
        ("stale timestamp", &stale),
        ("future timestamp", &future),
        ("garbage signature", &garbage),
    ] {
        let (status, answer) = problem(delivery.send(&app).await).await;
        assert_eq!(status, 401, "{case}");
        if case == "unknown source" || case == "wrong secret" {
            assert_eq!(
                answer["detail"],
                "no webhook-signature entry matches; sign as Standard Webhooks describe (see the README)",
                "{case}: an unknown source reads exactly like a bad signature"
            );
        }
    }
    for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let (status, answer) = problem(good().send_without(&app, header).await).await;
        assert_eq!(status, 401, "without {header}");
        assert!(
            answer["detail"].as_str().unwrap().contains(header),
            "{answer}"
        );
    }
    assert_eq!(app.total_depth().await, 0, "nothing was published");
}

#[tokio::test]
async fn a_replayed_webhook_id_is_answered_as_before_and_published_once() {
    let app = webhook_app().await;
    let body = event("achievement.completed");
    let first = Delivery::signed("shop", "msg_replayed", NEW_KEY, &body);
    let response = first.send(&app).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();

    // Senders re-sign a retry with a new timestamp; the id and body stay.
    let mut retry = Delivery::signed("shop", "msg_replayed", NEW_KEY, &body);
    retry.timestamp += 1;
    retry.signature = signature(NEW_KEY, retry.id, retry.timestamp, &retry.body);
    for again in [&first, &retry] {
        let response = again.send(&app).await;
        assert_eq!(response.status(), 202);
        assert_eq!(header(&response, "idempotent-replayed"), "true");
        assert_eq!(response.json::<Value>().await.unwrap(), answer);
    }
    app.next_message(&app.queue("achievement")).await;
    assert_eq!(
        app.depth(&app.queue("achievement")).await,
        0,
        "published once"
    );
}

#[tokio::test]
async fn concurrent_deliveries_of_one_webhook_id_publish_once() {
    let app = webhook_app().await;
    let delivery = Delivery::signed("shop", "msg_concurrent", NEW_KEY, &event("quest.started"));
    let answers = futures_util::future::join_all((0..5).map(|_| delivery.send(&app))).await;
    let mut receipts = Vec::new();
    for response in answers {
        assert_eq!(response.status(), 202);
        receipts.push(response.json::<Value>().await.unwrap());
    }
    assert!(receipts.iter().all(|r| r == &receipts[0]), "{receipts:?}");
    app.next_message(&app.queue("quest")).await;
    assert_eq!(app.depth(&app.queue("quest")).await, 0, "published once");
}

#[tokio::test]
async fn without_redis_webhooks_are_refused_rather_than_risk_a_double_publish() {
    let proxy = crate::proxy::Proxy::start("127.0.0.1:6379").await;
    let mut settings = test_settings();
    settings.webhook_secrets = format!("shop=whsec_{}", STANDARD.encode(NEW_KEY))
        .parse()
        .unwrap();
    settings.redis_host = proxy.addr.ip().to_string();
    settings.redis_port = proxy.addr.port();
    let app = spawn_app_with(settings).await;
    proxy.cut().await;
    let delivery = Delivery::signed("shop", "msg_1", NEW_KEY, &event("quest.started"));
    let response = delivery.send(&app).await;
    assert_eq!(header(&response, "retry-after"), "5");
    let (status, answer) = problem(response).await;
    assert_eq!(status, 503);
    assert_eq!(
        answer["type"],
        "urn:problem:event-gateway:replay-guard-unavailable"
    );
    assert_eq!(app.total_depth().await, 0);

    proxy.restore();
    eventually(std::time::Duration::from_secs(15), || async {
        delivery.send(&app).await.status() == 202
    })
    .await;
    app.next_message(&app.queue("quest")).await;
    assert_eq!(app.depth(&app.queue("quest")).await, 0, "published once");
}

#[tokio::test]
async fn a_webhook_schedules_its_events_and_a_late_redelivery_is_answered_as_before() {
    use std::time::Duration;

    use crate::scheduled::{at, collect, expiry, in_};
    let app = webhook_app().await;
    let due = in_(Duration::from_secs(2));
    let body = json!({"events": [expiry("user-8", "rew-8", &due)]});
    let delivery = Delivery::signed("shop", "msg_scheduled_1", NEW_KEY, &body);
    let first = delivery.send(&app).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["results"][0]["status"], "scheduled");
    let queue = app.queue("reward");
    let got = collect(&app, &queue, 1, Duration::from_secs(8)).await;
    assert_eq!(got.len(), 1);
    let (message, arrived) = &got[0];
    assert!(*arrived >= at(&due), "not before its time");
    assert_eq!(message["metadata"]["source"], "webhook:shop");
    assert_eq!(message["id"], first["results"][0]["id"]);
    // The sender retries after its time has passed: the first answer, nothing published.
    let again = Delivery::signed("shop", "msg_scheduled_1", NEW_KEY, &body);
    let again = again.send(&app).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert!(
        collect(&app, &queue, 1, Duration::from_secs(1))
            .await
            .is_empty()
    );
}
