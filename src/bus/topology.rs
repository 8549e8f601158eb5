//! The spec's exchanges, queues and bindings, declared idempotently at every (re)connect.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};
use tracing::instrument;

use crate::domain::Family;

/// One durable queue and the topic pattern that feeds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueBinding {
    pub exchange: String,
    pub queue: String,
    pub binding_key: String,
}

/// Names of everything the gateway declares; tests give each run its own names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub exchange: String,
    pub dead_letter_exchange: String,
    pub queues: Vec<QueueBinding>,
}

impl Topology {
    pub fn new(exchange: &str, queue_prefix: &str) -> Self {
        let dead_letter_exchange = format!("{exchange}.dlx");
        let mut queues: Vec<QueueBinding> = Family::ALL
            .into_iter()
            .map(|family| QueueBinding {
                exchange: exchange.to_owned(),
                queue: format!("{queue_prefix}{}", family.queue_name()),
                binding_key: family.binding_key(),
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
            channel
                .queue_declare(
                    binding.queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_with_an_optional_prefix() {
        let topology = Topology::new("gamification", "");
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
            Topology::new("t1", "t1.").queues[0].queue,
            "t1.achievement_events"
        );
    }
}
