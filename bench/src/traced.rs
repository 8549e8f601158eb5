//! `traced` and `traced-off`: the `single` load, each request part of a trace of the
//! caller's (`traceparent`), sent to a gateway that exports its spans over OTLP/HTTP
//! (`traced`) and to the plain one (`traced-off`), one right after the other; and what
//! export costs, from those pairs.

use anyhow::Context;
use bytes::Bytes;
use hyper::header::HeaderValue;
use serde::Serialize;
use uuid::Uuid;

use crate::http::{Connection, Target, expect_success};
use crate::load::{Plan, Recorder, Schedule, Totals, run_workers};
use crate::otlp_sink::SinkCounts;
use crate::report::{Run, median};
use crate::scenarios::Scenario;

/// Posts `body` to `target` from every worker, each request with a fresh `traceparent`.
pub async fn run(plan: &Plan, target: Target, body: Bytes) -> anyhow::Result<Totals> {
    run_workers(plan, 1, |_, schedule| {
        traced_worker(target.clone(), body.clone(), schedule)
    })
    .await
}

/// One keep-alive connection; trace ids are the worker's random half and a counter.
async fn traced_worker(
    target: Target,
    body: Bytes,
    mut schedule: Schedule,
) -> anyhow::Result<Recorder> {
    let mut connection = Connection::open(target.addr).await?;
    let mut recorder = Recorder::new()?;
    // Never zero, as W3C wants: the counter starts at 1.
    let worker = Uuid::new_v4().as_u64_pair().0;
    let mut sent: u64 = 0;
    while let Some(start) = schedule.next().await {
        sent += 1;
        let traceparent =
            HeaderValue::from_str(&format!("00-{worker:016x}{sent:016x}-{sent:016x}-01"))
                .context("traceparent header")?;
        let outcome = match connection
            .post_json_traced(&target, body.clone(), traceparent)
            .await
        {
            Ok(answer) => expect_success(&answer),
            Err(error) => {
                connection = Connection::open(target.addr).await?;
                Err(error)
            }
        };
        recorder.record(start, 1, outcome);
    }
    Ok(recorder)
}

/// Export on against export off: medians of the ratios of each `traced` run to the
/// `traced-off` run just before it, and what the sink received.
#[derive(Debug, Clone, Serialize)]
pub struct TracingCost {
    pub pairs: usize,
    pub events_per_sec: f64,
    pub p50: f64,
    pub p99: f64,
    pub gateway_cpu_per_event: f64,
    pub gateway_rss_peak: f64,
    /// Received after the warm-up; the spans of the last few ms before the end are lost.
    pub sink: SinkCounts,
    pub spans_per_event: f64,
}

/// `None` when no `traced` run was made.
pub fn cost(runs: &[Run], sink: SinkCounts) -> Option<TracingCost> {
    let full_speed = |scenario: Scenario| {
        runs.iter()
            .filter(move |run| run.scenario == scenario && run.paced_rate.is_none())
    };
    let pairs: Vec<(&Run, &Run)> = full_speed(Scenario::TracedOff)
        .zip(full_speed(Scenario::Traced))
        .collect();
    let ratio = |pick: fn(&Run) -> f64| {
        median(
            pairs
                .iter()
                .map(|(off, on)| pick(on) / pick(off).max(f64::MIN_POSITIVE)),
        )
    };
    let cpu_per_event = |run: &Run| run.gateway_cpu_sec / run.accepted.max(1) as f64;
    let accepted: u64 = pairs.iter().map(|(_, on)| on.accepted).sum();
    Some(TracingCost {
        pairs: pairs.len(),
        events_per_sec: ratio(|run| run.events_per_sec)?,
        p50: ratio(|run| run.p50_ms)?,
        p99: ratio(|run| run.p99_ms)?,
        gateway_cpu_per_event: ratio(cpu_per_event)?,
        gateway_rss_peak: ratio(|run| run.gateway_rss_peak_mib)?,
        sink,
        spans_per_event: sink.spans as f64 / accepted.max(1) as f64,
    })
}
