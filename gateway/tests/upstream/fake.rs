//! A raw HTTP/2 gRPC backend for the upstream tests: it answers any path by a plan (ok, slow,
//! trailers-only `UNAVAILABLE`, or `UNAVAILABLE` after response headers) and counts what it
//! received. Stopping it aborts every connection, like a killed process.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How the backend answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// An empty message and `grpc-status: 0`.
    Ok,
    /// Waits, then answers like `Ok`.
    Sleep(Duration),
    /// A trailers-only `UNAVAILABLE`: no response headers before it.
    Unavailable,
    /// Headers and a message, then `UNAVAILABLE` in the trailers: committed.
    UnavailableAfterHeaders,
}

/// Decides the answer from the path and how many requests that path had before.
pub(crate) type Plan = Arc<dyn Fn(&str, usize) -> Answer + Send + Sync>;

pub(crate) struct Fake {
    pub(crate) addr: SocketAddr,
    received: Arc<Mutex<HashMap<String, usize>>>,
    task: JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    /// Serves `plan` on `127.0.0.1:port` (0: any port).
    pub(crate) async fn start(port: u16, plan: Plan) -> Self {
        Self::start_dropping(port, plan, 0).await
    }

    /// [`Self::start`], but the first `dropped` connections are closed as soon as accepted,
    /// before a byte is read: what a client sees of a backend that crashed and is restarting.
    pub(crate) async fn start_dropping(port: u16, plan: Plan, dropped: usize) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(HashMap::new()));
        let task = tokio::spawn(accept(listener, plan, Arc::clone(&received), dropped));
        Self {
            addr,
            received,
            task,
        }
    }

    /// Kills the backend and waits until its port and connections are closed.
    pub(crate) async fn stop(mut self) {
        self.task.abort();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received for `path`.
    pub(crate) fn count(&self, path: &str) -> usize {
        self.received.lock().get(path).copied().unwrap_or_default()
    }

    /// Requests received in all.
    pub(crate) fn total(&self) -> usize {
        self.received.lock().values().sum()
    }
}

async fn accept(
    listener: TcpListener,
    plan: Plan,
    received: Arc<Mutex<HashMap<String, usize>>>,
    mut dropped: usize,
) {
    // Connections live in the set: aborting this task drops it and kills them all.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if dropped > 0 {
            dropped -= 1;
            drop(stream);
            continue;
        }
        let plan = Arc::clone(&plan);
        let received = Arc::clone(&received);
        let service = hyper::service::service_fn(move |request| {
            respond(request, Arc::clone(&plan), Arc::clone(&received))
        });
        connections.spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    request: http::Request<Incoming>,
    plan: Plan,
    received: Arc<Mutex<HashMap<String, usize>>>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let path = request.uri().path().to_owned();
    let seen = {
        let mut received = received.lock();
        let n = received.entry(path.clone()).or_default();
        *n += 1;
        *n - 1
    };
    let _ = request.into_body().collect().await;
    let answer = plan(&path, seen);
    if let Answer::Sleep(d) = answer {
        tokio::time::sleep(d).await;
    }
    Ok(match answer {
        Answer::Unavailable => tonic::Status::unavailable("fake backend: not now").into_http(),
        Answer::UnavailableAfterHeaders => message_then(14),
        Answer::Ok | Answer::Sleep(_) => message_then(0),
    })
}

/// Headers, one empty message, then `grpc-status: code` in the trailers.
fn message_then(code: u8) -> http::Response<tonic::body::Body> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(u16::from(code)));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures::stream::iter(frames));
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::new(body))
        .expect("static response")
}
