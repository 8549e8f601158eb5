//! The Redis adapter: health facts, the gateway's own cached reads ([`ReadCache`]), the
//! shared rate-limit budgets (`limiter.rs`, with `gcra.lua`) and webhook claims
//! (`claims.rs`). Every call is bounded by a short timeout, and a cache that fails is
//! bypassed, never fatal.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus::IntCounter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{debug, error, info, instrument, warn};
use uuid::Uuid;

use crate::app::ports::{CacheError, CacheProbe, ReadCache};
use crate::app::records::{CacheLookups, CacheStats};
use crate::config::RedisEndpoint;
use crate::runtime::breaker::{CircuitBreaker, CircuitState, Fault};
use crate::runtime::metrics::{CacheLookup, Metrics};
use crate::runtime::reason::{Peer, describe};

mod claims;
mod limiter;

pub use claims::ClaimLedger;

/// Redis answers in microseconds; a second means it is in trouble.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The spec's TTLs: a user's data 10 minutes, anything else 5 minutes.
pub const USER_DATA_TTL_SECS: u64 = 600;
pub const DEFAULT_TTL_SECS: u64 = 300;

/// A lazily connected, self-reconnecting Redis handle.
#[derive(Clone)]
pub struct Cache {
    connection: ConnectionManager,
    prefix: String,
    breaker: Arc<CircuitBreaker>,
    hits: IntCounter,
    misses: IntCounter,
}

impl Cache {
    /// Does not connect yet, so the gateway starts while Redis is down. Its cached reads
    /// are counted in `metrics`.
    pub fn new(
        endpoint: &RedisEndpoint,
        prefix: &str,
        breaker: CircuitBreaker,
        metrics: &Metrics,
    ) -> redis::RedisResult<Self> {
        let client = client(endpoint)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Cache {
            connection,
            prefix: prefix.to_owned(),
            breaker: Arc::new(breaker),
            hits: metrics.cache_lookups(CacheLookup::Hit),
            misses: metrics.cache_lookups(CacheLookup::Miss),
        })
    }

    /// Connects once and says how that went: at error level when TLS failed (a
    /// certificate that does not verify), naming the reason `/health` shows too.
    pub async fn check_connection(&self) {
        let mut connection = self.connection.clone();
        let pinged: redis::RedisResult<String> =
            redis::cmd("PING").query_async(&mut connection).await;
        match pinged {
            Ok(_) => info!("connected to Redis"),
            Err(failure) => {
                let reason = describe(&failure, Peer::Redis);
                if reason.tls {
                    error!(error = %failure, "Redis: {reason}");
                } else {
                    warn!(error = %failure, "Redis: {reason}; the cache is bypassed until it answers");
                }
            }
        }
    }

    /// Counts a cached read as a hit or a miss.
    fn counted(&self, found: Option<String>) -> Option<String> {
        match found {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        }
        found
    }

    /// Runs a call unless the circuit is open, and records how it went.
    async fn guarded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        if !self.breaker.allow() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "circuit open: Redis failed repeatedly; not calling it for a few seconds",
            )));
        }
        let outcome = call.await;
        self.breaker.record(&outcome);
        outcome
    }

    /// One command, through the circuit breaker.
    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> redis::RedisResult<T> {
        let mut connection = self.connection.clone();
        self.guarded(command.query_async(&mut connection)).await
    }

    /// Deletes `keys` (below the prefix) in one round trip; an error means they may
    /// still be there, so the caller retries. The consumers call this with their own
    /// backoff (retry queues), so it skips the circuit breaker: a retry right after Redis
    /// returns must not be failed fast.
    #[instrument(skip_all, fields(keys = keys.len()))]
    pub async fn delete(&self, keys: &[String]) -> redis::RedisResult<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let prefixed: Vec<String> = keys.iter().map(|k| format!("{}{k}", self.prefix)).collect();
        let command = redis::cmd("DEL").arg(prefixed).clone();
        let mut connection = self.connection.clone();
        match command.query_async(&mut connection).await {
            // The connection manager answers the first call after a failed reconnect with
            // that old failure, and only then connects again: ask once more, on the new
            // connection (deleting twice is deleting once).
            Err(error) if error.is_io_error() => command.query_async(&mut connection).await,
            outcome => outcome,
        }
    }

    /// The hash holding a user's cached event listings, one field per query.
    pub fn user_events_key(&self, user_id: &str) -> String {
        format!("{}user_events:{user_id}", self.prefix)
    }

    /// A persisted event that will not change any more (published).
    pub fn event_key(&self, id: Uuid) -> String {
        format!("{}event:{id}", self.prefix)
    }
}

#[async_trait]
impl CacheProbe for Cache {
    fn circuit(&self) -> CircuitState {
        self.breaker.state()
    }

    #[instrument(skip_all)]
    async fn stats(&self) -> Result<CacheStats, CacheError> {
        let mut connection = self.connection.clone();
        let info: redis::InfoDict = redis::cmd("INFO")
            .query_async(&mut connection)
            .await
            .map_err(cache_error)?;
        Ok(CacheStats {
            used_memory: info.get("used_memory_human").unwrap_or_default(),
        })
    }

    fn lookups(&self) -> CacheLookups {
        CacheLookups {
            hits: self.hits.get(),
            misses: self.misses.get(),
        }
    }
}

#[async_trait]
impl ReadCache for Cache {
    #[instrument(skip_all)]
    async fn user_events(&self, user_id: &str, query: &str) -> Option<String> {
        let command = redis::cmd("HGET")
            .arg(self.user_events_key(user_id))
            .arg(query)
            .clone();
        self.counted(bypass_on_error(self.run(&command).await).flatten())
    }

    #[instrument(skip_all)]
    async fn put_user_events(&self, user_id: &str, query: &str, page: &str) {
        let key = self.user_events_key(user_id);
        let mut connection = self.connection.clone();
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .hset(&key, query, page)
            .ignore()
            .expire(&key, USER_DATA_TTL_SECS as i64)
            .ignore();
        let stored: redis::RedisResult<()> =
            self.guarded(pipeline.query_async(&mut connection)).await;
        bypass_on_error(stored);
    }

    #[instrument(skip_all)]
    async fn forget_user_events(&self, user_id: &str) {
        let deleted: redis::RedisResult<()> = self
            .run(redis::cmd("DEL").arg(self.user_events_key(user_id)))
            .await;
        bypass_on_error(deleted);
    }

    #[instrument(skip_all)]
    async fn event(&self, id: Uuid) -> Option<String> {
        let found = bypass_on_error(self.run(redis::cmd("GET").arg(self.event_key(id))).await);
        self.counted(found.flatten())
    }

    #[instrument(skip_all)]
    async fn put_event(&self, id: Uuid, event: &str) {
        let command = redis::cmd("SET")
            .arg(self.event_key(id))
            .arg(event)
            .arg("EX")
            .arg(DEFAULT_TTL_SECS)
            .clone();
        let stored: redis::RedisResult<()> = self.run(&command).await;
        bypass_on_error(stored);
    }
}

/// A client for the endpoint: with TLS, trusting its CA file (or the built-in public roots)
/// and presenting its client certificate.
fn client(endpoint: &RedisEndpoint) -> redis::RedisResult<redis::Client> {
    let url = endpoint.url.expose();
    match &endpoint.tls {
        Some(tls) if tls.ca_pem.is_some() || tls.identity.is_some() => {
            let certificates = redis::TlsCertificates {
                client_tls: tls
                    .identity
                    .as_ref()
                    .map(|identity| redis::ClientTlsConfig {
                        client_cert: identity.cert_pem.clone(),
                        client_key: identity.key_pem.clone(),
                    }),
                root_cert: tls.ca_pem.as_ref().map(|pem| pem.clone().into_bytes()),
            };
            redis::Client::build_with_tls(url, certificates)
        }
        _ => redis::Client::open(url),
    }
}

impl Fault for redis::RedisError {
    fn is_dependency_failure(&self) -> bool {
        true
    }
}

pub(crate) fn cache_error(error: redis::RedisError) -> CacheError {
    CacheError(Arc::new(error))
}

/// The cache is an optimisation: a failure is logged and read as a miss.
fn bypass_on_error<T>(result: redis::RedisResult<T>) -> Option<T> {
    result
        .inspect_err(|error| debug!(%error, "cache bypassed"))
        .ok()
}
