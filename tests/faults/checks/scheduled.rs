//! The scheduled events' check: each on the bus exactly once (the schedule releases it
//! once), carrying its `deliverAt` as `metadata.scheduledFor`, none taken off its queue
//! before that time, and each user's, on each queue, in due-then-accepted order (a user
//! sends its next request only once the last was answered, and a batch's events are
//! accepted in their order: the sequence number is the acceptance order). It also
//! measures how late the latest one arrived.

use std::collections::{HashMap, HashSet};

use super::{Key, Observed, Row, describe};
use crate::load::{EventLog, Outcome};
use crate::observe::Message;

pub(super) fn check_scheduled(
    row: &mut Row,
    seen: &Observed,
    copies: &HashMap<Key, Vec<&Message>>,
) {
    let mut due_of = HashMap::new();
    for log in seen.logs {
        let Some(due) = log.planned.deliver_at_ms else {
            continue;
        };
        let key = (log.planned.user.clone(), log.planned.seq);
        let found = copies.get(&key).map(Vec::as_slice).unwrap_or_default();
        row.scheduled += usize::from(log.acked().is_some());
        check_receipts(row, log, due);
        check_copies(row, log, due, found);
        if let Some(first) = found.first() {
            let late = (first.received_ms as f64 - due as f64) / 1000.0;
            row.last_late_secs = Some(row.last_late_secs.map_or(late, |last| last.max(late)));
        }
        due_of.insert(key, due);
    }
    for message in seen.messages {
        let key = (message.user.clone(), message.seq);
        if message.scheduled_for_ms.is_some() && !due_of.contains_key(&key) {
            row.failures.push(format!(
                "user {} seq {}: metadata.scheduledFor on an event sent without deliverAt",
                message.user, message.seq
            ));
        }
    }
    check_due_order(row, seen, &due_of);
}

/// Every `scheduled` answer names the time the client asked for.
fn check_receipts(row: &mut Row, log: &EventLog, due: u64) {
    let answered = log
        .attempts
        .iter()
        .filter_map(|attempt| match attempt.outcome {
            Outcome::Scheduled { deliver_at_ms, .. } => Some(deliver_at_ms),
            _ => None,
        });
    for deliver_at_ms in answered.filter(|&answered| answered != Some(due)) {
        row.failures.push(format!(
            "{}: answered deliverAt {deliver_at_ms:?} ms, asked {due} ms",
            describe(log)
        ));
    }
}

/// One copy, never more; each carrying its time, and taken off the queue no sooner.
fn check_copies(row: &mut Row, log: &EventLog, due: u64, found: &[&Message]) {
    if found.len() > 1 {
        row.failures.push(format!(
            "{}: on the bus {} times; a scheduled event is released once",
            describe(log),
            found.len()
        ));
    }
    for copy in found {
        if copy.scheduled_for_ms != Some(due) {
            row.failures.push(format!(
                "{}: metadata.scheduledFor {:?} ms, asked {due} ms",
                describe(log),
                copy.scheduled_for_ms
            ));
        }
        if copy.received_ms < due {
            row.failures.push(format!(
                "{}: taken off {} at {} ms, {} ms before its deliverAt",
                describe(log),
                copy.queue,
                copy.received_ms,
                due - copy.received_ms
            ));
        }
    }
}

/// On each queue, each user's scheduled events (first copies) by due time, then sequence.
fn check_due_order(row: &mut Row, seen: &Observed, due_of: &HashMap<Key, u64>) {
    let mut first_seen = HashSet::new();
    let mut last: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
    for message in seen.messages {
        let key = (message.user.clone(), message.seq);
        let Some(&due) = due_of.get(&key) else {
            continue;
        };
        if !first_seen.insert(key) {
            continue;
        }
        let place = (due, message.seq);
        let previous = last.insert((&message.queue, &message.user), place);
        if let Some((due_before, seq_before)) = previous.filter(|&previous| previous > place) {
            row.failures.push(format!(
                "scheduled order: on {} user {} seq {} (due {due}) came after seq {seq_before} (due {due_before})",
                message.queue, message.user, message.seq
            ));
        }
    }
}
