//! A client channel balanced over every address of a backend, with several HTTP/2
//! connections per address, re-resolved while it runs.
//!
//! // why: one tonic `Channel` is one HTTP/2 connection to one address. Behind a Kubernetes
//! headless Service (one A record per pod) it pins every call to the pod it happened to
//! resolve first, and on one connection its single h2 task and flow-control window become the
//! throughput ceiling. [`BalancedChannel`] resolves the host to every address, opens
//! [`BalanceConfig::connections_per_endpoint`] connections to each (each its own h2 task),
//! and lets tonic's balancer (tower's power-of-two-choices over pending requests) pick one per
//! call. Every [`BalanceConfig::resolve_interval`] it resolves again and adds or removes
//! connections; a removed connection is only dropped from the balancer, so calls already on
//! it finish there.
//!
//! Defaults: 2 connections per endpoint, resolved every 5 s. Connections are lazy: an address
//! that refuses connects fails its calls (the breaker above sees it) and is tried again on the
//! next call. An IP-literal URL is one endpoint and is never re-resolved.
//!
//! No layer here: this is the transport at the bottom of a client stack, the service the
//! timeout, breaker and retry layers wrap.

mod discovery;
mod error;
mod resolve;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use parking_lot::Mutex;
use tokio::sync::mpsc::Sender;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

pub use discovery::ConnectionKey;
pub use error::BalanceError;
pub use resolve::{DnsResolver, Resolution, Resolve, StaticResolver};

use discovery::{Delta, Membership};

/// Settings of a [`BalancedChannel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceConfig {
    /// HTTP/2 connections kept to each resolved address (default 2; 0 counts as 1).
    pub connections_per_endpoint: usize,
    /// How often the host is resolved again (default 5 s).
    pub resolve_interval: Duration,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            connections_per_endpoint: 2,
            resolve_interval: Duration::from_secs(5),
        }
    }
}

/// Applies connection settings (timeouts, keep-alive, …) to each endpoint's `Endpoint`.
pub type Configure = Arc<dyn Fn(Endpoint) -> Endpoint + Send + Sync>;

/// A `Channel` balanced over the addresses of one `http://host:port`; clones share it. The
/// resolver task stops when the last clone is dropped.
#[derive(Clone)]
pub struct BalancedChannel {
    channel: Channel,
    discovery: Arc<Discovery>,
}

impl std::fmt::Debug for BalancedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedChannel")
            .field("endpoints", &self.endpoints())
            .finish_non_exhaustive()
    }
}

struct Discovery {
    task: JoinHandle<()>,
    endpoints: Arc<Mutex<Vec<SocketAddr>>>,
    /// How many endpoints the balancer has; lets a call tell "not resolved yet" (or never)
    /// from "resolved", since the balancer itself would hold such a call until its timeout.
    count: watch::Receiver<usize>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where to connect, parsed from the URL.
#[derive(Debug, Clone)]
struct Target {
    origin: Uri,
    host: String,
    port: u16,
}

impl BalancedChannel {
    /// Balances over the addresses DNS gives for `url`'s host. Must be called on a tokio
    /// runtime (the resolver task is spawned on it).
    ///
    /// # Errors
    /// When `url` is not `http://host[:port]`.
    pub fn start(
        url: &str,
        config: BalanceConfig,
        configure: Configure,
    ) -> Result<Self, BalanceError> {
        Self::start_with_resolver(url, config, configure, Arc::new(DnsResolver))
    }

    /// [`Self::start`] with another resolver.
    ///
    /// # Errors
    /// When `url` is not `http://host[:port]`.
    pub fn start_with_resolver(
        url: &str,
        config: BalanceConfig,
        configure: Configure,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, BalanceError> {
        let target = parse(url)?;
        // Room for a whole resolution's changes without the task waiting on the balancer.
        let (channel, changes) = Channel::balance_channel(256);
        let endpoints = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, count) = watch::channel(0);
        let worker = Worker {
            target,
            configure,
            changes,
            endpoints: Arc::clone(&endpoints),
            count: count_tx,
        };
        let task = tokio::spawn(worker.run(resolver, config));
        Ok(Self {
            channel,
            discovery: Arc::new(Discovery {
                task,
                endpoints,
                count,
            }),
        })
    }

    /// The balanced channel (cheap to clone; give it to a client or a layer stack).
    #[must_use]
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The addresses balanced over now (empty until the first resolution answered).
    #[must_use]
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.discovery.endpoints.lock().clone()
    }

    /// Whether there is an endpoint to call, waiting up to `within` for the first resolution.
    /// `false` means a call would only wait in the balancer: fail it instead.
    pub async fn has_endpoints(&self, within: Duration) -> bool {
        if *self.discovery.count.borrow() > 0 {
            return true;
        }
        let mut count = self.discovery.count.clone();
        matches!(
            tokio::time::timeout(within, count.wait_for(|n| *n > 0)).await,
            Ok(Ok(_))
        )
    }
}

fn parse(url: &str) -> Result<Target, BalanceError> {
    let invalid = |reason: &str| BalanceError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("expected http://host:port"));
    }
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let origin = Uri::builder()
        .scheme("http")
        .authority(uri.authority().map_or("", |a| a.as_str()))
        .path_and_query("/")
        .build()
        .map_err(|_| invalid("no authority"))?;
    Ok(Target { origin, host, port })
}

/// The resolver task's state.
struct Worker {
    target: Target,
    configure: Configure,
    changes: Sender<Change<ConnectionKey, Endpoint>>,
    endpoints: Arc<Mutex<Vec<SocketAddr>>>,
    count: watch::Sender<usize>,
}

impl Worker {
    async fn run(self, resolver: Arc<dyn Resolve>, config: BalanceConfig) {
        let mut membership = Membership::new(config.connections_per_endpoint);
        if let Ok(ip) = self.target.host.parse::<IpAddr>() {
            // An address, not a name: nothing to re-resolve.
            let deltas = membership.update(&[SocketAddr::new(ip, self.target.port)]);
            self.apply(deltas, &membership).await;
            return;
        }
        let mut ticker =
            tokio::time::interval(config.resolve_interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match resolver.resolve(&self.target.host, self.target.port).await {
                Ok(addresses) => {
                    let deltas = membership.update(&addresses);
                    if !self.apply(deltas, &membership).await {
                        return;
                    }
                }
                Err(error) => tracing::warn!(
                    host = %self.target.host,
                    %error,
                    "cannot resolve backend host; keeping the last endpoints"
                ),
            }
        }
    }

    /// Sends `deltas` to the balancer; `false` once the channel is gone.
    async fn apply(&self, deltas: Vec<Delta>, membership: &Membership) -> bool {
        if deltas.is_empty() {
            return true;
        }
        let (mut added, mut removed) = (0usize, 0usize);
        for delta in deltas {
            let change = match delta {
                Delta::Insert(key) => {
                    added += 1;
                    Change::Insert(key, self.endpoint(key.0))
                }
                Delta::Remove(key) => {
                    removed += 1;
                    Change::Remove(key)
                }
            };
            if self.changes.send(change).await.is_err() {
                return false;
            }
        }
        let endpoints = membership.endpoints();
        tracing::info!(
            host = %self.target.host,
            endpoints = ?endpoints,
            connections_added = added,
            connections_removed = removed,
            "backend endpoints changed"
        );
        self.count.send_replace(endpoints.len());
        *self.endpoints.lock() = endpoints;
        true
    }

    fn endpoint(&self, address: SocketAddr) -> Endpoint {
        // `http://<ip>:<port>` always parses; the origin keeps the host name as `:authority`.
        let endpoint = Endpoint::from(
            Uri::builder()
                .scheme("http")
                .authority(address.to_string().as_str())
                .path_and_query("/")
                .build()
                .unwrap_or_else(|_| self.target.origin.clone()),
        )
        .origin(self.target.origin.clone());
        (self.configure)(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_never_resolves_has_no_endpoints_and_an_address_has_one() {
        let config = BalanceConfig::default();
        let none = BalancedChannel::start_with_resolver(
            "http://nowhere.test:1",
            config,
            Arc::new(|e| e),
            Arc::new(StaticResolver::new(Vec::new())),
        )
        .unwrap();
        assert!(!none.has_endpoints(Duration::from_millis(50)).await);
        let literal =
            BalancedChannel::start("http://127.0.0.1:1", config, Arc::new(|e| e)).unwrap();
        assert!(literal.has_endpoints(Duration::from_secs(5)).await);
        assert_eq!(
            literal.endpoints(),
            vec![SocketAddr::from(([127, 0, 0, 1], 1))]
        );
    }

    #[test]
    fn urls_parse_to_host_port_and_origin() {
        let t = parse("http://graph.umcp.svc:50053").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("graph.umcp.svc", 50053));
        assert_eq!(t.origin.to_string(), "http://graph.umcp.svc:50053/");
        let v6 = parse("http://[::1]:7").unwrap();
        assert_eq!(v6.host, "::1");
        assert!(v6.host.parse::<IpAddr>().is_ok());
        assert_eq!(parse("http://h").unwrap().port, 80);
        for bad in ["https://h:1", "h:1", "", "http://"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
