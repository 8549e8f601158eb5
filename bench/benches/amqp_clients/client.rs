//! The two clients and what each must provide: a session of confirm-mode channels, and a
//! publish that resolves with the confirm.

use std::future::Future;
use std::sync::Arc;

use lapin::uri::AMQPUri;

/// The client a run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Lapin,
    Amqprs,
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lapin => "lapin",
            Self::Amqprs => "amqprs",
        }
    }
}

/// A client's connection and its confirm-mode channels.
pub trait Session: Sized {
    type Publisher: Publisher;

    async fn open(uri: &AMQPUri, exchange: &str, channels: usize) -> anyhow::Result<Self>;

    fn publishers(&self) -> Vec<Arc<Self::Publisher>>;

    async fn close(self) -> anyhow::Result<()>;
}

/// One channel: publishes a message and resolves once the broker has acked it.
pub trait Publisher: Send + Sync + 'static {
    fn publish(
        &self,
        body: &[u8],
        message_id: String,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}
