//! The bookkeeping behind a channel's confirms, without lapin: which publishes have handed
//! over their confirm, which returned messages came back, and when a resolved confirm may
//! be judged.
//!
//! lapin hands a returned message (`basic.return`, sent because of `mandatory`) to
//! whichever confirm it resolves next, not to the publish it belongs to. The broker sends
//! message N's return before N's ack, so the confirm that carries it is resolved no later
//! than N's own; but the collector may see that confirm resolve after N's (the order it
//! polls in is not lapin's), or not have it yet at all (a publish registers its confirm in
//! lapin before it can hand it over). So a confirm seen resolved is judged only once
//! - every publish that took its ticket before then has handed over its confirm, and
//! - a later round has polled every confirm woken before then,
//!
//! so every confirm lapin resolved before it has been seen, with what it carried. A
//! message is returned when a return with its own `message_id` came back, on any confirm.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

use crate::app::ports::{Cause, PublishError};

/// A publish's place among its channel's publishes, taken before it is sent.
pub type Ticket = u64;

/// What a message's own confirm said, apart from any return it carried.
#[derive(Debug)]
pub enum Settled {
    Ack,
    Nack,
    /// The channel was not in confirm mode.
    NotRequested,
    /// Sent, but the channel or connection failed before the broker confirmed it.
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
    tickets_taken: Ticket,
    sent: Sent,
    settled: Settled,
    reply: R,
}

/// The book of one channel. `R` is whatever takes a verdict back to its publisher.
pub struct ConfirmBook<R> {
    round: u64,
    /// The lowest ticket not handed over yet.
    handed_below: Ticket,
    /// Handed over (true) or not, for the tickets from `handed_below` on.
    handed_ahead: VecDeque<bool>,
    /// `message_id`s of returned messages not judged yet, with how often each came back.
    returned: HashMap<Uuid, u32>,
    /// In the order seen: `round` and `tickets_taken` never decrease along it.
    resolved: VecDeque<Resolved<R>>,
}

impl<R> Default for ConfirmBook<R> {
    fn default() -> Self {
        ConfirmBook {
            round: 0,
            handed_below: 0,
            handed_ahead: VecDeque::new(),
            returned: HashMap::new(),
            resolved: VecDeque::new(),
        }
    }
}

impl<R> ConfirmBook<R> {
    /// A round starts: the collector is about to poll everything woken or handed over
    /// before now.
    pub fn start_round(&mut self) {
        self.round += 1;
    }

    /// The publish holding `ticket` handed over its confirm (or gave up before sending).
    pub fn handed_over(&mut self, ticket: Ticket) {
        let Some(offset) = ticket.checked_sub(self.handed_below) else {
            return;
        };
        let offset = offset as usize;
        if self.handed_ahead.len() <= offset {
            self.handed_ahead.resize(offset + 1, false);
        }
        self.handed_ahead[offset] = true;
        while self.handed_ahead.front() == Some(&true) {
            self.handed_ahead.pop_front();
            self.handed_below += 1;
        }
    }

    /// A confirm was seen resolved while `tickets_taken` tickets had been taken; `carried`
    /// is the `message_id` of the returned message it came with, whoever that is.
    pub fn resolved(
        &mut self,
        tickets_taken: Ticket,
        sent: Sent,
        settled: Settled,
        carried: Option<Uuid>,
        reply: R,
    ) {
        if let Some(id) = carried {
            *self.returned.entry(id).or_default() += 1;
        }
        self.resolved.push_back(Resolved {
            round: self.round,
            tickets_taken,
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
            && next.tickets_taken <= self.handed_below
            && let Some(resolved) = self.resolved.pop_front()
        {
            let verdict = self.verdict(resolved.sent, resolved.settled);
            verdicts.push((resolved.reply, verdict));
        }
        verdicts
    }

    /// Some verdict waits for nothing but another round.
    pub fn wants_round(&self) -> bool {
        self.resolved
            .front()
            .is_some_and(|next| next.tickets_taken <= self.handed_below)
    }

    /// Nothing resolved waits for a verdict, and every ticket up to `tickets_taken` was
    /// handed over.
    pub fn is_settled(&self, tickets_taken: Ticket) -> bool {
        self.resolved.is_empty() && self.handed_below >= tickets_taken
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

    /// One message of a test, by name: `id` is its `message_id`.
    struct Message {
        name: &'static str,
        ticket: Ticket,
        id: Uuid,
    }

    fn messages<const N: usize>(names: [&'static str; N]) -> [Message; N] {
        let mut ticket = 0;
        names.map(|name| {
            ticket += 1;
            Message {
                name,
                ticket: ticket - 1,
                id: Uuid::new_v4(),
            }
        })
    }

    /// Seen resolved with `settled`, carrying the return of `carried`, while `taken`
    /// tickets had been taken.
    fn resolved(
        book: &mut Book,
        taken: Ticket,
        m: &Message,
        settled: Settled,
        carried: Option<&Message>,
    ) {
        let sent = Sent {
            message_id: m.id,
            routing_key: "quest.created",
        };
        book.resolved(taken, sent, settled, carried.map(|c| c.id), m.name);
    }

    fn verdicts(book: &mut Book) -> Vec<(&'static str, &'static str)> {
        book.judged()
            .into_iter()
            .map(|(name, verdict)| {
                (
                    name,
                    verdict.map_or_else(|e| e.outcome().as_str(), |()| "published"),
                )
            })
            .collect()
    }

    #[test]
    fn a_confirm_is_judged_by_its_own_id_not_by_the_return_it_carries() {
        let mut book = Book::default();
        let [routed, returned] = messages(["routed", "returned"]);
        book.start_round();
        book.handed_over(routed.ticket);
        book.handed_over(returned.ticket);
        // One ack for both (multiple=true): lapin resolved the earlier tag first, so the
        // routed message's confirm came with the other one's return.
        resolved(&mut book, 2, &routed, Settled::Ack, Some(&returned));
        resolved(&mut book, 2, &returned, Settled::Ack, None);
        assert!(verdicts(&mut book).is_empty(), "not before another round");
        book.start_round();
        assert_eq!(
            verdicts(&mut book),
            [("routed", "published"), ("returned", "unroutable")]
        );
        assert!(book.is_settled(2));
    }

    #[test]
    fn a_return_seen_a_round_after_its_own_confirm_still_counts() {
        let mut book = Book::default();
        let [returned, routed] = messages(["returned", "routed"]);
        book.start_round();
        book.handed_over(returned.ticket);
        book.handed_over(routed.ticket);
        resolved(&mut book, 2, &returned, Settled::Ack, None);
        book.start_round();
        // The confirm lapin resolved first was polled only now.
        resolved(&mut book, 2, &routed, Settled::Ack, Some(&returned));
        assert_eq!(verdicts(&mut book), [("returned", "unroutable")]);
        book.start_round();
        assert_eq!(verdicts(&mut book), [("routed", "published")]);
    }

    #[test]
    fn a_confirm_waits_for_an_earlier_publish_that_has_not_handed_its_confirm_over() {
        let mut book = Book::default();
        let [late, returned] = messages(["late", "returned"]);
        book.start_round();
        book.handed_over(returned.ticket);
        resolved(&mut book, 2, &returned, Settled::Ack, None);
        book.start_round();
        assert!(
            verdicts(&mut book).is_empty(),
            "the late publish may carry its return"
        );
        assert!(
            !book.wants_round(),
            "waits for a hand-over, not for a round"
        );
        book.start_round();
        book.handed_over(late.ticket);
        resolved(&mut book, 2, &late, Settled::Ack, Some(&returned));
        assert_eq!(verdicts(&mut book), [("returned", "unroutable")]);
        assert!(book.wants_round());
        book.start_round();
        assert_eq!(verdicts(&mut book), [("late", "published")]);
    }

    #[test]
    fn two_queued_returns_each_find_their_own_message() {
        let mut book = Book::default();
        let [first, second, routed] = messages(["first", "second", "routed"]);
        book.start_round();
        for m in [&first, &second, &routed] {
            book.handed_over(m.ticket);
        }
        // Both returns were queued; each confirm took the oldest one waiting.
        resolved(&mut book, 3, &routed, Settled::Ack, Some(&first));
        resolved(&mut book, 3, &first, Settled::Ack, Some(&second));
        resolved(&mut book, 3, &second, Settled::Ack, None);
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
        for m in [&returned, &routed, &unknown] {
            book.handed_over(m.ticket);
        }
        resolved(&mut book, 3, &routed, Settled::Ack, Some(&returned));
        // The channel then failed: lapin rejects every confirm still pending.
        resolved(&mut book, 3, &returned, Settled::Lost(cause.clone()), None);
        resolved(&mut book, 3, &unknown, Settled::Lost(cause), None);
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
    fn a_ticket_given_up_before_sending_does_not_hold_the_others() {
        let mut book = Book::default();
        let [abandoned, routed] = messages(["abandoned", "routed"]);
        book.start_round();
        book.handed_over(routed.ticket);
        resolved(&mut book, 2, &routed, Settled::Ack, None);
        book.start_round();
        assert!(verdicts(&mut book).is_empty());
        book.handed_over(abandoned.ticket);
        book.start_round();
        assert_eq!(verdicts(&mut book), [("routed", "published")]);
        assert!(book.is_settled(2));
    }

    #[test]
    fn a_nack_and_a_channel_without_confirms_are_no_ack() {
        let mut book = Book::default();
        let [nacked, unconfirmed] = messages(["nacked", "unconfirmed"]);
        book.start_round();
        book.handed_over(nacked.ticket);
        book.handed_over(unconfirmed.ticket);
        resolved(&mut book, 2, &nacked, Settled::Nack, None);
        resolved(&mut book, 2, &unconfirmed, Settled::NotRequested, None);
        book.start_round();
        assert_eq!(
            verdicts(&mut book),
            [("nacked", "nacked"), ("unconfirmed", "not_confirmed")]
        );
    }
}
