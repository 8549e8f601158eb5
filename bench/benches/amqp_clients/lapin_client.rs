//! The lapin client: a connection of confirm-mode channels, each publish awaiting the
//! confirm lapin hands back.

use std::sync::Arc;

use anyhow::{anyhow, bail};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::uri::AMQPUri;
use lapin::{Confirmation, ConnectionProperties};

use crate::client::{Publisher, Session};
use crate::message::{CONFIRM_TIMEOUT, CONTENT_TYPE, PERSISTENT, ROUTING_KEY};

pub struct LapinSession {
    connection: lapin::Connection,
    publishers: Vec<Arc<LapinPublisher>>,
}

pub struct LapinPublisher {
    channel: lapin::Channel,
    exchange: ShortString,
}

impl Session for LapinSession {
    type Publisher = LapinPublisher;

    async fn open(uri: &AMQPUri, exchange: &str, channels: usize) -> anyhow::Result<Self> {
        let properties =
            ConnectionProperties::default().with_connection_name("amqp-clients-lapin".into());
        let connection = lapin::Connection::connect_uri(uri.clone(), properties).await?;
        let mut publishers = Vec::with_capacity(channels);
        for _ in 0..channels {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            publishers.push(Arc::new(LapinPublisher {
                channel,
                exchange: exchange.into(),
            }));
        }
        Ok(Self {
            connection,
            publishers,
        })
    }

    fn publishers(&self) -> Vec<Arc<LapinPublisher>> {
        self.publishers.clone()
    }

    async fn close(self) -> anyhow::Result<()> {
        Ok(self.connection.close(200, "bench done".into()).await?)
    }
}

impl Publisher for LapinPublisher {
    async fn publish(&self, body: &[u8], message_id: String) -> anyhow::Result<()> {
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(CONTENT_TYPE.into())
            .with_message_id(message_id.into());
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.clone(),
                ROUTING_KEY.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties,
            )
            .await?;
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| anyhow!("no confirm within {CONFIRM_TIMEOUT:?}"))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => bail!("returned as unroutable"),
            Confirmation::Nack(_) => bail!("nacked"),
            Confirmation::NotRequested => bail!("the channel is not in confirm mode"),
        }
    }
}
