//! One request and its retries: the same `Idempotency-Key` and ids until every event is
//! safe, refused for good, or the load gives up.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use super::answers::{Answer, Outcome};
use super::events::{Planned, Shape};
use super::{Attempt, Client, EventLog};
use crate::process::now_ms;

const RETRY_DELAY: Duration = Duration::from_millis(200);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

pub(super) async fn send_until_answered(
    client: &Client,
    target: &mut usize,
    shape: Shape,
    events: Vec<Planned>,
) -> Vec<EventLog> {
    let mut logs: Vec<EventLog> = events
        .into_iter()
        .map(|planned| EventLog {
            planned,
            attempts: Vec::new(),
        })
        .collect();
    let mut key = Uuid::new_v4().to_string();
    let mut pending: Vec<usize> = (0..logs.len()).collect();
    loop {
        let batch: Vec<&Planned> = pending.iter().map(|&index| &logs[index].planned).collect();
        let sent_ms = now_ms();
        let answer = post(client, &client.targets[*target], shape, &key, &batch).await;
        let answered_ms = now_ms();
        if answer.outcomes.iter().all(|outcome| matches!(outcome, Outcome::Unknown(reason) if reason.starts_with("transport"))) {
            *target = (*target + 1) % client.targets.len();
        }
        let mut still = Vec::new();
        let mut final_refusal = false;
        for (&index, outcome) in pending.iter().zip(answer.outcomes) {
            if let Outcome::Acked { queued: false, .. } = outcome {
                let mut last = client.last_published.lock().expect("lock");
                *last = (*last).max(answered_ms);
            }
            final_refusal |= outcome.is_final();
            if outcome.safe_id().is_none() {
                still.push(index);
            }
            logs[index].attempts.push(Attempt {
                sent_ms,
                answered_ms,
                outcome,
            });
        }
        if still.is_empty() || final_refusal || client.abandon.is_cancelled() {
            return logs;
        }
        if still.len() != pending.len() {
            // Part of a batch was taken: the rest go again with their ids, under a new key.
            key = Uuid::new_v4().to_string();
            pending = still;
        }
        let delay = answer
            .retry_after
            .unwrap_or(RETRY_DELAY)
            .min(MAX_RETRY_DELAY);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = client.abandon.cancelled() => return logs,
        }
    }
}

async fn post(client: &Client, base: &str, shape: Shape, key: &str, events: &[&Planned]) -> Answer {
    let (path, body) = match shape {
        Shape::Single => ("/v1/events".to_owned(), events[0].event()),
        Shape::Typed => (
            format!("/v1/events/{}", events[0].event_type),
            events[0].data(),
        ),
        Shape::Batch => (
            "/v1/events/batch".to_owned(),
            json!({"events": events.iter().map(|event| event.event()).collect::<Vec<_>>()}),
        ),
    };
    let mut request = client
        .http
        .post(format!("{base}{path}"))
        .bearer_auth(&client.token)
        .json(&body);
    if shape != Shape::Single {
        request = request.header("Idempotency-Key", key);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Answer::transport(&error, events.len()),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .map(Duration::from_secs);
    match response.json::<Value>().await {
        Ok(body) => Answer::read(status, retry_after, &body, events.len()),
        Err(error) => Answer::transport(&error, events.len()),
    }
}
