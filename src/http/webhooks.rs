//! `POST /v1/webhooks/{source}`: events pushed by third parties, signed the Standard
//! Webhooks way with a secret from `WEBHOOK_SECRETS`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::batch::parse_batch;
use super::docs::WebhookRequest;
use super::error::{ApiError, Problem};
use super::events::new_correlation_id;
use super::extract::{CorrelationHeader, MediaType, Peer, RawBody, parse_json};
use super::responses::{KeyInProgress, NotJson, SlowBody};
use crate::app::publish::BatchReceipt;
use crate::app::rate_limit::Budget;
use crate::app::webhooks::Delivery;
use crate::domain::ValidEvent;
use crate::domain::cloudevent::is_json_media_type;
use crate::domain::webhook::{self, Rejection, SignedRequest};

const ID: &str = "webhook-id";
const TIMESTAMP: &str = "webhook-timestamp";
const SIGNATURE: &str = "webhook-signature";

/// Receive a signed webhook: one event, or `{"events": [...]}`.
///
/// Verified as Standard Webhooks: `webhook-signature` holds space-separated `v1,<base64>`
/// entries, each an HMAC-SHA256 with the source's secret over `{webhook-id}.{webhook-timestamp}.{body}`;
/// the timestamp must be within 5 minutes of the gateway's clock. The events are published
/// with `metadata.source` = `webhook:<source>`. A repeated `webhook-id` gets the first answer
/// again (with `Idempotent-Replayed: true`) and publishes nothing.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{source}",
    tag = "webhooks",
    params(
        ("source" = String, Path, description = "The sender, as named in WEBHOOK_SECRETS"),
        ("webhook-id" = String, Header, description = "The message id; a repeat is answered as the first time"),
        ("webhook-timestamp" = i64, Header, description = "Unix seconds when it was signed"),
        ("webhook-signature" = String, Header, description = "Space-separated `v1,<base64 HMAC-SHA256>` entries"),
        ("X-Correlation-Id" = Option<String>, Header, description = "Correlates the events with others"),
    ),
    request_body(content = WebhookRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Taken: a Receipt for one event, a BatchReceipt for a batch", body = BatchReceipt),
        KeyInProgress,
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing header, bad signature, unknown source or stale timestamp", body = Problem, content_type = "application/problem+json"),
        SlowBody,
        (status = 413, description = "Body over 256 KiB, or more events than the source's burst", body = Problem, content_type = "application/problem+json"),
        NotJson,
        (status = 422, description = "Invalid event; every bad field is named", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The source's rate limit is spent; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not taken (`unavailable`, `timeout`): nothing was or will be published, retry after Retry-After; or `outcome-unknown`: the events in `eventIds` may have been taken, retry them with the same ids or `Idempotency-Key`", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
async fn receive_webhook(
    State(state): State<AppState>,
    Path(source): Path<String>,
    Peer(peer): Peer,
    headers: HeaderMap,
    CorrelationHeader(correlation): CorrelationHeader,
    MediaType(media_type): MediaType,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    if !is_json_media_type(&media_type) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type application/json, got '{media_type}'"
        )));
    }
    let webhook_id = match verify(&state, &source, &headers, &body) {
        Ok(id) => id,
        Err(rejection) => return Err(refuse(&state, peer, rejection).await),
    };
    let request = parse_json(&body)?;
    let (events, single) = parse_events(request.clone())?;
    let delivery = Delivery {
        source,
        webhook_id,
        request,
        events,
        single,
        correlation_id: correlation.unwrap_or_else(new_correlation_id),
    };
    Ok(state.app.receive_webhook(delivery).await?.into_response())
}

/// Forgeries are paid for by their address, not by the source they name.
async fn refuse(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    rejection: Rejection,
) -> ApiError {
    if let Some(ip) = peer
        && let Some(decision) = state.app.limiter.charge(Budget::Address(ip), 1).await
        && !decision.allowed
    {
        return ApiError::RateLimited(decision);
    }
    ApiError::WebhookRefused(rejection)
}

/// The verified `webhook-id`.
fn verify(
    state: &AppState,
    source: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Rejection> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty())
            .ok_or(Rejection::MissingHeader(name))
    };
    let request = SignedRequest {
        id: header(ID)?,
        timestamp: header(TIMESTAMP)?,
        signatures: header(SIGNATURE)?,
        body,
    };
    if request.id.len() > webhook::MAX_ID_LEN {
        return Err(Rejection::LongId);
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    state.webhooks.verify(source, &request, now)?;
    Ok(request.id.to_owned())
}

/// One event, or a batch; `true` for one.
fn parse_events(body: Value) -> Result<(Vec<ValidEvent>, bool), ApiError> {
    if body.get("events").is_some() {
        Ok((parse_batch(body)?, false))
    } else {
        let event = ValidEvent::parse(body, "").map_err(ApiError::invalid)?;
        Ok((vec![event], true))
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive_webhook))
}
