//! Due-time accuracy: events scheduled a few seconds ahead so that `--due-rate` of them fall
//! due each second for `--due-for`, taken off their queues as they arrive, and each
//! arrival compared with its envelope's `metadata.scheduledFor`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinSet;
use uuid::Uuid;

use event_gateway::domain::Family;

use crate::broker::Broker;
use crate::http::{Connection, Target, expect_success};
use crate::scenarios::{analytics_event, due_at, expiry_event};

/// One event in ten is critical (`reward.expired`), the rest analytics.
const CRITICAL_EVERY: u64 = 10;
/// The users the events belong to: the relay publishes one event per user per round.
const USERS: u64 = 1000;
/// Time to schedule everything before the first is due: a base, and this per event.
const LEAD_BASE: Duration = Duration::from_secs(3);
const LEAD_PER_EVENT: Duration = Duration::from_micros(200);
/// How long after the last due time a missing event is waited for.
const GRACE: Duration = Duration::from_secs(30);
/// Once every event arrived, how long duplicates are waited for.
const QUIET: Duration = Duration::from_secs(2);
/// Lateness is recorded in microseconds, up to 10 minutes.
const LATENESS_MAX_MICROS: u64 = 600_000_000;

/// How many fall due each second, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    pub rate: u32,
    pub span: Duration,
    /// Events per `POST /v1/events/batch`, and connections posting them.
    pub batch_size: u32,
    pub connections: u32,
}

impl Burst {
    fn events(&self) -> u64 {
        (f64::from(self.rate) * self.span.as_secs_f64()).round() as u64
    }

    /// Event `i`, due `i / rate` seconds after `first`: alternately analytics and, one
    /// in ten, a reward expiring, each of one of `USERS` users.
    fn event(&self, i: u64, first: OffsetDateTime) -> Value {
        let offset = Duration::from_secs_f64(i as f64 / f64::from(self.rate));
        let mut event = match i % CRITICAL_EVERY {
            0 => expiry_event(),
            _ => analytics_event(),
        };
        event["data"]["userId"] = json!(format!("due-user-{}", i % USERS));
        due_at(event, first + offset)
    }
}

/// What arrived, and how late, against what was scheduled.
#[derive(Debug, Clone, Serialize)]
pub struct Lateness {
    /// Events the gateway answered `scheduled` for.
    pub scheduled: u64,
    /// Seconds between the end of scheduling and the first due time.
    pub spare_secs: f64,
    /// Scheduled events that arrived, each counted once.
    pub arrived: u64,
    /// Arrivals before their `scheduledFor`, and the earliest of them.
    pub early: u64,
    pub max_early_ms: f64,
    pub lost: u64,
    /// Second and later arrivals of an event.
    pub duplicates: u64,
    /// Arrivals of something not scheduled in this run.
    pub strangers: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The latest arrival among the events due in each second, in order.
    pub worst_per_second_ms: Vec<f64>,
}

/// Schedules a burst through `target` (`POST /v1/events/batch`), takes it off the queues as
/// it falls due, and says how late it came.
pub async fn measure(target: &Target, broker: &Broker, burst: &Burst) -> anyhow::Result<Lateness> {
    broker.drain().await?;
    let lead = LEAD_BASE + LEAD_PER_EVENT * u32::try_from(burst.events()).unwrap_or(u32::MAX);
    let first = whole_millis(OffsetDateTime::now_utc() + lead);
    let events: Vec<Value> = (0..burst.events()).map(|i| burst.event(i, first)).collect();
    let ids = schedule(target, &events, burst).await?;
    let spare = first - OffsetDateTime::now_utc();
    let mut tally = Tally::new(ids, first, burst.span)?;
    let deadline = Instant::now() + spare.unsigned_abs() + burst.span + GRACE;
    let mut consumers = broker.consume(&[Family::Analytics, Family::Reward]).await?;
    loop {
        let until = match tally.all_arrived() {
            true => tokio::time::Instant::now() + QUIET,
            false => deadline.into(),
        };
        match tokio::time::timeout_at(until, consumers.deliveries.next()).await {
            Ok(Some(delivery)) => tally.record(&delivery.context("consuming")?.data)?,
            Ok(None) => bail!("the broker ended the consumers"),
            Err(_) => break,
        }
    }
    consumers.close().await?;
    Ok(tally.finish(spare.as_seconds_f64()))
}

/// `at` without its sub-millisecond part, as the gateway writes `scheduledFor`.
fn whole_millis(at: OffsetDateTime) -> OffsetDateTime {
    at - Duration::from_nanos(u64::from(at.nanosecond() % 1_000_000))
}

/// Posts the events in batches over `burst.connections` connections; the ids the gateway
/// gave them.
async fn schedule(
    target: &Target,
    events: &[Value],
    burst: &Burst,
) -> anyhow::Result<HashSet<Uuid>> {
    let bodies: Vec<Bytes> = events
        .chunks(burst.batch_size as usize)
        .map(|chunk| Bytes::from(json!({ "events": chunk }).to_string()))
        .collect();
    let connections = burst.connections as usize;
    let mut posting = JoinSet::new();
    for first in 0..connections.min(bodies.len()) {
        let mine: Vec<Bytes> = bodies
            .iter()
            .skip(first)
            .step_by(connections)
            .cloned()
            .collect();
        posting.spawn(post_batches(target.clone(), mine));
    }
    let mut ids = HashSet::with_capacity(events.len());
    while let Some(posted) = posting.join_next().await {
        ids.extend(posted.context("a scheduling worker panicked")??);
    }
    Ok(ids)
}

#[derive(Deserialize)]
struct BatchReceipt {
    results: Vec<Receipt>,
}

#[derive(Deserialize)]
struct Receipt {
    id: Uuid,
    status: String,
}

async fn post_batches(target: Target, bodies: Vec<Bytes>) -> anyhow::Result<Vec<Uuid>> {
    let mut connection = Connection::open(target.addr).await?;
    let mut ids = Vec::new();
    for body in bodies {
        let answer = connection.post_json(&target, body).await?;
        expect_success(&answer)?;
        let receipt: BatchReceipt =
            serde_json::from_slice(&answer.body).context("the batch receipt is not JSON")?;
        for result in receipt.results {
            if result.status != "scheduled" {
                bail!("event {} was {}, not scheduled", result.id, result.status);
            }
            ids.push(result.id);
        }
    }
    Ok(ids)
}

/// The parts of an envelope on the bus that tell which event it is and when it was due.
#[derive(Deserialize)]
struct Arrival {
    id: Uuid,
    metadata: ArrivalMetadata,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArrivalMetadata {
    scheduled_for: Option<String>,
}

impl Arrival {
    /// When it was due, if it was a scheduled event.
    fn due(&self) -> Option<OffsetDateTime> {
        let text = self.metadata.scheduled_for.as_deref()?;
        OffsetDateTime::parse(text, &Rfc3339).ok()
    }
}

/// Arrivals counted as they come.
struct Tally {
    expected: HashSet<Uuid>,
    seen: HashSet<Uuid>,
    first: OffsetDateTime,
    late: Histogram<u64>,
    worst_per_second: Vec<u64>,
    early: u64,
    max_early_micros: u64,
    duplicates: u64,
    strangers: u64,
}

impl Tally {
    fn new(expected: HashSet<Uuid>, first: OffsetDateTime, span: Duration) -> anyhow::Result<Self> {
        Ok(Tally {
            seen: HashSet::with_capacity(expected.len()),
            expected,
            first,
            late: Histogram::new_with_bounds(1, LATENESS_MAX_MICROS, 3)
                .context("creating a lateness histogram")?,
            worst_per_second: vec![0; span.as_secs_f64().ceil() as usize],
            early: 0,
            max_early_micros: 0,
            duplicates: 0,
            strangers: 0,
        })
    }

    fn all_arrived(&self) -> bool {
        self.seen.len() == self.expected.len()
    }

    fn record(&mut self, body: &[u8]) -> anyhow::Result<()> {
        let arrived = OffsetDateTime::now_utc();
        let arrival: Arrival =
            serde_json::from_slice(body).context("an envelope that is not one")?;
        let due = match arrival.due() {
            Some(due) if self.expected.contains(&arrival.id) => due,
            _ => {
                self.strangers += 1;
                return Ok(());
            }
        };
        if !self.seen.insert(arrival.id) {
            self.duplicates += 1;
            return Ok(());
        }
        let micros = |d: time::Duration| {
            u64::try_from(d.whole_microseconds().unsigned_abs()).unwrap_or(u64::MAX)
        };
        if arrived < due {
            self.early += 1;
            self.max_early_micros = self.max_early_micros.max(micros(due - arrived));
            return Ok(());
        }
        let late = micros(arrived - due).max(1);
        self.late.saturating_record(late);
        let second = usize::try_from((due - self.first).whole_seconds()).unwrap_or(0);
        if let Some(worst) = self.worst_per_second.get_mut(second) {
            *worst = (*worst).max(late);
        }
        Ok(())
    }

    fn finish(self, spare_secs: f64) -> Lateness {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Lateness {
            scheduled: self.expected.len() as u64,
            spare_secs,
            arrived: self.seen.len() as u64,
            early: self.early,
            max_early_ms: ms(self.max_early_micros),
            lost: (self.expected.len() - self.seen.len()) as u64,
            duplicates: self.duplicates,
            strangers: self.strangers,
            p50_ms: ms(self.late.value_at_quantile(0.5)),
            p90_ms: ms(self.late.value_at_quantile(0.9)),
            p99_ms: ms(self.late.value_at_quantile(0.99)),
            max_ms: ms(self.late.max()),
            worst_per_second_ms: self.worst_per_second.into_iter().map(ms).collect(),
        }
    }
}
