//! What the load sends: each user's ordered events (the sequence number rides in
//! `data.metadata.seq`), grouped into single, typed and batch requests.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::process::format_ms;

/// Critical by default (`CRITICAL_EVENTS`): written to PostgreSQL before the answer.
pub const CRITICAL: [&str; 2] = ["achievement.completed", "reward.created"];

/// One event of a user's sequence.
#[derive(Debug, Clone)]
pub struct Planned {
    pub user: String,
    pub seq: u64,
    pub event_type: &'static str,
    /// The client's own id; `None` for the typed endpoint, which takes only `data`.
    pub client_id: Option<Uuid>,
    /// Its `deliverAt` (ms since the epoch), when it is scheduled.
    pub deliver_at_ms: Option<u64>,
}

impl Planned {
    pub fn critical(&self) -> bool {
        CRITICAL.contains(&self.event_type)
    }

    pub fn data(&self) -> Value {
        let (user, seq) = (&self.user, self.seq);
        let metadata = json!({"seq": seq});
        match self.event_type {
            "achievement.completed" => json!({"achievementId": format!("ach-{seq}"),
                "userId": user, "name": "Step", "points": 10,
                "completedAt": "2026-12-01T00:00:00Z", "metadata": metadata}),
            "reward.created" => json!({"rewardId": format!("rew-{seq}"), "userId": user,
                "name": "Gold", "type": "coins", "value": seq, "metadata": metadata}),
            "quest.progress_updated" => json!({"questId": format!("quest-{seq}"),
                "userId": user, "progress": 50, "metadata": metadata}),
            _ => json!({"analyticsId": format!("an-{seq}"), "userId": user, "type": "click",
                "category": "faults", "event": "step", "metadata": metadata}),
        }
    }

    /// The event as `POST /v1/events` and batches take it.
    pub fn event(&self) -> Value {
        let mut event = json!({"type": self.event_type, "data": self.data()});
        if let Some(id) = self.client_id {
            event["id"] = json!(id);
        }
        if let Some(due) = self.deliver_at_ms {
            event["deliverAt"] = json!(format_ms(due));
        }
        event
    }
}

/// How one request carries its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `POST /v1/events` with the client's id.
    Single,
    /// `POST /v1/events/{type}` with an `Idempotency-Key`.
    Typed,
    /// `POST /v1/events/batch` with an `Idempotency-Key` and the client's ids.
    Batch,
}

/// A small deterministic generator, so a scenario's load is the same on every run.
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..bound`.
    pub fn roll(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }

    /// The next request of a user: its shape and its events, continuing `next_seq`.
    pub fn next_step(&mut self, user: &str, next_seq: &mut u64) -> (Shape, Vec<Planned>) {
        let (shape, count) = match self.roll(100) {
            0..=64 => (Shape::Single, 1),
            65..=74 => (Shape::Typed, 1),
            _ => (Shape::Batch, 2 + self.roll(3)),
        };
        let events = (0..count)
            .map(|_| {
                *next_seq += 1;
                Planned {
                    user: user.to_owned(),
                    seq: *next_seq,
                    event_type: self.event_type(),
                    client_id: (shape != Shape::Typed).then(Uuid::new_v4),
                    deliver_at_ms: None,
                }
            })
            .collect();
        (shape, events)
    }

    /// `count` events of a user, continuing `next_seq`, all due at `deliver_at_ms`.
    pub fn due_events(
        &mut self,
        user: &str,
        next_seq: &mut u64,
        count: u64,
        deliver_at_ms: u64,
    ) -> Vec<Planned> {
        (0..count)
            .map(|_| {
                *next_seq += 1;
                Planned {
                    user: user.to_owned(),
                    seq: *next_seq,
                    event_type: self.event_type(),
                    client_id: Some(Uuid::new_v4()),
                    deliver_at_ms: Some(deliver_at_ms),
                }
            })
            .collect()
    }

    fn event_type(&mut self) -> &'static str {
        match self.roll(100) {
            0..=34 => "achievement.completed",
            35..=49 => "reward.created",
            50..=64 => "quest.progress_updated",
            _ => "analytics.event_tracked",
        }
    }
}
