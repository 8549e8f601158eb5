//! A TCP proxy the test can cut or stall: the broker or the database "vanishes" (or hangs)
//! for the gateway while it stays up for everyone else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stalled: watch::Sender<bool>,
    links: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let cut = Arc::new(AtomicBool::new(false));
        let (stalled, _) = watch::channel(false);
        let links = Arc::new(Mutex::new(JoinSet::new()));
        let target = target.to_owned();
        let accept = tokio::spawn({
            let cut = cut.clone();
            let links = links.clone();
            let stalled = stalled.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused in effect
                    }
                    let target = target.clone();
                    let stalled = stalled.subscribe();
                    links.lock().await.spawn(async move {
                        if let Ok(server) = TcpStream::connect(&target).await {
                            let (client_read, client_write) = client.into_split();
                            let (server_read, server_write) = server.into_split();
                            tokio::join!(
                                pump(client_read, server_write, stalled.clone()),
                                pump(server_read, client_write, stalled),
                            );
                        }
                    });
                }
            }
        });
        Proxy {
            addr,
            cut,
            stalled,
            links,
            accept,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.links.lock().await.abort_all();
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.stalled.send_replace(false);
    }

    /// Keeps connections open but passes nothing on: a hung peer.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }
}

/// Copies bytes one way, holding them while the proxy is stalled.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        while *stalled.borrow_and_update() {
            if stalled.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
