//! Faults of the broker: a crash, its connections closed, its network blackholed, a memory
//! alarm, a family queue deleted, a queue full.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

use super::Run;
use crate::observe::Message;
use crate::process::now_ms;

/// kill -9 of the node, down 2 s, started again on the same mnesia directory.
pub async fn kill_and_restart(run: &mut Run<'_>) -> anyhow::Result<()> {
    run.services.rabbit.crash().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.services.rabbit.boot().await?;
    run.restored_ms = now_ms();
    Ok(())
}

/// `rabbitmqctl close_all_connections`: every client connection closed by the broker.
pub async fn close_connections(run: &mut Run<'_>) -> anyhow::Result<()> {
    run.services
        .rabbit
        .ctl(&["close_all_connections", "fault catalogue"])
        .await?;
    run.restored_ms = now_ms();
    Ok(())
}

/// Every byte between gateway and broker held for 10 s, then passed on.
pub async fn blackhole(run: &mut Run<'_>) -> anyhow::Result<()> {
    run.broker.stall();
    tokio::time::sleep(Duration::from_secs(10)).await;
    run.broker.restore();
    run.restored_ms = now_ms();
    Ok(())
}

/// A memory alarm blocks every publisher for 8 s; then the default watermark again.
pub async fn memory_alarm(run: &mut Run<'_>) -> anyhow::Result<()> {
    let rabbit = &run.services.rabbit;
    rabbit
        .ctl(&["set_vm_memory_high_watermark", "0.0000001"])
        .await?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    rabbit.ctl(&["set_vm_memory_high_watermark", "0.4"]).await?;
    run.restored_ms = now_ms();
    Ok(())
}

/// `achievement_events` unbound and deleted under load (its events unroutable for 5 s),
/// then declared and bound again as the gateway declares it. A consumer of the scenario's
/// own takes every message off it meanwhile, and the unbinding first means none is on its
/// way in when it goes: a message routed to a queue as it is deleted is confirmed by the
/// broker and dropped, which would be the broker's loss, not the gateway's.
pub async fn queue_deleted(run: &mut Run<'_>) -> anyhow::Result<()> {
    let queue = format!("{}.achievement_events", run.namespace);
    let connection = Connection::connect(
        &run.services.rabbit.amqp_url(),
        ConnectionProperties::default(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    let taken = Arc::new(Mutex::new(Vec::new()));
    let reader = tokio::spawn(take_all(channel.clone(), queue.clone(), taken.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Unbound first, so that no message is on its way into the queue when it goes.
    channel
        .queue_unbind(
            queue.as_str().into(),
            run.namespace.as_str().into(),
            "achievement.*".into(),
            FieldTable::default(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let destroyed = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    anyhow::ensure!(
        destroyed == 0,
        "deleting {queue} destroyed {destroyed} messages the catalogue could not read first"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    declare_family_queue(&channel, &queue, &run.namespace, "achievement.*").await?;
    run.restored_ms = now_ms();
    // Whatever the consumer still had in flight arrives before its cancel.
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
    run.taken = std::mem::take(&mut *taken.lock().expect("lock"));
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

async fn take_all(
    channel: Channel,
    queue: String,
    taken: Arc<Mutex<Vec<Message>>>,
) -> anyhow::Result<()> {
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "fault-catalogue".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let message = Message::from_delivery(&queue, &delivery?)?;
        taken.lock().expect("lock").push(message);
    }
    Ok(())
}

async fn declare_family_queue(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    binding: &str,
) -> anyhow::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// `analytics_events` limited (by a policy) to 30 more messages than it holds, with
/// `reject-publish`: the broker nacks what does not fit. The policy goes after 10 s.
///
/// A policy whose limit is below the depth when it takes effect makes the broker drop the
/// oldest messages, acknowledged ones included: that would be the broker's loss, not the
/// gateway's. `rabbitmqctl` takes a second or more to act, and the load goes on meanwhile,
/// so the limit also leaves room for three times what arrived during one `rabbitmqctl` call.
pub async fn queue_full(run: &mut Run<'_>) -> anyhow::Result<()> {
    let queue = format!("{}.analytics_events", run.namespace);
    let connection = Connection::connect(
        &run.services.rabbit.amqp_url(),
        ConnectionProperties::default(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    let before = depth(&channel, &queue).await?;
    run.services.rabbit.ctl(&["list_policies"]).await?;
    let depth = depth(&channel, &queue).await?;
    let _ = connection.close(200, "done".into()).await;
    let during_one_call = depth.saturating_sub(before);
    let pattern = format!("^{}$", queue.replace('.', "\\."));
    let limit = format!(
        r#"{{"max-length": {}, "overflow": "reject-publish"}}"#,
        depth + 30 + 3 * during_one_call
    );
    let rabbit = &run.services.rabbit;
    rabbit
        .ctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            "faults-full",
            &pattern,
            &limit,
        ])
        .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    rabbit.ctl(&["clear_policy", "faults-full"]).await?;
    run.restored_ms = now_ms();
    Ok(())
}

async fn depth(channel: &lapin::Channel, queue: &str) -> anyhow::Result<u32> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    Ok(declared.message_count())
}
