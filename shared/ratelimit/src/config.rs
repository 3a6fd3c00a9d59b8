//! `UMCP_RATE_LIMITS__*`: one rule per rate class of the method catalogue.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use umcp_config::check_range;

/// What to do when Redis is configured but does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Decide with the in-process limiter: each replica enforces the full limit on its own.
    #[default]
    Local,
    /// Admit the call.
    Open,
    /// Refuse the call with `UNAVAILABLE` naming the limiter.
    Closed,
}

/// `limit` calls per `period_secs` per principal, with a burst of `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    /// Calls per period (1..=1000000).
    pub limit: u32,
    /// The period in seconds (1..=86400).
    pub period_secs: u64,
    /// Evaluate and log, but admit (to try a rule out before enforcing it).
    pub shadow: bool,
}

impl Default for Rule {
    fn default() -> Self {
        Self::per_minute(60)
    }
}

impl Rule {
    /// `limit` calls per 60 s, enforced.
    #[must_use]
    pub const fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            period_secs: 60,
            shadow: false,
        }
    }

    /// The period as a duration.
    #[must_use]
    pub fn period(&self) -> Duration {
        Duration::from_secs(self.period_secs)
    }
}

/// The rate classes a method's policy may name (`policy.rate_class` in `proto/`).
pub const CLASSES: [&str; 8] = [
    "sign_in", "execute", "tool", "query", "write", "read", "admin", "internal",
];

/// Rate limits at the gateway (`UMCP_RATE_LIMITS__*`). A class without a rule is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Enforce the rules at all (`UMCP_RATE_LIMITS__ENABLED`, default true).
    pub enabled: bool,
    /// When Redis is configured but unavailable (`UMCP_RATE_LIMITS__FAILURE_MODE`, `local` |
    /// `open` | `closed`, default `local`).
    pub failure_mode: FailureMode,
    /// Longest wait for Redis per decision, in ms (`UMCP_RATE_LIMITS__REDIS_TIMEOUT_MS`,
    /// 1..=15, default 15), so a decision never costs more than ~20 ms.
    pub redis_timeout_ms: u64,
    /// Keys the in-process limiter holds at most (`UMCP_RATE_LIMITS__LOCAL_MAX_KEYS`,
    /// 100..=10000000, default 100000); the least recently used are forgotten first.
    pub local_max_keys: u64,
    /// Logins, refresh, sign-up (`UMCP_RATE_LIMITS__SIGN_IN__LIMIT`, `…__PERIOD_SECS`,
    /// `…__SHADOW`; default 20 per 60 s).
    pub sign_in: Option<Rule>,
    /// Sandboxed execution (default 10 per 60 s).
    pub execute: Option<Rule>,
    /// Lint, tests, templates (default 60 per 60 s).
    pub tool: Option<Rule>,
    /// Graph queries (default 300 per 60 s).
    pub query: Option<Rule>,
    /// Writes (default 120 per 60 s).
    pub write: Option<Rule>,
    /// Reads (default 600 per 60 s).
    pub read: Option<Rule>,
    /// Administration (default 120 per 60 s).
    pub admin: Option<Rule>,
    /// Service-to-service calls (default unlimited).
    pub internal: Option<Rule>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_mode: FailureMode::Local,
            redis_timeout_ms: 15,
            local_max_keys: 100_000,
            sign_in: Some(Rule::per_minute(20)),
            execute: Some(Rule::per_minute(10)),
            tool: Some(Rule::per_minute(60)),
            query: Some(Rule::per_minute(300)),
            write: Some(Rule::per_minute(120)),
            read: Some(Rule::per_minute(600)),
            admin: Some(Rule::per_minute(120)),
            internal: None,
        }
    }
}

impl RateLimitConfig {
    /// The rule of `class`, if it has one (unknown classes have none).
    #[must_use]
    pub fn rule(&self, class: &str) -> Option<Rule> {
        match class {
            "sign_in" => self.sign_in,
            "execute" => self.execute,
            "tool" => self.tool,
            "query" => self.query,
            "write" => self.write,
            "read" => self.read,
            "admin" => self.admin,
            "internal" => self.internal,
            _ => None,
        }
    }

    /// The same config with `class`'s rule replaced (tests and tools).
    #[must_use]
    pub fn with_rule(mut self, class: &str, rule: Option<Rule>) -> Self {
        let slot = match class {
            "sign_in" => &mut self.sign_in,
            "execute" => &mut self.execute,
            "tool" => &mut self.tool,
            "query" => &mut self.query,
            "write" => &mut self.write,
            "read" => &mut self.read,
            "admin" => &mut self.admin,
            "internal" => &mut self.internal,
            _ => return self,
        };
        *slot = rule;
        self
    }

    /// The longest period of any rule (how long the local limiter must remember a key).
    #[must_use]
    pub fn longest_period(&self) -> Duration {
        CLASSES
            .iter()
            .filter_map(|c| self.rule(c))
            .map(|r| r.period())
            .max()
            .unwrap_or(Duration::from_secs(60))
    }

    /// `redis` with its command timeout cut to [`Self::redis_timeout_ms`], for a process whose
    /// Redis serves the limiter: fred itself then gives up on a command at the limiter's budget,
    /// so nothing queues behind a slow Redis (each decision's own budget goes through
    /// `Redis::call_within`, whose timeouts count against the Redis breaker).
    #[must_use]
    pub fn redis_config(&self, redis: &umcp_redis::RedisConfig) -> umcp_redis::RedisConfig {
        umcp_redis::RedisConfig {
            command_timeout_ms: redis.command_timeout_ms.min(self.redis_timeout_ms),
            ..redis.clone()
        }
    }

    /// [`Self::redis_timeout_ms`] as a duration.
    #[must_use]
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// Every problem with the settings (empty when valid).
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = Vec::new();
        problems.extend(check_range(
            "rate_limits.redis_timeout_ms",
            self.redis_timeout_ms,
            1..=15,
        ));
        problems.extend(check_range(
            "rate_limits.local_max_keys",
            self.local_max_keys,
            100..=10_000_000,
        ));
        for class in CLASSES {
            if let Some(rule) = self.rule(class) {
                problems.extend(check_range(
                    &format!("rate_limits.{class}.limit"),
                    rule.limit,
                    1..=1_000_000,
                ));
                problems.extend(check_range(
                    &format!("rate_limits.{class}.period_secs"),
                    rule.period_secs,
                    1..=86_400,
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umcp_proto::catalogue::MethodCatalogue;

    #[test]
    fn defaults_are_valid_and_match_the_brief() {
        let config = RateLimitConfig::default();
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert_eq!(config.rule("execute"), Some(Rule::per_minute(10)));
        assert_eq!(config.rule("internal"), None);
        assert_eq!(config.longest_period(), Duration::from_secs(60));
    }

    #[test]
    fn every_catalogue_class_is_known() {
        for method in MethodCatalogue::global().methods() {
            assert!(
                CLASSES.contains(&method.rate_class.as_str()),
                "{} names unknown rate class {}",
                method.path,
                method.rate_class
            );
        }
    }

    /// How a process config nests it (the gateway's `rate_limits`).
    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Root {
        rate_limits: RateLimitConfig,
    }

    impl umcp_config::Validate for Root {
        fn validate(&self) -> Vec<String> {
            self.rate_limits.problems()
        }
    }

    #[test]
    fn env_sets_one_field_of_a_rule_and_adds_a_rule() {
        let root: Root = umcp_config::load(&umcp_config::Sources::env([
            ("UMCP_RATE_LIMITS__EXECUTE__LIMIT", "3"),
            ("UMCP_RATE_LIMITS__QUERY__SHADOW", "true"),
            ("UMCP_RATE_LIMITS__INTERNAL__LIMIT", "1000"),
            ("UMCP_RATE_LIMITS__FAILURE_MODE", "closed"),
        ]))
        .expect("valid");
        let config = root.rate_limits;
        assert_eq!(
            config.rule("execute").map(|r| (r.limit, r.period_secs)),
            Some((3, 60))
        );
        assert_eq!(
            config.rule("query").map(|r| (r.limit, r.shadow)),
            Some((300, true))
        );
        assert_eq!(config.rule("internal").map(|r| r.limit), Some(1000));
        assert_eq!(config.failure_mode, FailureMode::Closed);
        let refused = umcp_config::load::<Root>(&umcp_config::Sources::env([(
            "UMCP_RATE_LIMITS__REDIS_TIMEOUT_MS",
            "100",
        )]));
        assert!(refused.is_err());
    }

    #[test]
    fn the_redis_command_timeout_is_cut_to_the_limiter_budget() {
        let config = RateLimitConfig::default();
        let redis = umcp_redis::RedisConfig::default();
        assert_eq!(config.redis_config(&redis).command_timeout_ms, 15);
        let fast = umcp_redis::RedisConfig {
            command_timeout_ms: 5,
            ..redis
        };
        assert_eq!(config.redis_config(&fast).command_timeout_ms, 5);
    }

    #[test]
    fn out_of_range_values_name_the_variable() {
        let config = RateLimitConfig {
            redis_timeout_ms: 50,
            ..RateLimitConfig::default()
        }
        .with_rule(
            "query",
            Some(Rule {
                limit: 0,
                period_secs: 60,
                shadow: false,
            }),
        );
        let problems = config.problems().join("\n");
        assert!(
            problems.contains("UMCP_RATE_LIMITS__REDIS_TIMEOUT_MS"),
            "{problems}"
        );
        assert!(
            problems.contains("UMCP_RATE_LIMITS__QUERY__LIMIT"),
            "{problems}"
        );
    }
}
