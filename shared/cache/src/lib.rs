//! A two-tier cache: a byte-bounded moka L1 in each process over a Redis L2 shared by the
//! replicas, invalidated by a per-namespace generation number.
//!
//! // why generations and not RESP3 client tracking: fred enables `CLIENT TRACKING` on one
//! cluster node only, and each master invalidates only its own keys. One counter per
//! namespace (`<prefix><namespace>:gen`) is part of every key instead: a write INCRs it and
//! publishes the new value; every replica follows the channel with one subscriber and also
//! re-reads the counter every `generation_poll_ms`, since pub/sub messages can be lost. A
//! replica that has not confirmed its generation within `max_staleness_ms` serves only L1
//! entries younger than that, so an acknowledged write is never answered stale for longer.
//!
//! // why two maps in L1: hits are served by `quick_cache` (a shard read lock and a reference
//! bit; moka applies its read log in every 64th reader, which put a hit's p99 at 2 µs), and
//! moka's `try_get_with` only coalesces concurrent misses of one key (its entries live for
//! one load: the loader's answer moves into the hit map before the flight ends).
//!
//! Redis failing costs no errors: reads fall back to L1 and the loader with the short
//! `degraded_ttl_ms`; every Redis call is bounded by `umcp_redis`'s command timeout and breaker.
//! Without Redis configured the process is its own only replica: its local generation is exact,
//! so entries keep their normal TTL.

#![warn(missing_docs)]

mod config;
mod generation;
mod l1;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use umcp_redis::Redis;
use umcp_redis::fred::interfaces::KeysInterface;
use umcp_redis::fred::types::Expiration;

pub use config::CacheConfig;

use generation::GenState;
use l1::{HitMap, KeyRef, L1Key, hit_map, spawn_sweeper};

/// What a loader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// The value, as bytes.
    Found(Bytes),
    /// Nothing there: cached for `negative_ttl_ms`.
    Missing,
}

/// Counters since start (for metrics); a snapshot from [`TwoTier::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Answers from this process's L1 (coalesced waiters of one load included).
    pub l1_hits: u64,
    /// Answers from Redis.
    pub l2_hits: u64,
    /// Lookups that found nothing in either tier.
    pub misses: u64,
    /// Loader calls.
    pub loads: u64,
    /// Loader calls that failed (never cached).
    pub load_errors: u64,
    /// Generation bumps asked for by writes through this instance.
    pub invalidations: u64,
    /// Redis calls that failed (each one was answered without Redis).
    pub redis_errors: u64,
    /// The generation this instance serves.
    pub generation: u64,
    /// Weighted size of L1 in bytes (approximate; moka settles it lazily).
    pub l1_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
    invalidations: AtomicU64,
    redis_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One cached answer.
#[derive(Debug, Clone)]
struct Entry {
    /// `None`: the loader said "missing".
    value: Option<Bytes>,
    /// When the load (or L2 read) that produced it started: its content is at least this new.
    started: Instant,
    /// When it stops answering: insertion plus the positive, negative or degraded TTL.
    expires: Instant,
}

/// Loads of distinct keys that may be in flight in one process before moka evicts the
/// bookkeeping of the oldest (its waiters then load again; nothing is lost).
const MAX_FLIGHTS: u64 = 10_000;

/// The cache; cheap to clone. Background tasks (generation poller, subscriber) stop when the
/// last clone is dropped.
#[derive(Clone)]
pub struct TwoTier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TwoTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoTier")
            .field("namespace", &self.inner.namespace)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    namespace: String,
    config: CacheConfig,
    /// Answers, bounded by `max_bytes`.
    l1: HitMap,
    /// Loads in flight, one per key: concurrent misses wait for the first one's answer.
    flights: moka::future::Cache<L1Key, Entry>,
    redis: Option<Redis>,
    /// `<prefix><namespace>:gen`.
    gen_key: String,
    /// `<prefix><namespace>:gen:changed`.
    channel: String,
    state: parking_lot::Mutex<GenState>,
    counters: Counters,
}

impl TwoTier {
    /// A cache for `namespace` (part of every Redis key and the generation's name), over
    /// `redis` when given. With Redis, starts the generation poller and the pub/sub subscriber
    /// (a Redis that is down is retried in the background, never an error).
    pub async fn new(namespace: &str, config: CacheConfig, redis: Option<Redis>) -> Self {
        let l1 = hit_map(config.max_bytes);
        let flights = moka::future::Cache::builder()
            .max_capacity(MAX_FLIGHTS)
            // Waiters get the answer when the flight lands; a flight whose leader was dropped
            // before clearing it must not serve past the staleness bound.
            .time_to_live(config.max_staleness())
            .build();
        let (gen_key, channel) = match &redis {
            Some(r) => (
                r.key(&format!("{namespace}:gen")),
                r.key(&format!("{namespace}:gen:changed")),
            ),
            None => (String::new(), String::new()),
        };
        let inner = Arc::new(Inner {
            namespace: namespace.to_owned(),
            config,
            l1,
            flights,
            redis,
            gen_key,
            channel,
            state: parking_lot::Mutex::new(GenState::new()),
            counters: Counters::default(),
        });
        spawn_sweeper(&inner);
        if inner.redis.is_some() && inner.config.enabled {
            inner.refresh_generation().await;
            generation::spawn_poller(&inner);
            generation::spawn_subscriber(&inner);
        }
        let cache = Self { inner };
        cache.expose();
        cache
    }

    /// Shows this cache's counters on `/metrics` for as long as it exists.
    fn expose(&self) {
        use umcp_telemetry::metrics::{Sample, register_stats};
        let weak = Arc::downgrade(&self.inner);
        register_stats(move || {
            let Some(inner) = weak.upgrade() else {
                return Vec::new();
            };
            let namespace = inner.namespace.clone();
            let s = Self { inner }.stats();
            let hits = "cache answers by tier";
            vec![
                Sample::counter("umcp_cache_hits", hits, s.l1_hits).label("tier", "l1"),
                Sample::counter("umcp_cache_hits", hits, s.l2_hits).label("tier", "l2"),
                Sample::counter(
                    "umcp_cache_misses",
                    "lookups found in neither tier",
                    s.misses,
                ),
                Sample::counter("umcp_cache_loads", "loader calls", s.loads),
                Sample::counter(
                    "umcp_cache_load_errors",
                    "loader calls that failed",
                    s.load_errors,
                ),
                Sample::counter(
                    "umcp_cache_invalidations",
                    "generation bumps by writes",
                    s.invalidations,
                ),
                Sample::counter(
                    "umcp_cache_redis_errors",
                    "redis calls answered without redis",
                    s.redis_errors,
                ),
                Sample::gauge(
                    "umcp_cache_l1_bytes",
                    "weighted size of L1",
                    s.l1_bytes as f64,
                ),
            ]
            .into_iter()
            .map(|sample| sample.label("namespace", namespace.clone()))
            .collect()
        });
    }

    /// The value of `key`: from L1, else from L2, else from `load` (concurrent misses of one
    /// key in this process share one load). `Ok(None)` is a (possibly cached) "missing".
    ///
    /// # Errors
    /// The loader's error, shared by every caller that waited for that load; errors are never
    /// cached.
    pub async fn get_with<E, F, Fut>(&self, key: &str, load: F) -> Result<Option<Bytes>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded, E>>,
        E: Send + Sync + 'static,
    {
        let inner = &self.inner;
        if !inner.config.enabled {
            bump(&inner.counters.loads);
            return match load().await {
                Ok(loaded) => Ok(into_value(loaded)),
                Err(e) => {
                    bump(&inner.counters.load_errors);
                    Err(Arc::new(e))
                }
            };
        }
        let (generation, confirmed) = inner.view();
        let lookup = KeyRef { generation, key };
        if let Some(value) = inner.hit(lookup, confirmed) {
            bump(&inner.counters.l1_hits);
            return Ok(value);
        }
        let owned = lookup.to_owned_key();
        // `led`: this caller ran the flight; `loaded`: and called the loader.
        let (led, loaded) = (AtomicBool::new(false), AtomicBool::new(false));
        let result = inner
            .flights
            .try_get_with(owned.clone(), async {
                led.store(true, Ordering::Relaxed);
                // A flight that ended between the lookup above and here answered already.
                if let Some(entry) = inner.l1.get(&lookup).filter(|e| inner.servable(e, false)) {
                    return Ok(entry);
                }
                loaded.store(true, Ordering::Relaxed);
                let entry = inner.fill(generation, key, load).await?;
                inner.l1.insert(owned.clone(), entry.clone());
                Ok(entry)
            })
            .await;
        if led.load(Ordering::Relaxed) {
            // The answer is in `l1` now (where staleness is checked on every read); a flight's
            // entry must not outlive its waiters.
            inner.flights.invalidate(&owned).await;
        }
        if result.is_ok() && !loaded.load(Ordering::Relaxed) {
            // another caller's load answered this one
            bump(&inner.counters.l1_hits);
        }
        result.map(|entry| entry.value)
    }

    /// Makes every cached answer of this namespace stale, on every replica: INCRs the
    /// generation in Redis and publishes it. Returns once this replica serves the new
    /// generation (so a caller that acknowledges a write after it never answers stale itself).
    /// Redis failing: L1 is cleared here and other replicas age out within their bound.
    pub async fn invalidate_all(&self) {
        let inner = &self.inner;
        bump(&inner.counters.invalidations);
        match &inner.redis {
            None => {
                inner.state.lock().bump_local();
                inner.clear_l1();
            }
            Some(redis) => inner.bump_shared(redis).await,
        }
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            l1_hits: load(&c.l1_hits),
            l2_hits: load(&c.l2_hits),
            misses: load(&c.misses),
            loads: load(&c.loads),
            load_errors: load(&c.load_errors),
            invalidations: load(&c.invalidations),
            redis_errors: load(&c.redis_errors),
            generation: self.inner.generation(),
            l1_bytes: self.inner.l1.weight(),
        }
    }

    /// The Redis key of the generation (`<prefix><namespace>:gen`), empty without Redis.
    #[must_use]
    pub fn generation_key(&self) -> &str {
        &self.inner.gen_key
    }

    /// The Redis key under which `key` is cached in L2 now (for tests and operators).
    #[must_use]
    pub fn l2_key(&self, key: &str) -> Option<String> {
        let redis = self.inner.redis.as_ref()?;
        Some(self.inner.l2_key(redis, self.inner.generation(), key))
    }
}

fn into_value(loaded: Loaded) -> Option<Bytes> {
    match loaded {
        Loaded::Found(bytes) => Some(bytes),
        Loaded::Missing => None,
    }
}

/// L2 encoding: one tag byte (1 found, 0 missing), then the value.
fn encode(value: Option<&Bytes>) -> Vec<u8> {
    match value {
        Some(bytes) => {
            let mut out = Vec::with_capacity(bytes.len() + 1);
            out.push(1);
            out.extend_from_slice(bytes);
            out
        }
        None => vec![0],
    }
}

fn decode(raw: &[u8]) -> Option<Option<Bytes>> {
    match raw.split_first() {
        Some((1, rest)) => Some(Some(Bytes::copy_from_slice(rest))),
        Some((0, [])) => Some(None),
        _ => None,
    }
}

impl Inner {
    fn l2_key(&self, redis: &Redis, generation: u64, key: &str) -> String {
        redis.key(&format!("{}:v:{generation}:{key}", self.namespace))
    }

    /// The generation to serve, and whether it needs no further check: confirmed within the
    /// staleness bound, or local (no Redis). One lock per lookup.
    fn view(&self) -> (u64, bool) {
        let state = self.state.lock();
        let confirmed = self.redis.is_none() || state.confirmed_within(self.config.max_staleness());
        (state.generation(), confirmed)
    }

    /// An L1 answer for `lookup`, if one may be served; a stale or expired one is dropped.
    fn hit(&self, lookup: KeyRef<'_>, confirmed: bool) -> Option<Option<Bytes>> {
        let entry = self.l1.get(&lookup)?;
        if self.servable(&entry, confirmed) {
            return Some(entry.value);
        }
        self.l1.remove(&lookup);
        None
    }

    /// Whether an L1 entry of the current generation may answer: not once expired; always
    /// when the generation was confirmed within the staleness bound (or is local); else only
    /// when the entry itself is younger than the bound.
    fn servable(&self, entry: &Entry, confirmed: bool) -> bool {
        let now = Instant::now();
        if now >= entry.expires {
            return false;
        }
        if confirmed {
            return true;
        }
        let (_, confirmed) = self.view();
        confirmed || now.saturating_duration_since(entry.started) <= self.config.max_staleness()
    }

    /// Forgets every L1 answer (and the bookkeeping of loads in flight: their answers, of an
    /// older generation, land under keys nobody looks up any more).
    pub(crate) fn clear_l1(&self) {
        self.l1.clear();
        self.flights.invalidate_all();
    }

    /// L2, then the loader; writes a loaded answer back to L2 in the background.
    async fn fill<E, F, Fut>(
        self: &Arc<Self>,
        generation: u64,
        key: &str,
        load: F,
    ) -> Result<Entry, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded, E>>,
    {
        let started = Instant::now();
        // Only a configured Redis that fails degrades: without one the local generation is exact.
        let mut degraded = false;
        if let Some(redis) = &self.redis {
            let l2_key = self.l2_key(redis, generation, key);
            let got = redis
                .call("cache.get", |c| async move {
                    c.get::<Option<Vec<u8>>, _>(l2_key).await
                })
                .await;
            match got {
                Ok(Some(raw)) => {
                    if let Some(value) = decode(&raw) {
                        bump(&self.counters.l2_hits);
                        let ttl = if value.is_some() {
                            self.config.ttl()
                        } else {
                            self.config.negative_ttl()
                        };
                        return Ok(Entry {
                            value,
                            started,
                            expires: Instant::now() + ttl,
                        });
                    }
                    tracing::warn!(namespace = %self.namespace, "undecodable l2 entry; reloading");
                }
                Ok(None) => {}
                Err(error) => {
                    bump(&self.counters.redis_errors);
                    tracing::debug!(namespace = %self.namespace, %error, "l2 read failed; loading");
                    degraded = true;
                }
            }
        }
        bump(&self.counters.misses);
        bump(&self.counters.loads);
        let loaded = load()
            .await
            .inspect_err(|_| bump(&self.counters.load_errors))?;
        let value = into_value(loaded);
        let mut ttl = if value.is_some() {
            self.config.ttl()
        } else {
            self.config.negative_ttl()
        };
        if degraded {
            ttl = ttl.min(self.config.degraded_ttl());
        } else if let Some(redis) = &self.redis {
            self.write_back(
                redis,
                self.l2_key(redis, generation, key),
                value.as_ref(),
                ttl,
            );
        }
        Ok(Entry {
            value,
            started,
            expires: Instant::now() + ttl,
        })
    }

    /// SET PX in the background: the caller has its answer already.
    fn write_back(
        self: &Arc<Self>,
        redis: &Redis,
        l2_key: String,
        value: Option<&Bytes>,
        ttl: Duration,
    ) {
        let redis = redis.clone();
        let this = Arc::clone(self);
        let raw = encode(value);
        let px = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        tokio::spawn(async move {
            let set = redis
                .call("cache.set", |c| async move {
                    c.set::<(), _, _>(l2_key, raw, Some(Expiration::PX(px)), None, false)
                        .await
                })
                .await;
            if let Err(error) = set {
                bump(&this.counters.redis_errors);
                tracing::debug!(%error, "l2 write failed");
            }
        });
    }
}
