//! Turning a valid event into a safe one: on the bus with a broker confirm, or held in the
//! PostgreSQL outbox for the relay. Critical events are written before the answer, always.
//! Shared by every way an event comes in.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use tracing::warn;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::bus::{OutgoingMessage, PublishError, Publisher};
use crate::cache::Cache;
use crate::domain::{Envelope, EventType, Principal, ValidEvent};
use crate::metrics::Metrics;
use crate::relay::RelaySignal;
use crate::store::{EventRecord, Owner, PendingEvent, Store, StoreError};

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    /// The broker confirmed the event.
    Published,
    /// The broker is unreachable; the event is held in the outbox and published when it
    /// returns. It is safe.
    Queued,
    /// The event was not taken (only inside a failed batch's problem document).
    Failed,
}

/// The answer for one accepted event.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub id: Uuid,
    #[serde(rename = "type")]
    #[schema(example = "achievement.completed")]
    pub event_type: String,
    pub correlation_id: String,
    pub status: ReceiptStatus,
    /// Whether the event was also written to PostgreSQL (critical events).
    pub persisted: bool,
    /// Why the event was not taken, when `status` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why an event was not taken; none of these may be answered 202.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("neither the broker nor the database could take the event")]
    Unavailable(#[source] StoreError),
    #[error("an event with this id was already accepted")]
    Duplicate,
}

/// Publishes events for callers and counts the outcomes.
#[derive(Clone)]
pub struct Ingest {
    publisher: Publisher,
    store: Store,
    cache: Cache,
    relay: RelaySignal,
    metrics: Arc<Metrics>,
    critical: Arc<HashSet<EventType>>,
}

impl Ingest {
    pub fn new(
        publisher: Publisher,
        store: Store,
        cache: Cache,
        relay: RelaySignal,
        metrics: Arc<Metrics>,
        critical: HashSet<EventType>,
    ) -> Self {
        Ingest {
            publisher,
            store,
            cache,
            relay,
            metrics,
            critical: Arc::new(critical),
        }
    }

    /// Whether the outbox relay has counted the outbox since start (readiness).
    pub fn outbox_counted(&self) -> bool {
        self.relay.is_counted()
    }

    /// Takes `event` on behalf of `principal`; `Ok` only once the event is safe.
    pub async fn publish(
        &self,
        principal: &Principal,
        event: &ValidEvent,
        correlation_id: &str,
    ) -> Result<Receipt, IngestError> {
        let critical = self.critical.contains(&event.event_type);
        let pending = self.pending(principal, event, correlation_id, critical)?;
        let outcome = if critical || self.relay.has_backlog() {
            self.through_outbox(pending).await
        } else {
            self.direct(pending).await
        };
        let label = match &outcome {
            Ok(ReceiptStatus::Published) => "published",
            Ok(_) => "queued",
            Err(IngestError::Publish(error)) => error.outcome(),
            Err(IngestError::Unavailable(_)) => "unavailable",
            Err(IngestError::Duplicate) => "duplicate",
        };
        self.metrics
            .events_published
            .with_label_values(&[event.event_type.as_str(), label])
            .inc();
        outcome.map(|status| Receipt {
            id: event.id,
            event_type: event.event_type.as_str().to_owned(),
            correlation_id: correlation_id.to_owned(),
            status,
            persisted: critical,
            error: None,
        })
    }

    fn pending(
        &self,
        principal: &Principal,
        event: &ValidEvent,
        correlation_id: &str,
        critical: bool,
    ) -> Result<PendingEvent, IngestError> {
        let accepted_at = OffsetDateTime::now_utc();
        let envelope = Envelope::new(event, correlation_id, &principal.subject, accepted_at);
        let body = serde_json::to_vec(&envelope).map_err(PublishError::Encode)?;
        let user_id = event.data.user_id().map(str::to_owned);
        Ok(PendingEvent {
            id: event.id,
            routing_key: event.event_type.as_str(),
            // A user's events leave the outbox in order; others have no order to keep.
            ordering_key: user_id.clone().unwrap_or_else(|| event.id.to_string()),
            correlation_id: correlation_id.to_owned(),
            timestamp_secs: accepted_at.unix_timestamp(),
            body,
            record: critical.then(|| EventRecord {
                event_type: event.event_type.as_str(),
                user_id,
                source: principal.subject.clone(),
                accepted_at,
            }),
        })
    }

    /// Non-critical events go straight to the broker, and to the outbox only if it fails.
    async fn direct(&self, pending: PendingEvent) -> Result<ReceiptStatus, IngestError> {
        match self.publisher.publish_confirmed(message(&pending)).await {
            Ok(()) => Ok(ReceiptStatus::Published),
            Err(error) if !error.is_transient() => Err(error.into()),
            Err(error) => {
                warn!(%error, event_id = %pending.id, "broker did not take the event; holding it in the outbox");
                self.store
                    .hold(vec![pending], Owner::Relay)
                    .await
                    .map_err(IngestError::Unavailable)?;
                self.relay.backlog_added();
                Ok(ReceiptStatus::Queued)
            }
        }
    }

    /// Critical events (and every event while the outbox has a backlog, to keep per-user
    /// order) are committed first, then published by this request or by the relay.
    async fn through_outbox(&self, pending: PendingEvent) -> Result<ReceiptStatus, IngestError> {
        let by_request = !self.relay.has_backlog() && self.publisher.is_connected();
        let owner = if by_request {
            Owner::Request
        } else {
            Owner::Relay
        };
        let user_id = pending.record.as_ref().and_then(|r| r.user_id.clone());
        let fresh = self
            .store
            .hold(vec![pending.clone()], owner)
            .await
            .map_err(IngestError::Unavailable)?;
        if fresh.first() != Some(&true) {
            return Err(IngestError::Duplicate);
        }
        // The row is committed: finish its story even if the client goes away now, or it
        // would sit out its lease and be published twice.
        let ingest = self.clone();
        tokio::spawn(async move {
            if let Some(user_id) = &user_id {
                ingest.cache.forget_user_events(user_id).await;
            }
            if !by_request {
                ingest.relay.backlog_added();
                return Ok(ReceiptStatus::Queued);
            }
            ingest.publish_held(pending).await
        })
        .await
        .map_err(|_| IngestError::Publish(PublishError::Unavailable(None)))?
    }

    /// Publishes an event this request holds in the outbox, and settles its row.
    async fn publish_held(&self, pending: PendingEvent) -> Result<ReceiptStatus, IngestError> {
        match self.publisher.publish_confirmed(message(&pending)).await {
            Ok(()) => {
                if let Err(error) = self.store.confirmed(vec![pending.id]).await {
                    warn!(%error, event_id = %pending.id, "could not mark the event published; the relay will publish it again");
                }
                Ok(ReceiptStatus::Published)
            }
            Err(error) if !error.is_transient() => {
                if let Err(forget) = self.store.forget(pending.id).await {
                    warn!(error = %forget, event_id = %pending.id, "could not drop an unpublishable event");
                }
                Err(error.into())
            }
            Err(error) => {
                warn!(%error, event_id = %pending.id, "broker did not take the event; the relay will publish it");
                if let Err(release) = self.store.release(pending.id).await {
                    warn!(error = %release, "could not hand the event to the relay now; it will after its lease");
                }
                self.relay.backlog_added();
                Ok(ReceiptStatus::Queued)
            }
        }
    }
}

pub fn message(pending: &PendingEvent) -> OutgoingMessage {
    OutgoingMessage {
        message_id: pending.id,
        routing_key: pending.routing_key,
        correlation_id: pending.correlation_id.clone(),
        timestamp_secs: pending.timestamp_secs.unsigned_abs(),
        body: pending.body.clone(),
    }
}
