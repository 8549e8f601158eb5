//! One error type with two faces: client errors become RFC 9457 problem documents that
//! name every bad field; internal errors are logged with their cause chain and answered
//! as an opaque 500.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::{error, warn};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::ports::{CacheError, StoreError};
use crate::app::publish::{NotTaken, Receipt};
use crate::app::rate_limit::Decision;
use crate::domain::cloudevent::CloudEventError;
use crate::domain::webhook::Rejection;
use crate::domain::{FieldError, Forbidden};

mod from_app;
mod kinds;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The details of a 401 for a request that carries no bearer token (no `Authorization`
/// header, or another scheme): RFC 6750 §3.1 gives those a challenge without an error code.
pub const MISSING_TOKEN: &str = "missing Authorization: Bearer <token>";
pub const NOT_BEARER: &str = "the Authorization header must be 'Bearer <token>'";

/// How long a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u64 = 5;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    #[schema(example = "urn:problem:event-gateway:validation")]
    pub problem_type: String,
    #[schema(example = "The request is invalid")]
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
    /// For `outcome-unknown`: the events that may or may not have been taken; retry them
    /// with the same ids (or `Idempotency-Key`).
    #[serde(rename = "eventIds", skip_serializing_if = "Vec::is_empty")]
    pub event_ids: Vec<Uuid>,
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
    StoreUnavailable(#[source] StoreError),
    #[error("webhook replay protection is unavailable")]
    ReplayGuardUnavailable(#[source] CacheError),
    #[error("idempotency key conflict: {0}")]
    Conflict(String),
    /// A cancel of an event that was already released or published.
    #[error("not cancellable: {0}")]
    NotCancellable(String),
    #[error("the request took too long")]
    Timeout,
    #[error("the identity provider's keys could not be fetched yet")]
    KeysUnavailable,
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
            // An empty pointer is the whole body: the message alone.
            1 if errors[0].pointer.is_empty() => errors[0].message.clone(),
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

    /// The `WWW-Authenticate` challenge of a bearer-token 401: `error="invalid_token"` only
    /// when a token was sent and refused (RFC 6750 §3.1).
    fn challenge(&self) -> Option<HeaderValue> {
        match self {
            ApiError::Unauthorized(detail) if detail == MISSING_TOKEN || detail == NOT_BEARER => {
                Some(HeaderValue::from_static("Bearer"))
            }
            ApiError::Unauthorized(_) => {
                Some(HeaderValue::from_static("Bearer error=\"invalid_token\""))
            }
            _ => None,
        }
    }

    pub fn forbidden(forbidden: Forbidden) -> Self {
        ApiError::Forbidden {
            detail: forbidden.0,
            errors: Vec::new(),
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
        let (status, _, _) = self.parts();
        if status.is_server_error() {
            // `{:#}` prints anyhow's whole cause chain on one line.
            match &self {
                ApiError::Internal(cause) => error!(error = format!("{cause:#}"), "request failed"),
                other => warn!(error = cause_chain(other), "request not served"),
            }
        }
        let challenge = self.challenge();
        let rate_limit = match &self {
            ApiError::RateLimited(decision) => Some(*decision),
            _ => None,
        };
        let problem = self.problem();
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if let Some(decision) = rate_limit {
            set_rate_limit_headers(headers, &decision);
        }
        if let Some(challenge) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(error: ApiError) -> Option<HeaderValue> {
        error
            .into_response()
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .cloned()
    }

    #[test]
    fn only_a_refused_token_is_an_invalid_token() {
        for detail in [MISSING_TOKEN, NOT_BEARER] {
            let answer = challenge(ApiError::Unauthorized(detail.into()));
            assert_eq!(answer, Some(HeaderValue::from_static("Bearer")), "{detail}");
        }
        assert_eq!(
            challenge(ApiError::Unauthorized("the token has expired".into())),
            Some(HeaderValue::from_static("Bearer error=\"invalid_token\""))
        );
        assert_eq!(challenge(ApiError::NotFound), None);
    }

    #[test]
    fn a_problem_with_the_whole_body_has_no_leading_space() {
        let whole = ApiError::invalid(vec![FieldError::new("", "must be a JSON object")]);
        assert_eq!(whole.detail(), "must be a JSON object");
        let field = ApiError::invalid(vec![FieldError::new("/data/points", "must be a number")]);
        assert_eq!(field.detail(), "/data/points must be a number");
    }
}
