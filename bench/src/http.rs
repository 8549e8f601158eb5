//! A bare HTTP/1.1 keep-alive connection (hyper's client connection, no pool), so the
//! load generator spends as little CPU as it can per request: one connection per worker.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::http::request;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Longer than the gateway's own 10 s request timeout: a stuck request ends as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// One JSON POST target: where, with which credentials, and the body.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub authorization: HeaderValue,
}

/// An answer: its status and its whole body (read so the connection can be reused).
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {addr}"))?;
        // The connection task ends when the sender is dropped or the peer closes; a failure
        // surfaces to the sender as an error on its next request.
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            host: HeaderValue::from_str(&addr.to_string()).context("Host header")?,
        })
    }

    /// POSTs `body` as JSON to `target` and reads the whole answer.
    pub async fn post_json(&mut self, target: &Target, body: Bytes) -> anyhow::Result<Answer> {
        let request = self
            .post(target)
            .body(Full::new(body))
            .context("building a request")?;
        self.send(request).await
    }

    /// The same, as part of the caller's trace: W3C `traceparent` on the request.
    pub async fn post_json_traced(
        &mut self,
        target: &Target,
        body: Bytes,
        traceparent: HeaderValue,
    ) -> anyhow::Result<Answer> {
        let request = self
            .post(target)
            .header("traceparent", traceparent)
            .body(Full::new(body))
            .context("building a request")?;
        self.send(request).await
    }

    fn post(&self, target: &Target) -> request::Builder {
        Request::builder()
            .method(Method::POST)
            .uri(target.path.as_str())
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, target.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let exchange = async {
            self.sender.ready().await.context("connection closed")?;
            let response = self
                .sender
                .send_request(request)
                .await
                .context("sending the request")?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .context("reading the answer")?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .context("no answer in time")?
    }
}

/// `GET path` on a fresh connection; used to poll readiness, not under load.
pub async fn get_status(addr: SocketAddr, path: &str) -> anyhow::Result<StatusCode> {
    Ok(get(addr, path).await?.status())
}

/// `GET path` on a fresh connection, its answer read as JSON whatever its status (`/health`
/// answers 503 with the same document).
pub async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let response = get(addr, path).await?;
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading GET {path}"))?
        .to_bytes();
    serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
}

async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Response<Incoming>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    let request = Request::builder()
        .uri(path)
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .context("building a request")?;
    sender.send_request(request).await.context("GET")
}

/// Fails unless the answer is a 2xx, quoting the start of the body.
pub fn expect_success(answer: &Answer) -> anyhow::Result<()> {
    if !answer.status.is_success() {
        let excerpt = String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]);
        bail!("HTTP {}: {excerpt}", answer.status);
    }
    Ok(())
}
