//! The GCRA as one Lua script in Redis: one key per (class, principal), so every gateway
//! replica draws from the same budget. The script reads the clock of the Redis node that owns
//! the keys (`TIME`), so replicas' clocks do not matter.
//!
//! // why batches: one EVALSHA per call cost ~8 µs of gateway CPU (fred's command, channels,
//! timers) and ~7.5 µs of `redis-server` CPU (a Lua invocation, `TIME`, `GET`, `SET`) on a
//! machine where a whole proxied call costs ~100 µs, i.e. a sixth of the gateway's throughput.
//! Decisions that arrive while [`BATCHES_IN_FLIGHT`] batches are already out wait and leave
//! together in the next one: one EVALSHA, one `TIME`, one `GET` and `SET` per distinct key.
//! Each decision is still evaluated atomically and in arrival order inside Redis, so the
//! budget stays exact across replicas; a call alone on an idle gateway goes out at once.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fred::types::scripts::Script;
use fred::types::{Key, Value};
use tokio::sync::{Semaphore, mpsc, oneshot};
use umcp_redis::{Redis, RedisError};

use crate::gcra::{Outcome, Rate};

/// KEYS the keys of the batch (repeats allowed: one per decision, in order); ARGV interval µs,
/// burst, cost per key. Returns four integers per key: allowed, remaining, retry_after_us,
/// reset_after_us. A repeated key is read once and written once, if any of its decisions was
/// admitted (with the expiry of its last TAT). The TAT is written with `%.0f`: Lua numbers are doubles and `tostring` would print a
/// microsecond timestamp in exponent form.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local admitted = {}
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tats[key]
  if tat == nil then
    local stored = redis.call('GET', key)
    tat = now
    if stored then
      tat = math.max(tonumber(stored), now)
    end
    tats[key] = tat
  end
  local new = tat + interval * cost
  local allow_at = new - interval * burst
  local n = 4 * i
  if now < allow_at then
    out[n - 3] = 0
    out[n - 2] = 0
    out[n - 1] = allow_at - now
    out[n] = tat - now
  else
    tats[key] = new
    admitted[key] = true
    out[n - 3] = 1
    out[n - 2] = math.floor((now - allow_at) / interval)
    out[n - 1] = 0
    out[n] = new - now
  end
end
for key in pairs(admitted) do
  local tat = tats[key]
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
end
return out
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(GCRA_LUA));

/// Batches sent and not yet answered, per limiter: while this many are out, new decisions
/// queue and go together in the next one.
pub const BATCHES_IN_FLIGHT: usize = 2;
/// Decisions in one batch at most (one EVALSHA with this many keys).
pub const MAX_BATCH: usize = 128;

/// The Redis key of (`class`, `principal`): `<prefix>rl:{class}:{principal}`.
#[must_use]
pub fn key(redis: &Redis, class: &str, principal: &str) -> String {
    redis.key(&format!("rl:{class}:{principal}"))
}

/// One decision waiting for its batch.
struct Pending {
    key: String,
    rate: Rate,
    cost: u32,
    reply: oneshot::Sender<Result<Outcome, String>>,
}

/// Sends decisions to Redis in batches; cheap to clone. The batching task ends with the last
/// clone.
#[derive(Debug, Clone)]
pub struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Batcher {
    /// A batcher over `redis`, each batch bounded by `timeout`. Needs a Tokio runtime.
    #[must_use]
    pub fn start(redis: Redis, timeout: Duration) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(redis, pending, timeout));
        Self { queue }
    }

    /// Checks (and, when admitted, charges) `cost` calls against `key`, waiting at most
    /// `timeout` in all (queue and batch).
    ///
    /// # Errors
    /// Why Redis did not decide: its error, the timeout, or the batching task gone.
    pub async fn check(
        &self,
        key: String,
        rate: Rate,
        cost: u32,
        timeout: Duration,
    ) -> Result<Outcome, String> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            key,
            rate,
            cost,
            reply,
        };
        if self.queue.send(pending).is_err() {
            return Err("the rate-limit batcher has stopped".to_owned());
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_dropped)) => Err("the rate-limit batcher has stopped".to_owned()),
            Err(_elapsed) => Err(format!("no rate-limit decision within {timeout:?}")),
        }
    }
}

async fn run(redis: Redis, mut pending: mpsc::UnboundedReceiver<Pending>, timeout: Duration) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = pending.recv().await {
        // Waiting for a slot is what makes batches: decisions queue meanwhile.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // A caller that gave up has decided without Redis: do not charge it.
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let redis = redis.clone();
        tokio::spawn(async move {
            let groups = by_slot(batch, redis.is_clustered());
            futures::future::join_all(groups.into_iter().map(|g| send(&redis, g, timeout))).await;
            drop(slot);
        });
    }
}

/// One group per cluster slot (a script's keys must share one); all together when standalone.
fn by_slot(batch: Vec<Pending>, clustered: bool) -> Vec<Vec<Pending>> {
    if !clustered {
        return vec![batch];
    }
    let mut groups: HashMap<u16, Vec<Pending>> = HashMap::new();
    for p in batch {
        let slot = fred::util::redis_keyslot(p.key.as_bytes());
        groups.entry(slot).or_default().push(p);
    }
    groups.into_values().collect()
}

/// Runs the script for one group and answers each of its callers.
async fn send(redis: &Redis, group: Vec<Pending>, timeout: Duration) {
    let mut keys = Vec::with_capacity(group.len());
    let mut args = Vec::with_capacity(group.len() * 3);
    let mut replies = Vec::with_capacity(group.len());
    for p in group {
        keys.push(Key::from(p.key));
        args.extend([
            Value::Integer(p.rate.interval_us),
            Value::Integer(i64::from(p.rate.limit)),
            Value::Integer(i64::from(p.cost)),
        ]);
        replies.push(p.reply);
    }
    let result = redis
        .call_within("rate_limit", timeout, |client| async move {
            SCRIPT
                .evalsha_with_reload::<Vec<i64>, _, _>(&client, keys, args)
                .await
        })
        .await;
    match result {
        Ok(reply) if reply.len() == replies.len() * 4 => {
            for (chunk, caller) in reply.chunks_exact(4).zip(replies) {
                let _ = caller.send(Ok(outcome(chunk)));
            }
        }
        Ok(reply) => {
            let error = RedisError::Refused {
                op: "rate_limit",
                source: fred::error::Error::new(
                    fred::error::ErrorKind::Parse,
                    format!(
                        "the rate-limit script answered {} integers for {} keys, not four each",
                        reply.len(),
                        replies.len()
                    ),
                ),
            };
            answer_all(replies, &error);
        }
        Err(error) => answer_all(replies, &error),
    }
}

fn answer_all(replies: Vec<oneshot::Sender<Result<Outcome, String>>>, error: &RedisError) {
    let message = error.to_string();
    for caller in replies {
        let _ = caller.send(Err(message.clone()));
    }
}

fn outcome(chunk: &[i64]) -> Outcome {
    let at = |i: usize| chunk.get(i).copied().unwrap_or(0);
    Outcome {
        allowed: at(0) == 1,
        remaining: u64::try_from(at(1)).unwrap_or(0),
        retry_after: micros(at(2)),
        reset_after: micros(at(3)),
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}
