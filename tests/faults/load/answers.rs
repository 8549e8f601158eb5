//! What each answer means for each event it carried, as the contract's delivery guarantees
//! put it: safe (202, or `published`/`queued`/`scheduled` in a batch's results), outcome
//! unknown, or a definite refusal.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::process::parse_ms;

const OUTCOME_UNKNOWN: &str = "urn:problem:event-gateway:outcome-unknown";
const IN_PROGRESS: &str = "urn:problem:event-gateway:idempotency-in-progress";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Safe: on the bus (`queued: false`) or committed to the outbox.
    Acked { id: Uuid, queued: bool },
    /// Safe: committed to the schedule, to be published at `deliverAt` (as the receipt
    /// gave it, ms since the epoch).
    Scheduled {
        id: Uuid,
        deliver_at_ms: Option<u64>,
    },
    /// `outcome-unknown`, a timeout or a broken connection: may or may not be taken.
    Unknown(String),
    /// 409: the first request with this key still runs (it may yet publish the event).
    InProgress,
    /// A definite refusal: nothing of the event was or will be published.
    Refused { status: u16, problem: String },
}

impl Outcome {
    /// The event's id, when this answer made it safe.
    pub fn safe_id(&self) -> Option<Uuid> {
        match self {
            Outcome::Acked { id, .. } | Outcome::Scheduled { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The gateway answered `outcome-unknown` (not a timeout or broken connection).
    pub fn is_outcome_unknown_problem(&self) -> bool {
        matches!(self, Outcome::Unknown(reason) if reason == OUTCOME_UNKNOWN)
    }

    /// A refusal the client cannot fix by retrying (its own input, or its rights).
    pub fn is_final(&self) -> bool {
        matches!(self, Outcome::Refused { status, .. } if (400..500).contains(status) && *status != 429)
    }
}

/// One answer: the outcome of each event (in request order) and how long to wait before a
/// retry when it asks for one.
pub struct Answer {
    pub outcomes: Vec<Outcome>,
    pub retry_after: Option<Duration>,
}

impl Answer {
    pub fn transport(error: &reqwest::Error, events: usize) -> Answer {
        let reason = if error.is_timeout() {
            "client timeout".to_owned()
        } else {
            format!("transport: {error}")
        };
        Answer {
            outcomes: vec![Outcome::Unknown(reason); events],
            retry_after: None,
        }
    }

    pub fn read(status: u16, retry_after: Option<Duration>, body: &Value, events: usize) -> Answer {
        let outcomes = if status == 202 {
            let receipts = body["results"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![body.clone()]);
            (0..events)
                .map(|index| receipt_outcome(receipts.get(index), None))
                .collect()
        } else {
            let failure = problem_outcome(status, body);
            match body["results"].as_array() {
                Some(results) => (0..events)
                    .map(|index| receipt_outcome(results.get(index), Some(&failure)))
                    .collect(),
                None => vec![failure; events],
            }
        };
        Answer {
            outcomes,
            retry_after,
        }
    }
}

/// A receipt's outcome; a `failed` one (or one missing) takes the problem's.
fn receipt_outcome(receipt: Option<&Value>, failure: Option<&Outcome>) -> Outcome {
    let id = receipt
        .and_then(|receipt| receipt["id"].as_str())
        .and_then(|id| id.parse().ok());
    let status = receipt.and_then(|receipt| receipt["status"].as_str());
    match (id, status) {
        (Some(id), Some("published")) => Outcome::Acked { id, queued: false },
        (Some(id), Some("queued")) => Outcome::Acked { id, queued: true },
        (Some(id), Some("scheduled")) => Outcome::Scheduled {
            id,
            deliver_at_ms: receipt
                .and_then(|receipt| receipt["deliverAt"].as_str())
                .and_then(parse_ms),
        },
        _ => failure
            .cloned()
            .unwrap_or_else(|| Outcome::Unknown(format!("202 without a receipt: {receipt:?}"))),
    }
}

fn problem_outcome(status: u16, body: &Value) -> Outcome {
    let problem = body["type"]
        .as_str()
        .unwrap_or("(no problem type)")
        .to_owned();
    match problem.as_str() {
        OUTCOME_UNKNOWN => Outcome::Unknown(problem),
        IN_PROGRESS => Outcome::InProgress,
        _ => Outcome::Refused { status, problem },
    }
}
