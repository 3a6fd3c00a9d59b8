//! Idempotency keys: a repeat of a request with the same key by the same user within the TTL
//! returns the stored result instead of running again. Concurrent repeats wait for the first
//! run rather than starting a second one (moka's `try_get_with` loads once per key). Failed runs
//! (errors, not results) are not stored. Memory is bounded twice: by the total size of stored
//! results (outputs can be megabytes) and by the number of keys — each entry weighs at least
//! `max_bytes / max_entries`, so no more than `max_entries` fit; moka evicts by TinyLFU.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ExecError;

/// Approximate memory held by a stored value.
pub trait Weigh {
    fn weight(&self) -> usize;
}

#[derive(Debug)]
struct Stored<T> {
    /// Identifies the request that produced the value: the same key with another request is
    /// refused.
    fingerprint: [u8; 32],
    value: T,
}

/// Results by `(user, key)`.
pub struct IdempotencyStore<T> {
    cache: moka::future::Cache<(String, String), Arc<Stored<T>>>,
}

impl<T> std::fmt::Debug for IdempotencyStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyStore").finish_non_exhaustive()
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
        let floor = (max_bytes / max_entries.max(1)).max(1);
        let cache = moka::future::Cache::builder()
            .time_to_live(ttl)
            .max_capacity(u64::try_from(max_bytes).unwrap_or(u64::MAX))
            .weigher(move |_key, stored: &Arc<Stored<T>>| {
                u32::try_from(stored.value.weight().max(floor)).unwrap_or(u32::MAX)
            })
            .build();
        Self { cache }
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
        let mut ran = false;
        let load = async {
            ran = true;
            let value = run().await?;
            Ok::<_, ExecError>(Arc::new(Stored { fingerprint, value }))
        };
        let stored = self
            .cache
            .try_get_with((user.to_owned(), key.to_owned()), load)
            .await
            .map_err(|shared| Arc::try_unwrap(shared).unwrap_or_else(|e| (*e).clone()))?;
        if stored.fingerprint != fingerprint {
            return Err(ExecError::FailedPrecondition(
                "idempotency_key was already used for a different request by this user".into(),
            ));
        }
        Ok((stored.value.clone(), !ran))
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
        store.cache.run_pending_tasks().await;
        assert!(store.cache.weighted_size() <= 100);
        // One of the two had to go: both cannot replay.
        let (_, a) = store
            .run_once("u", "a", [1; 32], || async { Ok(60) })
            .await
            .unwrap();
        let (_, b) = store
            .run_once("u", "b", [1; 32], || async { Ok(60) })
            .await
            .unwrap();
        assert!(!(a && b));
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
