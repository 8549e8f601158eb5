//! `POST /v1/webhooks/{source}`: events pushed by third parties, signed the Standard
//! Webhooks way with a secret from `WEBHOOK_SECRETS`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::admission::charge_events;
use super::docs::WebhookRequest;
use super::error::{ApiError, Problem};
use super::events::{BatchReceipt, new_correlation_id, parse_batch, publish_all, publish_one};
use super::extract::{CorrelationHeader, MediaType, Peer, RawBody, parse_json};
use super::idempotency::{IdempotencyKey, Ledger, once};
use crate::domain::cloudevent::is_json_media_type;
use crate::domain::envelope::derived_id;
use crate::domain::webhook::{self, Rejection, SignedRequest};
use crate::domain::{Principal, Scopes, ValidEvent};
use crate::rate_limit::Budget;

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
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing header, bad signature, unknown source or stale timestamp", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body arrived too slowly", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 256 KiB, or more events than the source's burst", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid event; every bad field is named", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The source's rate limit is spent; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The events were not taken; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
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
    let verified = verify(&state, &source, &headers, &body);
    let webhook_id = match verified {
        Ok(id) => id,
        Err(rejection) => {
            // Forgeries are paid for by their address, not by the source they name.
            if let Some(ip) = peer
                && let Some(decision) = state.limiter.charge(Budget::Address(ip), 1).await
                && !decision.allowed
            {
                return Err(ApiError::RateLimited(decision));
            }
            return Err(ApiError::WebhookRefused(rejection));
        }
    };
    let request = parse_json(&body)?;
    let (mut events, single) = parse_events(request.clone())?;
    // A retry of a delivery that failed half-way publishes the same event ids again, so
    // consumers can drop what did get through the first time.
    for (index, event) in events.iter_mut().enumerate() {
        if !event.id_given {
            event.id = derived_id(&[&source, &webhook_id, &index.to_string()]);
        }
    }
    let principal = Principal {
        subject: format!("webhook:{source}"),
        scopes: Scopes::parse("events:publish"),
    };
    let subject = principal.subject.clone();
    let correlation_id = correlation.unwrap_or_else(new_correlation_id);
    let key = IdempotencyKey {
        key: format!("webhook-id:{webhook_id}"),
        pointer: "/headers/webhook-id",
    };
    let publish = Box::pin({
        let state = state.clone();
        async move {
            // Charged only when the delivery runs: a replay is answered, not charged.
            charge_events(&state, Budget::Webhook(&source), events.len(), 0).await?;
            if single && let Some(event) = events.pop() {
                publish_one(state, principal, event, correlation_id).await
            } else {
                publish_all(state, principal, events, correlation_id).await
            }
        }
    });
    once(
        &state,
        Ledger::Cache,
        &subject,
        Some((key, request)),
        publish,
    )
    .await
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
