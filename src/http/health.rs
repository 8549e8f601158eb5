//! `/health` (the spec's `EventSystemHealth`), `/health/live`, `/health/ready`, `/metrics`.

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
use crate::app::health::{HealthReport, Readiness};

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Dependency health: 200 when RabbitMQ, Redis and PostgreSQL are up, 503 otherwise;
/// always JSON, and bounded by a short timeout per dependency. The facts are at most a
/// second old: the dependencies are asked at most once a second, however many call.
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
    let report = state.app.health.report().await;
    let status = if report.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// The process is alive.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "Alive", body = Status)))]
async fn live() -> Json<Status> {
    Json(Status { status: "alive" })
}

/// Ready to accept events: the broker connection is up, the database is migrated and the
/// keys that verify tokens are at hand.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Events can be published", body = Status),
        (status = 503, description = "The broker is unreachable, the database not ready, or the identity provider's keys not fetched yet", body = Status),
    ))]
async fn ready(State(state): State<AppState>) -> Response {
    let readiness = state.app.health.readiness();
    let status = Json(Status {
        status: readiness.as_str(),
    });
    if readiness == Readiness::Ready {
        status.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, status).into_response()
    }
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
