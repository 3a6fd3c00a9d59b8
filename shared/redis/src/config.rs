//! `UMCP_REDIS__*`: where Redis is and how patiently to talk to it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use umcp_config::{Secret, check_range, env_name};

/// The shared Redis of a process. Neither `url` nor `cluster_nodes` set: no Redis (caches are
/// local, rate limits per replica), which is the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// One standalone server, `redis://[user:password@]host:port[/db]` or `rediss://…` for TLS
    /// (`UMCP_REDIS__URL`, default empty).
    pub url: String,
    /// A Redis Cluster: seed nodes `host:port,host:port,…`; the rest is discovered
    /// (`UMCP_REDIS__CLUSTER_NODES`, default empty). Exclusive with `url`.
    pub cluster_nodes: String,
    /// ACL user for `cluster_nodes` (`UMCP_REDIS__USERNAME`; a `url` carries its own).
    pub username: String,
    /// Password for `cluster_nodes` (`UMCP_REDIS__PASSWORD`; never logged).
    pub password: Secret,
    /// TLS to `cluster_nodes` (`UMCP_REDIS__TLS`, default false; a `url` says `rediss://`).
    pub tls: bool,
    /// Connections in the pool, each multiplexing commands (`UMCP_REDIS__POOL_SIZE`, 1..=64,
    /// default 4).
    pub pool_size: usize,
    /// Longest wait for one command's answer, in ms (`UMCP_REDIS__COMMAND_TIMEOUT_MS`,
    /// 1..=10000, default 50). Past it the caller treats Redis as down for that call.
    pub command_timeout_ms: u64,
    /// Longest wait for a connection, in ms (`UMCP_REDIS__CONNECT_TIMEOUT_MS`, 10..=60000,
    /// default 1000).
    pub connect_timeout_ms: u64,
    /// First reconnect delay, in ms, doubling up to `reconnect_max_delay_ms`, forever
    /// (`UMCP_REDIS__RECONNECT_MIN_DELAY_MS`, 1..=60000, default 50).
    pub reconnect_min_delay_ms: u64,
    /// Longest reconnect delay, in ms (`UMCP_REDIS__RECONNECT_MAX_DELAY_MS`, 1..=300000,
    /// default 2000).
    pub reconnect_max_delay_ms: u64,
    /// How long the breaker stays open after Redis failed half of the last 20 calls, in ms
    /// (`UMCP_REDIS__BREAKER_OPEN_MS`, 10..=600000, default 1000): meanwhile calls fail at once.
    pub breaker_open_ms: u64,
    /// Prefix of every key and channel this mesh uses (`UMCP_REDIS__KEY_PREFIX`, default
    /// `umcp:`), so several deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            cluster_nodes: String::new(),
            username: String::new(),
            password: Secret::default(),
            tls: false,
            pool_size: 4,
            command_timeout_ms: 50,
            connect_timeout_ms: 1000,
            reconnect_min_delay_ms: 50,
            reconnect_max_delay_ms: 2000,
            breaker_open_ms: 1000,
            key_prefix: "umcp:".into(),
        }
    }
}

/// Which Redis, once the config is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// No Redis configured.
    Off,
    /// One server at this URL.
    Standalone(String),
    /// A cluster with these seed nodes (`host`, `port`).
    Cluster(Vec<(String, u16)>),
}

impl RedisConfig {
    /// Whether a Redis is configured at all.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.url.is_empty() || !self.cluster_nodes.is_empty()
    }

    /// The topology, or what is wrong with the settings.
    ///
    /// # Errors
    /// A message naming the setting and what is allowed.
    pub fn topology(&self) -> Result<Topology, String> {
        match (self.url.is_empty(), self.cluster_nodes.is_empty()) {
            (true, true) => Ok(Topology::Off),
            (false, false) => Err(format!(
                "redis.url ({}) and redis.cluster_nodes ({}) are exclusive: set one",
                env_name("redis.url"),
                env_name("redis.cluster_nodes")
            )),
            (false, true) => check_url(&self.url).map(|()| Topology::Standalone(self.url.clone())),
            (true, false) => parse_nodes(&self.cluster_nodes).map(Topology::Cluster),
        }
    }

    /// Every problem with the settings (empty when valid).
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self.topology().err().into_iter().collect();
        problems.extend(check_range("redis.pool_size", self.pool_size, 1..=64));
        problems.extend(check_range(
            "redis.command_timeout_ms",
            self.command_timeout_ms,
            1..=10_000,
        ));
        problems.extend(check_range(
            "redis.connect_timeout_ms",
            self.connect_timeout_ms,
            10..=60_000,
        ));
        problems.extend(check_range(
            "redis.reconnect_min_delay_ms",
            self.reconnect_min_delay_ms,
            1..=60_000,
        ));
        problems.extend(check_range(
            "redis.reconnect_max_delay_ms",
            self.reconnect_max_delay_ms,
            self.reconnect_min_delay_ms.max(1)..=300_000,
        ));
        problems.extend(check_range(
            "redis.breaker_open_ms",
            self.breaker_open_ms,
            10..=600_000,
        ));
        let prefix_ok = self.key_prefix.len() <= 64
            && self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ":_-.".contains(c));
        if !prefix_ok {
            problems.push(format!(
                "redis.key_prefix ({}) `{}` must be at most 64 characters of A-Z a-z 0-9 : _ - .",
                env_name("redis.key_prefix"),
                self.key_prefix
            ));
        }
        problems
    }

    /// [`Self::command_timeout_ms`] as a duration.
    #[must_use]
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    let host_ok = url
        .split_once("://")
        .map(|(_, rest)| rest.rsplit('@').next().unwrap_or(rest))
        .is_some_and(|host| !host.is_empty() && !host.starts_with('/'));
    if scheme_ok && host_ok {
        Ok(())
    } else {
        Err(format!(
            "redis.url ({}) must look like redis://host:port or rediss://host:port (TLS), \
             optionally with user:password@ and /db",
            env_name("redis.url")
        ))
    }
}

fn parse_nodes(list: &str) -> Result<Vec<(String, u16)>, String> {
    list.split(',')
        .map(str::trim)
        .map(|node| {
            node.rsplit_once(':')
                .and_then(|(host, port)| {
                    let port: u16 = port.parse().ok().filter(|&p| p > 0)?;
                    (!host.is_empty()).then(|| (host.to_owned(), port))
                })
                .ok_or_else(|| {
                    format!(
                        "redis.cluster_nodes ({}) entry `{node}` must be host:port \
                         (a comma-separated list of seed nodes)",
                        env_name("redis.cluster_nodes")
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_valid() {
        let config = RedisConfig::default();
        assert!(!config.enabled());
        assert_eq!(config.topology(), Ok(Topology::Off));
        assert!(config.problems().is_empty());
    }

    #[test]
    fn topologies() {
        let standalone = RedisConfig {
            url: "rediss://u:p@cache:6380/2".into(),
            ..RedisConfig::default()
        };
        assert!(matches!(standalone.topology(), Ok(Topology::Standalone(_))));
        let cluster = RedisConfig {
            cluster_nodes: "a:7000, b:7001".into(),
            ..RedisConfig::default()
        };
        assert_eq!(
            cluster.topology(),
            Ok(Topology::Cluster(vec![
                ("a".into(), 7000),
                ("b".into(), 7001)
            ]))
        );
    }

    #[test]
    fn every_bad_value_is_named() {
        let both = RedisConfig {
            url: "redis://a:1".into(),
            cluster_nodes: "b:2".into(),
            ..RedisConfig::default()
        };
        assert!(both.problems()[0].contains("exclusive"));
        for url in ["http://a:1", "redis://", "a:6379"] {
            let bad = RedisConfig {
                url: url.into(),
                ..RedisConfig::default()
            };
            assert!(bad.problems()[0].contains("UMCP_REDIS__URL"), "{url}");
        }
        for nodes in ["a", "a:0", ":1", "a:1,,b:2", "a:x"] {
            let bad = RedisConfig {
                cluster_nodes: nodes.into(),
                ..RedisConfig::default()
            };
            assert!(
                bad.problems()[0].contains("UMCP_REDIS__CLUSTER_NODES"),
                "{nodes}"
            );
        }
        let ranges = RedisConfig {
            pool_size: 0,
            command_timeout_ms: 0,
            reconnect_min_delay_ms: 500,
            reconnect_max_delay_ms: 100,
            key_prefix: "bad prefix".into(),
            ..RedisConfig::default()
        };
        let text = ranges.problems().join("\n");
        for needle in [
            "UMCP_REDIS__POOL_SIZE",
            "UMCP_REDIS__COMMAND_TIMEOUT_MS",
            "UMCP_REDIS__RECONNECT_MAX_DELAY_MS",
            "UMCP_REDIS__KEY_PREFIX",
        ] {
            assert!(text.contains(needle), "{needle} missing in {text}");
        }
    }
}
