//! Admission of read queries: a fixed number of slots shared by every caller, and a cap on how
//! many of them one caller may hold or wait for.
//!
//! * The slots bound the queries running at once (each runs in a child with a share of the
//!   memory ceiling), so the slots are what keeps the service under that ceiling.
//! * The per-caller cap keeps one caller from holding every slot: with the defaults (8 slots,
//!   2 per caller) a single caller's runaway queries leave 6 slots to everyone else. A caller
//!   over its cap is refused at once (`ResourceExhausted`) instead of queueing, because queueing
//!   would let it stack up waiters ahead of other callers.
//! * Waiting callers are served in arrival order (tokio's semaphore is FIFO), and since no
//!   caller has more than its cap in the queue, a new caller waits for at most
//!   `slots`-worth of other callers' turns: a fair queue without priorities.
//! * A ticket is released only when the query really stops (the backend moves it into the
//!   work), so a caller cannot cancel and resend to get past its cap while abandoned queries
//!   still run.
//!
//! On `/metrics` (while the store exists): `umcp_store_query_slots` (configured),
//! `umcp_store_query_slots_in_use`, `umcp_store_query_waiting`, and
//! `umcp_store_query_admissions{outcome="admitted|over_caller_cap|deadline"}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::StoreError;

/// Slots and per-caller caps of one store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    per_caller: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
    counters: Arc<Counters>,
}

/// What `/metrics` shows of one store's admission.
#[derive(Debug, Default)]
struct Counters {
    capacity: AtomicU64,
    in_use: AtomicU64,
    waiting: AtomicU64,
    admitted: AtomicU64,
    over_cap: AtomicU64,
    deadline: AtomicU64,
}

/// Counts one waiter for as long as it waits (a cancelled wait included).
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn expose(counters: &Arc<Counters>) {
    use umcp_telemetry::metrics::{Sample, register_stats};
    let weak = Arc::downgrade(counters);
    register_stats(move || {
        let Some(c) = weak.upgrade() else {
            return Vec::new();
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let outcomes = "graph store query admissions by outcome";
        vec![
            Sample::gauge(
                "umcp_store_query_slots",
                "graph store query slots configured",
                load(&c.capacity) as f64,
            ),
            Sample::gauge(
                "umcp_store_query_slots_in_use",
                "graph store query slots held by running queries",
                load(&c.in_use) as f64,
            ),
            Sample::gauge(
                "umcp_store_query_waiting",
                "graph store queries waiting for a slot",
                load(&c.waiting) as f64,
            ),
            Sample::counter("umcp_store_query_admissions", outcomes, load(&c.admitted))
                .label("outcome", "admitted"),
            Sample::counter("umcp_store_query_admissions", outcomes, load(&c.over_cap))
                .label("outcome", "over_caller_cap"),
            Sample::counter("umcp_store_query_admissions", outcomes, load(&c.deadline))
                .label("outcome", "deadline"),
        ]
    });
}

/// Permission to run one query; dropping it frees the slot and the caller's share.
#[derive(Debug)]
pub struct Ticket {
    _slot: OwnedSemaphorePermit,
    _caller: Option<CallerShare>,
    counters: Arc<Counters>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.counters.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct CallerShare {
    held: Arc<Mutex<HashMap<String, usize>>>,
    caller: String,
}

impl Drop for CallerShare {
    fn drop(&mut self) {
        let mut held = self.held.lock();
        if let Some(n) = held.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.caller);
            }
        }
    }
}

impl Admission {
    /// `slots` queries at once (at least 1), of which one caller may hold or wait for
    /// `per_caller` (at least 1, at most `slots`).
    pub fn new(slots: usize, per_caller: usize) -> Self {
        let slots = slots.max(1);
        let counters = Arc::new(Counters::default());
        counters.capacity.store(slots as u64, Ordering::Relaxed);
        expose(&counters);
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            per_caller: per_caller.clamp(1, slots),
            held: Arc::default(),
            counters,
        }
    }

    /// Waits for a slot until `deadline`. `caller` names who asks (the token's subject); `None`
    /// is the service's own work, which takes a slot but no caller share.
    ///
    /// # Errors
    /// [`StoreError::ResourceExhausted`] when the caller already holds or waits for its cap,
    /// [`StoreError::DeadlineExceeded`] when no slot is free before the deadline.
    pub async fn admit(
        &self,
        caller: Option<&str>,
        deadline: Option<Instant>,
    ) -> Result<Ticket, StoreError> {
        // Taken before waiting, so waiters count against the cap too.
        let c = &self.counters;
        let share = caller
            .map(|caller| self.take_share(caller))
            .transpose()
            .inspect_err(|_| {
                c.over_cap.fetch_add(1, Ordering::Relaxed);
            })?;
        let acquire = Arc::clone(&self.slots).acquire_owned();
        c.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&c.waiting);
        let slot = match deadline {
            Some(d) => tokio::time::timeout_at(tokio::time::Instant::from_std(d), acquire)
                .await
                .map_err(|_| {
                    c.deadline.fetch_add(1, Ordering::Relaxed);
                    StoreError::DeadlineExceeded(
                        "no query slot became free before the deadline".into(),
                    )
                })?,
            None => acquire.await,
        }
        .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        drop(waiting);
        c.admitted.fetch_add(1, Ordering::Relaxed);
        c.in_use.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket {
            _slot: slot,
            _caller: share,
            counters: Arc::clone(c),
        })
    }

    fn take_share(&self, caller: &str) -> Result<CallerShare, StoreError> {
        let mut held = self.held.lock();
        let n = held.entry(caller.to_owned()).or_insert(0);
        if *n >= self.per_caller {
            return Err(StoreError::ResourceExhausted(format!(
                "too many concurrent queries for this caller (max {}); wait for one to finish",
                self.per_caller
            )));
        }
        *n += 1;
        Ok(CallerShare {
            held: Arc::clone(&self.held),
            caller: caller.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn soon(ms: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(ms))
    }

    #[tokio::test]
    async fn a_caller_over_its_cap_is_refused_at_once() {
        let admission = Admission::new(8, 2);
        let _a = admission.admit(Some("alice"), None).await.expect("first");
        let _b = admission.admit(Some("alice"), None).await.expect("second");
        let err = admission
            .admit(Some("alice"), None)
            .await
            .expect_err("third");
        assert!(
            matches!(&err, StoreError::ResourceExhausted(m) if m.contains("max 2")),
            "{err:?}"
        );
        // Someone else still gets in.
        admission
            .admit(Some("bob"), soon(100))
            .await
            .expect("another caller is admitted");
    }

    #[tokio::test]
    async fn dropping_a_ticket_frees_the_callers_share() {
        let admission = Admission::new(4, 1);
        let first = admission.admit(Some("alice"), None).await.expect("first");
        assert!(admission.admit(Some("alice"), None).await.is_err());
        drop(first);
        admission
            .admit(Some("alice"), None)
            .await
            .expect("admitted again after the first finished");
        assert!(admission.held.lock().is_empty(), "no share is left behind");
    }

    #[tokio::test]
    async fn waiters_time_out_with_deadline_exceeded() {
        let admission = Admission::new(1, 1);
        let _busy = admission.admit(Some("alice"), None).await.expect("slot");
        let err = admission
            .admit(Some("bob"), soon(30))
            .await
            .expect_err("no slot");
        assert!(matches!(err, StoreError::DeadlineExceeded(_)), "{err:?}");
        // The waiter's share was returned when it gave up.
        assert!(!admission.held.lock().contains_key("bob"));
    }

    #[tokio::test]
    async fn waiters_are_served_in_arrival_order() {
        let admission = Admission::new(1, 1);
        let busy = admission.admit(Some("a"), None).await.expect("slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for name in ["b", "c", "d"] {
            let admission = admission.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let ticket = admission.admit(Some(name), None).await.expect("admitted");
                tx.send(name).expect("send");
                drop(ticket);
            });
            // Let each waiter queue before the next arrives.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(busy);
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(rx.recv().await.expect("served"));
        }
        assert_eq!(order, ["b", "c", "d"]);
    }

    #[tokio::test]
    async fn the_services_own_work_takes_no_caller_share() {
        let admission = Admission::new(2, 1);
        let _a = admission.admit(None, None).await.expect("internal");
        let _b = admission.admit(None, soon(10)).await.expect("internal");
        assert!(admission.held.lock().is_empty());
    }
}
