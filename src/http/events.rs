//! `POST /v1/events`, `POST /v1/events/{type}` and `POST /v1/events/batch`.

use std::slice;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::batch::{parse_batch, parse_cloud_event_batch};
use super::docs::{
    BatchRequest, CloudEventBatch, CloudEventRequest, EventData, EventRequest, EventTypeName,
};
use super::error::{ApiError, Problem, set_rate_limit_headers};
use super::extract::{Caller, CloudEventHeaders, CorrelationHeader, JsonBody, MediaType};
use super::idempotency::IdempotencyHeader;
use super::responses::{
    BodyTooLarge, KeyInProgress, Malformed, NotJson, RateLimited, SlowBody, Unauthorized,
};
use crate::app::idempotency::IdempotencyKey;
use crate::app::publish::{BatchReceipt, Receipt};
use crate::app::rate_limit::Budget;
use crate::domain::cloudevent;
use crate::domain::event_id::{RequestKey, scope_ids};
use crate::domain::{EventType, FieldError, Principal, ValidEvent};

const CLOUDEVENT: &str = "application/cloudevents+json";
const CLOUDEVENT_BATCH: &str = "application/cloudevents-batch+json";

/// Publish one event.
///
/// The body is the spec's event: `type`, `data` and optional `metadata` (only
/// `correlationId` and `version` are read; the gateway fills the rest) and an optional
/// `id` of the client's own (UUID). Answered 202 once the event is safe: confirmed by the
/// broker, or held in the PostgreSQL outbox when the broker cannot take it.
///
/// The receipt's `id` is the event id (the AMQP `message_id`). A client's own `id` (or
/// CloudEvent `source` and `id`), or else an `Idempotency-Key`, gives the same event id
/// every time the same caller sends it, and never another caller's; the receipt repeats
/// the client's own `id` as `clientId`.
///
/// CloudEvents 1.0 are taken too: structured mode (`Content-Type:
/// application/cloudevents+json`, the body a CloudEvent), or binary mode (`ce-specversion`,
/// `ce-id`, `ce-source`, `ce-type` headers, the body its `data`). Missing attributes are a
/// 400 naming each one.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(content(
        (EventRequest = "application/json"),
        (CloudEventRequest = "application/cloudevents+json"),
    )),
    params(("X-Correlation-Id" = Option<String>, Header, description = "Correlates this event with others; echoed in the response")),
    responses(
        (status = 202, description = "The event is safe: `published` (the broker confirmed it) or `queued` (held in the PostgreSQL outbox while the broker cannot take it; the relay publishes it)", body = Receipt),
        KeyInProgress,
        Malformed,
        Unauthorized,
        (status = 403, description = "The token may not publish this event", body = Problem, content_type = "application/problem+json"),
        BodyTooLarge,
        SlowBody,
        RateLimited,
        NotJson,
        (status = 422, description = "Invalid event; every bad field is named", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "No queue is bound for the event's routing key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not taken (`unavailable`, `timeout`): nothing was or will be published, retry after Retry-After; or `outcome-unknown`: the events in `eventIds` may have been taken, retry them with the same ids or `Idempotency-Key`; or `keys-unavailable`: the identity provider's keys could not be fetched yet, retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn publish_event(
    State(state): State<AppState>,
    Caller(caller): Caller,
    CorrelationHeader(header): CorrelationHeader,
    IdempotencyHeader(idempotency): IdempotencyHeader,
    MediaType(media_type): MediaType,
    CloudEventHeaders(binary): CloudEventHeaders,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller
        .authorize_any_publish()
        .map_err(ApiError::forbidden)?;
    let (event, request) = if let Some(attributes) = binary {
        let request = json!({"attributes": attributes, "data": body});
        let event = cloudevent::parse_binary(attributes, body).map_err(ApiError::cloud_event)?;
        (event, Some(request))
    } else if media_type == CLOUDEVENT {
        let request = body.clone();
        let event = cloudevent::parse_structured(body, "").map_err(ApiError::cloud_event)?;
        (event, Some(request))
    } else {
        // Kept for the idempotency hash only when a key can exist.
        let request = (idempotency.is_some() || body.get("id").is_some()).then(|| body.clone());
        (
            ValidEvent::parse(body, "").map_err(ApiError::invalid)?,
            request,
        )
    };
    let correlation_id = header
        .or_else(|| event.correlation_id.clone())
        .unwrap_or_else(new_correlation_id);
    publish_one(state, caller, event, correlation_id, idempotency, request).await
}

/// Publish one event of the given type; the body is its `data`.
///
/// The spec's `publishEvent(type, data, {correlationId})`: the correlation id comes from
/// the `X-Correlation-Id` header.
#[utoipa::path(
    post,
    path = "/v1/events/{type}",
    tag = "events",
    params(
        ("type" = EventTypeName, Path, description = "The event type, which is also the routing key", example = "achievement.completed"),
        ("X-Correlation-Id" = Option<String>, Header, description = "Correlates this event with others; echoed in the response"),
    ),
    request_body(content = EventData, content_type = "application/json"),
    responses(
        (status = 202, description = "The event is safe: `published` (the broker confirmed it) or `queued` (held in the PostgreSQL outbox while the broker cannot take it; the relay publishes it)", body = Receipt),
        KeyInProgress,
        Malformed,
        Unauthorized,
        (status = 403, description = "The token may not publish this event", body = Problem, content_type = "application/problem+json"),
        SlowBody,
        BodyTooLarge,
        NotJson,
        (status = 422, description = "Unknown type or invalid data; every bad field is named", body = Problem, content_type = "application/problem+json"),
        RateLimited,
        (status = 503, description = "Not taken (`unavailable`, `timeout`): nothing was or will be published, retry after Retry-After; or `outcome-unknown`: the events in `eventIds` may have been taken, retry them with the same ids or `Idempotency-Key`; or `keys-unavailable`: the identity provider's keys could not be fetched yet, retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn publish_typed_event(
    State(state): State<AppState>,
    Path(event_type): Path<String>,
    Caller(caller): Caller,
    CorrelationHeader(header): CorrelationHeader,
    IdempotencyHeader(idempotency): IdempotencyHeader,
    JsonBody(data): JsonBody,
) -> Result<Response, ApiError> {
    caller
        .authorize_any_publish()
        .map_err(ApiError::forbidden)?;
    let event_type: EventType = event_type.parse().map_err(|unknown| {
        ApiError::invalid(vec![FieldError::new(
            "",
            format!(
                "{unknown} in the path; expected one of {}",
                crate::domain::envelope::type_list()
            ),
        )])
    })?;
    let body = json!({"type": event_type.as_str(), "data": data});
    let request = idempotency.is_some().then(|| body.clone());
    // The body is `data` itself, so pointers drop the `/data` prefix the parser adds.
    let event = ValidEvent::parse(body, "").map_err(|errors| {
        ApiError::invalid(
            errors
                .into_iter()
                .map(|e| {
                    FieldError::new(
                        e.pointer.strip_prefix("/data").unwrap_or(&e.pointer),
                        e.message,
                    )
                })
                .collect(),
        )
    })?;
    let correlation_id = header.unwrap_or_else(new_correlation_id);
    publish_one(state, caller, event, correlation_id, idempotency, request).await
}

/// Publishes one event the caller may publish (checked here) under the caller's id, once
/// per key: the `Idempotency-Key` (kept with `request`), else the client's own id.
async fn publish_one(
    state: AppState,
    caller: Principal,
    mut event: ValidEvent,
    correlation_id: String,
    idempotency: Option<String>,
    request: Option<Value>,
) -> Result<Response, ApiError> {
    caller
        .authorize_publish(event.event_type, event.data.user_id())
        .map_err(ApiError::forbidden)?;
    let request_key = idempotency.as_deref().map(RequestKey::Idempotency);
    scope_ids(&caller.subject, request_key, slice::from_mut(&mut event));
    let chosen = event.chosen_id().is_some();
    let key = IdempotencyKey::for_event(idempotency, chosen.then_some(event.id));
    let answer = state
        .app
        .publish_event(caller, event, correlation_id, key.zip(request))
        .await?;
    Ok(answer.into_response())
}

/// Publish up to 500 events at once.
///
/// Every event is validated and authorised first: one bad event rejects the whole batch,
/// naming it by index. The body is `{"events": [...]}`, or a JSON array of CloudEvents
/// with `Content-Type: application/cloudevents-batch+json`. A batch counts as its number of
/// events against the caller's rate limit. Then all are published concurrently and the answer lists each one's
/// receipt in request order.
#[utoipa::path(
    post,
    path = "/v1/events/batch",
    tag = "events",
    request_body(content(
        (BatchRequest = "application/json"),
        (CloudEventBatch = "application/cloudevents-batch+json"),
    )),
    params(("X-Correlation-Id" = Option<String>, Header, description = "Correlation id for every event that does not state its own")),
    responses(
        (status = 202, description = "Every event is safe: each `published` or `queued`", body = BatchReceipt),
        KeyInProgress,
        NotJson,
        Malformed,
        Unauthorized,
        (status = 403, description = "The token may not publish one of the events", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB, or more events than the caller's burst", body = Problem, content_type = "application/problem+json"),
        SlowBody,
        RateLimited,
        (status = 422, description = "Invalid batch; every bad field is named under /events/<index>", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Some events were not taken; `results` says which were published, queued, failed or unknown; or `outcome-unknown`: the events in `eventIds` may have been taken, retry them with the same ids or `Idempotency-Key`; or `keys-unavailable`: the identity provider's keys could not be fetched yet, retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn publish_batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    CorrelationHeader(header): CorrelationHeader,
    IdempotencyHeader(idempotency): IdempotencyHeader,
    MediaType(media_type): MediaType,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller
        .authorize_any_publish()
        .map_err(ApiError::forbidden)?;
    let request = idempotency.is_some().then(|| body.clone());
    let mut events = if media_type == CLOUDEVENT_BATCH {
        parse_cloud_event_batch(body)?
    } else {
        parse_batch(body)?
    };
    let budget = Budget::Subject(&caller.subject);
    let rate_limit = state
        .app
        .limiter
        .charge_events(budget, events.len(), 1)
        .await?;
    authorize_each(&caller, &events)?;
    let correlation_id = header.unwrap_or_else(new_correlation_id);
    let request_key = idempotency.as_deref().map(RequestKey::Idempotency);
    scope_ids(&caller.subject, request_key, &mut events);
    let key = IdempotencyKey::from_header(idempotency);
    let answer = state
        .app
        .publish_batch(caller, events, correlation_id, key.zip(request))
        .await?;
    let mut response = answer.into_response();
    if let Some(decision) = rate_limit {
        set_rate_limit_headers(response.headers_mut(), &decision);
    }
    Ok(response)
}

/// Every event of a batch must be the caller's to publish; each that is not is named.
fn authorize_each(caller: &Principal, events: &[ValidEvent]) -> Result<(), ApiError> {
    let forbidden: Vec<FieldError> = events
        .iter()
        .enumerate()
        .filter_map(|(index, event)| {
            caller
                .authorize_publish(event.event_type, event.data.user_id())
                .err()
                .map(|reason| FieldError::new(format!("/events/{index}"), reason.0))
        })
        .collect();
    if forbidden.is_empty() {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        detail: format!(
            "the token may not publish {} of the events",
            forbidden.len()
        ),
        errors: forbidden,
    })
}

pub(super) fn new_correlation_id() -> String {
    Uuid::new_v4().to_string()
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish_event))
        .routes(routes!(publish_batch))
        .routes(routes!(publish_typed_event))
}
