//! Admission control: at most `max_concurrent` sandboxes run, at most `max_queue` requests wait
//! (each at most `queue_timeout`), and one user holds at most `max_per_user` of either.
//! Everything beyond is refused with RESOURCE_EXHAUSTED instead of piling up.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ExecError;

#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
    max_per_user: usize,
    per_user: Mutex<HashMap<String, usize>>,
}

/// Held for the duration of one sandbox run.
#[derive(Debug)]
pub struct Ticket<'a> {
    _permit: OwnedSemaphorePermit,
    _user: UserSlot<'a>,
}

#[derive(Debug)]
struct UserSlot<'a> {
    admission: &'a Admission,
    user: String,
}

impl Drop for UserSlot<'_> {
    fn drop(&mut self) {
        let mut map = self.admission.per_user.lock();
        if let Some(n) = map.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.user);
            }
        }
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(
        max_concurrent: usize,
        max_queue: usize,
        queue_timeout: Duration,
        max_per_user: usize,
    ) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            waiting: AtomicUsize::new(0),
            max_queue,
            queue_timeout,
            max_per_user,
            per_user: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a sandbox slot for `user`, or refuses.
    pub async fn admit(&self, user: &str) -> Result<Ticket<'_>, ExecError> {
        let user_slot = {
            let mut map = self.per_user.lock();
            let n = map.entry(user.to_owned()).or_insert(0);
            if *n >= self.max_per_user {
                return Err(ExecError::ResourceExhausted(format!(
                    "user {user} already has {} sandbox runs in progress (the limit per user); retry when one finishes",
                    self.max_per_user
                )));
            }
            *n += 1;
            UserSlot {
                admission: self,
                user: user.to_owned(),
            }
        };
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(Ticket {
                _permit: permit,
                _user: user_slot,
            });
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ExecError::ResourceExhausted(format!(
                "all sandboxes are busy and {} requests are already queued; retry later",
                self.max_queue
            )));
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(Ticket {
                _permit: permit,
                _user: user_slot,
            }),
            Ok(Err(_closed)) => Err(ExecError::Unavailable(
                "the service is shutting down".into(),
            )),
            Err(_elapsed) => Err(ExecError::ResourceExhausted(format!(
                "no sandbox became free within {} ms; retry later",
                self.queue_timeout.as_millis()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[tokio::test]
    async fn queue_bound_timeout_and_per_user_cap() {
        let a = Admission::new(1, 1, Duration::from_millis(50), 2);
        let first = a.admit("u1").await.expect("free slot");
        // Second request of another user waits, then times out.
        let err = a.admit("u2").await.unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), Code::ResourceExhausted);
        // Per-user cap: u1 holds one; a second is allowed to queue, a third is refused.
        let waiting = a.admit("u1");
        let third = a.admit("u1");
        let (w, t) = tokio::join!(waiting, async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            third.await
        });
        assert!(w.is_err(), "times out in the queue");
        assert!(t.unwrap_err().to_string().contains("per user"));
        drop(first);
        let _again = a.admit("u2").await.expect("slot free again");
    }

    #[tokio::test]
    async fn full_queue_is_refused_immediately() {
        let a = Arc::new(Admission::new(1, 0, Duration::from_secs(5), 10));
        let _held = a.admit("x").await.unwrap();
        let started = std::time::Instant::now();
        assert!(a.admit("y").await.is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
