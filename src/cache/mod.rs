//! The Redis adapter: health facts, and the gateway's own cached reads. Every call is
//! bounded by a short timeout, and a cache that fails is bypassed, never fatal.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{debug, instrument};
use uuid::Uuid;

/// Redis answers in microseconds; a second means it is in trouble.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The spec's TTLs: a user's data 10 minutes, anything else 5 minutes.
pub const USER_DATA_TTL_SECS: u64 = 600;
pub const DEFAULT_TTL_SECS: u64 = 300;

/// Health facts read from Redis `INFO`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisStats {
    pub used_memory: String,
    pub hit_rate: f64,
}

/// A lazily connected, self-reconnecting Redis handle.
#[derive(Clone)]
pub struct Cache {
    connection: ConnectionManager,
    prefix: String,
}

impl Cache {
    /// Does not connect yet, so the gateway starts while Redis is down.
    pub fn new(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Cache {
            connection,
            prefix: prefix.to_owned(),
        })
    }

    #[instrument(skip_all)]
    pub async fn stats(&self) -> redis::RedisResult<RedisStats> {
        let mut connection = self.connection.clone();
        let info: redis::InfoDict = redis::cmd("INFO").query_async(&mut connection).await?;
        let hits: u64 = info.get("keyspace_hits").unwrap_or(0);
        let misses: u64 = info.get("keyspace_misses").unwrap_or(0);
        let lookups = hits + misses;
        Ok(RedisStats {
            used_memory: info.get("used_memory_human").unwrap_or_default(),
            hit_rate: if lookups == 0 {
                0.0
            } else {
                hits as f64 / lookups as f64
            },
        })
    }

    /// Deletes `keys` (below the prefix) in one round trip; an error means they may
    /// still be there, so the caller retries.
    #[instrument(skip_all, fields(keys = keys.len()))]
    pub async fn delete(&self, keys: &[String]) -> redis::RedisResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut connection = self.connection.clone();
        let prefixed: Vec<String> = keys.iter().map(|k| format!("{}{k}", self.prefix)).collect();
        redis::cmd("DEL")
            .arg(prefixed)
            .query_async(&mut connection)
            .await
    }

    /// The hash holding a user's cached event listings, one field per query.
    pub fn user_events_key(&self, user_id: &str) -> String {
        format!("{}user_events:{user_id}", self.prefix)
    }

    /// A persisted event that will not change any more (published).
    pub fn event_key(&self, id: Uuid) -> String {
        format!("{}event:{id}", self.prefix)
    }

    #[instrument(skip_all)]
    pub async fn user_events(&self, user_id: &str, query: &str) -> Option<String> {
        let key = self.user_events_key(user_id);
        let mut connection = self.connection.clone();
        bypass_on_error(
            redis::cmd("HGET")
                .arg(&key)
                .arg(query)
                .query_async(&mut connection)
                .await,
        )
        .flatten()
    }

    #[instrument(skip_all)]
    pub async fn put_user_events(&self, user_id: &str, query: &str, page: &str) {
        let key = self.user_events_key(user_id);
        let mut connection = self.connection.clone();
        let stored: redis::RedisResult<()> = redis::pipe()
            .atomic()
            .hset(&key, query, page)
            .ignore()
            .expire(&key, USER_DATA_TTL_SECS as i64)
            .ignore()
            .query_async(&mut connection)
            .await;
        bypass_on_error(stored);
    }

    /// Drops every cached listing of this user's events.
    #[instrument(skip_all)]
    pub async fn forget_user_events(&self, user_id: &str) {
        let mut connection = self.connection.clone();
        let deleted: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(self.user_events_key(user_id))
            .query_async(&mut connection)
            .await;
        bypass_on_error(deleted);
    }

    #[instrument(skip_all)]
    pub async fn event(&self, id: Uuid) -> Option<String> {
        let mut connection = self.connection.clone();
        bypass_on_error(
            redis::cmd("GET")
                .arg(self.event_key(id))
                .query_async(&mut connection)
                .await,
        )
        .flatten()
    }

    #[instrument(skip_all)]
    pub async fn put_event(&self, id: Uuid, event: &str) {
        let mut connection = self.connection.clone();
        let stored: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.event_key(id))
            .arg(event)
            .arg("EX")
            .arg(DEFAULT_TTL_SECS)
            .query_async(&mut connection)
            .await;
        bypass_on_error(stored);
    }
}

/// The cache is an optimisation: a failure is logged and read as a miss.
fn bypass_on_error<T>(result: redis::RedisResult<T>) -> Option<T> {
    result
        .inspect_err(|error| debug!(%error, "cache bypassed"))
        .ok()
}
