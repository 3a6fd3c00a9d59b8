//! The GCRA as one Lua script in Redis: one key per (class, principal), so every gateway
//! replica draws from the same budget. The script reads the clock of the Redis node that owns
//! the key (`TIME`), so replicas' clocks do not matter.

use std::sync::LazyLock;
use std::time::Duration;

use fred::types::scripts::Script;
use umcp_redis::{Redis, RedisError};

use crate::gcra::{Outcome, Rate};

/// KEYS[1] the key; ARGV interval µs, burst, cost. Returns {allowed, remaining,
/// retry_after_us, reset_after_us}. The TAT is written with `%.0f`: Lua numbers are doubles
/// and `tostring` would print a microsecond timestamp in exponent form.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then
  tat = math.max(tonumber(stored), now)
end
local new = tat + interval * cost
local allow_at = new - interval * burst
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local ttl = math.ceil((new - now) / 1000)
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', ttl)
return {1, math.floor((now - allow_at) / interval), 0, new - now}
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(GCRA_LUA));

/// The Redis key of (`class`, `principal`): `<prefix>rl:{class}:{principal}`.
#[must_use]
pub fn key(redis: &Redis, class: &str, principal: &str) -> String {
    redis.key(&format!("rl:{class}:{principal}"))
}

/// Runs the script for `key` (EVALSHA, loading it on `NOSCRIPT`: every cluster node caches
/// scripts on its own and a restarted node has none), bounded by `timeout`.
///
/// # Errors
/// The Redis error, or [`RedisError::Timeout`] past `timeout`.
pub async fn check(
    redis: &Redis,
    key: String,
    rate: Rate,
    cost: u32,
    timeout: Duration,
) -> Result<Outcome, RedisError> {
    let args = vec![
        rate.interval_us.to_string(),
        rate.limit.to_string(),
        cost.to_string(),
    ];
    let reply = redis
        .call_within("rate_limit", timeout, |client| async move {
            SCRIPT
                .evalsha_with_reload::<Vec<i64>, _, _>(&client, key, args)
                .await
        })
        .await?;
    match reply.as_slice() {
        &[allowed, remaining, retry_after, reset_after] => Ok(Outcome {
            allowed: allowed == 1,
            remaining: u64::try_from(remaining).unwrap_or(0),
            retry_after: micros(retry_after),
            reset_after: micros(reset_after),
        }),
        other => Err(RedisError::Refused {
            op: "rate_limit",
            source: fred::error::Error::new(
                fred::error::ErrorKind::Parse,
                format!("the rate-limit script answered {other:?}, not four integers"),
            ),
        }),
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}
