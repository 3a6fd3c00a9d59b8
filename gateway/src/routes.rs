//! Where each gRPC path goes: a local service (health, reflection), a backend, or nowhere.
//!
//! Paths are classified by the method catalogue (`umcp_proto::catalogue`), the same one the
//! authorization layer uses, so an unknown method of a known service is answered here with its
//! name instead of bothering the backend, and the router cannot disagree with the access rules.

use std::collections::HashMap;

use umcp_proto::catalogue::{Lookup, MethodCatalogue};
use umcp_resilience::balance::BalanceError;

use crate::config::GatewayConfig;
use crate::upstream::Upstream;

/// One backend service.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Short name (`graph`), as in the configuration keys.
    pub(crate) name: &'static str,
    /// Fully qualified gRPC service (`umcp.graph.v1.GraphService`).
    pub(crate) service: &'static str,
    /// `None` when the service is disabled in this gateway's configuration.
    pub(crate) upstream: Option<Upstream>,
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
}

impl RouteTable {
    /// Builds the table (on a tokio runtime: each backend's resolver task starts here);
    /// backend connections open lazily (a backend that is down at start-up does not stop the
    /// gateway; its calls get `UNAVAILABLE` until it is up).
    pub(crate) fn new(config: &GatewayConfig) -> Result<Self, BalanceError> {
        let mut backends = Vec::new();
        let mut services = HashMap::new();
        for (name, service, url) in config.backends.entries() {
            let upstream = if url.is_empty() {
                None
            } else {
                Some(Upstream::start(name, url, config)?)
            };
            services.insert(service, backends.len());
            backends.push(Backend {
                name,
                service,
                upstream,
            });
        }
        Ok(Self { backends, services })
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
        match MethodCatalogue::global().lookup(path) {
            Lookup::Infrastructure => Route::Local,
            Lookup::Method(method) => match self.services.get(method.service.as_str()) {
                Some(&index) => Route::Backend(&self.backends[index]),
                // Unreachable while the backend list covers the catalogue (a unit test checks).
                None => Route::UnknownService(&method.service),
            },
            Lookup::UnknownMethod { service, method } => Route::UnknownMethod { service, method },
            Lookup::UnknownService(service) => Route::UnknownService(service),
            Lookup::Malformed => Route::Malformed,
        }
    }
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
    async fn every_catalogue_service_has_a_backend() {
        let config = GatewayConfig::default();
        let configured: Vec<&str> = config.backends.entries().iter().map(|e| e.1).collect();
        let catalogue: Vec<&str> = MethodCatalogue::global()
            .services()
            .iter()
            .map(String::as_str)
            .collect();
        let mut a = configured.clone();
        let mut b = catalogue.clone();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "gateway backends and catalogue services differ");
    }

    #[tokio::test]
    async fn routes_every_method_of_every_service() {
        let table = table();
        for method in MethodCatalogue::global().methods() {
            let path = method.path.as_str();
            match table.route(path) {
                Route::Backend(b) => assert!(path.starts_with(&format!("/{}/", b.service))),
                other => panic!("{path} routed to {other:?}"),
            }
        }
        let graph = table.route("/umcp.graph.v1.GraphService/Upsert");
        assert!(matches!(graph, Route::Backend(b) if b.name == "graph" && b.upstream.is_some()));
        let audit = table.route("/umcp.audit.v1.AuditService/Verify");
        assert!(matches!(audit, Route::Backend(b) if b.upstream.is_none()));
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
