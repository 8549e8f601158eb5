//! The spec's `EventSystemHealth` (plus PostgreSQL) and readiness, from the ports. A hung
//! dependency must not hang the report: each check is bounded. `/health` needs no token,
//! so its report is made at most once per [`FACTS_MAX_AGE`]: a flood of calls costs the
//! dependencies one check a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use super::ports::{CacheProbe, EventBus, KeyProbe, PublishError, StoreError, StoreProbe};
use super::publish::Backlog;
use super::records::{CacheLookups, CacheStats, QueueDepth, ScheduleStats};
use super::schedule::ScheduleFacts;
use crate::runtime::reason::{Peer, describe};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How old the facts of a report may be when it is served.
pub const FACTS_MAX_AGE: Duration = Duration::from_secs(1);

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
    /// Scheduled events (`deliverAt`) as last counted, every few seconds: how many wait,
    /// how many are overdue (due and not yet released), and when the next is due. Null
    /// until the schedule was counted once.
    pub scheduled: Option<ScheduleStats>,
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
    schedule: ScheduleFacts,
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
    bus_error: Option<String>,
    redis: Option<CacheStats>,
    redis_error: Option<String>,
    postgres: bool,
    postgres_error: Option<String>,
}

impl Health {
    pub fn new(
        bus: Arc<dyn EventBus>,
        store: Arc<dyn StoreProbe>,
        cache: Arc<dyn CacheProbe>,
        backlog: Backlog,
        keys: Arc<dyn KeyProbe>,
        schedule: ScheduleFacts,
    ) -> Health {
        Health {
            bus,
            store,
            cache,
            backlog,
            keys,
            schedule,
            latest: Arc::default(),
        }
    }

    /// The report, from dependencies' answers at most [`FACTS_MAX_AGE`] old.
    pub async fn report(&self) -> HealthReport {
        let Probed {
            queues,
            bus_error,
            redis,
            redis_error,
            postgres,
            postgres_error,
        } = self.probed().await;
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
            connected: postgres,
            circuit: self.store.circuit().as_str(),
            last_error: postgres_error,
        };
        let healthy = rabbit_mq.connected && redis.connected && postgres.connected;
        HealthReport {
            status: if healthy { "ok" } else { "degraded" },
            rabbit_mq,
            redis,
            postgres,
            scheduled: self.schedule.get(),
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
        let (queues, bus_error) = split(queues, |e| self.bus_error(e));
        let (redis, redis_error) = split(redis, |e| describe(&*e.0, Peer::Redis).text);
        let (postgres, postgres_error) = split(postgres, |e| self.store_error(e));
        Probed {
            queues,
            bus_error,
            redis,
            redis_error,
            postgres: postgres.is_some(),
            postgres_error,
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
        } else if !self.keys.keys_loaded() {
            Readiness::KeysUnavailable
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
