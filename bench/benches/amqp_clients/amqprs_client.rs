//! The amqprs client: a connection of confirm-mode channels whose publishes wait for the
//! confirms its channel callback hands over (see `amqprs_confirms`).

use std::sync::Arc;

use anyhow::{anyhow, bail};
use lapin::uri::AMQPUri;

use crate::amqprs_confirms::{ConfirmCallback, Confirms, Outcome};
use crate::client::{Publisher, Session};
use crate::message::{CONFIRM_TIMEOUT, CONTENT_TYPE, PERSISTENT, ROUTING_KEY};

pub struct AmqprsSession {
    connection: amqprs::connection::Connection,
    publishers: Vec<Arc<AmqprsPublisher>>,
}

pub struct AmqprsPublisher {
    channel: amqprs::channel::Channel,
    exchange: String,
    confirms: Arc<Confirms>,
    /// The delivery tag of the next publish: locked across `basic_publish`, so that tags
    /// follow the order in which the broker sees the publishes.
    next_tag: tokio::sync::Mutex<u64>,
}

impl Session for AmqprsSession {
    type Publisher = AmqprsPublisher;

    async fn open(uri: &AMQPUri, exchange: &str, channels: usize) -> anyhow::Result<Self> {
        let authority = &uri.authority;
        let arguments = amqprs::connection::OpenConnectionArguments::new(
            &authority.host,
            authority.port,
            &authority.userinfo.username,
            &authority.userinfo.password,
        )
        .virtual_host(&uri.vhost)
        .connection_name("amqp-clients-amqprs")
        .finish();
        let connection = amqprs::connection::Connection::open(&arguments).await?;
        let mut publishers = Vec::with_capacity(channels);
        for _ in 0..channels {
            let channel = connection.open_channel(None).await?;
            let confirms = Arc::new(Confirms::default());
            channel
                .register_callback(ConfirmCallback(Arc::clone(&confirms)))
                .await?;
            channel
                .confirm_select(amqprs::channel::ConfirmSelectArguments::default())
                .await?;
            publishers.push(Arc::new(AmqprsPublisher {
                channel,
                exchange: exchange.to_owned(),
                confirms,
                next_tag: tokio::sync::Mutex::new(1),
            }));
        }
        Ok(Self {
            connection,
            publishers,
        })
    }

    fn publishers(&self) -> Vec<Arc<AmqprsPublisher>> {
        self.publishers.clone()
    }

    async fn close(self) -> anyhow::Result<()> {
        for publisher in self.publishers {
            publisher.channel.clone().close().await?;
        }
        Ok(self.connection.close().await?)
    }
}

impl Publisher for AmqprsPublisher {
    async fn publish(&self, body: &[u8], message_id: String) -> anyhow::Result<()> {
        let properties = amqprs::BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(CONTENT_TYPE)
            .with_message_id(&message_id)
            .finish();
        let arguments = amqprs::channel::BasicPublishArguments {
            exchange: self.exchange.clone(),
            routing_key: ROUTING_KEY.to_owned(),
            mandatory: true,
            immediate: false,
        };
        let outcome = {
            let mut next_tag = self.next_tag.lock().await;
            let outcome = self.confirms.expect(*next_tag, message_id);
            if let Err(error) = self
                .channel
                .basic_publish(properties, body.to_vec(), arguments)
                .await
            {
                self.confirms.forget(*next_tag);
                return Err(error.into());
            }
            *next_tag += 1;
            outcome
        };
        let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, outcome)
            .await
            .map_err(|_| anyhow!("no confirm within {CONFIRM_TIMEOUT:?}"))?
            .map_err(|_| anyhow!("the channel closed before the confirm"))?;
        match outcome {
            Outcome::Ack => Ok(()),
            Outcome::Nack => bail!("nacked"),
            Outcome::Returned => bail!("returned as unroutable"),
        }
    }
}
