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
use crate::meter::{Meter, Pids};
use crate::otlp_sink::OtlpSink;
use crate::procfs;
use crate::report::{Report, Setting};
use crate::scenarios::{Endpoints, Scenario};
use crate::schedule_table::ScheduleTable;
use crate::{scheduled, table};

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
        measured = measure(&args, &gateway, &naming, exporting.as_ref(), &broker) => measured,
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
    naming: &Naming,
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
    let table = match args.scenarios.contains(&Scenario::Scheduled) {
        true => Some(ScheduleTable::connect(&naming.database_url).await?),
        false => None,
    };
    let meter = Meter::new(pids, args.amqp_port, broker, &endpoints, table.as_ref())?;
    let full_speed = Plan {
        concurrency: args.concurrency,
        duration: args.duration,
        rate: None,
    };
    if !args.smoke {
        meter.warm_up(&full_speed).await?;
    }
    let exported_before = exporting.map(|e| e.sink.counts());
    let runs = meter.compared_runs(args, &full_speed).await?;
    let scheduled = match &table {
        Some(table) => Some(scheduled::study(args, &meter, table).await?),
        None => None,
    };
    if let Some(table) = table {
        table.close().await;
    }
    let peak_rss_kib = procfs::status_kib(gateway.pid, "VmHWM")?;
    let exported = exporting
        .zip(exported_before)
        .map(|(e, before)| e.sink.counts().since(before));
    let setting = setting(args, peer).await;
    Ok(Report::new(
        setting,
        runs,
        peak_rss_kib,
        exported,
        scheduled,
    ))
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
