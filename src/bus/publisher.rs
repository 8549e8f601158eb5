//! The app-owned handle in front of lapin: one connection, confirm-mode channels (one by
//! default), and a supervisor (`link.rs`) that reconnects with backoff and redeclares
//! the topology.
//!
//! Every request publishes and then awaits its own verdict, so many confirms are in flight
//! at once (bounded by a semaphore). Each channel's collector (`confirms.rs`) owns them and
//! judges each message by its own `message_id`, since lapin attaches a returned message to
//! whichever confirm it resolves next; no lock is held across a wait.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation};
use tokio::sync::{Notify, Semaphore};
use tracing::{Instrument, info_span, instrument};

use super::Broker;
use super::confirm_book::Sent;
use super::confirms::{Confirms, Outgoing};
use super::link::{Link, supervise};
use super::send_gate::{NoSlot, SendGate};
use super::topology::Topology;
use crate::app::ports::{Cause, EventBus, PublishError};
use crate::app::records::{OutgoingMessage, QueueDepth};
use crate::domain::trace::TraceContext;
use crate::runtime::detached::finish_detached;
use crate::runtime::metrics::Metrics;
use crate::runtime::reason::LastError;
use crate::runtime::worker::Workers;

/// How the publisher reaches the broker.
#[derive(Debug, Clone)]
pub struct BusSettings {
    pub broker: Broker,
    pub topology: Topology,
    pub channels: u16,
    pub max_in_flight: u32,
    pub confirm_timeout: Duration,
}

pub(super) struct Shared {
    pub(super) settings: BusSettings,
    pub(super) link: RwLock<Option<Arc<Link>>>,
    pub(super) broken: Notify,
    in_flight: Semaphore,
    pub(super) metrics: Arc<Metrics>,
    /// Why the last connect failed, until one succeeds.
    pub(super) last_error: LastError,
}

/// Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl Publisher {
    /// Starts the supervisor that connects (and reconnects) in the background; publishing
    /// answers [`PublishError::Unavailable`] until the first connection is up.
    /// The connection closes when `workers` stop (the gateway stops them once the requests
    /// and the other workers are done).
    pub fn start(settings: BusSettings, metrics: Arc<Metrics>, workers: &Workers) -> Self {
        let shared = Arc::new(Shared {
            in_flight: Semaphore::new(settings.max_in_flight as usize),
            settings,
            link: RwLock::new(None),
            broken: Notify::new(),
            metrics,
            last_error: LastError::default(),
        });
        workers.spawn(
            "broker connection",
            supervise(shared.clone(), workers.token()),
        );
        Publisher { shared }
    }

    pub fn topology(&self) -> &Topology {
        &self.shared.settings.topology
    }

    fn connected(&self) -> bool {
        self.current().is_some_and(|link| link.is_healthy())
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.shared.link.read().ok().and_then(|link| link.clone())
    }

    /// Publishes persistent and mandatory, and returns once the broker confirmed it.
    pub async fn publish_confirmed(&self, message: OutgoingMessage) -> Result<(), PublishError> {
        self.publish_detached(vec![message])
            .await
            .pop()
            .unwrap_or(Err(PublishError::Unavailable(None)))
    }

    /// Publishes `messages` (persistent, mandatory) one after another on one channel, so
    /// they reach each queue in this order, then awaits all their verdicts together. One
    /// outcome per message.
    ///
    /// The work is detached and the channel's collector owns the confirms: if the caller
    /// stops waiting (confirm timeout, client disconnect) they are still collected.
    async fn publish_detached(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Vec<Result<(), PublishError>> {
        let count = messages.len();
        let publisher = self.clone();
        let timeout = self.shared.settings.confirm_timeout;
        let gate = Arc::new(SendGate::default());
        let opened = gate.clone();
        let work = finish_detached(async move { publisher.send_in_order(messages, &opened).await });
        let failed = |error: &dyn Fn() -> PublishError| (0..count).map(|_| Err(error())).collect();
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(panicked)) => {
                let cause: Cause = Arc::new(panicked);
                if gate.close_unsent() {
                    failed(&|| PublishError::Unavailable(Some(cause.clone())))
                } else {
                    failed(&|| PublishError::ConfirmLost(cause.clone()))
                }
            }
            // Still waiting for an in-flight slot: it is never sent now, so say so.
            Err(_elapsed) if gate.close_unsent() => {
                let cause: Cause = Arc::new(NoSlot(timeout));
                failed(&|| PublishError::Unavailable(Some(cause.clone())))
            }
            Err(_elapsed) => failed(&|| PublishError::ConfirmTimeout(timeout)),
        }
    }

    async fn send_in_order(
        &self,
        messages: Vec<OutgoingMessage>,
        gate: &SendGate,
    ) -> Vec<Result<(), PublishError>> {
        let unsent = |cause: Option<Cause>| {
            let all = messages.iter();
            all.map(|_| Err(PublishError::Unavailable(cause.clone())))
                .collect()
        };
        let slots = (messages.len() as u32).min(self.shared.settings.max_in_flight);
        let Ok(_slots) = self.shared.in_flight.acquire_many(slots).await else {
            return unsent(None);
        };
        let Some(link) = self.current() else {
            return unsent(None);
        };
        if !gate.open() {
            // The caller gave up already and answered that these were not sent.
            return unsent(None);
        }
        let started = Instant::now();
        let count = messages.len();
        let verdicts = self.hand_to_collector(&link.pick().1, messages);
        join_all(verdicts.into_iter().map(|verdict| async move {
            let verdict = verdict.await;
            match &verdict {
                Ok(()) => self
                    .shared
                    .metrics
                    .publish_confirm_seconds
                    .observe(started.elapsed().as_secs_f64()),
                Err(PublishError::ConfirmLost(_) | PublishError::Unavailable(Some(_))) => {
                    self.shared.broken.notify_one();
                }
                Err(_) => {}
            }
            verdict
        }))
        .instrument(info_span!("confirm", messages = count))
        .await
    }

    /// Hands the messages to a channel's collector, which publishes them in this order.
    fn hand_to_collector(
        &self,
        confirms: &Confirms,
        messages: Vec<OutgoingMessage>,
    ) -> Vec<impl Future<Output = Result<(), PublishError>> + use<>> {
        let exchange = ShortString::from(self.topology().exchange.as_str());
        let batch = messages.into_iter().map(|message| Outgoing {
            exchange: exchange.clone(),
            properties: properties(&message),
            sent: Sent {
                message_id: message.message_id,
                routing_key: message.routing_key,
            },
            body: message.body,
        });
        confirms.publish_in_order(batch.collect())
    }

    /// A channel or connection failed: wake the supervisor to check and rebuild.
    fn lost(&self, error: lapin::Error) -> PublishError {
        self.shared.broken.notify_one();
        PublishError::Unavailable(Some(Arc::new(error)))
    }

    /// Message and consumer counts of every declared queue, by passive declares.
    async fn read_queue_depths(&self) -> Result<Vec<QueueDepth>, PublishError> {
        let link = self.current().ok_or(PublishError::Unavailable(None))?;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|e| self.lost(e))?;
        let mut depths = Vec::new();
        for binding in &self.topology().queues {
            let queue = channel
                .queue_declare(
                    binding.queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| self.lost(e))?;
            depths.push(QueueDepth {
                name: binding.queue.clone(),
                message_count: queue.message_count(),
                consumer_count: queue.consumer_count(),
            });
        }
        // Closing is best effort: the counts are already read.
        let _ = channel.close(200, "health check done".into()).await;
        Ok(depths)
    }
}

#[async_trait]
impl EventBus for Publisher {
    fn is_connected(&self) -> bool {
        self.connected()
    }

    fn last_error(&self) -> Option<String> {
        self.shared.last_error.get()
    }

    #[instrument(name = "publish", skip_all, fields(messages = messages.len()))]
    async fn publish_in_order(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Vec<Result<(), PublishError>> {
        self.publish_detached(messages).await
    }

    #[instrument(skip_all)]
    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, PublishError> {
        self.read_queue_depths().await
    }
}

pub(super) const TRACEPARENT_HEADER: &str = "traceparent";
pub(super) const TRACESTATE_HEADER: &str = "tracestate";

/// Persistent delivery needs `mandatory`: an unroutable message is returned, not dropped.
pub(super) const MANDATORY: BasicPublishOptions = BasicPublishOptions {
    mandatory: true,
    immediate: false,
};

/// Judges a confirm by itself, for a channel with one message in flight at a time: lapin
/// attaches a returned message to whichever confirm resolves next, so with several in
/// flight only the collector (`confirms.rs`) can tell whose it is. Only a plain ack means
/// the message is safe.
pub fn confirmation_outcome(
    confirmation: Confirmation,
    routing_key: &str,
) -> Result<(), PublishError> {
    match confirmation {
        // With `mandatory`, an unroutable message comes back as an ack that carries it.
        Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Err(PublishError::Unroutable {
            routing_key: routing_key.to_owned(),
        }),
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Nack(None) => Err(PublishError::Nacked),
        // A channel without `confirm_select` resolves like this at once: that is no ack.
        Confirmation::NotRequested => Err(PublishError::NotConfirmed),
    }
}

fn properties(message: &OutgoingMessage) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(ShortString::from(message.message_id.to_string()))
        .with_correlation_id(message.correlation_id.as_str().into())
        .with_timestamp(message.timestamp_secs)
        .with_type(message.routing_key.into())
        .with_app_id("event-gateway".into());
    match &message.trace {
        Some(trace) => properties.with_headers(trace_headers(trace)),
        None => properties,
    }
}

/// `traceparent` (and `tracestate` when the caller sent one), as W3C trace context over
/// AMQP puts them: plain string headers.
fn trace_headers(trace: &TraceContext) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert(
        TRACEPARENT_HEADER.into(),
        AMQPValue::LongString(trace.parent.to_string().into()),
    );
    if let Some(state) = &trace.state {
        headers.insert(
            TRACESTATE_HEADER.into(),
            AMQPValue::LongString(state.as_bytes().into()),
        );
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_publish_given_up_while_waiting_for_a_slot_was_not_sent() {
        let settings = BusSettings {
            broker: Broker::plain("amqp://guest:guest@127.0.0.1:1/%2f").expect("url"),
            topology: Topology::new("gateway-test", "", &[]),
            channels: 1,
            max_in_flight: 1,
            confirm_timeout: Duration::from_millis(50),
        };
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let publisher = Publisher::start(settings, metrics, &Workers::default());
        let _busy = publisher.shared.in_flight.acquire().await.expect("slot");
        let message = OutgoingMessage {
            message_id: uuid::Uuid::new_v4(),
            routing_key: "quest.created",
            correlation_id: "c".into(),
            timestamp_secs: 0,
            body: b"{}".to_vec(),
            trace: None,
        };
        let refused = publisher.publish_confirmed(message).await.unwrap_err();
        assert!(
            matches!(refused, PublishError::Unavailable(Some(_))),
            "{refused:?}"
        );
        assert!(!refused.may_be_published());
    }
}
