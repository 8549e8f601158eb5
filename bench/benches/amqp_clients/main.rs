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

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Confirmation, ConnectionProperties, ExchangeKind};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use uuid::Uuid;

const ROUTING_KEY: &str = "analytics.event_tracked";
const CONTENT_TYPE: &str = "application/json";
const PERSISTENT: u8 = 2;
/// A confirm later than this counts as missing.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The command line; cargo's own `--bench` is ignored, any other unknown flag refused.
struct Args {
    duration: Duration,
    runs: usize,
    concurrency: usize,
    channels: usize,
    amqp_url: String,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(5),
            runs: 3,
            concurrency: 32,
            channels: 1,
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        }
    }
}

impl Args {
    fn parse(mut raw: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut args = Self::default();
        while let Some(arg) = raw.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| raw.next())
                    .with_context(|| format!("{name} needs a value"))
            };
            match name.as_str() {
                "--duration" => {
                    args.duration = Duration::try_from_secs_f64(number(value()?, &name)?)?;
                }
                "--runs" => args.runs = number(value()?, &name)?,
                "--concurrency" => args.concurrency = number(value()?, &name)?,
                "--channels" => args.channels = number(value()?, &name)?,
                "--amqp-url" => args.amqp_url = value()?,
                // cargo bench passes it to every bench target.
                "--bench" => {}
                _ => bail!("unknown flag {name}; see the comment at the top of the file"),
            }
        }
        if args.duration.is_zero() || args.runs == 0 || args.concurrency == 0 || args.channels == 0
        {
            bail!("--duration, --runs, --concurrency and --channels must be positive");
        }
        Ok(args)
    }
}

fn number<T>(text: String, flag: &str) -> anyhow::Result<T>
where
    T: std::str::FromStr<Err: std::error::Error + Send + Sync + 'static>,
{
    text.parse()
        .with_context(|| format!("{flag} takes a number, not {text:?}"))
}

/// An analytics event envelope of about 400 bytes, as the gateway puts on the bus.
fn event_body() -> Vec<u8> {
    json!({
        "id": "0193a5c2-7d4e-7b1a-9c3f-2e8d4b6a1f05",
        "type": ROUTING_KEY,
        "source": "amqp-clients-bench",
        "correlationId": "6f1c2b9e-3d4a-4e8f-9b7c-1a2d3e4f5a6b",
        "occurredAt": "2026-11-26T10:00:00Z",
        "receivedAt": "2026-11-26T10:00:00.125Z",
        "data": {
            "analyticsId": "analytics-1",
            "userId": "user-1",
            "type": "click",
            "category": "ui",
            "event": "button",
            "value": 1,
            "page": "/levels/42/summary",
            "sessionId": "session-8c4e1f7a",
            "locale": "en-GB"
        }
    })
    .to_string()
    .into_bytes()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    Lapin,
    Amqprs,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Self::Lapin => "lapin",
            Self::Amqprs => "amqprs",
        }
    }
}

/// What the runs share.
struct Bench<'a> {
    args: &'a Args,
    uri: &'a AMQPUri,
    body: Arc<[u8]>,
    broker: Option<&'a Broker>,
    topology: &'a Topology,
}

impl Bench<'_> {
    /// Declares the topology, then runs the clients in turn, `--runs` times each.
    async fn run_all(&self) -> anyhow::Result<Vec<Sample>> {
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

/// A client's connection and its confirm-mode channels.
trait Session: Sized {
    type Publisher: Publisher;

    async fn open(uri: &AMQPUri, exchange: &str, channels: usize) -> anyhow::Result<Self>;

    fn publishers(&self) -> Vec<Arc<Self::Publisher>>;

    async fn close(self) -> anyhow::Result<()>;
}

/// One channel: publishes a message and resolves once the broker has acked it.
trait Publisher: Send + Sync + 'static {
    fn publish(
        &self,
        body: &[u8],
        message_id: String,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

struct LapinSession {
    connection: lapin::Connection,
    publishers: Vec<Arc<LapinPublisher>>,
}

struct LapinPublisher {
    channel: lapin::Channel,
    exchange: ShortString,
}

impl Session for LapinSession {
    type Publisher = LapinPublisher;

    async fn open(uri: &AMQPUri, exchange: &str, channels: usize) -> anyhow::Result<Self> {
        let properties =
            ConnectionProperties::default().with_connection_name("amqp-clients-lapin".into());
        let connection = lapin::Connection::connect_uri(uri.clone(), properties).await?;
        let mut publishers = Vec::with_capacity(channels);
        for _ in 0..channels {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            publishers.push(Arc::new(LapinPublisher {
                channel,
                exchange: exchange.into(),
            }));
        }
        Ok(Self {
            connection,
            publishers,
        })
    }

    fn publishers(&self) -> Vec<Arc<LapinPublisher>> {
        self.publishers.clone()
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(self.connection.close(200, "bench done".into()).await?)
    }
}

impl Publisher for LapinPublisher {
    async fn publish(&self, body: &[u8], message_id: String) -> anyhow::Result<()> {
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(CONTENT_TYPE.into())
            .with_message_id(message_id.into());
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.clone(),
                ROUTING_KEY.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties,
            )
            .await?;
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| anyhow!("no confirm within {CONFIRM_TIMEOUT:?}"))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => bail!("returned as unroutable"),
            Confirmation::Nack(_) => bail!("nacked"),
            Confirmation::NotRequested => bail!("the channel is not in confirm mode"),
        }
    }
}

struct AmqprsSession {
    connection: amqprs::connection::Connection,
    publishers: Vec<Arc<AmqprsPublisher>>,
}

struct AmqprsPublisher {
    channel: amqprs::channel::Channel,
    exchange: String,
    confirms: Arc<Confirms>,
    /// The delivery tag of the next publish: locked across `basic_publish`, so that tags
    /// follow the order in which the broker sees the publishes.
    next_tag: tokio::sync::Mutex<u64>,
}

impl Session for AmqprsSession {
    type Publisher = AmqprsPublisher;

    async fn open(uri: &AMQPUri, exchange: &str, channels: usize) -> anyhow::Result<Self> {
        let authority = &uri.authority;
        let arguments = amqprs::connection::OpenConnectionArguments::new(
            &authority.host,
            authority.port,
            &authority.userinfo.username,
            &authority.userinfo.password,
        )
        .virtual_host(&uri.vhost)
        .connection_name("amqp-clients-amqprs")
        .finish();
        let connection = amqprs::connection::Connection::open(&arguments).await?;
        let mut publishers = Vec::with_capacity(channels);
        for _ in 0..channels {
            let channel = connection.open_channel(None).await?;
            let confirms = Arc::new(Confirms::default());
            channel
                .register_callback(ConfirmCallback(Arc::clone(&confirms)))
                .await?;
            channel
                .confirm_select(amqprs::channel::ConfirmSelectArguments::default())
                .await?;
            publishers.push(Arc::new(AmqprsPublisher {
                channel,
                exchange: exchange.to_owned(),
                confirms,
                next_tag: tokio::sync::Mutex::new(1),
            }));
        }
        Ok(Self {
            connection,
            publishers,
        })
    }

    fn publishers(&self) -> Vec<Arc<AmqprsPublisher>> {
        self.publishers.clone()
    }

    async fn close(self) -> anyhow::Result<()> {
        for publisher in self.publishers {
            publisher.channel.clone().close().await?;
        }
        Ok(self.connection.close().await?)
    }
}

impl Publisher for AmqprsPublisher {
    async fn publish(&self, body: &[u8], message_id: String) -> anyhow::Result<()> {
        let properties = amqprs::BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(CONTENT_TYPE)
            .with_message_id(&message_id)
            .finish();
        let arguments = amqprs::channel::BasicPublishArguments {
            exchange: self.exchange.clone(),
            routing_key: ROUTING_KEY.to_owned(),
            mandatory: true,
            immediate: false,
        };
        let outcome = {
            let mut next_tag = self.next_tag.lock().await;
            let outcome = self.confirms.expect(*next_tag, message_id);
            if let Err(error) = self
                .channel
                .basic_publish(properties, body.to_vec(), arguments)
                .await
            {
                self.confirms.forget(*next_tag);
                return Err(error.into());
            }
            *next_tag += 1;
            outcome
        };
        let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, outcome)
            .await
            .map_err(|_| anyhow!("no confirm within {CONFIRM_TIMEOUT:?}"))?
            .map_err(|_| anyhow!("the channel closed before the confirm"))?;
        match outcome {
            Outcome::Ack => Ok(()),
            Outcome::Nack => bail!("nacked"),
            Outcome::Returned => bail!("returned as unroutable"),
        }
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    Ack,
    Nack,
    Returned,
}

/// The publishes of one amqprs channel that await their confirm, by delivery tag.
#[derive(Default)]
struct Confirms(Mutex<BTreeMap<u64, Pending>>);

struct Pending {
    message_id: String,
    settle: oneshot::Sender<Outcome>,
}

impl Confirms {
    fn pending(&self) -> MutexGuard<'_, BTreeMap<u64, Pending>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expect(&self, tag: u64, message_id: String) -> oneshot::Receiver<Outcome> {
        let (settle, outcome) = oneshot::channel();
        self.pending().insert(tag, Pending { message_id, settle });
        outcome
    }

    fn forget(&self, tag: u64) {
        self.pending().remove(&tag);
    }

    /// An ack or a nack of `tag`, or of every tag up to it when `multiple`.
    fn settle(&self, tag: u64, multiple: bool, outcome: Outcome) {
        let mut pending = self.pending();
        if multiple {
            let later = pending.split_off(&(tag + 1));
            for (_, waiting) in std::mem::replace(&mut *pending, later) {
                // The publisher may have given up waiting: nothing to tell then.
                let _ = waiting.settle.send(outcome);
            }
        } else if let Some(waiting) = pending.remove(&tag) {
            let _ = waiting.settle.send(outcome);
        }
    }

    /// A return carries no delivery tag, but the broker sends it before the ack of the same
    /// message: it is found by its message id, and the ack that follows finds nothing.
    fn returned(&self, message_id: Option<&String>) {
        let mut pending = self.pending();
        let tag = pending
            .iter()
            .find(|(_, waiting)| Some(&waiting.message_id) == message_id)
            .map(|(tag, _)| *tag);
        if let Some(waiting) = tag.and_then(|tag| pending.remove(&tag)) {
            let _ = waiting.settle.send(Outcome::Returned);
        }
    }

    /// The channel closed: every waiting publish learns it has no confirm to wait for.
    fn abandon(&self) {
        self.pending().clear();
    }
}

/// Hands amqprs's confirms and returns of one channel to the publishes waiting for them.
struct ConfirmCallback(Arc<Confirms>);

#[async_trait]
impl amqprs::callbacks::ChannelCallback for ConfirmCallback {
    async fn close(
        &mut self,
        _channel: &amqprs::channel::Channel,
        close: amqprs::CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        eprintln!("amqprs: the broker closed a channel: {close}");
        self.0.abandon();
        Ok(())
    }

    async fn cancel(
        &mut self,
        _channel: &amqprs::channel::Channel,
        _cancel: amqprs::Cancel,
    ) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(
        &mut self,
        _channel: &amqprs::channel::Channel,
        active: bool,
    ) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _channel: &amqprs::channel::Channel, ack: amqprs::Ack) {
        self.0
            .settle(ack.delivery_tag(), ack.mutiple(), Outcome::Ack);
    }

    async fn publish_nack(&mut self, _channel: &amqprs::channel::Channel, nack: amqprs::Nack) {
        self.0
            .settle(nack.delivery_tag(), nack.multiple(), Outcome::Nack);
    }

    async fn publish_return(
        &mut self,
        _channel: &amqprs::channel::Channel,
        _ret: amqprs::Return,
        properties: amqprs::BasicProperties,
        _content: Vec<u8>,
    ) {
        self.0.returned(properties.message_id());
    }
}

/// The bench's own exchange and queue, on a connection of their own.
struct Topology {
    connection: lapin::Connection,
    channel: lapin::Channel,
    exchange: String,
    queue: String,
}

impl Topology {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let properties =
            ConnectionProperties::default().with_connection_name("amqp-clients-setup".into());
        let connection = lapin::Connection::connect(url, properties)
            .await
            .context("connecting to the broker")?;
        let channel = connection.create_channel().await?;
        let name = format!("amqp-clients-{}", Uuid::new_v4());
        Ok(Self {
            connection,
            channel,
            exchange: name.clone(),
            queue: name,
        })
    }

    /// A durable topic exchange and a durable queue bound to it with `#`.
    async fn declare(&self) -> lapin::Result<()> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let channel = &self.channel;
        let (exchange, queue) = (self.exchange.as_str(), self.queue.as_str());
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(queue.into(), durable_queue, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    /// Empties the queue and tells how many messages it held.
    async fn purge(&self) -> lapin::Result<u32> {
        self.channel
            .queue_purge(self.queue.as_str().into(), QueuePurgeOptions::default())
            .await
    }

    /// Deletes the queue and the exchange on a fresh channel: the first one may have been
    /// closed by the error that ends the bench.
    async fn delete(self) -> lapin::Result<()> {
        let channel = self.connection.create_channel().await?;
        channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
        channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await?;
        self.connection.close(200, "bench done".into()).await
    }
}

/// What the tasks of one run counted.
#[derive(Default)]
struct Tally {
    confirmed: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn fail(&mut self, error: anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{error:#}"));
    }

    fn add(&mut self, other: Tally) {
        self.confirmed += other.confirmed;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One run of one client.
struct Sample {
    client: Client,
    tally: Tally,
    elapsed: Duration,
    client_cpu: Duration,
    broker_cpu: Option<Duration>,
    delivered: u32,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.tally.confirmed as f64 / self.elapsed.as_secs_f64()
    }

    fn client_cpu_per_10k(&self) -> Option<f64> {
        per_10k(self.client_cpu, self.tally.confirmed)
    }

    fn broker_cpu_per_10k(&self) -> Option<f64> {
        per_10k(self.broker_cpu?, self.tally.confirmed)
    }

    fn describe(&self) -> String {
        let mut line = format!(
            "{:<6} {:>7} confirmed in {:.2} s = {:>7.0} msg/s, client CPU {} s/10k, \
             broker CPU {} s/10k, {} errors, {} delivered",
            self.client.name(),
            self.tally.confirmed,
            self.elapsed.as_secs_f64(),
            self.rate(),
            show(self.client_cpu_per_10k()),
            show(self.broker_cpu_per_10k()),
            self.tally.errors,
            self.delivered,
        );
        if u64::from(self.delivered) != self.tally.confirmed {
            line.push_str(" (MISMATCH)");
        }
        if let Some(error) = &self.tally.first_error {
            line.push_str(&format!("; first error: {error}"));
        }
        line
    }
}

fn per_10k(cpu: Duration, messages: u64) -> Option<f64> {
    (messages > 0).then(|| cpu.as_secs_f64() / messages as f64 * 10_000.0)
}

fn show(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |value| format!("{value:.3}"))
}

fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut values: Vec<f64> = values.flatten().collect();
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

/// The medians of each client's runs, and the ratios amqprs / lapin.
fn print_summary(samples: &[Sample]) {
    println!();
    println!(
        "{:<7} {:>10} {:>18} {:>18} {:>7} {:>20}",
        "client", "msgs/s", "client CPU s/10k", "broker CPU s/10k", "errors", "delivered/confirmed"
    );
    let medians = [Client::Lapin, Client::Amqprs].map(|client| {
        let runs = || samples.iter().filter(move |sample| sample.client == client);
        let rate = median(runs().map(|sample| Some(sample.rate())));
        let client_cpu = median(runs().map(Sample::client_cpu_per_10k));
        let broker_cpu = median(runs().map(Sample::broker_cpu_per_10k));
        let errors: u64 = runs().map(|sample| sample.tally.errors).sum();
        let delivered: u64 = runs().map(|sample| u64::from(sample.delivered)).sum();
        let confirmed: u64 = runs().map(|sample| sample.tally.confirmed).sum();
        println!(
            "{:<7} {:>10} {:>18} {:>18} {:>7} {:>20}",
            client.name(),
            rate.map_or("n/a".to_owned(), |rate| format!("{rate:.0}")),
            show(client_cpu),
            show(broker_cpu),
            errors,
            format!("{delivered}/{confirmed}"),
        );
        (rate, client_cpu)
    });
    let [(lapin_rate, lapin_cpu), (amqprs_rate, amqprs_cpu)] = medians;
    println!(
        "amqprs/lapin: msgs/s {}, client CPU per 10k {}",
        show(ratio(amqprs_rate, lapin_rate)),
        show(ratio(amqprs_cpu, lapin_cpu)),
    );
}

fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    Some(numerator? / denominator.filter(|value| *value > 0.0)?)
}

/// This process's CPU time, user and system.
fn process_cpu() -> std::io::Result<Duration> {
    // SAFETY: an all-zero `rusage` is a valid value, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(timeval(usage.ru_utime) + timeval(usage.ru_stime))
}

fn timeval(time: libc::timeval) -> Duration {
    Duration::from_secs(time.tv_sec.unsigned_abs())
        + Duration::from_micros(time.tv_usec.unsigned_abs())
}

/// The broker's process, found as the owner of the socket listening on the AMQP port.
struct Broker {
    pid: u32,
    ticks_per_second: f64,
}

impl Broker {
    fn find(port: u16) -> Option<Self> {
        let inodes = listening_inodes(port);
        let pid = socket_owner(&inodes)?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Some(Self {
            pid,
            ticks_per_second: if ticks > 0 { ticks as f64 } else { 100.0 },
        })
    }

    /// Its CPU time, user and system, from /proc/<pid>/stat.
    fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // The fields after the command name, which may hold spaces, start at the state (3rd):
        // utime and stime are the 14th and 15th.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(Duration::from_secs_f64(
            (utime + stime) as f64 / self.ticks_per_second,
        ))
    }
}

/// The inodes of the TCP sockets (v4 and v6) listening on `port`.
fn listening_inodes(port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if *state == LISTEN && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    inodes
}

/// The process that holds one of `sockets` (as `socket:[inode]`) open.
fn socket_owner(sockets: &[String]) -> Option<u32> {
    if sockets.is_empty() {
        return None;
    }
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|process| {
            let pid: u32 = process.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(process.path().join("fd")).ok()?;
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| {
                    sockets
                        .iter()
                        .any(|socket| target.as_os_str() == socket.as_str())
                })
                .then_some(pid)
        })
}
