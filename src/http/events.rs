//! `POST /v1/events`, `POST /v1/events/{type}` and `POST /v1/events/batch`.

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::admission::charge_events;
use super::docs::{
    BatchRequest, CloudEventBatch, CloudEventRequest, EventData, EventRequest, EventTypeName,
};
use super::error::set_rate_limit_headers;
use super::error::{ApiError, Problem};
use super::extract::{Caller, CloudEventHeaders, CorrelationHeader, JsonBody, MediaType};
use super::idempotency::{Accepted, IdempotencyHeader, IdempotencyKey, Ledger, once};
use crate::domain::cloudevent::{self, CloudEventError};
use crate::domain::{EventType, FieldError, Principal, ValidEvent};
use crate::ingest::{IngestError, Receipt, ReceiptStatus, Submission};
use crate::rate_limit::Budget;

/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 500;

const CLOUDEVENT: &str = "application/cloudevents+json";
const CLOUDEVENT_BATCH: &str = "application/cloudevents-batch+json";

/// Every event of an accepted batch, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchReceipt {
    pub results: Vec<Receipt>,
}

/// Publish one event.
///
/// The body is the spec's event: `type`, `data` and optional `metadata` (only
/// `correlationId` and `version` are read; the gateway fills the rest) and an optional
/// client-chosen `id` (UUID). Answered 202 only after the broker confirmed the event.
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
        (status = 202, description = "The broker confirmed the event", body = Receipt),
        (status = 400, description = "Malformed JSON or header, or missing CloudEvents attributes", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token may not publish this event", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body arrived too slowly", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The caller's rate limit is spent; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid event; every bad field is named", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "No queue is bound for the event's routing key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not take the event; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
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
    caller
        .authorize_publish(event.event_type, event.data.user_id())
        .map_err(ApiError::forbidden)?;
    let key = IdempotencyKey::for_event(idempotency, event.id_given.then_some(event.id));
    let correlation_id = header
        .or_else(|| event.correlation_id.clone())
        .unwrap_or_else(new_correlation_id);
    publish_once(state, caller, event, correlation_id, key.zip(request)).await
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
        ("type" = EventTypeName, Path, description = "The event type, which is also the routing key"),
        ("X-Correlation-Id" = Option<String>, Header, description = "Correlates this event with others; echoed in the response"),
    ),
    request_body(content = EventData, content_type = "application/json"),
    responses(
        (status = 202, description = "The broker confirmed the event", body = Receipt),
        (status = 400, description = "Malformed JSON or header, or missing CloudEvents attributes", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token may not publish this event", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body arrived too slowly", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown type or invalid data; every bad field is named", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The caller's rate limit is spent; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not take the event", body = Problem, content_type = "application/problem+json"),
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
    caller
        .authorize_publish(event.event_type, event.data.user_id())
        .map_err(ApiError::forbidden)?;
    let correlation_id = header.unwrap_or_else(new_correlation_id);
    let key = IdempotencyKey::from_header(idempotency);
    publish_once(state, caller, event, correlation_id, key.zip(request)).await
}

/// Publishes one event, once per idempotency key (when there is one).
async fn publish_once(
    state: AppState,
    caller: Principal,
    event: ValidEvent,
    correlation_id: String,
    key: Option<(IdempotencyKey, Value)>,
) -> Result<Response, ApiError> {
    let subject = caller.subject.clone();
    let publish = Box::pin(publish_one(state.clone(), caller, event, correlation_id));
    once(&state, Ledger::Database, &subject, key, publish).await
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
        (status = 202, description = "The broker confirmed every event", body = BatchReceipt),
        (status = 400, description = "Malformed JSON or header, or missing CloudEvents attributes", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token may not publish one of the events", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB, or more events than the caller's burst", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body arrived too slowly", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The caller's rate limit is spent; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid batch; every bad field is named under /events/<index>", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Some events were not taken; `results` says which were published", body = Problem, content_type = "application/problem+json"),
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
    let events = if media_type == CLOUDEVENT_BATCH {
        parse_cloud_event_batch(body)?
    } else {
        parse_batch(body)?
    };
    let rate_limit =
        charge_events(&state, Budget::Subject(&caller.subject), events.len(), 1).await?;
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
    if !forbidden.is_empty() {
        return Err(ApiError::Forbidden {
            detail: format!(
                "the token may not publish {} of the events",
                forbidden.len()
            ),
            errors: forbidden,
        });
    }
    let request_correlation = header.unwrap_or_else(new_correlation_id);
    let subject = caller.subject.clone();
    let publish = Box::pin(publish_all(
        state.clone(),
        caller,
        events,
        request_correlation,
    ));
    let key = IdempotencyKey::from_header(idempotency);
    let mut response = once(
        &state,
        Ledger::Database,
        &subject,
        key.zip(request),
        publish,
    )
    .await?;
    if let Some(decision) = rate_limit {
        set_rate_limit_headers(response.headers_mut(), &decision);
    }
    Ok(response)
}

/// A `{"events": [...]}` body, every event validated and named by index.
pub(super) fn parse_batch(body: Value) -> Result<Vec<ValidEvent>, ApiError> {
    let items = batch_items(body)?;
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match ValidEvent::parse(item, &format!("/events/{index}")) {
            Ok(event) => events.push(event),
            Err(found) => errors.extend(found),
        }
    }
    errors.extend(repeated_ids(&events, "/events"));
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    Ok(events)
}

/// A CloudEvents batch: a JSON array of structured CloudEvents, named by index.
fn parse_cloud_event_batch(body: Value) -> Result<Vec<ValidEvent>, ApiError> {
    let items = match body {
        Value::Array(items) if (1..=MAX_BATCH_EVENTS).contains(&items.len()) => items,
        _ => {
            return Err(ApiError::invalid(vec![FieldError::new(
                "",
                format!("must be an array of 1 to {MAX_BATCH_EVENTS} CloudEvents"),
            )]));
        }
    };
    let mut events = Vec::with_capacity(items.len());
    let (mut missing, mut invalid) = (Vec::new(), Vec::new());
    for (index, item) in items.into_iter().enumerate() {
        match cloudevent::parse_structured(item, &format!("/{index}")) {
            Ok(event) => events.push(event),
            Err(CloudEventError::Missing(found)) => missing.extend(found),
            Err(CloudEventError::Invalid(found)) => invalid.extend(found),
        }
    }
    invalid.extend(repeated_ids(&events, ""));
    if !missing.is_empty() {
        // Malformed items make the batch a 400; the invalid ones are named too.
        missing.extend(invalid);
        return Err(ApiError::MissingAttributes(missing));
    }
    if !invalid.is_empty() {
        return Err(ApiError::invalid(invalid));
    }
    Ok(events)
}

/// The same event id twice in one batch would be one event published twice.
fn repeated_ids(events: &[ValidEvent], at: &str) -> Vec<FieldError> {
    events
        .iter()
        .enumerate()
        .filter(|(index, event)| {
            events[..*index]
                .iter()
                .any(|earlier| earlier.id == event.id)
        })
        .map(|(index, _)| {
            FieldError::new(format!("{at}/{index}/id"), "repeats an earlier event's id")
        })
        .collect()
}

/// The `events` array of a batch body, with its size checked.
fn batch_items(body: Value) -> Result<Vec<Value>, ApiError> {
    let Value::Object(mut object) = body else {
        return Err(ApiError::invalid(vec![FieldError::new(
            "",
            "must be an object with an `events` array",
        )]));
    };
    let unknown: Vec<FieldError> = object
        .keys()
        .filter(|name| name.as_str() != "events")
        .map(|name| {
            FieldError::new(
                crate::domain::problem::pointer_child("", name),
                "unknown field",
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::invalid(unknown));
    }
    match object.remove("events") {
        Some(Value::Array(items)) if (1..=MAX_BATCH_EVENTS).contains(&items.len()) => Ok(items),
        Some(Value::Array(_)) => Err(ApiError::invalid(vec![FieldError::new(
            "/events",
            format!("must hold 1 to {MAX_BATCH_EVENTS} events"),
        )])),
        _ => Err(ApiError::invalid(vec![FieldError::new(
            "/events",
            "must be an array of events",
        )])),
    }
}

/// 202 when every event was confirmed; otherwise the first failure's problem, listing what
/// happened to each event so the client can retry exactly the ones that failed.
fn batch_answer(
    correlation_id: &str,
    events: &[ValidEvent],
    outcomes: Vec<Result<Receipt, IngestError>>,
) -> Result<Accepted, ApiError> {
    let mut results = Vec::with_capacity(outcomes.len());
    let mut first_failure = None;
    for (event, outcome) in events.iter().zip(outcomes) {
        match outcome {
            Ok(receipt) => results.push(receipt),
            Err(error) => {
                results.push(Receipt {
                    id: event.id,
                    event_type: event.event_type.as_str().to_owned(),
                    correlation_id: event
                        .correlation_id
                        .clone()
                        .unwrap_or_else(|| correlation_id.to_owned()),
                    status: ReceiptStatus::Failed,
                    persisted: false,
                    error: Some(error.to_string()),
                });
                first_failure.get_or_insert(error);
            }
        }
    }
    match first_failure {
        None => Ok(Accepted {
            correlation_id: correlation_id.to_owned(),
            body: serde_json::to_value(BatchReceipt { results }).map_err(anyhow::Error::from)?,
        }),
        Some(source) => Err(ApiError::NotTaken {
            source,
            results: Some(results),
        }),
    }
}

pub(super) fn new_correlation_id() -> String {
    Uuid::new_v4().to_string()
}

pub(super) async fn publish_one(
    state: AppState,
    caller: Principal,
    event: ValidEvent,
    correlation_id: String,
) -> Result<Accepted, ApiError> {
    let receipt = state
        .ingest
        .publish(&caller, &event, &correlation_id)
        .await?;
    Ok(Accepted {
        correlation_id,
        body: json!(receipt),
    })
}

/// Publishes a batch in request order (so each user's events reach the bus in that
/// order), critical events committed together first.
pub(super) async fn publish_all(
    state: AppState,
    caller: Principal,
    events: Vec<ValidEvent>,
    request_correlation: String,
) -> Result<Accepted, ApiError> {
    let submissions = events
        .iter()
        .map(|event| Submission {
            correlation_id: event
                .correlation_id
                .clone()
                .unwrap_or_else(|| request_correlation.clone()),
            event: event.clone(),
        })
        .collect();
    let outcomes = state.ingest.publish_all(&caller, submissions).await;
    batch_answer(&request_correlation, &events, outcomes)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish_event))
        .routes(routes!(publish_batch))
        .routes(routes!(publish_typed_event))
}
