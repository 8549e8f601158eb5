use std::time::Duration;

use event_gateway::bus::PublishError;
use event_gateway::bus::publisher::confirmation_outcome;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn an_unroutable_event_is_not_accepted() {
    let app = spawn_app().await;
    app.broker
        .queue_unbind(
            app.queue("analytics").as_str().into(),
            app.topology.exchange.as_str().into(),
            "analytics.*".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (status, problem_body) =
        problem(app.publish(&event("analytics.event_tracked")).await).await;
    assert_eq!(status, 500);
    assert_eq!(
        problem_body["title"],
        "Event could not be routed to any queue"
    );
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains(
        r#"gateway_events_published_total{outcome="unroutable",type="analytics.event_tracked"} 1"#
    ));
    assert_eq!(
        app.publish(&event("quest.created")).await.status(),
        202,
        "other types still flow"
    );
}

#[tokio::test]
async fn broker_gone_is_queued_and_the_gateway_recovers_without_restart() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    assert_eq!(app.publish(&event("quest.created")).await.status(), 202);

    proxy.cut().await;
    let response = app.publish(&event("quest.created")).await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(
        receipt["status"], "queued",
        "held in the outbox while the broker is gone"
    );
    let health = app.get("/health").await;
    assert_eq!(health.status(), 503);
    let report: Value = health.json().await.unwrap();
    assert_eq!(report["rabbitMQ"]["connected"], false);
    assert_eq!(report["redis"]["connected"], true);
    assert_eq!(report["postgres"]["connected"], true);
    assert_eq!(app.get("/health/ready").await.status(), 503);
    assert_eq!(app.get("/health/live").await.status(), 200);

    proxy.restore();
    app.wait_until_ready().await;
    assert_eq!(app.publish(&event("quest.created")).await.status(), 202);
    eventually(Duration::from_secs(10), || async {
        app.depth(&app.queue("quest")).await == 3
    })
    .await;
}

#[tokio::test]
async fn the_gateway_starts_and_serves_health_while_the_broker_is_down() {
    let proxy = crate::proxy::Proxy::start("127.0.0.1:5672").await;
    proxy.cut().await;
    let app = start(through_broker_proxy(test_settings(), &proxy)).await;

    let health = app.get("/health").await;
    assert_eq!(health.status(), 503);
    assert_eq!(health.headers()["content-type"], "application/json");
    // reward.created is critical: once the database is ready it waits there for the broker.
    eventually(Duration::from_secs(10), || async {
        app.publish(&event("reward.created")).await.status() == 202
    })
    .await;

    proxy.restore();
    app.wait_until_ready().await;
    assert_eq!(app.publish(&event("reward.created")).await.status(), 202);
    eventually(Duration::from_secs(10), || async {
        app.depth(&app.queue("reward")).await == 2
    })
    .await;
}

#[tokio::test]
async fn a_nacked_event_waits_in_the_outbox() {
    let app = spawn_app().await;
    // A queue that refuses every message makes the broker nack what is routed to it.
    let full = format!("{}full", app.settings.amqp_queue_prefix);
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    app.broker
        .queue_declare(full.as_str().into(), exclusive, arguments)
        .await
        .unwrap();
    app.broker
        .queue_bind(
            full.as_str().into(),
            app.topology.exchange.as_str().into(),
            "notification.*".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let response = app.publish(&event("notification.created")).await;
    assert_eq!(
        response.status(),
        202,
        "a nacked event is held in the outbox"
    );
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["status"], "queued");
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains(
        r#"gateway_events_published_total{outcome="queued",type="notification.created"} 1"#
    ));
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_id = $1::uuid")
        .bind(receipt["id"].as_str().unwrap())
        .fetch_one(&app.db().await)
        .await
        .unwrap();
    assert_eq!(held, 1);
}

/// lapin's traps, judged on real broker answers.
#[tokio::test]
async fn only_a_plain_ack_counts_as_confirmed() {
    let app = spawn_app().await;
    let exchange = app.topology.exchange.as_str();
    let publish = |channel: lapin::Channel, routing_key: &'static str| async move {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                b"{}",
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap()
    };
    let plain = app.broker_connection.create_channel().await.unwrap();
    let not_requested = publish(plain, "quest.created").await;
    assert!(matches!(
        confirmation_outcome(not_requested, "quest.created"),
        Err(PublishError::NotConfirmed)
    ));

    let confirming = app.broker_connection.create_channel().await.unwrap();
    confirming.confirm_select(Default::default()).await.unwrap();
    let returned = publish(confirming.clone(), "nobody.listens").await;
    assert!(
        returned.is_ack(),
        "the broker acks an unroutable mandatory message"
    );
    assert!(matches!(
        confirmation_outcome(returned, "nobody.listens"),
        Err(PublishError::Unroutable { .. })
    ));
    let routed = publish(confirming, "quest.created").await;
    assert!(confirmation_outcome(routed, "quest.created").is_ok());
}
