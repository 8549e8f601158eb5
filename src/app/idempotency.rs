//! The idempotency protocol: the first request with a key (an `Idempotency-Key`, a
//! client-chosen event id, a `webhook-id`) runs, its answer is kept, and every repeat gets
//! that answer instead of publishing again. PostgreSQL keeps the claims of publish
//! requests, Redis those of webhook deliveries (both behind [`IdempotencyLedger`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::warn;
use uuid::Uuid;

use super::ports::{IdempotencyLedger, LedgerError};
use super::records::{Claim, StoredAnswer, Ticket};
use crate::runtime::detached::{Panicked, finish_detached};

/// How long a duplicate waits for the first request's answer before it is told to retry.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(25);

/// The status kept with a first answer: every answer kept is an acceptance.
const ACCEPTED: u16 = 202;

/// Where a request's idempotency key came from; named when a key is reused wrongly.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub pointer: &'static str,
}

impl IdempotencyKey {
    pub fn from_header(header: Option<String>) -> Option<Self> {
        header.map(|key| IdempotencyKey {
            key,
            pointer: "/headers/idempotency-key",
        })
    }

    /// The header wins; else a client-chosen event id is the key.
    pub fn for_event(header: Option<String>, event_id: Option<Uuid>) -> Option<Self> {
        Self::from_header(header).or_else(|| {
            event_id.map(|id| IdempotencyKey {
                key: format!("event:{id}"),
                pointer: "/id",
            })
        })
    }
}

/// An accepted request: what the client gets now and every retry gets later.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub correlation_id: String,
    pub body: Value,
}

/// An answer, and whether it is a replay of the first.
#[derive(Debug)]
pub struct Answer {
    pub accepted: Accepted,
    pub replayed: bool,
}

/// Why a keyed request was not answered with an acceptance.
#[derive(Debug, thiserror::Error)]
pub enum OnceError<E> {
    /// The work ran and failed; the key is free again.
    #[error(transparent)]
    Failed(E),
    #[error("the key was already used with a different request")]
    Mismatch { pointer: &'static str },
    #[error("the first request with this key has not finished yet")]
    InProgress,
    #[error("the idempotency ledger is unavailable")]
    Ledger(#[source] LedgerError),
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

/// Which ledger keeps a request's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ledger {
    /// PostgreSQL, next to the events: publish requests.
    Database,
    /// Redis: webhook deliveries, so a webhook needs PostgreSQL only for critical events.
    Cache,
}

#[derive(Clone)]
pub struct Idempotency {
    pub database: Arc<dyn IdempotencyLedger>,
    pub cache: Arc<dyn IdempotencyLedger>,
}

impl Idempotency {
    /// Runs `work` once per key: the first request runs it and keeps its answer; a retry
    /// gets that answer; a concurrent duplicate waits for it; a failure frees the key.
    /// Callers pass `work` boxed: handler futures are moved whole, so they stay small.
    pub async fn once<E, Work>(
        &self,
        ledger: Ledger,
        principal: &str,
        key: Option<(IdempotencyKey, Value)>,
        work: Work,
    ) -> Result<Answer, OnceError<E>>
    where
        E: Send + 'static,
        Work: Future<Output = Result<Accepted, E>> + Send + 'static,
    {
        let Some((IdempotencyKey { key, pointer }, request)) = key else {
            let accepted = work.await.map_err(OnceError::Failed)?;
            return Ok(Answer {
                accepted,
                replayed: false,
            });
        };
        let ledger = match ledger {
            Ledger::Database => self.database.clone(),
            Ledger::Cache => self.cache.clone(),
        };
        let ticket = Ticket {
            principal: principal.to_owned(),
            key,
            hash: Sha256::digest(request.to_string().as_bytes()).to_vec(),
            token: Uuid::new_v4(),
        };
        // Boxed, so a request without a key does not carry the claim's state around.
        if let Some(answer) = Box::pin(wait_for_claim(&*ledger, &ticket, pointer)).await? {
            return Ok(answer);
        }
        // From here the key is ours: record the answer (or free the key) even if this
        // request is dropped, so a retry never finds it stuck and publishes again.
        let settled = finish_detached(async move {
            let outcome = work.await;
            settle(&*ledger, &ticket, outcome.as_ref().ok()).await;
            outcome
        });
        let accepted = settled.await?.map_err(OnceError::Failed)?;
        Ok(Answer {
            accepted,
            replayed: false,
        })
    }
}

/// Claims the key, waiting a while for a first request still running. `None`: owned.
async fn wait_for_claim<E>(
    ledger: &dyn IdempotencyLedger,
    ticket: &Ticket,
    pointer: &'static str,
) -> Result<Option<Answer>, OnceError<E>> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        match ledger.claim(ticket).await.map_err(OnceError::Ledger)? {
            Claim::Owned => return Ok(None),
            Claim::Answered(answer) => return Ok(Some(replay(answer))),
            Claim::Mismatch => return Err(OnceError::Mismatch { pointer }),
            Claim::InProgress if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL).await
            }
            Claim::InProgress => return Err(OnceError::InProgress),
        }
    }
}

async fn settle(ledger: &dyn IdempotencyLedger, ticket: &Ticket, accepted: Option<&Accepted>) {
    match accepted {
        Some(accepted) => {
            let answer = StoredAnswer {
                status: ACCEPTED,
                body: json!({"correlationId": accepted.correlation_id, "body": accepted.body}),
            };
            if let Err(error) = ledger.record(ticket, answer).await {
                warn!(%error, "could not store an idempotent answer; a retry may publish again");
            }
        }
        None => {
            if let Err(error) = ledger.release(ticket).await {
                warn!(%error, "could not free an idempotency key");
            }
        }
    }
}

fn replay(answer: StoredAnswer) -> Answer {
    let mut stored = answer.body;
    Answer {
        accepted: Accepted {
            correlation_id: stored["correlationId"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body: stored["body"].take(),
        },
        replayed: true,
    }
}
