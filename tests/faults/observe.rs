//! What ended up where: every message on the scenario's family queues, in queue order,
//! and the critical events PostgreSQL holds.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use lapin::message::Delivery;
use lapin::options::BasicGetOptions;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;
use sqlx::{Connection as _, PgConnection};
use uuid::Uuid;

use crate::process::{now_ms, parse_ms};

pub const FAMILIES: [&str; 5] = [
    "achievement",
    "quest",
    "reward",
    "notification",
    "analytics",
];

/// One message as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Message {
    pub queue: String,
    pub message_id: Option<Uuid>,
    pub user: String,
    pub seq: u64,
    /// `metadata.timestamp`: when the gateway accepted this copy (ms since the epoch).
    pub accepted_ms: Option<u64>,
    /// `metadata.scheduledFor`: the `deliverAt` of a scheduled event (ms since the epoch).
    pub scheduled_for_ms: Option<u64>,
    /// When the catalogue took it off the queue (ms since the epoch): it was on the bus
    /// by then.
    pub received_ms: u64,
}

impl Message {
    fn parse(queue: &str, message_id: Option<&str>, body: &[u8]) -> anyhow::Result<Message> {
        let body: Value = serde_json::from_slice(body).context("a message body")?;
        let metadata = &body["metadata"];
        Ok(Message {
            queue: queue.to_owned(),
            message_id: message_id.and_then(|id| id.parse().ok()),
            user: body["data"]["userId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            seq: body["data"]["metadata"]["seq"].as_u64().unwrap_or_default(),
            accepted_ms: metadata["timestamp"].as_str().and_then(parse_ms),
            scheduled_for_ms: metadata["scheduledFor"].as_str().and_then(parse_ms),
            received_ms: now_ms(),
        })
    }

    pub fn from_delivery(queue: &str, delivery: &Delivery) -> anyhow::Result<Message> {
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string());
        Message::parse(queue, id.as_deref(), &delivery.data)
    }
}

/// Takes every message off the family queues named with `namespace` (no consumer runs, so
/// they are all still there), each queue in its order.
pub async fn drain_queues(amqp_url: &str, namespace: &str) -> anyhow::Result<Vec<Message>> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut messages = Vec::new();
    for family in FAMILIES {
        let queue = format!("{namespace}.{family}_events");
        while let Some(got) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .with_context(|| format!("basic.get on {queue}"))?
        {
            messages.push(Message::from_delivery(&queue, &got.delivery)?);
        }
    }
    let _ = connection.close(200, "read".into()).await;
    Ok(messages)
}

/// The ids of the critical events PostgreSQL holds.
pub async fn persisted_ids(url: &str) -> anyhow::Result<HashSet<Uuid>> {
    let mut connection = PgConnection::connect(url)
        .await
        .context("the scenario's database")?;
    let ids: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM events")
        .fetch_all(&mut connection)
        .await?;
    let _ = connection.close().await;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// How many rows the outbox still owes the broker.
pub async fn outbox_owed(url: &str) -> anyhow::Result<i64> {
    let mut connection = PgConnection::connect(url)
        .await
        .context("the scenario's database")?;
    let (owed,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
        .fetch_one(&mut connection)
        .await?;
    let _ = connection.close().await;
    Ok(owed)
}

/// Waits until the outbox owes nothing (the relay published everything), up to `limit`;
/// returns what it still owes (-1: the database did not answer).
pub async fn wait_outbox_empty(url: &str, limit: Duration) -> i64 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let owed = outbox_owed(url).await.unwrap_or(-1);
        if owed == 0 || tokio::time::Instant::now() >= deadline {
            return owed;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
