//! Scheduled events alongside the steady load: players of their own (so their sequences
//! and their order are theirs alone), each sending its requests one after another as the
//! load's players do, every event with a `deliverAt`.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::events::{Dice, Shape};
use super::send::send_until_answered;
use super::{Client, EventLog, Load};

/// One request of a scheduled player: single or batch, how many events, when they are due.
#[derive(Debug, Clone, Copy)]
pub struct DueRequest {
    pub shape: Shape,
    pub events: u64,
    pub deliver_at_ms: u64,
}

impl DueRequest {
    pub fn new(shape: Shape, events: u64, deliver_at_ms: u64) -> DueRequest {
        DueRequest {
            shape,
            events,
            deliver_at_ms,
        }
    }
}

/// How many events were scheduled, and how many of them the gateway took.
pub struct ScheduleSent {
    pub events: usize,
    pub safe: usize,
}

impl Load {
    /// Player `index` (of `players`) sends `plan(index)`, every request retried as the
    /// load retries; returns once each is answered. Their logs join the load's.
    pub async fn schedule(
        &self,
        players: usize,
        plan: impl Fn(usize) -> Vec<DueRequest>,
    ) -> ScheduleSent {
        let mut senders = JoinSet::new();
        for index in 0..players {
            let user = format!("{}-s{index}", self.namespace);
            senders.spawn(send_plan(self.client.clone(), user, index, plan(index)));
        }
        let mut logs = Vec::new();
        while let Some(sent) = senders.join_next().await {
            logs.extend(sent.expect("a scheduling player panicked"));
        }
        let sent = ScheduleSent {
            events: logs.len(),
            safe: logs.iter().filter(|log| log.acked().is_some()).count(),
        };
        self.scheduled.lock().expect("lock").extend(logs);
        sent
    }
}

async fn send_plan(
    client: Arc<Client>,
    user: String,
    index: usize,
    plan: Vec<DueRequest>,
) -> Vec<EventLog> {
    let mut dice = Dice::new(1000 + index as u64);
    let mut target = index % client.targets.len();
    let mut next_seq = 0;
    let mut logs = Vec::new();
    for request in plan {
        let events = dice.due_events(&user, &mut next_seq, request.events, request.deliver_at_ms);
        let sent = send_until_answered(&client, &mut target, request.shape, events).await;
        let all_acked = sent.iter().all(|log| log.acked().is_some());
        logs.extend(sent);
        if !all_acked {
            break; // as in the load: a sequence does not go on past an event not taken
        }
    }
    logs
}
