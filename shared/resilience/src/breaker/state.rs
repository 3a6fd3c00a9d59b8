//! The breaker's state machine, shared by every clone of a client (resilience4j's COUNT_BASED
//! model; its defaults).
//!
//! One short `parking_lot` mutex guards the whole state: a decision reads and writes the
//! state, the window and the half-open probe counts together, and an uncontended lock is tens
//! of nanoseconds, far below the cost of the call it protects. Nothing on the permit or record
//! path allocates; log lines are written after the lock is released.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::error::Open;
use crate::classify::Outcome;

/// Settings, named and defaulted as resilience4j's `CircuitBreakerConfig` (COUNT_BASED).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Calls the closed-state window remembers (default 100).
    pub sliding_window_size: usize,
    /// Calls needed in the window before any decision (default 100; capped at the window size,
    /// as resilience4j does for count-based windows).
    pub minimum_number_of_calls: usize,
    /// Open when at least this percentage of the window failed (default 50).
    pub failure_rate_threshold: f64,
    /// Open when at least this percentage of the window was slow (default 100).
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long is slow (default 60 s).
    pub slow_call_duration_threshold: Duration,
    /// How long the breaker stays open before letting probes through (default 60 s). The
    /// transition happens on the first call after it (resilience4j's default; no timer task).
    pub wait_duration_in_open_state: Duration,
    /// Probes let through in half-open (default 10); their outcomes alone decide.
    pub permitted_number_of_calls_in_half_open_state: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            sliding_window_size: 100,
            minimum_number_of_calls: 100,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration_threshold: Duration::from_secs(60),
            wait_duration_in_open_state: Duration::from_secs(60),
            permitted_number_of_calls_in_half_open_state: 10,
        }
    }
}

impl BreakerConfig {
    /// Checks the ranges; the message names the field.
    ///
    /// # Errors
    /// A zero size or a threshold outside `(0, 100]`.
    pub fn check(&self) -> Result<(), String> {
        if self.sliding_window_size == 0 || self.minimum_number_of_calls == 0 {
            return Err(
                "sliding_window_size and minimum_number_of_calls must be at least 1".into(),
            );
        }
        if self.permitted_number_of_calls_in_half_open_state == 0 {
            return Err("permitted_number_of_calls_in_half_open_state must be at least 1".into());
        }
        for (name, v) in [
            ("failure_rate_threshold", self.failure_rate_threshold),
            ("slow_call_rate_threshold", self.slow_call_rate_threshold),
        ] {
            if !(v > 0.0 && v <= 100.0) {
                return Err(format!("{name} = {v} must be in (0, 100]"));
            }
        }
        Ok(())
    }
}

/// The three states (resilience4j's DISABLED / FORCED_OPEN are not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls pass and are recorded in the sliding window.
    Closed,
    /// Calls are rejected until the wait has passed.
    Open,
    /// A fixed number of probes pass; their outcomes close or re-open the breaker.
    HalfOpen,
}

impl State {
    /// Numeric form for gauges: 0 closed, 1 open, 2 half-open.
    #[must_use]
    pub const fn as_gauge(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

/// A point-in-time view for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerMetrics {
    /// Closed, open or half-open.
    pub state: State,
    /// Percentage of failed calls in the window; `None` below the minimum number of calls.
    pub failure_rate: Option<f64>,
    /// Percentage of slow calls in the window; `None` below the minimum number of calls.
    pub slow_call_rate: Option<f64>,
    /// Calls in the window (closed) or probes finished (half-open).
    pub buffered_calls: usize,
    /// Of those, the failed ones.
    pub failed_calls: usize,
    /// Of those, the ones slower than the slow-call threshold.
    pub slow_calls: usize,
    /// Calls rejected since the breaker was made.
    pub not_permitted_calls: u64,
    /// State changes since the breaker was made.
    pub transitions: u64,
}

/// Count-based ring of outcomes with running totals.
#[derive(Debug)]
struct Window {
    /// Bit 0: failed, bit 1: slow.
    ring: Box<[u8]>,
    head: usize,
    len: usize,
    failed: usize,
    slow: usize,
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

impl Window {
    fn new(size: usize) -> Self {
        Self {
            ring: vec![0; size].into_boxed_slice(),
            head: 0,
            len: 0,
            failed: 0,
            slow: 0,
        }
    }

    fn push(&mut self, flags: u8) {
        let size = self.ring.len();
        if self.len == size {
            let old = self.ring[self.head];
            self.failed -= usize::from(old & FAILED != 0);
            self.slow -= usize::from(old & SLOW != 0);
        } else {
            self.len += 1;
        }
        self.ring[self.head] = flags;
        self.head = (self.head + 1) % size;
        self.failed += usize::from(flags & FAILED != 0);
        self.slow += usize::from(flags & SLOW != 0);
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.failed = 0;
        self.slow = 0;
    }
}

#[derive(Debug, Default)]
struct Probes {
    issued: usize,
    done: usize,
    failed: usize,
    slow: usize,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Bumped on every transition: a call permitted in an earlier state is not recorded in
    /// the current one (a closed-state call ending after the breaker opened says nothing about
    /// the half-open probes).
    generation: u64,
    window: Window,
    probes: Probes,
    opened_at: Instant,
}

#[derive(Debug)]
struct Shared {
    name: Box<str>,
    config: BreakerConfig,
    min_calls: usize,
    inner: Mutex<Inner>,
    not_permitted: AtomicU64,
    transitions: AtomicU64,
}

/// A circuit breaker; clones share the state.
#[derive(Debug, Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

/// The right to make one call; record its outcome with [`Permit::record`]. Dropped unrecorded
/// (a cancelled call), it gives a half-open probe slot back.
#[derive(Debug)]
#[must_use = "a permit records nothing unless `record` is called"]
pub struct Permit {
    breaker: Breaker,
    generation: u64,
    started: Instant,
    done: bool,
}

/// A transition decided under the lock, logged after it.
#[derive(Debug, Clone, Copy)]
struct Transition {
    to: State,
    failure_rate: f64,
    slow_call_rate: f64,
}

fn rate(part: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

impl Breaker {
    /// A closed breaker called `name` (used in logs).
    ///
    /// # Panics
    /// When `config` fails [`BreakerConfig::check`] (a programming error: configs are checked
    /// when the service's configuration is loaded).
    #[must_use]
    pub fn new(name: &str, config: BreakerConfig) -> Self {
        if let Err(e) = config.check() {
            panic!("invalid circuit breaker config for {name}: {e}");
        }
        let min_calls = config
            .minimum_number_of_calls
            .min(config.sliding_window_size);
        let inner = Inner {
            state: State::Closed,
            generation: 0,
            window: Window::new(config.sliding_window_size),
            probes: Probes::default(),
            opened_at: Instant::now(),
        };
        let breaker = Self {
            shared: Arc::new(Shared {
                name: name.into(),
                config,
                min_calls,
                inner: Mutex::new(inner),
                not_permitted: AtomicU64::new(0),
                transitions: AtomicU64::new(0),
            }),
        };
        breaker.expose();
        breaker
    }

    /// Shows this breaker on `/metrics` for as long as it exists.
    fn expose(&self) {
        use umcp_telemetry::metrics::{Sample, register_stats};
        let weak = Arc::downgrade(&self.shared);
        register_stats(move || {
            let Some(shared) = weak.upgrade() else {
                return Vec::new();
            };
            let state = match shared.inner.lock().state {
                State::Closed => 0.0,
                State::HalfOpen => 1.0,
                State::Open => 2.0,
            };
            let name = shared.name.to_string();
            vec![
                Sample::gauge(
                    "umcp_breaker_state",
                    "circuit breaker state: 0 closed, 1 half-open, 2 open",
                    state,
                )
                .label("breaker", name.clone()),
                Sample::counter(
                    "umcp_breaker_rejected",
                    "calls refused by an open breaker",
                    shared.not_permitted.load(Ordering::Relaxed),
                )
                .label("breaker", name.clone()),
                Sample::counter(
                    "umcp_breaker_transitions",
                    "breaker state changes",
                    shared.transitions.load(Ordering::Relaxed),
                )
                .label("breaker", name),
            ]
        });
    }

    /// The breaker's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// Asks to make a call now.
    ///
    /// # Errors
    /// [`Open`] while the breaker is open, or half-open with every probe slot taken.
    pub fn try_acquire(&self) -> Result<Permit, Open> {
        let now = Instant::now();
        let mut transition = None;
        let result = {
            let mut inner = self.shared.inner.lock();
            if inner.state == State::Open
                && now.duration_since(inner.opened_at)
                    >= self.shared.config.wait_duration_in_open_state
            {
                transition = Some(self.enter(&mut inner, State::HalfOpen, 0.0, 0.0, now));
            }
            match inner.state {
                State::Closed => Ok(inner.generation),
                State::HalfOpen
                    if inner.probes.issued
                        < self
                            .shared
                            .config
                            .permitted_number_of_calls_in_half_open_state =>
                {
                    inner.probes.issued += 1;
                    Ok(inner.generation)
                }
                State::HalfOpen | State::Open => Err(Open),
            }
        };
        if let Some(t) = transition {
            self.log(t);
        }
        match result {
            Ok(generation) => Ok(Permit {
                breaker: self.clone(),
                generation,
                started: now,
                done: false,
            }),
            Err(open) => {
                self.shared.not_permitted.fetch_add(1, Ordering::Relaxed);
                Err(open)
            }
        }
    }

    /// The current state and window counts.
    #[must_use]
    pub fn metrics(&self) -> BreakerMetrics {
        let inner = self.shared.inner.lock();
        let (total, failed, slow, decided) = match inner.state {
            State::HalfOpen => (
                inner.probes.done,
                inner.probes.failed,
                inner.probes.slow,
                inner.probes.done > 0,
            ),
            _ => (
                inner.window.len,
                inner.window.failed,
                inner.window.slow,
                inner.window.len >= self.shared.min_calls,
            ),
        };
        BreakerMetrics {
            state: inner.state,
            failure_rate: decided.then(|| rate(failed, total)),
            slow_call_rate: decided.then(|| rate(slow, total)),
            buffered_calls: total,
            failed_calls: failed,
            slow_calls: slow,
            not_permitted_calls: self.shared.not_permitted.load(Ordering::Relaxed),
            transitions: self.shared.transitions.load(Ordering::Relaxed),
        }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> State {
        self.shared.inner.lock().state
    }

    /// While open: how long until calls are let through again (zero when the next call will
    /// be a half-open probe). `None` when not open. Lets a background sender wait instead of
    /// spinning against the breaker.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        let inner = self.shared.inner.lock();
        (inner.state == State::Open).then(|| {
            self.shared
                .config
                .wait_duration_in_open_state
                .saturating_sub(inner.opened_at.elapsed())
        })
    }

    fn trips(&self, total: usize, failed: usize, slow: usize) -> Option<(f64, f64)> {
        let (f, s) = (rate(failed, total), rate(slow, total));
        let c = &self.shared.config;
        (f >= c.failure_rate_threshold || s >= c.slow_call_rate_threshold).then_some((f, s))
    }

    fn enter(&self, inner: &mut Inner, to: State, f: f64, s: f64, now: Instant) -> Transition {
        inner.state = to;
        inner.generation += 1;
        inner.window.clear();
        inner.probes = Probes::default();
        if to == State::Open {
            inner.opened_at = now;
        }
        self.shared.transitions.fetch_add(1, Ordering::Relaxed);
        Transition {
            to,
            failure_rate: f,
            slow_call_rate: s,
        }
    }

    fn record(&self, generation: u64, outcome: Outcome, elapsed: Duration) {
        let slow = elapsed >= self.shared.config.slow_call_duration_threshold;
        let flags = u8::from(outcome == Outcome::Failure) * FAILED + u8::from(slow) * SLOW;
        let now = Instant::now();
        let transition = {
            let mut inner = self.shared.inner.lock();
            if inner.generation != generation {
                return;
            }
            match inner.state {
                State::Closed if outcome != Outcome::Ignore => {
                    inner.window.push(flags);
                    let w = &inner.window;
                    if w.len >= self.shared.min_calls
                        && let Some((f, s)) = self.trips(w.len, w.failed, w.slow)
                    {
                        Some(self.enter(&mut inner, State::Open, f, s, now))
                    } else {
                        None
                    }
                }
                State::HalfOpen if outcome == Outcome::Ignore => {
                    inner.probes.issued -= 1;
                    None
                }
                State::HalfOpen => {
                    let p = &mut inner.probes;
                    p.done += 1;
                    p.failed += usize::from(flags & FAILED != 0);
                    p.slow += usize::from(flags & SLOW != 0);
                    let (done, failed, slow) = (p.done, p.failed, p.slow);
                    if done
                        < self
                            .shared
                            .config
                            .permitted_number_of_calls_in_half_open_state
                    {
                        None
                    } else if let Some((f, s)) = self.trips(done, failed, slow) {
                        Some(self.enter(&mut inner, State::Open, f, s, now))
                    } else {
                        let (f, s) = (rate(failed, done), rate(slow, done));
                        Some(self.enter(&mut inner, State::Closed, f, s, now))
                    }
                }
                State::Closed | State::Open => None,
            }
        };
        if let Some(t) = transition {
            self.log(t);
        }
    }

    fn release(&self, generation: u64) {
        let mut inner = self.shared.inner.lock();
        if inner.generation == generation && inner.state == State::HalfOpen {
            inner.probes.issued -= 1;
        }
    }

    fn log(&self, t: Transition) {
        let name = &*self.shared.name;
        match t.to {
            State::Open => tracing::warn!(
                breaker = name,
                failure_rate = t.failure_rate,
                slow_call_rate = t.slow_call_rate,
                wait_ms = self.shared.config.wait_duration_in_open_state.as_millis() as u64,
                "circuit breaker opened"
            ),
            State::HalfOpen => tracing::info!(breaker = name, "circuit breaker half-open"),
            State::Closed => tracing::info!(
                breaker = name,
                failure_rate = t.failure_rate,
                slow_call_rate = t.slow_call_rate,
                "circuit breaker closed"
            ),
        }
    }
}

impl Permit {
    /// Records the call's outcome; its duration is measured from the permit.
    pub fn record(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker
            .record(self.generation, outcome, self.started.elapsed());
    }

    /// When the call started.
    #[must_use]
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.release(self.generation);
        }
    }
}
