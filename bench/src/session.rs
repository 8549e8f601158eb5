//! One bench session: start the gateway, run the plan, report, and leave nothing behind.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::Args;
use crate::broker::Broker;
use crate::gateway::{Gateway, Naming};
use crate::http::Target;
use crate::load::Plan;
use crate::otlp_sink::OtlpSink;
use crate::procfs::{self, MachineTicks, RssSampler};
use crate::report::{Report, Run, Setting, Usage, median};
use crate::scenarios::{self, Endpoints, Scenario};
use crate::table;

const WARM_UP: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn run(args: Args) -> anyhow::Result<()> {
    let naming = Naming::fresh();
    let gateway = Gateway::start(&args.gateway_bin, args.amqp_port, &naming, None).await?;
    // On stderr, so the table stays clean: the pid to attach a profiler to.
    eprintln!(
        "bench: gateway pid {} on {}, exchange {}",
        gateway.pid, gateway.addr, naming.exchange
    );
    let exporting = match Exporting::start(&args, &naming).await {
        Ok(exporting) => exporting,
        Err(error) => {
            let _ = gateway.stop(&naming).await;
            return Err(error);
        }
    };
    let topology = naming.topology();
    let broker = Broker::connect(args.amqp_port, topology, args.raw_channels).await?;
    let measured = tokio::select! {
        measured = measure(&args, &gateway, exporting.as_ref(), &broker) => measured,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let mut logs = vec![gateway.log.clone()];
    logs.extend(exporting.as_ref().map(|e| e.gateway.log.clone()));
    let stopped = gateway.stop(&naming).await;
    let stopped_traced = match exporting {
        Some(exporting) => exporting.stop().await,
        None => Ok(()),
    };
    let removed = broker.remove_topology().await;
    let report = measured.with_context(|| format!("the gateways' logs are {logs:?}"))?;
    stopped?;
    stopped_traced?;
    removed.context("removing the bench's queues and exchanges")?;
    // The logs only matter when something failed; a clean run leaves no files behind.
    for log in &logs {
        let _ = std::fs::remove_file(log);
    }
    println!("{}", table::render(&report));
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(())
}

/// The second gateway of `traced`, exporting its spans to a sink inside the bench.
struct Exporting {
    gateway: Gateway,
    naming: Naming,
    sink: OtlpSink,
}

impl Exporting {
    /// `None` unless `traced` is asked for.
    async fn start(args: &Args, naming: &Naming) -> anyhow::Result<Option<Self>> {
        if !args.scenarios.contains(&Scenario::Traced) {
            return Ok(None);
        }
        let sink = OtlpSink::start().await?;
        let naming = naming.traced();
        let otlp = Some(sink.addr);
        let gateway = Gateway::start(&args.gateway_bin, args.amqp_port, &naming, otlp).await?;
        eprintln!(
            "bench: traced gateway pid {} on {}, exporting to {}",
            gateway.pid, gateway.addr, sink.addr
        );
        Ok(Some(Exporting {
            gateway,
            naming,
            sink,
        }))
    }

    fn target(&self) -> Target {
        Target {
            addr: self.gateway.addr,
            path: "/v1/events".to_owned(),
            authorization: self.gateway.bearer.clone(),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.gateway.stop(&self.naming).await
    }
}

async fn measure(
    args: &Args,
    gateway: &Gateway,
    exporting: Option<&Exporting>,
    broker: &Broker,
) -> anyhow::Result<Report> {
    let peer = probe_peer(args.management_port).await;
    let endpoints = Endpoints {
        gateway: gateway.addr,
        bearer: gateway.bearer.clone(),
        peer,
        traced: exporting.map(Exporting::target),
        batch_size: args.batch_size,
        raw_window: args.raw_window,
    };
    let pids = Pids {
        gateway: gateway.pid,
        traced: exporting.map(|e| e.gateway.pid),
    };
    let meter = Meter::new(pids, args.amqp_port, broker, &endpoints)?;
    let full_speed = Plan {
        concurrency: args.concurrency,
        duration: args.duration,
        rate: None,
    };
    if !args.smoke {
        meter.warm_up(&full_speed).await?;
    }
    let exported_before = exporting.map(|e| e.sink.counts());
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        for &scenario in &args.scenarios {
            if scenario == Scenario::Peer && peer.is_none() {
                continue;
            }
            runs.extend(meter.round(scenario, &full_speed).await?);
        }
    }
    if args.scenarios.contains(&Scenario::Single) {
        runs.extend(meter.paced_pairs(args, &runs).await?);
    }
    let peak_rss_kib = procfs::status_kib(gateway.pid, "VmHWM")?;
    let exported = exporting
        .zip(exported_before)
        .map(|(e, before)| e.sink.counts().since(before));
    let setting = setting(args, peer).await;
    Ok(Report::new(setting, runs, peak_rss_kib, exported))
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
    pids: Pids,
    broker_pid: Option<u32>,
    ticks_per_sec: f64,
    broker: &'a Broker,
    endpoints: &'a Endpoints,
}

/// The gateways: the plain one, and the one exporting spans when `traced` runs.
#[derive(Clone, Copy)]
struct Pids {
    gateway: u32,
    traced: Option<u32>,
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
        pids: Pids,
        amqp_port: u16,
        broker: &'a Broker,
        endpoints: &'a Endpoints,
    ) -> anyhow::Result<Self> {
        Ok(Meter {
            pids,
            broker_pid: procfs::find_listener(amqp_port),
            ticks_per_sec: procfs::ticks_per_second()? as f64,
            broker,
            endpoints,
        })
    }

    /// The gateway `scenario` sends to.
    fn gateway_pid(&self, scenario: Scenario) -> anyhow::Result<u32> {
        match scenario {
            Scenario::Traced => self.pids.traced.context("no traced gateway"),
            _ => Ok(self.pids.gateway),
        }
    }

    fn cpu_ticks(&self, gateway_pid: u32) -> anyhow::Result<CpuTicks> {
        Ok(CpuTicks {
            gateway: procfs::cpu_ticks(gateway_pid)?,
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
        let traced = self.pids.traced.map(|_| Scenario::Traced);
        for scenario in [Scenario::Raw, Scenario::Single].into_iter().chain(traced) {
            scenarios::run(scenario, &short, self.endpoints, self.broker).await?;
        }
        self.broker.drain().await.map(drop)
    }

    /// A raw run, then `scenario` compared with it; `traced` comes right after
    /// `traced-off`, both compared with the raw run.
    async fn round(&self, scenario: Scenario, plan: &Plan) -> anyhow::Result<Vec<Run>> {
        if scenario != Scenario::Traced {
            return Ok(self.pair(scenario, plan).await?.into());
        }
        let [raw, off] = self.pair(Scenario::TracedOff, plan).await?;
        let mut on = self.measure(Scenario::Traced, plan).await?;
        on.compare_with(&raw);
        Ok(vec![raw, off, on])
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
        let gateway_pid = self.gateway_pid(scenario)?;
        let before = self.cpu_ticks(gateway_pid)?;
        let rss = RssSampler::start(gateway_pid);
        let totals = scenarios::run(scenario, plan, self.endpoints, self.broker)
            .await
            .with_context(|| format!("running {}", scenario.name()))?;
        let gateway_rss_peak_kib = rss.finish().await?;
        let after = self.cpu_ticks(gateway_pid)?;
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
