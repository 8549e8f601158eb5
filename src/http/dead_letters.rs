//! Operators' view of dead letters: list them with their errors, replay them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::{Caller, QueryParams};
use super::paging::page;
use super::responses::{DatabaseDown, RateLimited, Unauthorized, UnreadableQuery};
use crate::app::publish::ReceiptStatus;
use crate::app::records::{DeadLetter, DeadLetterFilter};
use crate::domain::envelope::rfc3339_millis;

/// A message the consumers gave up on.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterOut {
    pub id: Uuid,
    /// The AMQP `message_id`: the event id.
    pub event_id: Option<String>,
    /// Where it was first published; a replay publishes it there again.
    #[schema(example = "achievement.completed")]
    pub routing_key: String,
    pub queue: String,
    pub attempts: i32,
    pub last_error: String,
    pub failed_at: String,
    pub replayed_at: Option<String>,
    /// The message body: the event as JSON, or the raw text when it was not JSON.
    #[schema(value_type = Object)]
    pub event: Value,
}

impl From<DeadLetter> for DeadLetterOut {
    fn from(letter: DeadLetter) -> Self {
        let event = serde_json::from_slice(&letter.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&letter.body).into_owned()));
        DeadLetterOut {
            id: letter.id,
            event_id: letter.event_id,
            routing_key: letter.routing_key,
            queue: letter.queue,
            attempts: letter.attempts,
            last_error: letter.last_error,
            failed_at: rfc3339_millis(letter.failed_at),
            replayed_at: letter.replayed_at.map(rfc3339_millis),
            event,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    pub id: Uuid,
    /// `replayed` (the broker confirmed it), or `queued` (held in the outbox, published by
    /// the relay: the broker is unreachable, or the outbox still owes it earlier events).
    #[schema(example = "replayed")]
    pub status: &'static str,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct DeadLetterQuery {
    /// Only dead letters first published with this routing key.
    routing_key: Option<String>,
    /// `true`: only replayed ones; `false`: only those not replayed yet.
    replayed: Option<bool>,
    /// Page size, 1 to 100 (default 20).
    limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// Dead letters, newest first, with the error that sent each there.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "dead letters",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLetterList),
        UnreadableQuery,
        Unauthorized,
        RateLimited,
        (status = 403, description = "The token lacks the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        DatabaseDown,
    ),
    security(("bearer" = []))
)]
async fn list_dead_letters(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<QueryParams<DeadLetterQuery>, ApiError>,
) -> Result<Json<DeadLetterList>, ApiError> {
    caller.authorize_admin().map_err(ApiError::forbidden)?;
    let QueryParams(query) = query?;
    let mut errors = Vec::new();
    let (limit, cursor) = page(query.limit, query.cursor.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let filter = DeadLetterFilter {
        routing_key: query.routing_key,
        replayed: query.replayed,
        before: cursor.and_then(|c| c.position()),
    };
    let (letters, next) = state.app.replay.list(filter, limit as usize).await?;
    Ok(Json(DeadLetterList {
        dead_letters: letters.into_iter().map(DeadLetterOut::from).collect(),
        next_cursor: next.map(|cursor| cursor.encode()),
    }))
}

/// Publish a dead letter again to its original routing key. Replaying it twice publishes
/// it once: the second replay is a 409.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{id}/replay",
    tag = "dead letters",
    params(("id" = Uuid, Path, description = "The dead letter's id")),
    responses(
        (status = 202, description = "The broker confirmed the replayed event, or it is held in the outbox for the relay", body = Replayed),
        Unauthorized,
        RateLimited,
        (status = 403, description = "The token lacks the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already replayed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Its routing key is not an event type, so it cannot be replayed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable; not replayed; or `keys-unavailable`: the identity provider's keys could not be fetched yet, retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn replay_dead_letter(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    caller.authorize_admin().map_err(ApiError::forbidden)?;
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let status = match state.app.replay.replay(id).await? {
        ReceiptStatus::Queued => "queued",
        _ => "replayed",
    };
    Ok((StatusCode::ACCEPTED, Json(Replayed { id, status })))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letter))
}
