//! The spec's `EventSystemHealth` (plus PostgreSQL) and readiness, from the ports. A hung
//! dependency must not hang the report: each check is bounded.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::ports::{CacheProbe, EventBus, PublishError, StoreError, StoreProbe};
use super::publish::Backlog;
use super::records::{CacheLookups, QueueDepth};
use crate::runtime::reason::{Peer, describe};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `lastError` while the first attempt to connect is still under way.
pub const NOT_YET: &str = "not connected yet: the first attempt is under way";

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitMqHealth {
    pub connected: bool,
    pub queues: Vec<QueueDepth>,
    /// Why the gateway cannot use it right now, in plain words (for TLS: what about the
    /// certificate did not verify, and which setting to look at); null while it is fine.
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisHealth {
    pub connected: bool,
    /// Redis `used_memory_human`, e.g. `1.2M`.
    pub used_memory: String,
    /// The gateway's own cached reads (an event, a page of a user's events) since it
    /// started: hits / (hits + misses), a Redis that fails counting as a miss; 0 when
    /// nothing was looked up.
    pub hit_rate: f64,
    /// The circuit breaker in front of Redis: `closed`, or `open` (failing fast).
    #[schema(example = "closed")]
    pub circuit: &'static str,
    /// Why the gateway cannot use it right now, in plain words (for TLS: what about the
    /// certificate did not verify, and which setting to look at); null while it is fine.
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresHealth {
    /// The database answers and its schema is migrated.
    pub connected: bool,
    /// The circuit breaker in front of PostgreSQL: `closed`, or `open` (failing fast).
    #[schema(example = "closed")]
    pub circuit: &'static str,
    /// Why the gateway cannot use it right now, in plain words (for TLS: what about the
    /// certificate did not verify, and which setting to look at); null while it is fine.
    pub last_error: Option<String>,
}

/// The spec's `EventSystemHealth` plus PostgreSQL, with an overall status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// `ok` when every dependency is up, else `degraded`.
    #[schema(example = "ok")]
    pub status: &'static str,
    #[serde(rename = "rabbitMQ")]
    pub rabbit_mq: RabbitMqHealth,
    pub redis: RedisHealth,
    pub postgres: PostgresHealth,
}

impl HealthReport {
    pub fn is_healthy(&self) -> bool {
        self.rabbit_mq.connected && self.redis.connected && self.postgres.connected
    }
}

/// What keeps the gateway from taking events, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    BrokerUnreachable,
    DatabaseNotReady,
    OutboxNotCounted,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::BrokerUnreachable => "broker_unreachable",
            Readiness::DatabaseNotReady => "database_not_ready",
            Readiness::OutboxNotCounted => "outbox_not_counted",
        }
    }
}

#[derive(Clone)]
pub struct Health {
    pub bus: Arc<dyn EventBus>,
    pub store: Arc<dyn StoreProbe>,
    pub cache: Arc<dyn CacheProbe>,
    pub backlog: Backlog,
}

impl Health {
    pub async fn report(&self) -> HealthReport {
        let (queues, redis, postgres) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, self.bus.queue_depths()),
            tokio::time::timeout(CHECK_TIMEOUT, self.cache.stats()),
            tokio::time::timeout(CHECK_TIMEOUT, self.store.ping()),
        );
        let (queues, bus_error) = split(queues, |e| self.bus_error(e));
        let (redis, redis_error) = split(redis, |e| describe(&*e.0, Peer::Redis).text);
        let (postgres, postgres_error) = split(postgres, |e| self.store_error(e));
        let rabbit_mq = RabbitMqHealth {
            connected: queues.is_some(),
            queues: queues.unwrap_or_default(),
            last_error: bus_error,
        };
        let redis = RedisHealth {
            connected: redis.is_some(),
            hit_rate: hit_rate(self.cache.lookups()),
            used_memory: redis.map(|stats| stats.used_memory).unwrap_or_default(),
            circuit: self.cache.circuit().as_str(),
            last_error: redis_error,
        };
        let postgres = PostgresHealth {
            connected: postgres.is_some(),
            circuit: self.store.circuit().as_str(),
            last_error: postgres_error,
        };
        let healthy = rabbit_mq.connected && redis.connected && postgres.connected;
        HealthReport {
            status: if healthy { "ok" } else { "degraded" },
            rabbit_mq,
            redis,
            postgres,
        }
    }

    /// Why the last connect failed; before one has, or once connected, the check's error.
    fn bus_error(&self, error: PublishError) -> String {
        match (self.bus.last_error(), error) {
            (Some(reason), _) => reason,
            (None, PublishError::Unavailable(None)) => NOT_YET.into(),
            (None, error) => error.to_string(),
        }
    }

    /// Before the database is ready, why preparing it fails; after, the ping's own error.
    fn store_error(&self, error: StoreError) -> String {
        match error {
            StoreError::NotReady => self.store.last_error().unwrap_or_else(|| NOT_YET.into()),
            StoreError::Unavailable(cause) | StoreError::CommitUnknown(cause) => {
                describe(&*cause, Peer::Postgres).text
            }
            other => other.to_string(),
        }
    }

    pub fn readiness(&self) -> Readiness {
        if !self.bus.is_connected() {
            Readiness::BrokerUnreachable
        } else if !self.store.is_ready() {
            Readiness::DatabaseNotReady
        } else if !self.backlog.is_counted() {
            Readiness::OutboxNotCounted
        } else {
            Readiness::Ready
        }
    }
}

/// A bounded check's value, or why there is none (a timeout, or the error in words).
fn split<T, E>(
    checked: Result<Result<T, E>, tokio::time::error::Elapsed>,
    words: impl FnOnce(E) -> String,
) -> (Option<T>, Option<String>) {
    match checked {
        Ok(Ok(value)) => (Some(value), None),
        Ok(Err(error)) => (None, Some(words(error))),
        Err(_) => (
            None,
            Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        ),
    }
}

fn hit_rate(lookups: CacheLookups) -> f64 {
    let total = lookups.hits + lookups.misses;
    if total == 0 {
        0.0
    } else {
        lookups.hits as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_rate_is_zero_until_something_was_looked_up() {
        assert_eq!(hit_rate(CacheLookups::default()), 0.0);
        let lookups = CacheLookups { hits: 3, misses: 1 };
        assert_eq!(hit_rate(lookups), 0.75);
    }
}
