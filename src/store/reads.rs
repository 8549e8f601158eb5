//! Reading critical events back, and scheduled ones (of any type) until they are released:
//! by id, and a user's newest first with a stable cursor.

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
            deliver_at: row.try_get("deliver_at")?,
        })
    }
}

/// A persisted event, with its due time if it was scheduled.
const EVENTS: &str = "SELECT e.id, e.user_id, e.envelope, e.state, e.accepted_at, e.published_at,
                             s.deliver_at
                      FROM events e LEFT JOIN scheduled_events s ON s.event_id = e.id";

/// A scheduled event as a persisted one reads: `accepted` once released to the outbox.
const SCHEDULED: &str = "SELECT s.event_id AS id, s.user_id,
                                convert_from(s.body, 'UTF8')::jsonb AS envelope,
                                CASE s.state WHEN 'released' THEN 'accepted' ELSE s.state END AS state,
                                s.accepted_at,
                                CASE s.state WHEN 'published' THEN s.settled_at END AS published_at,
                                s.deliver_at
                         FROM scheduled_events s";

#[async_trait]
impl EventArchive for Store {
    #[instrument(skip_all, fields(event_id = %id))]
    async fn event(&self, id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            // A critical scheduled event has its record once released: that one counts.
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{EVENTS} WHERE e.id = $1
                 UNION ALL
                 {SCHEDULED} WHERE s.event_id = $1
                   AND NOT EXISTS (SELECT 1 FROM events WHERE id = $1)
                 LIMIT 1"
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
            // Persisted events, and those still waiting for their time.
            let mut events: Vec<StoredEvent> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "({EVENTS}
                  WHERE e.user_id = $1
                    AND ($2::text IS NULL OR e.type = $2)
                    AND ($3::timestamptz IS NULL OR (e.accepted_at, e.id) < ($3, $4))
                  ORDER BY e.accepted_at DESC, e.id DESC
                  LIMIT $5)
                 UNION ALL
                 ({SCHEDULED}
                  WHERE s.user_id = $1 AND s.state = 'scheduled'
                    AND ($2::text IS NULL OR s.type = $2)
                    AND ($3::timestamptz IS NULL OR (s.accepted_at, s.event_id) < ($3, $4))
                  ORDER BY s.accepted_at DESC, s.event_id DESC
                  LIMIT $5)
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
