//! `/health` (the spec's `EventSystemHealth`), `/health/live`, `/health/ready`, `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use crate::bus::QueueDepth;

/// A hung dependency must not hang the health check.
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

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Dependency health: 200 when RabbitMQ, Redis and PostgreSQL are up, 503 otherwise;
/// always JSON, and bounded by a short timeout per dependency.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "Every dependency is up", body = HealthReport),
        (status = 503, description = "A dependency is down", body = HealthReport),
    )
)]
async fn health(State(state): State<AppState>) -> Response {
    let (queues, redis, postgres) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, state.publisher.queue_depths()),
        tokio::time::timeout(CHECK_TIMEOUT, state.cache.stats()),
        tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()),
    );
    let postgres = PostgresHealth {
        connected: matches!(postgres, Ok(Ok(()))),
        circuit: state.store.circuit().as_str(),
    };
    let redis_circuit = state.cache.circuit().as_str();
    let rabbit_mq = match queues {
        Ok(Ok(queues)) => RabbitMqHealth {
            connected: true,
            queues,
        },
        _ => RabbitMqHealth {
            connected: false,
            queues: Vec::new(),
        },
    };
    let redis = match redis {
        Ok(Ok(stats)) => RedisHealth {
            connected: true,
            used_memory: stats.used_memory,
            hit_rate: stats.hit_rate,
            circuit: redis_circuit,
        },
        _ => RedisHealth {
            connected: false,
            used_memory: String::new(),
            hit_rate: 0.0,
            circuit: redis_circuit,
        },
    };
    let healthy = rabbit_mq.connected && redis.connected && postgres.connected;
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let report = HealthReport {
        status: if healthy { "ok" } else { "degraded" },
        rabbit_mq,
        redis,
        postgres,
    };
    (status, Json(report)).into_response()
}

/// The process is alive.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "Alive", body = Status)))]
async fn live() -> Json<Status> {
    Json(Status { status: "alive" })
}

/// Ready to accept events: the broker connection is up and the database is migrated.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Events can be published", body = Status),
        (status = 503, description = "The broker is unreachable or the database not ready", body = Status),
    ))]
async fn ready(State(state): State<AppState>) -> Response {
    let status = if !state.publisher.is_connected() {
        "broker_unreachable"
    } else if !state.store.is_ready() {
        "database_not_ready"
    } else if !state.ingest.outbox_counted() {
        "outbox_not_counted"
    } else {
        return Json(Status { status: "ready" }).into_response();
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(Status { status })).into_response()
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics.render().map_err(anyhow::Error::from)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}
