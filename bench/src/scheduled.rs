//! `--scenarios scheduled` (issue 16): scheduled events measured with an empty schedule, then
//! again with `--scheduled-pending` rows waiting far ahead. At each level: `/health`'s
//! count, the due-time accuracy (`due`), the release claim's plans (`schedule_table`), and
//! `single` and `scheduled` publishes, each after a raw run.

use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use serde_json::Value;

use crate::Args;
use crate::due::{self, Burst, Lateness};
use crate::http::get_json;
use crate::load::Plan;
use crate::meter::Meter;
use crate::procfs::RssSampler;
use crate::report::{KIB_PER_MIB, Run, Summary, summarise};
use crate::scenarios::{Endpoints, EnvelopeMaker, Scenario, gateway_target};
use crate::schedule_table::{ClaimTiming, PlanCache, ScheduleTable};

/// The gateway counts its schedule every 5 s; a count of a million rows takes a while.
const COUNTED_WITHIN: Duration = Duration::from_secs(30);
const HEALTH_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Serialize)]
pub struct ScheduledStudy {
    pub due_rate: u32,
    pub due_secs: f64,
    pub levels: Vec<Level>,
}

/// Everything measured with `pending` rows waiting.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub pending: u64,
    /// Putting the rows in, with ANALYZE.
    pub fill_secs: f64,
    /// `/health`'s `scheduled.pending` once the gateway had counted them, and how long
    /// after the fill it first showed at least `pending`.
    pub health_pending: i64,
    pub health_secs: f64,
    pub lateness: Lateness,
    /// The gateway's largest resident set while the burst was scheduled and released.
    pub lateness_rss_peak_mib: f64,
    pub claims: Vec<ClaimTiming>,
    /// raw, single and scheduled, labelled with the level.
    pub summaries: Vec<Summary>,
    pub runs: Vec<Run>,
}

pub async fn study(
    args: &Args,
    meter: &Meter<'_>,
    table: &ScheduleTable,
) -> anyhow::Result<ScheduledStudy> {
    let body = EnvelopeMaker::new()?.next()?.body;
    let mut levels = vec![level(args, meter, table, 0, &body).await?];
    if args.scheduled_pending > 0 {
        levels.push(level(args, meter, table, args.scheduled_pending, &body).await?);
    }
    Ok(ScheduledStudy {
        due_rate: args.due_rate,
        due_secs: args.due_for.as_secs_f64(),
        levels,
    })
}

/// Adds `pending` rows far ahead (none at the first level), then measures.
async fn level(
    args: &Args,
    meter: &Meter<'_>,
    table: &ScheduleTable,
    pending: u64,
    body: &[u8],
) -> anyhow::Result<Level> {
    let endpoints = meter.endpoints();
    let fill = table.fill(pending, body).await?;
    let counted = Instant::now();
    let health_pending = health_pending(endpoints, pending).await?;
    let health_secs = counted.elapsed().as_secs_f64();
    let burst = Burst {
        rate: args.due_rate,
        span: args.due_for,
        batch_size: args.batch_size,
        connections: args.concurrency,
    };
    let batch = gateway_target(endpoints, "/v1/events/batch");
    let rss = RssSampler::start(meter.pids().gateway);
    let lateness = due::measure(&batch, meter.broker(), &burst).await?;
    let lateness_rss_peak_mib = rss.finish().await? as f64 / KIB_PER_MIB;
    let mut claims = Vec::new();
    for plan_cache in [PlanCache::Custom, PlanCache::Generic] {
        claims.push(table.time_claim(plan_cache, body).await?);
    }
    let runs = publish_runs(args, meter).await?;
    let summaries = [Scenario::Raw, Scenario::Single, Scenario::Scheduled]
        .into_iter()
        .filter_map(|scenario| summarise(&runs, scenario, false))
        .map(|mut summary| {
            summary.label = format!("{} {}", summary.label, count_label(pending));
            summary
        })
        .collect();
    Ok(Level {
        pending,
        fill_secs: fill.as_secs_f64(),
        health_pending,
        health_secs,
        lateness,
        lateness_rss_peak_mib,
        claims,
        summaries,
        runs,
    })
}

/// `single` and `scheduled`, each after a raw run, `--runs` times at full speed.
async fn publish_runs(args: &Args, meter: &Meter<'_>) -> anyhow::Result<Vec<Run>> {
    let plan = Plan {
        concurrency: args.concurrency,
        duration: args.duration,
        rate: None,
    };
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        for scenario in [Scenario::Single, Scenario::Scheduled] {
            runs.extend(meter.pair(scenario, &plan).await?);
        }
    }
    Ok(runs)
}

/// `/health`'s `scheduled.pending`, once it is at least `pending`.
async fn health_pending(endpoints: &Endpoints, pending: u64) -> anyhow::Result<i64> {
    let deadline = Instant::now() + COUNTED_WITHIN;
    loop {
        let health = get_json(endpoints.gateway, "/health").await?;
        let counted = health["scheduled"]["pending"].as_i64();
        match counted {
            Some(count) if count.unsigned_abs() >= pending => return Ok(count),
            _ if Instant::now() >= deadline => bail!(
                "/health did not count {pending} pending within {COUNTED_WITHIN:?}: {}",
                scheduled_part(&health)
            ),
            _ => tokio::time::sleep(HEALTH_POLL).await,
        }
    }
}

fn scheduled_part(health: &Value) -> String {
    health
        .get("scheduled")
        .map_or("no scheduled".to_owned(), Value::to_string)
}

/// 1000000 as `1M`, 10000 as `10k`.
pub fn count_label(count: u64) -> String {
    match count {
        0 => "0".to_owned(),
        n if n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

impl Level {
    /// This level's events/s and ratio to raw for `scenario`.
    pub fn speed(&self, scenario: Scenario) -> Option<(f64, f64)> {
        let row = self.summaries.iter().find(|row| row.scenario == scenario)?;
        Some((row.events_per_sec, row.ratio_to_raw?))
    }
}
