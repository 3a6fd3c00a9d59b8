//! The revocation list: persisted in the store (so a restart keeps it), held in memory for
//! checks, and broadcast to `WatchRevocations` subscribers as each one happens.
//!
//! A revocation is kept until no token it applies to can still be accepted anywhere:
//! TOKEN until the token's `exp` plus leeway, SESSION and USER until an access token issued
//! just before the revocation has expired (access lifetime plus leeway). Refresh tokens of a
//! revoked session or a disabled user are refused by the store records themselves.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::broadcast;
use umcp_authz::revocations::{self as authz, RevocationSet};
use umcp_proto::auth::v1 as pb;
use umcp_store::Value;

use crate::clock::{now_micros, timestamp};
use crate::error::AuthError;
use crate::storage::{NodeExt, Records, digest_key, props};

const LABEL: &str = "AuthRevocation";
/// Subscribers further behind than this many revocations get a fresh snapshot instead.
const BROADCAST_CAPACITY: usize = 1024;

/// What a revocation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RevocationKind {
    /// One access token, by `jti`.
    Token,
    /// Every token of a session (refresh-token family or API-key session), by `sid`.
    Session,
    /// Every token of a user issued at or before `revoked_at`, by `sub`.
    User,
}

impl RevocationKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Session => "session",
            Self::User => "user",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Token, Self::Session, Self::User]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One revocation. Times are Unix microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// What it applies to.
    pub kind: RevocationKind,
    /// The `jti`, `sid` or user id.
    pub id: String,
    /// When it happened.
    pub revoked_at: i64,
    /// When it can be forgotten.
    pub expires_at: i64,
}

impl Revocation {
    /// The wire form.
    #[must_use]
    pub fn to_proto(&self) -> pb::Revocation {
        let kind = match self.kind {
            RevocationKind::Token => pb::RevocationKind::Token,
            RevocationKind::Session => pb::RevocationKind::Session,
            RevocationKind::User => pb::RevocationKind::User,
        };
        pb::Revocation {
            kind: kind.into(),
            id: self.id.clone(),
            revoked_at: Some(timestamp(self.revoked_at)),
            expires_at: Some(timestamp(self.expires_at)),
        }
    }

    fn store_key(kind: RevocationKind, id: &str) -> String {
        digest_key("rev_", &format!("{}:{id}", kind.as_str()))
    }

    /// The verifier's form (Unix seconds).
    /// As the verifiers' type (whole seconds).
    pub fn to_authz(&self) -> authz::Revocation {
        authz::Revocation {
            kind: match self.kind {
                RevocationKind::Token => authz::Kind::Token,
                RevocationKind::Session => authz::Kind::Session,
                RevocationKind::User => authz::Kind::User,
            },
            id: self.id.clone(),
            revoked_at: self.revoked_at.div_euclid(1_000_000),
            // Round up: forgetting a revocation early would let a token through.
            expires_at: self.expires_at.div_euclid(1_000_000) + 1,
        }
    }
}

/// The revocation list. Every change is mirrored into the [`RevocationSet`] that this
/// service's own verifier (the `umcp-authz` layer on its port) consults.
#[derive(Debug)]
pub struct Revocations {
    records: Records,
    set: RwLock<HashMap<(RevocationKind, String), Revocation>>,
    verifier_set: Arc<RevocationSet>,
    tx: broadcast::Sender<Revocation>,
}

impl Revocations {
    /// Loads the unexpired revocations from the store.
    ///
    /// # Errors
    /// Store errors.
    pub async fn load(records: Records) -> Result<Arc<Self>, AuthError> {
        let now = now_micros();
        let mut params = BTreeMap::new();
        params.insert("now".to_owned(), Value::Int(now));
        let nodes = records
            .scan_all(LABEL, "n.expires_at > $now", params)
            .await?;
        let mut set = HashMap::new();
        for node in nodes {
            let kind = RevocationKind::parse(&node.string("kind")?).ok_or_else(|| {
                AuthError::Unexpected(format!("record {} has a bad kind", node.key))
            })?;
            let r = Revocation {
                kind,
                id: node.string("rid")?,
                revoked_at: node.int("revoked_at")?,
                expires_at: node.int("expires_at")?,
            };
            set.insert((r.kind, r.id.clone()), r);
        }
        tracing::info!(count = set.len(), "revocations loaded");
        let verifier_set = Arc::new(RevocationSet::new());
        verifier_set.extend(set.values().map(Revocation::to_authz));
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Ok(Arc::new(Self {
            records,
            set: RwLock::new(set),
            verifier_set,
            tx,
        }))
    }

    /// Records a revocation (persisted first, then applied and broadcast). Revoking again
    /// extends the expiry; a USER revocation also moves `revoked_at` forward.
    ///
    /// # Errors
    /// Store errors; nothing is applied then.
    pub async fn revoke(
        &self,
        kind: RevocationKind,
        id: &str,
        expires_at: i64,
    ) -> Result<Revocation, AuthError> {
        // Whole seconds: a USER revocation is compared with `iat`, which has seconds only.
        let now = now_micros() / 1_000_000 * 1_000_000;
        let previous = self.set.read().get(&(kind, id.to_owned())).cloned();
        let revocation = Revocation {
            kind,
            id: id.to_owned(),
            revoked_at: match (&previous, kind) {
                (Some(p), RevocationKind::Token | RevocationKind::Session) => p.revoked_at,
                _ => now,
            },
            expires_at: previous
                .as_ref()
                .map_or(expires_at, |p| p.expires_at.max(expires_at)),
        };
        self.records
            .put(
                &Revocation::store_key(kind, id),
                LABEL,
                props([
                    ("kind", Value::String(kind.as_str().into())),
                    ("rid", Value::String(id.into())),
                    ("revoked_at", Value::Int(revocation.revoked_at)),
                    ("expires_at", Value::Int(revocation.expires_at)),
                ]),
            )
            .await?;
        self.set
            .write()
            .insert((kind, id.to_owned()), revocation.clone());
        self.verifier_set.extend([revocation.to_authz()]);
        // No subscribers is fine: verifiers that connect later get the snapshot.
        let _ = self.tx.send(revocation.clone());
        tracing::info!(kind = kind.as_str(), "revocation recorded");
        Ok(revocation)
    }

    /// Every revocation that still matters.
    #[must_use]
    pub fn revocations_snapshot(&self) -> Vec<Revocation> {
        let now = now_micros();
        let mut out: Vec<Revocation> = self
            .set
            .read()
            .values()
            .filter(|r| r.expires_at > now)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.revoked_at, a.kind, &a.id).cmp(&(b.revoked_at, b.kind, &b.id)));
        out
    }

    /// New revocations as they happen.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.tx.subscribe()
    }

    /// The set the verifier consults (kept in step with this list).
    #[must_use]
    pub fn verifier_set(&self) -> Arc<RevocationSet> {
        Arc::clone(&self.verifier_set)
    }

    /// The earliest `iat` (seconds) a new token for `user_id` may carry so that a USER
    /// revocation of the same second does not apply to it.
    #[must_use]
    pub fn earliest_iat(&self, user_id: &str, now_secs: i64) -> i64 {
        self.set
            .read()
            .get(&(RevocationKind::User, user_id.to_owned()))
            .map_or(now_secs, |r| now_secs.max(r.revoked_at / 1_000_000 + 1))
    }

    /// Forgets expired revocations, in memory and in the store. Returns how many.
    ///
    /// # Errors
    /// Store errors.
    pub async fn purge_expired(&self) -> Result<usize, AuthError> {
        let now = now_micros();
        let expired: Vec<(RevocationKind, String)> = self
            .set
            .read()
            .values()
            .filter(|r| r.expires_at <= now)
            .map(|r| (r.kind, r.id.clone()))
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let keys = expired
            .iter()
            .map(|(k, id)| Revocation::store_key(*k, id))
            .collect();
        self.records.delete(keys).await?;
        let mut set = self.set.write();
        for key in &expired {
            if set.get(key).is_some_and(|r| r.expires_at <= now) {
                set.remove(key);
            }
        }
        drop(set);
        self.verifier_set.purge(now.div_euclid(1_000_000));
        Ok(expired.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umcp_authz::claims::{AuthMethod, Claims};
    use umcp_store::grafeo::{GrafeoConfig, GrafeoStore};

    fn claims(iat: i64) -> Claims {
        Claims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "u1".into(),
            name: "n".into(),
            roles: vec![],
            jti: "j1".into(),
            sid: "s1".into(),
            amr: AuthMethod::Password,
            iat,
            nbf: iat,
            exp: iat + 900,
        }
    }

    async fn records() -> Records {
        Records::new(Arc::new(
            GrafeoStore::open(GrafeoConfig::in_memory()).await.unwrap(),
        ))
    }

    #[tokio::test]
    async fn revocations_apply_broadcast_and_reload() {
        let records = records().await;
        let revs = Revocations::load(records.clone()).await.unwrap();
        let set = revs.verifier_set();
        let mut rx = revs.subscribe();
        let later = now_micros() + 60_000_000;
        let now_s = now_micros() / 1_000_000;
        assert!(set.check(&claims(now_s)).is_none());

        revs.revoke(RevocationKind::Session, "s1", later)
            .await
            .unwrap();
        assert!(set.check(&claims(now_s)).is_some());
        assert_eq!(rx.recv().await.unwrap().id, "s1");

        revs.revoke(RevocationKind::User, "u1", later)
            .await
            .unwrap();
        let mut other = claims(now_s);
        other.sid = "s2".into();
        other.jti = "j2".into();
        assert!(
            set.check(&other).is_some(),
            "issued in the revocation's second"
        );
        let fresh = revs.earliest_iat("u1", now_s);
        assert!(fresh > now_s);
        other.iat = fresh;
        assert!(set.check(&other).is_none(), "issued after the revocation");

        revs.revoke(RevocationKind::Token, "old", now_micros() - 1)
            .await
            .unwrap();
        assert_eq!(revs.revocations_snapshot().len(), 2);

        let reloaded = Revocations::load(records.clone()).await.unwrap();
        assert_eq!(reloaded.revocations_snapshot(), revs.revocations_snapshot());
        assert_eq!(reloaded.verifier_set().len(), 2);
        assert_eq!(revs.purge_expired().await.unwrap(), 1);
        let r = revs.revocations_snapshot()[0].to_proto();
        assert_eq!(r.kind, i32::from(pb::RevocationKind::Session));
    }
}
