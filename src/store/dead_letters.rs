//! Dead letters: recorded by the dead-letter consumer, listed and replayed by operators.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use tracing::instrument;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::app::ports::DeadLetterArchive;
use crate::app::records::{DeadLetter, DeadLetterFilter};

impl<'r> FromRow<'r, PgRow> for DeadLetter {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(DeadLetter {
            id: row.try_get("id")?,
            event_id: row.try_get("event_id")?,
            routing_key: row.try_get("routing_key")?,
            queue: row.try_get("queue")?,
            attempts: row.try_get("attempts")?,
            last_error: row.try_get("last_error")?,
            body: row.try_get("body")?,
            failed_at: row.try_get("failed_at")?,
            replayed_at: row.try_get("replayed_at")?,
            traceparent: row.try_get("traceparent")?,
            tracestate: row.try_get("tracestate")?,
        })
    }
}

const COLUMNS: &str = "id, event_id, routing_key, queue, attempts, last_error, body, failed_at,
                       replayed_at, traceparent, tracestate";

impl Store {
    /// Records a dead letter once, however often its message is redelivered.
    #[instrument(skip_all, fields(dead_letter = %letter.id))]
    pub async fn record_dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            sqlx::query(
                "INSERT INTO dead_letters (id, event_id, routing_key, queue, attempts, last_error, body,
                                           traceparent, tracestate)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(letter.id)
            .bind(letter.event_id)
            .bind(letter.routing_key)
            .bind(letter.queue)
            .bind(letter.attempts)
            .bind(letter.last_error)
            .bind(letter.body)
            .bind(letter.traceparent)
            .bind(letter.tracestate)
            .execute(&pool)
            .await?;
            Ok(())
        })
        .await
    }

    pub async fn dead_letter_count(&self) -> Result<i64, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            Ok(
                sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
                    .fetch_one(&pool)
                    .await?,
            )
        })
        .await
    }
}

#[async_trait]
impl DeadLetterArchive for Store {
    async fn dead_letters(
        &self,
        filter: DeadLetterFilter,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM dead_letters
                 WHERE ($1::text IS NULL OR routing_key = $1)
                   AND ($2::bool IS NULL OR (replayed_at IS NOT NULL) = $2)
                   AND ($3::timestamptz IS NULL OR (failed_at, id) < ($3, $4))
                 ORDER BY failed_at DESC, id DESC
                 LIMIT $5"
            )))
            .bind(filter.routing_key)
            .bind(filter.replayed)
            .bind(filter.before.map(|(at, _)| at))
            .bind(filter.before.map(|(_, id)| id))
            .bind(limit)
            .fetch_all(&pool)
            .await?)
        })
        .await
    }

    async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM dead_letters WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&pool)
            .await?)
        })
        .await
    }

    async fn claim_replay(&self, id: Uuid) -> Result<bool, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            Ok(sqlx::query(
                "UPDATE dead_letters SET replayed_at = now() WHERE id = $1 AND replayed_at IS NULL",
            )
            .bind(id)
            .execute(&pool)
            .await?
            .rows_affected()
                == 1)
        })
        .await
    }

    async fn unclaim_replay(&self, id: Uuid) -> Result<(), StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            sqlx::query("UPDATE dead_letters SET replayed_at = NULL WHERE id = $1")
                .bind(id)
                .execute(&pool)
                .await?;
            Ok(())
        })
        .await
    }
}
