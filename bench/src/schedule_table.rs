//! The gateway's `scheduled_events` table, reached directly: a million rows pending put in
//! with one statement (the API would take minutes), the rows of `scheduled` counted and
//! removed after each run, and the release claim timed by `EXPLAIN ANALYZE`.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::report::median;
use crate::scenarios::{ANALYTICS, SOURCE};

/// The gateway's `RELEASE_BATCH`: the most rows one claim takes.
pub const CLAIM_ROWS: i64 = 1000;
/// Timings of each claim plan, per pending level.
const CLAIM_SAMPLES: usize = 10;
/// The source of the rows put in directly, so nothing else is mistaken for them.
const PENDING_SOURCE: &str = "bench-pending";

/// Rows due from a day ahead to 28 days ahead (`SCHEDULE_MAX_AHEAD` is 30 days), one
/// user in ten rows; the body is a real envelope (never published: they never fall due).
const FILL: &str =
    "INSERT INTO scheduled_events (event_id, deliver_at, type, user_id, ordering_key,
                                      correlation_id, source, timestamp_secs, body, critical,
                                      accepted_at)
     SELECT gen_random_uuid(), now() + interval '1 day' + (i::float8 / $1) * interval '27 days',
            $2, 'pending-' || i % 100000, 'pending-' || i % 100000, gen_random_uuid()::text,
            $3, extract(epoch FROM now())::bigint, $4, false, now()
     FROM generate_series(1, $1) AS i";

/// `CLAIM_ROWS` rows due a second ago, visible only to the transaction that claims them.
const DUE_NOW: &str =
    "INSERT INTO scheduled_events (event_id, deliver_at, type, user_id, ordering_key,
                                      correlation_id, source, timestamp_secs, body, critical,
                                      accepted_at)
     SELECT gen_random_uuid(), now() - interval '1 second', $2, 'due-' || i, 'due-' || i,
            gen_random_uuid()::text, $3, extract(epoch FROM now())::bigint, $4, false, now()
     FROM generate_series(1, $1) AS i";

/// The `due` part of `release_due` in src/store/schedule.rs (the part that reads the
/// pending rows), as a statement of its own so that both its plans can be explained.
const PREPARE_CLAIM: &str = "PREPARE bench_claim(bigint) AS
     SELECT seq FROM scheduled_events
     WHERE state = 'scheduled' AND deliver_at <= now()
     ORDER BY deliver_at, seq
     LIMIT $1
     FOR UPDATE";

/// PostgreSQL plans a prepared statement (as sqlx prepares the gateway's) for its
/// parameters five times, then may keep a generic plan: both are timed.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanCache {
    Custom,
    Generic,
}

impl PlanCache {
    pub fn name(self) -> &'static str {
        match self {
            PlanCache::Custom => "custom",
            PlanCache::Generic => "generic",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            PlanCache::Custom => "SET LOCAL plan_cache_mode = force_custom_plan",
            PlanCache::Generic => "SET LOCAL plan_cache_mode = force_generic_plan",
        }
    }
}

/// The claim of `CLAIM_ROWS` due rows, explained `CLAIM_SAMPLES` times.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimTiming {
    pub plan_cache: PlanCache,
    /// The plan's nodes, outermost first.
    pub plan: String,
    pub rows: u64,
    /// Shared buffers hit or read by the whole plan, in the median sample.
    pub buffers: u64,
    pub median_ms: f64,
    pub max_ms: f64,
}

pub struct ScheduleTable {
    pool: PgPool,
}

impl ScheduleTable {
    pub async fn connect(database_url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(database_url)
            .await
            .context("connecting to the gateway's database")?;
        Ok(ScheduleTable { pool })
    }

    /// Adds `rows` pending rows, then has the planner count them (autovacuum may be off).
    pub async fn fill(&self, rows: u64, body: &[u8]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        sqlx::query(FILL)
            .bind(i64::try_from(rows).context("too many rows")?)
            .bind(ANALYTICS)
            .bind(PENDING_SOURCE)
            .bind(body)
            .execute(&self.pool)
            .await
            .context("filling the schedule")?;
        sqlx::query("ANALYZE scheduled_events")
            .execute(&self.pool)
            .await
            .context("ANALYZE")?;
        Ok(started.elapsed())
    }

    /// Removes what `scheduled` runs scheduled (an hour ahead) and returns how many.
    pub async fn drain(&self) -> anyhow::Result<u64> {
        let removed =
            sqlx::query("DELETE FROM scheduled_events WHERE source = $1 AND state = 'scheduled'")
                .bind(SOURCE)
                .execute(&self.pool)
                .await
                .context("removing the scheduled run's rows")?;
        Ok(removed.rows_affected())
    }

    /// The claim under `plan_cache`, timed over `CLAIM_SAMPLES` transactions.
    pub async fn time_claim(
        &self,
        plan_cache: PlanCache,
        body: &[u8],
    ) -> anyhow::Result<ClaimTiming> {
        let mut samples = Vec::with_capacity(CLAIM_SAMPLES);
        for _ in 0..CLAIM_SAMPLES {
            samples.push(self.explain_claim(plan_cache, body).await?);
        }
        samples.sort_by(|a, b| a.1.total_cmp(&b.1));
        let times = samples.iter().map(|(_, ms)| *ms);
        let median_ms = median(times).context("no claim timed")?;
        let (plan, _) = &samples[samples.len() / 2];
        Ok(ClaimTiming {
            plan_cache,
            plan: shape(&plan["Plan"]),
            rows: plan["Plan"]["Actual Rows"].as_u64().unwrap_or(0),
            buffers: ["Shared Hit Blocks", "Shared Read Blocks"]
                .iter()
                .filter_map(|key| plan["Plan"][key].as_u64())
                .sum(),
            median_ms,
            max_ms: samples.last().map_or(0.0, |(_, ms)| *ms),
        })
    }

    /// One claim of `CLAIM_ROWS` due rows put in by its own transaction, rolled back: the
    /// gateway never sees them. Returns the plan and its execution time.
    async fn explain_claim(
        &self,
        plan_cache: PlanCache,
        body: &[u8],
    ) -> anyhow::Result<(Value, f64)> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(DUE_NOW)
            .bind(CLAIM_ROWS)
            .bind(ANALYTICS)
            .bind(PENDING_SOURCE)
            .bind(body)
            .execute(&mut *tx)
            .await
            .context("adding due rows")?;
        let explained = explain(&mut tx, plan_cache).await;
        tx.rollback().await.context("rolling the claim back")?;
        let Json(explained): Json<Value> = explained?;
        let plan = explained[0].clone();
        let ms = plan["Execution Time"]
            .as_f64()
            .context("no Execution Time")?;
        Ok((plan, ms))
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

async fn explain(
    connection: &mut PgConnection,
    plan_cache: PlanCache,
) -> anyhow::Result<Json<Value>> {
    sqlx::raw_sql(PREPARE_CLAIM)
        .execute(&mut *connection)
        .await?;
    sqlx::raw_sql(plan_cache.setting())
        .execute(&mut *connection)
        .await?;
    let statement =
        format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE bench_claim({CLAIM_ROWS})");
    let explained = sqlx::query_scalar(AssertSqlSafe(statement))
        .fetch_one(&mut *connection)
        .await;
    let deallocated = sqlx::raw_sql("DEALLOCATE bench_claim")
        .execute(&mut *connection)
        .await;
    let explained = explained.context("explaining the claim")?;
    deallocated.context("DEALLOCATE")?;
    Ok(explained)
}

/// `Limit > LockRows > Index Scan using scheduled_events_due`: each node and its first child.
fn shape(node: &Value) -> String {
    let mut names = Vec::new();
    let mut next = Some(node);
    while let Some(node) = next {
        let kind = node["Node Type"].as_str().unwrap_or("?");
        names.push(match node["Index Name"].as_str() {
            Some(index) => format!("{kind} using {index}"),
            None => kind.to_owned(),
        });
        next = node["Plans"].get(0);
    }
    names.join(" > ")
}
