//! The publisher's connection and its supervisor: one healthy link at a time, rebuilt
//! with the shared reconnect backoff when the connection or a channel fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use super::confirms::Confirms;
use super::publisher::{BusSettings, Shared};
use super::topology::Topology;
use crate::runtime::backoff::{Backoff, Reconnect};
use crate::runtime::reason::{Peer, Reason};

/// A connection and its confirm-mode channels, used in turn, each with the collector of
/// its confirms.
pub(super) struct Link {
    pub(super) connection: Connection,
    channels: Vec<(Channel, Confirms)>,
    next: AtomicUsize,
}

impl Link {
    pub(super) fn pick(&self) -> &(Channel, Confirms) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        &self.channels[index]
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.connection.status().connected()
            && self.channels.iter().all(|(c, _)| c.status().connected())
    }
}

/// Keeps one healthy link in `shared.link` until `stop`.
pub(super) async fn supervise(shared: Arc<Shared>, stop: CancellationToken) {
    let mut reconnect = Reconnect::new("cannot reach the broker", Backoff::RECONNECT)
        .to(Peer::RabbitMq)
        .recording(shared.last_error.clone());
    while !stop.is_cancelled() {
        match connect(&shared.settings).await {
            Ok(link) => {
                reconnect.succeeded();
                let link = Arc::new(link);
                set_link(&shared, Some(link.clone()));
                info!(channels = link.channels.len(), "connected to the broker");
                hold(&shared, &link, &stop).await;
                set_link(&shared, None);
                if !stop.is_cancelled() {
                    shared.last_error.set(&Reason {
                        tls: false,
                        text: "the connection failed; reconnecting".into(),
                    });
                }
                Topology::close(&link.connection, "event-gateway reconnecting or stopping").await;
            }
            Err(error) => {
                if !reconnect.wait_after(&error, &stop).await {
                    return;
                }
            }
        }
    }
}

/// Until `stop`, or the link fails.
async fn hold(shared: &Shared, link: &Link, stop: &CancellationToken) {
    let mut events = link.connection.events_listener();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => match event {
                Some(lapin::Event::Error(error)) => {
                    warn!(%error, "broker connection failed");
                    return;
                }
                Some(_) => {}
                None => return,
            },
            () = shared.broken.notified() => if !link.is_healthy() {
                warn!("a broker channel failed; reconnecting");
                return;
            },
        }
    }
}

fn set_link(shared: &Shared, link: Option<Arc<Link>>) {
    shared
        .metrics
        .broker_connected
        .set(i64::from(link.is_some()));
    if let Ok(mut slot) = shared.link.write() {
        *slot = link;
    }
}

#[instrument(skip_all)]
async fn connect(settings: &BusSettings) -> anyhow::Result<Link> {
    let connection = settings
        .topology
        .connect(&settings.broker, "event-gateway")
        .await?;
    let mut channels = Vec::with_capacity(usize::from(settings.channels));
    for _ in 0..settings.channels {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let confirms = Confirms::start(channel.clone());
        channels.push((channel, confirms));
    }
    Ok(Link {
        connection,
        channels,
        next: AtomicUsize::new(0),
    })
}
