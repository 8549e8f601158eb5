//! amqprs hands confirms and returns to a channel callback, not to the publish: the
//! publishes of each channel wait here, by delivery tag, until the callback settles them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::oneshot;

/// What became of one publish.
#[derive(Clone, Copy)]
pub enum Outcome {
    Ack,
    Nack,
    Returned,
}

/// The publishes of one amqprs channel that await their confirm, by delivery tag.
#[derive(Default)]
pub struct Confirms(Mutex<BTreeMap<u64, Pending>>);

struct Pending {
    message_id: String,
    settle: oneshot::Sender<Outcome>,
}

impl Confirms {
    fn pending(&self) -> MutexGuard<'_, BTreeMap<u64, Pending>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn expect(&self, tag: u64, message_id: String) -> oneshot::Receiver<Outcome> {
        let (settle, outcome) = oneshot::channel();
        self.pending().insert(tag, Pending { message_id, settle });
        outcome
    }

    pub fn forget(&self, tag: u64) {
        self.pending().remove(&tag);
    }

    /// An ack or a nack of `tag`, or of every tag up to it when `multiple`.
    fn settle(&self, tag: u64, multiple: bool, outcome: Outcome) {
        let mut pending = self.pending();
        if multiple {
            let later = pending.split_off(&(tag + 1));
            for (_, waiting) in std::mem::replace(&mut *pending, later) {
                // The publisher may have given up waiting: nothing to tell then.
                let _ = waiting.settle.send(outcome);
            }
        } else if let Some(waiting) = pending.remove(&tag) {
            let _ = waiting.settle.send(outcome);
        }
    }

    /// A return carries no delivery tag, but the broker sends it before the ack of the same
    /// message: it is found by its message id, and the ack that follows finds nothing.
    fn returned(&self, message_id: Option<&String>) {
        let mut pending = self.pending();
        let tag = pending
            .iter()
            .find(|(_, waiting)| Some(&waiting.message_id) == message_id)
            .map(|(tag, _)| *tag);
        if let Some(waiting) = tag.and_then(|tag| pending.remove(&tag)) {
            let _ = waiting.settle.send(Outcome::Returned);
        }
    }

    /// The channel closed: every waiting publish learns it has no confirm to wait for.
    fn abandon(&self) {
        self.pending().clear();
    }
}

/// Hands amqprs's confirms and returns of one channel to the publishes waiting for them.
pub struct ConfirmCallback(pub Arc<Confirms>);

#[async_trait]
impl amqprs::callbacks::ChannelCallback for ConfirmCallback {
    async fn close(
        &mut self,
        _channel: &amqprs::channel::Channel,
        close: amqprs::CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        eprintln!("amqprs: the broker closed a channel: {close}");
        self.0.abandon();
        Ok(())
    }

    async fn cancel(
        &mut self,
        _channel: &amqprs::channel::Channel,
        _cancel: amqprs::Cancel,
    ) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(
        &mut self,
        _channel: &amqprs::channel::Channel,
        active: bool,
    ) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _channel: &amqprs::channel::Channel, ack: amqprs::Ack) {
        self.0
            .settle(ack.delivery_tag(), ack.mutiple(), Outcome::Ack);
    }

    async fn publish_nack(&mut self, _channel: &amqprs::channel::Channel, nack: amqprs::Nack) {
        self.0
            .settle(nack.delivery_tag(), nack.multiple(), Outcome::Nack);
    }

    async fn publish_return(
        &mut self,
        _channel: &amqprs::channel::Channel,
        _ret: amqprs::Return,
        properties: amqprs::BasicProperties,
        _content: Vec<u8>,
    ) {
        self.0.returned(properties.message_id());
    }
}
