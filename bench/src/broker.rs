//! The bench's own AMQP connection: channels in confirm mode for the raw publishers, an
//! admin channel that counts what reached the queues and removes them at the end, and
//! consumers for the scheduled events' arrival times.

use anyhow::Context;
use futures_util::stream::{SelectAll, select_all};
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};

use event_gateway::bus::Topology;
use event_gateway::domain::Family;

/// Deliveries in flight to a consumer: enough that the broker never waits for the bench.
const PREFETCH: u16 = 2000;

pub struct Broker {
    connection: Connection,
    admin: Channel,
    publishers: Vec<Channel>,
    topology: Topology,
}

/// guest/guest only works from localhost, which is where all bench traffic goes.
pub fn amqp_url(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

impl Broker {
    /// Connects once, like the gateway: one connection (one lapin I/O thread), several
    /// channels.
    pub async fn connect(port: u16, topology: Topology, channels: u16) -> anyhow::Result<Self> {
        let properties = ConnectionProperties::default().with_connection_name("bench".into());
        let connection = Connection::connect(&amqp_url(port), properties)
            .await
            .with_context(|| format!("connecting to RabbitMQ on 127.0.0.1:{port}"))?;
        let admin = connection
            .create_channel()
            .await
            .context("opening the admin channel")?;
        let mut publishers = Vec::with_capacity(usize::from(channels));
        for _ in 0..channels {
            let channel = connection
                .create_channel()
                .await
                .context("opening a publish channel")?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .context("confirm.select")?;
            publishers.push(channel);
        }
        Ok(Broker {
            connection,
            admin,
            publishers,
            topology,
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The confirm-mode channel a raw publisher uses; workers are spread evenly.
    pub fn publish_channel(&self, worker: u32) -> Channel {
        let index = worker as usize % self.publishers.len();
        self.publishers[index].clone()
    }

    /// Empties every queue bound to the events exchange and returns how many messages
    /// were in them: after a run whose confirms all resolved, the events that arrived.
    pub async fn drain(&self) -> anyhow::Result<u64> {
        let mut messages = 0;
        for binding in self.event_queues() {
            let purged = self
                .admin
                .queue_purge(binding.as_str().into(), QueuePurgeOptions::default())
                .await
                .with_context(|| format!("purging {binding}"))?;
            messages += u64::from(purged);
        }
        Ok(messages)
    }

    fn event_queues(&self) -> impl Iterator<Item = &String> {
        let exchange = &self.topology.exchange;
        self.topology
            .queues
            .iter()
            .filter(move |binding| &binding.exchange == exchange)
            .map(|binding| &binding.queue)
    }

    /// Takes (without acks) everything that reaches the queues of `families`, on a channel
    /// of its own; dropping the stream and [`Consumers::close`] end it.
    pub async fn consume(&self, families: &[Family]) -> anyhow::Result<Consumers> {
        let channel = self
            .connection
            .create_channel()
            .await
            .context("opening a consumer channel")?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .context("basic.qos")?;
        let mut consumers = Vec::with_capacity(families.len());
        for family in families {
            let queue = self.family_queue(*family)?;
            let options = BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            };
            let consumer = channel
                .basic_consume(queue.into(), "".into(), options, FieldTable::default())
                .await
                .with_context(|| format!("consuming {queue}"))?;
            consumers.push(consumer);
        }
        Ok(Consumers {
            channel,
            deliveries: select_all(consumers),
        })
    }

    fn family_queue(&self, family: Family) -> anyhow::Result<&str> {
        let key = family.binding_key();
        self.topology
            .family_queues()
            .iter()
            .find(|binding| binding.binding_key == key)
            .map(|binding| binding.queue.as_str())
            .with_context(|| format!("no queue for {family}"))
    }

    /// Deletes every queue and exchange of the bench's topology, then disconnects.
    pub async fn remove_topology(self) -> anyhow::Result<()> {
        let queues = self.topology.queues.iter().map(|binding| &binding.queue);
        let retry_queues = self.topology.retry_queues.iter().map(|retry| &retry.queue);
        for queue in queues.chain(retry_queues) {
            self.admin
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .with_context(|| format!("deleting queue {queue}"))?;
        }
        let topology = &self.topology;
        for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
            self.admin
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await
                .with_context(|| format!("deleting exchange {exchange}"))?;
        }
        self.connection
            .close(200, "bench done".into())
            .await
            .context("closing the AMQP connection")
    }
}

/// The deliveries of several queues, as one stream.
pub struct Consumers {
    channel: Channel,
    pub deliveries: SelectAll<Consumer>,
}

impl Consumers {
    pub async fn close(self) -> anyhow::Result<()> {
        self.channel
            .close(200, "consumed".into())
            .await
            .context("closing the consumer channel")
    }
}
