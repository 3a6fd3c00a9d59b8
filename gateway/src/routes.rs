//! Where each gRPC path goes: a local service (health, reflection), a backend, or nowhere.
//!
//! Known methods come from the umcp descriptor set compiled into the binary, so an unknown
//! method of a known service is answered here with its name instead of bothering the backend.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::config::GatewayConfig;

/// Prefixes of the services the gateway serves itself.
const LOCAL_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// One backend service.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Short name (`graph`), as in the configuration keys.
    pub(crate) name: &'static str,
    /// Fully qualified gRPC service (`umcp.graph.v1.GraphService`).
    pub(crate) service: &'static str,
    /// `None` when the service is disabled in this gateway's configuration.
    pub(crate) channel: Option<Channel>,
}

/// The routing decision for one request path.
#[derive(Debug)]
pub(crate) enum Route<'a> {
    /// Served by the gateway itself.
    Local,
    /// Forwarded to this backend.
    Backend(&'a Backend),
    /// The service exists but has no such method.
    UnknownMethod { service: &'a str, method: &'a str },
    /// No such service.
    UnknownService(&'a str),
    /// Not a `/package.Service/Method` path.
    Malformed,
}

/// Immutable routing table, built once at start-up.
#[derive(Debug)]
pub(crate) struct RouteTable {
    backends: Vec<Backend>,
    /// Backend index per fully qualified service name.
    services: HashMap<&'static str, usize>,
    /// Every `/package.Service/Method` path in the descriptor set.
    methods: HashSet<String>,
}

impl RouteTable {
    /// Builds the table; backend channels connect lazily (a backend that is down at start-up
    /// does not stop the gateway; its calls get `UNAVAILABLE` until it is up).
    pub(crate) fn new(config: &GatewayConfig) -> Result<Self, tonic::transport::Error> {
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let mut backends = Vec::new();
        let mut services = HashMap::new();
        for (name, service, url) in config.backends.entries() {
            let channel = if url.is_empty() {
                None
            } else {
                Some(
                    Endpoint::from_shared(url.to_owned())?
                        .connect_timeout(connect_timeout)
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(30))
                        .keep_alive_timeout(Duration::from_secs(10))
                        .connect_lazy(),
                )
            };
            services.insert(service, backends.len());
            backends.push(Backend {
                name,
                service,
                channel,
            });
        }
        Ok(Self {
            backends,
            services,
            methods: known_methods(),
        })
    }

    /// The backends, in configuration order.
    pub(crate) fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Position of `backend` (which must come from this table) in [`Self::backends`].
    pub(crate) fn index_of(&self, backend: &Backend) -> usize {
        self.services
            .get(backend.service)
            .copied()
            .unwrap_or_default()
    }

    /// Routes one request path.
    pub(crate) fn route<'a>(&'a self, path: &'a str) -> Route<'a> {
        if LOCAL_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Route::Local;
        }
        let Some((service, method)) = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
        else {
            return Route::Malformed;
        };
        match self.services.get(service) {
            None => Route::UnknownService(service),
            Some(_) if !self.methods.contains(path) => Route::UnknownMethod { service, method },
            Some(&index) => Route::Backend(&self.backends[index]),
        }
    }
}

fn known_methods() -> HashSet<String> {
    // The descriptor set is generated at build time and checked by umcp-proto's tests.
    let set =
        prost_types::FileDescriptorSet::decode(umcp_proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
    set.file
        .iter()
        .flat_map(|file| {
            let package = file.package().to_owned();
            file.service.iter().flat_map(move |service| {
                let prefix = format!("/{package}.{}/", service.name());
                service
                    .method
                    .iter()
                    .map(move |m| format!("{prefix}{}", m.name()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let mut config = GatewayConfig::default();
        config.backends.audit = String::new();
        RouteTable::new(&config).unwrap()
    }

    #[tokio::test]
    async fn routes_every_method_of_every_service() {
        let table = table();
        assert!(table.methods.len() >= 28, "{}", table.methods.len());
        for path in &table.methods {
            match table.route(path) {
                Route::Backend(b) => assert!(path.starts_with(&format!("/{}/", b.service))),
                other => panic!("{path} routed to {other:?}"),
            }
        }
        let graph = table.route("/umcp.graph.v1.GraphService/Upsert");
        assert!(matches!(graph, Route::Backend(b) if b.name == "graph" && b.channel.is_some()));
        let audit = table.route("/umcp.audit.v1.AuditService/Verify");
        assert!(matches!(audit, Route::Backend(b) if b.channel.is_none()));
    }

    #[tokio::test]
    async fn unknown_and_local_paths() {
        let table = table();
        assert!(matches!(
            table.route("/grpc.health.v1.Health/Check"),
            Route::Local
        ));
        assert!(matches!(
            table.route("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Route::Local
        ));
        assert!(matches!(
            table.route("/umcp.graph.v1.GraphService/Nope"),
            Route::UnknownMethod { method: "Nope", .. }
        ));
        assert!(matches!(
            table.route("/x.Y/Z"),
            Route::UnknownService("x.Y")
        ));
        for bad in ["/", "//", "/a", "/a/", "/a/b/c", "nope"] {
            assert!(matches!(table.route(bad), Route::Malformed), "{bad}");
        }
    }
}
