//! The HTTP face of idempotency (the protocol is `app::idempotency`): the
//! `Idempotency-Key` header, and the 202 every retry gets back with
//! `Idempotent-Replayed: true`.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::CORRELATION_HEADER;
use crate::app::idempotency::Answer;

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const REPLAYED_HEADER: &str = "idempotent-replayed";
const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header, when sent.
pub struct IdempotencyHeader(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_HEADER) else {
            return Ok(IdempotencyHeader(None));
        };
        match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => {
                Ok(IdempotencyHeader(Some(key.to_owned())))
            }
            _ => Err(ApiError::BadRequest {
                title: "Invalid Idempotency-Key header",
                detail: format!(
                    "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                ),
            }),
        }
    }
}

/// An accepted request's answer: 202 with its body, the correlation id, and whether it
/// is a replay of the first.
impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::ACCEPTED, Json(self.accepted.body)).into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&self.accepted.correlation_id) {
            headers.insert(HeaderName::from_static(CORRELATION_HEADER), value);
        }
        if self.replayed {
            headers.insert(
                HeaderName::from_static(REPLAYED_HEADER),
                HeaderValue::from_static("true"),
            );
        }
        response
    }
}
