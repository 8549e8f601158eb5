//! The outbox relay: publishes what the outbox holds whenever the broker is reachable,
//! oldest first and in order per user, without ever holding a request. A row the broker
//! does not take waits as the retry backoff says (`RETRY_INITIAL_DELAY`, doubling, at
//! most `RETRY_MAX_DELAY`), however often it fails. It also drops idempotency answers
//! older than `IDEMPOTENCY_TTL`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};
use uuid::Uuid;

use crate::app::ports::{EventBus, StoreProbe};
use crate::app::publish::Backlog;
use crate::app::records::OutgoingMessage;
use crate::bus::Publisher;
use crate::domain::EventType;
use crate::runtime::backoff::Backoff;
use crate::runtime::metrics::Metrics;
use crate::runtime::worker::Workers;
use crate::store::{OutboxRow, Retry, Store};

/// Rows (each of another user) claimed per transaction.
const BATCH: i64 = 200;
/// How often the relay looks even when nobody woke it (other processes, backoffs).
const POLL: Duration = Duration::from_secs(1);
const FIRST_COUNT_POLL: Duration = Duration::from_millis(100);
/// How often expired idempotency answers are dropped.
const JANITOR_EVERY: Duration = Duration::from_secs(60);

pub struct OutboxRelay {
    pub store: Store,
    pub publisher: Publisher,
    pub backlog: Backlog,
    pub metrics: Arc<Metrics>,
    pub backoff: Backoff,
    pub idempotency_ttl: Duration,
}

impl OutboxRelay {
    pub fn spawn(self, workers: &Workers) {
        workers.spawn("outbox relay", self.run(workers.token()));
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut janitor = tokio::time::interval(JANITOR_EVERY);
        loop {
            if self.store.is_ready() {
                if self.publisher.is_connected() {
                    self.drain(&shutdown).await;
                }
                self.refresh_backlog().await;
            }
            // Until the outbox was counted once, look again soon: readiness waits for it.
            let pause = if self.backlog.is_counted() {
                POLL
            } else {
                FIRST_COUNT_POLL
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.backlog.woken() => {}
                () = tokio::time::sleep(pause) => {}
                _ = janitor.tick() => self.expire_idempotency_keys().await,
            }
        }
    }

    /// Publishes due rows round after round until none is left, the broker fails, or the
    /// gateway stops (a round under way is finished: its rows are recorded).
    async fn drain(&self, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
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
                Ok(message) => Ok(self.publisher.publish_confirmed(message).await),
                Err(unreadable) => Err(unreadable),
            };
            (row.event_id, row.attempts.unsigned_abs(), outcome)
        }))
        .await;
        let mut round = Round::default();
        for (id, attempts, outcome) in outcomes {
            match outcome {
                Ok(Ok(())) => round.published.push(id),
                // Every row was accepted (a 202): whatever the broker says, even that no
                // queue is bound now (one was deleted), it is tried again on the schedule.
                Ok(Err(error)) => {
                    if !error.is_transient() {
                        warn!(%error, event_id = %id, "the broker does not take an outbox event now; trying again later");
                    }
                    round.failed.push(Retry {
                        id,
                        error: error.to_string(),
                        after: self.backoff.delay(attempts + 1),
                    });
                }
                Err(unreadable) => {
                    warn!(error = %unreadable, event_id = %id, "an outbox event can never be published; moving it to the dead letters");
                    round.unpublishable.push((id, unreadable));
                }
            }
        }
        round
    }

    async fn refresh_backlog(&self) {
        let generation = self.backlog.generation();
        match self.store.outbox_counts().await {
            Ok((depth, owed)) => {
                self.metrics.outbox_depth.set(depth);
                self.backlog.counted(generation, owed > 0);
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
    failed: Vec<Retry>,
    unpublishable: Vec<(Uuid, String)>,
}

/// The row as a message, or why it can never be one (a type this gateway does not know).
fn message(row: &OutboxRow) -> Result<OutgoingMessage, String> {
    let event_type: EventType = row
        .routing_key
        .parse()
        .map_err(|_| format!("unknown event type {}", row.routing_key))?;
    Ok(OutgoingMessage {
        message_id: row.event_id,
        routing_key: event_type.as_str(),
        correlation_id: row.correlation_id.clone(),
        timestamp_secs: row.timestamp_secs.unsigned_abs(),
        body: row.body.clone(),
        // The same trace as when the request held it.
        trace: row.trace(),
    })
}
