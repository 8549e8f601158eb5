//! What an answer promises when the broker or the database fails half-way: a refusal only
//! when nothing was or will be published, else `outcome-unknown` naming the events.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::app::publish::{Receipt, Unknown};
use crate::runtime::in_flight::{self, Handover};

fn lost_confirm() -> PublishError {
    PublishError::ConfirmTimeout(Duration::from_secs(5))
}

fn database_down() -> StoreError {
    StoreError::Unavailable(Arc::new(std::io::Error::other("connection refused")))
}

fn commit_lost() -> StoreError {
    StoreError::CommitUnknown(Arc::new(std::io::Error::other("connection reset")))
}

/// A broker whose confirms never come, and an outbox that cannot hold anything.
fn unconfirmed_and_no_outbox() -> Harness {
    let bus = MemoryBus {
        fail: Some(lost_confirm),
        ..MemoryBus::default()
    };
    let outbox = MemoryOutbox {
        fail: Some(database_down),
        ..MemoryOutbox::default()
    };
    harness_with(bus, outbox)
}

fn unknown_ids(outcome: &Result<Receipt, NotTaken>) -> Vec<Uuid> {
    match outcome {
        Err(NotTaken::OutcomeUnknown { ids, .. }) => ids.clone(),
        other => panic!("expected outcome-unknown, got {other:?}"),
    }
}

#[tokio::test]
async fn a_sent_event_the_outbox_cannot_hold_is_unknown_not_refused() {
    let h = unconfirmed_and_no_outbox();
    let event = event("analytics.event_tracked");
    let outcome = h.publishing.publish(&caller(), &event, "c-1").await;
    assert_eq!(unknown_ids(&outcome), vec![event.id]);
}

#[tokio::test]
async fn an_event_the_broker_refused_and_the_outbox_cannot_hold_is_refused() {
    let outbox = MemoryOutbox {
        fail: Some(database_down),
        ..MemoryOutbox::default()
    };
    let h = harness_with(refusing_bus(), outbox);
    let outcome = h
        .publishing
        .publish(&caller(), &event("analytics.event_tracked"), "c-1")
        .await;
    assert!(
        matches!(outcome, Err(NotTaken::Unavailable(_))),
        "a nack is a definite no: {outcome:?}"
    );
}

#[tokio::test]
async fn a_commit_whose_outcome_is_lost_is_unknown_and_nothing_is_sent() {
    let outbox = MemoryOutbox {
        fail: Some(commit_lost),
        ..MemoryOutbox::default()
    };
    let h = harness_with(MemoryBus::default(), outbox);
    let critical = event("achievement.completed");
    let outcome = h.publishing.publish(&caller(), &critical, "c-1").await;
    assert_eq!(unknown_ids(&outcome), vec![critical.id]);
    assert!(h.bus.published.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_returned_event_whose_row_cannot_be_dropped_is_unknown() {
    struct StuckOutbox(MemoryOutbox);
    #[async_trait]
    impl Outbox for StuckOutbox {
        async fn hold(&self, e: Vec<PendingEvent>, o: Owner) -> Result<Vec<Held>, StoreError> {
            self.0.hold(e, o).await
        }
        async fn confirmed(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
            self.0.confirmed(ids).await
        }
        async fn release(&self, id: Uuid) -> Result<(), StoreError> {
            self.0.release(id).await
        }
        async fn forget(&self, _: Uuid) -> Result<bool, StoreError> {
            Err(database_down())
        }
    }
    let bus = Arc::new(MemoryBus {
        unroutable: HashSet::from(["achievement.completed"]),
        ..MemoryBus::default()
    });
    let backlog = Backlog::default();
    backlog.counted(backlog.generation(), false);
    let publishing = Publishing::new(PublishingParts {
        bus,
        outbox: Arc::new(StuckOutbox(MemoryOutbox::default())),
        listings: Arc::new(MemoryCache::default()),
        backlog,
        metrics: Arc::new(Metrics::new().unwrap()),
        critical: HashSet::from([EventType::AchievementCompleted]),
        sealer: None,
    });
    let critical = event("achievement.completed");
    let outcome = publishing.publish(&caller(), &critical, "c-1").await;
    assert!(
        matches!(
            outcome,
            Err(NotTaken::OutcomeUnknown {
                why: Unknown::NotForgotten,
                ..
            })
        ),
        "its row may still be published by the relay: {outcome:?}"
    );
}

#[tokio::test]
async fn a_batch_with_one_unknown_event_is_unknown_and_names_it() {
    let h = unconfirmed_and_no_outbox();
    let events = [
        event("analytics.event_tracked"),
        event("analytics.event_tracked"),
    ];
    let refused = h
        .publishing
        .accept_batch(&caller(), &events, "batch-1".into())
        .await
        .unwrap_err();
    let NotTaken::OutcomeUnknown { ids, .. } = refused.first else {
        panic!("expected outcome-unknown, got {:?}", refused.first);
    };
    assert_eq!(ids, vec![events[0].id, events[1].id]);
    assert!(
        refused
            .results
            .iter()
            .all(|r| r.status == ReceiptStatus::Unknown)
    );
}

#[tokio::test]
async fn a_request_answered_already_publishes_nothing() {
    let h = harness(MemoryBus::default());
    let handover = Arc::new(Handover::default());
    assert!(handover.answer_now().is_empty());
    let outcome = in_flight::in_request(
        handover,
        h.publishing
            .publish(&caller(), &event("analytics.event_tracked"), "c-1"),
    )
    .await;
    assert!(matches!(outcome, Err(NotTaken::TooLate)), "{outcome:?}");
    assert!(h.bus.published.lock().unwrap().is_empty());
    assert!(h.outbox.rows.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_retry_while_the_first_request_still_holds_its_row_is_unknown_not_safe() {
    let h = harness(MemoryBus::default());
    let critical = event("achievement.completed");
    // The first request committed it and is still at work (its publish may yet fail).
    h.outbox
        .rows
        .lock()
        .unwrap()
        .insert(critical.id, Owner::Request);
    let outcome = h.publishing.publish(&caller(), &critical, "c-1").await;
    assert!(
        matches!(
            outcome,
            Err(NotTaken::OutcomeUnknown {
                why: Unknown::InProgress,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(h.bus.published.lock().unwrap().is_empty());
}
