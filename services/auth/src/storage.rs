//! The auth data as records in its own `GraphStore`: one node per record, identified by the
//! node key, one label per record type, no relationships.
//!
//! | label            | key                         | what                                   |
//! |------------------|-----------------------------|----------------------------------------|
//! | `AuthUser`       | `user_<user id>`            | username, argon2id hash, roles, flags  |
//! | `AuthApiKey`     | `ak_<sha-256 of the key>`   | key id, owner, roles, times, revoked   |
//! | `AuthRefresh`    | `rt_<sha-256 of the token>` | family, expiry, rotated flag           |
//! | `AuthFamily`     | `fam_<session id>`          | user, expiry, revoked flag             |
//! | `AuthRevocation` | `rev_<sha-256 of kind:id>`  | kind, id, revoked_at, expires_at       |
//!
//! Secrets (refresh tokens, API keys) exist only as SHA-256 digests: they are 256-bit random
//! values, so a fast hash is enough and lets the digest itself be the lookup key (hashes are
//! truncated to fit the store's 64-character key rule; 224 bits remain).
//!
//! The store has no compare-and-set, so read-modify-write sequences are serialised by the
//! callers with one process-wide async mutex per concern (see `users`, `refresh`, `api_keys`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use umcp_store::{
    DeleteBatch, GraphStore, Node, NodeInput, Properties, ReadQuery, UpsertBatch, Value,
};

use crate::error::AuthError;

type Result<T> = std::result::Result<T, AuthError>;

/// How long one store query may take before the caller gets `UNAVAILABLE`.
const QUERY_DEADLINE: Duration = Duration::from_secs(10);
/// Rows per page when scanning a label.
const SCAN_PAGE: u32 = 1000;

/// Thin typed access to the store.
#[derive(Debug, Clone)]
pub struct Records {
    store: Arc<dyn GraphStore>,
}

impl Records {
    /// Wraps a store.
    pub fn new(store: Arc<dyn GraphStore>) -> Self {
        Self { store }
    }

    /// Creates or merges one record (a `Value::Null` property removes it).
    pub async fn put(&self, key: &str, label: &str, properties: Properties) -> Result<()> {
        self.store
            .upsert(UpsertBatch {
                nodes: vec![NodeInput {
                    key: key.into(),
                    labels: vec![label.into()],
                    properties,
                }],
                rels: vec![],
            })
            .await?;
        Ok(())
    }

    /// Merges several records in one transaction.
    pub async fn put_many(&self, nodes: Vec<NodeInput>) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        self.store
            .upsert(UpsertBatch {
                nodes,
                rels: vec![],
            })
            .await?;
        Ok(())
    }

    /// One record by key.
    pub async fn get(&self, label: &str, key: &str) -> Result<Option<Node>> {
        let mut params = BTreeMap::new();
        params.insert("key".to_owned(), Value::String(key.into()));
        let mut nodes = self
            .nodes(
                &format!("MATCH (n:{label} {{key: $key}}) RETURN n"),
                params,
                1,
            )
            .await?;
        Ok(nodes.pop())
    }

    /// Records of `label` matching `filter` (a Cypher boolean over `n`, may be empty),
    /// ordered by the string property `order` (a fixed name, never caller input), after the
    /// value `after`, at most `limit` of them.
    pub async fn scan(
        &self,
        label: &str,
        filter: &str,
        mut params: BTreeMap<String, Value>,
        order: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Node>> {
        let mut conditions = Vec::new();
        if !filter.is_empty() {
            conditions.push(format!("({filter})"));
        }
        if let Some(after) = after {
            conditions.push(format!("n.{order} > $after"));
            params.insert("after".into(), Value::String(after.into()));
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let cypher = format!("MATCH (n:{label}){clause} RETURN n ORDER BY n.{order} LIMIT {limit}");
        self.nodes(&cypher, params, limit).await
    }

    /// Every record of `label` matching `filter`, page by page.
    pub async fn scan_all(
        &self,
        label: &str,
        filter: &str,
        params: BTreeMap<String, Value>,
    ) -> Result<Vec<Node>> {
        let mut out: Vec<Node> = Vec::new();
        loop {
            let after = out.last().map(|n| n.key.clone());
            let page = self
                .scan(
                    label,
                    filter,
                    params.clone(),
                    "key",
                    after.as_deref(),
                    SCAN_PAGE,
                )
                .await?;
            let done = page.len() < SCAN_PAGE as usize;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Deletes records by key (missing keys are ignored).
    pub async fn delete(&self, keys: Vec<String>) -> Result<()> {
        for chunk in keys.chunks(umcp_store::limits::MAX_NODES_PER_REQUEST) {
            self.store
                .delete(DeleteBatch {
                    node_keys: chunk.to_vec(),
                    rels: vec![],
                    detach: true,
                })
                .await?;
        }
        Ok(())
    }

    /// Whether any record of `label` exists.
    pub async fn any(&self, label: &str) -> Result<bool> {
        Ok(!self
            .scan(label, "", BTreeMap::new(), "key", None, 1)
            .await?
            .is_empty())
    }

    async fn nodes(
        &self,
        cypher: &str,
        params: BTreeMap<String, Value>,
        limit: u32,
    ) -> Result<Vec<Node>> {
        let result = self
            .store
            .query(ReadQuery {
                cypher: cypher.into(),
                params,
                row_limit: limit.max(1),
                deadline: Some(Instant::now() + QUERY_DEADLINE),
                caller: None,
            })
            .await?;
        result
            .rows
            .into_iter()
            .map(|row| match row.into_iter().next() {
                Some(Value::Node(node)) => Ok(node),
                other => Err(AuthError::Unexpected(format!(
                    "expected a node, got {other:?}"
                ))),
            })
            .collect()
    }
}

/// SHA-256 of a secret as a store key: `<prefix>` + 56 hex digits.
#[must_use]
pub fn digest_key(prefix: &str, secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    format!("{prefix}{}", &hex::encode(digest)[..56])
}

/// Typed property access that reports a malformed record as an internal error.
pub trait NodeExt {
    /// A string property.
    fn string(&self, name: &str) -> Result<String>;
    /// An integer property.
    fn int(&self, name: &str) -> Result<i64>;
    /// An optional integer property.
    fn opt_int(&self, name: &str) -> Option<i64>;
    /// A boolean property (absent = false).
    fn flag(&self, name: &str) -> bool;
}

impl NodeExt for Node {
    fn string(&self, name: &str) -> Result<String> {
        match self.properties.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(corrupt(&self.key, name)),
        }
    }

    fn int(&self, name: &str) -> Result<i64> {
        self.opt_int(name).ok_or_else(|| corrupt(&self.key, name))
    }

    fn opt_int(&self, name: &str) -> Option<i64> {
        match self.properties.get(name) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    fn flag(&self, name: &str) -> bool {
        matches!(self.properties.get(name), Some(Value::Bool(true)))
    }
}

fn corrupt(key: &str, name: &str) -> AuthError {
    AuthError::Unexpected(format!("record {key} has no valid `{name}`"))
}

/// Builds a property map.
#[must_use]
pub fn props<const N: usize>(entries: [(&str, Value); N]) -> Properties {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// An optional integer as a property value (`Null` removes it).
#[must_use]
pub fn opt_int(value: Option<i64>) -> Value {
    value.map_or(Value::Null, Value::Int)
}

#[cfg(test)]
mod tests {
    use super::*;
    use umcp_store::grafeo::{GrafeoConfig, GrafeoStore};

    #[tokio::test]
    async fn put_get_scan_delete_round_trip() {
        let store = GrafeoStore::open(GrafeoConfig::in_memory()).await.unwrap();
        let records = Records::new(Arc::new(store));
        assert!(!records.any("AuthThing").await.unwrap());
        for i in 0..5 {
            records
                .put(
                    &format!("t_{i}"),
                    "AuthThing",
                    props([("n", Value::Int(i)), ("s", Value::String(format!("v{i}")))]),
                )
                .await
                .unwrap();
        }
        let node = records.get("AuthThing", "t_3").await.unwrap().unwrap();
        assert_eq!(node.int("n").unwrap(), 3);
        assert_eq!(node.string("s").unwrap(), "v3");
        assert!(node.string("n").is_err());
        assert!(records.get("AuthOther", "t_3").await.unwrap().is_none());

        let mut params = BTreeMap::new();
        params.insert("min".to_owned(), Value::Int(1));
        let page = records
            .scan(
                "AuthThing",
                "n.n >= $min",
                params.clone(),
                "key",
                Some("t_1"),
                2,
            )
            .await
            .unwrap();
        let keys: Vec<_> = page.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, ["t_2", "t_3"]);
        assert_eq!(
            records
                .scan_all("AuthThing", "n.n >= $min", params)
                .await
                .unwrap()
                .len(),
            4
        );

        records
            .delete(vec!["t_0".into(), "t_9".into()])
            .await
            .unwrap();
        assert_eq!(
            records
                .scan_all("AuthThing", "", BTreeMap::new())
                .await
                .unwrap()
                .len(),
            4
        );
        assert_eq!(digest_key("rt_", "x").len(), 59);
    }
}
