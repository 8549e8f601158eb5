//! `raw`: the bench publishes straight to the exchange with lapin, as the gateway does
//! (persistent, mandatory, confirm mode), with a window of confirms outstanding per
//! publisher, awaited as they arrive.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};

use event_gateway::bus::publisher::confirmation_outcome;

use crate::broker::Broker;
use crate::load::{Plan, Recorder, Schedule, Totals, run_workers};
use crate::scenarios::{ANALYTICS, Encoded, EnvelopeMaker, SOURCE};

/// Longer than the gateway's 5 s confirm timeout: a lost confirm ends as an error.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs raw publishers on the bench's confirm-mode channels.
pub async fn run(plan: &Plan, window: u32, broker: &Broker) -> anyhow::Result<Totals> {
    let exchange = broker.topology().exchange.clone();
    run_workers(plan, 1, |worker, schedule| {
        raw_worker(
            broker.publish_channel(worker),
            exchange.clone(),
            window,
            schedule,
        )
    })
    .await
}

/// Publishes with up to `window` confirms outstanding, awaiting them as they arrive.
async fn raw_worker(
    channel: Channel,
    exchange: String,
    window: u32,
    mut schedule: Schedule,
) -> anyhow::Result<Recorder> {
    let mut maker = EnvelopeMaker::new()?;
    let mut recorder = Recorder::new()?;
    let mut pending = FuturesUnordered::new();
    while let Some(start) = schedule.next().await {
        let message = maker.next()?;
        let publish = channel.basic_publish(
            exchange.as_str().into(),
            ANALYTICS.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &message.body,
            properties(&message),
        );
        match publish.await {
            Ok(confirm) => pending.push(async move {
                let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await;
                (start, confirmed)
            }),
            Err(error) => recorder.record(start, 1, Err(error.into())),
        }
        while pending.len() >= window as usize {
            if let Some((start, confirmed)) = pending.next().await {
                recorder.record(start, 1, judge(confirmed));
            }
        }
    }
    while let Some((start, confirmed)) = pending.next().await {
        recorder.record(start, 1, judge(confirmed));
    }
    Ok(recorder)
}

type Confirmed = Result<lapin::Result<lapin::Confirmation>, tokio::time::error::Elapsed>;

/// The gateway's own judgement of a confirm: only a plain ack is success.
fn judge(confirmed: Confirmed) -> anyhow::Result<()> {
    let confirmation = confirmed
        .context("no confirm in time")?
        .context("confirm failed")?;
    confirmation_outcome(confirmation, ANALYTICS).map_err(anyhow::Error::from)
}

/// The properties the gateway sets, so the raw messages weigh the same.
fn properties(message: &Encoded) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(ShortString::from(message.id.to_string()))
        .with_correlation_id(message.correlation_id.as_str().into())
        .with_timestamp(message.timestamp_secs)
        .with_type(ANALYTICS.into())
        .with_app_id(SOURCE.into())
}
