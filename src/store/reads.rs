//! Reading critical events back: by id, and a user's newest first with a stable cursor.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};
use tracing::instrument;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::app::ports::EventArchive;
use crate::app::records::{EventPage, PageCursor, StoredEvent};

impl<'r> FromRow<'r, PgRow> for StoredEvent {
    fn from_row(row: &'r PgRow) -> sqlx::Result<Self> {
        Ok(StoredEvent {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            envelope: row.try_get("envelope")?,
            state: row.try_get("state")?,
            accepted_at: row.try_get("accepted_at")?,
            published_at: row.try_get("published_at")?,
        })
    }
}

const COLUMNS: &str = "id, user_id, envelope, state, accepted_at, published_at";

#[async_trait]
impl EventArchive for Store {
    #[instrument(skip_all, fields(event_id = %id))]
    async fn event(&self, id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM events WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&pool)
            .await?)
        })
        .await
    }

    #[instrument(skip_all)]
    async fn user_events(
        &self,
        user_id: String,
        event_type: Option<&'static str>,
        limit: i64,
        cursor: Option<PageCursor>,
    ) -> Result<EventPage, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            let mut events: Vec<StoredEvent> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM events
                 WHERE user_id = $1
                   AND ($2::text IS NULL OR type = $2)
                   AND ($3::timestamptz IS NULL OR (accepted_at, id) < ($3, $4))
                 ORDER BY accepted_at DESC, id DESC
                 LIMIT $5"
            )))
            .bind(user_id)
            .bind(event_type)
            .bind(cursor.and_then(|c| c.at()))
            .bind(cursor.map(|c| c.id))
            .bind(limit + 1)
            .fetch_all(&pool)
            .await?;
            let more = events.len() as i64 > limit;
            events.truncate(limit as usize);
            let next = more
                .then(|| {
                    events
                        .last()
                        .map(|e| PageCursor::after(e.accepted_at, e.id))
                })
                .flatten();
            Ok(EventPage { events, next })
        })
        .await
    }
}
