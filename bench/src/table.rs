//! The report as text: the setting, one row per scenario, the peak RSS, the targets.

use std::fmt::Write as _;

use crate::report::{Report, Summary};
use crate::scenarios::Scenario;
use crate::traced::TracingCost;

/// The whole printed report. `write!` to a `String` cannot fail, hence the `let _`.
pub fn render(report: &Report) -> String {
    let s = &report.setting;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "machine: {} cores, {}, RabbitMQ {}",
        s.cores, s.cpu, s.rabbitmq
    );
    let _ = writeln!(
        out,
        "plan: {} runs x {:.0}s per scenario, each after a raw run; concurrency {}; batch {} events; raw window {} per publisher; raw channels {}",
        s.runs, s.seconds_per_run, s.concurrency, s.batch_size, s.raw_window, s.raw_channels,
    );
    let _ = writeln!(out, "peer: {}\n", s.peer.as_deref().unwrap_or("absent"));
    out.push_str(&rows(report));
    if let Some(cost) = &report.tracing {
        out.push_str(&tracing_lines(cost));
    }
    let _ = writeln!(
        out,
        "\ngateway peak RSS (VmHWM over the whole bench): {:.1} MiB\n\ntargets (informational):",
        report.gateway_peak_rss_mib
    );
    for check in &report.targets {
        let _ = writeln!(
            out,
            "  {}  {}: {}",
            check.verdict(),
            check.target,
            check.detail
        );
    }
    out
}

fn rows(report: &Report) -> String {
    let mut out = format!(
        "{:<16} {:>4} {:>9} {:>6} {:>7} {:>7} {:>8} {:>6} {:>19} {:>8} {:>8} {:>8} {:>7} {:>5} {:>5}\n",
        "scenario",
        "runs",
        "events/s",
        "x raw",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "delivered/accepted",
        "gw cpu",
        "mq cpu",
        "bench",
        "gw RSS",
        "idle",
        "rest"
    );
    let _ = writeln!(
        out,
        "{:>103} {:>8} {:>8} {:>7} {:>5} {:>5}",
        "s/10k", "s/10k", "s/10k", "MiB", "%", "%"
    );
    for row in &report.summaries {
        out.push_str(&row_line(row));
    }
    if report.setting.peer.is_none() {
        out.push_str("peer             absent: nothing answers on the management port (the bench enables nothing)\n");
    }
    for row in report
        .summaries
        .iter()
        .filter(|row| !row.failures.is_empty())
    {
        let _ = writeln!(
            out,
            "  {} errors, e.g.: {}",
            row.label,
            row.failures.join(" | ")
        );
    }
    out
}

fn row_line(row: &Summary) -> String {
    let optional = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.3}"));
    // Raw is its own reference.
    let ratio = row
        .ratio_to_raw
        .or((row.scenario == Scenario::Raw).then_some(1.0));
    format!(
        "{:<16} {:>4} {:>9.0} {:>6} {:>7.2} {:>7.2} {:>8.2} {:>6} {:>19} {:>8.3} {:>8} {:>8.3} {:>7.1} {:>5.0} {:>5.0}\n",
        row.label,
        row.runs,
        row.events_per_sec,
        ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
        row.p50_ms,
        row.p99_ms,
        row.max_ms,
        row.errors,
        format!("{}/{}", row.delivered, row.accepted),
        row.gateway_cpu_sec_per_10k,
        optional(row.broker_cpu_sec_per_10k),
        row.bench_cpu_sec_per_10k,
        row.gateway_rss_peak_mib,
        row.machine_idle_pct,
        row.rest_pct,
    )
}

/// Export on against off, then what the sink received.
fn tracing_lines(cost: &TracingCost) -> String {
    let sink = &cost.sink;
    format!(
        "\ntracing, export on / off (traced / traced-off, median of {} pairs): events/s {:.3}x, p50 {:.2}x, p99 {:.2}x, gw cpu per event {:.2}x, gw RSS {:.2}x\n\
         OTLP sink: {} POST /v1/traces, {:.1} MiB of JSON, {} spans ({:.1} per traced event)\n",
        cost.pairs,
        cost.events_per_sec,
        cost.p50,
        cost.p99,
        cost.gateway_cpu_per_event,
        cost.gateway_rss_peak,
        sink.requests,
        sink.bytes as f64 / (1024.0 * 1024.0),
        sink.spans,
        cost.spans_per_event,
    )
}
