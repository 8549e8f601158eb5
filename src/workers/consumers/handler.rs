//! Handling one message: parse it, delete the keys it makes stale, and decide what
//! happens when that fails (retry later, or dead-letter now).

use serde_json::Value;

use super::rules::stale_keys;
use crate::cache::Cache;
use crate::domain::EventType;

/// Why a message was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// It can never be handled (not JSON, not an event): dead-letter it at once.
    #[error("{0}")]
    Poison(String),
    /// It may work later (Redis unreachable): retry it.
    #[error("{0}")]
    Transient(String),
}

/// Deletes the Redis keys each event makes stale. Safe to run twice for one message.
#[derive(Clone)]
pub struct CacheInvalidator {
    cache: Cache,
}

impl CacheInvalidator {
    pub fn new(cache: Cache) -> Self {
        CacheInvalidator { cache }
    }

    /// Returns how many keys were deleted.
    pub async fn handle(&self, body: &[u8]) -> Result<u64, HandleError> {
        let event: Value = serde_json::from_slice(body)
            .map_err(|error| HandleError::Poison(format!("the message is not JSON: {error}")))?;
        let event_type: EventType = event["type"]
            .as_str()
            .ok_or_else(|| HandleError::Poison("the message has no string `type`".into()))?
            .parse()
            .map_err(|error| HandleError::Poison(format!("{error}")))?;
        let keys = stale_keys(event_type.family(), &event["data"]);
        self.cache
            .delete(&keys)
            .await
            .map_err(|error| HandleError::Transient(format!("redis: {error}")))
    }
}
