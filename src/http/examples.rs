//! Examples for the OpenAPI document, so that Swagger UI's first click works and every
//! answer shows itself: request bodies made from the field table (valid, and without an
//! `id`: the gateway makes one, so nobody publishes the same `message_id`), both kinds of
//! 202, and each problem as the gateway really renders it.

use std::time::Duration;

use serde_json::{Map, Value, json};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr};

use super::error::ApiError;
use crate::app::ports::{PublishError, StoreError};
use crate::app::publish::{NotTaken, ReceiptStatus};
use crate::app::rate_limit::Decision;
use crate::domain::data::{FieldKind, FieldSpec, is_required};
use crate::domain::{EventType, Forbidden, ValidEvent};

/// The event every example publishes: critical by default, so its receipt shows
/// `persisted`.
const EXAMPLE_TYPE: EventType = EventType::AchievementCompleted;

/// A valid `data` for `event_type`: every field of its family, each with a value of its
/// kind.
pub fn example_data(event_type: EventType) -> Value {
    let fields: Map<String, Value> = event_type
        .family()
        .fields()
        .iter()
        .filter(|spec| is_required(event_type, spec) || spec.kind != FieldKind::Any)
        .map(|spec| (spec.name.to_owned(), example_value(spec)))
        .collect();
    Value::Object(fields)
}

fn example_value(spec: &FieldSpec) -> Value {
    match spec.kind {
        FieldKind::Id => json!(format!("{}-123", spec.name.trim_end_matches("Id"))),
        FieldKind::Text => json!("Example"),
        FieldKind::Points => json!(100),
        FieldKind::Progress => json!(50),
        FieldKind::Number => json!(1.5),
        FieldKind::Any => json!("any JSON value"),
        FieldKind::Timestamp => json!("2026-11-26T10:00:00Z"),
        FieldKind::Metadata => json!({"level": 3}),
    }
}

/// A whole event for `POST /v1/events`.
pub fn example_event(event_type: EventType) -> Value {
    json!({"type": event_type.as_str(), "data": example_data(event_type)})
}

/// Puts the examples into the document.
pub fn add_examples(document: &mut OpenApi) {
    for (path, item) in document.paths.paths.iter_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            request_example(path, operation);
            accepted_examples(operation);
            problem_examples(path, operation);
        }
    }
}

/// A `deliverAt` for the scheduling examples: a time must be within `SCHEDULE_MAX_AHEAD`
/// of the call, so a fixed one is only a shape to edit.
const EXAMPLE_DELIVER_AT: &str = "2026-12-24T09:00:00Z";

/// The request bodies, named so that the one valid as it stands sorts first (Swagger UI's
/// first click, the document keeps them in name order); the scheduled ones show
/// `deliverAt` (a reward that expires, sent with the reward).
fn request_example(path: &str, operation: &mut Operation) {
    let expiry = || {
        let mut expired = example_event(EventType::RewardExpired);
        expired["deliverAt"] = json!(EXAMPLE_DELIVER_AT);
        expired
    };
    let examples = match path {
        "/v1/events" => vec![
            ("published now", example_event(EXAMPLE_TYPE)),
            ("scheduled (edit deliverAt)", expiry()),
        ],
        "/v1/events/{type}" => vec![("data", example_data(EXAMPLE_TYPE))],
        "/v1/events/batch" => vec![
            (
                "both published now",
                json!({"events": [
                    example_event(EXAMPLE_TYPE),
                    example_event(EventType::QuestStarted),
                ]}),
            ),
            (
                "scheduled: a reward and its expiry (edit deliverAt)",
                json!({"events": [example_event(EventType::RewardCreated), expiry()]}),
            ),
        ],
        _ => return,
    };
    let body = match operation.request_body.as_mut() {
        Some(RefOr::T(body)) => body,
        _ => return,
    };
    if let Some(RefOr::T(json)) = body.content.get_mut("application/json") {
        for (name, value) in examples {
            let example = ExampleBuilder::new().value(Some(value)).build();
            json.examples.insert(name.into(), example.into());
        }
    }
}

/// A single event's 202 is `published`, or `queued` when the broker cannot take it now.
fn accepted_examples(operation: &mut Operation) {
    let Some(RefOr::T(accepted)) = operation.responses.responses.get_mut("202") else {
        return;
    };
    let Some(RefOr::T(json)) = accepted.content.get_mut("application/json") else {
        return;
    };
    let single =
        matches!(&json.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Receipt"));
    if !single {
        return;
    }
    let receipt = |status: ReceiptStatus| {
        let mut value = json!({
            "id": "019a8c3e-5b1f-7c2d-9e4a-3f6b8d0c1a2e",
            "type": EXAMPLE_TYPE.as_str(),
            "correlationId": "correlation-789",
            "status": status,
            "persisted": true,
        });
        if status == ReceiptStatus::Scheduled {
            value["type"] = json!(EventType::RewardExpired.as_str());
            value["deliverAt"] = json!("2026-12-24T09:00:00.000Z");
        }
        ExampleBuilder::new().value(Some(value)).build()
    };
    for (name, status) in [
        ("published", ReceiptStatus::Published),
        ("queued", ReceiptStatus::Queued),
        ("scheduled", ReceiptStatus::Scheduled),
    ] {
        json.examples.insert(name.into(), receipt(status).into());
    }
}

/// Every problem response shows the problem its status stands for on this operation.
fn problem_examples(path: &str, operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let Some(RefOr::T(content)) = response.content.get_mut(super::error::PROBLEM_JSON) else {
            continue;
        };
        let Some(error) = status
            .parse()
            .ok()
            .and_then(|status| example_error(path, status))
        else {
            continue;
        };
        content.example = serde_json::to_value(error.problem()).ok();
    }
}

/// What an operation answers with a status, as the gateway renders it.
fn example_error(path: &str, status: u16) -> Option<ApiError> {
    let reads_the_database = path.starts_with("/v1/dead-letters")
        || path.starts_with("/v1/users/")
        || path == "/v1/events/{id}";
    Some(match status {
        400 if path.starts_with("/v1/dead-letters") || path.starts_with("/v1/users/") => {
            ApiError::BadRequest {
                title: "Unreadable query string",
                detail: "Failed to deserialize query string: limit: invalid digit found in string"
                    .into(),
            }
        }
        400 => match super::extract::parse_json(b"{") {
            Err(error) => error,
            Ok(_) => return None,
        },
        401 if path.starts_with("/v1/webhooks/") => ApiError::WebhookRefused(
            crate::domain::webhook::Rejection::MissingHeader("webhook-signature"),
        ),
        401 => ApiError::Unauthorized(super::error::MISSING_TOKEN.into()),
        403 => ApiError::forbidden(Forbidden("the token's scopes do not allow this".into())),
        404 => ApiError::NotFound,
        408 => ApiError::BodyTimeout(Duration::from_secs(5)),
        409 if path.starts_with("/v1/dead-letters") => {
            ApiError::Conflict("this dead letter was already replayed".into())
        }
        409 => ApiError::Conflict(
            "the first request with this key has not finished yet; retry shortly".into(),
        ),
        413 => {
            ApiError::PayloadTooLarge(format!("the body exceeds {} bytes", super::MAX_BODY_BYTES))
        }
        415 => ApiError::UnsupportedMediaType(
            "expected Content-Type application/json, got 'text/plain'".into(),
        ),
        422 => invalid_example(),
        429 => ApiError::RateLimited(Decision {
            allowed: false,
            limit: 2000,
            remaining: 0,
            reset: Duration::from_secs(2),
            retry_after: Duration::from_secs(1),
        }),
        500 => ApiError::from(NotTaken::Publish(PublishError::Unroutable {
            routing_key: EXAMPLE_TYPE.as_str().into(),
        })),
        503 if reads_the_database => ApiError::StoreUnavailable(StoreError::NotReady),
        503 => ApiError::from(NotTaken::Publish(PublishError::Unavailable(None))),
        _ => return None,
    })
}

/// The 422 a negative `points` gets, as the validator words it.
fn invalid_example() -> ApiError {
    let mut event = example_event(EXAMPLE_TYPE);
    event["data"]["points"] = json!(-5);
    match ValidEvent::parse(event, "") {
        Err(errors) => ApiError::invalid(errors),
        Ok(_) => ApiError::invalid(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_types_example_is_a_valid_event_without_an_id() {
        for event_type in EventType::ALL {
            let event = example_event(event_type);
            assert!(event.get("id").is_none());
            let parsed = ValidEvent::parse(event.clone(), "");
            assert!(parsed.is_ok(), "{event_type}: {parsed:?}");
        }
    }
}
