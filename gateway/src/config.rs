//! Gateway configuration (see `umcp-config` for sources and precedence).

use serde::{Deserialize, Serialize};
use umcp_audit_client::AuditClientConfig;
use umcp_authz::AuthClientConfig;
use umcp_config::{Validate, check_http_url, check_range, check_socket_addr};
use umcp_telemetry::LogConfig;

pub use crate::upstream_config::UpstreamConfig;

/// Everything the gateway reads at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// gRPC listen address (`UMCP_LISTEN`, default `127.0.0.1:50051`).
    pub listen: String,
    /// Backend URLs per service (`UMCP_BACKENDS__GRAPH`, …). An empty URL means the service is
    /// not offered by this gateway: its calls get `UNAVAILABLE` saying so.
    pub backends: Backends,
    /// Connect timeout to a backend in milliseconds (`UMCP_CONNECT_TIMEOUT_MS`, default 1000).
    pub connect_timeout_ms: u64,
    /// How often backend health is checked, in milliseconds (`UMCP_HEALTH_INTERVAL_MS`,
    /// default 2000).
    pub health_interval_ms: u64,
    /// Token verification (`UMCP_AUTH__URL`, `UMCP_AUTH__API_KEY`, …).
    pub auth: AuthClientConfig,
    /// Enforce authentication and the permission table here (`UMCP_REQUIRE_AUTH`, default
    /// true). Services enforce it again on their own ports either way; `false` exists to
    /// measure the gateway's own cost and is logged as a warning.
    pub require_auth: bool,
    /// Audit events (`UMCP_AUDIT__URL`, empty disables; `UMCP_AUDIT__SPOOL_DIR`, default
    /// `./data/audit-spool/gateway`, …).
    pub audit: AuditClientConfig,
    /// Logging (`UMCP_LOG__FORMAT`, `UMCP_LOG__FILTER`).
    pub log: LogConfig,
    /// The shared Redis (`UMCP_REDIS__URL` or `UMCP_REDIS__CLUSTER_NODES`, …; default none):
    /// with it, rate limits are shared by every gateway replica.
    pub redis: umcp_redis::RedisConfig,
    /// Rate limits per method class and principal (`UMCP_RATE_LIMITS__*`).
    pub rate_limits: umcp_ratelimit::RateLimitConfig,
    /// Backend clients: pool, breaker, timeout, retries (`UMCP_UPSTREAM__*`).
    pub upstream: UpstreamConfig,
    /// The HTTP port with MCP at `/mcp` (`UMCP_HTTP__LISTEN`, default `127.0.0.1:8080`, empty
    /// turns it off; allowed hosts and origins, …: see [`crate::mcp::HttpConfig`]).
    pub http: crate::mcp::HttpConfig,
}

/// Backend base URLs, `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backends {
    /// `umcp.auth.v1.AuthService` (default `http://127.0.0.1:50052`).
    pub auth: String,
    /// `umcp.graph.v1.GraphService` (default `http://127.0.0.1:50053`).
    pub graph: String,
    /// `umcp.execution.v1.ExecutionService` (default `http://127.0.0.1:50054`).
    pub execution: String,
    /// `umcp.audit.v1.AuditService` (default `http://127.0.0.1:50055`).
    pub audit: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            backends: Backends::default(),
            connect_timeout_ms: 1000,
            health_interval_ms: 2000,
            auth: AuthClientConfig::default(),
            require_auth: true,
            audit: AuditClientConfig {
                spool_dir: "./data/audit-spool/gateway".into(),
                ..AuditClientConfig::default()
            },
            log: LogConfig::default(),
            redis: umcp_redis::RedisConfig::default(),
            rate_limits: umcp_ratelimit::RateLimitConfig::default(),
            upstream: UpstreamConfig::default(),
            http: crate::mcp::HttpConfig::default(),
        }
    }
}

impl Default for Backends {
    fn default() -> Self {
        Self {
            auth: "http://127.0.0.1:50052".into(),
            graph: "http://127.0.0.1:50053".into(),
            execution: "http://127.0.0.1:50054".into(),
            audit: "http://127.0.0.1:50055".into(),
        }
    }
}

impl Backends {
    /// `(short name, fully qualified gRPC service, url)` for every service.
    #[must_use]
    pub fn entries(&self) -> [(&'static str, &'static str, &str); 4] {
        [
            ("auth", "umcp.auth.v1.AuthService", &self.auth),
            ("graph", "umcp.graph.v1.GraphService", &self.graph),
            (
                "execution",
                "umcp.execution.v1.ExecutionService",
                &self.execution,
            ),
            ("audit", "umcp.audit.v1.AuditService", &self.audit),
        ]
    }
}

impl Validate for GatewayConfig {
    fn validate(&self) -> Vec<String> {
        let mut problems = self.log.problems();
        problems.extend(self.auth.problems());
        problems.extend(self.audit.problems());
        problems.extend(self.redis.problems());
        problems.extend(self.rate_limits.problems());
        problems.extend(check_socket_addr("listen", &self.listen, "127.0.0.1:50051"));
        for (name, _, url) in self.backends.entries() {
            let key = format!("backends.{name}");
            problems.extend(check_http_url(&key, url, Some("disable the service")));
        }
        problems.extend(check_range(
            "connect_timeout_ms",
            self.connect_timeout_ms,
            50..=60_000,
        ));
        problems.extend(self.upstream.problems());
        problems.extend(self.http.problems());
        problems.extend(check_range(
            "health_interval_ms",
            self.health_interval_ms,
            100..=60_000,
        ));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umcp_config::{Sources, load};

    #[test]
    fn defaults_are_valid_and_env_overrides_backends() {
        let cfg: GatewayConfig = load(&Sources::env([
            ("UMCP_BACKENDS__GRAPH", "http://10.0.0.1:9000"),
            ("UMCP_BACKENDS__AUDIT", ""),
        ]))
        .unwrap();
        assert_eq!(cfg.backends.graph, "http://10.0.0.1:9000");
        assert_eq!(cfg.backends.audit, "");
        assert_eq!(cfg.listen, "127.0.0.1:50051");
    }

    #[test]
    fn every_bad_value_is_reported_with_its_variable() {
        let err = load::<GatewayConfig>(&Sources::env([
            ("UMCP_LISTEN", "localhost"),
            ("UMCP_BACKENDS__GRAPH", "graph:50053"),
            ("UMCP_CONNECT_TIMEOUT_MS", "0"),
        ]))
        .unwrap_err()
        .to_string();
        for needle in [
            "UMCP_LISTEN",
            "UMCP_BACKENDS__GRAPH",
            "UMCP_CONNECT_TIMEOUT_MS",
        ] {
            assert!(err.contains(needle), "{needle} missing in {err}");
        }
    }
}
