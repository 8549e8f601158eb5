//! The checks: every acknowledged event on the bus (and, when critical, in PostgreSQL),
//! nothing definitely refused on the bus, copies only under the event's own id, each
//! user's acknowledged events in order on each queue, scheduled events once and on time
//! ([`scheduled`]), and how soon `published` came back.

mod scheduled;

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::load::{EventLog, Outcome};
use crate::observe::Message;

type Key = (String, u64);

/// What one scenario measured; it passes when `failures` is empty.
#[derive(Debug, Default)]
pub struct Row {
    pub scenario: &'static str,
    pub acknowledged: usize,
    pub queued: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub refused_delivered: usize,
    pub outcome_unknown: usize,
    pub recovery_secs: Option<f64>,
    /// Scheduled events acknowledged, and how late the latest of them arrived.
    pub scheduled: usize,
    pub last_late_secs: Option<f64>,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
}

/// Everything a scenario observed.
pub struct Observed<'a> {
    pub logs: &'a [EventLog],
    pub messages: &'a [Message],
    pub persisted: &'a HashSet<Uuid>,
    /// When the fault was removed (ms since the epoch).
    pub restored_ms: u64,
}

pub fn check(scenario: &'static str, seen: &Observed) -> Row {
    let mut copies: HashMap<Key, Vec<&Message>> = HashMap::new();
    for message in seen.messages {
        copies
            .entry((message.user.clone(), message.seq))
            .or_default()
            .push(message);
    }
    let mut row = Row {
        scenario,
        duplicates: copies.values().map(|found| found.len() - 1).sum(),
        recovery_secs: recovery(seen),
        ..Row::default()
    };
    let mut known = HashSet::new();
    for log in seen.logs {
        let key = (log.planned.user.clone(), log.planned.seq);
        let found = copies.get(&key).map(Vec::as_slice).unwrap_or_default();
        known.insert(key);
        check_event(&mut row, log, found, seen.persisted);
    }
    for (key, found) in &copies {
        if !known.contains(key) {
            row.failures.push(format!(
                "{} message(s) for user {} seq {} that no client sent",
                found.len(),
                key.0,
                key.1
            ));
        }
    }
    check_order(&mut row, seen);
    scheduled::check_scheduled(&mut row, seen, &copies);
    row
}

/// One event against its copies on the bus.
fn check_event(row: &mut Row, log: &EventLog, found: &[&Message], persisted: &HashSet<Uuid>) {
    let name = describe(log);
    row.outcome_unknown += log
        .attempts
        .iter()
        .filter(|attempt| attempt.outcome.is_outcome_unknown_problem())
        .count();
    let ids: HashSet<Option<Uuid>> = found.iter().map(|message| message.message_id).collect();
    if ids.len() > 1 {
        row.failures
            .push(format!("{name}: on the bus under several ids {ids:?}"));
    }
    if let Some(refused) = refused_delivered(log, found) {
        row.refused_delivered += 1;
        row.failures
            .push(format!("{name}: refused ({refused}) but on the bus"));
    }
    let Some((id, queued, _)) = log.acked() else {
        return;
    };
    row.acknowledged += 1;
    row.queued += usize::from(queued);
    let on_bus = found.iter().any(|message| message.message_id == Some(id));
    let stored = !log.planned.critical() || persisted.contains(&id);
    if !on_bus || !stored {
        row.lost += 1;
        row.failures.push(format!(
            "{name}: acknowledged as {id} but {}",
            match (on_bus, stored) {
                (false, false) => "neither on the bus nor in PostgreSQL".to_owned(),
                (false, true) => format!("not on the bus (copies under {ids:?})"),
                _ => "not in PostgreSQL".to_owned(),
            }
        ));
    }
}

/// Why a copy on the bus contradicts a definite refusal: the copy was accepted while a
/// refused attempt ran (its `metadata.timestamp` falls inside it), or the event's last
/// answer, never a 202, refused it.
fn refused_delivered(log: &EventLog, found: &[&Message]) -> Option<String> {
    if found.is_empty() {
        return None;
    }
    for message in found {
        // Every gateway message carries its acceptance time; one without cannot be cleared.
        let Some(accepted) = message.accepted_ms else {
            return Some(format!(
                "copy {:?} has no readable metadata.timestamp",
                message.message_id
            ));
        };
        let during = log
            .attempts
            .iter()
            .find(|attempt| (attempt.sent_ms..=attempt.answered_ms).contains(&accepted));
        if let Some(
            attempt @ crate::load::Attempt {
                outcome: Outcome::Refused { .. },
                ..
            },
        ) = during
        {
            return Some(format!(
                "{:?}, copy accepted at {accepted} ms",
                attempt.outcome
            ));
        }
    }
    match log.attempts.last() {
        Some(
            last @ crate::load::Attempt {
                outcome: Outcome::Refused { .. },
                ..
            },
        ) if log.acked().is_none() => Some(format!("last answer {:?}", last.outcome)),
        _ => None,
    }
}

/// Each user's acknowledged events on each queue, first copies only, in sequence order.
fn check_order(row: &mut Row, seen: &Observed) {
    let acked: HashSet<Key> = seen
        .logs
        .iter()
        .filter(|log| log.acked().is_some())
        .map(|log| (log.planned.user.clone(), log.planned.seq))
        .collect();
    let mut first_seen = HashSet::new();
    let mut last: HashMap<(&str, &str), u64> = HashMap::new();
    for message in seen.messages {
        let key = (message.user.clone(), message.seq);
        if !acked.contains(&key) || !first_seen.insert(key) {
            continue;
        }
        let previous = last.insert((&message.queue, &message.user), message.seq);
        if let Some(previous) = previous.filter(|&previous| previous > message.seq) {
            row.failures.push(format!(
                "order: on {} user {} seq {} came after seq {previous}",
                message.queue, message.user, message.seq
            ));
        }
    }
}

/// Seconds from the fault's removal to the first `published` answer after it.
fn recovery(seen: &Observed) -> Option<f64> {
    seen.logs
        .iter()
        .flat_map(|log| &log.attempts)
        .filter(|attempt| matches!(attempt.outcome, Outcome::Acked { queued: false, .. }))
        .map(|attempt| attempt.answered_ms)
        .filter(|&answered| answered >= seen.restored_ms)
        .min()
        .map(|answered| (answered - seen.restored_ms) as f64 / 1000.0)
}

fn describe(log: &EventLog) -> String {
    let answers: Vec<String> = log
        .attempts
        .iter()
        .map(|attempt| {
            format!(
                "{}ms..{}ms {:?}",
                attempt.sent_ms, attempt.answered_ms, attempt.outcome
            )
        })
        .collect();
    format!(
        "{} seq {} ({}, client id {:?}; answers: {})",
        log.planned.user,
        log.planned.seq,
        log.planned.event_type,
        log.planned.client_id,
        answers.join(", ")
    )
}
