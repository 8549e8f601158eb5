//! The report as text: the setting, one row per scenario, the peak RSS, the targets.

use std::fmt::Write as _;

use crate::report::{Report, Summary};
use crate::scenarios::{ANALYTICS, EXPIRY, Scenario};
use crate::schedule_table::CLAIM_ROWS;
use crate::scheduled::ScheduledStudy;
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
    if !report.summaries.is_empty() {
        out.push_str(&rows(report));
    }
    if let Some(cost) = &report.tracing {
        out.push_str(&tracing_lines(cost));
    }
    if let Some(study) = &report.scheduled {
        out.push_str(&scheduled_lines(study));
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
    let mut out = header();
    for row in &report.summaries {
        out.push_str(&row_line(row));
    }
    if report.setting.peer.is_none() {
        out.push_str("peer             absent: nothing answers on the management port (the bench enables nothing)\n");
    }
    out.push_str(&failure_lines(&report.summaries));
    out
}

fn header() -> String {
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
    out
}

fn failure_lines(rows: &[Summary]) -> String {
    let mut out = String::new();
    for row in rows.iter().filter(|row| !row.failures.is_empty()) {
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

/// Issue 16's study: lateness, the claim's plans and publishing, at each pending level.
fn scheduled_lines(study: &ScheduledStudy) -> String {
    let mut out = format!(
        "\nscheduled events: {} fall due per second for {:.0} s at each level (1 in 10 {EXPIRY}, \
         the rest {ANALYTICS}), all scheduled first, in batches; lateness = arrival at the bench's \
         consumer - metadata.scheduledFor\n",
        study.due_rate, study.due_secs,
    );
    let _ = writeln!(
        out,
        "{:>9} {:>6} {:>9} {:>9} {:>8} {:>5} {:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6}",
        "pending",
        "fill s",
        "/health",
        "scheduled",
        "arrived",
        "early",
        "lost",
        "dups",
        "other",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "spare s",
        "gw MiB"
    );
    for level in &study.levels {
        let l = &level.lateness;
        let _ = writeln!(
            out,
            "{:>9} {:>6.1} {:>9} {:>9} {:>8} {:>5} {:>5} {:>5} {:>5} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>6.1}",
            level.pending,
            level.fill_secs,
            level.health_pending,
            l.scheduled,
            l.arrived,
            l.early,
            l.lost,
            l.duplicates,
            l.strangers,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms,
            l.spare_secs,
            level.lateness_rss_peak_mib
        );
    }
    out.push_str("latest arrival among the events due in each second, ms:\n");
    for level in &study.levels {
        let worst: Vec<String> = level
            .lateness
            .worst_per_second_ms
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect();
        let _ = writeln!(out, "{:>9}: {}", level.pending, worst.join(" "));
    }
    out.push_str(&claim_lines(study));
    out.push_str(&publishing_lines(study));
    out
}

fn claim_lines(study: &ScheduledStudy) -> String {
    let mut out = format!(
        "\nrelease claim: the `due` part of release_due taking {CLAIM_ROWS} due rows, \
         EXPLAIN (ANALYZE, BUFFERS), median and max of 10\n{:>9} {:>8} {:>9} {:>7} {:>5} {:>8}  plan\n",
        "pending", "plan", "median ms", "max ms", "rows", "buffers"
    );
    for level in &study.levels {
        for claim in &level.claims {
            let _ = writeln!(
                out,
                "{:>9} {:>8} {:>9.3} {:>7.3} {:>5} {:>8}  {}",
                level.pending,
                claim.plan_cache.name(),
                claim.median_ms,
                claim.max_ms,
                claim.rows,
                claim.buffers,
                claim.plan
            );
        }
    }
    out
}

/// The publish rows of every level, then the last level against the first.
fn publishing_lines(study: &ScheduledStudy) -> String {
    let mut out = "\npublishing with rows pending (second word); scheduled: single with a \
                   deliverAt an hour ahead, delivered = rows found in the schedule\n"
        .to_owned();
    out.push_str(&header());
    let rows: Vec<Summary> = study
        .levels
        .iter()
        .flat_map(|level| level.summaries.clone())
        .collect();
    for row in &rows {
        out.push_str(&row_line(row));
    }
    out.push_str(&failure_lines(&rows));
    let (Some(none), Some(most)) = (study.levels.first(), study.levels.last()) else {
        return out;
    };
    if most.pending == none.pending {
        return out;
    }
    for scenario in [Scenario::Single, Scenario::Scheduled] {
        if let (Some((rate_0, raw_0)), Some((rate_n, raw_n))) =
            (none.speed(scenario), most.speed(scenario))
        {
            let _ = writeln!(
                out,
                "{} with {} pending / with none: events/s {:.3}x, x raw {:.2} -> {:.2}",
                scenario.name(),
                most.pending,
                rate_n / rate_0.max(f64::MIN_POSITIVE),
                raw_0,
                raw_n
            );
        }
    }
    out
}
