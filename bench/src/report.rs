//! From runs to results: each run's numbers, one summary per scenario (medians over
//! runs), and the whole report as JSON.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::load::Totals;
use crate::otlp_sink::SinkCounts;
use crate::scenarios::Scenario;
use crate::scheduled::ScheduledStudy;
use crate::targets::{self, TargetCheck};
use crate::traced::{self, TracingCost};

pub const KIB_PER_MIB: f64 = 1024.0;

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub scenario: Scenario,
    /// Events per second asked for, when paced; `None` for as fast as it goes.
    pub paced_rate: Option<f64>,
    pub accepted: u64,
    pub refused: u64,
    /// Events found on the queues after the run.
    pub delivered: u64,
    /// Refused events plus any difference between accepted and delivered.
    pub errors: u64,
    pub failures: Vec<String>,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub gateway_cpu_sec: f64,
    pub broker_cpu_sec: Option<f64>,
    pub bench_cpu_sec: f64,
    pub gateway_rss_peak_mib: f64,
    /// Share of all cores left idle during the run.
    pub machine_idle_pct: f64,
    /// Share of all cores busy with anything but the gateway, the broker and the bench
    /// (other processes, interrupts): high means the run was disturbed.
    pub rest_pct: f64,
    /// This run against the raw run just before it (for `traced`, the one before
    /// `traced-off`).
    pub vs_raw: Option<VsRaw>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct VsRaw {
    pub throughput: f64,
    pub p99: f64,
}

/// What a run cost outside the bench's own counters, read from /proc around it.
pub struct Usage {
    pub gateway_cpu_sec: f64,
    pub broker_cpu_sec: Option<f64>,
    pub bench_cpu_sec: f64,
    pub gateway_rss_peak_kib: u64,
    pub machine_idle_pct: f64,
    pub rest_pct: f64,
}

impl Run {
    /// A run of `scenario` from what its workers counted and what reached the queues.
    pub fn new(
        scenario: Scenario,
        paced_rate: Option<f64>,
        totals: Totals,
        delivered: u64,
        usage: Usage,
    ) -> Self {
        let recorder = totals.recorder;
        let mut failures = recorder.failures;
        let mismatch = recorder.ok_events.abs_diff(delivered);
        if mismatch != 0 {
            failures.push(format!(
                "{} events accepted but {delivered} reached the queues",
                recorder.ok_events
            ));
        }
        let seconds = totals.elapsed.as_secs_f64();
        let ms = |micros: u64| micros as f64 / 1000.0;
        Run {
            scenario,
            paced_rate,
            accepted: recorder.ok_events,
            refused: recorder.failed_events,
            delivered,
            errors: recorder.failed_events + mismatch,
            failures,
            seconds,
            events_per_sec: recorder.ok_events as f64 / seconds,
            p50_ms: ms(recorder.latency.value_at_quantile(0.5)),
            p99_ms: ms(recorder.latency.value_at_quantile(0.99)),
            max_ms: ms(recorder.latency.max()),
            gateway_cpu_sec: usage.gateway_cpu_sec,
            broker_cpu_sec: usage.broker_cpu_sec,
            bench_cpu_sec: usage.bench_cpu_sec,
            gateway_rss_peak_mib: usage.gateway_rss_peak_kib as f64 / KIB_PER_MIB,
            machine_idle_pct: usage.machine_idle_pct,
            rest_pct: usage.rest_pct,
            vs_raw: None,
        }
    }

    pub fn compare_with(&mut self, raw: &Run) {
        self.vs_raw = Some(VsRaw {
            throughput: self.events_per_sec / raw.events_per_sec.max(f64::MIN_POSITIVE),
            p99: self.p99_ms / raw.p99_ms.max(f64::MIN_POSITIVE),
        });
    }
}

/// One table row: a scenario's runs, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub label: String,
    pub scenario: Scenario,
    pub paced_rate: Option<f64>,
    pub runs: usize,
    pub events_per_sec: f64,
    /// Median of the per-pair ratios (each run against the raw run right before it).
    pub ratio_to_raw: Option<f64>,
    pub p99_ratio_to_raw: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub accepted: u64,
    pub delivered: u64,
    pub gateway_cpu_sec_per_10k: f64,
    pub broker_cpu_sec_per_10k: Option<f64>,
    pub bench_cpu_sec_per_10k: f64,
    pub gateway_rss_peak_mib: f64,
    pub machine_idle_pct: f64,
    pub rest_pct: f64,
    pub failures: Vec<String>,
}

pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    })
}

fn per_10k(cpu_sec: f64, events: u64) -> f64 {
    cpu_sec / events.max(1) as f64 * 10_000.0
}

/// Summarises the runs of one scenario at one pace; `None` if there were none.
pub fn summarise(runs: &[Run], scenario: Scenario, paced: bool) -> Option<Summary> {
    let mine: Vec<&Run> = runs
        .iter()
        .filter(|run| run.scenario == scenario && run.paced_rate.is_some() == paced)
        .collect();
    let first = mine.first()?;
    let accepted = mine.iter().map(|run| run.accepted).sum();
    let cpu = |pick: fn(&Run) -> f64| per_10k(mine.iter().map(|run| pick(run)).sum(), accepted);
    let broker_cpu: Option<f64> = mine.iter().map(|run| run.broker_cpu_sec).sum();
    let label = match first.paced_rate {
        Some(rate) => format!("{}@{:.0}/s", scenario.name(), rate),
        None => scenario.name().to_owned(),
    };
    Some(Summary {
        label,
        scenario,
        paced_rate: first.paced_rate,
        runs: mine.len(),
        events_per_sec: median(mine.iter().map(|run| run.events_per_sec))?,
        ratio_to_raw: median(mine.iter().filter_map(|r| r.vs_raw.map(|v| v.throughput))),
        p99_ratio_to_raw: median(mine.iter().filter_map(|r| r.vs_raw.map(|v| v.p99))),
        p50_ms: median(mine.iter().map(|run| run.p50_ms))?,
        p99_ms: median(mine.iter().map(|run| run.p99_ms))?,
        max_ms: mine.iter().map(|run| run.max_ms).fold(0.0, f64::max),
        errors: mine.iter().map(|run| run.errors).sum(),
        accepted,
        delivered: mine.iter().map(|run| run.delivered).sum(),
        gateway_cpu_sec_per_10k: cpu(|run| run.gateway_cpu_sec),
        broker_cpu_sec_per_10k: broker_cpu.map(|sec| per_10k(sec, accepted)),
        bench_cpu_sec_per_10k: cpu(|run| run.bench_cpu_sec),
        gateway_rss_peak_mib: mine
            .iter()
            .map(|r| r.gateway_rss_peak_mib)
            .fold(0.0, f64::max),
        machine_idle_pct: median(mine.iter().map(|run| run.machine_idle_pct))?,
        rest_pct: median(mine.iter().map(|run| run.rest_pct))?,
        failures: mine
            .iter()
            .flat_map(|run| run.failures.clone())
            .take(5)
            .collect(),
    })
}

/// What the run ran on and how it was set up, printed above the table.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    pub cores: usize,
    pub cpu: String,
    pub rabbitmq: String,
    pub concurrency: u32,
    pub runs: u32,
    pub seconds_per_run: f64,
    pub batch_size: u32,
    pub raw_window: u32,
    pub raw_channels: u16,
    /// `None` when the management plugin is absent.
    pub peer: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub setting: Setting,
    pub summaries: Vec<Summary>,
    pub targets: Vec<TargetCheck>,
    /// What OTLP export costs, when `traced` ran.
    pub tracing: Option<TracingCost>,
    /// Scheduled events at each pending level, when `scheduled` ran.
    pub scheduled: Option<ScheduledStudy>,
    /// The gateway's VmHWM at the end: its peak resident set over the whole bench.
    pub gateway_peak_rss_mib: f64,
    pub runs: Vec<Run>,
}

impl Report {
    /// `exported`: what the OTLP sink received, when `traced` ran.
    pub fn new(
        setting: Setting,
        runs: Vec<Run>,
        gateway_peak_rss_kib: u64,
        exported: Option<SinkCounts>,
        scheduled: Option<ScheduledStudy>,
    ) -> Self {
        let gateway_peak_rss_mib = gateway_peak_rss_kib as f64 / KIB_PER_MIB;
        let mut summaries: Vec<Summary> = Scenario::ROWS
            .into_iter()
            .filter_map(|scenario| summarise(&runs, scenario, false))
            .collect();
        summaries.extend(
            [Scenario::Raw, Scenario::Single]
                .into_iter()
                .filter_map(|scenario| summarise(&runs, scenario, true)),
        );
        let targets = targets::check(&summaries, gateway_peak_rss_mib, scheduled.as_ref());
        Report {
            setting,
            summaries,
            targets,
            tracing: exported.and_then(|sink| traced::cost(&runs, sink)),
            scheduled,
            gateway_peak_rss_mib,
            runs,
        }
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self).context("encoding the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
}
