//! What publishing answers: a receipt per event taken, or why it was not taken, and how
//! a batch's outcomes become one answer.

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::idempotency::Accepted;
use crate::app::ports::{PublishError, StoreError};
use crate::domain::{FieldError, ValidEvent};

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    /// The broker confirmed the event.
    Published,
    /// The broker is unreachable; the event is held in the outbox and published when it
    /// returns. It is safe.
    Queued,
    /// The event is committed to PostgreSQL and is published at `deliverAt`.
    Scheduled,
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
    /// When a `scheduled` event is published (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026-12-24T09:00:00.000Z")]
    pub deliver_at: Option<String>,
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
    /// The database refused the event for what it carries (a client's error).
    #[error("the database refused the event's content")]
    Refused(#[source] StoreError),
    /// The request was answered (it timed out) before the event was handed over.
    #[error("the request was answered before the event was taken")]
    TooLate,
    /// A field the client must fix (a `deliverAt` outside the window), checked once a
    /// retry would have been answered as its first request.
    #[error("the event is invalid")]
    Invalid(Vec<FieldError>),
    /// An event with its id was scheduled and then cancelled: it is never published.
    #[error("an event with this id was scheduled and cancelled; it will not be published")]
    Cancelled,
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
    /// An earlier request with its id is still at work and may yet publish or drop it.
    #[error("an earlier request with this id has not finished")]
    InProgress,
    /// It could not be dropped after the broker returned it, so the relay may publish it.
    #[error("the broker returned it and its outbox row could not be dropped (or the relay had it)")]
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

impl BatchNotTaken {
    /// The batch was refused before any of its events was taken: no `results`.
    pub fn before_any(first: NotTaken) -> Self {
        BatchNotTaken {
            first,
            results: Vec::new(),
        }
    }
}

pub(super) fn unavailable() -> NotTaken {
    NotTaken::Publish(PublishError::Unavailable(None))
}

/// Accepted when every event was taken; otherwise the first failure, listing what
/// happened to each event so the client can retry exactly the ones that failed. When any
/// event's outcome is unknown, so is the batch's, naming every such event.
pub(super) fn batch_answer(
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
            deliver_at: None,
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
