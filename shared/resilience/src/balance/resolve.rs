//! Turning a host name into the addresses to connect to.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;

/// A boxed resolution.
pub type Resolution = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Resolves `host:port` to every address it stands for.
pub trait Resolve: Send + Sync + std::fmt::Debug + 'static {
    /// All addresses of `host` (a Kubernetes headless Service answers one A record per ready
    /// pod), each with `port`.
    fn resolve(&self, host: &str, port: u16) -> Resolution;
}

/// The system resolver (`tokio::net::lookup_host`: `/etc/hosts`, then DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct DnsResolver;

impl Resolve for DnsResolver {
    fn resolve(&self, host: &str, port: u16) -> Resolution {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// A resolver answering a list that can be changed at any time: for tests, and for callers
/// that learn their endpoints some other way.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    addresses: Arc<Mutex<Vec<SocketAddr>>>,
}

impl StaticResolver {
    /// Answers `addresses` until [`Self::set`] changes them.
    #[must_use]
    pub fn new(addresses: Vec<SocketAddr>) -> Self {
        Self {
            addresses: Arc::new(Mutex::new(addresses)),
        }
    }

    /// Replaces the answer; the channel sees it at its next resolution.
    pub fn set(&self, addresses: Vec<SocketAddr>) {
        *self.addresses.lock() = addresses;
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self, _host: &str, _port: u16) -> Resolution {
        let addresses = self.addresses.lock().clone();
        Box::pin(async move { Ok(addresses) })
    }
}
