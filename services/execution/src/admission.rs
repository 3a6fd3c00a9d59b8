//! Admission control: at most `max_concurrent` sandboxes run at once and one user runs at most
//! `max_per_user` of them; everything else waits in a bounded queue (`max_queue`) that is served
//! fairly across users — per-user FIFO queues taken in round robin, so one user's burst of a
//! hundred calls delays another user's single call by about one run, not by a hundred.
//!
//! A request is refused (RESOURCE_EXHAUSTED with `retry-after`) only when the queue is full or
//! when the expected wait — its position in the round robin times the recent run time, divided
//! over the slots — cannot fit in what is left of the caller's deadline (or `queue_timeout`
//! when the call has none). A request that is admitted to the queue waits at most that long.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::error::ExecError;

tokio::task_local! {
    /// The caller's deadline, set by the gRPC adapter around each call (so the domain API
    /// does not thread it through every runner).
    static CALL_DEADLINE: Option<Instant>;
}

/// Runs `fut` with `deadline` as the caller's deadline seen by [`Admission::admit`].
pub async fn with_deadline<F: Future>(deadline: Option<Instant>, fut: F) -> F::Output {
    CALL_DEADLINE.scope(deadline, fut).await
}

/// The deadline of the current call, when one was set with [`with_deadline`].
pub fn call_deadline() -> Option<Instant> {
    CALL_DEADLINE.try_with(|d| *d).ok().flatten()
}

/// Run time assumed before any run has finished.
const INITIAL_RUN_ESTIMATE: Duration = Duration::from_millis(50);

/// The bounds of admission (from `ExecutionConfig`).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Sandboxes running at once.
    pub max_concurrent: usize,
    /// Requests waiting at most (over all users).
    pub max_queue: usize,
    /// Longest wait of a call without a deadline (and the cap for calls with one).
    pub queue_timeout: Duration,
    /// Sandboxes one user runs at once.
    pub max_per_user: usize,
}

#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
    /// Moving average of how long a ticket is held, in microseconds.
    avg_run_micros: AtomicU64,
    /// Requests that had to queue, and their waits summed (microseconds), for metrics.
    waits: AtomicU64,
    wait_micros: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    running_per_user: HashMap<String, usize>,
    /// Per-user FIFO queues (only users with waiters have an entry).
    queues: HashMap<String, VecDeque<Waiter>>,
    /// Users with waiters, in the order they are served next.
    ring: VecDeque<String>,
    queued: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

/// Held for the duration of one sandbox run.
#[derive(Debug)]
pub struct Ticket<'a> {
    admission: &'a Admission,
    user: String,
    since: Instant,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.admission.observe(self.since.elapsed());
        self.admission.release(&self.user);
    }
}

/// A queued request; removes itself from the queue when the caller goes away (or times out),
/// and gives back a slot that was granted in the meantime.
struct Queued<'a> {
    admission: &'a Admission,
    user: String,
    id: u64,
    grant: Option<oneshot::Receiver<()>>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let Some(mut grant) = self.grant.take() else {
            return;
        };
        let removed = self.admission.state.lock().remove(&self.user, self.id);
        // Not in the queue any more: a grant was sent under the lock before we took it, so the
        // slot is ours and goes back.
        if !removed && grant.try_recv().is_ok() {
            self.admission.release(&self.user);
        }
    }
}

impl State {
    /// Removes waiter `id` of `user`; false when it is no longer queued (it was granted).
    fn remove(&mut self, user: &str, id: u64) -> bool {
        let Some(queue) = self.queues.get_mut(user) else {
            return false;
        };
        let Some(at) = queue.iter().position(|w| w.id == id) else {
            return false;
        };
        queue.remove(at);
        self.queued -= 1;
        if queue.is_empty() {
            self.queues.remove(user);
            self.ring.retain(|u| u != user);
        }
        true
    }

    fn user_running(&self, user: &str) -> usize {
        self.running_per_user.get(user).copied().unwrap_or(0)
    }

    fn start(&mut self, user: &str) {
        self.running += 1;
        *self.running_per_user.entry(user.to_owned()).or_insert(0) += 1;
    }

    /// Requests served before a new one of `user` in the round robin: all of the user's own
    /// waiters, and from every other user as many as one more than that.
    fn ahead_of_new(&self, user: &str) -> usize {
        let own = self.queues.get(user).map_or(0, VecDeque::len);
        self.queues
            .iter()
            .map(|(u, q)| if u == user { own } else { q.len().min(own + 1) })
            .sum()
    }

    /// Hands free slots to waiters, one user at a time in ring order, skipping users at their
    /// cap. The served user goes to the back of the ring.
    fn dispatch(&mut self, limits: &AdmissionLimits) {
        while self.running < limits.max_concurrent && !self.ring.is_empty() {
            let Some(turn) = (0..self.ring.len())
                .find(|&i| self.user_running(&self.ring[i]) < limits.max_per_user)
            else {
                return;
            };
            let Some(user) = self.ring.remove(turn) else {
                return;
            };
            let Some(queue) = self.queues.get_mut(&user) else {
                continue;
            };
            let Some(waiter) = queue.pop_front() else {
                self.queues.remove(&user);
                continue;
            };
            self.queued -= 1;
            if queue.is_empty() {
                self.queues.remove(&user);
            } else {
                self.ring.push_back(user.clone());
            }
            // The waiter removes itself under this lock before dropping its receiver, so the
            // send only fails for a waiter that is gone for good: the slot stays free.
            if waiter.grant.send(()).is_ok() {
                self.start(&user);
            }
        }
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
            avg_run_micros: AtomicU64::new(INITIAL_RUN_ESTIMATE.as_micros() as u64),
            waits: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
        }
    }

    /// How long a run holds its slot, recently (a moving average).
    pub fn run_estimate(&self) -> Duration {
        Duration::from_micros(self.avg_run_micros.load(Ordering::Relaxed))
    }

    fn observe(&self, held: Duration) {
        let sample = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
        // An exponential average over about the last eight runs; races only lose a sample.
        let old = self.avg_run_micros.load(Ordering::Relaxed);
        let new = old - old / 8 + sample / 8;
        self.avg_run_micros.store(new, Ordering::Relaxed);
    }

    fn release(&self, user: &str) {
        let mut state = self.state.lock();
        state.running = state.running.saturating_sub(1);
        if let Some(n) = state.running_per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                state.running_per_user.remove(user);
            }
        }
        state.dispatch(&self.limits);
    }

    fn ticket(&self, user: &str) -> Ticket<'_> {
        Ticket {
            admission: self,
            user: user.to_owned(),
            since: Instant::now(),
        }
    }

    /// Expected wait of a request with `ahead` requests before it in the queue.
    fn expected_wait(&self, ahead: usize) -> Duration {
        let rounds = (ahead / self.limits.max_concurrent.max(1)) as u32 + 1;
        self.run_estimate().saturating_mul(rounds)
    }

    /// Waits for a sandbox slot for `user` (fairly with every other user), or refuses when the
    /// queue is full or the wait cannot fit in the call's deadline.
    pub async fn admit(&self, user: &str) -> Result<Ticket<'_>, ExecError> {
        let budget = self.wait_budget(call_deadline());
        let (id, grant) = {
            let mut state = self.state.lock();
            if state.queued == 0
                && state.running < self.limits.max_concurrent
                && state.user_running(user) < self.limits.max_per_user
            {
                state.start(user);
                return Ok(self.ticket(user));
            }
            if state.queued >= self.limits.max_queue {
                let wait = self.expected_wait(state.queued);
                return Err(ExecError::Busy {
                    message: format!(
                        "all {} sandboxes are busy and the queue is full ({} requests wait); \
                         retry later",
                        self.limits.max_concurrent, self.limits.max_queue
                    ),
                    retry_after: wait,
                });
            }
            let ahead = state.ahead_of_new(user);
            let wait = self.expected_wait(ahead);
            if wait > budget {
                return Err(ExecError::Busy {
                    message: format!(
                        "all {} sandboxes are busy and {ahead} requests are queued ahead of this \
                         one: the expected wait of {} ms does not fit in the {} ms this call may \
                         wait (its deadline less one run, at most the queue timeout of {} ms); \
                         retry later or with a longer deadline",
                        self.limits.max_concurrent,
                        wait.as_millis(),
                        budget.as_millis(),
                        self.limits.queue_timeout.as_millis()
                    ),
                    retry_after: wait,
                });
            }
            let id = state.next_id;
            state.next_id += 1;
            let (tx, rx) = oneshot::channel();
            let queue = state.queues.entry(user.to_owned()).or_default();
            queue.push_back(Waiter { id, grant: tx });
            if queue.len() == 1 {
                state.ring.push_back(user.to_owned());
            }
            state.queued += 1;
            // A slot may be free while every queued user is at their cap.
            state.dispatch(&self.limits);
            (id, rx)
        };
        let mut queued = Queued {
            admission: self,
            user: user.to_owned(),
            id,
            grant: Some(grant),
        };
        let Some(rx) = queued.grant.as_mut() else {
            return Err(ExecError::Internal(
                "admission waiter lost its grant".into(),
            ));
        };
        let queued_at = Instant::now();
        let waited = tokio::time::timeout(budget, rx).await;
        self.waits.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(queued_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.wait_micros.fetch_add(micros, Ordering::Relaxed);
        match waited {
            Ok(Ok(())) => {
                queued.grant = None;
                Ok(self.ticket(user))
            }
            Ok(Err(_closed)) => Err(ExecError::Unavailable(
                "the service is shutting down".into(),
            )),
            Err(_elapsed) => {
                // Dropping `queued` leaves the queue (or returns a slot granted just now).
                drop(queued);
                Err(ExecError::Busy {
                    message: format!(
                        "no sandbox became free within the {} ms this call may wait; retry later",
                        budget.as_millis()
                    ),
                    retry_after: self.run_estimate(),
                })
            }
        }
    }

    /// How long a call may wait: what its deadline leaves after one run, at most the queue
    /// timeout.
    fn wait_budget(&self, deadline: Option<Instant>) -> Duration {
        let cap = self.limits.queue_timeout;
        match deadline {
            None => cap,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .saturating_sub(self.run_estimate())
                .min(cap),
        }
    }

    /// Requests waiting now (for tests and metrics).
    pub fn queued(&self) -> usize {
        self.state.lock().queued
    }

    /// Requests that had to queue so far, and how long they waited in total.
    pub fn waits(&self) -> (u64, Duration) {
        (
            self.waits.load(Ordering::Relaxed),
            Duration::from_micros(self.wait_micros.load(Ordering::Relaxed)),
        )
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
