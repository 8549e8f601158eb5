//! Admission: who is calling, and whether their rate limit lets them in now. One
//! middleware verifies the bearer token once (the `Caller` extractor reads the outcome)
//! and charges the request to the token's `sub`, or, for calls without valid credentials,
//! to the client address. Webhooks are charged to their source once the signature checks
//! out, and batches pay for their other events in their handler
//! (`RateLimiter::charge_events`).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, NOT_BEARER, set_rate_limit_headers};
use super::server::peer;
use crate::app::rate_limit::Budget;
use crate::auth::TokenError;
use crate::domain::Principal;

/// What the middleware found in the `Authorization` header.
#[derive(Clone)]
pub enum Authentication {
    Verified(Principal),
    Refused(String),
    /// The identity provider's keys have not been fetched yet.
    KeysUnavailable,
}

/// Routes that authenticate by other means than a bearer token.
const WEBHOOK_PREFIX: &str = "/v1/webhooks/";

/// Probes and scrapes from the infrastructure: cheap, and a 429 there would restart pods
/// or blind the dashboards.
const UNLIMITED: [&str; 3] = ["/health/live", "/health/ready", "/metrics"];

pub async fn admit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let (first, second) = (values.next(), values.next());
    if second.is_some() {
        return ApiError::BadRequest {
            title: "Ambiguous credentials",
            detail: "the request has more than one Authorization header; send exactly one".into(),
        }
        .into_response();
    }
    let authentication = match first {
        Some(value) => Some(authenticate(&state, value).await),
        None => None,
    };
    let path = request.uri().path();
    let budget = match &authentication {
        _ if UNLIMITED.contains(&path) => None,
        Some(Authentication::Verified(principal)) => Some(Budget::Subject(&principal.subject)),
        None if path.starts_with(WEBHOOK_PREFIX) => None,
        _ => peer(&request).map(|addr| Budget::Address(addr.ip())),
    };
    let decision = match budget {
        Some(budget) => state.app.limiter.charge(budget, 1).await,
        None => None,
    };
    if let Some(decision) = decision.filter(|d| !d.allowed) {
        return ApiError::RateLimited(decision).into_response();
    }
    if let Some(authentication) = authentication {
        request.extensions_mut().insert(authentication);
    }
    let mut response = next.run(request).await;
    // A handler that charged more (a batch) has set the headers already.
    if let Some(decision) = decision
        && !response.headers().contains_key("ratelimit-remaining")
    {
        set_rate_limit_headers(response.headers_mut(), &decision);
    }
    response
}

async fn authenticate(state: &AppState, value: &HeaderValue) -> Authentication {
    let token = value
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    let Some(token) = token else {
        return Authentication::Refused(NOT_BEARER.into());
    };
    match state.verifier.verify(token.trim()).await {
        Ok(principal) => Authentication::Verified(principal),
        Err(TokenError::Refused(refused)) => Authentication::Refused(refused.to_string()),
        Err(TokenError::KeysUnavailable) => Authentication::KeysUnavailable,
    }
}
