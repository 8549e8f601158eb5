//! `GET /v1/schemas` and `GET /v1/schemas/{type}`: the JSON Schema (2020-12) of each
//! event a producer sends, from the field table that validates it, so a producer can
//! validate before sending. No token needed: it is documentation, like `/openapi.json`.

use axum::Json;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, Problem};
use super::responses::RateLimited;
use crate::domain::EventType;
use crate::domain::json_schema::producer_schema;

/// One event type whose schema the gateway serves.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaEntry {
    #[serde(rename = "type")]
    #[schema(example = "achievement.completed")]
    pub event_type: &'static str,
    #[schema(example = "achievement")]
    pub family: &'static str,
    /// Where its JSON Schema is.
    #[schema(example = "/v1/schemas/achievement.completed")]
    pub schema: String,
    /// Whether `userId` is required for this type.
    pub requires_user_id: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaList {
    pub schemas: Vec<SchemaEntry>,
}

/// Every event type, with where its JSON Schema is.
#[utoipa::path(get, path = "/v1/schemas", tag = "schemas",
    responses((status = 200, description = "The 18 event types", body = SchemaList), RateLimited))]
async fn list_schemas() -> Json<SchemaList> {
    let schemas = EventType::ALL
        .into_iter()
        .map(|event_type| SchemaEntry {
            event_type: event_type.as_str(),
            family: event_type.family().as_str(),
            schema: format!("/v1/schemas/{event_type}"),
            requires_user_id: event_type.requires_user_id(),
        })
        .collect();
    Json(SchemaList { schemas })
}

/// The JSON Schema (2020-12) of one event type, as a producer sends it to `POST /v1/events`.
#[utoipa::path(get, path = "/v1/schemas/{type}", tag = "schemas",
    params(("type" = String, Path, description = "An event type", example = "achievement.completed")),
    responses(
        (status = 200, description = "The schema", body = Object, content_type = "application/schema+json"),
        (status = 404, description = "No such event type", body = Problem, content_type = "application/problem+json"),
        RateLimited,
    ))]
async fn get_schema(Path(event_type): Path<String>) -> Result<Response, ApiError> {
    let event_type: EventType = event_type.parse().map_err(|_| ApiError::NotFound)?;
    let schema = producer_schema(event_type);
    Ok((
        [(header::CONTENT_TYPE, "application/schema+json")],
        Json(schema),
    )
        .into_response())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_schemas))
        .routes(routes!(get_schema))
}
