use lapin::types::AMQPValue;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;

const ALL_TYPES: [&str; 18] = [
    "achievement.created",
    "achievement.updated",
    "achievement.deleted",
    "achievement.completed",
    "achievement.progress_updated",
    "quest.created",
    "quest.updated",
    "quest.deleted",
    "quest.started",
    "quest.completed",
    "quest.progress_updated",
    "reward.created",
    "reward.claimed",
    "reward.expired",
    "notification.created",
    "notification.read",
    "notification.archived",
    "analytics.event_tracked",
];

#[tokio::test]
async fn every_event_type_lands_on_its_queue_with_envelope_and_properties() {
    let app = spawn_app().await;
    for event_type in ALL_TYPES {
        let before = OffsetDateTime::now_utc().unix_timestamp();
        let response = app.publish(&event(event_type)).await;
        assert_eq!(response.status(), 202, "{event_type}");
        let correlation = header(&response, "x-correlation-id");
        let receipt: Value = response.json().await.unwrap();
        assert_eq!(receipt["type"], event_type);
        assert_eq!(receipt["status"], "published");
        let critical = [
            "achievement.completed",
            "quest.completed",
            "reward.created",
            "reward.claimed",
            "reward.expired",
        ];
        assert_eq!(
            receipt["persisted"],
            critical.contains(&event_type),
            "{event_type}"
        );
        assert_eq!(receipt["correlationId"], correlation.as_str());

        let family = event_type.split('.').next().unwrap();
        let delivery = app.next_message(&app.queue(family)).await;
        assert_eq!(delivery.routing_key.as_str(), event_type);
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        assert_eq!(body["id"], receipt["id"]);
        assert_eq!(body["type"], event_type);
        assert_eq!(body["data"], valid_data(event_type));
        let metadata = &body["metadata"];
        assert_eq!(metadata["correlationId"], correlation.as_str());
        assert_eq!(metadata["userId"], "user-1");
        assert_eq!(metadata["source"], "game-backend");
        assert_eq!(metadata["version"], "1.0");
        let timestamp = metadata["timestamp"].as_str().unwrap();
        assert!(
            OffsetDateTime::parse(timestamp, &Rfc3339).is_ok(),
            "{timestamp}"
        );
        assert!(
            timestamp.ends_with('Z') && timestamp.len() == 24,
            "millisecond UTC: {timestamp}"
        );

        let props = &delivery.properties;
        let id = receipt["id"].as_str().unwrap();
        assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some(id));
        assert_eq!(
            props.correlation_id().as_ref().map(|s| s.as_str()),
            Some(correlation.as_str())
        );
        assert_eq!(
            props.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(*props.delivery_mode(), Some(2), "persistent");
        assert_eq!(props.kind().as_ref().map(|s| s.as_str()), Some(event_type));
        assert_eq!(
            props.app_id().as_ref().map(|s| s.as_str()),
            Some("event-gateway")
        );
        let sent_at = props.timestamp().expect("timestamp") as i64;
        assert!(sent_at >= before - 1 && sent_at <= before + 5);
    }
    assert_eq!(app.total_depth().await, 0, "exactly one message per event");
}

#[tokio::test]
async fn correlation_id_comes_from_header_then_metadata_then_is_generated() {
    let app = spawn_app().await;
    let mut body = event("quest.started");
    body["metadata"] = json!({"correlationId": "from-metadata", "source": "spoofed"});
    let response = app
        .http
        .post(format!("{}/v1/events", app.base))
        .bearer_auth(app.backend_token())
        .header("X-Correlation-Id", "from-header")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(header(&response, "x-correlation-id"), "from-header");
    let delivery = app.next_message(&app.queue("quest")).await;
    let sent: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(sent["metadata"]["correlationId"], "from-header");
    assert_eq!(
        sent["metadata"]["source"], "game-backend",
        "a client cannot set the source"
    );

    let response = app.publish(&body).await;
    assert_eq!(header(&response, "x-correlation-id"), "from-metadata");
    app.next_message(&app.queue("quest")).await;

    let response = app.publish(&event("quest.started")).await;
    let generated = header(&response, "x-correlation-id");
    assert_eq!(generated.len(), 36, "a UUID is generated: {generated}");
}

#[tokio::test]
async fn a_client_chosen_id_is_named_in_the_receipt_and_the_envelope_of_the_callers_event() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut body = event("reward.claimed");
    body["id"] = json!(id);
    let receipt: Value = app.publish(&body).await.json().await.unwrap();
    assert_eq!(receipt["clientId"], id.as_str());
    let delivery = app.next_message(&app.queue("reward")).await;
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        receipt["id"].as_str(),
        "the event id is the caller's own"
    );
    let envelope: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(envelope["metadata"]["clientId"], id.as_str());
}

#[tokio::test]
async fn typed_endpoint_takes_data_as_the_body() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/v1/events/achievement.completed", app.base))
        .bearer_auth(app.backend_token())
        .header("X-Correlation-Id", "correlation-789")
        .json(
            &json!({"achievementId": "achievement-123", "userId": "user-456",
            "name": "Achievement Name", "points": 100, "completedAt": "2026-11-26T10:00:00.000Z"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(header(&response, "x-correlation-id"), "correlation-789");
    let delivery = app.next_message(&app.queue("achievement")).await;
    let sent: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(sent["type"], "achievement.completed");
    assert_eq!(sent["data"]["achievementId"], "achievement-123");
    assert_eq!(sent["metadata"]["userId"], "user-456");

    let bad = app
        .post_json(
            "/v1/events/achievement.completed",
            &app.backend_token(),
            &json!({"achievementId": "a"}),
        )
        .await;
    let (status, refusal) = problem(bad).await;
    assert_eq!(status, 422);
    assert_eq!(
        pointers(&refusal),
        vec!["/userId"],
        "pointers address the body, which is data"
    );

    let unknown = app
        .post_json(
            "/v1/events/achievement.exploded",
            &app.backend_token(),
            &json!({}),
        )
        .await;
    let (status, refusal) = problem(unknown).await;
    assert_eq!(status, 422);
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .contains("achievement.exploded")
    );
}

#[tokio::test]
async fn a_batch_is_published_in_order_with_a_receipt_each() {
    let app = spawn_app().await;
    let body = json!({"events": [event("quest.started"), event("reward.created"), event("quest.completed")]});
    let response = app
        .post_json("/v1/events/batch", &app.backend_token(), &body)
        .await;
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let types: Vec<&str> = results
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["quest.started", "reward.created", "quest.completed"]
    );
    assert!(results.iter().all(|r| r["status"] == "published"));
    let first = app.next_message(&app.queue("quest")).await;
    let second = app.next_message(&app.queue("quest")).await;
    let reward = app.next_message(&app.queue("reward")).await;
    let id_of = |d: &lapin::message::Delivery| {
        serde_json::from_slice::<Value>(&d.data).unwrap()["id"].clone()
    };
    let mut quest_ids = vec![id_of(&first), id_of(&second)];
    quest_ids.sort_by_key(|v| v.to_string());
    let mut expected = vec![results[0]["id"].clone(), results[2]["id"].clone()];
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(quest_ids, expected);
    assert_eq!(id_of(&reward), results[1]["id"]);
}

#[tokio::test]
async fn a_batch_with_one_bad_event_is_refused_whole_and_names_it() {
    let app = spawn_app().await;
    let mut bad = event("achievement.completed");
    bad["data"]["points"] = json!(-5);
    let body = json!({"events": [event("quest.started"), bad, event("reward.created")]});
    let (status, problem) = problem(
        app.post_json("/v1/events/batch", &app.backend_token(), &body)
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(pointers(&problem), vec!["/events/1/data/points"]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.total_depth().await,
        0,
        "nothing of a refused batch is published"
    );
}

#[tokio::test]
async fn a_users_events_in_a_batch_reach_the_bus_in_request_order() {
    let app = spawn_app().await;
    let events: Vec<Value> = (0..40)
        .map(|step| {
            let kind = if step % 10 == 9 { "quest.completed" } else { "quest.progress_updated" };
            json!({"type": kind, "data": {"questId": format!("q-{step}"), "userId": "user-9", "progress": step}})
        })
        .collect();
    let response = app
        .post_json(
            "/v1/events/batch",
            &app.backend_token(),
            &json!({"events": events}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let mut arrived = Vec::new();
    for _ in 0..40 {
        let delivery = app.next_message(&app.queue("quest")).await;
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        arrived.push(body["data"]["questId"].as_str().unwrap().to_owned());
    }
    let expected: Vec<String> = (0..40).map(|step| format!("q-{step}")).collect();
    assert_eq!(
        arrived, expected,
        "critical and plain events alike, in request order"
    );
}

/// One channel is the default; with several, requests share them out and each request's
/// events still go out on one channel, in order.
#[tokio::test]
async fn with_several_publish_channels_concurrent_batches_keep_their_order() {
    let mut settings = test_settings();
    settings.amqp_publish_channels = 3;
    let app = spawn_app_with(settings).await;
    let batch = |user: usize| {
        let events: Vec<Value> = (0..15)
            .map(|step| json!({"type": "quest.progress_updated",
                "data": {"questId": format!("q-{user}-{step}"), "userId": format!("user-{user}"), "progress": step}}))
            .collect();
        json!({"events": events})
    };
    let token = app.backend_token();
    let bodies: Vec<Value> = (0..6).map(batch).collect();
    let answers = futures_util::future::join_all(
        bodies
            .iter()
            .map(|body| app.post_json("/v1/events/batch", &token, body)),
    )
    .await;
    for response in answers {
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{answer}");
        assert!(
            answer["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "published"),
            "{answer}"
        );
    }
    let mut arrived: Vec<Vec<String>> = vec![Vec::new(); 6];
    for _ in 0..90 {
        let delivery = app.next_message(&app.queue("quest")).await;
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        let quest = body["data"]["questId"].as_str().unwrap().to_owned();
        let user: usize = quest.split('-').nth(1).unwrap().parse().unwrap();
        arrived[user].push(quest);
    }
    for (user, quests) in arrived.iter().enumerate() {
        let expected: Vec<String> = (0..15).map(|step| format!("q-{user}-{step}")).collect();
        assert_eq!(quests, &expected, "user-{user}'s batch, in request order");
    }
    assert_eq!(app.depth(&app.queue("quest")).await, 0, "nothing more");
}

#[tokio::test]
async fn a_batch_may_not_repeat_an_event_id() {
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut first = event("quest.started");
    first["id"] = json!(id);
    let mut again = event("quest.created");
    again["id"] = json!(id);
    let body = json!({"events": [first, again]});
    let (status, refusal) = problem(
        app.post_json("/v1/events/batch", &app.backend_token(), &body)
            .await,
    )
    .await;
    assert_eq!(
        (status, pointers(&refusal)),
        (422, vec!["/events/1/id".to_owned()])
    );
    assert_eq!(app.total_depth().await, 0);
}

#[tokio::test]
async fn batch_size_is_bounded() {
    let app = spawn_app().await;
    let empty = app
        .post_json(
            "/v1/events/batch",
            &app.backend_token(),
            &json!({"events": []}),
        )
        .await;
    let (status, problem_body) = problem(empty).await;
    assert_eq!(
        (status, pointers(&problem_body)),
        (422, vec!["/events".to_owned()])
    );
    let small = json!({"type": "analytics.event_tracked", "data": {"analyticsId": "a", "userId": "u",
        "type": "t", "category": "c", "event": "e"}});
    let too_many = json!({"events": vec![small; 501]});
    let (status, problem_body) = problem(
        app.post_json("/v1/events/batch", &app.backend_token(), &too_many)
            .await,
    )
    .await;
    assert_eq!(
        (status, pointers(&problem_body)),
        (422, vec!["/events".to_owned()])
    );
}

#[tokio::test]
async fn metrics_count_published_events_and_requests_by_route() {
    let app = spawn_app().await;
    assert_eq!(app.publish(&event("notification.read")).await.status(), 202);
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(
            r#"gateway_events_published_total{outcome="published",type="notification.read"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"gateway_http_requests_total{method="POST",route="/v1/events",status="202"} 1"#
    ));
    assert!(text.contains("gateway_publish_confirm_duration_seconds_count 1"));
    assert!(text.contains("gateway_broker_connected 1"));
}

#[tokio::test]
async fn graceful_shutdown_answers_in_flight_publishes_truthfully() {
    let mut app = spawn_app().await;
    let token = app.backend_token();
    let requests: Vec<_> = (0..40)
        .map(|_| {
            let request = app
                .http
                .post(format!("{}/v1/events", app.base))
                .bearer_auth(&token)
                .json(&event("analytics.event_tracked"));
            tokio::spawn(request.send())
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.stop().await.expect("clean stop");
    let mut accepted = 0;
    for request in requests {
        if let Ok(response) = request.await.unwrap() {
            assert_eq!(
                response.status(),
                202,
                "a request the server took is finished, not dropped"
            );
            accepted += 1;
        }
    }
    assert_eq!(
        app.depth(&app.queue("analytics")).await,
        accepted,
        "every 202 is on the bus"
    );
}

#[tokio::test]
async fn health_reports_every_queue_and_redis() {
    let app = spawn_app().await;
    app.publish(&event("quest.created")).await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    let health: Value = response.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["rabbitMQ"]["connected"], true);
    let queues = health["rabbitMQ"]["queues"].as_array().unwrap();
    let names: Vec<&str> = queues.iter().map(|q| q["name"].as_str().unwrap()).collect();
    let prefix = &app.settings.amqp_queue_prefix;
    let expected: Vec<String> = [
        "achievement",
        "quest",
        "reward",
        "notification",
        "analytics",
        "failed",
    ]
    .iter()
    .map(|f| format!("{prefix}{f}_events"))
    .collect();
    assert_eq!(names, expected);
    assert_eq!(queues[1]["messageCount"], 1);
    assert_eq!(queues[1]["consumerCount"], 0);
    assert_eq!(health["redis"]["connected"], true);
    assert!(
        health["redis"]["usedMemory"]
            .as_str()
            .unwrap()
            .ends_with(['B', 'K', 'M', 'G'])
    );
    assert!(health["redis"]["hitRate"].as_f64().unwrap() >= 0.0);
    assert_eq!(app.get("/health/live").await.status(), 200);
    assert_eq!(app.get("/health/ready").await.status(), 200);
}

#[tokio::test]
async fn topology_declares_the_dead_letter_exchange_and_failed_events() {
    let app = spawn_app().await;
    let dlx = &app.topology.dead_letter_exchange;
    let probe = lapin::BasicProperties::default().with_headers(
        [("x-test".into(), AMQPValue::Boolean(true))]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
            .into(),
    );
    app.broker
        .basic_publish(
            dlx.as_str().into(),
            "error.achievement".into(),
            Default::default(),
            b"{}",
            probe,
        )
        .await
        .unwrap();
    let delivery = app
        .next_message(&format!("{}failed_events", app.settings.amqp_queue_prefix))
        .await;
    assert_eq!(delivery.routing_key.as_str(), "error.achievement");
}
