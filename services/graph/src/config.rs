//! Typed configuration of the graph service (defaults → optional TOML file → `UMCP_*`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use umcp_audit_client::AuditClientConfig;
use umcp_authz::AuthClientConfig;
use umcp_cache::CacheConfig;
use umcp_config::{Validate, check_range, check_socket_addr, env_name};
use umcp_redis::RedisConfig;
use umcp_store::grafeo::GrafeoConfig;
use umcp_store::neo4j::Neo4jConfig;
use umcp_telemetry::LogConfig;

/// Settings of `umcp-graph`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphConfig {
    /// gRPC listen address (`UMCP_LISTEN`), default `127.0.0.1:50053`.
    pub listen: String,
    /// Directory of the embedded graph database (`UMCP_DATA_DIR`), default `./data/graph`.
    pub data_dir: PathBuf,
    /// Longest any query may run whatever the caller's deadline, in milliseconds
    /// (`UMCP_MAX_QUERY_TIME_MS`), default 30000.
    pub max_query_time_ms: u64,
    /// Queries running at once; more wait for a slot until their deadline
    /// (`UMCP_MAX_CONCURRENT_QUERIES`), default 8.
    pub max_concurrent_queries: usize,
    /// Queries one caller (token subject) may have running or waiting at once; more answer
    /// RESOURCE_EXHAUSTED at once (`UMCP_MAX_QUERIES_PER_CALLER`), default 2, at most
    /// `max_concurrent_queries`.
    pub max_queries_per_caller: usize,
    /// Memory the service and its queries may use, in MiB (`UMCP_MEMORY_CEILING_MB`), default
    /// 1024, at least 64; each read query runs in a forked child limited to
    /// ceiling / max_concurrent_queries, and one that needs more answers RESOURCE_EXHAUSTED.
    pub memory_ceiling_mb: u64,
    /// How often the write-ahead log is folded into the database file, in milliseconds
    /// (`UMCP_CHECKPOINT_INTERVAL_MS`), default 60000; 0 checkpoints only at shutdown.
    pub checkpoint_interval_ms: u64,
    /// Token verification (`UMCP_AUTH__URL`, `UMCP_AUTH__API_KEY`, `UMCP_AUTH__JWKS_FILE`, …).
    pub auth: AuthClientConfig,
    /// Audit events (`UMCP_AUDIT__URL`, empty disables; `UMCP_AUDIT__SPOOL_DIR`, default
    /// `./data/audit-spool/graph`, …).
    pub audit: AuditClientConfig,
    /// Logging (`UMCP_LOG__FORMAT`, `UMCP_LOG__FILTER`).
    pub log: LogConfig,
    /// Metrics and probes over HTTP (`UMCP_HTTP__LISTEN`, default `127.0.0.1:9103`; empty: off).
    pub http: umcp_rpc::ops::OpsConfig,
    /// The shared Redis of the query cache (`UMCP_REDIS__URL` or `UMCP_REDIS__CLUSTER_NODES`,
    /// …); none configured (the default): each process caches alone with a local generation.
    pub redis: RedisConfig,
    /// The query and metrics cache (`UMCP_CACHE__ENABLED`, `UMCP_CACHE__TTL_MS`, …).
    pub cache: CacheConfig,
    /// Neo4j instead of the embedded store when `UMCP_NEO4J__URI` is set (`UMCP_NEO4J__USER`,
    /// `UMCP_NEO4J__PASSWORD`, `UMCP_NEO4J__DATABASE`, pool and breaker settings; see
    /// [`Neo4jConfig`]). `data_dir`, the memory ceiling and the checkpoint interval are then
    /// unused; `max_query_time_ms` bounds Neo4j queries too.
    pub neo4j: Neo4jConfig,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50053".into(),
            data_dir: PathBuf::from(GrafeoConfig::DEFAULT_PATH),
            max_query_time_ms: 30_000,
            max_concurrent_queries: 8,
            max_queries_per_caller: 2,
            memory_ceiling_mb: 1024,
            checkpoint_interval_ms: 60_000,
            auth: AuthClientConfig::default(),
            audit: AuditClientConfig {
                spool_dir: PathBuf::from("./data/audit-spool/graph"),
                ..AuditClientConfig::default()
            },
            log: LogConfig::default(),
            http: umcp_rpc::ops::OpsConfig::on("127.0.0.1:9103"),
            redis: RedisConfig::default(),
            cache: CacheConfig::default(),
            neo4j: Neo4jConfig::default(),
        }
    }
}

impl GraphConfig {
    /// The embedded store's settings.
    pub fn store(&self) -> GrafeoConfig {
        GrafeoConfig {
            path: Some(self.data_dir.clone()),
            max_query_time: Duration::from_millis(self.max_query_time_ms),
            max_concurrent_queries: self.max_concurrent_queries,
            max_queries_per_caller: self.max_queries_per_caller,
            query_memory_budget: self.memory_ceiling_mb * 1024 * 1024
                / self.max_concurrent_queries.max(1) as u64,
            checkpoint_interval: (self.checkpoint_interval_ms > 0)
                .then(|| Duration::from_millis(self.checkpoint_interval_ms)),
        }
    }
}

impl GraphConfig {
    /// The Neo4j backend's settings, or `None` when `UMCP_NEO4J__URI` is not set.
    pub fn neo4j_store(&self) -> Option<Neo4jConfig> {
        self.neo4j.enabled().then(|| Neo4jConfig {
            max_query_time_ms: self.max_query_time_ms,
            ..self.neo4j.clone()
        })
    }
}

impl Validate for GraphConfig {
    fn validate(&self) -> Vec<String> {
        let mut problems = self.log.problems();
        problems.extend(self.http.problems());
        problems.extend(self.auth.problems());
        problems.extend(self.audit.problems());
        problems.extend(self.redis.problems());
        problems.extend(self.cache.problems());
        problems.extend(self.neo4j.problems());
        problems.extend(check_socket_addr("listen", &self.listen, "127.0.0.1:50053"));
        if self.data_dir.as_os_str().is_empty() {
            problems.push(format!(
                "data_dir ({}) is empty; give a directory such as ./data/graph",
                env_name("data_dir")
            ));
        }
        problems.extend(check_range(
            "max_query_time_ms",
            self.max_query_time_ms,
            100..=600_000,
        ));
        problems.extend(check_range(
            "max_concurrent_queries",
            self.max_concurrent_queries,
            1..=1024,
        ));
        problems.extend(
            check_range(
                "max_queries_per_caller",
                self.max_queries_per_caller,
                1..=self.max_concurrent_queries.max(1),
            )
            .map(|m| m + " (at most max_concurrent_queries)"),
        );
        problems.extend(check_range(
            "memory_ceiling_mb",
            self.memory_ceiling_mb,
            64..=1_048_576,
        ));
        problems
    }
}

impl umcp_rpc::process::ProcessConfig for GraphConfig {
    fn log(&self) -> &LogConfig {
        &self.log
    }

    fn listen(&self) -> &str {
        &self.listen
    }

    fn ops(&self) -> Option<&umcp_rpc::ops::OpsConfig> {
        Some(&self.http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umcp_config::{Sources, load};

    #[test]
    fn defaults_are_valid_and_env_overrides() {
        assert!(GraphConfig::default().validate().is_empty());
        let cfg: GraphConfig = load(&Sources::env([
            ("UMCP_DATA_DIR", "/tmp/g"),
            ("UMCP_MAX_QUERY_TIME_MS", "1500"),
        ]))
        .expect("valid");
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/g"));
        assert_eq!(cfg.store().max_query_time, Duration::from_millis(1500));
        assert_eq!(cfg.listen, "127.0.0.1:50053");
    }

    #[test]
    fn neo4j_is_chosen_by_its_uri() {
        assert_eq!(GraphConfig::default().neo4j_store(), None);
        let cfg: GraphConfig = load(&Sources::env([
            ("UMCP_NEO4J__URI", "bolt://db:7687"),
            ("UMCP_NEO4J__PASSWORD", "secret"),
            ("UMCP_NEO4J__MAX_CONNECTIONS", "12"),
            ("UMCP_MAX_QUERY_TIME_MS", "2000"),
        ]))
        .expect("valid");
        let neo4j = cfg.neo4j_store().expect("neo4j configured");
        assert_eq!(
            (
                neo4j.uri.as_str(),
                neo4j.password.expose(),
                neo4j.max_connections
            ),
            ("bolt://db:7687", "secret", 12)
        );
        assert_eq!(
            (neo4j.database.as_str(), neo4j.max_query_time_ms),
            ("neo4j", 2000)
        );
        let err = load::<GraphConfig>(&Sources::env([("UMCP_NEO4J__URI", "bolt://db:7687")]))
            .expect_err("no password");
        assert!(err.to_string().contains("UMCP_NEO4J__PASSWORD"), "{err}");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let cfg = GraphConfig {
            listen: "nowhere".into(),
            max_query_time_ms: 0,
            max_concurrent_queries: 0,
            ..GraphConfig::default()
        };
        let problems = cfg.validate();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[3].contains("UMCP_MAX_QUERIES_PER_CALLER"),
            "{problems:?}"
        );
        assert!(problems[0].contains("UMCP_LISTEN"));
    }
}
