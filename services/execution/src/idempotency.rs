//! Idempotency keys: a repeat of a request with the same key by the same user within the TTL
//! returns the stored result instead of running again. Concurrent repeats wait for the first
//! run rather than starting a second one. Failed runs (errors, not results) are not stored.
//! Memory is bounded twice: by the number of keys and by the total size of stored results
//! (outputs can be megabytes); the oldest keys go first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::error::ExecError;

/// Approximate memory held by a stored value.
pub trait Weigh {
    fn weight(&self) -> usize;
}

#[derive(Debug)]
struct Entry<T> {
    fingerprint: [u8; 32],
    created: Instant,
    cell: Arc<OnceCell<T>>,
    /// Set once the value is stored.
    weight: usize,
}

/// Results by `(user, key)`.
#[derive(Debug)]
pub struct IdempotencyStore<T> {
    ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    entries: HashMap<(String, String), Entry<T>>,
    bytes: usize,
}

impl<T> State<T> {
    fn remove(&mut self, id: &(String, String)) {
        if let Some(e) = self.entries.remove(id) {
            self.bytes -= e.weight;
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.created)
            .map(|(k, _)| k.clone());
        if let Some(id) = oldest {
            self.remove(&id);
        }
    }
}

/// Checks the key format: 1–128 characters of `[A-Za-z0-9_.:-]`.
pub fn validate_key(key: &str) -> Result<(), ExecError> {
    let ok = (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ExecError::invalid(
            "idempotency_key must be 1-128 characters of [A-Za-z0-9_.:-]",
        ))
    }
}

impl<T: Clone + Send + Sync + Weigh + 'static> IdempotencyStore<T> {
    pub fn new(ttl: Duration, max_entries: usize, max_bytes: usize) -> Self {
        Self {
            ttl,
            max_entries: max_entries.max(1),
            max_bytes,
            state: Mutex::new(State {
                entries: HashMap::new(),
                bytes: 0,
            }),
        }
    }

    /// Runs `run` once per `(user, key)`; returns the result and whether it was replayed.
    /// `fingerprint` identifies the request: the same key with a different request is refused.
    pub async fn run_once<F, Fut>(
        &self,
        user: &str,
        key: &str,
        fingerprint: [u8; 32],
        run: F,
    ) -> Result<(T, bool), ExecError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ExecError>>,
    {
        let id = (user.to_owned(), key.to_owned());
        let cell = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if state.entries.len() >= self.max_entries {
                let expired: Vec<_> = state
                    .entries
                    .iter()
                    .filter(|(_, e)| now.duration_since(e.created) >= self.ttl)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in expired {
                    state.remove(&k);
                }
            }
            if state.entries.len() >= self.max_entries {
                // Still full of live keys: forget the oldest.
                state.evict_oldest();
            }
            let expired = state
                .entries
                .get(&id)
                .is_some_and(|e| now.duration_since(e.created) >= self.ttl);
            if expired {
                state.remove(&id);
            }
            let entry = state.entries.entry(id.clone()).or_insert_with(|| Entry {
                fingerprint,
                created: now,
                cell: Arc::new(OnceCell::new()),
                weight: 0,
            });
            if entry.fingerprint != fingerprint {
                return Err(ExecError::FailedPrecondition(
                    "idempotency_key was already used for a different request by this user".into(),
                ));
            }
            Arc::clone(&entry.cell)
        };
        let mut ran = false;
        let value = cell
            .get_or_try_init(|| {
                ran = true;
                run()
            })
            .await?
            .clone();
        if ran {
            let weight = value.weight();
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let is_ours = state
                .entries
                .get(&id)
                .is_some_and(|e| Arc::ptr_eq(&e.cell, &cell));
            if let (true, Some(entry)) = (is_ours, state.entries.get_mut(&id)) {
                entry.weight = weight;
                state.bytes += weight;
            }
            while state.bytes > self.max_bytes && !state.entries.is_empty() {
                state.evict_oldest();
            }
        }
        Ok((value, !ran))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Weigh for u32 {
        fn weight(&self) -> usize {
            *self as usize
        }
    }

    #[tokio::test]
    async fn total_size_is_bounded() {
        let store = IdempotencyStore::<u32>::new(Duration::from_secs(60), 100, 100);
        store
            .run_once("u", "a", [1; 32], || async { Ok(60) })
            .await
            .unwrap();
        store
            .run_once("u", "b", [1; 32], || async { Ok(60) })
            .await
            .unwrap();
        // "a" was evicted to make room: it runs again.
        let (_, replayed) = store
            .run_once("u", "a", [1; 32], || async { Ok(60) })
            .await
            .unwrap();
        assert!(!replayed);
        assert!(store.state.lock().unwrap().bytes <= 100);
    }

    #[tokio::test]
    async fn replays_per_user_and_rejects_other_requests() {
        let store = IdempotencyStore::<u32>::new(Duration::from_secs(60), 10, 1 << 20);
        let (v, replayed) = store
            .run_once("u", "k", [1; 32], || async { Ok(7) })
            .await
            .unwrap();
        assert_eq!((v, replayed), (7, false));
        let (v, replayed) = store
            .run_once("u", "k", [1; 32], || async { Ok(8) })
            .await
            .unwrap();
        assert_eq!((v, replayed), (7, true));
        // Another user with the same key runs on its own.
        let (v, _) = store
            .run_once("other", "k", [1; 32], || async { Ok(9) })
            .await
            .unwrap();
        assert_eq!(v, 9);
        assert!(
            store
                .run_once("u", "k", [2; 32], || async { Ok(1) })
                .await
                .is_err()
        );
        // Errors are not stored.
        let r = store
            .run_once("u", "e", [1; 32], || async { Err(ExecError::Cancelled) })
            .await;
        assert!(r.is_err());
        let (v, replayed) = store
            .run_once("u", "e", [1; 32], || async { Ok(3) })
            .await
            .unwrap();
        assert_eq!((v, replayed), (3, false));
    }

    #[tokio::test]
    async fn expired_keys_run_again() {
        let store = IdempotencyStore::<u32>::new(Duration::from_millis(1), 10, 1 << 20);
        store
            .run_once("u", "k", [1; 32], || async { Ok(1) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (v, replayed) = store
            .run_once("u", "k", [1; 32], || async { Ok(2) })
            .await
            .unwrap();
        assert_eq!((v, replayed), (2, false));
        assert!(validate_key("abc:1.2_3-x").is_ok());
        assert!(validate_key("").is_err() && validate_key("a b").is_err());
    }
}
