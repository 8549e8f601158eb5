//! The middleware stack, built in one place: request id, tracing, HTTP metrics, CORS,
//! body limit and request timeout. (Admission, which needs the handlers' state, is
//! layered in `router`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::info_span;

use super::error::ApiError;
use crate::app::publish::{NotTaken, Unknown};
use crate::config::CorsOrigin;
use crate::domain::trace::{TraceContext, TraceParent};
use crate::runtime::in_flight::{self, Handover};
use crate::runtime::metrics::Metrics;
use crate::runtime::telemetry;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

pub fn apply(
    router: Router,
    metrics: Arc<Metrics>,
    timeout: Duration,
    body_limit: usize,
    cors_origins: &[CorsOrigin],
    max_head: usize,
) -> Router {
    let router = router
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(timeout, request_timeout))
        .layer(middleware::from_fn_with_state(max_head, limit_head));
    let router = match cors(cors_origins) {
        Some(cors) => router
            .layer(cors)
            .layer(middleware::from_fn(only_for_allowed_origins)),
        None => router,
    };
    router
        .layer(middleware::from_fn_with_state(metrics, record_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .layer(middleware::from_fn(trace_context))
}

/// The request's trace (the caller's, or a new one) for everything it does: its span, its
/// log lines and the messages it publishes.
async fn trace_context(mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let upstream = header(&TRACEPARENT).and_then(TraceParent::parse);
    let trace = telemetry::request_trace(upstream, header(&TRACESTATE));
    request.extensions_mut().insert(Upstream(upstream));
    request.extensions_mut().insert(trace.clone());
    telemetry::in_request(trace, next.run(request)).await
}

/// The caller's span, when its `traceparent` was valid.
#[derive(Clone, Copy)]
struct Upstream(Option<TraceParent>);

fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let trace = request.extensions().get::<TraceContext>();
    let trace_id = trace.map(|t| tracing::field::display(t.parent.trace_id));
    let span = info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id, trace_id);
    if let Some(Upstream(upstream)) = request.extensions().get::<Upstream>() {
        let state = trace.and_then(|t| t.state.as_deref());
        telemetry::follow(&span, upstream.as_ref(), state);
    }
    span
}

/// Headers a browser may send, and may read, across origins.
const CORS_REQUEST_HEADERS: [&str; 15] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "x-correlation-id",
    // W3C trace context, which browser instrumentation sends with every call.
    "traceparent",
    "tracestate",
    "ce-specversion",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-time",
    "ce-deliverat",
    "ce-subject",
    "ce-datacontenttype",
    "ce-dataschema",
];
const CORS_RESPONSE_HEADERS: [&str; 7] = [
    "x-correlation-id",
    "x-request-id",
    "idempotent-replayed",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

/// CORS for `CORS_ORIGINS`; none when it is empty.
fn cors(origins: &[CorsOrigin]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin.0 == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(&origin.0).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(CORS_REQUEST_HEADERS.map(HeaderName::from_static))
            .expose_headers(CORS_RESPONSE_HEADERS.map(HeaderName::from_static))
            .max_age(Duration::from_secs(600)),
    )
}

/// tower-http answers every preflight with the allowed methods and headers; an origin
/// that is not allowed gets none of them, so it learns nothing about the API.
async fn only_for_allowed_origins(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        let granted: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in granted {
            headers.remove(name);
        }
    }
    response
}

/// Answers 431 as problem+json for a request head over `max` bytes. (Hyper itself cuts
/// heads far beyond that, before a request exists, with a bare 431.)
async fn limit_head(State(max): State<usize>, request: Request, next: Next) -> Response {
    // Request line: method, target, " HTTP/1.1\r\n"; each header "name: value\r\n"; "\r\n".
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |target| target.as_str().len());
    let size = request.method().as_str().len()
        + 1
        + target
        + 11
        + 2
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if size > max {
        return ApiError::HeadTooLarge(max).into_response();
    }
    next.run(request).await
}

/// Answers 503 as problem+json when a request outlives `timeout`: `outcome-unknown` with
/// the ids of the events it handed to publishing (they may still go out), else a plain
/// refusal, after which none of its events is published.
async fn request_timeout(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let handover = Arc::new(Handover::default());
    let work = in_flight::in_request(handover.clone(), next.run(request));
    match tokio::time::timeout(timeout, work).await {
        Ok(response) => response,
        Err(_) => match handover.answer_now() {
            ids if ids.is_empty() => ApiError::Timeout.into_response(),
            ids => ApiError::from(NotTaken::OutcomeUnknown {
                ids,
                why: Unknown::Deadline,
            })
            .into_response(),
        },
    }
}

/// Routes that share axum's route (and so its [`MatchedPath`]) with another method's: the
/// router needs one parameter name per position. Each is counted under its own template,
/// whoever answered it (the handler, admission, the timeout).
const SHARED_ROUTES: [(Method, &str, &str); 2] = [
    (Method::GET, "/v1/events/{type}", "/v1/events/{id}"),
    (Method::DELETE, "/v1/events/{type}", "/v1/events/{id}"),
];

fn route_label<'a>(method: &Method, matched: &'a str) -> &'a str {
    SHARED_ROUTES
        .iter()
        .find(|(m, path, _)| m == method && *path == matched)
        .map_or(matched, |(_, _, label)| label)
}

/// Counts requests by method, route template (never the raw path) and status.
async fn record_metrics(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let route = route_label(&method, &matched);
    metrics.http_request(method.as_str(), route, response.status().as_u16(), seconds);
    response
}
