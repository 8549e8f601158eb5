//! Extractors that turn a request into typed input or a precise problem.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::domain::Principal;
use crate::domain::cloudevent::is_json_media_type;
use crate::domain::data::check_id;

pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// A JSON request body, parsed but not yet validated. Malformed JSON is a 400 with its
/// position, a body over the limit a 413, another content type a 415.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json_media_type(content_type) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected Content-Type application/json, got '{content_type}'"
            )));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(format!(
                        "the body exceeds {} bytes",
                        super::MAX_BODY_BYTES
                    ))
                } else {
                    ApiError::BadRequest {
                        title: "Unreadable request body",
                        detail: rejection.body_text(),
                    }
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| ApiError::BadRequest {
                title: "Malformed JSON",
                detail: format!("{error} (line {}, column {})", error.line(), error.column()),
            })
    }
}

/// The caller, authenticated by a bearer token; anything else is a 401.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::Unauthorized("missing Authorization: Bearer <token>".into())
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into())
            })?;
        state
            .verifier
            .verify(token.trim())
            .map(Caller)
            .map_err(|error| ApiError::Unauthorized(format!("invalid token: {error}")))
    }
}

/// The `X-Correlation-Id` header, when the client sent one.
pub struct CorrelationHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for CorrelationHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(CORRELATION_HEADER) else {
            return Ok(CorrelationHeader(None));
        };
        let value = value.to_str().unwrap_or_default();
        check_id(&Value::from(value)).map_err(|message| ApiError::BadRequest {
            title: "Invalid X-Correlation-Id header",
            detail: format!("X-Correlation-Id {message}"),
        })?;
        Ok(CorrelationHeader(Some(value.to_owned())))
    }
}
