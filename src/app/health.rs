//! The spec's `EventSystemHealth` (plus PostgreSQL) and readiness, from the ports. A hung
//! dependency must not hang the report: each check is bounded.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::ports::{CacheProbe, EventBus, StoreProbe};
use super::publish::Backlog;
use super::records::QueueDepth;

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
    /// keyspace hits / (hits + misses) since Redis started; 0 when nothing was looked up.
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
        let queues = queues.ok().and_then(Result::ok);
        let redis = redis.ok().and_then(Result::ok);
        let rabbit_mq = RabbitMqHealth {
            connected: queues.is_some(),
            queues: queues.unwrap_or_default(),
        };
        let redis = RedisHealth {
            connected: redis.is_some(),
            hit_rate: redis.as_ref().map_or(0.0, |stats| stats.hit_rate),
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
        } else {
            Readiness::Ready
        }
    }
}
