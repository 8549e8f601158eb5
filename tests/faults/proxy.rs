//! A TCP proxy between the gateway and the broker or the database: it can cut every
//! connection (and refuse new ones), stall them (hold every byte: a blackholed network),
//! or cut the database right after a COMMIT went through, before its answer comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinSet;

/// PostgreSQL's simple Query message `COMMIT`, as sqlx sends it.
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    target: SocketAddr,
    cut: AtomicBool,
    stalled: watch::Sender<bool>,
    links: Mutex<JoinSet<()>>,
    /// Armed: the next COMMIT is passed on and its answer swallowed.
    commit_trap: AtomicBool,
    commit_trapped: Notify,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            target,
            cut: AtomicBool::new(false),
            stalled: watch::channel(false).0,
            links: Mutex::new(JoinSet::new()),
            commit_trap: AtomicBool::new(false),
            commit_trapped: Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub async fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.links.lock().await.abort_all();
    }

    /// Passes bytes again (after a cut or a stall).
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
        self.shared.stalled.send_replace(false);
    }

    /// Keeps connections open but passes nothing on: a blackholed network.
    pub fn stall(&self) {
        self.shared.stalled.send_replace(true);
    }

    /// Waits for the next COMMIT to reach the server, whose answer never comes back: its
    /// connection is closed instead.
    pub async fn trap_next_commit(&self) {
        let trapped = self.shared.commit_trapped.notified();
        self.shared.commit_trap.store(true, Ordering::SeqCst);
        trapped.await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        if shared.cut.load(Ordering::SeqCst) {
            continue; // dropped: in effect the connection is refused
        }
        let link = shared.clone();
        shared.links.lock().await.spawn(async move {
            let Ok(server) = TcpStream::connect(link.target).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let sprung = AtomicBool::new(false);
            tokio::select! {
                () = pump(client_read, server_write, &link, Direction::ToServer, &sprung) => {}
                () = pump(server_read, client_write, &link, Direction::ToClient, &sprung) => {}
            }
        });
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

/// Copies bytes one way, holding them while the proxy is stalled. Towards the server it
/// watches for a trapped COMMIT (and sets `sprung`); towards the client it passes nothing
/// once the trap sprang.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    shared: &Shared,
    direction: Direction,
    sprung: &AtomicBool,
) {
    let mut stalled = shared.stalled.subscribe();
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
        let chunk = &buffer[..read];
        if sprung.load(Ordering::SeqCst) {
            return;
        }
        let springs = direction == Direction::ToServer
            && chunk.windows(COMMIT.len()).any(|window| window == COMMIT)
            && shared.commit_trap.swap(false, Ordering::SeqCst);
        sprung.fetch_or(springs, Ordering::SeqCst);
        if to.write_all(chunk).await.is_err() {
            return;
        }
        if springs {
            // The server has the COMMIT; its answer is swallowed above, and the scenario
            // cuts every link now.
            let _ = to.flush().await;
            shared.commit_trapped.notify_one();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut links) = self.shared.links.try_lock() {
            links.abort_all();
        }
    }
}
