//! `peer`: RabbitMQ's own HTTP publish (the management plugin's
//! `POST /api/exchanges/<vhost>/<exchange>/publish`), one message per request.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use hyper::header::HeaderValue;
use serde_json::{Value, json};

use crate::http::{Connection, Target, expect_success};
use crate::load::{Plan, Recorder, Schedule, Totals, run_workers};
use crate::scenarios::{ANALYTICS, Encoded, EnvelopeMaker, SOURCE};

/// Publishes through the management listener at `addr` as guest.
pub async fn run(plan: &Plan, addr: SocketAddr, exchange: &str) -> anyhow::Result<Totals> {
    let credentials = base64::engine::general_purpose::STANDARD.encode("guest:guest");
    let target = Target {
        addr,
        // The exchange name is the bench's own (`bench-<uuid>`): safe in a path as it is.
        path: format!("/api/exchanges/%2f/{exchange}/publish"),
        authorization: HeaderValue::from_str(&format!("Basic {credentials}"))
            .context("Authorization header")?,
    };
    run_workers(plan, 1, |_, schedule| peer_worker(target.clone(), schedule)).await
}

/// Publishes through the management API, one message per request.
async fn peer_worker(target: Target, mut schedule: Schedule) -> anyhow::Result<Recorder> {
    let mut connection = Connection::open(target.addr).await?;
    let mut maker = EnvelopeMaker::new()?;
    let mut recorder = Recorder::new()?;
    while let Some(start) = schedule.next().await {
        let body = peer_body(maker.next()?)?;
        let outcome = match connection.post_json(&target, body).await {
            Ok(answer) => expect_success(&answer).and_then(|()| expect_routed(&answer.body)),
            Err(error) => {
                connection = Connection::open(target.addr).await?;
                Err(error)
            }
        };
        recorder.record(start, 1, outcome);
    }
    Ok(recorder)
}

/// The management API's publish request: the same properties, the envelope as a string.
fn peer_body(message: Encoded) -> anyhow::Result<Bytes> {
    let payload = String::from_utf8(message.body).context("the envelope is not UTF-8")?;
    let request = json!({
        "properties": {"delivery_mode": 2, "content_type": "application/json",
            "message_id": message.id.to_string(), "correlation_id": message.correlation_id,
            "timestamp": message.timestamp_secs, "type": ANALYTICS, "app_id": SOURCE},
        "routing_key": ANALYTICS,
        "payload": payload,
        "payload_encoding": "string",
    });
    Ok(Bytes::from(request.to_string()))
}

/// The management API answers 200 `{"routed": false}` when no queue took the message.
fn expect_routed(body: &[u8]) -> anyhow::Result<()> {
    let answer: Value = serde_json::from_slice(body).context("the publish answer is not JSON")?;
    if answer.get("routed") != Some(&Value::Bool(true)) {
        bail!("the broker did not route the message: {answer}");
    }
    Ok(())
}
