//! The bookkeeping behind a channel's confirms, without lapin: which returned messages came
//! back, and when a resolved confirm may be judged.
//!
//! lapin hands a returned message (`basic.return`, sent because of `mandatory`) to
//! whichever confirm it resolves next, not to the publish it belongs to. The broker sends
//! message N's return before N's ack, so the confirm that carries it is resolved no later
//! than N's own; but the collector may see that confirm resolve after N's, since the order
//! it polls in is not lapin's. So a confirm seen resolved in one round is judged only after
//! the next round, which polls every confirm lapin woke before then: every confirm lapin
//! resolved before it has been seen by then, with what it carried. (The collector itself
//! calls `basic_publish`, so no confirm lapin knows of is out of its sight.) A message is
//! returned when a return with its own `message_id` came back, on any confirm.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

use crate::app::ports::{Cause, PublishError};

/// What a message's own confirm said, apart from any return it carried.
#[derive(Debug)]
pub enum Settled {
    Ack,
    Nack,
    /// The channel was not in confirm mode.
    NotRequested,
    /// Sent (or perhaps partly), but the channel or connection failed before the broker
    /// confirmed it.
    Lost(Cause),
}

/// The message a confirm belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub message_id: Uuid,
    pub routing_key: &'static str,
}

/// A resolved confirm waiting for its judgement; `reply` goes back with the verdict.
struct Resolved<R> {
    round: u64,
    sent: Sent,
    settled: Settled,
    reply: R,
}

/// The book of one channel. `R` is whatever takes a verdict back to its publisher.
pub struct ConfirmBook<R> {
    round: u64,
    /// `message_id`s of returned messages not judged yet, with how often each came back.
    returned: HashMap<Uuid, u32>,
    /// In the order seen, so `round` never decreases along it.
    resolved: VecDeque<Resolved<R>>,
}

impl<R> Default for ConfirmBook<R> {
    fn default() -> Self {
        ConfirmBook {
            round: 0,
            returned: HashMap::new(),
            resolved: VecDeque::new(),
        }
    }
}

impl<R> ConfirmBook<R> {
    /// A round starts: the collector is about to poll everything woken before now.
    pub fn start_round(&mut self) {
        self.round += 1;
    }

    /// A confirm was seen resolved; `carried` is the `message_id` of the returned message
    /// it came with, whoever that is.
    pub fn resolved(&mut self, sent: Sent, settled: Settled, carried: Option<Uuid>, reply: R) {
        if let Some(id) = carried {
            *self.returned.entry(id).or_default() += 1;
        }
        self.resolved.push_back(Resolved {
            round: self.round,
            sent,
            settled,
            reply,
        });
    }

    /// Call after a round's polls: the verdicts that are now certain, in the order seen.
    pub fn judged(&mut self) -> Vec<(R, Result<(), PublishError>)> {
        let mut verdicts = Vec::new();
        while let Some(next) = self.resolved.front()
            && next.round < self.round
            && let Some(resolved) = self.resolved.pop_front()
        {
            let verdict = self.verdict(resolved.sent, resolved.settled);
            verdicts.push((resolved.reply, verdict));
        }
        verdicts
    }

    /// Some verdict waits for another round.
    pub fn wants_round(&self) -> bool {
        !self.resolved.is_empty()
    }

    fn verdict(&mut self, sent: Sent, settled: Settled) -> Result<(), PublishError> {
        if self.take_returned(sent.message_id) {
            return Err(PublishError::Unroutable {
                routing_key: sent.routing_key.to_owned(),
            });
        }
        match settled {
            Settled::Ack => Ok(()),
            Settled::Nack => Err(PublishError::Nacked),
            Settled::NotRequested => Err(PublishError::NotConfirmed),
            Settled::Lost(cause) => Err(PublishError::ConfirmLost(cause)),
        }
    }

    fn take_returned(&mut self, id: Uuid) -> bool {
        let Some(count) = self.returned.get_mut(&id) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            self.returned.remove(&id);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runtime::metrics::Label;

    type Book = ConfirmBook<&'static str>;

    /// One message of a test, by name, with a `message_id` of its own.
    struct Message {
        name: &'static str,
        id: Uuid,
    }

    fn messages<const N: usize>(names: [&'static str; N]) -> [Message; N] {
        names.map(|name| Message {
            name,
            id: Uuid::new_v4(),
        })
    }

    /// Seen resolved with `settled`, carrying the return of `carried`.
    fn resolved(book: &mut Book, m: &Message, settled: Settled, carried: Option<&Message>) {
        let sent = Sent {
            message_id: m.id,
            routing_key: "quest.created",
        };
        book.resolved(sent, settled, carried.map(|c| c.id), m.name);
    }

    fn verdicts(book: &mut Book) -> Vec<(&'static str, &'static str)> {
        let label = |verdict: Result<(), PublishError>| {
            verdict.map_or_else(|e| e.outcome().as_str(), |()| "published")
        };
        let judged = book.judged().into_iter();
        judged
            .map(|(name, verdict)| (name, label(verdict)))
            .collect()
    }

    #[test]
    fn a_confirm_is_judged_by_its_own_id_not_by_the_return_it_carries() {
        let mut book = Book::default();
        let [routed, returned] = messages(["routed", "returned"]);
        book.start_round();
        // One ack for both (multiple=true) and lapin resolved the earlier tag first, so
        // the routed message's confirm came with the other one's return.
        resolved(&mut book, &routed, Settled::Ack, Some(&returned));
        resolved(&mut book, &returned, Settled::Ack, None);
        assert!(verdicts(&mut book).is_empty(), "not before another round");
        book.start_round();
        assert_eq!(
            verdicts(&mut book),
            [("routed", "published"), ("returned", "unroutable")]
        );
        assert!(!book.wants_round());
    }

    #[test]
    fn a_return_seen_a_round_after_its_own_confirm_still_counts() {
        let mut book = Book::default();
        let [returned, routed] = messages(["returned", "routed"]);
        book.start_round();
        resolved(&mut book, &returned, Settled::Ack, None);
        assert!(book.wants_round());
        // The confirm lapin resolved first (or whose publish the collector saw finish
        // only now) is polled a round later.
        book.start_round();
        resolved(&mut book, &routed, Settled::Ack, Some(&returned));
        assert_eq!(verdicts(&mut book), [("returned", "unroutable")]);
        book.start_round();
        assert_eq!(verdicts(&mut book), [("routed", "published")]);
    }

    #[test]
    fn two_queued_returns_each_find_their_own_message() {
        let mut book = Book::default();
        let [first, second, routed] = messages(["first", "second", "routed"]);
        book.start_round();
        // Both returns were queued; each confirm took the oldest one waiting.
        resolved(&mut book, &routed, Settled::Ack, Some(&first));
        resolved(&mut book, &first, Settled::Ack, Some(&second));
        resolved(&mut book, &second, Settled::Ack, None);
        book.start_round();
        assert_eq!(
            verdicts(&mut book),
            [
                ("routed", "published"),
                ("first", "unroutable"),
                ("second", "unroutable")
            ]
        );
    }

    #[test]
    fn a_lost_confirm_is_unroutable_when_its_return_came_back_and_unknown_otherwise() {
        let mut book = Book::default();
        let [returned, routed, unknown] = messages(["returned", "routed", "unknown"]);
        let cause: Cause = Arc::new(std::io::Error::other("connection reset"));
        book.start_round();
        resolved(&mut book, &routed, Settled::Ack, Some(&returned));
        // The channel then failed: lapin rejects every confirm still pending.
        resolved(&mut book, &returned, Settled::Lost(cause.clone()), None);
        resolved(&mut book, &unknown, Settled::Lost(cause), None);
        book.start_round();
        assert_eq!(
            verdicts(&mut book),
            [
                ("routed", "published"),
                ("returned", "unroutable"),
                ("unknown", "confirm_lost")
            ]
        );
    }

    #[test]
    fn a_nack_and_a_channel_without_confirms_are_no_ack() {
        let mut book = Book::default();
        let [nacked, unconfirmed] = messages(["nacked", "unconfirmed"]);
        book.start_round();
        resolved(&mut book, &nacked, Settled::Nack, None);
        resolved(&mut book, &unconfirmed, Settled::NotRequested, None);
        book.start_round();
        assert_eq!(
            verdicts(&mut book),
            [("nacked", "nacked"), ("unconfirmed", "not_confirmed")]
        );
    }
}
