//! Rotating refresh tokens grouped in families (one per login; the family id is the access
//! token's `sid`).
//!
//! A refresh token is `umcp_rt_` + 256 random bits; only its SHA-256 is stored. Using a token
//! marks it rotated and issues its successor; presenting a rotated token again means it was
//! copied, so the whole family is revoked (RFC 9700 reuse detection). Rotation is a
//! read-modify-write without compare-and-set in the store, so all of it runs under one
//! process-wide async mutex: two concurrent uses of one token cannot both succeed.

use std::collections::BTreeMap;
use std::time::Duration;

use umcp_store::{NodeInput, Value};

use crate::clock::now_micros;
use crate::error::AuthError;
use crate::secrets;
use crate::storage::{NodeExt, Records, digest_key, props};
use crate::validate::new_id;

type Result<T> = std::result::Result<T, AuthError>;

const TOKEN_LABEL: &str = "AuthRefresh";
const FAMILY_LABEL: &str = "AuthFamily";
/// Prefix of every refresh token (lets secret scanners recognise them).
pub const PREFIX: &str = "umcp_rt_";

/// A new refresh token.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The token (shown to the client once, never stored).
    pub token: String,
    /// The family (session) id.
    pub sid: String,
    /// The user.
    pub user_id: String,
    /// Unix microseconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("sid", &self.sid)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was valid: here is its successor.
    Rotated(Issued),
    /// The token had already been used: its family is now revoked.
    Reused {
        /// The revoked family.
        sid: String,
        /// Its user.
        user_id: String,
    },
}

/// The refresh-token store.
#[derive(Debug)]
pub struct RefreshTokens {
    records: Records,
    ttl: Duration,
    lock: tokio::sync::Mutex<()>,
}

fn family_key(sid: &str) -> String {
    format!("fam_{sid}")
}

impl RefreshTokens {
    /// Over the auth records, issuing tokens valid for `ttl`.
    #[must_use]
    pub fn new(records: Records, ttl: Duration) -> Self {
        Self {
            records,
            ttl,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The lifetime of new tokens.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a family for a fresh login and returns its first token.
    ///
    /// # Errors
    /// Store errors.
    pub async fn start(&self, user_id: &str) -> Result<Issued> {
        let issued = self.new_token(new_id(), user_id)?;
        let _guard = self.lock.lock().await;
        self.records
            .put_many(vec![
                family_node(&issued, false),
                token_node(&issued, false),
            ])
            .await?;
        Ok(issued)
    }

    /// Uses `token`: rotates it, or detects reuse and revokes its family.
    ///
    /// # Errors
    /// [`AuthError::CredentialsRejected`] for an unknown, expired or revoked token; store errors.
    pub async fn rotate(&self, token: &str) -> Result<Rotation> {
        let _guard = self.lock.lock().await;
        let (record, family) = self.find(token).await?;
        let sid = record.string("family")?;
        let user_id = record.string("user_id")?;
        if family.flag("revoked") {
            return Err(AuthError::rejected("refresh token has been revoked"));
        }
        if record.flag("rotated") {
            self.set_revoked(&sid, &user_id, family.int("expires_at")?)
                .await?;
            tracing::warn!(%sid, %user_id, "refresh token reused; session revoked");
            return Ok(Rotation::Reused { sid, user_id });
        }
        if record.int("expires_at")? <= now_micros() {
            return Err(AuthError::rejected("refresh token has expired"));
        }
        let issued = self.new_token(sid, &user_id)?;
        let mut used = NodeInput {
            key: record.key.clone(),
            labels: vec![TOKEN_LABEL.into()],
            properties: props([("rotated", Value::Bool(true))]),
        };
        used.properties
            .insert("rotated_at".into(), Value::Int(now_micros()));
        // One transaction: the old token dies exactly when its successor is born.
        self.records
            .put_many(vec![
                used,
                token_node(&issued, false),
                family_node(&issued, false),
            ])
            .await?;
        Ok(Rotation::Rotated(issued))
    }

    /// The family and user of a live (or rotated) token, for logout.
    ///
    /// # Errors
    /// [`AuthError::CredentialsRejected`] for an unknown or expired token; store errors.
    pub async fn family_of(&self, token: &str) -> Result<(String, String)> {
        let (record, _) = self.find(token).await?;
        Ok((record.string("family")?, record.string("user_id")?))
    }

    /// Revokes a family (idempotent; unknown families are ignored).
    ///
    /// # Errors
    /// Store errors.
    pub async fn revoke_family(&self, sid: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        if let Some(family) = self.records.get(FAMILY_LABEL, &family_key(sid)).await? {
            let user_id = family.string("user_id")?;
            self.set_revoked(sid, &user_id, family.int("expires_at")?)
                .await?;
        }
        Ok(())
    }

    /// Deletes tokens and families that expired (they would be refused anyway).
    ///
    /// # Errors
    /// Store errors.
    pub async fn purge_expired(&self) -> Result<usize> {
        let mut params = BTreeMap::new();
        params.insert("now".to_owned(), Value::Int(now_micros()));
        let mut keys: Vec<String> = Vec::new();
        for label in [TOKEN_LABEL, FAMILY_LABEL] {
            let expired = self
                .records
                .scan_all(label, "n.expires_at <= $now", params.clone())
                .await?;
            keys.extend(expired.into_iter().map(|n| n.key));
        }
        let count = keys.len();
        self.records.delete(keys).await?;
        Ok(count)
    }

    async fn find(&self, token: &str) -> Result<(umcp_store::Node, umcp_store::Node)> {
        let invalid = || AuthError::rejected("invalid refresh token");
        if !token.starts_with(PREFIX) || token.len() != PREFIX.len() + 43 {
            return Err(invalid());
        }
        let record = self
            .records
            .get(TOKEN_LABEL, &digest_key("rt_", token))
            .await?
            .ok_or_else(invalid)?;
        let family = self
            .records
            .get(FAMILY_LABEL, &family_key(&record.string("family")?))
            .await?
            .ok_or_else(invalid)?;
        Ok((record, family))
    }

    async fn set_revoked(&self, sid: &str, user_id: &str, expires_at: i64) -> Result<()> {
        self.records
            .put(
                &family_key(sid),
                FAMILY_LABEL,
                props([
                    ("sid", Value::String(sid.into())),
                    ("user_id", Value::String(user_id.into())),
                    ("revoked", Value::Bool(true)),
                    ("expires_at", Value::Int(expires_at)),
                ]),
            )
            .await
    }

    fn new_token(&self, sid: String, user_id: &str) -> Result<Issued> {
        let ttl = i64::try_from(self.ttl.as_micros()).unwrap_or(i64::MAX);
        Ok(Issued {
            token: format!("{PREFIX}{}", secrets::token()?),
            sid,
            user_id: user_id.to_owned(),
            expires_at: now_micros().saturating_add(ttl),
        })
    }
}

fn token_node(issued: &Issued, rotated: bool) -> NodeInput {
    NodeInput {
        key: digest_key("rt_", &issued.token),
        labels: vec![TOKEN_LABEL.into()],
        properties: props([
            ("family", Value::String(issued.sid.clone())),
            ("user_id", Value::String(issued.user_id.clone())),
            ("expires_at", Value::Int(issued.expires_at)),
            ("rotated", Value::Bool(rotated)),
        ]),
    }
}

/// The family lives as long as its newest token.
fn family_node(issued: &Issued, revoked: bool) -> NodeInput {
    NodeInput {
        key: family_key(&issued.sid),
        labels: vec![FAMILY_LABEL.into()],
        properties: props([
            ("sid", Value::String(issued.sid.clone())),
            ("user_id", Value::String(issued.user_id.clone())),
            ("revoked", Value::Bool(revoked)),
            ("expires_at", Value::Int(issued.expires_at)),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use umcp_store::grafeo::{GrafeoConfig, GrafeoStore};

    async fn tokens(ttl: Duration) -> RefreshTokens {
        let store = GrafeoStore::open(GrafeoConfig::in_memory()).await.unwrap();
        RefreshTokens::new(Records::new(Arc::new(store)), ttl)
    }

    #[tokio::test]
    async fn rotation_then_reuse_revokes_the_family() {
        let t = tokens(Duration::from_secs(60)).await;
        let first = t.start("u1").await.unwrap();
        assert!(first.token.starts_with(PREFIX));
        let Rotation::Rotated(second) = t.rotate(&first.token).await.unwrap() else {
            panic!("first use rotates");
        };
        assert_eq!(second.sid, first.sid);
        assert_ne!(second.token, first.token);
        assert_eq!(
            t.family_of(&second.token).await.unwrap(),
            (first.sid.clone(), "u1".into())
        );

        let reuse = t.rotate(&first.token).await.unwrap();
        assert_eq!(
            reuse,
            Rotation::Reused {
                sid: first.sid.clone(),
                user_id: "u1".into()
            }
        );
        let err = t.rotate(&second.token).await.unwrap_err();
        assert_eq!(err, AuthError::rejected("refresh token has been revoked"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_uses_of_one_token_rotate_exactly_once() {
        let t = Arc::new(tokens(Duration::from_secs(60)).await);
        let first = t.start("u1").await.unwrap();
        let uses = (0..8).map(|_| {
            let (t, token) = (Arc::clone(&t), first.token.clone());
            tokio::spawn(async move { t.rotate(&token).await })
        });
        let mut rotated = 0;
        for handle in uses {
            // The others see a reuse (or, once the family is revoked, a revoked token).
            if matches!(handle.await.unwrap(), Ok(Rotation::Rotated(_))) {
                rotated += 1;
            }
        }
        assert_eq!(rotated, 1, "the mutex makes check-and-rotate atomic");
    }

    #[tokio::test]
    async fn unknown_expired_and_revoked_tokens_are_refused() {
        let t = tokens(Duration::ZERO).await;
        for bad in ["", "umcp_rt_short", &format!("{PREFIX}{}", "A".repeat(43))] {
            assert_eq!(
                t.rotate(bad).await.unwrap_err(),
                AuthError::rejected("invalid refresh token")
            );
        }
        let issued = t.start("u1").await.unwrap();
        assert_eq!(
            t.rotate(&issued.token).await.unwrap_err(),
            AuthError::rejected("refresh token has expired")
        );
        assert_eq!(t.purge_expired().await.unwrap(), 2);

        let t = tokens(Duration::from_secs(60)).await;
        let issued = t.start("u1").await.unwrap();
        t.revoke_family(&issued.sid).await.unwrap();
        assert!(t.rotate(&issued.token).await.is_err());
        assert!(!format!("{issued:?}").contains(&issued.token));
    }
}
