//! One decision per call: the rule of the class, Redis when configured and available, the
//! failure mode otherwise, and counters of what was decided.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use umcp_redis::Redis;

use crate::config::{FailureMode, RateLimitConfig, Rule};
use crate::gcra::{LocalLimiter, Outcome, Rate};
use crate::remote;

/// Who answered a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The shared Redis (exact across replicas).
    Redis,
    /// The in-process limiter (no Redis configured, or Redis down with `failure_mode=local`).
    Local,
    /// Redis down with `failure_mode=open`: admitted unchecked.
    FailOpen,
}

/// What the limiter decided for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The class has no rule (or limits are disabled).
    Unlimited,
    /// Checked against `rule`.
    Checked {
        /// The rule applied.
        rule: Rule,
        /// The GCRA outcome (for `FailOpen`, an admitting one with a full budget).
        outcome: Outcome,
        /// Who decided.
        source: Source,
    },
    /// Redis down with `failure_mode=closed`: refuse the call.
    Unavailable {
        /// The rule that could not be checked.
        rule: Rule,
    },
}

/// What the limiter decided so far, for metrics.
#[derive(Debug, Default)]
pub struct RateLimitStats {
    /// Calls admitted by a rule.
    pub allowed: AtomicU64,
    /// Calls refused by a rule.
    pub limited: AtomicU64,
    /// Calls over a shadow rule (admitted).
    pub shadow_limited: AtomicU64,
    /// Decisions made in process because Redis was unavailable.
    pub fallback_local: AtomicU64,
    /// Calls admitted unchecked because Redis was unavailable (`failure_mode=open`).
    pub fallback_open: AtomicU64,
    /// Calls refused because Redis was unavailable (`failure_mode=closed`).
    pub fallback_closed: AtomicU64,
}

impl RateLimitStats {
    /// A copy of the counters: `(allowed, limited, shadow_limited, fallback_local,
    /// fallback_open, fallback_closed)`.
    #[must_use]
    pub fn snapshot(&self) -> [u64; 6] {
        [
            &self.allowed,
            &self.limited,
            &self.shadow_limited,
            &self.fallback_local,
            &self.fallback_open,
            &self.fallback_closed,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// The rate limiter of one process; cheap to clone.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RateLimitConfig,
    redis: Option<Redis>,
    /// Sends this process's decisions to `redis` in batches (present with `redis`).
    batcher: Option<remote::Batcher>,
    local: LocalLimiter,
    stats: RateLimitStats,
}

impl RateLimiter {
    /// A limiter enforcing `config`, in `redis` when given (else in process). With `redis`
    /// it needs a Tokio runtime (the task that batches decisions).
    #[must_use]
    pub fn new(config: RateLimitConfig, redis: Option<Redis>) -> Self {
        let local = LocalLimiter::new(config.local_max_keys, config.longest_period());
        let batcher = redis
            .clone()
            .map(|r| remote::Batcher::start(r, config.redis_timeout()));
        let limiter = Self {
            inner: Arc::new(Inner {
                config,
                redis,
                batcher,
                local,
                stats: RateLimitStats::default(),
            }),
        };
        limiter.expose();
        limiter
    }

    /// Shows the decisions on `/metrics` for as long as this limiter exists.
    fn expose(&self) {
        use umcp_telemetry::metrics::{Sample, register_stats};
        let weak = Arc::downgrade(&self.inner);
        register_stats(move || {
            let Some(inner) = weak.upgrade() else {
                return Vec::new();
            };
            let [allowed, limited, shadow, local, open, closed] = inner.stats.snapshot();
            let help = "rate-limit decisions by outcome";
            [
                ("allowed", allowed),
                ("limited", limited),
                ("shadow_limited", shadow),
                ("fallback_local", local),
                ("fallback_open", open),
                ("fallback_closed", closed),
            ]
            .into_iter()
            .map(|(outcome, n)| {
                Sample::counter("umcp_ratelimit_decisions", help, n).label("outcome", outcome)
            })
            .collect()
        });
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &RateLimitConfig {
        &self.inner.config
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &RateLimitStats {
        &self.inner.stats
    }

    /// Checks one call of `principal` on `class` (and charges it when admitted). Takes at
    /// most `redis_timeout_ms` (plus scheduling): an unavailable Redis is skipped at once.
    pub async fn check(&self, class: &str, principal: &str) -> Verdict {
        let config = &self.inner.config;
        let Some(rule) = config.rule(class).filter(|_| config.enabled) else {
            return Verdict::Unlimited;
        };
        let rate = Rate::new(rule.limit, rule.period());
        let (outcome, source) = match self.remote(class, principal, rate).await {
            Some(Ok(outcome)) => (outcome, Source::Redis),
            None => (self.local(class, principal, rate), Source::Local),
            Some(Err(reason)) => match config.failure_mode {
                FailureMode::Local => {
                    self.count(|s| &s.fallback_local);
                    tracing::debug!(class, reason, "rate limit decided locally");
                    (self.local(class, principal, rate), Source::Local)
                }
                FailureMode::Open => {
                    self.count(|s| &s.fallback_open);
                    tracing::debug!(class, reason, "rate limit skipped (fail open)");
                    let outcome = Outcome {
                        allowed: true,
                        remaining: u64::from(rule.limit),
                        retry_after: Duration::ZERO,
                        reset_after: Duration::ZERO,
                    };
                    (outcome, Source::FailOpen)
                }
                FailureMode::Closed => {
                    self.count(|s| &s.fallback_closed);
                    tracing::debug!(class, reason, "rate limit unavailable (fail closed)");
                    return Verdict::Unavailable { rule };
                }
            },
        };
        if outcome.allowed {
            self.count(|s| &s.allowed);
        } else if rule.shadow {
            self.count(|s| &s.shadow_limited);
        } else {
            self.count(|s| &s.limited);
        }
        Verdict::Checked {
            rule,
            outcome,
            source,
        }
    }

    /// `None` when no Redis is configured; `Some(Err(why))` when it is but did not decide.
    async fn remote(
        &self,
        class: &str,
        principal: &str,
        rate: Rate,
    ) -> Option<Result<Outcome, String>> {
        let redis = self.inner.redis.as_ref()?;
        let batcher = self.inner.batcher.as_ref()?;
        if !redis.is_available() {
            return Some(Err("redis unavailable".to_owned()));
        }
        let key = remote::key(redis, class, principal);
        let timeout = self.inner.config.redis_timeout();
        Some(batcher.check(key, rate, 1, timeout).await)
    }

    fn local(&self, class: &str, principal: &str, rate: Rate) -> Outcome {
        self.inner
            .local
            .check(&format!("{class}:{principal}"), rate, 1)
    }

    fn count(&self, counter: impl FnOnce(&RateLimitStats) -> &AtomicU64) {
        counter(&self.inner.stats).fetch_add(1, Ordering::Relaxed);
    }
}
