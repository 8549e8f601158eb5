//! The runs: the clients in turn, `--runs` times each, and one timed run of one client.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use lapin::uri::AMQPUri;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::amqprs_client::AmqprsSession;
use crate::args::Args;
use crate::client::{Client, Publisher, Session};
use crate::cpu::{Broker, process_cpu};
use crate::lapin_client::LapinSession;
use crate::report::{Sample, Tally};
use crate::topology::Topology;

/// What the runs share.
pub struct Bench<'a> {
    pub args: &'a Args,
    pub uri: &'a AMQPUri,
    pub body: Arc<[u8]>,
    pub broker: Option<&'a Broker>,
    pub topology: &'a Topology,
}

impl Bench<'_> {
    /// Declares the topology, then runs the clients in turn, `--runs` times each.
    pub async fn run_all(&self) -> anyhow::Result<Vec<Sample>> {
        self.topology.declare().await?;
        let mut samples = Vec::new();
        for run in 1..=self.args.runs {
            // Each client goes first every other run, so neither always runs warm.
            let order = if run % 2 == 1 {
                [Client::Lapin, Client::Amqprs]
            } else {
                [Client::Amqprs, Client::Lapin]
            };
            for client in order {
                let sample = self.run(client).await?;
                println!("run {run} {}", sample.describe());
                samples.push(sample);
            }
        }
        Ok(samples)
    }

    /// One run of one client.
    async fn run(&self, client: Client) -> anyhow::Result<Sample> {
        match client {
            Client::Lapin => self.measure::<LapinSession>(client).await,
            Client::Amqprs => self.measure::<AmqprsSession>(client).await,
        }
        .with_context(|| format!("running {}", client.name()))
    }

    /// Publishes for `--duration` on a fresh session (connecting and closing are not timed),
    /// then empties the queue to count what reached it.
    async fn measure<S: Session>(&self, client: Client) -> anyhow::Result<Sample> {
        let session = S::open(self.uri, &self.topology.exchange, self.args.channels).await?;
        let publishers = session.publishers();
        let cpu_before = process_cpu()?;
        let broker_before = self.broker.and_then(Broker::cpu);
        let started = Instant::now();
        let deadline = started + self.args.duration;
        let mut tasks = JoinSet::new();
        for task in 0..self.args.concurrency {
            let publisher = Arc::clone(&publishers[task % publishers.len()]);
            tasks.spawn(publish_until(publisher, Arc::clone(&self.body), deadline));
        }
        let mut tally = Tally::default();
        while let Some(joined) = tasks.join_next().await {
            tally.add(joined.context("a publishing task panicked")?);
        }
        let elapsed = started.elapsed();
        let client_cpu = process_cpu()? - cpu_before;
        let broker_cpu = broker_before
            .zip(self.broker.and_then(Broker::cpu))
            .map(|(before, after)| after.saturating_sub(before));
        session.close().await?;
        Ok(Sample {
            client,
            tally,
            elapsed,
            client_cpu,
            broker_cpu,
            delivered: self.topology.purge().await?,
        })
    }
}

/// One task: a message, its confirm, the next message, until the deadline.
async fn publish_until<P: Publisher>(
    publisher: Arc<P>,
    body: Arc<[u8]>,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        match publisher.publish(&body, Uuid::new_v4().to_string()).await {
            Ok(()) => tally.confirmed += 1,
            Err(error) => tally.fail(error),
        }
    }
    tally
}
