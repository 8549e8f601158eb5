//! What each error says: its status, problem type, title and detail.

use axum::http::StatusCode;

use super::{ApiError, Problem, retry_after_secs};
use crate::app::ports::PublishError;
use crate::app::publish::NotTaken;

impl ApiError {
    /// The problem document this error is answered with.
    pub fn problem(&self) -> Problem {
        let (status, kind, title) = self.parts();
        let (errors, results) = match self {
            ApiError::Invalid { errors, .. }
            | ApiError::Forbidden { errors, .. }
            | ApiError::MissingAttributes(errors) => (errors.clone(), None),
            ApiError::NotTaken { results, .. } => (Vec::new(), results.clone()),
            _ => (Vec::new(), None),
        };
        let event_ids = match self {
            ApiError::NotTaken {
                source: NotTaken::OutcomeUnknown { ids, .. },
                ..
            } => ids.clone(),
            _ => Vec::new(),
        };
        Problem {
            problem_type: format!("urn:problem:event-gateway:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            errors,
            results,
            event_ids,
        }
    }

    /// The status, the problem type (after `urn:problem:event-gateway:`) and the title.
    pub(super) fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        use StatusCode as S;
        match self {
            NotTaken { source, .. } => not_taken_parts(source),
            StoreUnavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "The database is unavailable",
            ),
            ReplayGuardUnavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "replay-guard-unavailable",
                "Webhook replay protection is unavailable",
            ),
            Timeout => (
                S::SERVICE_UNAVAILABLE,
                "timeout",
                "The request took too long",
            ),
            KeysUnavailable => (
                S::SERVICE_UNAVAILABLE,
                "keys-unavailable",
                "The identity provider's keys are unavailable",
            ),
            Internal(_) => (
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
            Conflict(_) => (
                S::CONFLICT,
                "idempotency-in-progress",
                "A request with this Idempotency-Key is in progress",
            ),
            NotCancellable(_) => (
                S::CONFLICT,
                "not-cancellable",
                "The event can no longer be cancelled",
            ),
            _ => self.client_parts(),
        }
    }

    /// The other 4xx answers.
    fn client_parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        use StatusCode as S;
        match self {
            BadRequest { title, .. } => (S::BAD_REQUEST, "bad-request", title),
            Unauthorized(_) => (S::UNAUTHORIZED, "unauthorized", "Authentication required"),
            Forbidden { .. } => (S::FORBIDDEN, "forbidden", "Not allowed"),
            NotFound => (S::NOT_FOUND, "not-found", "Not found"),
            MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            PayloadTooLarge(_) => (
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Request body too large",
            ),
            UnsupportedMediaType(_) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Invalid { .. } => (
                S::UNPROCESSABLE_ENTITY,
                "validation",
                "The request is invalid",
            ),
            HeadTooLarge(_) => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "head-too-large",
                "Request headers too large",
            ),
            BodyTimeout(_) => (
                S::REQUEST_TIMEOUT,
                "body-timeout",
                "The request body arrived too slowly",
            ),
            RateLimited(_) => (S::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            MissingAttributes(_) => (
                S::BAD_REQUEST,
                "cloudevent-attributes",
                "Required CloudEvents attributes are missing",
            ),
            WebhookRefused(_) => (
                S::UNAUTHORIZED,
                "webhook-signature",
                "Webhook signature not verified",
            ),
            // The server errors, answered by `parts`.
            _ => (
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    /// The problem's `detail`: what went wrong and what to do, never an internal cause.
    pub(super) fn detail(&self) -> String {
        match self {
            ApiError::BadRequest { detail, .. }
            | ApiError::Unauthorized(detail)
            | ApiError::Forbidden { detail, .. }
            | ApiError::PayloadTooLarge(detail)
            | ApiError::UnsupportedMediaType(detail)
            | ApiError::Invalid { detail, .. } => detail.clone(),
            ApiError::NotFound => "no such resource; the API is described at /openapi.json".into(),
            ApiError::MethodNotAllowed => "this resource does not take that method".into(),
            ApiError::NotTaken { source, results } => not_taken_detail(source, results.is_some()),
            ApiError::StoreUnavailable(_) => "the database did not answer; retry later".into(),
            ApiError::ReplayGuardUnavailable(_) => {
                "webhook ids are kept in Redis, which did not answer; nothing was published, retry later"
                    .into()
            }
            ApiError::Conflict(detail) | ApiError::NotCancellable(detail) => detail.clone(),
            ApiError::KeysUnavailable => {
                "the identity provider's keys (JWT_JWKS_URL) could not be fetched yet, so no token \
                 can be verified; nothing was done, retry after Retry-After"
                    .into()
            }
            ApiError::Timeout => {
                "the gateway could not answer within REQUEST_TIMEOUT; retry with the same event id"
                    .into()
            }
            ApiError::HeadTooLarge(max) => {
                format!("the request line and headers must fit in {max} bytes (MAX_HEADER_BYTES)")
            }
            ApiError::BodyTimeout(limit) => format!(
                "the whole body must arrive within {} (BODY_READ_TIMEOUT)",
                humantime::format_duration(*limit)
            ),
            ApiError::RateLimited(decision) => format!(
                "this caller's budget of {} events is spent; retry after {} s",
                decision.limit,
                retry_after_secs(decision)
            ),
            ApiError::MissingAttributes(_) => {
                "a CloudEvent lacks specversion, id, source or type; see errors".into()
            }
            ApiError::WebhookRefused(rejection) => {
                format!("{rejection}; sign as Standard Webhooks describe (see the README)")
            }
            ApiError::Internal(_) => {
                "the gateway failed; the x-request-id header helps find out why".into()
            }
        }
    }
}

/// What an answer for events not taken says; `batch` when it lists each event's result.
fn not_taken_detail(source: &NotTaken, batch: bool) -> String {
    match source {
        NotTaken::OutcomeUnknown { why, .. } => format!(
            "{why}: the events in eventIds may or may not be published; retry them with the same \
             Idempotency-Key or event ids, which publishes at most one more copy with the same ids"
        ),
        source if batch => format!(
            "{source}; `results` says which events were published or queued (they are safe: \
             do not resend them) and which were not taken"
        ),
        NotTaken::Publish(PublishError::Unroutable { routing_key }) => {
            format!("no queue is bound for routing key {routing_key}; the event was not accepted")
        }
        NotTaken::Cancelled => format!("{source}; send it with a new id to schedule it again"),
        source => format!("{source}; the event was not accepted, retry later"),
    }
}

/// Why an event was not taken, as a status, a problem type and a title.
fn not_taken_parts(source: &NotTaken) -> (StatusCode, &'static str, &'static str) {
    match source {
        NotTaken::Publish(PublishError::Unroutable { .. }) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "unroutable",
            "Event could not be routed to any queue",
        ),
        NotTaken::Publish(PublishError::NotConfirmed | PublishError::Encode(_)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "not-confirmed",
            "Event delivery could not be confirmed",
        ),
        NotTaken::Publish(_) | NotTaken::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "The event could not be made safe now; retry later",
        ),
        NotTaken::Refused(_) | NotTaken::Invalid(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "The event's content was refused",
        ),
        NotTaken::TooLate => (
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "The request took too long",
        ),
        NotTaken::Cancelled => (
            StatusCode::CONFLICT,
            "cancelled",
            "An event with this id was cancelled",
        ),
        NotTaken::OutcomeUnknown { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome-unknown",
            "Whether the events were taken is unknown",
        ),
    }
}
