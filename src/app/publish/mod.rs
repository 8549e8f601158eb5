//! Publishing: turning a valid event into a safe one, on the bus with a broker confirm or
//! held in the PostgreSQL outbox for the relay. Critical events are written before the
//! answer, always. Every way an event comes in (the publish endpoints, webhooks, replays
//! of dead letters) goes through here, so each is counted, held when the broker is down,
//! and ordered per user the same way.

mod answer;
mod backlog;
mod steps;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

pub use answer::{BatchNotTaken, BatchReceipt, NotTaken, Receipt, ReceiptStatus, Unknown};
pub use backlog::Backlog;

use answer::{batch_answer, unavailable};

use super::idempotency::Accepted;
use super::ports::{EventBus, Outbox, PublishError, ReadCache};
use super::records::{EventRecord, PendingEvent, ScheduledRecord};
use crate::domain::sealing::Sealer;
use crate::domain::trace::TraceContext;
use crate::domain::{Envelope, EventType, Principal, ValidEvent};
use crate::runtime::detached::finish_detached;
use crate::runtime::metrics::Metrics;
use crate::runtime::telemetry;

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
            schedule: None,
            trace: event.trace.or_else(telemetry::outgoing),
        };
        let items = vec![(event.event_type, Ok(pending))];
        self.take_detached(items)
            .await
            .pop()
            .unwrap_or(Err(unavailable()))
    }

    /// Nothing of these events is committed before it is published (no critical or
    /// scheduled event, no backlog), so a request dropped half-way leaves nothing to finish.
    fn commits_nothing(&self, items: &[Item]) -> bool {
        !self.backlog.has_backlog()
            && items.iter().all(|(t, pending)| {
                !self.critical.contains(t) && pending.as_ref().is_ok_and(|p| p.schedule.is_none())
            })
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
            deliver_at: match (status, &event.deliver_at) {
                (ReceiptStatus::Scheduled, Some(deliver_at)) => Some(deliver_at.text()),
                _ => None,
            },
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
        let record = || EventRecord {
            event_type: event.event_type.as_str(),
            user_id: user_id.clone(),
            source: principal.subject.clone(),
            accepted_at,
        };
        // A scheduled event waits in the schedule; a critical one gets its record when due.
        let schedule = event.deliver_at.as_ref().map(|deliver_at| ScheduledRecord {
            deliver_at: deliver_at.at,
            critical,
            record: record(),
        });
        Ok(PendingEvent {
            id: event.id,
            routing_key: event.event_type.as_str(),
            // A user's events leave the outbox in order; others have no order to keep.
            ordering_key: user_id.clone().unwrap_or_else(|| event.id.to_string()),
            correlation_id: correlation_id.to_owned(),
            timestamp_secs: accepted_at.unix_timestamp(),
            body,
            record: (critical && schedule.is_none()).then(record),
            schedule,
            trace: telemetry::outgoing(),
        })
    }
}

/// One event of a request: its type, and what goes to the bus (or why nothing can).
type Item = (EventType, Result<PendingEvent, NotTaken>);
type Outcome = Result<ReceiptStatus, NotTaken>;
