//! Prometheus metrics, each declared once below with its help text as its doc comment.
//! Names follow `gateway_<name>_<unit>[_total]`; labels come from closed sets (event type,
//! queue, the outcome enums here, method, matched route, status), never from ids or raw
//! input. To add a metric: one line in [`declare_metrics!`]'s list, and a recording
//! method if it has labels.
//!
//! The spec's `EventMetrics` map to: publishedEvents → `gateway_events_published_total`,
//! consumedEvents → `gateway_events_consumed_total`, failedEvents →
//! `gateway_events_failed_total`, retryCount → `gateway_event_retries_total`,
//! processingTime → `gateway_event_processing_duration_seconds`, queueLength →
//! `gateway_queue_messages`.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::EventType;

/// Latency buckets from 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A closed set of label values.
pub trait Label: Copy {
    fn as_str(self) -> &'static str;
}

/// Declares a closed label set: an enum and the string each value is exported as.
macro_rules! labels {
    ($(#[doc = $doc:literal])+ $name:ident { $($variant:ident = $text:literal,)+ }) => {
        $(#[doc = $doc])+
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant,)+ }

        impl $name {
            /// Every value, for the series exported at zero from the start.
            pub const ALL: &[$name] = &[$($name::$variant,)+];
        }

        impl Label for $name {
            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }
    };
}

labels! {
    /// What became of an event a caller sent.
    PublishOutcome {
        Published = "published",
        Queued = "queued",
        Scheduled = "scheduled",
        Cancelled = "cancelled",
        Unavailable = "unavailable",
        Nacked = "nacked",
        Unroutable = "unroutable",
        Timeout = "timeout",
        ConfirmLost = "confirm_lost",
        NotConfirmed = "not_confirmed",
        EncodeFailed = "encode_failed",
        Unknown = "unknown",
    }
}

labels! {
    /// What a consumer did with a message.
    ConsumeOutcome {
        Handled = "handled",
        Retried = "retried",
        DeadLettered = "dead_lettered",
    }
}

labels! {
    /// Whether a rate-limit decision let the request in.
    LimitOutcome {
        Allowed = "allowed",
        Limited = "limited",
    }
}

labels! {
    /// Who made a rate-limit decision: Redis, a lease this process holds, or this process
    /// alone while Redis is unreachable.
    LimitStore {
        Redis = "redis",
        Lease = "lease",
        Local = "local",
    }
}

labels! {
    /// A dependency behind a circuit breaker.
    Dependency {
        Redis = "redis",
        Postgres = "postgres",
    }
}

labels! {
    /// Where a scheduled event stands: waiting (`scheduled`, of which `overdue` are due and
    /// not yet released), moved to the outbox (`released`), `published` or `cancelled`.
    ScheduleGauge {
        Scheduled = "scheduled",
        Overdue = "overdue",
        Released = "released",
        Published = "published",
        Cancelled = "cancelled",
    }
}

labels! {
    /// Whether a cached read found its entry in Redis.
    CacheLookup {
        Hit = "hit",
        Miss = "miss",
    }
}

/// How each kind of metric is made from its name, help and labels.
trait Declare: Collector + Clone + Sized + 'static {
    fn declare(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<Self>;
}

impl Declare for IntCounter {
    fn declare(name: &str, help: &str, _: &[&str]) -> prometheus::Result<Self> {
        IntCounter::new(name, help)
    }
}

impl Declare for IntGauge {
    fn declare(name: &str, help: &str, _: &[&str]) -> prometheus::Result<Self> {
        IntGauge::new(name, help)
    }
}

impl Declare for Histogram {
    fn declare(name: &str, help: &str, _: &[&str]) -> prometheus::Result<Self> {
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
    }
}

impl Declare for IntCounterVec {
    fn declare(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<Self> {
        IntCounterVec::new(Opts::new(name, help), labels)
    }
}

impl Declare for IntGaugeVec {
    fn declare(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<Self> {
        IntGaugeVec::new(Opts::new(name, help), labels)
    }
}

impl Declare for HistogramVec {
    fn declare(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<Self> {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        HistogramVec::new(opts, labels)
    }
}

fn register<T: Declare>(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<T> {
    let metric = T::declare(name, help.trim(), labels)?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// `process_*` (CPU seconds, resident and virtual memory, open and maximum file
/// descriptors, threads, start time) from the prometheus crate's collector, which reads
/// `/proc` and so exists on Linux only.
#[cfg(target_os = "linux")]
fn register_process_collector(registry: &Registry) -> prometheus::Result<()> {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry.register(Box::new(collector))
}

#[cfg(not(target_os = "linux"))]
fn register_process_collector(_: &Registry) -> prometheus::Result<()> {
    Ok(())
}

/// The metrics struct and its registration, from one list of `help, field, kind, name,
/// labels`.
macro_rules! declare_metrics {
    ($(#[doc = $help:literal] $vis:vis $field:ident: $kind:ty = $name:literal $([$($label:literal),+])?;)+) => {
        pub struct Metrics {
            registry: Registry,
            $(#[doc = $help] $vis $field: $kind,)+
        }

        impl Metrics {
            pub fn new() -> prometheus::Result<Self> {
                let registry = Registry::new();
                register_process_collector(&registry)?;
                Ok(Metrics {
                    $($field: register(&registry, $name, $help, &[$($($label),+)?])?,)+
                    registry,
                })
            }
        }
    };
}

declare_metrics! {
    /// Events taken or refused, by event type and outcome.
    events_published: IntCounterVec = "gateway_events_published_total" ["type", "outcome"];
    /// Time from publishing a message until the broker confirmed it.
    pub publish_confirm_seconds: Histogram = "gateway_publish_confirm_duration_seconds";
    /// 1 while the publisher holds a live broker connection, else 0.
    pub broker_connected: IntGauge = "gateway_broker_connected";
    /// Events waiting in the PostgreSQL outbox.
    pub outbox_depth: IntGauge = "gateway_outbox_depth";
    /// Events the outbox relay published.
    pub outbox_published: IntCounter = "gateway_outbox_published_total";
    /// Messages the consumers finished with, by queue and outcome.
    events_consumed: IntCounterVec = "gateway_events_consumed_total" ["queue", "outcome"];
    /// Messages sent to failed_events, by queue.
    events_failed: IntCounterVec = "gateway_events_failed_total" ["queue"];
    /// Messages scheduled for another attempt, by queue.
    event_retries: IntCounterVec = "gateway_event_retries_total" ["queue"];
    /// Time to handle one message, by queue.
    processing_seconds: HistogramVec = "gateway_event_processing_duration_seconds" ["queue"];
    /// Messages waiting in each queue.
    queue_messages: IntGaugeVec = "gateway_queue_messages" ["queue"];
    /// Scheduled events in PostgreSQL by state (settled ones are kept for IDEMPOTENCY_TTL).
    scheduled_events: IntGaugeVec = "gateway_scheduled_events" ["state"];
    /// Dead letters recorded and not yet replayed.
    pub dead_letters: IntGauge = "gateway_dead_letters";
    /// 1 while the circuit breaker in front of a dependency is open.
    circuit_open: IntGaugeVec = "gateway_circuit_open" ["dependency"];
    /// Rate-limit decisions by outcome and by where the budget was kept.
    rate_limit_decisions: IntCounterVec = "gateway_rate_limit_decisions_total" ["outcome", "store"];
    /// The gateway's own cached reads by result; a Redis that fails counts as a miss.
    cache_lookups: IntCounterVec = "gateway_cache_lookups_total" ["result"];
    /// HTTP requests by method, matched route and status.
    http_requests: IntCounterVec = "gateway_http_requests_total" ["method", "route", "status"];
    /// HTTP request latency by method and matched route.
    http_request_seconds: HistogramVec = "gateway_http_request_duration_seconds" ["method", "route"];
}

impl Metrics {
    /// Creates, at zero, every labelled counter whose label values are known at start (and
    /// the breaker gauges, closed), so that a rate or an alert sees 0 rather than nothing
    /// until the first event. `queues` are the family queues the consumers count under,
    /// known whether or not the consumers run.
    pub fn initialise<'q>(&self, queues: impl IntoIterator<Item = &'q str>) {
        for event_type in EventType::ALL {
            for outcome in PublishOutcome::ALL {
                self.events_published
                    .with_label_values(&[event_type.as_str(), outcome.as_str()]);
            }
        }
        for queue in queues {
            for outcome in ConsumeOutcome::ALL {
                self.events_consumed
                    .with_label_values(&[queue, outcome.as_str()]);
            }
            self.events_failed.with_label_values(&[queue]);
            self.event_retries.with_label_values(&[queue]);
            self.processing_seconds.with_label_values(&[queue]);
        }
        for outcome in LimitOutcome::ALL {
            for store in LimitStore::ALL {
                self.rate_limit_decisions
                    .with_label_values(&[outcome.as_str(), store.as_str()]);
            }
        }
        for &dependency in Dependency::ALL {
            self.circuit(dependency);
        }
        for &result in CacheLookup::ALL {
            self.cache_lookups(result);
        }
        for &state in ScheduleGauge::ALL {
            self.scheduled(state, 0);
        }
    }

    pub fn event_published(&self, event_type: EventType, outcome: PublishOutcome) {
        self.events_published
            .with_label_values(&[event_type.as_str(), outcome.as_str()])
            .inc();
    }

    /// How long a consumer took to handle a message (before any retry or dead letter).
    pub fn message_handled(&self, queue: &str, seconds: f64) {
        self.processing_seconds
            .with_label_values(&[queue])
            .observe(seconds);
    }

    /// Counts a message a consumer finished with, and its retry or dead letter.
    pub fn message_consumed(&self, queue: &str, outcome: ConsumeOutcome) {
        self.events_consumed
            .with_label_values(&[queue, outcome.as_str()])
            .inc();
        match outcome {
            ConsumeOutcome::Retried => self.event_retries.with_label_values(&[queue]).inc(),
            ConsumeOutcome::DeadLettered => self.events_failed.with_label_values(&[queue]).inc(),
            ConsumeOutcome::Handled => {}
        }
    }

    pub fn scheduled(&self, state: ScheduleGauge, count: i64) {
        self.scheduled_events
            .with_label_values(&[state.as_str()])
            .set(count);
    }

    pub fn queue_depth(&self, queue: &str, messages: u32) {
        self.queue_messages
            .with_label_values(&[queue])
            .set(i64::from(messages));
    }

    /// The gauge a dependency's circuit breaker keeps.
    pub fn circuit(&self, dependency: Dependency) -> IntGauge {
        self.circuit_open.with_label_values(&[dependency.as_str()])
    }

    pub fn rate_limit_decision(&self, allowed: bool, store: LimitStore) {
        let outcome = if allowed {
            LimitOutcome::Allowed
        } else {
            LimitOutcome::Limited
        };
        self.rate_limit_decisions
            .with_label_values(&[outcome.as_str(), store.as_str()])
            .inc();
    }

    /// The counter the read cache keeps for `result`.
    pub fn cache_lookups(&self, result: CacheLookup) -> IntCounter {
        self.cache_lookups.with_label_values(&[result.as_str()])
    }

    /// `route` is the matched route template, never the raw path.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        self.http_requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.http_request_seconds
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> prometheus::Result<String> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialised_series_are_exported_at_zero() {
        let metrics = Metrics::new().unwrap();
        metrics.initialise(["p.quest_events"]);
        let text = metrics.render().unwrap();
        for line in [
            r#"gateway_events_published_total{outcome="unknown",type="quest.started"} 0"#,
            r#"gateway_events_consumed_total{outcome="retried",queue="p.quest_events"} 0"#,
            r#"gateway_events_failed_total{queue="p.quest_events"} 0"#,
            r#"gateway_event_retries_total{queue="p.quest_events"} 0"#,
            r#"gateway_rate_limit_decisions_total{outcome="limited",store="lease"} 0"#,
            r#"gateway_circuit_open{dependency="postgres"} 0"#,
            r#"gateway_cache_lookups_total{result="miss"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge"));
    }
}
