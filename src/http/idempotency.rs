//! `Idempotency-Key` (or a client-chosen event id): the first 202 is stored and every
//! retry gets it back instead of publishing again.

use std::time::Duration;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use super::extract::CORRELATION_HEADER;
use crate::cache::{Cache, PendingClaim};
use crate::domain::FieldError;
use crate::domain::claim::{Claim, StoredAnswer};
use crate::store::Store;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const REPLAYED_HEADER: &str = "idempotent-replayed";
const MAX_KEY_LEN: usize = 255;
/// How long a duplicate waits for the first request's answer before a 409.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(25);

/// The `Idempotency-Key` header, when sent.
pub struct IdempotencyHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_HEADER) else {
            return Ok(IdempotencyHeader(None));
        };
        match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => {
                Ok(IdempotencyHeader(Some(key.to_owned())))
            }
            _ => Err(ApiError::BadRequest {
                title: "Invalid Idempotency-Key header",
                detail: format!(
                    "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                ),
            }),
        }
    }
}

/// Where a request's idempotency key came from; named when a key is reused wrongly.
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
    pub fn for_event(header: Option<String>, event_id: Option<uuid::Uuid>) -> Option<Self> {
        Self::from_header(header).or_else(|| {
            event_id.map(|id| IdempotencyKey {
                key: format!("event:{id}"),
                pointer: "/id",
            })
        })
    }
}

/// A publish answer: what the client gets now and every retry gets later.
pub struct Accepted {
    pub correlation_id: String,
    pub body: Value,
}

impl Accepted {
    fn into_response(self, replayed: bool) -> Response {
        let mut response = (StatusCode::ACCEPTED, Json(self.body)).into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&self.correlation_id) {
            headers.insert(HeaderName::from_static(CORRELATION_HEADER), value);
        }
        if replayed {
            headers.insert(
                HeaderName::from_static(REPLAYED_HEADER),
                HeaderValue::from_static("true"),
            );
        }
        response
    }
}

/// Where a request's claim is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ledger {
    /// PostgreSQL, next to the events: publish requests.
    Database,
    /// Redis: webhook deliveries, so a webhook does not need PostgreSQL unless its events
    /// are critical.
    Cache,
}

/// A ledger with the handle it needs, to move into the task that settles a claim.
enum LedgerHandle {
    Database(Store),
    /// Redis, how long answers are kept, and this request's claim once it holds one.
    Cache(Cache, Duration, Option<PendingClaim>),
}

/// A webhook's replay window must outlast the 10 minutes a signature is valid, or a
/// captured delivery could be sent again and published again.
const MIN_WEBHOOK_REPLAY_WINDOW: Duration = Duration::from_secs(10 * 60);

impl LedgerHandle {
    fn of(state: &AppState, ledger: Ledger) -> Self {
        match ledger {
            Ledger::Database => LedgerHandle::Database(state.store.clone()),
            Ledger::Cache => LedgerHandle::Cache(
                state.cache.clone(),
                state.idempotency_ttl.max(MIN_WEBHOOK_REPLAY_WINDOW),
                None,
            ),
        }
    }

    async fn claim(&mut self, principal: &str, key: &str, hash: &[u8]) -> Result<Claim, ApiError> {
        match self {
            LedgerHandle::Database(store) => Ok(store
                .claim_key(principal.to_owned(), key.to_owned(), hash.to_vec())
                .await?),
            LedgerHandle::Cache(cache, _, held) => {
                let (claim, pending) = cache
                    .claim(principal, key, hash)
                    .await
                    .map_err(ApiError::ReplayGuardUnavailable)?;
                *held = pending;
                Ok(claim)
            }
        }
    }

    async fn record(&self, principal: String, key: String, answer: StoredAnswer) {
        let recorded = match self {
            LedgerHandle::Database(store) => store
                .record_answer(principal, key, answer)
                .await
                .map_err(|e| e.to_string()),
            LedgerHandle::Cache(cache, ttl, Some(claim)) => cache
                .record_answer(claim, answer, *ttl)
                .await
                .map_err(|e| e.to_string()),
            LedgerHandle::Cache(_, _, None) => Ok(()),
        };
        if let Err(error) = recorded {
            tracing::warn!(%error, "could not store an idempotent answer; a retry may publish again");
        }
    }

    async fn release(&self, principal: String, key: String) {
        let released = match self {
            LedgerHandle::Database(store) => store
                .release_key(principal, key)
                .await
                .map_err(|e| e.to_string()),
            LedgerHandle::Cache(cache, _, Some(claim)) => {
                cache.release(claim).await.map_err(|e| e.to_string())
            }
            LedgerHandle::Cache(_, _, None) => Ok(()),
        };
        if let Err(error) = released {
            tracing::warn!(%error, "could not free an idempotency key");
        }
    }
}

/// Runs `publish` once per key: the first request runs it and stores its 202; a retry
/// gets that 202; a concurrent duplicate waits for it; a failure frees the key. Callers
/// pass `publish` boxed: handler futures are moved whole, so they are kept small.
pub async fn once<Fut>(
    state: &AppState,
    ledger: Ledger,
    principal: &str,
    key: Option<(IdempotencyKey, Value)>,
    publish: Fut,
) -> Result<Response, ApiError>
where
    Fut: Future<Output = Result<Accepted, ApiError>> + Send + 'static,
{
    let Some((IdempotencyKey { key, pointer }, request)) = key else {
        return publish.await.map(|accepted| accepted.into_response(false));
    };
    let mut ledger = LedgerHandle::of(state, ledger);
    let hash = Sha256::digest(request.to_string().as_bytes()).to_vec();
    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        // Boxed, so a request without a key does not carry the claim's state around.
        match Box::pin(ledger.claim(principal, &key, &hash)).await? {
            Claim::Owned => break,
            Claim::Answered(answer) => return Ok(replay(answer)),
            Claim::Mismatch => {
                return Err(ApiError::invalid(vec![FieldError::new(
                    pointer,
                    "was already used with a different request",
                )]));
            }
            Claim::InProgress if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL).await
            }
            Claim::InProgress => {
                return Err(ApiError::Conflict(
                    "the first request with this key has not finished yet; retry shortly".into(),
                ));
            }
        }
    }
    // From here the key is ours: record the answer (or free the key) even if this
    // request is dropped, so a retry never finds it stuck and publishes again.
    let principal = principal.to_owned();
    let settled = tokio::spawn(async move {
        let outcome = publish.await;
        match &outcome {
            Ok(accepted) => {
                let stored = StoredAnswer {
                    status: StatusCode::ACCEPTED.as_u16(),
                    body: json!({"correlationId": accepted.correlation_id, "body": accepted.body}),
                };
                ledger.record(principal, key, stored).await;
            }
            Err(_) => ledger.release(principal, key).await,
        }
        outcome
    });
    let accepted = settled
        .await
        .map_err(|error| ApiError::Internal(error.into()))??;
    Ok(accepted.into_response(false))
}

fn replay(answer: StoredAnswer) -> Response {
    let mut stored = answer.body;
    Accepted {
        correlation_id: stored["correlationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        body: stored["body"].take(),
    }
    .into_response(true)
}
