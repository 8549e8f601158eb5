//! The app-owned handle in front of lapin: one connection, confirm-mode channels (one by
//! default), and a supervisor that reconnects with backoff and redeclares the topology.
//!
//! Every request publishes and then awaits its own confirm, so many confirms are in flight
//! at once (bounded by a semaphore); no lock is held across the wait.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};
use uuid::Uuid;

use super::topology::Topology;
use crate::metrics::Metrics;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How the publisher reaches the broker.
#[derive(Debug, Clone)]
pub struct BusSettings {
    pub url: String,
    pub topology: Topology,
    pub channels: u16,
    pub max_in_flight: u32,
    pub confirm_timeout: Duration,
}

/// One message to publish; the body is the serialized envelope. It is owned so that the
/// publish can finish even if the caller stops waiting.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub message_id: Uuid,
    pub routing_key: &'static str,
    pub correlation_id: String,
    pub timestamp_secs: u64,
    pub body: Vec<u8>,
}

/// Why a message was not confirmed; none of these may be answered 202.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker is unreachable")]
    Unavailable(#[source] Option<lapin::Error>),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {routing_key}")]
    Unroutable { routing_key: String },
    #[error("the broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the channel is not in confirm mode, so delivery is unknown")]
    NotConfirmed,
    #[error("the event could not be encoded")]
    Encode(#[source] serde_json::Error),
}

impl PublishError {
    /// The broker may take the message later (unreachable, refused for now, slow); the
    /// others will fail the same way every time.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PublishError::Unavailable(_) | PublishError::Nacked | PublishError::ConfirmTimeout(_)
        )
    }

    /// A closed label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            PublishError::Unavailable(_) => "unavailable",
            PublishError::Nacked => "nacked",
            PublishError::Unroutable { .. } => "unroutable",
            PublishError::ConfirmTimeout(_) => "timeout",
            PublishError::NotConfirmed => "not_confirmed",
            PublishError::Encode(_) => "encode_failed",
        }
    }
}

/// Messages and consumers of one queue, as the broker reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueDepth {
    pub name: String,
    pub message_count: u32,
    pub consumer_count: u32,
}

struct Link {
    connection: Connection,
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Link {
    fn pick(&self) -> &Channel {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        &self.channels[index]
    }

    fn is_healthy(&self) -> bool {
        self.connection.status().connected() && self.channels.iter().all(|c| c.status().connected())
    }
}

struct Shared {
    settings: BusSettings,
    stop: CancellationToken,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    link: RwLock<Option<Arc<Link>>>,
    broken: Notify,
    in_flight: Semaphore,
    metrics: Arc<Metrics>,
}

/// Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl Publisher {
    /// Starts the supervisor that connects (and reconnects) in the background; publishing
    /// answers [`PublishError::Unavailable`] until the first connection is up.
    pub fn start(settings: BusSettings, metrics: Arc<Metrics>) -> Self {
        let shared = Arc::new(Shared {
            in_flight: Semaphore::new(settings.max_in_flight as usize),
            settings,
            stop: CancellationToken::new(),
            supervisor: Mutex::new(None),
            link: RwLock::new(None),
            broken: Notify::new(),
            metrics,
        });
        let supervisor = tokio::spawn(supervise(shared.clone()));
        if let Ok(mut slot) = shared.supervisor.lock() {
            *slot = Some(supervisor);
        }
        Publisher { shared }
    }

    /// Closes the connection once the callers are done; publishes after this fail.
    pub async fn close(&self) {
        self.shared.stop.cancel();
        let supervisor = self
            .shared
            .supervisor
            .lock()
            .ok()
            .and_then(|mut s| s.take());
        if let Some(supervisor) = supervisor
            && let Err(error) = supervisor.await
        {
            warn!(%error, "the broker supervisor ended abnormally");
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.shared.settings.topology
    }

    pub fn is_connected(&self) -> bool {
        self.current().is_some_and(|link| link.is_healthy())
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.shared.link.read().ok().and_then(|link| link.clone())
    }

    /// Publishes persistent and mandatory, and returns once the broker confirmed it.
    pub async fn publish_confirmed(&self, message: OutgoingMessage) -> Result<(), PublishError> {
        self.publish_in_order(vec![message])
            .await
            .pop()
            .unwrap_or(Err(PublishError::Unavailable(None)))
    }

    /// Publishes `messages` (persistent, mandatory) one after another on one channel, so
    /// they reach each queue in this order, then awaits all their confirms together. One
    /// outcome per message.
    ///
    /// The work runs in its own task: if the caller stops waiting (confirm timeout, client
    /// disconnect) the confirms are still awaited, so lapin never keeps an orphaned one.
    #[instrument(skip_all, fields(messages = messages.len()))]
    pub async fn publish_in_order(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Vec<Result<(), PublishError>> {
        let count = messages.len();
        let publisher = self.clone();
        let timeout = self.shared.settings.confirm_timeout;
        let abandoned = Arc::new(AtomicBool::new(false));
        let given_up = abandoned.clone();
        let task = tokio::spawn(async move { publisher.send_in_order(messages, &given_up).await });
        let failed =
            |error: fn(Duration) -> PublishError| (0..count).map(|_| Err(error(timeout))).collect();
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(outcomes)) => outcomes,
            Ok(Err(_panicked)) => failed(|_| PublishError::Unavailable(None)),
            Err(_elapsed) => {
                // Not sent yet (waiting for a slot)? Then it must not be sent later, when
                // the caller has already told its client the events were not published.
                abandoned.store(true, Ordering::Release);
                failed(PublishError::ConfirmTimeout)
            }
        }
    }

    async fn send_in_order(
        &self,
        messages: Vec<OutgoingMessage>,
        abandoned: &AtomicBool,
    ) -> Vec<Result<(), PublishError>> {
        let slots = (messages.len() as u32).min(self.shared.settings.max_in_flight);
        let Ok(_slots) = self.shared.in_flight.acquire_many(slots).await else {
            return messages
                .iter()
                .map(|_| Err(PublishError::Unavailable(None)))
                .collect();
        };
        let link = match self.current() {
            Some(link) if !abandoned.load(Ordering::Acquire) => link,
            Some(_) => {
                let timeout = self.shared.settings.confirm_timeout;
                return messages
                    .iter()
                    .map(|_| Err(PublishError::ConfirmTimeout(timeout)))
                    .collect();
            }
            None => {
                return messages
                    .iter()
                    .map(|_| Err(PublishError::Unavailable(None)))
                    .collect();
            }
        };
        let channel = link.pick();
        let started = Instant::now();
        let mut confirms = Vec::with_capacity(messages.len());
        let mut broken = false;
        for message in &messages {
            if broken {
                // A later message must not overtake one that failed.
                confirms.push(Err(PublishError::Unavailable(None)));
                continue;
            }
            let sent = channel
                .basic_publish(
                    self.topology().exchange.as_str().into(),
                    message.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &message.body,
                    properties(message),
                )
                .await
                .map_err(|error| self.lost(error));
            broken = sent.is_err();
            confirms.push(sent);
        }
        join_all(
            confirms
                .into_iter()
                .zip(&messages)
                .map(|(sent, message)| async move {
                    let confirmation = sent?.await.map_err(|error| self.lost(error))?;
                    self.shared
                        .metrics
                        .publish_confirm_seconds
                        .observe(started.elapsed().as_secs_f64());
                    confirmation_outcome(confirmation, message.routing_key)
                }),
        )
        .await
    }

    /// A channel or connection failed: wake the supervisor to check and rebuild.
    fn lost(&self, error: lapin::Error) -> PublishError {
        self.shared.broken.notify_one();
        PublishError::Unavailable(Some(error))
    }

    /// Message and consumer counts of every declared queue, by passive declares.
    #[instrument(skip_all)]
    pub async fn queue_depths(&self) -> Result<Vec<QueueDepth>, PublishError> {
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

/// Judges the broker's answer. Only a plain ack means the message is safe.
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
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(ShortString::from(message.message_id.to_string()))
        .with_correlation_id(message.correlation_id.as_str().into())
        .with_timestamp(message.timestamp_secs)
        .with_type(message.routing_key.into())
        .with_app_id("event-gateway".into())
}

/// Keeps one healthy link in `shared.link`, reconnecting with exponential backoff.
async fn supervise(shared: Arc<Shared>) {
    let shutdown = &shared.stop;
    let mut backoff = BACKOFF_MIN;
    while !shutdown.is_cancelled() {
        match connect(&shared.settings).await {
            Ok(link) => {
                backoff = BACKOFF_MIN;
                let link = Arc::new(link);
                let mut events = link.connection.events_listener();
                set_link(&shared, Some(link.clone()));
                info!(channels = link.channels.len(), "connected to the broker");
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        event = events.next() => match event {
                            Some(lapin::Event::Error(error)) => {
                                warn!(%error, "broker connection failed");
                                break;
                            }
                            Some(_) => {}
                            None => break,
                        },
                        () = shared.broken.notified() => if !link.is_healthy() {
                            warn!("a broker channel failed; reconnecting");
                            break;
                        },
                    }
                }
                set_link(&shared, None);
                // A failed close only means the connection was already gone.
                let _ = link
                    .connection
                    .close(200, "event-gateway reconnecting or stopping".into())
                    .await;
            }
            Err(error) => {
                warn!(%error, retry_in_ms = backoff.as_millis() as u64, "cannot reach the broker");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

fn set_link(shared: &Shared, link: Option<Arc<Link>>) {
    shared
        .metrics
        .broker_connected
        .set(i64::from(link.is_some()));
    if let Ok(mut slot) = shared.link.write() {
        *slot = link;
    }
}

#[instrument(skip_all)]
async fn connect(settings: &BusSettings) -> anyhow::Result<Link> {
    let connection = settings
        .topology
        .connect(&settings.url, "event-gateway")
        .await?;
    let mut channels = Vec::with_capacity(usize::from(settings.channels));
    for _ in 0..settings.channels {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push(channel);
    }
    Ok(Link {
        connection,
        channels,
        next: AtomicUsize::new(0),
    })
}
