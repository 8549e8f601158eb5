//! Publishing: turning a valid event into a safe one, on the bus with a broker confirm or
//! held in the PostgreSQL outbox for the relay. Critical events are written before the
//! answer, always. Every way an event comes in (the publish endpoints, webhooks, replays
//! of dead letters) goes through here, so each is counted, held when the broker is down,
//! and ordered per user the same way.

mod backlog;
mod steps;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

pub use backlog::Backlog;

use super::idempotency::Accepted;
use super::ports::{EventBus, Outbox, PublishError, ReadCache, StoreError};
use super::records::{EventRecord, PendingEvent};
use crate::domain::sealing::Sealer;
use crate::domain::trace::TraceContext;
use crate::domain::{Envelope, EventType, Principal, ValidEvent};
use crate::runtime::detached::finish_detached;
use crate::runtime::metrics::Metrics;
use crate::runtime::telemetry;

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
    /// Whether the event was taken is unknown (only inside an `outcome-unknown` problem
    /// document): retry it with the same id.
    Unknown,
}

/// The answer for one accepted event.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The event id: the AMQP `message_id`, and the id `GET /v1/events/{id}` reads.
    pub id: Uuid,
    #[serde(rename = "type")]
    #[schema(example = "achievement.completed")]
    pub event_type: String,
    pub correlation_id: String,
    /// The `id` the client sent (a CloudEvent's `id`), when it chose one; the event id is
    /// derived from it and the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub status: ReceiptStatus,
    /// Whether the event was also written to PostgreSQL (critical events).
    pub persisted: bool,
    /// Why the event was not taken, when `status` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every event of an accepted batch, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchReceipt {
    pub results: Vec<Receipt>,
}

/// Why an event was not taken; none of these may be answered 202. All but
/// [`NotTaken::OutcomeUnknown`] are definite: nothing of the event was or will be published.
#[derive(Debug, thiserror::Error)]
pub enum NotTaken {
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The database could not hold the event: a critical one, or one the broker refused.
    #[error("the database could not hold the event (critical, or refused by the broker)")]
    Unavailable(#[source] StoreError),
    /// The request was answered (it timed out) before the event was handed over.
    #[error("the request was answered before the event was taken")]
    TooLate,
    /// The gateway could not learn in time whether these events were taken.
    #[error("whether the event was taken is unknown: {why}")]
    OutcomeUnknown { ids: Vec<Uuid>, why: Unknown },
}

/// Why an outcome is unknown.
#[derive(Debug, thiserror::Error)]
pub enum Unknown {
    /// Sent, no confirm, and the outbox could not hold it either.
    #[error("{0}, and the outbox could not hold it")]
    Unconfirmed(PublishError),
    /// The connection failed during the COMMIT, and the row could not be looked up.
    #[error(transparent)]
    Commit(StoreError),
    /// It could not be dropped after the broker returned it, so the relay may publish it.
    #[error("the broker returned it and its outbox row could not be dropped")]
    NotForgotten,
    #[error("the request ran out of time (REQUEST_TIMEOUT)")]
    Deadline,
}

impl NotTaken {
    /// The one event `id` whose outcome is unknown.
    pub(crate) fn unknown(id: Uuid, why: Unknown) -> Self {
        NotTaken::OutcomeUnknown { ids: vec![id], why }
    }
}

/// A batch not wholly taken: the first failure, and what happened to each event.
#[derive(Debug, thiserror::Error)]
#[error("{first}")]
pub struct BatchNotTaken {
    pub first: NotTaken,
    pub results: Vec<Receipt>,
}

/// One event to take, with the correlation id it goes out with.
#[derive(Debug, Clone)]
pub struct Submission {
    pub event: ValidEvent,
    pub correlation_id: String,
}

/// An event to publish again as it was (a dead letter): its envelope is not rebuilt.
#[derive(Debug, Clone)]
pub struct Republish {
    pub id: Uuid,
    pub event_type: EventType,
    pub correlation_id: String,
    pub user_id: Option<String>,
    pub body: Vec<u8>,
    /// The trace it first went out with (else it goes out in the replaying request's).
    pub trace: Option<TraceContext>,
}

/// Publishes events for callers and counts the outcomes.
#[derive(Clone)]
pub struct Publishing {
    bus: Arc<dyn EventBus>,
    outbox: Arc<dyn Outbox>,
    listings: Arc<dyn ReadCache>,
    backlog: Backlog,
    metrics: Arc<Metrics>,
    critical: Arc<HashSet<EventType>>,
    sealer: Option<Arc<Sealer>>,
}

/// What [`Publishing`] is built from.
pub struct PublishingParts {
    pub bus: Arc<dyn EventBus>,
    pub outbox: Arc<dyn Outbox>,
    pub listings: Arc<dyn ReadCache>,
    pub backlog: Backlog,
    pub metrics: Arc<Metrics>,
    pub critical: HashSet<EventType>,
    pub sealer: Option<Sealer>,
}

impl Publishing {
    pub fn new(parts: PublishingParts) -> Self {
        Publishing {
            bus: parts.bus,
            outbox: parts.outbox,
            listings: parts.listings,
            backlog: parts.backlog,
            metrics: parts.metrics,
            critical: Arc::new(parts.critical),
            sealer: parts.sealer.map(Arc::new),
        }
    }

    /// Takes one event on behalf of `principal`; the answer only once it is safe.
    pub async fn accept_one(
        &self,
        principal: &Principal,
        event: &ValidEvent,
        correlation_id: String,
    ) -> Result<Accepted, NotTaken> {
        let receipt = self.publish(principal, event, &correlation_id).await?;
        Ok(Accepted {
            correlation_id,
            body: json!(receipt),
        })
    }

    /// Takes a batch in request order (so each user's events reach the bus in that
    /// order), critical events committed together first; accepted only if all were.
    pub async fn accept_batch(
        &self,
        principal: &Principal,
        events: &[ValidEvent],
        request_correlation: String,
    ) -> Result<Accepted, BatchNotTaken> {
        let submissions = events
            .iter()
            .map(|event| Submission {
                correlation_id: event
                    .correlation_id
                    .clone()
                    .unwrap_or_else(|| request_correlation.clone()),
                event: event.clone(),
            })
            .collect();
        let outcomes = self.publish_all(principal, submissions).await;
        batch_answer(request_correlation, events, outcomes)
    }

    /// Takes `event` on behalf of `principal`; `Ok` only once the event is safe.
    pub async fn publish(
        &self,
        principal: &Principal,
        event: &ValidEvent,
        correlation_id: &str,
    ) -> Result<Receipt, NotTaken> {
        let pending = self.pending(principal, event, correlation_id);
        let submission = [(event.event_type, pending)];
        let outcomes = if self.commits_nothing(&submission) {
            self.take(submission.into()).await
        } else {
            self.take_detached(submission.into()).await
        };
        let outcome = outcomes.into_iter().next().unwrap_or(Err(unavailable()));
        outcome.map(|status| self.receipt(event, correlation_id, status))
    }

    /// Takes events in request order, one outcome each; a user's events reach the bus in
    /// that order.
    pub async fn publish_all(
        &self,
        principal: &Principal,
        submissions: Vec<Submission>,
    ) -> Vec<Result<Receipt, NotTaken>> {
        let items: Vec<Item> = submissions
            .iter()
            .map(|s| {
                let pending = self.pending(principal, &s.event, &s.correlation_id);
                (s.event.event_type, pending)
            })
            .collect();
        let outcomes = if self.commits_nothing(&items) {
            self.take(items).await
        } else {
            self.take_detached(items).await
        };
        submissions
            .iter()
            .zip(outcomes)
            .map(|(s, outcome)| {
                outcome.map(|status| self.receipt(&s.event, &s.correlation_id, status))
            })
            .collect()
    }

    /// Publishes a dead letter again, as it was, through the same steps as a new event:
    /// to the outbox first while it owes the broker events, or when the broker is down.
    pub async fn republish(&self, event: Republish) -> Result<ReceiptStatus, NotTaken> {
        let pending = PendingEvent {
            id: event.id,
            routing_key: event.event_type.as_str(),
            ordering_key: event.user_id.unwrap_or_else(|| event.id.to_string()),
            correlation_id: event.correlation_id,
            timestamp_secs: OffsetDateTime::now_utc().unix_timestamp(),
            body: event.body,
            // Its row, if it was critical, exists already.
            record: None,
            trace: event.trace.or_else(telemetry::outgoing),
        };
        let items = vec![(event.event_type, Ok(pending))];
        self.take_detached(items)
            .await
            .pop()
            .unwrap_or(Err(unavailable()))
    }

    /// Nothing of these events is committed before it is published (no critical event, no
    /// backlog), so a request dropped half-way leaves nothing to finish.
    fn commits_nothing(&self, items: &[Item]) -> bool {
        !self.backlog.has_backlog() && items.iter().all(|(t, _)| !self.critical.contains(t))
    }

    /// Runs the steps in a task of its own: once something is committed, its story is
    /// finished even if the client goes away (or a row would sit out its lease and be
    /// published twice).
    async fn take_detached(&self, items: Vec<Item>) -> Vec<Outcome> {
        let count = items.len();
        let publishing = self.clone();
        match finish_detached(async move { publishing.take(items).await }).await {
            Ok(outcomes) => outcomes,
            Err(_) => (0..count).map(|_| Err(unavailable())).collect(),
        }
    }

    fn receipt(&self, event: &ValidEvent, correlation_id: &str, status: ReceiptStatus) -> Receipt {
        Receipt {
            id: event.id,
            event_type: event.event_type.as_str().to_owned(),
            correlation_id: correlation_id.to_owned(),
            client_id: event.chosen_id().map(|id| id.as_sent()),
            status,
            persisted: self.critical.contains(&event.event_type),
            error: None,
        }
    }

    /// The bytes that go to the bus and to PostgreSQL, with sensitive fields sealed (the
    /// one place an event becomes those bytes).
    fn pending(
        &self,
        principal: &Principal,
        event: &ValidEvent,
        correlation_id: &str,
    ) -> Result<PendingEvent, NotTaken> {
        let accepted_at = OffsetDateTime::now_utc();
        let event = match &self.sealer {
            Some(sealer) => {
                let mut copy = event.clone();
                sealer.seal(copy.id, &mut copy.data);
                Cow::Owned(copy)
            }
            None => Cow::Borrowed(event),
        };
        let event = event.as_ref();
        let envelope = Envelope::new(event, correlation_id, &principal.subject, accepted_at);
        let body = serde_json::to_vec(&envelope).map_err(PublishError::Encode)?;
        let user_id = event.data.user_id().map(str::to_owned);
        let critical = self.critical.contains(&event.event_type);
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
            trace: telemetry::outgoing(),
        })
    }
}

/// One event of a request: its type, and what goes to the bus (or why nothing can).
type Item = (EventType, Result<PendingEvent, NotTaken>);
type Outcome = Result<ReceiptStatus, NotTaken>;

fn unavailable() -> NotTaken {
    NotTaken::Publish(PublishError::Unavailable(None))
}

/// Accepted when every event was taken; otherwise the first failure, listing what
/// happened to each event so the client can retry exactly the ones that failed. When any
/// event's outcome is unknown, so is the batch's, naming every such event.
fn batch_answer(
    correlation_id: String,
    events: &[ValidEvent],
    outcomes: Vec<Result<Receipt, NotTaken>>,
) -> Result<Accepted, BatchNotTaken> {
    let mut results = Vec::with_capacity(outcomes.len());
    let mut first = None;
    let mut unknown = None;
    for (event, outcome) in events.iter().zip(outcomes) {
        let error = match outcome {
            Ok(receipt) => {
                results.push(receipt);
                continue;
            }
            Err(error) => error,
        };
        let status = match &error {
            NotTaken::OutcomeUnknown { .. } => ReceiptStatus::Unknown,
            _ => ReceiptStatus::Failed,
        };
        results.push(Receipt {
            id: event.id,
            event_type: event.event_type.as_str().to_owned(),
            correlation_id: event
                .correlation_id
                .clone()
                .unwrap_or_else(|| correlation_id.clone()),
            client_id: event.chosen_id().map(|id| id.as_sent()),
            status,
            persisted: false,
            error: Some(error.to_string()),
        });
        match (error, &mut unknown) {
            (
                NotTaken::OutcomeUnknown { ids, .. },
                Some(NotTaken::OutcomeUnknown { ids: all, .. }),
            ) => all.extend(ids),
            (error @ NotTaken::OutcomeUnknown { .. }, None) => unknown = Some(error),
            (error, _) => {
                first.get_or_insert(error);
            }
        }
    }
    match unknown.or(first) {
        None => Ok(Accepted {
            correlation_id,
            body: json!(BatchReceipt { results }),
        }),
        Some(first) => Err(BatchNotTaken { first, results }),
    }
}
