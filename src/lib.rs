//! event-gateway: an HTTP gateway that puts authenticated, validated gamification events
//! onto a RabbitMQ topic exchange and answers only once they are safe.
//!
//! Layout (where a change goes):
//! - [`domain`]: event types and their field table (one table for validation, OpenAPI and
//!   routing: a new event type goes here), the envelope, scopes, CloudEvents, webhook
//!   signatures, sealing. Pure: no I/O.
//! - [`app`]: the use cases (publishing, idempotency, webhooks, dead-letter replay, cached
//!   reads, rate limits, health) and the [`app::ports`] they need. Another limiter store
//!   (or any other backend) is a new implementation of a port.
//! - [`bus`], [`store`], [`cache`]: the adapters for RabbitMQ, PostgreSQL and Redis,
//!   implementing the ports. They never import [`http`].
//! - [`workers`]: the outbox relay, the schedule's release, the cache-invalidating
//!   consumers, the gauges.
//! - [`http`]: transport only: routes, extractors, problem+json errors, middleware, the
//!   OpenAPI document. A new endpoint is a handler here calling a function of [`app`].
//! - [`runtime`]: what everything shares: the backoff schedule (the retry schedule),
//!   circuit breakers, detached work, background workers, and the metrics (a new metric
//!   is one line in `runtime/metrics.rs`).
//! - [`auth`], [`config`]: tokens, settings.
//!
//! [`run`] takes an already bound listener and a shutdown token, so tests start a whole
//! gateway on port 0 in one line.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod config;
pub mod domain;
pub mod http;
pub mod runtime;
pub mod store;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::app::App;
use crate::app::health::Health;
use crate::app::idempotency::Idempotency;
use crate::app::ports::KeyProbe;
use crate::app::publish::{Backlog, Publishing, PublishingParts};
use crate::app::rate_limit::{Policy, RateLimiter};
use crate::app::reads::Reads;
use crate::app::replay::Replay;
use crate::app::schedule::{ScheduleFacts, Scheduling};
use crate::app::webhooks::MIN_REPLAY_WINDOW;
use crate::auth::{KeySource, TokenVerifier};
use crate::bus::{Broker, BusSettings, Publisher, Topology};
use crate::cache::{Cache, ClaimLedger};
use crate::config::{DatabaseEndpoint, Endpoints, GatewayEnv, Settings, SslMode};
use crate::domain::schedule::ScheduleWindow;
use crate::http::server::ConnectionLimits;
use crate::http::{AppState, Dependencies};
use crate::runtime::breaker::CircuitBreaker;
use crate::runtime::metrics::{Dependency, Metrics};
use crate::runtime::worker::Workers;
use crate::store::{Store, StoreSettings};
use crate::workers::consumers::{CacheInvalidator, ConsumerSettings, Consumers};
use crate::workers::relay::OutboxRelay;
use crate::workers::scheduler::ScheduleRelease;

/// The exchanges and queues these settings name.
pub fn topology(settings: &Settings) -> Topology {
    Topology::new(
        &settings.amqp_exchange,
        &settings.amqp_queue_prefix,
        &settings.retry_policy().delays(),
    )
}

/// The AsyncAPI document of the bus these settings name.
pub fn asyncapi_json(settings: &Settings) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&bus::asyncapi::document(&topology(settings)))
}

/// The store's part of the settings.
/// How much longer than the confirm timeout a request's own outbox rows are left to it.
const REQUEST_LEASE_MARGIN: Duration = Duration::from_secs(2);

pub fn store_settings(settings: &Settings, database: &DatabaseEndpoint) -> StoreSettings {
    StoreSettings {
        url: database.url.expose().to_owned(),
        pool_size: settings.db_pool_size,
        acquire_timeout: settings.db_acquire_timeout,
        statement_timeout: settings.db_statement_timeout,
        write_batch: settings.db_write_batch as usize,
        // The request publishes its own row right after the commit, within the confirm
        // timeout; after that (and a margin) the relay may.
        request_lease: settings.amqp_confirm_timeout + REQUEST_LEASE_MARGIN,
    }
}

/// The adapters, connected (or connecting) in the background.
struct Adapters {
    broker: Broker,
    publisher: Publisher,
    store: Store,
    cache: Cache,
}

/// Serves the gateway on `listener` until `shutdown` is cancelled, then finishes the
/// requests in flight (and their publishes), stops the workers, and closes the
/// connections.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let verifier = Arc::new(verifier(&settings)?);
    // One crypto provider for every TLS client (rustls picks it by itself only while a
    // single one is built in).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let endpoints = settings.endpoints()?;
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    let family_queues = topology(&settings).family_queues().to_vec();
    metrics.initialise(family_queues.iter().map(|binding| binding.queue.as_str()));
    // Stopped last: what the workers and requests publish and write through.
    let connections = Workers::default();
    let adapters = connect(&settings, &endpoints, &metrics, &connections)?;
    let backlog = Backlog::default();
    let schedule = ScheduleFacts::default();
    let background = Workers::default();
    start_workers(
        &settings,
        &adapters,
        &backlog,
        &schedule,
        &metrics,
        &background,
    );
    if let Some(keys) = verifier.remote_keys() {
        background.spawn("key set", keys.refresh_in_background(background.token()));
    }
    let state = AppState::new(Dependencies {
        app: application(
            &settings,
            &adapters,
            (backlog, schedule),
            &metrics,
            verifier.clone(),
        ),
        verifier,
        metrics,
        webhooks: settings.webhook_secrets.clone(),
        body_read_timeout: settings.body_read_timeout,
        asyncapi: asyncapi_json(&settings).context("rendering the AsyncAPI document")?,
    });
    let app = http::router(state, &settings).context("rendering the OpenAPI document")?;
    info!(addr = %listener.local_addr()?, "serving");
    let limits = ConnectionLimits {
        header_read_timeout: settings.header_read_timeout,
        max_header_bytes: settings.max_header_bytes as usize,
        drain: settings.request_timeout + Duration::from_secs(1),
    };
    let served = http::server::serve(listener, app, limits, shutdown).await;
    info!("requests done; stopping the workers");
    background.stop().await;
    connections.stop().await;
    // The last spans leave before the process does (blocking: the exporter's own thread).
    let _ = tokio::task::spawn_blocking(runtime::telemetry::shutdown).await;
    info!("stopped");
    served.context("HTTP server failed")
}

fn verifier(settings: &Settings) -> anyhow::Result<TokenVerifier> {
    let verifier = TokenVerifier::from_settings(settings)?;
    if verifier.source() == KeySource::DevelopmentSecret {
        if settings.gateway_env == GatewayEnv::Production {
            bail!(
                "GATEWAY_ENV=production needs JWT_SECRET, JWT_PUBLIC_KEY_FILE, JWT_JWKS_URL or JWT_OIDC_DISCOVERY; refusing the development secret"
            );
        }
        warn!(
            "!!! No JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL: tokens are checked with the PUBLIC DEVELOPMENT SECRET. Anyone can mint tokens. Never run this way in production. !!!"
        );
    }
    Ok(verifier)
}

fn connect(
    settings: &Settings,
    endpoints: &Endpoints,
    metrics: &Arc<Metrics>,
    workers: &Workers,
) -> anyhow::Result<Adapters> {
    let broker = Broker::new(&endpoints.broker)?;
    log_transports(&broker, endpoints);
    let bus = BusSettings {
        broker: broker.clone(),
        topology: topology(settings),
        channels: settings.amqp_publish_channels,
        max_in_flight: settings.amqp_max_in_flight,
        confirm_timeout: settings.amqp_confirm_timeout,
    };
    let breaker = |dependency| CircuitBreaker::new(metrics.circuit(dependency));
    let cache = Cache::new(
        &endpoints.redis,
        &settings.redis_key_prefix,
        breaker(Dependency::Redis),
        metrics,
    )
    .context("REDIS_HOST/REDIS_PORT/REDIS_PASSWORD/REDIS_DB do not form a valid Redis URL")?;
    let first_check = cache.clone();
    let stop = workers.token();
    workers.spawn("redis check", async move {
        tokio::select! {
            () = first_check.check_connection() => {}
            () = stop.cancelled() => {}
        }
    });
    Ok(Adapters {
        broker,
        publisher: Publisher::start(bus, metrics.clone(), workers),
        store: Store::start(
            &store_settings(settings, &endpoints.database),
            breaker(Dependency::Postgres),
            workers,
        )?,
        cache,
    })
}

/// One line per dependency at start: plain text or TLS, and what is checked. TLS that does
/// not check the server (or may fall back to plain text) is a warning.
fn log_transports(broker: &Broker, endpoints: &Endpoints) {
    let checked = |tls: &config::ClientTls, ca: &'static str| {
        let roots = if tls.ca_pem.is_some() {
            ca
        } else {
            "the built-in public roots"
        };
        let client = if tls.identity.is_some() {
            ", with a client certificate"
        } else {
            ""
        };
        format!("checking the server's certificate and host name against {roots}{client}")
    };
    match &endpoints.broker.tls {
        Some(tls) => info!(
            host = broker.host(),
            "RabbitMQ: TLS, {}",
            checked(tls, "AMQP_TLS_CA_FILE")
        ),
        None => info!(host = broker.host(), "RabbitMQ: plain text (amqp://)"),
    }
    match &endpoints.redis.tls {
        Some(tls) => info!("Redis: TLS, {}", checked(tls, "REDIS_TLS_CA_FILE")),
        None => info!("Redis: plain text (REDIS_TLS=false)"),
    }
    let database = &endpoints.database;
    let mode = database.ssl_mode.as_str();
    match database.ssl_mode {
        SslMode::VerifyFull | SslMode::VerifyCa => info!(
            sslmode = mode,
            "PostgreSQL: TLS, checking the server's certificate{}",
            if database.ssl_mode == SslMode::VerifyFull {
                " and host name"
            } else {
                " (not its host name)"
            }
        ),
        SslMode::Require => warn!(
            sslmode = mode,
            "PostgreSQL: TLS without checking the server's certificate: use sslmode=verify-full"
        ),
        SslMode::Prefer => warn!(
            sslmode = mode,
            "PostgreSQL: TLS if the server offers it, else plain text, never checking its certificate: use sslmode=verify-full"
        ),
        SslMode::Disable if database.local => {
            info!(sslmode = mode, "PostgreSQL: plain text (a local server)")
        }
        SslMode::Disable => warn!(sslmode = mode, "PostgreSQL: plain text to a remote server"),
    }
}

fn start_workers(
    settings: &Settings,
    adapters: &Adapters,
    backlog: &Backlog,
    schedule: &ScheduleFacts,
    metrics: &Arc<Metrics>,
    workers: &Workers,
) {
    ScheduleRelease {
        store: adapters.store.clone(),
        backlog: backlog.clone(),
        metrics: metrics.clone(),
        facts: schedule.clone(),
        settled_ttl: settings.idempotency_ttl,
    }
    .spawn(workers);
    OutboxRelay {
        store: adapters.store.clone(),
        publisher: adapters.publisher.clone(),
        backlog: backlog.clone(),
        metrics: metrics.clone(),
        backoff: settings.retry_backoff(),
        idempotency_ttl: settings.idempotency_ttl,
    }
    .spawn(workers);
    workers::gauges::spawn(
        adapters.publisher.clone(),
        adapters.store.clone(),
        metrics.clone(),
        workers,
    );
    if settings.consumers_enabled {
        let consumer_settings = ConsumerSettings {
            broker: adapters.broker.clone(),
            topology: topology(settings),
            prefetch: settings.consumer_prefetch,
            retry: settings.retry_policy(),
        };
        let invalidator = CacheInvalidator::new(adapters.cache.clone());
        Consumers::new(
            consumer_settings,
            invalidator,
            adapters.store.clone(),
            metrics.clone(),
        )
        .spawn(workers);
    }
}

/// The use cases, each given the ports it needs.
fn application(
    settings: &Settings,
    adapters: &Adapters,
    (backlog, schedule): (Backlog, ScheduleFacts),
    metrics: &Arc<Metrics>,
    keys: Arc<dyn KeyProbe>,
) -> App {
    let (bus, store, cache) = (
        Arc::new(adapters.publisher.clone()),
        Arc::new(adapters.store.clone()),
        Arc::new(adapters.cache.clone()),
    );
    let publishing = Publishing::new(PublishingParts {
        bus: bus.clone(),
        outbox: store.clone(),
        listings: cache.clone(),
        backlog: backlog.clone(),
        metrics: metrics.clone(),
        critical: settings.critical_events.iter().copied().collect(),
        sealer: settings.sealer(),
    });
    let webhook_claims = ClaimLedger {
        cache: adapters.cache.clone(),
        ttl: settings.idempotency_ttl.max(MIN_REPLAY_WINDOW),
    };
    App {
        idempotency: Idempotency {
            database: store.clone(),
            cache: Arc::new(webhook_claims),
        },
        replay: Replay {
            letters: store.clone(),
            publishing: publishing.clone(),
        },
        reads: Reads {
            archive: store.clone(),
            cache: cache.clone(),
        },
        scheduling: Scheduling {
            window: ScheduleWindow {
                max_ahead: settings.schedule_max_ahead,
            },
            store: store.clone(),
            listings: cache.clone(),
        },
        limiter: RateLimiter::new(
            Policy::new(settings.rate_limit_rps, settings.rate_limit_burst),
            cache.clone(),
            metrics.clone(),
        ),
        health: Health::new(bus, store, cache, backlog, keys, schedule),
        publishing,
    }
}
