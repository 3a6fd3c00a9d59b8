//! Settings of the Neo4j backend (`UMCP_NEO4J__*` in the graph service).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use umcp_config::{Secret, check_range, env_name};

/// Largest pool the default (cores × 2 + 4) grows to.
pub const DEFAULT_POOL_CAP: usize = 32;

/// Connection pool size unless configured: cores × 2 + 4, at most [`DEFAULT_POOL_CAP`].
#[must_use]
pub fn default_pool_size() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    (cores * 2 + 4).min(DEFAULT_POOL_CAP)
}

/// How to reach Neo4j and how hard to lean on it. Empty `uri` (the default) means the
/// embedded store is used instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Neo4jConfig {
    /// `bolt://host:7687` (or `bolt+s://`, `bolt+ssc://`, `neo4j://`, `neo4j+s://`,
    /// `neo4j+ssc://`; routing schemes connect directly) (`UMCP_NEO4J__URI`); empty: not used.
    pub uri: String,
    /// User (`UMCP_NEO4J__USER`), default `neo4j`.
    pub user: String,
    /// Password (`UMCP_NEO4J__PASSWORD`); required when `uri` is set (the production path
    /// always authenticates).
    pub password: Secret,
    /// Database (`UMCP_NEO4J__DATABASE`), default `neo4j`.
    pub database: String,
    /// Pooled Bolt connections (`UMCP_NEO4J__MAX_CONNECTIONS`), default cores × 2 + 4 capped
    /// at 32, allowed 1..=256.
    pub max_connections: usize,
    /// Longest wait for a pooled connection, ms (`UMCP_NEO4J__ACQUIRE_TIMEOUT_MS`), default
    /// 5000, allowed 100..=60000; then the call answers UNAVAILABLE.
    pub acquire_timeout_ms: u64,
    /// Connections are replaced after this long, ms (`UMCP_NEO4J__MAX_LIFETIME_MS`), default
    /// 3600000 (1 h), allowed 60000..=86400000.
    pub max_lifetime_ms: u64,
    /// TCP keep-alive interval of every connection, ms (`UMCP_NEO4J__KEEPALIVE_MS`), default
    /// 60000, allowed 1000..=3600000.
    pub keepalive_ms: u64,
    /// Timeout of connecting and of each read from the socket, ms
    /// (`UMCP_NEO4J__CONNECT_TIMEOUT_MS`), default 30000, allowed 100..=300000. It also bounds
    /// how long a query may go without sending a batch of rows, so keep it at least as long
    /// as the longest query.
    pub connect_timeout_ms: u64,
    /// How long the read breaker stays open after 5 failures in a row, ms
    /// (`UMCP_NEO4J__READ_BREAKER_OPEN_MS`), default 30000, allowed 100..=600000.
    pub read_breaker_open_ms: u64,
    /// How long the write breaker stays open after 3 failures in a row, ms
    /// (`UMCP_NEO4J__WRITE_BREAKER_OPEN_MS`), default 60000, allowed 100..=600000.
    pub write_breaker_open_ms: u64,
    /// Longest any query or write may run whatever the caller's deadline, ms; the graph
    /// service sets it from `UMCP_MAX_QUERY_TIME_MS` (default 30000).
    #[serde(skip)]
    pub max_query_time_ms: u64,
}

impl Default for Neo4jConfig {
    fn default() -> Self {
        Self {
            uri: String::new(),
            user: "neo4j".into(),
            password: Secret::default(),
            database: "neo4j".into(),
            max_connections: default_pool_size(),
            acquire_timeout_ms: 5_000,
            max_lifetime_ms: 3_600_000,
            keepalive_ms: 60_000,
            connect_timeout_ms: 30_000,
            read_breaker_open_ms: 30_000,
            write_breaker_open_ms: 60_000,
            max_query_time_ms: 30_000,
        }
    }
}

const SCHEMES: &[&str] = &[
    "bolt://",
    "bolt+s://",
    "bolt+ssc://",
    "neo4j://",
    "neo4j+s://",
    "neo4j+ssc://",
];

impl Neo4jConfig {
    /// A config for `uri` with defaults otherwise (tests; the harness ignores credentials).
    #[must_use]
    pub fn for_uri(uri: &str, password: &str) -> Self {
        Self {
            uri: uri.into(),
            password: Secret::new(password),
            ..Self::default()
        }
    }

    /// Whether Neo4j is configured (a URI is set).
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.uri.is_empty()
    }

    pub(crate) fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Every problem, each naming its `UMCP_NEO4J__…` variable; nothing when not enabled.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut problems = Vec::new();
        if !SCHEMES.iter().any(|s| self.uri.starts_with(s)) || !self.uri.contains("://") {
            problems.push(format!(
                "neo4j.uri ({}) `{}` must start with one of {}",
                env_name("neo4j.uri"),
                self.uri,
                SCHEMES.join(", ")
            ));
        }
        if self.user.is_empty() {
            problems.push(format!("neo4j.user ({}) is empty", env_name("neo4j.user")));
        }
        if self.password.expose().is_empty() {
            problems.push(format!(
                "neo4j.password ({}) is empty; Neo4j is always used with authentication",
                env_name("neo4j.password")
            ));
        }
        if self.database.is_empty()
            || !self
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            problems.push(format!(
                "neo4j.database ({}) `{}` must be a database name (letters, digits, `.`, `-`, `_`)",
                env_name("neo4j.database"),
                self.database
            ));
        }
        let ranges: [(&str, u64, u64, u64); 6] = [
            (
                "neo4j.acquire_timeout_ms",
                self.acquire_timeout_ms,
                100,
                60_000,
            ),
            (
                "neo4j.max_lifetime_ms",
                self.max_lifetime_ms,
                60_000,
                86_400_000,
            ),
            ("neo4j.keepalive_ms", self.keepalive_ms, 1_000, 3_600_000),
            (
                "neo4j.connect_timeout_ms",
                self.connect_timeout_ms,
                100,
                300_000,
            ),
            (
                "neo4j.read_breaker_open_ms",
                self.read_breaker_open_ms,
                100,
                600_000,
            ),
            (
                "neo4j.write_breaker_open_ms",
                self.write_breaker_open_ms,
                100,
                600_000,
            ),
        ];
        for (key, value, lo, hi) in ranges {
            problems.extend(check_range(key, value, lo..=hi));
        }
        problems.extend(check_range(
            "neo4j.max_connections",
            self.max_connections,
            1..=256,
        ));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_by_default_and_checked_when_enabled() {
        assert!(!Neo4jConfig::default().enabled());
        assert!(Neo4jConfig::default().problems().is_empty());
        assert!(
            Neo4jConfig::for_uri("bolt://127.0.0.1:7687", "pw")
                .problems()
                .is_empty()
        );
        let bad = Neo4jConfig {
            max_connections: 0,
            acquire_timeout_ms: 1,
            ..Neo4jConfig::for_uri("http://x", "")
        };
        let problems = bad.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("UMCP_NEO4J__URI"), "{problems:?}");
        assert!(problems[1].contains("UMCP_NEO4J__PASSWORD"), "{problems:?}");
        assert!(
            problems[2].contains("UMCP_NEO4J__ACQUIRE_TIMEOUT_MS"),
            "{problems:?}"
        );
        assert!(
            problems[3].contains("UMCP_NEO4J__MAX_CONNECTIONS"),
            "{problems:?}"
        );
        let pool = default_pool_size();
        assert!((6..=DEFAULT_POOL_CAP).contains(&pool), "{pool}");
    }
}
