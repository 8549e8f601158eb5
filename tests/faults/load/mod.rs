//! A steady mixed load over HTTP, sent as the contract tells a client to: several users,
//! each sending its next events only once the previous ones were answered 202, and every
//! 5xx, `outcome-unknown` or timeout retried with the same `Idempotency-Key` and ids.

mod answers;
mod events;
mod schedule;
mod send;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use answers::Outcome;
use events::Dice;
pub use events::{Planned, Shape};
pub use schedule::DueRequest;
use send::send_until_answered;

/// Many players, each at a player's pace: about 80 events a second in all.
const USERS: usize = 24;
const PACE: Duration = Duration::from_millis(400);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// One answer to one event.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub sent_ms: u64,
    pub answered_ms: u64,
    pub outcome: Outcome,
}

/// An event and every answer it got.
#[derive(Debug, Clone)]
pub struct EventLog {
    pub planned: Planned,
    pub attempts: Vec<Attempt>,
}

impl EventLog {
    /// The first safe answer: the event's id, whether it was queued, and when.
    pub fn acked(&self) -> Option<(Uuid, bool, u64)> {
        self.attempts.iter().find_map(|attempt| {
            let queued = matches!(attempt.outcome, Outcome::Acked { queued: true, .. });
            Some((attempt.outcome.safe_id()?, queued, attempt.answered_ms))
        })
    }
}

struct Client {
    http: reqwest::Client,
    token: String,
    targets: Vec<String>,
    /// Stop starting new requests.
    stop: CancellationToken,
    /// Stop retrying too: whatever is unanswered now stays so.
    abandon: CancellationToken,
    /// When the latest `published` answer arrived (ms since the epoch).
    last_published: Mutex<u64>,
}

pub struct Load {
    client: Arc<Client>,
    namespace: String,
    users: JoinSet<Vec<EventLog>>,
    /// Every scheduled event sent so far ([`Load::schedule`]).
    scheduled: Mutex<Vec<EventLog>>,
}

impl Load {
    /// Starts the users; `targets` are the gateways' base URLs (a user moves to the next
    /// one when its gateway does not answer at all, as behind a load balancer).
    pub fn start(targets: Vec<String>, token: String, namespace: &str) -> Load {
        let client = Arc::new(Client {
            http: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .build()
                .expect("HTTP client"),
            token,
            targets,
            stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
            last_published: Mutex::new(0),
        });
        let mut users = JoinSet::new();
        for index in 0..USERS {
            let user = format!("{namespace}-u{index}");
            users.spawn(run_user(client.clone(), user, index));
        }
        Load {
            client,
            namespace: namespace.to_owned(),
            users,
            scheduled: Mutex::new(Vec::new()),
        }
    }

    pub fn last_published_ms(&self) -> u64 {
        *self.client.last_published.lock().expect("lock")
    }

    /// Stops new requests, lets unanswered events retry for `grace`, and returns every
    /// event sent.
    pub async fn finish(mut self, grace: Duration) -> Vec<EventLog> {
        self.client.stop.cancel();
        let abandon = self.client.abandon.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            abandon.cancel();
        });
        let mut logs = Vec::new();
        while let Some(user) = self.users.join_next().await {
            logs.extend(user.expect("a load user panicked"));
        }
        timer.abort();
        logs.append(&mut self.scheduled.lock().expect("lock"));
        logs
    }
}

async fn run_user(client: Arc<Client>, user: String, index: usize) -> Vec<EventLog> {
    let mut dice = Dice::new(index as u64 + 1);
    let mut target = index % client.targets.len();
    let mut next_seq = 0;
    let mut logs = Vec::new();
    while !client.stop.is_cancelled() {
        let (shape, events) = dice.next_step(&user, &mut next_seq);
        let sent = send_until_answered(&client, &mut target, shape, events).await;
        let all_acked = sent.iter().all(|log| log.acked().is_some());
        logs.extend(sent);
        if !all_acked {
            break; // the sequence cannot go on past an event that was not taken
        }
        tokio::time::sleep(PACE).await;
    }
    logs
}
