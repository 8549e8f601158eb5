//! The consumers' side of the broker: a channel per queue with prefetch and manual acks,
//! confirmed republishing of a failed message (to a retry queue or the dead-letter
//! exchange), and the headers that carry its story (`x-attempt`, `x-last-error`, where it
//! came from, its dead-letter id).

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};
use time::OffsetDateTime;
use tracing::warn;
use uuid::Uuid;

use super::publisher::{MANDATORY, TRACEPARENT_HEADER, TRACESTATE_HEADER, confirmation_outcome};
use crate::app::records::DeadLetter;

const ATTEMPT_HEADER: &str = "x-attempt";
const ERROR_HEADER: &str = "x-last-error";
const ROUTING_KEY_HEADER: &str = "x-original-routing-key";
const QUEUE_HEADER: &str = "x-original-queue";
const DEAD_LETTER_ID_HEADER: &str = "x-dead-letter-id";

/// A channel in confirm mode with `prefetch`, consuming `queue` with manual acks.
pub async fn subscribe(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
) -> lapin::Result<(Channel, lapin::Consumer)> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            "event-gateway".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Which attempt at handling this is (1 for a message never retried).
pub fn attempt(delivery: &Delivery) -> u32 {
    header_u32(delivery, ATTEMPT_HEADER).unwrap_or(1)
}

/// Why and where a message failed, for the headers of its retry or dead letter.
pub struct Failure<'a> {
    pub queue: &'a str,
    pub attempt: u32,
    pub error: &'a str,
}

/// Parks the message in `retry_queue`, as attempt `failure.attempt + 1`, confirmed.
pub async fn retry(
    channel: &Channel,
    delivery: &Delivery,
    retry_queue: &str,
    failure: Failure<'_>,
) -> anyhow::Result<()> {
    let next = Failure {
        attempt: failure.attempt + 1,
        ..failure
    };
    let headers = failure_headers(delivery, &next);
    republish(channel, "", retry_queue, delivery, headers).await
}

/// Sends the message to `exchange` as `routing_key`, with a dead-letter id, confirmed.
pub async fn dead_letter(
    channel: &Channel,
    delivery: &Delivery,
    exchange: &str,
    routing_key: &str,
    failure: Failure<'_>,
) -> anyhow::Result<()> {
    let mut headers = failure_headers(delivery, &failure);
    headers.insert(
        DEAD_LETTER_ID_HEADER.into(),
        AMQPValue::LongString(Uuid::now_v7().to_string().into()),
    );
    republish(channel, exchange, routing_key, delivery, headers).await
}

/// Done with the message.
pub async fn ack(delivery: &Delivery) {
    if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
        warn!(%error, "ack failed; the message will be redelivered and handled again");
    }
}

/// Back to its queue, to be delivered again.
pub async fn requeue(delivery: &Delivery) {
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(error) = delivery.acker.nack(requeue).await {
        warn!(%error, "nack failed; the broker will redeliver on reconnect");
    }
}

/// A message from `failed_events` as the dead letter it records.
pub fn dead_letter_record(delivery: &Delivery) -> DeadLetter {
    DeadLetter {
        id: header_string(delivery, DEAD_LETTER_ID_HEADER)
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(Uuid::now_v7),
        event_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        routing_key: original_routing_key(delivery),
        queue: header_string(delivery, QUEUE_HEADER).unwrap_or_default(),
        attempts: header_u32(delivery, ATTEMPT_HEADER).unwrap_or(0) as i32,
        last_error: header_string(delivery, ERROR_HEADER).unwrap_or_default(),
        body: delivery.data.clone(),
        failed_at: OffsetDateTime::now_utc(),
        replayed_at: None,
        traceparent: traceparent(delivery),
        tracestate: header_string(delivery, TRACESTATE_HEADER)
            .filter(|state| crate::domain::trace::valid_tracestate(state).is_some()),
    }
}

/// The message's `traceparent` header, as it came.
pub fn traceparent(delivery: &Delivery) -> Option<String> {
    header_string(delivery, TRACEPARENT_HEADER)
}

/// The message's headers (its `traceparent` among them) plus the attempt count, the last error and where it came from.
fn failure_headers(delivery: &Delivery, failure: &Failure<'_>) -> FieldTable {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let routing_key = original_routing_key(delivery);
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(failure.attempt));
    headers.insert(
        ERROR_HEADER.into(),
        AMQPValue::LongString(failure.error.into()),
    );
    headers.insert(
        ROUTING_KEY_HEADER.into(),
        AMQPValue::LongString(routing_key.into()),
    );
    headers.insert(
        QUEUE_HEADER.into(),
        AMQPValue::LongString(failure.queue.into()),
    );
    headers
}

fn original_routing_key(delivery: &Delivery) -> String {
    header_string(delivery, ROUTING_KEY_HEADER).unwrap_or_else(|| delivery.routing_key.to_string())
}

async fn republish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    delivery: &Delivery,
    headers: FieldTable,
) -> anyhow::Result<()> {
    let properties = delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2);
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            ShortString::from(routing_key),
            MANDATORY,
            &delivery.data,
            properties,
        )
        .await?
        .await?;
    Ok(confirmation_outcome(confirmation, routing_key)?)
}

fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    delivery.properties.headers().as_ref()?.inner().get(name)
}

fn header_u32(delivery: &Delivery, name: &str) -> Option<u32> {
    match header(delivery, name)? {
        AMQPValue::LongUInt(value) => Some(*value),
        AMQPValue::LongInt(value) => u32::try_from(*value).ok(),
        AMQPValue::LongLongInt(value) => u32::try_from(*value).ok(),
        AMQPValue::ShortInt(value) => u32::try_from(*value).ok(),
        _ => None,
    }
}

fn header_string(delivery: &Delivery, name: &str) -> Option<String> {
    match header(delivery, name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        AMQPValue::ShortString(value) => Some(value.to_string()),
        _ => None,
    }
}
