//! event-gateway: an HTTP gateway that puts authenticated, validated gamification events
//! onto a RabbitMQ topic exchange and answers only once the broker has confirmed them.
//!
//! Layout:
//! - [`domain`]: event types, their schemas, the envelope, scopes. No I/O.
//! - [`http`]: the edge: routes, extractors, problem+json errors, middleware, OpenAPI.
//! - [`bus`], [`cache`], [`store`]: adapters for RabbitMQ, Redis and PostgreSQL. They
//!   never import [`http`].
//! - [`ingest`]: turns a valid event into a safe one (confirmed, or held in the outbox);
//!   shared by every endpoint. [`relay`] publishes what the outbox holds.
//! - [`auth`], [`config`], [`metrics`]: tokens, settings, Prometheus.
//!
//! [`run`] takes an already bound listener and a shutdown token, so tests start a whole
//! gateway on port 0 in one line.
#![forbid(unsafe_code)]

pub mod auth;
pub mod breaker;
pub mod bus;
pub mod cache;
pub mod config;
pub mod consumer;
pub mod domain;
pub mod gauges;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod rate_limit;
pub mod relay;
pub mod store;

use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{KeySource, TokenVerifier};
use crate::breaker::CircuitBreaker;
use crate::bus::{BusSettings, Publisher, Topology};
use crate::cache::Cache;
use crate::config::{GatewayEnv, Settings};
use crate::consumer::{CacheInvalidator, ConsumerSettings, Consumers};
use crate::http::server::ConnectionLimits;
use crate::http::{AppState, Dependencies};
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::rate_limit::{Policy, RateLimiter};
use crate::relay::{OutboxRelay, RelaySignal};
use crate::store::{Store, StoreSettings};

/// The exchanges and queues these settings name.
pub fn topology(settings: &Settings) -> Topology {
    Topology::new(
        &settings.amqp_exchange,
        &settings.amqp_queue_prefix,
        &settings.retry_policy().delays(),
    )
}

/// The store's part of the settings.
pub fn store_settings(settings: &Settings) -> StoreSettings {
    StoreSettings {
        url: settings.database_url.expose().to_owned(),
        pool_size: settings.db_pool_size,
        acquire_timeout: settings.db_acquire_timeout,
        statement_timeout: settings.db_statement_timeout,
        write_batch: settings.db_write_batch as usize,
    }
}

/// Serves the gateway on `listener` until `shutdown` is cancelled, then finishes the
/// requests in flight (and their publishes) before closing the broker connection.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let verifier = TokenVerifier::from_settings(&settings)?;
    if verifier.source() == KeySource::DevelopmentSecret {
        if settings.gateway_env == GatewayEnv::Production {
            bail!(
                "GATEWAY_ENV=production needs JWT_SECRET or JWT_PUBLIC_KEY_FILE; refusing the development secret"
            );
        }
        warn!(
            "!!! No JWT_SECRET or JWT_PUBLIC_KEY_FILE: tokens are checked with the PUBLIC DEVELOPMENT SECRET. Anyone can mint tokens. Never run this way in production. !!!"
        );
    }
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    let publisher = Publisher::start(
        BusSettings {
            url: settings.amqp_url.expose().to_owned(),
            topology: topology(&settings),
            channels: settings.amqp_publish_channels,
            max_in_flight: settings.amqp_max_in_flight,
            confirm_timeout: settings.amqp_confirm_timeout,
        },
        metrics.clone(),
    );
    let breaker = |dependency: &str| {
        CircuitBreaker::new(metrics.circuit_open.with_label_values(&[dependency]))
    };
    let cache = Cache::new(
        &settings.redis_url(),
        &settings.redis_key_prefix,
        breaker("redis"),
    )
    .context("REDIS_HOST/REDIS_PORT/REDIS_PASSWORD/REDIS_DB do not form a valid Redis URL")?;
    let store = Store::start(&store_settings(&settings), breaker("postgres"))?;
    let signal = RelaySignal::default();
    let background_stop = CancellationToken::new();
    let relay = OutboxRelay {
        store: store.clone(),
        publisher: publisher.clone(),
        signal: signal.clone(),
        metrics: metrics.clone(),
        idempotency_ttl: settings.idempotency_ttl,
    }
    .spawn(background_stop.clone());
    let gauges = gauges::spawn(
        publisher.clone(),
        store.clone(),
        metrics.clone(),
        background_stop.clone(),
    );
    let consumers = settings.consumers_enabled.then(|| {
        Consumers::start(
            ConsumerSettings {
                url: settings.amqp_url.expose().to_owned(),
                topology: topology(&settings),
                prefetch: settings.consumer_prefetch,
                retry: settings.retry_policy(),
            },
            CacheInvalidator::new(cache.clone()),
            store.clone(),
            metrics.clone(),
        )
    });
    let critical = settings.critical_events.iter().copied().collect();
    let state = AppState::new(Dependencies {
        verifier,
        ingest: Ingest::new(
            publisher.clone(),
            store.clone(),
            cache.clone(),
            signal,
            metrics.clone(),
            critical,
            settings.sealer(),
        ),
        publisher: publisher.clone(),
        store,
        limiter: RateLimiter::new(
            Policy::new(settings.rate_limit_rps, settings.rate_limit_burst),
            cache.clone(),
            metrics.clone(),
        ),
        cache,
        metrics,
        webhooks: settings.webhook_secrets.clone(),
        body_read_timeout: settings.body_read_timeout,
        idempotency_ttl: settings.idempotency_ttl,
    });
    let app = http::router(state, &settings);
    info!(addr = %listener.local_addr()?, "serving");
    let limits = ConnectionLimits {
        header_read_timeout: settings.header_read_timeout,
        max_header_bytes: settings.max_header_bytes as usize,
    };
    let served = http::server::serve(listener, app, limits, shutdown).await;
    background_stop.cancel();
    for (name, task) in [("outbox relay", relay), ("gauge refresher", gauges)] {
        if let Err(error) = task.await {
            warn!(%error, task = name, "a background task ended abnormally");
        }
    }
    if let Some(consumers) = consumers {
        consumers.stop().await;
    }
    publisher.close().await;
    info!("stopped");
    served.context("HTTP server failed")
}
