//! Dead letters for operators: listed with the error that sent each there, and replayed
//! through the same publishing as any event (counted, held in the outbox while the broker
//! is down, ordered behind the user's other events). Replaying twice publishes once.

use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::ports::{DeadLetterArchive, StoreError};
use super::publish::{NotTaken, Publishing, ReceiptStatus, Republish};
use super::records::{DeadLetter, DeadLetterFilter, PageCursor};
use crate::domain::EventType;
use crate::domain::trace::{TraceContext, TraceParent};
use crate::runtime::detached::{Panicked, finish_detached};

/// Why a dead letter was not replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no such dead letter")]
    NotFound,
    #[error("{0}: cannot replay")]
    NotAnEventType(String),
    #[error("this dead letter was already replayed")]
    AlreadyReplayed,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    NotTaken(#[from] NotTaken),
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

#[derive(Clone)]
pub struct Replay {
    pub letters: Arc<dyn DeadLetterArchive>,
    pub publishing: Publishing,
}

impl Replay {
    /// A page of dead letters, newest first, and where the next page starts.
    pub async fn list(
        &self,
        filter: DeadLetterFilter,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, Option<PageCursor>), StoreError> {
        let mut letters = self.letters.dead_letters(filter, limit as i64 + 1).await?;
        let next = (letters.len() > limit)
            .then(|| {
                letters
                    .get(limit - 1)
                    .map(|l| PageCursor::after(l.failed_at, l.id))
            })
            .flatten();
        letters.truncate(limit);
        Ok((letters, next))
    }

    /// Publishes a dead letter again to its original routing key: `Published`, or
    /// `Queued` when the outbox holds it (the broker is down, or the outbox still owes the
    /// broker earlier events).
    pub async fn replay(&self, id: Uuid) -> Result<ReceiptStatus, ReplayError> {
        // Detached from the claim on: once claimed it must be published or unclaimed even
        // if the client goes away, or it would stay marked replayed, never published.
        let replay = self.clone();
        finish_detached(async move { replay.claim_and_publish(id).await }).await?
    }

    async fn claim_and_publish(&self, id: Uuid) -> Result<ReceiptStatus, ReplayError> {
        let letter = self
            .letters
            .dead_letter(id)
            .await?
            .ok_or(ReplayError::NotFound)?;
        let event_type: EventType = letter
            .routing_key
            .parse()
            .map_err(|error| ReplayError::NotAnEventType(format!("{error}")))?;
        if !self.letters.claim_replay(id).await? {
            return Err(ReplayError::AlreadyReplayed);
        }
        let republish = republished(event_type, letter);
        match self.publishing.republish(republish).await {
            // Its row may still be in the outbox: then it goes out from there.
            Ok(status) => Ok(status),
            Err(error) => {
                self.letters.unclaim_replay(id).await?;
                Err(error.into())
            }
        }
    }
}

/// The letter as it went out first: same event id, body, correlation id and trace.
fn republished(event_type: EventType, letter: DeadLetter) -> Republish {
    let body: Value = serde_json::from_slice(&letter.body).unwrap_or(Value::Null);
    Republish {
        id: letter
            .event_id
            .as_deref()
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(Uuid::now_v7),
        event_type,
        correlation_id: body["metadata"]["correlationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        user_id: body["data"]["userId"].as_str().map(str::to_owned),
        body: letter.body,
        trace: letter
            .traceparent
            .as_deref()
            .and_then(TraceParent::parse)
            .map(|parent| TraceContext {
                parent,
                state: letter.tracestate.map(Into::into),
            }),
    }
}
