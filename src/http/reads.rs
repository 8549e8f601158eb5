//! Receipts and reads of persisted (critical) and scheduled events, cached in Redis, and
//! the cancel of a scheduled one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::{Caller, QueryParams};
use super::paging::page;
use super::responses::{DatabaseDown, RateLimited, Unauthorized, UnreadableQuery};
use crate::app::reads::{EventList, PersistedEvent, UserEventsQuery};
use crate::app::records::PageCursor;
use crate::app::schedule::CancelError;
use crate::domain::data::check_id;
use crate::domain::{EventType, FieldError};

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

/// A persisted (critical) or scheduled event and its delivery state.
///
/// A scheduled event (`deliverAt`) of any type is found here from its `202` on:
/// `scheduled`, then `accepted` (due, handed to the outbox) and `published`, or
/// `cancelled`. Published and cancelled scheduled events that are not critical are kept
/// for `IDEMPOTENCY_TTL`.
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "events",
    params(("id" = Uuid, Path, description = "The event id")),
    responses(
        (status = 200, description = "The event", body = PersistedEvent),
        Unauthorized,
        RateLimited,
        (status = 403, description = "The token lacks events:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No persisted or scheduled event with this id (or not the player's own)", body = Problem, content_type = "application/problem+json"),
        DatabaseDown,
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
    let event = state.app.reads.event(id).await?.ok_or(ApiError::NotFound)?;
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

/// Cancel a scheduled event.
///
/// Until its `deliverAt` has come and it was released, a scheduled event can be cancelled
/// by an `admin`, or by the principal that scheduled it while its token may still publish
/// that event (a player token only its own user's). After `204` it is never published;
/// cancelling it again is `204` too. Once it has gone out, `409`.
#[utoipa::path(
    delete,
    path = "/v1/events/{id}",
    tag = "events",
    params(("id" = Uuid, Path, description = "The event id of a scheduled event")),
    responses(
        (status = 204, description = "Cancelled: it will never be published"),
        Unauthorized,
        RateLimited,
        (status = 403, description = "Not an admin, nor the principal that scheduled it with the right to publish it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No scheduled event with this id (or not the player's own)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It has already been released to the broker or published", body = Problem, content_type = "application/problem+json"),
        DatabaseDown,
    ),
    security(("bearer" = []))
)]
pub(super) async fn cancel_event(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    match state.app.scheduling.cancel(&caller, id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(CancelError::NotFound) => Err(ApiError::NotFound),
        Err(CancelError::Forbidden(forbidden)) => Err(ApiError::forbidden(forbidden)),
        Err(error @ CancelError::AlreadyOut(_)) => Err(ApiError::NotCancellable(error.to_string())),
        Err(CancelError::Store(error)) => Err(error.into()),
    }
}

/// A user's persisted events, and the scheduled ones still waiting, newest first.
#[utoipa::path(
    get,
    path = "/v1/users/{userId}/events",
    tag = "events",
    params(("userId" = String, Path, description = "The user id", example = "user-123"), ListQuery),
    responses(
        (status = 200, description = "A page of events", body = EventList),
        UnreadableQuery,
        Unauthorized,
        RateLimited,
        (status = 403, description = "The token lacks events:read, or is another player's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid user id, type, limit or cursor", body = Problem, content_type = "application/problem+json"),
        DatabaseDown,
    ),
    security(("bearer" = []))
)]
async fn list_user_events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<axum::response::Response, ApiError> {
    let (event_type, limit, cursor) = parse_list_query(&user_id, &query)?;
    caller
        .authorize_read(Some(&user_id))
        .map_err(ApiError::forbidden)?;
    let query = UserEventsQuery {
        user_id,
        event_type,
        limit,
        cursor,
        cursor_text: query.cursor,
    };
    Ok(json_response(state.app.reads.user_events(query).await?))
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
    // needs one parameter name per position; the document lists it under `{id}` (ApiDoc),
    // and the metrics count it under `{id}` too (middleware.rs).
    OpenApiRouter::new()
        .route("/v1/events/{type}", get(get_event).delete(cancel_event))
        .routes(routes!(list_user_events))
}
