//! The bench's own exchange and queue: declared before the runs, purged after each to count
//! what reached it, deleted at the end.

use anyhow::Context;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{ConnectionProperties, ExchangeKind};
use uuid::Uuid;

/// The bench's own exchange and queue, on a connection of their own.
pub struct Topology {
    connection: lapin::Connection,
    channel: lapin::Channel,
    pub exchange: String,
    queue: String,
}

impl Topology {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
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
    pub async fn declare(&self) -> lapin::Result<()> {
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
    pub async fn purge(&self) -> lapin::Result<u32> {
        self.channel
            .queue_purge(self.queue.as_str().into(), QueuePurgeOptions::default())
            .await
    }

    /// Deletes the queue and the exchange on a fresh channel: the first one may have been
    /// closed by the error that ends the bench.
    pub async fn delete(self) -> lapin::Result<()> {
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
