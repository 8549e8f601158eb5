//! A live reader of the scenario's family queues: each message with the time it arrived,
//! so that a scheduled event's arrival can be held against its `deliverAt`. The time it
//! takes a message off the queue is after the broker had it: a message read before its
//! `deliverAt` was certainly published early.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use tokio::task::JoinHandle;

use crate::observe::{FAMILIES, Message};

type Seen = Arc<Mutex<Vec<Message>>>;

pub struct Arrivals {
    connection: Connection,
    channel: Channel,
    seen: Seen,
    /// Each queue's consumer tag and the task reading it.
    readers: Vec<(String, JoinHandle<anyhow::Result<()>>)>,
}

impl Arrivals {
    /// Consumes every family queue named with `namespace` (straight from the broker, not
    /// through the scenario's proxy).
    pub async fn start(amqp_url: &str, namespace: &str) -> anyhow::Result<Arrivals> {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let seen = Seen::default();
        let mut readers = Vec::new();
        for family in FAMILIES {
            let queue = format!("{namespace}.{family}_events");
            let tag = format!("faults-arrivals-{family}");
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            readers.push((tag, tokio::spawn(read(consumer, queue, seen.clone()))));
        }
        Ok(Arrivals {
            connection,
            channel,
            seen,
            readers,
        })
    }

    /// Waits until `count` scheduled events (by user and sequence number) arrived, up to
    /// `limit`; returns how many did.
    pub async fn wait_scheduled(&self, count: usize, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.scheduled_arrived();
            if arrived >= count || tokio::time::Instant::now() >= deadline {
                return arrived;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn scheduled_arrived(&self) -> usize {
        let seen = self.seen.lock().expect("lock");
        seen.iter()
            .filter(|message| message.scheduled_for_ms.is_some())
            .map(|message| (&message.user, message.seq))
            .collect::<HashSet<_>>()
            .len()
    }

    /// Stops reading and returns every message read, each queue's in its order: a cancel
    /// ends a consumer's stream after the deliveries the broker sent before it.
    pub async fn stop(self) -> anyhow::Result<Vec<Message>> {
        for (tag, reader) in self.readers {
            self.channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
            reader.await??;
        }
        let _ = self.connection.close(200, "read".into()).await;
        Ok(std::mem::take(&mut *self.seen.lock().expect("lock")))
    }
}

async fn read(mut consumer: Consumer, queue: String, seen: Seen) -> anyhow::Result<()> {
    while let Some(delivery) = consumer.next().await {
        let message = Message::from_delivery(&queue, &delivery?)?;
        seen.lock().expect("lock").push(message);
    }
    Ok(())
}
