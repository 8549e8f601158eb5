//! The background consumers: one per family queue, deleting the Redis keys each event
//! makes stale, retrying failures through RabbitMQ's own delay queues (so the queue keeps
//! flowing), dead-lettering what keeps failing; and one on `failed_events` that records
//! dead letters in PostgreSQL.
//!
//! A message is acknowledged only once it is handled, or its retry or dead letter is
//! confirmed by the broker.

mod handler;
pub mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument, warn};
use uuid::Uuid;

pub use handler::{CacheInvalidator, HandleError};

use crate::bus::Topology;
use crate::bus::publisher::confirmation_outcome;
use crate::domain::Family;
use crate::domain::retry::RetryPolicy;
use crate::metrics::Metrics;
use crate::store::{DeadLetter, Store, StoreError};

const ATTEMPT_HEADER: &str = "x-attempt";
const ERROR_HEADER: &str = "x-last-error";
const ROUTING_KEY_HEADER: &str = "x-original-routing-key";
const QUEUE_HEADER: &str = "x-original-queue";
const DEAD_LETTER_ID_HEADER: &str = "x-dead-letter-id";
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub url: String,
    pub topology: Topology,
    pub prefetch: u16,
    pub retry: RetryPolicy,
}

/// Everything a consumer task needs; cheap to clone.
#[derive(Clone)]
struct Context {
    settings: Arc<ConsumerSettings>,
    invalidator: CacheInvalidator,
    store: Store,
    metrics: Arc<Metrics>,
}

/// The running consumers; [`Consumers::stop`] ends them.
pub struct Consumers {
    stop: CancellationToken,
    supervisor: JoinHandle<()>,
}

impl Consumers {
    pub fn start(
        settings: ConsumerSettings,
        invalidator: CacheInvalidator,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Self {
        let stop = CancellationToken::new();
        let context = Context {
            settings: Arc::new(settings),
            invalidator,
            store,
            metrics,
        };
        let supervisor = tokio::spawn(supervise(context, stop.clone()));
        Consumers { stop, supervisor }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.supervisor.await {
            warn!(%error, "the consumer supervisor ended abnormally");
        }
    }
}

/// Keeps every consumer running, reconnecting with backoff when the connection drops.
async fn supervise(context: Context, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    while !stop.is_cancelled() {
        let started = tokio::select! {
            () = stop.cancelled() => return,
            started = start_consumers(&context) => started,
        };
        match started {
            Ok((connection, mut consumers)) => {
                backoff = Duration::from_millis(200);
                info!(consumers = consumers.len(), "consuming");
                tokio::select! {
                    () = stop.cancelled() => {}
                    _ = consumers.join_next() => warn!("a consumer stopped; reconnecting"),
                }
                consumers.abort_all();
                // A failed close only means the connection was already gone.
                let _ = connection
                    .close(200, "event-gateway consumers stopping".into())
                    .await;
            }
            Err(error) => {
                warn!(
                    error = format!("{error:#}"),
                    retry_in_ms = backoff.as_millis() as u64,
                    "consumers cannot start"
                );
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn start_consumers(context: &Context) -> anyhow::Result<(Connection, JoinSet<()>)> {
    let settings = &context.settings;
    let connection = settings
        .topology
        .connect(&settings.url, "event-gateway-consumers")
        .await?;
    let mut consumers = JoinSet::new();
    for (family, binding) in Family::ALL
        .into_iter()
        .zip(settings.topology.family_queues())
    {
        let (channel, deliveries) =
            subscribe(&connection, &binding.queue, settings.prefetch).await?;
        let context = context.clone();
        let queue = binding.queue.clone();
        consumers.spawn(async move {
            let prefetch = usize::from(context.settings.prefetch);
            deliveries
                .for_each_concurrent(prefetch, |delivery| async {
                    match delivery {
                        Ok(delivery) => process(&context, &channel, family, &queue, delivery).await,
                        Err(error) => warn!(%error, queue, "delivery failed"),
                    }
                })
                .await;
        });
    }
    let failed = settings.topology.failed_queue().to_owned();
    let (_, deliveries) = subscribe(&connection, &failed, settings.prefetch).await?;
    let context = context.clone();
    consumers.spawn(async move {
        deliveries
            .for_each(|delivery| async {
                match delivery {
                    Ok(delivery) => record_dead_letter(&context, delivery).await,
                    Err(error) => warn!(%error, "dead-letter delivery failed"),
                }
            })
            .await;
    });
    Ok((connection, consumers))
}

/// A channel in confirm mode with `prefetch`, consuming `queue` with manual acks.
async fn subscribe(
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

/// Handles one message, then acks it, or hands it to a retry queue or `failed_events`.
#[instrument(skip_all, fields(queue, attempt))]
async fn process(
    context: &Context,
    channel: &Channel,
    family: Family,
    queue: &str,
    delivery: Delivery,
) {
    let attempt = header_u32(&delivery, ATTEMPT_HEADER).unwrap_or(1);
    tracing::Span::current().record("attempt", attempt);
    let started = Instant::now();
    let outcome = context.invalidator.handle(&delivery.data).await;
    let metrics = &context.metrics;
    metrics
        .processing_seconds
        .with_label_values(&[queue])
        .observe(started.elapsed().as_secs_f64());
    let settled = match outcome {
        Ok(_) => Ok("handled"),
        Err(HandleError::Transient(error)) => match context.settings.retry.delay_after(attempt) {
            Some(delay) => retry(context, channel, queue, &delivery, attempt, delay, &error)
                .await
                .map(|()| "retried"),
            None => dead_letter(context, channel, family, queue, &delivery, attempt, &error)
                .await
                .map(|()| "dead_lettered"),
        },
        Err(HandleError::Poison(error)) => {
            dead_letter(context, channel, family, queue, &delivery, attempt, &error)
                .await
                .map(|()| "dead_lettered")
        }
    };
    match settled {
        Ok(outcome) => {
            metrics
                .events_consumed
                .with_label_values(&[queue, outcome])
                .inc();
            match outcome {
                "retried" => metrics.event_retries.with_label_values(&[queue]).inc(),
                "dead_lettered" => metrics.events_failed.with_label_values(&[queue]).inc(),
                _ => {}
            }
            if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
                warn!(%error, "ack failed; the message will be redelivered and handled again");
            }
        }
        Err(error) => {
            warn!(%error, "could not retry or dead-letter; returning the message to its queue");
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            if let Err(error) = delivery.acker.nack(requeue).await {
                warn!(%error, "nack failed; the broker will redeliver on reconnect");
            }
        }
    }
}

/// Parks the message in the retry queue for `delay`; it then returns to `queue`.
async fn retry(
    context: &Context,
    channel: &Channel,
    queue: &str,
    delivery: &Delivery,
    attempt: u32,
    delay: Duration,
    error: &str,
) -> anyhow::Result<()> {
    let retry_queue = context
        .settings
        .topology
        .retry_queues
        .iter()
        .find(|r| r.returns_to == queue && r.delay == delay)
        .ok_or_else(|| anyhow::anyhow!("no retry queue for {queue} after {delay:?}"))?;
    let headers = failure_headers(delivery, queue, attempt + 1, error);
    publish_confirmed(channel, "", &retry_queue.queue, delivery, headers).await
}

/// Sends the message to the dead-letter exchange as `error.<family>`.
async fn dead_letter(
    context: &Context,
    channel: &Channel,
    family: Family,
    queue: &str,
    delivery: &Delivery,
    attempt: u32,
    error: &str,
) -> anyhow::Result<()> {
    warn!(queue, attempt, error, "dead-lettering a message");
    let mut headers = failure_headers(delivery, queue, attempt, error);
    headers.insert(
        DEAD_LETTER_ID_HEADER.into(),
        AMQPValue::LongString(Uuid::now_v7().to_string().into()),
    );
    let exchange = &context.settings.topology.dead_letter_exchange;
    publish_confirmed(
        channel,
        exchange,
        &format!("error.{family}"),
        delivery,
        headers,
    )
    .await
}

/// The message's headers plus the attempt count, the last error and where it came from.
fn failure_headers(delivery: &Delivery, queue: &str, attempt: u32, error: &str) -> FieldTable {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let routing_key = header_string(delivery, ROUTING_KEY_HEADER)
        .unwrap_or_else(|| delivery.routing_key.to_string());
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(error.into()));
    headers.insert(
        ROUTING_KEY_HEADER.into(),
        AMQPValue::LongString(routing_key.into()),
    );
    headers.insert(QUEUE_HEADER.into(), AMQPValue::LongString(queue.into()));
    headers
}

async fn publish_confirmed(
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
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &delivery.data,
            properties,
        )
        .await?
        .await?;
    Ok(confirmation_outcome(confirmation, routing_key)?)
}

/// Records a message from `failed_events` in PostgreSQL, once.
async fn record_dead_letter(context: &Context, delivery: Delivery) {
    let letter = DeadLetter {
        id: header_string(&delivery, DEAD_LETTER_ID_HEADER)
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(Uuid::now_v7),
        event_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string()),
        routing_key: header_string(&delivery, ROUTING_KEY_HEADER)
            .unwrap_or_else(|| delivery.routing_key.to_string()),
        queue: header_string(&delivery, QUEUE_HEADER).unwrap_or_default(),
        attempts: header_u32(&delivery, ATTEMPT_HEADER).unwrap_or(0) as i32,
        last_error: header_string(&delivery, ERROR_HEADER).unwrap_or_default(),
        body: delivery.data.clone(),
        failed_at: time::OffsetDateTime::now_utc(),
        replayed_at: None,
    };
    match context.store.record_dead_letter(letter).await {
        Ok(()) => {
            if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
                warn!(%error, "dead letter recorded but not acked; it will be recorded once more (no-op)");
            }
        }
        Err(StoreError::Unavailable(error)) if matches!(*error, sqlx::Error::Database(_)) => {
            // The database refused this row itself (not a connection problem): retrying
            // would stall failed_events behind it forever.
            error!(%error, "a dead letter cannot be recorded; dropping it from failed_events");
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        }
        Err(error) => {
            warn!(%error, "cannot record a dead letter; returning it to failed_events");
            // Do not spin on a database that is down.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
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
