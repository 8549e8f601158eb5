//! Turning a valid event into a confirmed message on the bus: the envelope, the AMQP
//! message, the receipt and the metrics. Shared by every way an event comes in.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::bus::{OutgoingMessage, PublishError, Publisher};
use crate::domain::{Envelope, Principal, ValidEvent};
use crate::metrics::Metrics;

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    /// The broker confirmed the event: it is safe.
    Published,
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

/// Publishes events for callers and counts the outcomes.
#[derive(Clone)]
pub struct Ingest {
    publisher: Publisher,
    metrics: Arc<Metrics>,
}

impl Ingest {
    pub fn new(publisher: Publisher, metrics: Arc<Metrics>) -> Self {
        Ingest { publisher, metrics }
    }

    /// Publishes `event` on behalf of `principal`; `Ok` only once the broker confirmed it.
    pub async fn publish(
        &self,
        principal: &Principal,
        event: &ValidEvent,
        correlation_id: &str,
    ) -> Result<Receipt, PublishError> {
        let id = event.id;
        let accepted_at = OffsetDateTime::now_utc();
        let envelope = Envelope::new(event, correlation_id, &principal.subject, accepted_at);
        let body = serde_json::to_vec(&envelope).map_err(PublishError::Encode)?;
        let message = OutgoingMessage {
            message_id: id,
            routing_key: event.event_type.as_str(),
            correlation_id: correlation_id.to_owned(),
            timestamp_secs: accepted_at.unix_timestamp().unsigned_abs(),
            body,
        };
        let outcome = self.publisher.publish_confirmed(message).await;
        let label = match &outcome {
            Ok(()) => "published",
            Err(error) => error.outcome(),
        };
        self.metrics
            .events_published
            .with_label_values(&[event.event_type.as_str(), label])
            .inc();
        outcome.map(|()| Receipt {
            id,
            event_type: event.event_type.as_str().to_owned(),
            correlation_id: correlation_id.to_owned(),
            status: ReceiptStatus::Published,
            persisted: false,
            error: None,
        })
    }
}
