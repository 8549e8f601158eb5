//! A stand-in OTLP/HTTP collector for the traced gateway: it answers 200 to every
//! `POST /v1/traces` and counts the requests, their bytes and the spans in them, so the
//! report shows that spans really went out and what they weighed.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the sink received over the whole bench.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SinkCounts {
    /// `POST /v1/traces` requests answered 200.
    pub requests: u64,
    /// Their bodies, uncompressed OTLP JSON.
    pub bytes: u64,
    /// `"spanId"` keys in those bodies: one per span (parents are `"parentSpanId"`).
    pub spans: u64,
}

impl SinkCounts {
    /// What came in after `earlier` was read.
    pub fn since(self, earlier: SinkCounts) -> SinkCounts {
        SinkCounts {
            requests: self.requests.saturating_sub(earlier.requests),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            spans: self.spans.saturating_sub(earlier.spans),
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    spans: AtomicU64,
}

pub struct OtlpSink {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
}

impl OtlpSink {
    /// Listens on a free port on 127.0.0.1 and serves until dropped.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the OTLP sink")?;
        let addr = listener.local_addr().context("reading the sink's port")?;
        let counters = Arc::new(Counters::default());
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&counters)));
        Ok(OtlpSink {
            addr,
            counters,
            accept,
        })
    }

    pub fn counts(&self) -> SinkCounts {
        SinkCounts {
            requests: self.counters.requests.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            spans: self.counters.spans.load(Ordering::Relaxed),
        }
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One task per connection; a connection ends when the gateway closes it or is killed.
async fn accept_loop(listener: TcpListener, counters: Arc<Counters>) {
    while let Ok((stream, _)) = listener.accept().await {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            let service = service_fn(|request| answer(request, Arc::clone(&counters)));
            // A broken connection only loses what the counts would have said about it.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    counters: Arc<Counters>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::POST || request.uri().path() != "/v1/traces" {
        return Ok(reply(StatusCode::NOT_FOUND));
    }
    let Ok(body) = request.into_body().collect().await else {
        return Ok(reply(StatusCode::BAD_REQUEST));
    };
    let body = body.to_bytes();
    counters.requests.fetch_add(1, Ordering::Relaxed);
    counters
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    counters
        .spans
        .fetch_add(count_spans(&body), Ordering::Relaxed);
    Ok(reply(StatusCode::OK))
}

/// An empty `ExportTraceServiceResponse`: everything accepted.
fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn count_spans(body: &[u8]) -> u64 {
    const KEY: &[u8] = b"\"spanId\"";
    body.windows(KEY.len()).filter(|w| *w == KEY).count() as u64
}
