//! Test helpers: run a service on `127.0.0.1:0`, connect to it, wait for a condition with a
//! bound instead of sleeping.

#![warn(missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// A server running in the test's runtime; stopped (gracefully) when dropped or by [`stop`].
///
/// [`stop`]: Spawned::stop
#[derive(Debug)]
pub struct Spawned {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), String>>>,
}

impl Spawned {
    /// Binds `127.0.0.1:0` and runs `run(listener, shutdown)` on a task.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start<F, Fut, E>(run: F) -> Self
    where
        F: FnOnce(TcpListener, ShutdownSignal) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel();
        let fut = run(listener, ShutdownSignal(rx));
        let handle = tokio::spawn(async move { fut.await.map_err(|e| e.to_string()) });
        Self {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Wraps a server the test started itself on a known address.
    #[must_use]
    pub fn adopt(
        addr: SocketAddr,
        shutdown: oneshot::Sender<()>,
        handle: JoinHandle<Result<(), String>>,
    ) -> Self {
        Self {
            addr,
            shutdown: Some(shutdown),
            handle: Some(handle),
        }
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A lazily connecting channel to the server.
    ///
    /// # Panics
    /// Never for a loopback address.
    #[must_use]
    pub fn channel(&self) -> Channel {
        channel(self.addr)
    }

    /// Asks the server to stop and waits for it; returns its result.
    ///
    /// # Panics
    /// When the server task panicked.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.take() {
            Some(handle) => handle.await.expect("server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Completes when the test asks the server to stop (or drops its handle).
#[derive(Debug)]
pub struct ShutdownSignal(oneshot::Receiver<()>);

impl ShutdownSignal {
    /// Waits for the stop request.
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

/// A lazily connecting channel to `addr`.
///
/// # Panics
/// Never for a socket address (the URI is always valid).
#[must_use]
pub fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// A loopback port that was free a moment ago (for child processes that bind it themselves).
///
/// # Panics
/// When no loopback port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `check` every 20 ms until it returns `true`, for at most `within`.
/// Returns whether it ever did, so the test asserts with its own message.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_is_bounded_and_sees_a_late_condition() {
        let start = std::time::Instant::now();
        assert!(!eventually(Duration::from_millis(100), || async { false }).await);
        assert!(start.elapsed() < Duration::from_secs(1));
        let mut n = 0;
        assert!(
            eventually(Duration::from_secs(1), || {
                n += 1;
                let done = n > 3;
                async move { done }
            })
            .await
        );
    }

    #[tokio::test]
    async fn spawned_server_stops_on_request() {
        let server = Spawned::start(|listener, shutdown| async move {
            tokio::select! {
                _ = listener.accept() => Err("unexpected connection"),
                () = shutdown.wait() => Ok::<_, &str>(()),
            }
        })
        .await;
        assert_ne!(server.addr.port(), 0);
        assert_eq!(server.stop().await, Ok(()));
    }
}

pub mod issuer;
pub mod neo4j;
pub mod redis;

/// Adds a fixed `authorization` value to every call of a generated client.
#[derive(Debug, Clone)]
pub struct Bearer(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// `channel` with `bearer` on every call: `GraphServiceClient::new(authed(channel, bearer))`.
#[must_use]
pub fn authed(
    channel: Channel,
    bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> tonic::service::interceptor::InterceptedService<Channel, Bearer> {
    tonic::service::interceptor::InterceptedService::new(channel, Bearer(bearer))
}
