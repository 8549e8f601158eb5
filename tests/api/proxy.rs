//! A TCP proxy the test can cut or stall: the broker or the database "vanishes" (or hangs)
//! for the gateway while it stays up for everyone else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Bytes that, once armed, cut the connection they pass through right after they are
/// passed on: the peer gets them, the answer never comes back.
type Tripwire = Arc<std::sync::Mutex<Option<&'static [u8]>>>;

/// Bytes whose passing from client to server is counted, and the count so far.
type Tally = Arc<std::sync::Mutex<Option<(&'static [u8], usize)>>>;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stalled: watch::Sender<bool>,
    tripwire: Tripwire,
    tally: Tally,
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
        let tripwire = Tripwire::default();
        let tally = Tally::default();
        let target = target.to_owned();
        let accept = tokio::spawn({
            let cut = cut.clone();
            let links = links.clone();
            let stalled = stalled.clone();
            let tripwire = tripwire.clone();
            let tally = tally.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused in effect
                    }
                    let target = target.clone();
                    let stalled = stalled.subscribe();
                    let tripwire = tripwire.clone();
                    let tally = tally.clone();
                    links.lock().await.spawn(async move {
                        if let Ok(server) = TcpStream::connect(&target).await {
                            let (client_read, client_write) = client.into_split();
                            let (server_read, server_write) = server.into_split();
                            let severed = CancellationToken::new();
                            let outgoing = Pump {
                                stalled: stalled.clone(),
                                severed: severed.clone(),
                                tripwire: Some(tripwire),
                                tally: Some(tally),
                            };
                            let incoming = Pump {
                                stalled,
                                severed,
                                tripwire: None,
                                tally: None,
                            };
                            tokio::join!(
                                outgoing.run(client_read, server_write),
                                incoming.run(server_read, client_write),
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
            tripwire,
            tally,
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

    /// The next time a client sends `bytes` (a PostgreSQL `COMMIT`, say), they reach the
    /// server and then that connection is cut, so the client never hears the answer.
    pub fn cut_after_next(&self, bytes: &'static [u8]) {
        *self.tripwire.lock().expect("tripwire") = Some(bytes);
    }

    /// From now on, counts how often a client sends `bytes` (a Redis `INFO`, say).
    pub fn count(&self, bytes: &'static [u8]) {
        *self.tally.lock().expect("tally") = Some((bytes, 0));
    }

    /// How often the bytes given to [`Proxy::count`] were sent since.
    pub fn counted(&self) -> usize {
        self.tally
            .lock()
            .expect("tally")
            .map_or(0, |(_, seen)| seen)
    }
}

/// Copies bytes one way, holding them while the proxy is stalled; `severed` ends both
/// ways of a link at once, when a tripwire (client to server only) went off.
struct Pump {
    stalled: watch::Receiver<bool>,
    severed: CancellationToken,
    tripwire: Option<Tripwire>,
    tally: Option<Tally>,
}

impl Pump {
    async fn run(mut self, from: impl AsyncRead + Unpin, to: impl AsyncWrite + Unpin) {
        let severed = self.severed.clone();
        tokio::select! {
            () = self.copy(from, to) => {}
            () = severed.cancelled() => {}
        }
    }

    async fn copy(&mut self, mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            while *self.stalled.borrow_and_update() {
                if self.stalled.changed().await.is_err() {
                    return;
                }
            }
            self.tally(&buffer[..read]);
            let tripped = self.tripped(&buffer[..read]);
            if to.write_all(&buffer[..read]).await.is_err() {
                return;
            }
            if tripped {
                let _ = to.flush().await;
                self.severed.cancel();
                return;
            }
        }
    }

    fn tally(&self, chunk: &[u8]) {
        let Some(tally) = &self.tally else {
            return;
        };
        if let Some((bytes, seen)) = tally.lock().expect("tally").as_mut() {
            *seen += chunk.windows(bytes.len()).filter(|w| w == bytes).count();
        }
    }

    /// Whether `chunk` holds the armed bytes (which disarms them).
    fn tripped(&self, chunk: &[u8]) -> bool {
        let Some(tripwire) = &self.tripwire else {
            return false;
        };
        let mut armed = tripwire.lock().expect("tripwire");
        let hit = armed.is_some_and(|bytes| chunk.windows(bytes.len()).any(|w| w == bytes));
        if hit {
            *armed = None;
        }
        hit
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
