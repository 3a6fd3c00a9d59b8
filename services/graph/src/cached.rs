//! [`CachedStore`]: query and metrics answers through the two-tier cache, invalidated by
//! every write.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use umcp_cache::{Loaded, TwoTier};
use umcp_store::{
    DeleteBatch, DeleteCounts, GraphStore, Metrics, QueryResult, ReadQuery, StoreError,
    UpsertBatch, UpsertCounts,
};

/// A [`GraphStore`] that answers `query` and `metrics` from a [`TwoTier`] cache under the
/// namespace's generation, and bumps the generation after every `upsert` and `delete` before
/// returning, so an acknowledged write is never answered stale beyond the cache's bound.
/// Errors are never cached.
///
/// // why cached answers skip admission: a hit costs no query child, so it needs no slot.
#[derive(Debug, Clone)]
pub struct CachedStore {
    inner: Arc<dyn GraphStore>,
    cache: TwoTier,
}

impl CachedStore {
    /// Caches the answers of `inner` in `cache`.
    pub fn new(inner: Arc<dyn GraphStore>, cache: TwoTier) -> Self {
        Self { inner, cache }
    }

    /// The cache (for its counters).
    pub fn cache(&self) -> &TwoTier {
        &self.cache
    }

    async fn cached<T, F, Fut>(&self, key: &str, load: F) -> Result<T, StoreError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let got = self
            .cache
            .get_with(key, || async {
                let value = load().await?;
                let bytes = serde_json::to_vec(&value)
                    .map_err(|e| StoreError::Internal(format!("cannot encode a result: {e}")))?;
                Ok::<_, StoreError>(Loaded::Found(Bytes::from(bytes)))
            })
            .await
            .map_err(|shared| (*shared).clone())?;
        let Some(bytes) = got else {
            return Err(StoreError::Internal("cached answer is missing".into()));
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Internal(format!("cannot decode a cached result: {e}")))
    }
}

#[async_trait]
impl GraphStore for CachedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn upsert(&self, batch: UpsertBatch) -> Result<UpsertCounts, StoreError> {
        let result = self.inner.upsert(batch).await;
        // a failed batch may still have been applied in part by a backend; bump either way
        self.cache.invalidate_all().await;
        result
    }

    async fn query(&self, query: ReadQuery) -> Result<QueryResult, StoreError> {
        let key = query_key(&query);
        let ran = AtomicBool::new(false);
        let shared = self
            .cached(&key, || {
                ran.store(true, Ordering::Relaxed);
                self.inner.query(query.clone())
            })
            .await;
        match shared {
            // Identical concurrent queries share one load, run under the first caller's
            // deadline and admission share; a waiter is not given those errors but runs the
            // query itself, under its own.
            Err(StoreError::DeadlineExceeded(_) | StoreError::ResourceExhausted(_))
                if !ran.load(Ordering::Relaxed) =>
            {
                self.inner.query(query).await
            }
            other => other,
        }
    }

    async fn delete(&self, batch: DeleteBatch) -> Result<DeleteCounts, StoreError> {
        let result = self.inner.delete(batch).await;
        self.cache.invalidate_all().await;
        result
    }

    async fn metrics(&self) -> Result<Metrics, StoreError> {
        self.cached("metrics", || self.inner.metrics()).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }
}

/// `q:` + SHA-256 of (normalised Cypher, canonical parameters, row limit): a fixed-size key
/// whatever the query's length (Cypher may be 64 KiB). Parameters are a `BTreeMap`, so their
/// JSON is in key order.
pub(crate) fn query_key(query: &ReadQuery) -> String {
    let mut hash = Sha256::new();
    hash.update(normalise_cypher(&query.cypher).as_bytes());
    hash.update([0]);
    hash.update(serde_json::to_vec(&query.params).unwrap_or_default());
    hash.update([0]);
    hash.update(query.row_limit.to_le_bytes());
    let mut key = String::with_capacity(66);
    key.push_str("q:");
    for byte in hash.finalize() {
        let _ = write!(key, "{byte:02x}");
    }
    key
}

/// Collapses runs of whitespace to one space and trims, outside string literals and
/// backquoted names (whose whitespace is content: `'a  b'` and `'a b'` are different queries).
pub(crate) fn normalise_cypher(cypher: &str) -> String {
    let mut out = String::with_capacity(cypher.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut pending_space = false;
    for c in cypher.chars() {
        if let Some(q) = quote {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' && q != '`' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        if matches!(c, '\'' | '"' | '`') {
            quote = Some(c);
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn read(cypher: &str, limit: u32) -> ReadQuery {
        ReadQuery {
            cypher: cypher.into(),
            params: BTreeMap::new(),
            row_limit: limit,
            deadline: None,
            caller: None,
        }
    }

    #[test]
    fn whitespace_outside_literals_does_not_matter() {
        assert_eq!(
            normalise_cypher("  MATCH (n)\n\t RETURN   n  "),
            "MATCH (n) RETURN n"
        );
        assert_eq!(
            normalise_cypher("RETURN 'a  b', \"c\\\"  d\", `x  y`"),
            "RETURN 'a  b', \"c\\\"  d\", `x  y`"
        );
        assert_eq!(
            query_key(&read("MATCH (n)  RETURN n", 10)),
            query_key(&read("MATCH (n) RETURN n", 10))
        );
        assert_ne!(
            query_key(&read("RETURN 'a  b'", 10)),
            query_key(&read("RETURN 'a b'", 10))
        );
        assert_ne!(
            query_key(&read("MATCH (n) RETURN n", 10)),
            query_key(&read("MATCH (n) RETURN n", 11))
        );
    }
}
