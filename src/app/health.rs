//! The spec's `EventSystemHealth` (plus PostgreSQL) and readiness, from the ports. A hung
//! dependency must not hang the report: each check is bounded. `/health` needs no token,
//! so its report is made at most once per [`FACTS_MAX_AGE`]: a flood of calls costs the
//! dependencies one check a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use super::ports::{CacheProbe, EventBus, KeyProbe, StoreProbe};
use super::publish::Backlog;
use super::records::{CacheLookups, CacheStats, QueueDepth};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How old the facts of a report may be when it is served.
pub const FACTS_MAX_AGE: Duration = Duration::from_secs(1);

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
    bus: Arc<dyn EventBus>,
    store: Arc<dyn StoreProbe>,
    cache: Arc<dyn CacheProbe>,
    backlog: Backlog,
    keys: Arc<dyn KeyProbe>,
    /// The last answers of the dependencies and when they were asked. The lock is held
    /// while they are asked, so callers that come meanwhile wait for those answers instead
    /// of asking again.
    latest: Arc<tokio::sync::Mutex<Option<(Instant, Probed)>>>,
}

/// What the dependencies answered: the facts a report is made of, besides the gateway's
/// own (circuits, hit rate), which are read fresh every time.
#[derive(Clone)]
struct Probed {
    queues: Option<Vec<QueueDepth>>,
    redis: Option<CacheStats>,
    postgres: bool,
}

impl Health {
    pub fn new(
        bus: Arc<dyn EventBus>,
        store: Arc<dyn StoreProbe>,
        cache: Arc<dyn CacheProbe>,
        backlog: Backlog,
        keys: Arc<dyn KeyProbe>,
    ) -> Health {
        Health {
            bus,
            store,
            cache,
            backlog,
            keys,
            latest: Arc::default(),
        }
    }

    /// The report, from dependencies' answers at most [`FACTS_MAX_AGE`] old.
    pub async fn report(&self) -> HealthReport {
        let Probed {
            queues,
            redis,
            postgres,
        } = self.probed().await;
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
            connected: postgres,
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

    async fn probed(&self) -> Probed {
        let mut latest = self.latest.lock().await;
        if let Some((asked, probed)) = latest.as_ref()
            && asked.elapsed() < FACTS_MAX_AGE
        {
            return probed.clone();
        }
        let asked = Instant::now();
        let probed = self.probe().await;
        *latest = Some((asked, probed.clone()));
        probed
    }

    /// Asks every dependency now, each within [`CHECK_TIMEOUT`].
    async fn probe(&self) -> Probed {
        let (queues, redis, postgres) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, self.bus.queue_depths()),
            tokio::time::timeout(CHECK_TIMEOUT, self.cache.stats()),
            tokio::time::timeout(CHECK_TIMEOUT, self.store.ping()),
        );
        Probed {
            queues: queues.ok().and_then(Result::ok),
            redis: redis.ok().and_then(Result::ok),
            postgres: matches!(postgres, Ok(Ok(()))),
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
