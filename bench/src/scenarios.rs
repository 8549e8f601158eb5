//! What each scenario sends, and the worker loop that sends it.
//!
//! Every scenario carries the same analytics event (`critical` an achievement of similar
//! size), and `raw` and `peer` encode it with the gateway's own envelope code, so message
//! bodies on the broker are alike whichever way they came in.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use hyper::header::HeaderValue;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use event_gateway::domain::envelope::rfc3339_millis;
use event_gateway::domain::{Envelope, ValidEvent};

use crate::broker::Broker;
use crate::http::{Connection, Target, expect_success};
use crate::load::{Plan, Recorder, Schedule, Totals, run_workers};
use crate::{peer, raw, traced};

/// The routing key (and type) of the analytics event every scenario but `critical` sends.
pub const ANALYTICS: &str = "analytics.event_tracked";
/// The token's subject, which the gateway writes as `metadata.source`.
pub const SOURCE: &str = "bench";
/// The critical type of the scheduled events (critical in the gateway's default list).
pub const EXPIRY: &str = "reward.expired";
/// How far ahead `scheduled` schedules: its events stay pending for the whole run.
const SCHEDULED_AHEAD: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Always runs, as the reference; not a choice on the command line.
    #[value(skip)]
    Raw,
    Single,
    Batch,
    Critical,
    Peer,
    /// `single` with a `traceparent`, to a second gateway exporting its spans (OTLP).
    Traced,
    /// The load of `traced` on the plain gateway: always runs right before `traced`.
    #[value(skip)]
    #[serde(rename = "traced-off")]
    TracedOff,
    /// `single` with a `deliverAt` an hour ahead. Asked for, it runs the whole study of
    /// scheduled events (issue 16), which is not part of the default run.
    Scheduled,
}

impl Scenario {
    /// The scenarios measured against `raw`, each run right after a raw run (`traced`
    /// after `traced-off`, which follows the raw run).
    pub const COMPARED: [Scenario; 5] = [
        Scenario::Single,
        Scenario::Batch,
        Scenario::Critical,
        Scenario::Peer,
        Scenario::Traced,
    ];

    /// The table's rows, in order.
    pub const ROWS: [Scenario; 7] = [
        Scenario::Raw,
        Scenario::Single,
        Scenario::Batch,
        Scenario::Critical,
        Scenario::Peer,
        Scenario::TracedOff,
        Scenario::Traced,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Raw => "raw",
            Scenario::Single => "single",
            Scenario::Batch => "batch",
            Scenario::Critical => "critical",
            Scenario::Peer => "peer",
            Scenario::Traced => "traced",
            Scenario::TracedOff => "traced-off",
            Scenario::Scheduled => "scheduled",
        }
    }
}

/// Where the scenarios send their events.
pub struct Endpoints {
    pub gateway: SocketAddr,
    /// `Bearer <token>` for the gateway.
    pub bearer: HeaderValue,
    /// The management listener, when one answers.
    pub peer: Option<SocketAddr>,
    /// `POST /v1/events` on the gateway that exports its spans, when `traced` runs.
    pub traced: Option<Target>,
    pub batch_size: u32,
    pub raw_window: u32,
}

/// Runs `scenario` once under `plan`.
pub async fn run(
    scenario: Scenario,
    plan: &Plan,
    endpoints: &Endpoints,
    broker: &Broker,
) -> anyhow::Result<Totals> {
    match scenario {
        Scenario::Raw => raw::run(plan, endpoints.raw_window, broker).await,
        Scenario::Single => {
            let body = Bytes::from(analytics_event().to_string());
            run_gateway(plan, gateway_target(endpoints, "/v1/events"), body, 1).await
        }
        Scenario::Batch => {
            let events = vec![analytics_event(); endpoints.batch_size as usize];
            let body = Bytes::from(json!({ "events": events }).to_string());
            let target = gateway_target(endpoints, "/v1/events/batch");
            run_gateway(plan, target, body, u64::from(endpoints.batch_size)).await
        }
        Scenario::Critical => {
            let body = Bytes::from(achievement_event().to_string());
            run_gateway(plan, gateway_target(endpoints, "/v1/events"), body, 1).await
        }
        Scenario::Peer => {
            let addr = endpoints.peer.context("the management plugin is absent")?;
            peer::run(plan, addr, &broker.topology().exchange).await
        }
        Scenario::Traced => {
            let target = endpoints.traced.clone().context("no traced gateway")?;
            traced::run(plan, target, Bytes::from(analytics_event().to_string())).await
        }
        Scenario::TracedOff => {
            let body = Bytes::from(analytics_event().to_string());
            traced::run(plan, gateway_target(endpoints, "/v1/events"), body).await
        }
        Scenario::Scheduled => {
            let at = OffsetDateTime::now_utc() + SCHEDULED_AHEAD;
            let body = Bytes::from(due_at(analytics_event(), at).to_string());
            run_gateway(plan, gateway_target(endpoints, "/v1/events"), body, 1).await
        }
    }
}

/// The event of `single` and `batch`, as a client sends it.
pub fn analytics_event() -> Value {
    json!({"type": ANALYTICS, "data": {"analyticsId": "analytics-1", "userId": "user-1",
        "type": "click", "category": "ui", "event": "button", "value": 1}})
}

/// The event of `critical`, of about the same size.
fn achievement_event() -> Value {
    json!({"type": "achievement.completed", "data": {"achievementId": "achievement-1",
        "userId": "user-1", "name": "First", "points": 100,
        "completedAt": "2026-11-26T10:00:00Z"}})
}

/// A critical event that is scheduled in life (a reward runs out), of about the same size.
pub fn expiry_event() -> Value {
    json!({"type": EXPIRY, "data": {"rewardId": "reward-1", "userId": "user-1",
        "name": "Gold", "type": "coins", "value": 5}})
}

/// `event`, to be published at `at`.
pub fn due_at(mut event: Value, at: OffsetDateTime) -> Value {
    event["deliverAt"] = json!(rfc3339_millis(at));
    event
}

pub fn gateway_target(endpoints: &Endpoints, path: &str) -> Target {
    Target {
        addr: endpoints.gateway,
        path: path.to_owned(),
        authorization: endpoints.bearer.clone(),
    }
}

async fn run_gateway(
    plan: &Plan,
    target: Target,
    body: Bytes,
    events: u64,
) -> anyhow::Result<Totals> {
    run_workers(plan, events, |_, schedule| {
        http_worker(target.clone(), body.clone(), events, schedule)
    })
    .await
}

/// One keep-alive connection posting `body` until the schedule ends.
async fn http_worker(
    target: Target,
    body: Bytes,
    events: u64,
    mut schedule: Schedule,
) -> anyhow::Result<Recorder> {
    let mut connection = Connection::open(target.addr).await?;
    let mut recorder = Recorder::new()?;
    while let Some(start) = schedule.next().await {
        let outcome = match connection.post_json(&target, body.clone()).await {
            Ok(answer) => expect_success(&answer),
            Err(error) => {
                // The connection is unusable after a transport error: start a new one.
                connection = Connection::open(target.addr).await?;
                Err(error)
            }
        };
        recorder.record(start, events, outcome);
    }
    Ok(recorder)
}

/// A message encoded the way the gateway encodes it for the bus.
pub struct Encoded {
    pub id: Uuid,
    pub correlation_id: String,
    pub timestamp_secs: u64,
    pub body: Vec<u8>,
}

/// Makes fresh analytics messages: new id, correlation id and timestamp each time.
pub struct EnvelopeMaker {
    event: ValidEvent,
}

impl EnvelopeMaker {
    pub fn new() -> anyhow::Result<Self> {
        let event = ValidEvent::parse(analytics_event(), "")
            .map_err(|errors| anyhow!("the bench's own event is invalid: {errors:?}"))?;
        Ok(EnvelopeMaker { event })
    }

    pub fn next(&mut self) -> anyhow::Result<Encoded> {
        self.event.id = Uuid::now_v7();
        let correlation_id = Uuid::new_v4().to_string();
        let now = OffsetDateTime::now_utc();
        let envelope = Envelope::new(&self.event, &correlation_id, SOURCE, now);
        let body = serde_json::to_vec(&envelope).context("encoding an envelope")?;
        Ok(Encoded {
            id: self.event.id,
            timestamp_secs: now.unix_timestamp().unsigned_abs(),
            correlation_id,
            body,
        })
    }
}
