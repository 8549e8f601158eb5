//! The outbox relay: publishes what the outbox holds whenever the broker is reachable,
//! oldest first and in order per user, without ever holding a request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};
use uuid::Uuid;

use crate::bus::{OutgoingMessage, Publisher};
use crate::domain::EventType;
use crate::domain::event_type::UnknownEventType;
use crate::metrics::Metrics;
use crate::store::{OutboxRow, Store};

/// Rows claimed per transaction.
const BATCH: i64 = 200;
/// How often the relay looks even when nobody woke it (other processes, backoffs).
const POLL: Duration = Duration::from_secs(1);
/// How often expired idempotency answers are dropped.
const JANITOR_EVERY: Duration = Duration::from_secs(60);

/// Shared between requests and the relay: wakes it, and tells whether the outbox holds
/// events the relay owes the broker (then new events queue behind them, keeping order).
#[derive(Clone, Default)]
pub struct RelaySignal {
    wake: Arc<Notify>,
    backlog: Arc<AtomicBool>,
}

impl RelaySignal {
    pub fn has_backlog(&self) -> bool {
        self.backlog.load(Ordering::Acquire)
    }

    pub fn backlog_added(&self) {
        self.backlog.store(true, Ordering::Release);
        self.wake.notify_one();
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
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.signal.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = janitor.tick() => self.expire_idempotency_keys().await,
            }
            if !self.store.is_ready() {
                continue;
            }
            if self.publisher.is_connected() {
                self.drain().await;
            }
            self.refresh_backlog().await;
        }
    }

    /// Publishes due rows batch after batch until none is left or the broker fails.
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
            let full = batch.rows.len() as i64 == BATCH;
            let (published, failed) = self.publish_rows(&batch.rows).await;
            info!(
                published = published.len(),
                failed = failed.len(),
                "outbox relay round"
            );
            if let Err(error) = batch.finish(&published, &failed).await {
                warn!(%error, "outbox relay could not record a round; its rows will be published again");
                return;
            }
            self.metrics.outbox_published.inc_by(published.len() as u64);
            if !failed.is_empty() || !full {
                return;
            }
        }
    }

    /// Publishes each ordering key's rows one after another, the keys concurrently. After
    /// a failure the key's later rows wait, so they never overtake it.
    #[instrument(skip_all, fields(rows = rows.len()))]
    async fn publish_rows(&self, rows: &[OutboxRow]) -> (Vec<Uuid>, Vec<(Uuid, String)>) {
        let mut keys: HashMap<&str, Vec<&OutboxRow>> = HashMap::new();
        for row in rows {
            keys.entry(row.ordering_key.as_str()).or_default().push(row);
        }
        let outcomes = join_all(keys.into_values().map(|rows| async move {
            let mut published = Vec::new();
            for row in rows {
                let outcome = match message(row) {
                    Ok(message) => self
                        .publisher
                        .publish_confirmed(message)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(error) => Err(error),
                };
                match outcome {
                    Ok(()) => published.push(row.event_id),
                    Err(error) => return (published, Some((row.event_id, error))),
                }
            }
            (published, None)
        }))
        .await;
        let mut published = Vec::new();
        let mut failed = Vec::new();
        for (done, failure) in outcomes {
            published.extend(done);
            failed.extend(failure);
        }
        (published, failed)
    }

    async fn refresh_backlog(&self) {
        match self.store.outbox_counts().await {
            Ok((depth, owed)) => {
                self.metrics.outbox_depth.set(depth);
                self.signal.backlog.store(owed > 0, Ordering::Release);
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

fn message(row: &OutboxRow) -> Result<OutgoingMessage, String> {
    let event_type: EventType = row
        .routing_key
        .parse()
        .map_err(|e: UnknownEventType| e.to_string())?;
    Ok(OutgoingMessage {
        message_id: row.event_id,
        routing_key: event_type.as_str(),
        correlation_id: row.correlation_id.clone(),
        timestamp_secs: row.timestamp_secs.unsigned_abs(),
        body: row.body.clone(),
    })
}
