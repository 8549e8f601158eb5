//! The Redis adapter. For now it answers health questions; the cache and its invalidation
//! build on the same connection.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::instrument;

/// Health facts read from Redis `INFO`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisStats {
    pub used_memory: String,
    pub hit_rate: f64,
}

/// Redis answers in microseconds; a second means it is in trouble.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A lazily connected, self-reconnecting Redis handle.
#[derive(Clone)]
pub struct Cache {
    connection: ConnectionManager,
}

impl Cache {
    /// Does not connect yet, so the gateway starts while Redis is down.
    pub fn new(url: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Cache { connection })
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
}
