//! Idempotency keys: the first answer to a request is kept and replayed to every retry.
//! A unique key in PostgreSQL is the atomic claim, so concurrent duplicates publish once.

use async_trait::async_trait;
use serde_json::Value;
use tracing::instrument;

use super::{Store, StoreError};
use crate::app::ports::{IdempotencyLedger, LedgerError};
use crate::app::records::{Claim, StoredAnswer, Ticket};

/// A claim older than this with no answer belongs to a request that died with its
/// process: take it over. A live one is answered well within it (its commit, then its
/// confirm, each bounded by a timeout of a few seconds); taking over one that is only
/// slow publishes at most one more copy, with the same ids (they are derived from the key).
const ABANDONED_AFTER_SECS: f64 = 15.0;

#[async_trait]
impl IdempotencyLedger for Store {
    #[instrument(skip_all)]
    async fn claim(&self, ticket: &Ticket) -> Result<Claim, LedgerError> {
        let (principal, key, hash) = (
            ticket.principal.clone(),
            ticket.key.clone(),
            ticket.hash.clone(),
        );
        let pool = self.pool()?.clone();
        self.guarded(async move {
            let owned = sqlx::query(
                "INSERT INTO idempotency_keys (principal, key, request_hash) VALUES ($1, $2, $3)
                 ON CONFLICT (principal, key) DO UPDATE SET created_at = now(), request_hash = $3
                   WHERE idempotency_keys.status IS NULL
                     AND idempotency_keys.created_at < now() - make_interval(secs => $4)",
            )
            .bind(&principal)
            .bind(&key)
            .bind(&hash)
            .bind(ABANDONED_AFTER_SECS)
            .execute(&pool)
            .await?
            .rows_affected()
                == 1;
            if owned {
                return Ok(Claim::Owned);
            }
            let row: Option<(Vec<u8>, Option<i16>, Option<Value>)> = sqlx::query_as(
                "SELECT request_hash, status, response FROM idempotency_keys
                 WHERE principal = $1 AND key = $2",
            )
            .bind(&principal)
            .bind(&key)
            .fetch_optional(&pool)
            .await?;
            Ok(match row {
                Some((stored, _, _)) if stored != hash => Claim::Mismatch,
                Some((_, Some(status), Some(body))) => Claim::Answered(StoredAnswer {
                    status: status as u16,
                    body,
                }),
                _ => Claim::InProgress,
            })
        })
        .await
        .map_err(LedgerError::from)
    }

    async fn record(&self, ticket: &Ticket, answer: StoredAnswer) -> Result<(), LedgerError> {
        let (principal, key) = (ticket.principal.clone(), ticket.key.clone());
        let pool = self.pool()?.clone();
        self.guarded(async move {
            sqlx::query("UPDATE idempotency_keys SET status = $3, response = $4 WHERE principal = $1 AND key = $2")
                .bind(principal)
                .bind(key)
                .bind(answer.status as i16)
                .bind(answer.body)
                .execute(&pool)
                .await?;
            Ok(())
        })
        .await
        .map_err(LedgerError::from)
    }

    async fn release(&self, ticket: &Ticket) -> Result<(), LedgerError> {
        let (principal, key) = (ticket.principal.clone(), ticket.key.clone());
        let pool = self.pool()?.clone();
        self.guarded(async move {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2 AND status IS NULL",
            )
            .bind(principal)
            .bind(key)
            .execute(&pool)
            .await?;
            Ok(())
        })
        .await
        .map_err(LedgerError::from)
    }
}

impl Store {
    /// Forgets answers older than `ttl_secs`.
    pub async fn expire_keys(&self, ttl_secs: f64) -> Result<u64, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            Ok(sqlx::query(
                "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
            )
            .bind(ttl_secs)
            .execute(&pool)
            .await?
            .rows_affected())
        })
        .await
    }
}
