//! Reads of persisted (critical) and scheduled events, cache-aside: Redis first,
//! PostgreSQL on a miss, and only what can no longer change is cached.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ports::{EventArchive, ReadCache, StoreError};
use super::records::{PageCursor, StoredEvent};
use crate::domain::EventType;
use crate::domain::envelope::rfc3339_millis;

/// Where a persisted or scheduled event is on its way to the broker.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `scheduled` (waiting for `deliverAt`), `accepted` (in the outbox), `published` (the
    /// broker confirmed it) or `cancelled` (a scheduled event that will never go out).
    #[schema(example = "published")]
    pub state: String,
    pub accepted_at: String,
    pub published_at: Option<String>,
    /// When a scheduled event is (or was) due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<String>,
}

/// A persisted event: the envelope that went on the bus, and its delivery state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PersistedEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    #[schema(value_type = Object)]
    pub data: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub delivery: Delivery,
}

impl PersistedEvent {
    fn from_stored(stored: StoredEvent) -> Self {
        let mut envelope = stored.envelope;
        PersistedEvent {
            id: stored.id,
            event_type: envelope["type"].as_str().unwrap_or_default().to_owned(),
            data: envelope["data"].take(),
            metadata: envelope["metadata"].take(),
            delivery: Delivery {
                state: stored.state,
                accepted_at: rfc3339_millis(stored.accepted_at),
                published_at: stored.published_at.map(rfc3339_millis),
                deliver_at: stored.deliver_at.map(rfc3339_millis),
            },
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        self.metadata["userId"].as_str()
    }

    /// Only a published event is final; an accepted one is about to change.
    fn is_final(&self) -> bool {
        self.delivery.state == "published"
    }
}

/// One page of a user's events, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub events: Vec<PersistedEvent>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the page could not be encoded")]
    Encode(#[source] serde_json::Error),
}

/// Which page of a user's events.
pub struct UserEventsQuery {
    pub user_id: String,
    pub event_type: Option<EventType>,
    pub limit: u32,
    pub cursor: Option<PageCursor>,
    /// The cursor as the client sent it, part of the cached page's name.
    pub cursor_text: Option<String>,
}

#[derive(Clone)]
pub struct Reads {
    pub archive: Arc<dyn EventArchive>,
    pub cache: Arc<dyn ReadCache>,
}

impl Reads {
    pub async fn event(&self, id: Uuid) -> Result<Option<PersistedEvent>, StoreError> {
        let cached = self.cache.event(id).await;
        if let Some(event) = cached.and_then(|json| serde_json::from_str(&json).ok()) {
            return Ok(Some(event));
        }
        let Some(stored) = self.archive.event(id).await? else {
            return Ok(None);
        };
        let event = PersistedEvent::from_stored(stored);
        if event.is_final()
            && let Ok(json) = serde_json::to_string(&event)
        {
            self.cache.put_event(id, &json).await;
        }
        Ok(Some(event))
    }

    /// The page as JSON, from the cache when it holds it.
    pub async fn user_events(&self, query: UserEventsQuery) -> Result<String, ReadError> {
        let field = format!(
            "type={}&limit={}&cursor={}",
            query.event_type.map_or("", EventType::as_str),
            query.limit,
            query.cursor_text.as_deref().unwrap_or("")
        );
        if let Some(page) = self.cache.user_events(&query.user_id, &field).await {
            return Ok(page);
        }
        let page = self
            .archive
            .user_events(
                query.user_id.clone(),
                query.event_type.map(EventType::as_str),
                i64::from(query.limit),
                query.cursor,
            )
            .await?;
        let list = EventList {
            events: page
                .events
                .into_iter()
                .map(PersistedEvent::from_stored)
                .collect(),
            next_cursor: page.next.map(|c| c.encode()),
        };
        let json = serde_json::to_string(&list).map_err(ReadError::Encode)?;
        // A page with an event still on its way would go stale when it is published.
        if list.events.iter().all(PersistedEvent::is_final) {
            self.cache
                .put_user_events(&query.user_id, &field, &json)
                .await;
        }
        Ok(json)
    }
}
