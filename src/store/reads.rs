//! Reading critical events back: by id, and a user's newest first with a stable cursor.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use time::OffsetDateTime;
use tracing::instrument;
use uuid::Uuid;

use super::{Store, StoreError};

/// A persisted event and its delivery state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: Uuid,
    pub user_id: Option<String>,
    pub envelope: Value,
    pub state: String,
    pub accepted_at: OffsetDateTime,
    pub published_at: Option<OffsetDateTime>,
}

/// Where the next page starts in a newest-first listing: just after the row with this
/// time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    accepted_at_micros: i64,
    id: Uuid,
}

impl PageCursor {
    pub fn after(at: OffsetDateTime, id: Uuid) -> Self {
        PageCursor {
            accepted_at_micros: (at.unix_timestamp_nanos() / 1_000) as i64,
            id,
        }
    }

    /// The time and id this cursor points after, for the next page's query.
    pub fn position(&self) -> Option<(OffsetDateTime, Uuid)> {
        Some((self.accepted_at()?, self.id))
    }

    /// An opaque token for clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.accepted_at_micros, self.id))
    }

    pub fn decode(token: &str) -> Option<Self> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        let (micros, id) = text.split_once('.')?;
        Some(PageCursor {
            accepted_at_micros: micros.parse().ok()?,
            id: id.parse().ok()?,
        })
    }

    fn accepted_at(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.accepted_at_micros) * 1_000).ok()
    }
}

#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    pub next: Option<PageCursor>,
}

const COLUMNS: &str = "id, user_id, envelope, state, accepted_at, published_at";

impl Store {
    #[instrument(skip_all, fields(event_id = %id))]
    pub async fn event(&self, id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
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

    /// A user's events, newest first; `limit` is the page size.
    #[instrument(skip_all)]
    pub async fn user_events(
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
            .bind(cursor.and_then(|c| c.accepted_at()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = PageCursor {
            accepted_at_micros: 1_769_860_800_123_456,
            id: Uuid::now_v7(),
        };
        assert_eq!(PageCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(PageCursor::decode("not-a-cursor"), None);
        assert_eq!(PageCursor::decode(&URL_SAFE_NO_PAD.encode("12.nope")), None);
    }
}
