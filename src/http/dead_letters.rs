//! Operators' view of dead letters: list them with their errors, replay them.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, Problem};
use super::extract::Caller;
use super::paging::{page, readable};
use crate::bus::OutgoingMessage;
use crate::domain::envelope::rfc3339_millis;
use crate::domain::{EventType, FieldError};
use crate::ingest::IngestError;
use crate::store::{DeadLetter, DeadLetterFilter, PageCursor};

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
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The caller's rate limit is spent; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_dead_letters(
    State(state): State<AppState>,
    Caller(caller): Caller,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    caller.authorize_admin().map_err(ApiError::forbidden)?;
    let query = readable(query)?;
    let mut errors = Vec::new();
    let (limit, cursor) = page(query.limit, query.cursor.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let limit = limit as usize;
    let filter = DeadLetterFilter {
        routing_key: query.routing_key,
        replayed: query.replayed,
        before: cursor.and_then(|c| c.position()),
    };
    let mut letters = state.store.dead_letters(filter, limit as i64 + 1).await?;
    let next_cursor = (letters.len() > limit)
        .then(|| {
            letters
                .get(limit - 1)
                .map(|l| PageCursor::after(l.failed_at, l.id).encode())
        })
        .flatten();
    letters.truncate(limit);
    Ok(Json(DeadLetterList {
        dead_letters: letters.into_iter().map(DeadLetterOut::from).collect(),
        next_cursor,
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
        (status = 202, description = "The broker confirmed the replayed event", body = Replayed),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The caller's rate limit is spent; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already replayed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Its routing key is not an event type, so it cannot be replayed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker or the database is unavailable; not replayed", body = Problem, content_type = "application/problem+json"),
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
    let letter = state
        .store
        .dead_letter(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let event_type: EventType = letter.routing_key.parse().map_err(|error| {
        ApiError::invalid(vec![FieldError::new(
            "/routingKey",
            format!("{error}: cannot replay"),
        )])
    })?;
    if !state.store.claim_replay(id).await? {
        return Err(ApiError::Conflict(
            "this dead letter was already replayed".into(),
        ));
    }
    let body: Value = serde_json::from_slice(&letter.body).unwrap_or(Value::Null);
    let message = OutgoingMessage {
        message_id: letter
            .event_id
            .as_deref()
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(Uuid::now_v7),
        routing_key: event_type.as_str(),
        correlation_id: body["metadata"]["correlationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        timestamp_secs: OffsetDateTime::now_utc().unix_timestamp().unsigned_abs(),
        body: letter.body,
    };
    // Claimed: settle it even if the client goes away, or it would stay marked replayed
    // without having been published.
    let (publisher, store) = (state.publisher.clone(), state.store.clone());
    let settled = tokio::spawn(async move {
        match publisher.publish_confirmed(message).await {
            Ok(()) => Ok(()),
            Err(error) => {
                store.unclaim_replay(id).await?;
                Err(ApiError::from(IngestError::Publish(error)))
            }
        }
    });
    settled
        .await
        .map_err(|error| ApiError::Internal(error.into()))??;
    Ok((
        StatusCode::ACCEPTED,
        Json(Replayed {
            id,
            status: "replayed",
        }),
    ))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dead_letters))
        .routes(routes!(replay_dead_letter))
}
