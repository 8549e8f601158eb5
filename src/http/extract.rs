//! Extractors that turn a request into typed input or a precise problem.

use axum::body::Bytes;
use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::AppState;
use super::admission::Authentication;
use super::error::{ApiError, MISSING_TOKEN};
use crate::domain::Principal;
use crate::domain::cloudevent::is_json_media_type;
use crate::domain::data::check_id;

pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// A JSON request body, parsed but not yet validated. Malformed JSON is a 400 with its
/// position, a body over the limit a 413, one that arrives too slowly a 408, another
/// content type a 415.
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
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
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The body's bytes, read within `BODY_READ_TIMEOUT` and the size limit.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.body_read_timeout;
        let read = tokio::time::timeout(limit, Bytes::from_request(request, state))
            .await
            .map_err(|_| ApiError::BodyTimeout(limit))?;
        read.map(RawBody).map_err(|rejection| {
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
        })
    }
}

/// Parses JSON; nesting beyond serde_json's limit of 128 levels is refused, not recursed.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        let position = format!("line {}, column {}", error.line(), error.column());
        let text = error.to_string();
        // serde_json ends its message with the position; it is said once, in our words.
        let own_suffix = format!(" at line {} column {}", error.line(), error.column());
        let message = text.strip_suffix(&own_suffix).unwrap_or(&text);
        if message == "recursion limit exceeded" {
            ApiError::BadRequest {
                title: "JSON nested too deeply",
                detail: format!("JSON may nest at most 128 levels; deeper at {position}"),
            }
        } else {
            ApiError::BadRequest {
                title: "Malformed JSON",
                detail: format!("{message} at {position}"),
            }
        }
    })
}

/// A query string read into `T`. One it cannot read, or with a NUL character in a
/// parameter (which no parameter needs and PostgreSQL cannot compare with), is a 400
/// naming the parameter, before any handler runs.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs): Query<Vec<(String, String)>> =
            Query::try_from_uri(&parts.uri).map_err(unreadable)?;
        if let Some((name, _)) = pairs
            .iter()
            .find(|(name, value)| name.contains('\0') || value.contains('\0'))
        {
            return Err(ApiError::BadRequest {
                title: "Unreadable query string",
                detail: format!(
                    "query parameter {} must not contain the NUL character (U+0000, %00)",
                    name.escape_debug()
                ),
            });
        }
        let Query(query) = Query::try_from_uri(&parts.uri).map_err(unreadable)?;
        Ok(QueryParams(query))
    }
}

fn unreadable(rejection: QueryRejection) -> ApiError {
    ApiError::BadRequest {
        title: "Unreadable query string",
        detail: rejection.body_text(),
    }
}

/// The client's address, when the request came through [`super::server::serve`].
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// The essence of the `Content-Type` header, lower-cased (`application/cloudevents+json`).
pub struct MediaType(pub String);

impl<S: Send + Sync> FromRequestParts<S> for MediaType {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = value.split(';').next().unwrap_or("").trim();
        Ok(MediaType(essence.to_ascii_lowercase()))
    }
}

/// CloudEvents binary mode: the `ce-*` headers, named without the prefix; `None` when the
/// request has none.
pub struct CloudEventHeaders(pub Option<Map<String, Value>>);

impl<S: Send + Sync> FromRequestParts<S> for CloudEventHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut attributes = Map::new();
        for (name, value) in &parts.headers {
            if let Some(attribute) = name.as_str().strip_prefix("ce-") {
                let value = value.to_str().map_err(|_| ApiError::BadRequest {
                    title: "Invalid CloudEvents header",
                    detail: format!("{name} must be visible ASCII"),
                })?;
                attributes.insert(attribute.to_owned(), Value::from(value));
            }
        }
        Ok(CloudEventHeaders(
            (!attributes.is_empty()).then_some(attributes),
        ))
    }
}

/// The caller, authenticated by a bearer token (verified once, by the admission
/// middleware); anything else is a 401.
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.remove::<Authentication>() {
            Some(Authentication::Verified(principal)) => Ok(Caller(principal)),
            Some(Authentication::Refused(reason)) => Err(ApiError::Unauthorized(reason)),
            Some(Authentication::KeysUnavailable) => Err(ApiError::KeysUnavailable),
            None => Err(ApiError::Unauthorized(MISSING_TOKEN.into())),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(body: &str) -> String {
        match parse_json(body.as_bytes()) {
            Err(ApiError::BadRequest { detail, .. }) => detail,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn malformed_json_names_its_position_once() {
        assert_eq!(
            detail(r#"{"type": "quest.started",}"#),
            "trailing comma at line 1, column 26"
        );
        assert_eq!(detail(""), "EOF while parsing a value at line 1, column 0");
        assert_eq!(
            detail(&format!("{}{}", "[".repeat(200), "]".repeat(200))),
            "JSON may nest at most 128 levels; deeper at line 1, column 128"
        );
    }
}
