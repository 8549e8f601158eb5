//! A channel's confirm collector: one task publishes every message of the channel (in the
//! order handed to it) and owns its confirm from the moment lapin registers it, polls each
//! as lapin wakes it, and answers the publisher once the verdict is certain (the rules are
//! in [`super::confirm_book`]). A caller that stops waiting for its answer leaves the
//! confirm collected all the same, so lapin never keeps an orphaned one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use lapin::message::BasicReturnMessage;
use lapin::{Confirmation, PublisherConfirm};
use tokio::sync::{Notify, oneshot};
use tracing::warn;
use uuid::Uuid;

use super::confirm_book::{ConfirmBook, Sent, Settled};
use crate::app::ports::{Cause, PublishError};

/// A `basic_publish` not polled yet: it resolves once its frames are written.
pub(super) type Publish = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;
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

    /// Has the collector run `publish` (after every one handed over before it) and
    /// resolves to the verdict on `sent`.
    pub(super) fn publish(
        &self,
        publish: Publish,
        sent: Sent,
    ) -> impl Future<Output = Result<(), PublishError>> + Send + use<> {
        let (reply, verdict) = oneshot::channel();
        self.inbox.push(Event::Publish {
            publish,
            sent,
            reply,
        });
        async move {
            let stopped = || PublishError::ConfirmLost(Arc::new(CollectorStopped));
            verdict.await.unwrap_or_else(|_| Err(stopped()))
        }
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

enum Event {
    Publish {
        publish: Publish,
        sent: Sent,
        reply: Reply,
    },
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

/// Where a message is: its frames being written, then its confirm awaited.
enum Stage {
    Publishing(Publish),
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
async fn collect(inbox: Arc<Inbox>) {
    let mut collector = Collector {
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
    book: ConfirmBook<Reply>,
    in_flight: HashMap<u64, InFlight>,
    next_key: u64,
    inbox: Arc<Inbox>,
}

impl Collector {
    fn receive(&mut self, event: Event) {
        let (key, in_flight) = match event {
            Event::Publish {
                publish,
                sent,
                reply,
            } => {
                let key = self.next_key;
                self.next_key += 1;
                let waker = Waker::from(Arc::new(MessageWaker {
                    key,
                    inbox: self.inbox.clone(),
                }));
                let stage = Stage::Publishing(publish);
                (
                    key,
                    InFlight {
                        stage,
                        waker,
                        sent,
                        reply,
                    },
                )
            }
            Event::Woken(key) => match self.in_flight.remove(&key) {
                Some(in_flight) => (key, in_flight),
                // Already settled; a late wake.
                None => return,
            },
        };
        if let Some(in_flight) = self.poll(in_flight) {
            self.in_flight.insert(key, in_flight);
        }
    }

    /// Drives one message as far as it goes now; gives it back while it is pending.
    fn poll(&mut self, mut in_flight: InFlight) -> Option<InFlight> {
        let mut context = Context::from_waker(&in_flight.waker);
        loop {
            let confirmed = match &mut in_flight.stage {
                Stage::Publishing(publish) => match publish.as_mut().poll(&mut context) {
                    Poll::Pending => return Some(in_flight),
                    Poll::Ready(Ok(confirm)) => {
                        in_flight.stage = Stage::Confirming(confirm);
                        continue;
                    }
                    Poll::Ready(Err(error)) if never_sent(&error) => {
                        let _ = in_flight
                            .reply
                            .send(Err(PublishError::Unavailable(Some(Arc::new(error)))));
                        return None;
                    }
                    Poll::Ready(Err(error)) => Err(error),
                },
                Stage::Confirming(confirm) => match Pin::new(confirm).poll(&mut context) {
                    Poll::Pending => return Some(in_flight),
                    Poll::Ready(confirmed) => confirmed,
                },
            };
            let (settled, carried) = settled(confirmed);
            let carried = carried.as_ref().and_then(returned_id);
            let InFlight { sent, reply, .. } = in_flight;
            self.book.resolved(sent, settled, carried, reply);
            return None;
        }
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
