//! The steps one request's events go through, and the decisions between them: commit
//! first (critical events, or all while the outbox owes the broker events), publish, and
//! hold in the outbox what the broker could not take for now.

use std::collections::HashSet;

use tracing::warn;
use uuid::Uuid;

use super::{Item, NotTaken, Outcome, Publishing, ReceiptStatus, Unknown, unavailable};
use crate::app::ports::{PublishError, StoreError};
use crate::app::records::{Held, Owner, PendingEvent};
use crate::runtime::in_flight;
use crate::runtime::metrics::PublishOutcome;

/// Where one event of a request stands.
enum Step {
    /// To be committed to the outbox first.
    ToHold,
    /// Committed; this request publishes it.
    HeldBySelf,
    /// Straight to the broker.
    Direct,
    /// The broker could not take it for now (and may have, when unconfirmed): to the outbox.
    Refused(PublishError),
    Done(Outcome),
}

impl Publishing {
    /// Every event's outcome, in request order, each counted by type and outcome.
    pub(super) async fn take(&self, items: Vec<Item>) -> Vec<Outcome> {
        // While the outbox owes the broker events, new ones queue behind them (order).
        let backlog = self.backlog.has_backlog();
        let by_request = !backlog && self.bus.is_connected();
        let mut steps = Vec::with_capacity(items.len());
        let mut pendings = Vec::with_capacity(items.len());
        let mut types = Vec::with_capacity(items.len());
        let ids: Vec<Uuid> = items
            .iter()
            .filter_map(|(_, pending)| pending.as_ref().ok().map(|p| p.id))
            .collect();
        // A request already answered (timed out) publishes nothing it did not hand over.
        let too_late = !in_flight::take(ids);
        for (event_type, pending) in items {
            types.push(event_type);
            match pending {
                Ok(_) if too_late => {
                    steps.push(Step::Done(Err(NotTaken::TooLate)));
                    pendings.push(None);
                }
                Ok(pending) => {
                    let hold = pending.record.is_some() || pending.schedule.is_some() || backlog;
                    steps.push(if hold { Step::ToHold } else { Step::Direct });
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
        types
            .into_iter()
            .zip(steps)
            .map(|(event_type, step)| {
                let outcome = match step {
                    Step::Done(outcome) => outcome,
                    // Every step ends in `Done`; anything else would be a bug: refuse safely.
                    _ => Err(unavailable()),
                };
                self.metrics
                    .event_published(event_type, outcome_label(&outcome));
                outcome
            })
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
        let indexes = matching(steps, |step| matches!(step, Step::ToHold));
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
        // Every event to hold has its pending event: the ids line up with `indexes`.
        let ids: Vec<Uuid> = held.iter().map(|p| p.id).collect();
        let users: HashSet<String> = held
            .iter()
            .filter_map(|p| {
                let record = p.record.as_ref().or(p.schedule.as_ref().map(|s| &s.record));
                record.and_then(|r| r.user_id.clone())
            })
            .collect();
        let scheduled: Vec<bool> = held.iter().map(|p| p.schedule.is_some()).collect();
        match self.outbox.hold(held, owner).await {
            Ok(held) => {
                for (((&i, held), &id), &scheduled) in
                    indexes.iter().zip(held).zip(&ids).zip(&scheduled)
                {
                    steps[i] = after_hold(held, id, scheduled, by_request);
                }
                // A scheduled event is no backlog: other events need not queue behind it.
                if !by_request && scheduled.contains(&false) {
                    self.backlog.added();
                }
            }
            Err(error) => {
                for (&i, &id) in indexes.iter().zip(&ids) {
                    steps[i] = Step::Done(Err(not_held(id, &error, None)));
                }
            }
        }
        users
    }

    async fn forget_listings(&self, users: HashSet<String>) {
        for user in users {
            self.listings.forget_user_events(&user).await;
        }
    }

    /// Publishes what this request owns, in request order, and settles held rows.
    async fn send(&self, steps: &mut [Step], pendings: &[Option<PendingEvent>]) {
        let indexes = matching(steps, |step| {
            matches!(step, Step::Direct | Step::HeldBySelf)
        });
        let messages = indexes
            .iter()
            .filter_map(|&i| pendings[i].as_ref().map(PendingEvent::message))
            .collect();
        let outcomes = self.bus.publish_in_order(messages).await;
        let mut confirmed = Vec::new();
        for (&i, outcome) in indexes.iter().zip(outcomes) {
            let Some(id) = pendings[i].as_ref().map(|p| p.id) else {
                continue;
            };
            let held = matches!(steps[i], Step::HeldBySelf);
            if held && outcome.is_ok() {
                confirmed.push(id);
            }
            steps[i] = match outcome {
                Ok(()) => Step::Done(Ok(ReceiptStatus::Published)),
                Err(error) if !error.is_transient() => self.refuse(id, held, error).await,
                Err(error) if held => self.hand_to_relay(id, &error).await,
                Err(error) => {
                    warn!(%error, event_id = %id, "broker did not take the event; holding it in the outbox");
                    Step::Refused(error)
                }
            };
        }
        if !confirmed.is_empty()
            && let Err(error) = self.outbox.confirmed(confirmed).await
        {
            warn!(%error, "could not mark events published; the relay will publish them again");
        }
    }

    /// The broker will never take it (returned, say): refused, once its row (if any) is
    /// gone, so the relay cannot publish it later; unknown if it may be on the bus.
    async fn refuse(&self, id: Uuid, held: bool, error: PublishError) -> Step {
        if held {
            let dropped = self.outbox.forget(id).await;
            if let Err(error) = &dropped {
                warn!(%error, event_id = %id, "could not drop an unpublishable event");
            }
            if !matches!(dropped, Ok(true)) {
                return Step::Done(Err(NotTaken::unknown(id, Unknown::NotForgotten)));
            }
        }
        if error.may_be_published() {
            return Step::Done(Err(NotTaken::unknown(id, Unknown::Unconfirmed(error))));
        }
        Step::Done(Err(error.into()))
    }

    /// A committed row this request could not publish: the relay publishes it.
    async fn hand_to_relay(&self, id: Uuid, error: &PublishError) -> Step {
        warn!(%error, event_id = %id, "broker did not take the event; the relay will publish it");
        if let Err(release) = self.outbox.release(id).await {
            warn!(error = %release, "could not hand the event to the relay now; it will after its lease");
        }
        self.backlog.added();
        Step::Done(Ok(ReceiptStatus::Queued))
    }

    /// Events the broker could not take for now go to the outbox, in request order.
    async fn hold_what_the_broker_refused(
        &self,
        steps: &mut [Step],
        pendings: &[Option<PendingEvent>],
    ) {
        let indexes = matching(steps, |step| matches!(step, Step::Refused(_)));
        if indexes.is_empty() {
            return;
        }
        let refused = indexes
            .iter()
            .filter_map(|&i| pendings[i].clone())
            .collect();
        let held = self.outbox.hold(refused, Owner::Relay).await;
        for &i in &indexes {
            let step = std::mem::replace(&mut steps[i], Step::Done(Err(unavailable())));
            let (Step::Refused(publish), Some(pending)) = (step, &pendings[i]) else {
                continue;
            };
            steps[i] = Step::Done(match &held {
                // Already in the outbox (a retry of the same id) is just as safe.
                Ok(_) => Ok(ReceiptStatus::Queued),
                Err(error) => Err(not_held(pending.id, error, Some(publish))),
            });
        }
        if held.is_ok() {
            self.backlog.added();
        }
    }
}

/// Where an event stands once the hold found it new, or found its id taken before.
fn after_hold(held: Held, id: Uuid, scheduled: bool, by_request: bool) -> Step {
    match (held, by_request) {
        // Committed; the schedule publishes it when it is due.
        (Held::New | Held::Scheduled, _) if scheduled => Step::Done(Ok(ReceiptStatus::Scheduled)),
        (Held::Cancelled, _) => Step::Done(Err(NotTaken::Cancelled)),
        (Held::New, true) => Step::HeldBySelf,
        (Held::New, false) => Step::Done(Ok(ReceiptStatus::Queued)),
        // A retry of an accepted event (ids are their caller's): it is safe already, and is
        // not published again.
        (Held::Owed, _) => Step::Done(Ok(ReceiptStatus::Queued)),
        (Held::Published, _) => Step::Done(Ok(ReceiptStatus::Published)),
        (Held::Unsettled | Held::Scheduled, _) => {
            Step::Done(Err(NotTaken::unknown(id, Unknown::InProgress)))
        }
    }
}

/// An event the outbox could not hold: refused, unless it may be on the bus already (sent
/// and unconfirmed) or in the database (a COMMIT whose outcome is unknown).
fn not_held(id: Uuid, error: &StoreError, publish: Option<PublishError>) -> NotTaken {
    let why = match (publish, error) {
        (Some(publish), _) if publish.may_be_published() => Unknown::Unconfirmed(publish),
        (_, StoreError::CommitUnknown(_)) => Unknown::Commit(error.clone()),
        (_, StoreError::Refused(_)) => return NotTaken::Refused(error.clone()),
        _ => return NotTaken::Unavailable(error.clone()),
    };
    NotTaken::unknown(id, why)
}

fn matching(steps: &[Step], wanted: impl Fn(&Step) -> bool) -> Vec<usize> {
    (0..steps.len()).filter(|&i| wanted(&steps[i])).collect()
}

/// The metric label of an outcome.
pub(super) fn outcome_label(outcome: &Outcome) -> PublishOutcome {
    match outcome {
        Ok(ReceiptStatus::Published) => PublishOutcome::Published,
        Ok(ReceiptStatus::Scheduled) => PublishOutcome::Scheduled,
        Ok(_) => PublishOutcome::Queued,
        Err(NotTaken::Publish(error)) => error.outcome(),
        Err(NotTaken::Cancelled) => PublishOutcome::Cancelled,
        // `Invalid` is answered before any event reaches the steps.
        Err(NotTaken::Unavailable(_) | NotTaken::Refused(_) | NotTaken::Invalid(_)) => {
            PublishOutcome::Unavailable
        }
        Err(NotTaken::TooLate) => PublishOutcome::Timeout,
        Err(NotTaken::OutcomeUnknown { .. }) => PublishOutcome::Unknown,
    }
}
