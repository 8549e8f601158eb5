//! The spec's exchanges, queues and bindings, declared idempotently at every (re)connect.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tracing::instrument;

use super::Broker;
use crate::domain::Family;

/// A broker that does not answer a connect in this long is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a close waits for the broker's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One durable queue and the topic pattern that feeds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBinding {
    pub exchange: String,
    pub queue: String,
    pub binding_key: String,
}

/// A queue that holds a failed message for `delay`, then hands it back to `returns_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryQueue {
    pub queue: String,
    pub delay: Duration,
    pub returns_to: String,
}

/// Names of everything the gateway declares; tests give each run its own names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
    pub dead_letter_exchange: String,
    /// The five family queues, then `failed_events`.
    pub queues: Vec<QueueBinding>,
    pub retry_queues: Vec<RetryQueue>,
}

impl Topology {
    /// `retry_delays` are the waits of the consumers' retry schedule; each family queue
    /// gets one retry queue per delay, so a retry never blocks its queue.
    pub fn new(exchange: &str, queue_prefix: &str, retry_delays: &[Duration]) -> Self {
        let dead_letter_exchange = format!("{exchange}.dlx");
        let mut queues: Vec<QueueBinding> = Family::ALL
            .into_iter()
            .map(|family| QueueBinding {
                exchange: exchange.to_owned(),
                queue: format!("{queue_prefix}{}", family.queue_name()),
                binding_key: family.binding_key(),
            })
            .collect();
        let retry_queues = queues
            .iter()
            .flat_map(|binding| {
                retry_delays.iter().map(|delay| RetryQueue {
                    queue: retry_queue_name(&binding.queue, *delay),
                    delay: *delay,
                    returns_to: binding.queue.clone(),
                })
            })
            .collect();
        queues.push(QueueBinding {
            exchange: dead_letter_exchange.clone(),
            queue: format!("{queue_prefix}failed_events"),
            binding_key: "error.*".into(),
        });
        Topology {
            exchange: exchange.to_owned(),
            dead_letter_exchange,
            queues,
            retry_queues,
        }
    }

    /// The five family queues (not `failed_events`).
    pub fn family_queues(&self) -> &[QueueBinding] {
        &self.queues[..Family::ALL.len()]
    }

    pub fn failed_queue(&self) -> &str {
        &self.queues[Family::ALL.len()].queue
    }

    /// Connects to the broker and declares the topology on a channel of its own.
    #[instrument(skip_all, fields(name))]
    pub async fn connect(&self, broker: &Broker, name: &str) -> anyhow::Result<Connection> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, broker.open(properties)).await??;
        let setup = connection.create_channel().await?;
        self.declare(&setup).await?;
        setup.close(200, "topology declared".into()).await?;
        Ok(connection)
    }

    /// Closes `connection`, waiting at most [`CLOSE_TIMEOUT`] for the broker's answer: a
    /// stalled broker must not hold up a reconnect or a shutdown. A failed close only means
    /// the connection was already gone.
    pub async fn close(connection: &Connection, reason: &'static str) {
        let closing = connection.close(200, reason.into());
        if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            tracing::warn!(
                reason,
                "the broker did not answer the close; leaving the connection"
            );
        }
    }

    #[instrument(skip_all, fields(exchange = %self.exchange))]
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [&self.exchange, &self.dead_letter_exchange] {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        for binding in &self.queues {
            declare_durable(channel, &binding.queue, FieldTable::default()).await?;
            channel
                .queue_bind(
                    binding.queue.as_str().into(),
                    binding.exchange.as_str().into(),
                    binding.binding_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for retry in &self.retry_queues {
            declare_durable(channel, &retry.queue, retry_arguments(retry)).await?;
        }
        Ok(())
    }
}

async fn declare_durable(
    channel: &Channel,
    queue: &str,
    arguments: FieldTable,
) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), durable, arguments)
        .await
        .map(|_| ())
}

/// A retry queue holds a message for its delay, then hands it back, by the default
/// exchange, to the queue it left.
fn retry_arguments(retry: &RetryQueue) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(retry.delay.as_millis() as i64),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(retry.returns_to.as_str().into()),
    );
    arguments
}

fn retry_queue_name(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}ms", delay.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_with_an_optional_prefix() {
        let topology = Topology::new("gamification", "", &[Duration::from_secs(1)]);
        let names: Vec<(&str, &str, &str)> = topology
            .queues
            .iter()
            .map(|q| {
                (
                    q.exchange.as_str(),
                    q.queue.as_str(),
                    q.binding_key.as_str(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("gamification", "achievement_events", "achievement.*"),
                ("gamification", "quest_events", "quest.*"),
                ("gamification", "reward_events", "reward.*"),
                ("gamification", "notification_events", "notification.*"),
                ("gamification", "analytics_events", "analytics.*"),
                ("gamification.dlx", "failed_events", "error.*"),
            ]
        );
        assert_eq!(
            topology.retry_queues[0].queue,
            "achievement_events.retry.1000ms"
        );
        assert_eq!(topology.retry_queues[0].returns_to, "achievement_events");
        assert_eq!(topology.failed_queue(), "failed_events");
        assert_eq!(
            Topology::new("t1", "t1.", &[]).queues[0].queue,
            "t1.achievement_events"
        );
    }
}
