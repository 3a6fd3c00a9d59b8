//! Rate limits per method class and principal (issue 9, "Rate limits at the gateway").
//!
//! Every RPC names a `rate_class` in its policy; [`RateLimitConfig`] holds one [`Rule`]
//! (`limit` calls per `period_secs`, burst `limit`) per class. [`RateLimiter`] decides with
//! the GCRA ([`gcra`]): in Redis through one Lua script ([`remote`]) when a Redis is
//! configured (decisions in flight together share one EVALSHA), so every gateway replica
//! draws from one budget per (class, principal); in process otherwise, or when Redis is down
//! and `failure_mode=local`. A decision never waits for Redis longer than `redis_timeout_ms`
//! (≤ 15 ms, queue included), and not at all while Redis is known to be unavailable.
//! [`RateLimitLayer`] applies it to gRPC calls.
//!
//! // why GCRA: one number per key (no window edges that let 2× the limit through), exact
//! under concurrency because the script runs atomically on the node owning the key.

#![warn(missing_docs)]

pub mod config;
pub mod gcra;
pub mod layer;
pub mod limiter;
pub mod remote;

pub use config::{CLASSES, FailureMode, RateLimitConfig, Rule};
pub use gcra::{LocalLimiter, Outcome, Rate};
pub use layer::{RateLimit, RateLimitLayer};
pub use limiter::{RateLimitStats, RateLimiter, Source, Verdict};
