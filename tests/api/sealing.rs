//! Sensitive fields: sealed with AES-256-GCM before they reach the bus or PostgreSQL.

use std::io::Write;
use std::process::{Command, Stdio};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use event_gateway::domain::sealing::Sealer;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::proxy::Proxy;

const KEY: &str = "k2026=BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY=";
const EMAIL: &str = "ada@example.com";

/// What an operator sees: `event-gateway decrypt` with the deployment's settings.
fn decrypt_command(event: &str) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_event-gateway"))
        .arg("decrypt")
        .env("SENSITIVE_FIELDS", "/data/metadata/email")
        .env("ENCRYPTION_KEYS", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("event-gateway decrypt");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(event.as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn sealed_fields_are_unreadable_on_the_bus_and_in_the_database_and_open_with_the_key() {
    let mut settings = test_settings();
    settings.sensitive_fields = vec!["/data/metadata/email".parse().unwrap()];
    settings.encryption_keys = Some(KEY.parse().unwrap());
    let app = spawn_app_with(settings).await;
    let data = json!({"achievementId": "a1", "userId": "user-1", "points": 5,
        "metadata": {"email": EMAIL, "level": 3}});
    let response = app
        .publish(&json!({"type": "achievement.completed", "data": data}))
        .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"].clone();

    let delivery = app.next_message(&app.queue("achievement")).await;
    let on_the_bus = String::from_utf8(delivery.data.clone()).unwrap();
    assert!(!on_the_bus.contains(EMAIL), "{on_the_bus}");
    let mut envelope: Value = serde_json::from_str(&on_the_bus).unwrap();
    let sealed = &envelope["data"]["metadata"]["email"];
    assert_eq!(sealed["alg"], "A256GCM");
    assert_eq!(sealed["kid"], "k2026");
    assert_eq!(
        envelope["data"]["metadata"]["level"], 3,
        "other fields stay readable"
    );

    // The format as the README documents it, opened without the gateway's code.
    let decode = |name: &str| STANDARD.decode(sealed[name].as_str().unwrap()).unwrap();
    let iv: [u8; 12] = decode("iv").try_into().unwrap();
    let key = STANDARD.decode(KEY.split_once('=').unwrap().1).unwrap();
    let aad = format!("{}|/data/metadata/email", envelope["id"].as_str().unwrap());
    let plain = Aes256Gcm::new_from_slice(&key)
        .unwrap()
        .decrypt(
            &iv.into(),
            Payload {
                msg: &decode("ciphertext"),
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&plain).unwrap(), EMAIL);

    assert_eq!(decrypt_command(&on_the_bus)["data"], data);
    let consumer = Sealer {
        fields: vec!["/data/metadata/email".parse().unwrap()],
        keys: KEY.parse().unwrap(),
    };
    consumer.open_event(&mut envelope).unwrap();
    assert_eq!(envelope["data"], data);

    let (stored,): (Value,) = sqlx::query_as("SELECT envelope FROM events WHERE id = $1::uuid")
        .bind(id.as_str().unwrap())
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert!(!stored.to_string().contains(EMAIL), "{stored}");
    let mut stored = stored;
    consumer.open_event(&mut stored).unwrap();
    assert_eq!(stored["data"], data);
}

#[tokio::test]
async fn an_event_held_in_the_outbox_is_sealed_there_too() {
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let mut settings = through_broker_proxy(test_settings(), &proxy);
    settings.sensitive_fields = vec!["/data/metadata/email".parse().unwrap()];
    settings.encryption_keys = Some(KEY.parse().unwrap());
    let app = spawn_app_with(settings).await;
    proxy.cut().await;
    let mut body = event("analytics.event_tracked");
    body["data"]["metadata"] = json!({"email": EMAIL});
    let response = app.publish(&body).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "queued");

    let (held,): (Vec<u8>,) = sqlx::query_as("SELECT body FROM outbox")
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    let held = String::from_utf8(held).unwrap();
    assert!(!held.contains(EMAIL), "{held}");
    assert_eq!(decrypt_command(&held)["data"], body["data"]);
}
