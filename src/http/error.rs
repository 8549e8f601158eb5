//! One error type with two faces: client errors become RFC 9457 problem documents that
//! name every bad field; internal errors are logged with their cause chain and answered
//! as an opaque 500.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::{error, warn};
use utoipa::ToSchema;

use crate::app::idempotency::OnceError;
use crate::app::ports::{CacheError, LedgerError, PublishError, StoreError};
use crate::app::publish::{BatchNotTaken, NotTaken, Receipt};
use crate::app::rate_limit::{ChargeRefused, Decision};
use crate::app::replay::ReplayError;
use crate::app::webhooks::WebhookRefused;
use crate::domain::cloudevent::CloudEventError;
use crate::domain::webhook::Rejection;
use crate::domain::{FieldError, Forbidden};
use crate::runtime::detached::Panicked;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// How long a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u64 = 5;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    #[schema(example = "urn:problem:event-gateway:validation")]
    pub problem_type: String,
    #[schema(example = "The event is invalid")]
    pub title: String,
    #[schema(example = 422)]
    pub status: u16,
    #[schema(example = "2 fields are invalid")]
    pub detail: String,
    /// Every bad field, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For a batch that was not wholly taken: what happened to each event, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<Receipt>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{title}: {detail}")]
    BadRequest { title: &'static str, detail: String },
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden: {detail}")]
    Forbidden {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("invalid: {detail}")]
    Invalid {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("the event was not taken")]
    NotTaken {
        #[source]
        source: NotTaken,
        results: Option<Vec<Receipt>>,
    },
    #[error("the database is unavailable")]
    StoreUnavailable(#[from] StoreError),
    #[error("webhook replay protection is unavailable")]
    ReplayGuardUnavailable(#[source] CacheError),
    #[error("idempotency key conflict: {0}")]
    Conflict(String),
    #[error("the request took too long")]
    Timeout,
    #[error("the request head is too large")]
    HeadTooLarge(usize),
    #[error("the request body arrived too slowly")]
    BodyTimeout(std::time::Duration),
    #[error("rate limited")]
    RateLimited(Decision),
    #[error("malformed CloudEvent")]
    MissingAttributes(Vec<FieldError>),
    #[error("webhook refused: {0}")]
    WebhookRefused(Rejection),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// 422 naming every bad field.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.len() {
            1 => format!("{} {}", errors[0].pointer, errors[0].message),
            n => format!("{n} fields are invalid; see errors"),
        };
        ApiError::Invalid { detail, errors }
    }

    /// 400 for a CloudEvent without its required attributes, else 422.
    pub fn cloud_event(error: CloudEventError) -> Self {
        match error {
            CloudEventError::Missing(errors) => ApiError::MissingAttributes(errors),
            CloudEventError::Invalid(errors) => ApiError::invalid(errors),
        }
    }

    pub fn forbidden(forbidden: Forbidden) -> Self {
        ApiError::Forbidden {
            detail: forbidden.0,
            errors: Vec::new(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
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
            Conflict(_) => (
                S::CONFLICT,
                "idempotency-in-progress",
                "A request with this Idempotency-Key is in progress",
            ),
            Timeout => (
                S::SERVICE_UNAVAILABLE,
                "timeout",
                "The request took too long",
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
            Internal(_) => (
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::BadRequest { detail, .. }
            | ApiError::Unauthorized(detail)
            | ApiError::Forbidden { detail, .. }
            | ApiError::PayloadTooLarge(detail)
            | ApiError::UnsupportedMediaType(detail)
            | ApiError::Invalid { detail, .. } => detail.clone(),
            ApiError::NotFound => "no such resource; the API is described at /openapi.json".into(),
            ApiError::MethodNotAllowed => "this resource does not take that method".into(),
            ApiError::NotTaken {
                source: NotTaken::Publish(PublishError::Unroutable { routing_key }),
                ..
            } => format!(
                "no queue is bound for routing key {routing_key}; the event was not accepted"
            ),
            ApiError::NotTaken {
                source: NotTaken::Duplicate,
                ..
            } => "an event with this id was already accepted with another request".into(),
            ApiError::NotTaken { source, .. } => {
                format!("{source}; the event was not accepted, retry later")
            }
            ApiError::StoreUnavailable(_) => "the database did not answer; retry later".into(),
            ApiError::ReplayGuardUnavailable(_) => {
                "webhook ids are kept in Redis, which did not answer; nothing was published, retry later"
                    .into()
            }
            ApiError::Conflict(detail) => detail.clone(),
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

/// An error and its sources on one line, `outer: inner: innermost`.
fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain = format!("{chain}: {cause}");
        source = cause.source();
    }
    chain
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
        NotTaken::Duplicate => (StatusCode::CONFLICT, "duplicate", "Event already accepted"),
    }
}

impl From<NotTaken> for ApiError {
    fn from(source: NotTaken) -> Self {
        ApiError::NotTaken {
            source,
            results: None,
        }
    }
}

impl From<BatchNotTaken> for ApiError {
    fn from(batch: BatchNotTaken) -> Self {
        ApiError::NotTaken {
            source: batch.first,
            results: Some(batch.results),
        }
    }
}

impl From<ChargeRefused> for ApiError {
    fn from(refused: ChargeRefused) -> Self {
        match refused {
            ChargeRefused::OverBurst { .. } => {
                ApiError::PayloadTooLarge(format!("{refused} (RATE_LIMIT_BURST); split the batch"))
            }
            ChargeRefused::Limited(decision) => ApiError::RateLimited(decision),
        }
    }
}

impl From<WebhookRefused> for ApiError {
    fn from(refused: WebhookRefused) -> Self {
        match refused {
            WebhookRefused::Charge(refused) => refused.into(),
            WebhookRefused::NotTaken(source) => source.into(),
            WebhookRefused::Batch(batch) => batch.into(),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Store(error) => ApiError::StoreUnavailable(error),
            LedgerError::Cache(error) => ApiError::ReplayGuardUnavailable(error),
        }
    }
}

impl From<Panicked> for ApiError {
    fn from(panicked: Panicked) -> Self {
        ApiError::Internal(panicked.into())
    }
}

impl<E: Into<ApiError>> From<OnceError<E>> for ApiError {
    fn from(error: OnceError<E>) -> Self {
        match error {
            OnceError::Failed(error) => error.into(),
            OnceError::Mismatch { pointer } => ApiError::invalid(vec![FieldError::new(
                pointer,
                "was already used with a different request",
            )]),
            OnceError::InProgress => ApiError::Conflict(
                "the first request with this key has not finished yet; retry shortly".into(),
            ),
            OnceError::Ledger(error) => error.into(),
            OnceError::Panicked(panicked) => panicked.into(),
        }
    }
}

impl From<ReplayError> for ApiError {
    fn from(error: ReplayError) -> Self {
        match error {
            ReplayError::NotFound => ApiError::NotFound,
            ReplayError::NotAnEventType(reason) => ApiError::invalid(vec![FieldError::new(
                "/routingKey",
                format!("{reason}: cannot replay"),
            )]),
            ReplayError::AlreadyReplayed => {
                ApiError::Conflict("this dead letter was already replayed".into())
            }
            ReplayError::Store(error) => ApiError::StoreUnavailable(error),
            ReplayError::NotTaken(source) => source.into(),
            ReplayError::Panicked(panicked) => panicked.into(),
        }
    }
}

/// Whole seconds to wait, rounded up so a client that waits exactly this long gets in.
pub fn retry_after_secs(decision: &Decision) -> u64 {
    decision.retry_after.as_secs() + u64::from(decision.retry_after.subsec_nanos() > 0)
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds), as in the
/// IETF RateLimit header fields draft; `Retry-After` too when refused.
pub fn set_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    let reset = decision.reset.as_secs() + u64::from(decision.reset.subsec_nanos() > 0);
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
    if !decision.allowed {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs(decision)),
        );
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        if status.is_server_error() {
            // `{:#}` prints anyhow's whole cause chain on one line.
            match &self {
                ApiError::Internal(cause) => error!(error = format!("{cause:#}"), "request failed"),
                other => warn!(error = cause_chain(other), "request not served"),
            }
        }
        let detail = self.detail();
        let rate_limit = match &self {
            ApiError::RateLimited(decision) => Some(*decision),
            _ => None,
        };
        let (errors, results) = match self {
            ApiError::Invalid { errors, .. }
            | ApiError::Forbidden { errors, .. }
            | ApiError::MissingAttributes(errors) => (errors, None),
            ApiError::NotTaken { results, .. } => (Vec::new(), results),
            _ => (Vec::new(), None),
        };
        let problem = Problem {
            problem_type: format!("urn:problem:event-gateway:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
            results,
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let Some(decision) = rate_limit {
            set_rate_limit_headers(headers, &decision);
        }
        if status == StatusCode::UNAUTHORIZED && kind == "unauthorized" {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}
