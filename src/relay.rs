//! The outbox relay: publishes what the outbox holds whenever the broker is reachable,
//! oldest first and in order per user, without ever holding a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};
use uuid::Uuid;

use crate::bus::{OutgoingMessage, PublishError, Publisher};
use crate::domain::EventType;
use crate::metrics::Metrics;
use crate::store::{OutboxRow, Store};

/// Rows (each of another user) claimed per transaction.
const BATCH: i64 = 200;
/// How often the relay looks even when nobody woke it (other processes, backoffs).
const POLL: Duration = Duration::from_secs(1);
const FIRST_COUNT_POLL: Duration = Duration::from_millis(100);
/// How often expired idempotency answers are dropped.
const JANITOR_EVERY: Duration = Duration::from_secs(60);

/// Shared between requests and the relay: wakes it, and tells whether the outbox holds
/// events the relay owes the broker (then new events queue behind them, keeping order).
#[derive(Clone)]
pub struct RelaySignal {
    wake: Arc<Notify>,
    backlog: Arc<AtomicBool>,
    /// Bumped at every `backlog_added`, so a count taken before it cannot clear it.
    generation: Arc<AtomicU64>,
    /// The outbox was counted at least once since start.
    counted: Arc<AtomicBool>,
}

impl Default for RelaySignal {
    /// Starts with a backlog: rows may be left from before a restart, and the first
    /// count of the outbox clears it.
    fn default() -> Self {
        RelaySignal {
            wake: Arc::default(),
            backlog: Arc::new(AtomicBool::new(true)),
            generation: Arc::default(),
            counted: Arc::default(),
        }
    }
}

impl RelaySignal {
    pub fn has_backlog(&self) -> bool {
        self.backlog.load(Ordering::Acquire)
    }

    /// Whether the relay knows what the outbox holds; the gateway is ready only then.
    pub fn is_counted(&self) -> bool {
        self.counted.load(Ordering::Acquire)
    }

    pub fn backlog_added(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.backlog.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Clears the backlog only if nothing was added since `generation` was read.
    fn backlog_counted(&self, generation: u64, owed: bool) {
        self.counted.store(true, Ordering::Release);
        if owed {
            self.backlog.store(true, Ordering::Release);
        } else if self.generation.load(Ordering::Acquire) == generation {
            self.backlog.store(false, Ordering::Release);
        }
    }
}

pub struct OutboxRelay {
    pub store: Store,
    pub publisher: Publisher,
    pub signal: RelaySignal,
    pub metrics: Arc<Metrics>,
    pub idempotency_ttl: Duration,
}

impl OutboxRelay {
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut janitor = tokio::time::interval(JANITOR_EVERY);
        loop {
            if self.store.is_ready() {
                if self.publisher.is_connected() {
                    self.drain().await;
                }
                self.refresh_backlog().await;
            }
            // Until the outbox was counted once, look again soon: readiness waits for it.
            let pause = if self.signal.is_counted() {
                POLL
            } else {
                FIRST_COUNT_POLL
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.signal.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
                _ = janitor.tick() => self.expire_idempotency_keys().await,
            }
        }
    }

    /// Publishes due rows round after round until none is left or the broker fails.
    async fn drain(&self) {
        loop {
            let batch = match self.store.claim_due(BATCH).await {
                Ok(batch) => batch,
                Err(error) => {
                    warn!(%error, "outbox relay cannot claim rows");
                    return;
                }
            };
            if batch.rows.is_empty() {
                return;
            }
            let round = self.publish_rows(&batch.rows).await;
            info!(
                published = round.published.len(),
                failed = round.failed.len(),
                unpublishable = round.unpublishable.len(),
                "outbox relay round"
            );
            if let Err(error) = batch
                .finish(&round.published, &round.failed, &round.unpublishable)
                .await
            {
                warn!(%error, "outbox relay could not record a round; its rows will be published again");
                return;
            }
            self.metrics
                .outbox_published
                .inc_by(round.published.len() as u64);
            if !round.failed.is_empty() {
                return;
            }
        }
    }

    /// Publishes the claimed rows (one per ordering key) concurrently.
    #[instrument(skip_all, fields(rows = rows.len()))]
    async fn publish_rows(&self, rows: &[OutboxRow]) -> Round {
        let outcomes = join_all(rows.iter().map(|row| async move {
            let outcome = match message(row) {
                Ok(message) => self.publisher.publish_confirmed(message).await,
                Err(error) => Err(error),
            };
            (row.event_id, outcome)
        }))
        .await;
        let mut round = Round::default();
        for (id, outcome) in outcomes {
            match outcome {
                Ok(()) => round.published.push(id),
                Err(error) if error.is_transient() => round.failed.push((id, error.to_string())),
                Err(error) => {
                    warn!(%error, event_id = %id, "an outbox event can never be published; moving it to the dead letters");
                    round.unpublishable.push((id, error.to_string()));
                }
            }
        }
        round
    }

    async fn refresh_backlog(&self) {
        let generation = self.signal.generation.load(Ordering::Acquire);
        match self.store.outbox_counts().await {
            Ok((depth, owed)) => {
                self.metrics.outbox_depth.set(depth);
                self.signal.backlog_counted(generation, owed > 0);
            }
            Err(error) => warn!(%error, "cannot read the outbox depth"),
        }
    }

    async fn expire_idempotency_keys(&self) {
        if !self.store.is_ready() {
            return;
        }
        if let Err(error) = self
            .store
            .expire_keys(self.idempotency_ttl.as_secs_f64())
            .await
        {
            warn!(%error, "cannot expire idempotency keys");
        }
    }
}

/// What one relay round did with its rows.
#[derive(Default)]
struct Round {
    published: Vec<Uuid>,
    failed: Vec<(Uuid, String)>,
    unpublishable: Vec<(Uuid, String)>,
}

fn message(row: &OutboxRow) -> Result<OutgoingMessage, PublishError> {
    let event_type: EventType = row
        .routing_key
        .parse()
        .map_err(|_| PublishError::Unroutable {
            routing_key: row.routing_key.clone(),
        })?;
    Ok(OutgoingMessage {
        message_id: row.event_id,
        routing_key: event_type.as_str(),
        correlation_id: row.correlation_id.clone(),
        timestamp_secs: row.timestamp_secs.unsigned_abs(),
        body: row.body.clone(),
    })
}
