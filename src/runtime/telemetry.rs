//! Trace context across the gateway: the request's trace (set by the HTTP middleware for
//! the work of one request), the `traceparent` each message goes out with, and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OTLP/HTTP export of the spans.
//!
//! Without export the gateway still continues the caller's trace: each request gets a span
//! id of its own, which its messages name as their parent. With export, the messages name
//! the exported span that published them, and a request without a `traceparent` is the
//! root of the trace its log lines show.

use std::str::FromStr;
use std::sync::OnceLock;

use anyhow::Context as _;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::domain::trace::{self, TraceContext, TraceParent};

tokio::task_local! {
    /// The trace of the request being served: its trace id, this gateway's span id, and
    /// the caller's `tracestate`.
    static REQUEST_TRACE: TraceContext;
}

/// Set once, when export is on; shut down (flushing the last spans) when the gateway stops.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The trace a request continues: the caller's (its valid `traceparent`, and its
/// `tracestate`), or a new one. Its parent id is the gateway's own span for this request.
pub fn request_trace(incoming: Option<TraceParent>, tracestate: Option<&str>) -> TraceContext {
    let parent = incoming.unwrap_or_else(TraceParent::new_trace);
    TraceContext {
        parent: parent.child(trace::new_span_id()),
        // A state belongs to the caller's trace: a new trace starts without one.
        state: incoming
            .and(tracestate.and_then(trace::valid_tracestate))
            .map(Into::into),
    }
}

/// Runs `work` as the request with this trace.
pub async fn in_request<F: Future>(trace: TraceContext, work: F) -> F::Output {
    REQUEST_TRACE.scope(trace, work).await
}

/// `work`, in the trace of the request running now (if any), for a task of its own: a
/// spawned task does not inherit the task-local, so it is read here, before the spawn.
pub fn in_current_request<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let trace = REQUEST_TRACE.try_with(Clone::clone).ok();
    async move {
        match trace {
            Some(trace) => REQUEST_TRACE.scope(trace, work).await,
            None => work.await,
        }
    }
}

/// What a message published now carries: the exported span publishing it (export on),
/// else the request's trace, else none (work that no request started).
pub fn outgoing() -> Option<TraceContext> {
    let request = REQUEST_TRACE.try_with(Clone::clone).ok();
    if PROVIDER.get().is_none() {
        return request;
    }
    let context = Span::current().context();
    let span = context.span();
    let current = span.span_context();
    if !current.is_valid() {
        return request;
    }
    Some(TraceContext {
        parent: TraceParent {
            trace_id: trace::TraceId(current.trace_id().to_bytes()),
            parent_id: current.span_id().to_bytes(),
            flags: current.trace_flags().to_u8(),
        },
        state: request.and_then(|r| r.state),
    })
}

/// Makes `span` (not yet entered) a child of the remote span `parent` names, when export
/// is on. `upstream` is the caller's span: for a request, the one before the gateway's.
pub fn follow(span: &Span, upstream: Option<&TraceParent>, state: Option<&str>) {
    let Some(parent) = upstream else { return };
    if PROVIDER.get().is_none() {
        return;
    }
    let state = state
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id.0),
        SpanId::from_bytes(parent.parent_id),
        TraceFlags::new(parent.flags),
        true,
        state,
    );
    // Fails only when the span is disabled or already started: it then stays a root.
    let _ = span.set_parent(Context::new().with_remote_span_context(remote));
}

/// The layer that exports spans to `endpoint` (a base URL: `/v1/traces` is appended), as
/// OTLP/HTTP with JSON bodies, in batches from a thread of its own.
pub fn otlp_layer<S>(endpoint: &str) -> anyhow::Result<impl Layer<S>>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(RequestTraceIds)
        .with_resource(
            Resource::builder()
                .with_service_name("event-gateway")
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        )
        .build();
    let tracer = provider.tracer("event-gateway");
    PROVIDER
        .set(provider)
        .map_err(|_| anyhow::anyhow!("OTLP export is already set up"))?;
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Exports the spans still buffered; called once the gateway has stopped.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(error) = provider.shutdown()
    {
        tracing::warn!(%error, "OTLP export did not shut down cleanly");
    }
}

/// A request that came without a `traceparent` is the root of the trace its logs name, so
/// its root span takes that trace id instead of a random one.
#[derive(Debug)]
struct RequestTraceIds;

impl IdGenerator for RequestTraceIds {
    fn new_trace_id(&self) -> TraceId {
        REQUEST_TRACE
            .try_with(|trace| TraceId::from_bytes(trace.parent.trace_id.0))
            .unwrap_or_else(|_| RandomIdGenerator::default().new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        SpanId::from_bytes(trace::new_span_id())
    }
}
