//! lapin against amqprs: the client-side cost of publishing with broker confirms.
//!
//! Both clients publish the same messages to a topic exchange and queue of the bench's own
//! (`amqp-clients-<uuid>`, durable, deleted at the end): persistent, mandatory, about 400 bytes
//! of JSON with a fresh `message_id`, routing key `analytics.event_tracked`. Each client has
//! one connection with `--channels` confirm-mode channels shared by `--concurrency` tasks; a
//! task publishes one message, awaits its confirm, then publishes the next, as an HTTP request
//! to the gateway does. Runs alternate lapin, amqprs, lapin, ... for `--duration` each.
//!
//! Each run reports confirmed messages per second, this process's CPU time (user + system) per
//! 10k confirmed messages, the broker's CPU time per 10k when its process can be found from
//! the port it listens on, the errors (a nack, a return, a missing confirm, a failed publish),
//! and the messages the queue holds afterwards, which must equal the confirmed ones. The table
//! at the end gives the medians of the runs and the ratios amqprs / lapin.
//!
//! ```text
//! cargo bench -p event-gateway-bench --bench amqp_clients -- --duration 5 --runs 3
//! ```
//!
//! Other flags: `--concurrency 32`, `--channels 1`,
//! `--amqp-url amqp://guest:guest@127.0.0.1:5672/%2f`.
//!
//! Layout: `args.rs` reads the command line; `message.rs` is what both clients publish;
//! `client.rs` names the clients and the session and publisher each provides, which
//! `lapin_client.rs` and `amqprs_client.rs` implement (`amqprs_confirms.rs` matches amqprs's
//! confirms to the publishes waiting for them); `topology.rs` owns the bench's exchange and
//! queue; `runs.rs` alternates the clients and times each run; `cpu.rs` reads this process's
//! and the broker's CPU time; `report.rs` prints each run and the summary.

mod amqprs_client;
mod amqprs_confirms;
mod args;
mod client;
mod cpu;
mod lapin_client;
mod message;
mod report;
mod runs;
mod topology;

use std::sync::Arc;

use anyhow::{Context, anyhow};
use lapin::uri::AMQPUri;

use crate::args::Args;
use crate::cpu::Broker;
use crate::message::event_body;
use crate::report::print_summary;
use crate::runs::Bench;
use crate::topology::Topology;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let uri: AMQPUri = args
        .amqp_url
        .parse()
        .map_err(|error: String| anyhow!(error))?;
    let broker = Broker::find(uri.authority.port);
    let body: Arc<[u8]> = event_body().into();
    println!(
        "{} s per run, {} runs per client, {} tasks on {} channels, {} byte bodies, broker pid {}",
        args.duration.as_secs_f64(),
        args.runs,
        args.concurrency,
        args.channels,
        body.len(),
        // The process that owns the port: a proxy in front of the broker would show here.
        broker.as_ref().map_or("n/a".to_owned(), |b| {
            let name = std::fs::read_to_string(format!("/proc/{}/comm", b.pid)).unwrap_or_default();
            format!("{} ({})", b.pid, name.trim())
        }),
    );
    let topology = Topology::connect(&args.amqp_url).await?;
    let bench = Bench {
        args: &args,
        uri: &uri,
        body,
        broker: broker.as_ref(),
        topology: &topology,
    };
    let samples = bench.run_all().await;
    let cleanup = topology.delete().await;
    let samples = samples?;
    cleanup.context("deleting the bench's exchange and queue")?;
    print_summary(&samples);
    Ok(())
}
