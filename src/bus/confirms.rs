//! A channel's confirm collector: one task publishes every message of the channel and owns
//! its confirm from the moment lapin registers it, polls each as lapin wakes it, and
//! answers the publisher once the verdict is certain (the rules are in
//! [`super::confirm_book`]). The messages of one hand-over go out one after another, each
//! once the one before is written; after a failure the rest are not sent, so a later one
//! never overtakes one that failed. A caller that stops waiting for its answers leaves the
//! confirms collected all the same, so lapin never keeps an orphaned one.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use lapin::message::BasicReturnMessage;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use tokio::sync::{Notify, oneshot};
use tracing::warn;
use uuid::Uuid;

use super::confirm_book::{ConfirmBook, Sent, Settled};
use super::publisher::MANDATORY;
use crate::app::ports::{Cause, PublishError};

/// A `basic_publish` under way: it resolves once its frames are written.
type Publish = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;
type Reply = oneshot::Sender<Result<(), PublishError>>;

/// A message as the collector publishes it (persistent, mandatory).
pub(super) struct Outgoing {
    pub(super) exchange: ShortString,
    pub(super) body: Vec<u8>,
    pub(super) properties: BasicProperties,
    pub(super) sent: Sent,
}

/// The collector of one channel; it stops once this is dropped and nothing is in flight.
pub(super) struct Confirms {
    inbox: Arc<Inbox>,
}

impl Confirms {
    /// Starts the collector of `channel`, which must be in confirm mode.
    pub(super) fn start(channel: Channel) -> Self {
        let inbox = Arc::new(Inbox::default());
        tokio::spawn(collect(channel, inbox.clone()));
        Confirms { inbox }
    }

    /// Has the collector publish these in this order; one verdict each.
    pub(super) fn publish_in_order(
        &self,
        batch: Vec<Outgoing>,
    ) -> Vec<impl Future<Output = Result<(), PublishError>> + Send + use<>> {
        let mut queued = VecDeque::with_capacity(batch.len());
        let mut verdicts = Vec::with_capacity(batch.len());
        for message in batch {
            let (reply, verdict) = oneshot::channel();
            queued.push_back(Queued { message, reply });
            verdicts.push(async move {
                let stopped = || PublishError::ConfirmLost(Arc::new(CollectorStopped));
                verdict.await.unwrap_or_else(|_| Err(stopped()))
            });
        }
        self.inbox.push(Event::Publish(queued));
        verdicts
    }
}

impl Drop for Confirms {
    fn drop(&mut self) {
        self.inbox.closed.store(true, Ordering::Release);
        self.inbox.ready.notify_one();
    }
}

/// The collector ended before it answered (it panicked): the outcome is unknown.
#[derive(Debug, thiserror::Error)]
#[error("the channel's confirm collector stopped")]
struct CollectorStopped;

/// A message waiting for the one before it to be written.
struct Queued {
    message: Outgoing,
    reply: Reply,
}

enum Event {
    Publish(VecDeque<Queued>),
    Woken(u64),
}

#[derive(Default)]
struct Inbox {
    events: Mutex<Vec<Event>>,
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

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wakes the collector for one message: lapin calls it as soon as that message's frames
/// are written or its confirm resolves, before it goes on to the next confirm.
struct MessageWaker {
    key: u64,
    inbox: Arc<Inbox>,
}

impl Wake for MessageWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.inbox.push(Event::Woken(self.key));
    }
}

/// Where a message is: its frames being written (the rest of its hand-over waiting), then
/// its confirm awaited.
enum Stage {
    Publishing(Publish, VecDeque<Queued>),
    Confirming(PublisherConfirm),
}

struct InFlight {
    stage: Stage,
    waker: Waker,
    sent: Sent,
    reply: Reply,
}

/// Rounds: take everything handed over or woken so far, poll those, send the verdicts
/// that became certain.
async fn collect(channel: Channel, inbox: Arc<Inbox>) {
    let mut collector = Collector {
        channel,
        book: ConfirmBook::default(),
        in_flight: HashMap::new(),
        next_key: 0,
        inbox,
    };
    loop {
        collector.book.start_round();
        for event in collector.inbox.take() {
            collector.receive(event);
        }
        for (reply, verdict) in collector.book.judged() {
            // The publisher may have stopped waiting; the verdict is settled all the same.
            let _ = reply.send(verdict);
        }
        let closed = collector.inbox.closed.load(Ordering::Acquire);
        if closed && collector.in_flight.is_empty() && !collector.book.wants_round() {
            return;
        }
        tokio::task::yield_now().await;
        if !collector.book.wants_round() {
            collector.inbox.ready.notified().await;
        }
    }
}

struct Collector {
    channel: Channel,
    book: ConfirmBook<Reply>,
    in_flight: HashMap<u64, InFlight>,
    next_key: u64,
    inbox: Arc<Inbox>,
}

impl Collector {
    fn receive(&mut self, event: Event) {
        let mut next = match event {
            Event::Publish(queued) => self.start(queued),
            Event::Woken(key) => self.in_flight.remove(&key).map(|m| (key, m)),
        };
        // A written message starts the next of its hand-over, without recursion.
        while let Some((key, in_flight)) = next {
            next = self.drive(key, in_flight);
        }
    }

    fn start(&mut self, mut queued: VecDeque<Queued>) -> Option<(u64, InFlight)> {
        let Queued { message, reply } = queued.pop_front()?;
        let sent = message.sent;
        let publish = self.publish(message);
        let key = self.next_key;
        self.next_key += 1;
        let inbox = self.inbox.clone();
        let waker = Waker::from(Arc::new(MessageWaker { key, inbox }));
        let stage = Stage::Publishing(publish, queued);
        Some((
            key,
            InFlight {
                stage,
                waker,
                sent,
                reply,
            },
        ))
    }

    /// The future is made only now: a `basic_publish` future is large, and a batch waits.
    fn publish(&self, message: Outgoing) -> Publish {
        let channel = self.channel.clone();
        Box::pin(async move {
            let Outgoing {
                exchange,
                body,
                properties,
                sent,
            } = message;
            let routing_key = ShortString::from(sent.routing_key);
            let publish =
                channel.basic_publish(exchange, routing_key, MANDATORY, &body, properties);
            publish.await
        })
    }

    /// Drives one message as far as it goes now, and gives back the next message of its
    /// hand-over once this one is written.
    fn drive(&mut self, key: u64, mut in_flight: InFlight) -> Option<(u64, InFlight)> {
        let mut context = Context::from_waker(&in_flight.waker);
        let mut next = None;
        let confirmed = loop {
            match &mut in_flight.stage {
                Stage::Publishing(publish, rest) => match publish.as_mut().poll(&mut context) {
                    Poll::Pending => break None,
                    Poll::Ready(Ok(confirm)) => {
                        next = self.start(std::mem::take(rest));
                        in_flight.stage = Stage::Confirming(confirm);
                    }
                    Poll::Ready(Err(error)) => {
                        for unsent in std::mem::take(rest) {
                            let _ = unsent.reply.send(Err(PublishError::Unavailable(None)));
                        }
                        if never_sent(&error) {
                            let refused = PublishError::Unavailable(Some(Arc::new(error)));
                            let _ = in_flight.reply.send(Err(refused));
                            return None;
                        }
                        break Some(Err(error));
                    }
                },
                Stage::Confirming(confirm) => match Pin::new(confirm).poll(&mut context) {
                    Poll::Pending => break None,
                    Poll::Ready(confirmed) => break Some(confirmed),
                },
            }
        };
        match confirmed {
            None => {
                self.in_flight.insert(key, in_flight);
            }
            Some(confirmed) => self.settle(in_flight, confirmed),
        }
        next
    }

    fn settle(&mut self, in_flight: InFlight, confirmed: lapin::Result<Confirmation>) {
        let (settled, carried) = settled(confirmed);
        let carried = carried.as_ref().and_then(returned_id);
        self.book
            .resolved(in_flight.sent, settled, carried, in_flight.reply);
    }
}

/// lapin refused before writing anything: the channel was not connected. Any other
/// `basic_publish` error may come after some or all of the message was written.
fn never_sent(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::InvalidChannelState(..))
}

fn settled(confirmed: lapin::Result<Confirmation>) -> (Settled, Option<BasicReturnMessage>) {
    match confirmed {
        Ok(Confirmation::Ack(returned)) => (Settled::Ack, returned),
        Ok(Confirmation::Nack(returned)) => (Settled::Nack, returned),
        Ok(Confirmation::NotRequested) => (Settled::NotRequested, None),
        Err(error) => (Settled::Lost(Arc::new(error) as Cause), None),
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
