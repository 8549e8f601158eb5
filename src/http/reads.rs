//! Receipts and reads of persisted (critical) events, cached in Redis.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::Caller;
use super::paging::{page, readable};
use crate::domain::data::check_id;
use crate::domain::envelope::rfc3339_millis;
use crate::domain::{EventType, FieldError};
use crate::store::{PageCursor, StoredEvent};

/// Where a persisted event is on its way to the broker.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `accepted` (in the outbox) or `published` (the broker confirmed it).
    #[schema(example = "published")]
    pub state: String,
    pub accepted_at: String,
    pub published_at: Option<String>,
}

/// A persisted event: the envelope that went on the bus, and its delivery state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PersistedEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    #[schema(value_type = Object)]
    pub data: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub delivery: Delivery,
}

impl PersistedEvent {
    fn from_stored(stored: StoredEvent) -> Self {
        let mut envelope = stored.envelope;
        PersistedEvent {
            id: stored.id,
            event_type: envelope["type"].as_str().unwrap_or_default().to_owned(),
            data: envelope["data"].take(),
            metadata: envelope["metadata"].take(),
            delivery: Delivery {
                state: stored.state,
                accepted_at: rfc3339_millis(stored.accepted_at),
                published_at: stored.published_at.map(rfc3339_millis),
            },
        }
    }

    fn user_id(&self) -> Option<&str> {
        self.metadata["userId"].as_str()
    }
}

/// One page of a user's events, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub events: Vec<PersistedEvent>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// Page size, 1 to 100 (default 20).
    limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// A persisted (critical) event and its delivery state.
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "events",
    params(("id" = Uuid, Path, description = "The event id")),
    responses(
        (status = 200, description = "The event", body = PersistedEvent),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The caller's rate limit is spent; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks events:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No persisted event with this id (or not the player's own)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get_event(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<PersistedEvent>, ApiError> {
    caller.authorize_read_scope().map_err(ApiError::forbidden)?;
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let cached = state.cache.event(id).await;
    let event = match cached.and_then(|json| serde_json::from_str::<PersistedEvent>(&json).ok()) {
        Some(event) => event,
        None => {
            let stored = state.store.event(id).await?.ok_or(ApiError::NotFound)?;
            let event = PersistedEvent::from_stored(stored);
            // Only a published event is final; an accepted one is about to change.
            if event.delivery.state == "published"
                && let Ok(json) = serde_json::to_string(&event)
            {
                state.cache.put_event(id, &json).await;
            }
            event
        }
    };
    if let Err(forbidden) = caller.authorize_read(event.user_id()) {
        // A player asking for someone else's event learns nothing about it.
        return Err(if caller.is_player() {
            ApiError::NotFound
        } else {
            ApiError::forbidden(forbidden)
        });
    }
    Ok(Json(event))
}

/// A user's persisted events, newest first.
#[utoipa::path(
    get,
    path = "/v1/users/{userId}/events",
    tag = "events",
    params(("userId" = String, Path, description = "The user id"), ListQuery),
    responses(
        (status = 200, description = "A page of events", body = EventList),
        (status = 400, description = "Unreadable query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The caller's rate limit is spent; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks events:read, or is another player's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid user id, type, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_user_events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let query = readable(query)?;
    let (event_type, limit, cursor) = parse_list_query(&user_id, &query)?;
    caller
        .authorize_read(Some(&user_id))
        .map_err(ApiError::forbidden)?;
    let field = format!(
        "type={}&limit={limit}&cursor={}",
        event_type.map_or("", EventType::as_str),
        query.cursor.as_deref().unwrap_or("")
    );
    if let Some(page) = state.cache.user_events(&user_id, &field).await {
        return Ok(json_response(page));
    }
    let page = state
        .store
        .user_events(
            user_id.clone(),
            event_type.map(EventType::as_str),
            i64::from(limit),
            cursor,
        )
        .await?;
    let list = EventList {
        events: page
            .events
            .into_iter()
            .map(PersistedEvent::from_stored)
            .collect(),
        next_cursor: page.next.map(|c| c.encode()),
    };
    let json = serde_json::to_string(&list).map_err(anyhow::Error::from)?;
    // A page with an event still on its way would go stale when it is published.
    if list.events.iter().all(|e| e.delivery.state == "published") {
        state.cache.put_user_events(&user_id, &field, &json).await;
    }

    Ok(json_response(json))
}

fn parse_list_query(
    user_id: &str,
    query: &ListQuery,
) -> Result<(Option<EventType>, u32, Option<PageCursor>), ApiError> {
    let mut errors = Vec::new();
    if let Err(message) = check_id(&Value::from(user_id)) {
        errors.push(FieldError::new("/path/userId", message));
    }
    let event_type = match query.event_type.as_deref().map(str::parse::<EventType>) {
        Some(Ok(event_type)) => Some(event_type),
        Some(Err(unknown)) => {
            errors.push(FieldError::new("/query/type", unknown.to_string()));
            None
        }
        None => None,
    };
    let (limit, cursor) = page(query.limit, query.cursor.as_deref(), &mut errors);
    if errors.is_empty() {
        Ok((event_type, limit, cursor))
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// A JSON body that is already serialized (from the cache or just built for it).
fn json_response(json: String) -> axum::response::Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json,
    )
        .into_response()
}

pub fn router() -> OpenApiRouter<AppState> {
    // `GET /v1/events/{id}` shares its route with `POST /v1/events/{type}`, and the router
    // needs one parameter name per position; the document lists it under `{id}` (ApiDoc).
    OpenApiRouter::new()
        .route("/v1/events/{type}", get(get_event))
        .routes(routes!(list_user_events))
}
