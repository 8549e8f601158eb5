//! The sixteen faults, and the life of one scenario: its own exchange, queues, database
//! and Redis keys on the shared private services; one or two gateways behind proxies;
//! load; the fault; recovery; then everything read back and checked.

mod broker;
mod lifecycle;
mod processes;
mod scheduled;
mod stores;

use std::path::PathBuf;
use std::time::Duration;

pub use lifecycle::run_scenario;

use crate::gateway::{Gateway, GatewayConfig};
use crate::load::Load;
use crate::observe::Message;
use crate::proxy::Proxy;
use crate::services::Services;

const WARMUP: Duration = Duration::from_secs(3);
/// Longest wait for the first `published` answer after the fault is removed.
const RECOVERY_LIMIT: Duration = Duration::from_secs(20);
/// Load that goes on after recovery.
const AFTERWARDS: Duration = Duration::from_secs(2);
/// How long unanswered events keep retrying once the load stops.
const GRACE: Duration = Duration::from_secs(20);
/// How long the relay may take to publish what the outbox holds.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    BrokerKill,
    BrokerConnectionsClosed,
    BrokerBlackhole,
    PostgresKill,
    BrokerAndPostgresCut,
    RedisKill,
    GatewayKillWithOutbox,
    SigtermMidLoad,
    SigtermBrokerStalled,
    MemoryAlarm,
    QueueDeleted,
    QueueFull,
    TwoGatewaysOneKilled,
    CommitCut,
    ScheduledGatewayKill,
    ScheduledTwoGateways,
}

impl Fault {
    pub const ALL: [Fault; 16] = [
        Fault::BrokerKill,
        Fault::BrokerConnectionsClosed,
        Fault::BrokerBlackhole,
        Fault::PostgresKill,
        Fault::BrokerAndPostgresCut,
        Fault::RedisKill,
        Fault::GatewayKillWithOutbox,
        Fault::SigtermMidLoad,
        Fault::SigtermBrokerStalled,
        Fault::MemoryAlarm,
        Fault::QueueDeleted,
        Fault::QueueFull,
        Fault::TwoGatewaysOneKilled,
        Fault::CommitCut,
        Fault::ScheduledGatewayKill,
        Fault::ScheduledTwoGateways,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::BrokerKill => "broker-kill",
            Fault::BrokerConnectionsClosed => "broker-connections-closed",
            Fault::BrokerBlackhole => "broker-blackhole",
            Fault::PostgresKill => "postgres-kill",
            Fault::BrokerAndPostgresCut => "broker-and-postgres-cut",
            Fault::RedisKill => "redis-kill",
            Fault::GatewayKillWithOutbox => "gateway-kill-with-outbox",
            Fault::SigtermMidLoad => "sigterm-mid-load",
            Fault::SigtermBrokerStalled => "sigterm-broker-stalled",
            Fault::MemoryAlarm => "memory-alarm",
            Fault::QueueDeleted => "queue-deleted",
            Fault::QueueFull => "queue-full",
            Fault::TwoGatewaysOneKilled => "two-gateways-one-killed",
            Fault::CommitCut => "commit-cut",
            Fault::ScheduledGatewayKill => "scheduled-gateway-kill",
            Fault::ScheduledTwoGateways => "scheduled-two-gateways",
        }
    }

    /// How many gateways share the scenario's database.
    fn gateways(self) -> usize {
        match self {
            Fault::TwoGatewaysOneKilled | Fault::ScheduledTwoGateways => 2,
            _ => 1,
        }
    }

    /// Injects the fault while `load` runs (and removes it, noting when).
    async fn inject(self, run: &mut Run<'_>, load: &Load) -> anyhow::Result<()> {
        match self {
            Fault::BrokerKill => broker::kill_and_restart(run).await,
            Fault::BrokerConnectionsClosed => broker::close_connections(run).await,
            Fault::BrokerBlackhole => broker::blackhole(run).await,
            Fault::MemoryAlarm => broker::memory_alarm(run).await,
            Fault::QueueDeleted => broker::queue_deleted(run).await,
            Fault::QueueFull => broker::queue_full(run).await,
            Fault::PostgresKill => stores::postgres_kill(run).await,
            Fault::BrokerAndPostgresCut => stores::broker_and_postgres_cut(run).await,
            Fault::RedisKill => stores::redis_kill(run).await,
            Fault::CommitCut => stores::commit_cut(run).await,
            Fault::GatewayKillWithOutbox => processes::kill_with_outbox(run).await,
            Fault::SigtermMidLoad => processes::sigterm_mid_load(run).await,
            Fault::SigtermBrokerStalled => processes::sigterm_broker_stalled(run).await,
            Fault::TwoGatewaysOneKilled => processes::two_gateways_one_killed(run).await,
            Fault::ScheduledGatewayKill => scheduled::gateway_kill(run, load).await,
            Fault::ScheduledTwoGateways => scheduled::two_gateways(run, load).await,
        }
    }
}

/// One scenario under way.
pub struct Run<'a> {
    pub services: &'a mut Services,
    pub namespace: String,
    /// Between the gateways and the broker, and between them and PostgreSQL.
    pub broker: Proxy,
    pub database: Proxy,
    pub gateways: Vec<Gateway>,
    configs: Vec<GatewayConfig>,
    logs_dir: PathBuf,
    started: usize,
    /// When the fault was removed (ms since the epoch).
    pub restored_ms: u64,
    /// Messages the scenario took off a queue itself before the end.
    pub taken: Vec<Message>,
    pub notes: Vec<String>,
}

impl Run<'_> {
    /// Starts gateway `index` and waits until it is ready.
    pub async fn start_gateway(&mut self, index: usize) -> anyhow::Result<()> {
        self.launch(index, "/health/ready").await
    }

    /// Starts gateway `index` again, on the same port and database, and waits until it
    /// serves: clients need no more (it may not be ready while its outbox drains).
    pub async fn restart_gateway(&mut self, index: usize) -> anyhow::Result<()> {
        self.launch(index, "/health/live").await
    }

    async fn launch(&mut self, index: usize, probe: &str) -> anyhow::Result<()> {
        self.started += 1;
        let name = format!("gateway-{index}-{}.log", self.started);
        let gateway =
            Gateway::start(&self.configs[index], &self.logs_dir.join(name), probe).await?;
        if index < self.gateways.len() {
            self.gateways[index] = gateway;
        } else {
            self.gateways.push(gateway);
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.services
            .postgres
            .url(&self.namespace.replace('-', "_"))
    }
}
