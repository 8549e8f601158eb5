//! The checks themselves, on made-up answers and bus contents: each violation is caught,
//! and what the contract allows (a redelivery under the same id) is not.

use std::collections::HashSet;

use uuid::Uuid;

use crate::checks::{Observed, Row, check};
use crate::load::{Attempt, EventLog, Outcome, Planned};
use crate::observe::Message;

const QUEUE: &str = "t.achievement_events";

fn event(seq: u64, outcomes: &[Outcome]) -> EventLog {
    EventLog {
        planned: Planned {
            user: "u".into(),
            seq,
            event_type: "analytics.event_tracked",
            client_id: None,
            deliver_at_ms: None,
        },
        attempts: outcomes
            .iter()
            .enumerate()
            .map(|(index, outcome)| Attempt {
                sent_ms: seq * 1000 + index as u64 * 100,
                answered_ms: seq * 1000 + index as u64 * 100 + 50,
                outcome: outcome.clone(),
            })
            .collect(),
    }
}

fn acked(id: Uuid) -> Outcome {
    Outcome::Acked { id, queued: false }
}

fn copy(seq: u64, id: Uuid, accepted_ms: u64) -> Message {
    Message {
        queue: QUEUE.into(),
        message_id: Some(id),
        user: "u".into(),
        seq,
        accepted_ms: Some(accepted_ms),
        scheduled_for_ms: None,
        received_ms: accepted_ms + 5,
    }
}

/// An event scheduled for `due`, answered `scheduled`.
fn scheduled(seq: u64, id: Uuid, due: u64) -> EventLog {
    let mut log = event(
        seq,
        &[Outcome::Scheduled {
            id,
            deliver_at_ms: Some(due),
        }],
    );
    log.planned.deliver_at_ms = Some(due);
    log
}

/// Its copy on the bus, taken off the queue at `received_ms`.
fn released(seq: u64, id: Uuid, due: u64, received_ms: u64) -> Message {
    Message {
        scheduled_for_ms: Some(due),
        received_ms,
        ..copy(seq, id, seq * 1000 + 10)
    }
}

fn checked(logs: &[EventLog], messages: &[Message]) -> Row {
    check(
        "self-test",
        &Observed {
            logs,
            messages,
            persisted: &HashSet::new(),
            restored_ms: 0,
        },
    )
}

#[test]
fn a_redelivery_under_the_same_id_passes() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let logs = [event(1, &[acked(a)]), event(2, &[acked(b)])];
    let row = checked(
        &logs,
        &[copy(1, a, 1010), copy(2, b, 2010), copy(1, a, 1010)],
    );
    assert_eq!((row.acknowledged, row.duplicates, row.lost), (2, 1, 0));
    assert!(row.failures.is_empty(), "{:?}", row.failures);
}

#[test]
fn an_acknowledged_event_missing_from_the_bus_is_lost() {
    let logs = [event(1, &[acked(Uuid::new_v4())])];
    let row = checked(&logs, &[]);
    assert_eq!(row.lost, 1);
    assert!(!row.failures.is_empty());
}

#[test]
fn a_copy_accepted_during_a_refused_attempt_is_refused_but_delivered() {
    let id = Uuid::new_v4();
    let refused = Outcome::Refused {
        status: 503,
        problem: "urn:problem:event-gateway:unavailable".into(),
    };
    // Refused first (1000..1050 ms), taken on the retry: the copy is from the refusal.
    let logs = [event(1, &[refused, acked(id)])];
    let row = checked(&logs, &[copy(1, id, 1020)]);
    assert_eq!(row.refused_delivered, 1);
}

#[test]
fn one_event_under_two_ids_and_a_user_out_of_order_fail() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let logs = [event(1, &[acked(a)]), event(2, &[acked(b)])];
    let twice = checked(
        &logs,
        &[copy(1, a, 1010), copy(1, b, 1010), copy(2, b, 2010)],
    );
    assert!(
        twice
            .failures
            .iter()
            .any(|failure| failure.contains("several ids"))
    );
    let reversed = checked(&logs, &[copy(2, b, 2010), copy(1, a, 1010)]);
    assert!(
        reversed
            .failures
            .iter()
            .any(|failure| failure.starts_with("order"))
    );
}

#[test]
fn scheduled_events_once_on_time_and_in_order_pass() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let logs = [scheduled(1, a, 9000), scheduled(2, b, 9000)];
    let row = checked(
        &logs,
        &[released(1, a, 9000, 9100), released(2, b, 9000, 9100)],
    );
    assert!(row.failures.is_empty(), "{:?}", row.failures);
    assert_eq!((row.scheduled, row.last_late_secs), (2, Some(0.1)));
}

#[test]
fn a_scheduled_event_early_twice_or_out_of_order_fails() {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let logs = [scheduled(1, a, 9000), scheduled(2, b, 9000)];
    let failed = |messages: &[Message], wanted: &str| {
        let row = checked(&logs, messages);
        assert!(
            row.failures.iter().any(|failure| failure.contains(wanted)),
            "{wanted}: {:?}",
            row.failures
        );
    };
    failed(
        &[released(1, a, 9000, 8990), released(2, b, 9000, 9100)],
        "before its deliverAt",
    );
    failed(
        &[
            released(1, a, 9000, 9100),
            released(1, a, 9000, 9200),
            released(2, b, 9000, 9100),
        ],
        "released once",
    );
    failed(
        &[released(2, b, 9000, 9100), released(1, a, 9000, 9100)],
        "scheduled order",
    );
    failed(
        &[released(1, a, 8000, 9100), released(2, b, 9000, 9100)],
        "metadata.scheduledFor",
    );
}
