//! The background consumers: one per family queue, deleting the Redis keys each event
//! makes stale (`rules.rs`), retrying failures through RabbitMQ's own delay queues (so the
//! queue keeps flowing), dead-lettering what keeps failing; and one on `failed_events`
//! that records dead letters in PostgreSQL. The broker side of all this is
//! [`crate::bus::consume`].
//!
//! A message is acknowledged only once it is handled, or its retry or dead letter is
//! confirmed by the broker.

mod handler;
pub mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::{Channel, Connection};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, field, info, info_span, warn};

pub use handler::{CacheInvalidator, HandleError};

use crate::app::ports::StoreError;
use crate::bus::consume::{self, Failure};
use crate::bus::{Broker, Topology};
use crate::domain::Family;
use crate::domain::trace::TraceParent;
use crate::runtime::backoff::{Backoff, Reconnect, RetryPolicy};
use crate::runtime::metrics::{ConsumeOutcome, Metrics};
use crate::runtime::reason::Peer;
use crate::runtime::telemetry;
use crate::runtime::worker::Workers;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub broker: Broker,
    pub topology: Topology,
    pub prefetch: u16,
    pub retry: RetryPolicy,
}

/// Everything a consumer task needs; cheap to clone.
#[derive(Clone)]
pub struct Consumers {
    settings: Arc<ConsumerSettings>,
    invalidator: CacheInvalidator,
    store: Store,
    metrics: Arc<Metrics>,
}

impl Consumers {
    pub fn new(
        settings: ConsumerSettings,
        invalidator: CacheInvalidator,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Self {
        Consumers {
            settings: Arc::new(settings),
            invalidator,
            store,
            metrics,
        }
    }

    /// Starts every consumer, reconnecting with backoff when the connection drops, until
    /// `workers` stop.
    pub fn spawn(self, workers: &Workers) {
        workers.spawn("consumers", self.supervise(workers.token()));
    }

    async fn supervise(self, stop: CancellationToken) {
        let mut reconnect =
            Reconnect::new("consumers cannot start", Backoff::RECONNECT).to(Peer::RabbitMq);
        while !stop.is_cancelled() {
            let started = tokio::select! {
                () = stop.cancelled() => return,
                started = self.start() => started,
            };
            match started {
                Ok((connection, mut consumers)) => {
                    reconnect.succeeded();
                    info!(consumers = consumers.len(), "consuming");
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = consumers.join_next() => warn!("a consumer stopped; reconnecting"),
                    }
                    consumers.abort_all();
                    Topology::close(&connection, "event-gateway consumers stopping").await;
                }
                Err(error) => {
                    if !reconnect.wait_after(&error, &stop).await {
                        return;
                    }
                }
            }
        }
    }

    async fn start(&self) -> anyhow::Result<(Connection, JoinSet<()>)> {
        let settings = &self.settings;
        let connection = settings
            .topology
            .connect(&settings.broker, "event-gateway-consumers")
            .await?;
        let mut consumers = JoinSet::new();
        let families = Family::ALL
            .into_iter()
            .zip(settings.topology.family_queues());
        for (family, binding) in families {
            let (channel, deliveries) =
                consume::subscribe(&connection, &binding.queue, settings.prefetch).await?;
            let (this, queue) = (self.clone(), binding.queue.clone());
            consumers.spawn(async move {
                let prefetch = usize::from(this.settings.prefetch);
                deliveries
                    .for_each_concurrent(prefetch, |delivery| async {
                        match delivery {
                            Ok(delivery) => this.process(&channel, family, &queue, delivery).await,
                            Err(error) => warn!(%error, queue, "delivery failed"),
                        }
                    })
                    .await;
            });
        }
        let failed = settings.topology.failed_queue();
        let (_, deliveries) = consume::subscribe(&connection, failed, settings.prefetch).await?;
        let this = self.clone();
        consumers.spawn(async move {
            deliveries
                .for_each(|delivery| async {
                    match delivery {
                        Ok(delivery) => this.record_dead_letter(delivery).await,
                        Err(error) => warn!(%error, "dead-letter delivery failed"),
                    }
                })
                .await;
        });
        Ok((connection, consumers))
    }

    /// Handles one message in a span that continues its trace (its `traceparent`).
    async fn process(&self, channel: &Channel, family: Family, queue: &str, delivery: Delivery) {
        let attempt = consume::attempt(&delivery);
        let upstream = consume::traceparent(&delivery)
            .as_deref()
            .and_then(TraceParent::parse);
        let trace_id = upstream.map(|parent| field::display(parent.trace_id));
        let span = info_span!("consume", queue, attempt, trace_id);
        telemetry::follow(&span, upstream.as_ref(), None);
        self.handle(channel, family, queue, delivery, attempt)
            .instrument(span)
            .await
    }

    /// Handles one message, then acks it, or hands it to a retry queue or `failed_events`.
    async fn handle(
        &self,
        channel: &Channel,
        family: Family,
        queue: &str,
        delivery: Delivery,
        attempt: u32,
    ) {
        let started = Instant::now();
        let outcome = self.invalidator.handle(&delivery.data).await;
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.message_handled(queue, seconds);
        let (retry_after, error) = match &outcome {
            Ok(_) => (None, String::new()),
            Err(HandleError::Transient(error)) => {
                (self.settings.retry.delay_after(attempt), error.clone())
            }
            Err(HandleError::Poison(error)) => (None, error.clone()),
        };
        let failure = Failure {
            queue,
            attempt,
            error: &error,
        };
        let settled = match (outcome, retry_after) {
            (Ok(_), _) => Ok(ConsumeOutcome::Handled),
            (Err(_), Some(delay)) => self
                .retry(channel, &delivery, delay, failure)
                .await
                .map(|()| ConsumeOutcome::Retried),
            (Err(_), None) => self
                .dead_letter(channel, family, &delivery, failure)
                .await
                .map(|()| ConsumeOutcome::DeadLettered),
        };
        match settled {
            Ok(outcome) => {
                self.metrics.message_consumed(queue, outcome);
                consume::ack(&delivery).await;
            }
            Err(error) => {
                warn!(%error, "could not retry or dead-letter; returning the message to its queue");
                consume::requeue(&delivery).await;
            }
        }
    }

    /// Parks the message in the retry queue for `delay`; it then returns to its queue.
    async fn retry(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        delay: Duration,
        failure: Failure<'_>,
    ) -> anyhow::Result<()> {
        let queue = failure.queue;
        let retry_queue = self
            .settings
            .topology
            .retry_queues
            .iter()
            .find(|r| r.returns_to == queue && r.delay == delay)
            .ok_or_else(|| anyhow::anyhow!("no retry queue for {queue} after {delay:?}"))?;
        consume::retry(channel, delivery, &retry_queue.queue, failure).await
    }

    /// Sends the message to the dead-letter exchange as `error.<family>`.
    async fn dead_letter(
        &self,
        channel: &Channel,
        family: Family,
        delivery: &Delivery,
        failure: Failure<'_>,
    ) -> anyhow::Result<()> {
        warn!(
            queue = failure.queue,
            attempt = failure.attempt,
            error = failure.error,
            "dead-lettering a message"
        );
        let exchange = &self.settings.topology.dead_letter_exchange;
        let routing_key = format!("error.{family}");
        consume::dead_letter(channel, delivery, exchange, &routing_key, failure).await
    }

    /// Records a message from `failed_events` in PostgreSQL, once.
    async fn record_dead_letter(&self, delivery: Delivery) {
        match self
            .store
            .record_dead_letter(consume::dead_letter_record(&delivery))
            .await
        {
            Ok(()) => consume::ack(&delivery).await,
            Err(StoreError::Refused(error)) => {
                // The database refused this row itself (not a connection problem):
                // retrying would stall failed_events behind it forever.
                error!(%error, "a dead letter cannot be recorded; dropping it from failed_events");
                consume::ack(&delivery).await;
            }
            Err(error) => {
                warn!(%error, "cannot record a dead letter; returning it to failed_events");
                // Do not spin on a database that is down.
                tokio::time::sleep(Duration::from_secs(1)).await;
                consume::requeue(&delivery).await;
            }
        }
    }
}
