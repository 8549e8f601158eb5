//! Turning a valid event into a safe one: on the bus with a broker confirm, or held in the
//! PostgreSQL outbox for the relay. Critical events are written before the answer, always.
//! Shared by every way an event comes in.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use tracing::warn;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::bus::{OutgoingMessage, PublishError, Publisher};
use crate::cache::Cache;
use crate::domain::sealing::Sealer;
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
    /// The database could not hold the event: a critical one, or one the broker refused.
    #[error("the database could not hold the event (critical, or refused by the broker)")]
    Unavailable(#[source] StoreError),
    #[error("an event with this id was already accepted")]
    Duplicate,
}

/// One event to take, with the correlation id it goes out with.
#[derive(Debug, Clone)]
pub struct Submission {
    pub event: ValidEvent,
    pub correlation_id: String,
}

impl Submission {
    fn as_ref(&self) -> SubmissionRef<'_> {
        SubmissionRef {
            event: &self.event,
            correlation_id: &self.correlation_id,
        }
    }
}

/// A [`Submission`] borrowed, so a single event needs no copy.
#[derive(Debug, Clone, Copy)]
struct SubmissionRef<'a> {
    event: &'a ValidEvent,
    correlation_id: &'a str,
}

/// Where one event of a request stands.
enum Step {
    /// To be committed to the outbox first.
    ToHold,
    /// Committed; this request publishes it.
    HeldBySelf,
    /// Straight to the broker.
    Direct,
    /// The broker could not take it for now: to the outbox.
    Refused,
    Done(Result<ReceiptStatus, IngestError>),
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
    sealer: Option<Arc<Sealer>>,
}

impl Ingest {
    pub fn new(
        publisher: Publisher,
        store: Store,
        cache: Cache,
        relay: RelaySignal,
        metrics: Arc<Metrics>,
        critical: HashSet<EventType>,
        sealer: Option<Sealer>,
    ) -> Self {
        Ingest {
            publisher,
            store,
            cache,
            relay,
            metrics,
            critical: Arc::new(critical),
            sealer: sealer.map(Arc::new),
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
        let submission = [SubmissionRef {
            event,
            correlation_id,
        }];
        let outcomes = if self.commits_nothing(&submission) {
            self.take(principal, &submission).await
        } else {
            let owned = Submission {
                event: event.clone(),
                correlation_id: correlation_id.to_owned(),
            };
            self.publish_all(principal, vec![owned]).await
        };
        outcomes
            .into_iter()
            .next()
            .unwrap_or(Err(IngestError::Publish(PublishError::Unavailable(None))))
    }

    /// Nothing of these events is committed before it is published (no critical event, no
    /// backlog), so a request dropped half-way leaves nothing to finish.
    fn commits_nothing(&self, submissions: &[SubmissionRef<'_>]) -> bool {
        !self.relay.has_backlog()
            && submissions
                .iter()
                .all(|s| !self.critical.contains(&s.event.event_type))
    }

    /// Takes events in request order, one outcome each; a user's events reach the bus in
    /// that order. Runs in a task of its own: once something is committed, its story is
    /// finished even if the client goes away (or a row would sit out its lease and be
    /// published twice).
    pub async fn publish_all(
        &self,
        principal: &Principal,
        submissions: Vec<Submission>,
    ) -> Vec<Result<Receipt, IngestError>> {
        let count = submissions.len();
        let refs: Vec<SubmissionRef<'_>> = submissions.iter().map(Submission::as_ref).collect();
        if self.commits_nothing(&refs) {
            return self.take(principal, &refs).await;
        }
        let ingest = self.clone();
        let principal = principal.clone();
        let taken = tokio::spawn(async move {
            let refs: Vec<SubmissionRef<'_>> = submissions.iter().map(Submission::as_ref).collect();
            ingest.take(&principal, &refs).await
        });
        match taken.await {
            Ok(outcomes) => outcomes,
            Err(_) => (0..count)
                .map(|_| Err(IngestError::Publish(PublishError::Unavailable(None))))
                .collect(),
        }
    }

    async fn take(
        &self,
        principal: &Principal,
        submissions: &[SubmissionRef<'_>],
    ) -> Vec<Result<Receipt, IngestError>> {
        // While the outbox owes the broker events, new ones queue behind them (order).
        let backlog = self.relay.has_backlog();
        let by_request = !backlog && self.publisher.is_connected();
        let mut steps = Vec::with_capacity(submissions.len());
        let mut pendings = Vec::with_capacity(submissions.len());
        for submission in submissions {
            let critical = self.critical.contains(&submission.event.event_type);
            match self.pending(
                principal,
                submission.event,
                submission.correlation_id,
                critical,
            ) {
                Ok(pending) => {
                    steps.push(if critical || backlog {
                        Step::ToHold
                    } else {
                        Step::Direct
                    });
                    pendings.push(Some(pending));
                }
                Err(error) => {
                    steps.push(Step::Done(Err(error)));
                    pendings.push(None);
                }
            }
        }
        let users = self.hold_first(&mut steps, &pendings, by_request).await;
        // A user's cached listings miss the new events now: drop them before answering,
        // so the client reads its own write; meanwhile the broker confirms.
        tokio::join!(
            self.forget_listings(users),
            self.send(&mut steps, &pendings)
        );
        self.hold_what_the_broker_refused(&mut steps, &pendings)
            .await;
        submissions
            .iter()
            .zip(steps)
            .map(|(submission, step)| self.receipt(submission, step))
            .collect()
    }

    /// Critical events (all events, with a backlog) are committed before the broker sees
    /// them, in one transaction for the whole request. Returns the users they belong to.
    async fn hold_first(
        &self,
        steps: &mut [Step],
        pendings: &[Option<PendingEvent>],
        by_request: bool,
    ) -> HashSet<String> {
        let indexes: Vec<usize> = (0..steps.len())
            .filter(|&i| matches!(steps[i], Step::ToHold))
            .collect();
        if indexes.is_empty() {
            return HashSet::new();
        }
        let owner = if by_request {
            Owner::Request
        } else {
            Owner::Relay
        };
        let held: Vec<PendingEvent> = indexes
            .iter()
            .filter_map(|&i| pendings[i].clone())
            .collect();
        let users: HashSet<String> = held
            .iter()
            .filter_map(|p| p.record.as_ref().and_then(|r| r.user_id.clone()))
            .collect();
        match self.store.hold(held, owner).await {
            Ok(fresh) => {
                for (&i, fresh) in indexes.iter().zip(fresh) {
                    steps[i] = match (fresh, by_request) {
                        (false, _) => Step::Done(Err(IngestError::Duplicate)),
                        (true, true) => Step::HeldBySelf,
                        (true, false) => Step::Done(Ok(ReceiptStatus::Queued)),
                    };
                }
                if !by_request {
                    self.relay.backlog_added();
                }
            }
            Err(error) => {
                for &i in &indexes {
                    steps[i] = Step::Done(Err(IngestError::Unavailable(error.clone())));
                }
            }
        }
        users
    }

    async fn forget_listings(&self, users: HashSet<String>) {
        for user in users {
            self.cache.forget_user_events(&user).await;
        }
    }

    /// Publishes what this request owns, in request order, and settles held rows.
    async fn send(&self, steps: &mut [Step], pendings: &[Option<PendingEvent>]) {
        let indexes: Vec<usize> = (0..steps.len())
            .filter(|&i| matches!(steps[i], Step::Direct | Step::HeldBySelf))
            .collect();
        let messages = indexes
            .iter()
            .filter_map(|&i| pendings[i].as_ref().map(message))
            .collect();
        let outcomes = self.publisher.publish_in_order(messages).await;
        let mut confirmed = Vec::new();
        for (&i, outcome) in indexes.iter().zip(outcomes) {
            let Some(id) = pendings[i].as_ref().map(|p| p.id) else {
                continue;
            };
            let held = matches!(steps[i], Step::HeldBySelf);
            steps[i] = match outcome {
                Ok(()) => {
                    if held {
                        confirmed.push(id);
                    }
                    Step::Done(Ok(ReceiptStatus::Published))
                }
                Err(error) if !error.is_transient() => {
                    if held && let Err(forget) = self.store.forget(id).await {
                        warn!(error = %forget, event_id = %id, "could not drop an unpublishable event");
                    }
                    Step::Done(Err(error.into()))
                }
                Err(error) if held => {
                    warn!(%error, event_id = %id, "broker did not take the event; the relay will publish it");
                    if let Err(release) = self.store.release(id).await {
                        warn!(error = %release, "could not hand the event to the relay now; it will after its lease");
                    }
                    self.relay.backlog_added();
                    Step::Done(Ok(ReceiptStatus::Queued))
                }
                Err(error) => {
                    warn!(%error, event_id = %id, "broker did not take the event; holding it in the outbox");
                    Step::Refused
                }
            };
        }
        if !confirmed.is_empty()
            && let Err(error) = self.store.confirmed(confirmed).await
        {
            warn!(%error, "could not mark events published; the relay will publish them again");
        }
    }

    /// Events the broker could not take for now go to the outbox, in request order.
    async fn hold_what_the_broker_refused(
        &self,
        steps: &mut [Step],
        pendings: &[Option<PendingEvent>],
    ) {
        let indexes: Vec<usize> = (0..steps.len())
            .filter(|&i| matches!(steps[i], Step::Refused))
            .collect();
        if indexes.is_empty() {
            return;
        }
        let refused = indexes
            .iter()
            .filter_map(|&i| pendings[i].clone())
            .collect();
        let held = self.store.hold(refused, Owner::Relay).await;
        for &i in &indexes {
            steps[i] = Step::Done(match &held {
                // Already in the outbox (a retry of the same id) is just as safe.
                Ok(_) => Ok(ReceiptStatus::Queued),
                Err(error) => Err(IngestError::Unavailable(error.clone())),
            });
        }
        if held.is_ok() {
            self.relay.backlog_added();
        }
    }

    fn receipt(&self, submission: &SubmissionRef<'_>, step: Step) -> Result<Receipt, IngestError> {
        let event = &submission.event;
        let outcome = match step {
            Step::Done(outcome) => outcome,
            // Every step ends in `Done`; anything else would be a bug, so refuse safely.
            _ => Err(IngestError::Publish(PublishError::Unavailable(None))),
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
            correlation_id: submission.correlation_id.to_owned(),
            status,
            persisted: self.critical.contains(&event.event_type),
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
        // Sensitive fields are sealed here, the one place an event becomes the bytes that
        // go to the bus and to PostgreSQL.
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
}

fn message(pending: &PendingEvent) -> OutgoingMessage {
    OutgoingMessage {
        message_id: pending.id,
        routing_key: pending.routing_key,
        correlation_id: pending.correlation_id.clone(),
        timestamp_secs: pending.timestamp_secs.unsigned_abs(),
        body: pending.body.clone(),
    }
}
