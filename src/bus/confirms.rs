//! A channel's confirm collector: one task owns every confirm in flight on the channel,
//! polls each as lapin wakes it, and answers its publish once the verdict is certain (the
//! rules are in [`super::confirm_book`]). A publish takes a ticket before `basic_publish`
//! and hands its confirm over after; a caller that stops waiting for the answer leaves the
//! confirm collected all the same, so lapin never keeps an orphaned one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use lapin::message::BasicReturnMessage;
use lapin::{Confirmation, PublisherConfirm};
use tokio::sync::{Notify, oneshot};
use tracing::warn;
use uuid::Uuid;

use super::confirm_book::{ConfirmBook, Sent, Settled, Ticket};
use crate::app::ports::{Cause, PublishError};

type Reply = oneshot::Sender<Result<(), PublishError>>;

/// The collector of one channel; it stops once this is dropped and nothing is in flight.
pub(super) struct Confirms {
    inbox: Arc<Inbox>,
}

impl Confirms {
    pub(super) fn start() -> Self {
        let inbox = Arc::new(Inbox::default());
        tokio::spawn(collect(inbox.clone()));
        Confirms { inbox }
    }

    /// Take one right before `basic_publish`, so the collector waits for its confirm.
    pub(super) fn ticket(&self) -> ConfirmTicket {
        ConfirmTicket {
            ticket: self.inbox.tickets.fetch_add(1, Ordering::SeqCst),
            inbox: Some(self.inbox.clone()),
        }
    }
}

impl Drop for Confirms {
    fn drop(&mut self) {
        self.inbox.closed.store(true, Ordering::Release);
        self.inbox.ready.notify_one();
    }
}

/// A publish's turn; dropped without [`ConfirmTicket::hand_over`], it tells the collector
/// that no confirm will come for it.
pub(super) struct ConfirmTicket {
    ticket: Ticket,
    inbox: Option<Arc<Inbox>>,
}

impl ConfirmTicket {
    /// Hands over the confirm of a message that was sent (or whose `basic_publish` failed
    /// once it may have been written); resolves to its verdict.
    pub(super) fn hand_over(
        mut self,
        sent: Sent,
        confirm: Result<PublisherConfirm, Cause>,
    ) -> impl Future<Output = Result<(), PublishError>> + Send + use<> {
        let (reply, verdict) = oneshot::channel();
        if let Some(inbox) = self.inbox.take() {
            inbox.push(Event::HandedOver {
                ticket: self.ticket,
                sent,
                confirm,
                reply,
            });
        }
        async move {
            verdict
                .await
                .unwrap_or_else(|_| Err(PublishError::ConfirmLost(Arc::new(CollectorStopped))))
        }
    }
}

impl Drop for ConfirmTicket {
    fn drop(&mut self) {
        if let Some(inbox) = self.inbox.take() {
            inbox.push(Event::GaveUp(self.ticket));
        }
    }
}

/// The collector ended before it answered (it panicked): the outcome is unknown.
#[derive(Debug, thiserror::Error)]
#[error("the channel's confirm collector stopped")]
struct CollectorStopped;

enum Event {
    HandedOver {
        ticket: Ticket,
        sent: Sent,
        confirm: Result<PublisherConfirm, Cause>,
        reply: Reply,
    },
    GaveUp(Ticket),
    Woken(Ticket),
}

#[derive(Default)]
struct Inbox {
    events: Mutex<Vec<Event>>,
    tickets: AtomicU64,
    ready: Notify,
    closed: AtomicBool,
}

impl Inbox {
    fn push(&self, event: Event) {
        self.lock().push(event);
        self.ready.notify_one();
    }

    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wakes the collector for one confirm: lapin calls it right when it resolves that
/// confirm, before it resolves the next.
struct ConfirmWaker {
    ticket: Ticket,
    inbox: Arc<Inbox>,
}

impl Wake for ConfirmWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.inbox.push(Event::Woken(self.ticket));
    }
}

struct InFlight {
    confirm: PublisherConfirm,
    waker: Waker,
    sent: Sent,
    reply: Reply,
}

/// Rounds: take everything handed over or woken so far, poll those confirms, send the
/// verdicts that became certain.
async fn collect(inbox: Arc<Inbox>) {
    let mut collector = Collector {
        book: ConfirmBook::default(),
        in_flight: HashMap::new(),
        inbox,
    };
    loop {
        collector.book.start_round();
        for event in collector.inbox.take() {
            collector.receive(event);
        }
        for (reply, verdict) in collector.book.judged() {
            // The publisher may have stopped waiting; the verdict is still settled.
            let _ = reply.send(verdict);
        }
        if collector.is_done() {
            return;
        }
        tokio::task::yield_now().await;
        if !collector.book.wants_round() {
            collector.inbox.ready.notified().await;
        }
    }
}

struct Collector {
    book: ConfirmBook<Reply>,
    in_flight: HashMap<Ticket, InFlight>,
    inbox: Arc<Inbox>,
}

impl Collector {
    fn receive(&mut self, event: Event) {
        match event {
            Event::HandedOver {
                ticket,
                sent,
                confirm,
                reply,
            } => {
                self.book.handed_over(ticket);
                match confirm {
                    Ok(confirm) => {
                        let waker = Waker::from(Arc::new(ConfirmWaker {
                            ticket,
                            inbox: self.inbox.clone(),
                        }));
                        let in_flight = InFlight {
                            confirm,
                            waker,
                            sent,
                            reply,
                        };
                        self.poll(ticket, in_flight);
                    }
                    Err(cause) => self.settle(sent, Settled::Lost(cause), None, reply),
                }
            }
            Event::GaveUp(ticket) => self.book.handed_over(ticket),
            Event::Woken(ticket) => {
                if let Some(in_flight) = self.in_flight.remove(&ticket) {
                    self.poll(ticket, in_flight);
                }
            }
        }
    }

    fn poll(&mut self, ticket: Ticket, mut in_flight: InFlight) {
        let mut context = Context::from_waker(&in_flight.waker);
        let (settled, carried) = match Pin::new(&mut in_flight.confirm).poll(&mut context) {
            Poll::Pending => {
                self.in_flight.insert(ticket, in_flight);
                return;
            }
            Poll::Ready(Ok(Confirmation::Ack(returned))) => (Settled::Ack, returned),
            Poll::Ready(Ok(Confirmation::Nack(returned))) => (Settled::Nack, returned),
            Poll::Ready(Ok(Confirmation::NotRequested)) => (Settled::NotRequested, None),
            Poll::Ready(Err(error)) => (Settled::Lost(Arc::new(error)), None),
        };
        let carried = carried.as_ref().and_then(returned_id);
        self.settle(in_flight.sent, settled, carried, in_flight.reply);
    }

    fn settle(&mut self, sent: Sent, settled: Settled, carried: Option<Uuid>, reply: Reply) {
        let taken = self.inbox.tickets.load(Ordering::SeqCst);
        self.book.resolved(taken, sent, settled, carried, reply);
    }

    /// Closed, and every ticket ever taken is answered.
    fn is_done(&self) -> bool {
        self.inbox.closed.load(Ordering::Acquire)
            && self.in_flight.is_empty()
            && self
                .book
                .is_settled(self.inbox.tickets.load(Ordering::SeqCst))
    }
}

/// Whose message came back: its `message_id`, as the gateway set it.
fn returned_id(message: &BasicReturnMessage) -> Option<Uuid> {
    let id = message
        .properties
        .message_id()
        .as_ref()
        .and_then(|id| Uuid::parse_str(id.as_str()).ok());
    if id.is_none() {
        warn!(
            routing_key = %message.routing_key,
            "the broker returned a message without a gateway message_id"
        );
    }
    id
}
