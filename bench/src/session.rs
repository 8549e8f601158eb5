//! One bench session: start the gateway, run the plan, report, and leave nothing behind.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::Args;
use crate::broker::Broker;
use crate::gateway::{Gateway, Naming};
use crate::load::Plan;
use crate::procfs::{self, MachineTicks, RssSampler};
use crate::report::{Report, Run, Setting, Usage, median};
use crate::scenarios::{self, Endpoints, Scenario};
use crate::table;

const WARM_UP: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn run(args: Args) -> anyhow::Result<()> {
    let naming = Naming::fresh();
    let gateway = Gateway::start(&args.gateway_bin, args.amqp_port, &naming).await?;
    // On stderr, so the table stays clean: the pid to attach a profiler to.
    eprintln!(
        "bench: gateway pid {} on {}, exchange {}",
        gateway.pid, gateway.addr, naming.exchange
    );
    let topology = naming.topology();
    let broker = Broker::connect(args.amqp_port, topology, args.raw_channels).await?;
    let measured = tokio::select! {
        measured = measure(&args, &gateway, &broker) => measured,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let log = gateway.log.clone();
    let stopped = gateway.stop(&naming).await;
    let removed = broker.remove_topology().await;
    let report = measured.with_context(|| format!("the gateway's log is {}", log.display()))?;
    stopped?;
    removed.context("removing the bench's queues and exchanges")?;
    // The log only matters when something failed; a clean run leaves no files behind.
    let _ = std::fs::remove_file(&log);
    println!("{}", table::render(&report));
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(())
}

async fn measure(args: &Args, gateway: &Gateway, broker: &Broker) -> anyhow::Result<Report> {
    let peer = probe_peer(args.management_port).await;
    let endpoints = Endpoints {
        gateway: gateway.addr,
        bearer: gateway.bearer.clone(),
        peer,
        batch_size: args.batch_size,
        raw_window: args.raw_window,
    };
    let meter = Meter::new(gateway.pid, args.amqp_port, broker, &endpoints)?;
    let full_speed = Plan {
        concurrency: args.concurrency,
        duration: args.duration,
        rate: None,
    };
    if !args.smoke {
        meter.warm_up(&full_speed).await?;
    }
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        for &scenario in &args.scenarios {
            if scenario == Scenario::Peer && peer.is_none() {
                continue;
            }
            runs.extend(meter.pair(scenario, &full_speed).await?);
        }
    }
    if args.scenarios.contains(&Scenario::Single) {
        runs.extend(meter.paced_pairs(args, &runs).await?);
    }
    let peak_rss_kib = procfs::status_kib(gateway.pid, "VmHWM")?;
    Ok(Report::new(setting(args, peer).await, runs, peak_rss_kib))
}

/// The management listener, if something accepts connections on its port.
async fn probe_peer(port: u16) -> Option<SocketAddr> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let connected = tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await;
    matches!(connected, Ok(Ok(_))).then_some(addr)
}

async fn setting(args: &Args, peer: Option<SocketAddr>) -> Setting {
    Setting {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: procfs::cpu_model(),
        rabbitmq: rabbitmq_version().await,
        concurrency: args.concurrency,
        runs: args.runs,
        seconds_per_run: args.duration.as_secs_f64(),
        batch_size: args.batch_size,
        raw_window: args.raw_window,
        raw_channels: args.raw_channels,
        peer: peer.map(|addr| format!("management API on {addr}")),
    }
}

/// The broker's version as `rabbitmqctl` reports it; "unknown" without one. Only a label.
async fn rabbitmq_version() -> String {
    let asked = Command::new("rabbitmqctl").arg("version").output();
    match tokio::time::timeout(Duration::from_secs(20), asked).await {
        Ok(Ok(output)) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        _ => "unknown (rabbitmqctl version failed)".to_owned(),
    }
}

/// Runs scenarios and measures around them: CPU of the gateway, the broker and the bench,
/// the gateway's resident set, and the events that reached the queues.
struct Meter<'a> {
    gateway_pid: u32,
    broker_pid: Option<u32>,
    ticks_per_sec: f64,
    broker: &'a Broker,
    endpoints: &'a Endpoints,
}

/// CPU ticks of the gateway, the broker (if found) and the bench itself.
struct CpuTicks {
    gateway: u64,
    broker: Option<u64>,
    bench: u64,
    machine: MachineTicks,
}

impl<'a> Meter<'a> {
    fn new(
        gateway_pid: u32,
        amqp_port: u16,
        broker: &'a Broker,
        endpoints: &'a Endpoints,
    ) -> anyhow::Result<Self> {
        Ok(Meter {
            gateway_pid,
            broker_pid: procfs::find_listener(amqp_port),
            ticks_per_sec: procfs::ticks_per_second()? as f64,
            broker,
            endpoints,
        })
    }

    fn cpu_ticks(&self) -> anyhow::Result<CpuTicks> {
        Ok(CpuTicks {
            gateway: procfs::cpu_ticks(self.gateway_pid)?,
            broker: self.broker_pid.and_then(|pid| procfs::cpu_ticks(pid).ok()),
            bench: procfs::cpu_ticks(std::process::id())?,
            machine: procfs::machine_ticks()?,
        })
    }

    /// Connections, channels, caches and the broker's queues get going; nothing recorded.
    async fn warm_up(&self, plan: &Plan) -> anyhow::Result<()> {
        let short = Plan {
            duration: WARM_UP,
            ..*plan
        };
        for scenario in [Scenario::Raw, Scenario::Single] {
            scenarios::run(scenario, &short, self.endpoints, self.broker).await?;
        }
        self.broker.drain().await.map(drop)
    }

    /// A raw run, then `scenario` compared with it.
    async fn pair(&self, scenario: Scenario, plan: &Plan) -> anyhow::Result<[Run; 2]> {
        let raw = self.measure(Scenario::Raw, plan).await?;
        let mut other = self.measure(scenario, plan).await?;
        other.compare_with(&raw);
        Ok([raw, other])
    }

    /// Raw and single again, both paced at half single's median full-speed rate.
    async fn paced_pairs(&self, args: &Args, runs: &[Run]) -> anyhow::Result<Vec<Run>> {
        let single = runs
            .iter()
            .filter(|run| run.scenario == Scenario::Single)
            .map(|run| run.events_per_sec);
        let rate = median(single).context("no single run to pace from")? / 2.0;
        let paced = Plan {
            concurrency: args.concurrency,
            duration: args.duration,
            rate: Some(rate.max(1.0)),
        };
        let mut pairs = Vec::new();
        for _ in 0..args.runs {
            pairs.extend(self.pair(Scenario::Single, &paced).await?);
        }
        Ok(pairs)
    }

    async fn measure(&self, scenario: Scenario, plan: &Plan) -> anyhow::Result<Run> {
        let before = self.cpu_ticks()?;
        let rss = RssSampler::start(self.gateway_pid);
        let totals = scenarios::run(scenario, plan, self.endpoints, self.broker)
            .await
            .with_context(|| format!("running {}", scenario.name()))?;
        let gateway_rss_peak_kib = rss.finish().await?;
        let after = self.cpu_ticks()?;
        let delivered = self.broker.drain().await?;
        let usage = self.usage(&before, &after, gateway_rss_peak_kib);
        Ok(Run::new(scenario, plan.rate, totals, delivered, usage))
    }

    /// What the run cost between two readings.
    fn usage(&self, before: &CpuTicks, after: &CpuTicks, gateway_rss_peak_kib: u64) -> Usage {
        let gateway = after.gateway.saturating_sub(before.gateway);
        let broker = before
            .broker
            .zip(after.broker)
            .map(|(b, a)| a.saturating_sub(b));
        let bench = after.bench.saturating_sub(before.bench);
        let busy = after.machine.busy.saturating_sub(before.machine.busy);
        let idle = after.machine.idle.saturating_sub(before.machine.idle);
        let all = (busy + idle).max(1) as f64;
        let rest = busy.saturating_sub(gateway + broker.unwrap_or(0) + bench);
        let seconds = |ticks: u64| ticks as f64 / self.ticks_per_sec;
        Usage {
            gateway_cpu_sec: seconds(gateway),
            broker_cpu_sec: broker.map(seconds),
            bench_cpu_sec: seconds(bench),
            gateway_rss_peak_kib,
            machine_idle_pct: idle as f64 / all * 100.0,
            rest_pct: rest as f64 / all * 100.0,
        }
    }
}
