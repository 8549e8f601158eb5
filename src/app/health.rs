//! The spec's `EventSystemHealth` (plus PostgreSQL) and readiness, from the ports. A hung
//! dependency must not hang the report: each check is bounded.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::ports::{CacheProbe, EventBus, KeyProbe, StoreProbe};
use super::publish::Backlog;
use super::records::{CacheLookups, QueueDepth};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitMqHealth {
    pub connected: bool,
    pub queues: Vec<QueueDepth>,
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
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresHealth {
    /// The database answers and its schema is migrated.
    pub connected: bool,
    /// The circuit breaker in front of PostgreSQL: `closed`, or `open` (failing fast).
    #[schema(example = "closed")]
    pub circuit: &'static str,
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
    /// The identity provider's key set has not been fetched yet: tokens get 503.
    KeysUnavailable,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::BrokerUnreachable => "broker_unreachable",
            Readiness::DatabaseNotReady => "database_not_ready",
            Readiness::OutboxNotCounted => "outbox_not_counted",
            Readiness::KeysUnavailable => "identity_provider_keys_unavailable",
        }
    }
}

#[derive(Clone)]
pub struct Health {
    pub bus: Arc<dyn EventBus>,
    pub store: Arc<dyn StoreProbe>,
    pub cache: Arc<dyn CacheProbe>,
    pub backlog: Backlog,
    pub keys: Arc<dyn KeyProbe>,
}

impl Health {
    pub async fn report(&self) -> HealthReport {
        let (queues, redis, postgres) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, self.bus.queue_depths()),
            tokio::time::timeout(CHECK_TIMEOUT, self.cache.stats()),
            tokio::time::timeout(CHECK_TIMEOUT, self.store.ping()),
        );
        let queues = queues.ok().and_then(Result::ok);
        let redis = redis.ok().and_then(Result::ok);
        let rabbit_mq = RabbitMqHealth {
            connected: queues.is_some(),
            queues: queues.unwrap_or_default(),
        };
        let redis = RedisHealth {
            connected: redis.is_some(),
            hit_rate: hit_rate(self.cache.lookups()),
            used_memory: redis.map(|stats| stats.used_memory).unwrap_or_default(),
            circuit: self.cache.circuit().as_str(),
        };
        let postgres = PostgresHealth {
            connected: matches!(postgres, Ok(Ok(()))),
            circuit: self.store.circuit().as_str(),
        };
        let healthy = rabbit_mq.connected && redis.connected && postgres.connected;
        HealthReport {
            status: if healthy { "ok" } else { "degraded" },
            rabbit_mq,
            redis,
            postgres,
        }
    }

    pub fn readiness(&self) -> Readiness {
        if !self.bus.is_connected() {
            Readiness::BrokerUnreachable
        } else if !self.store.is_ready() {
            Readiness::DatabaseNotReady
        } else if !self.backlog.is_counted() {
            Readiness::OutboxNotCounted
        } else if !self.keys.keys_loaded() {
            Readiness::KeysUnavailable
        } else {
            Readiness::Ready
        }
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
