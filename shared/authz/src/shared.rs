//! The verification keys and the revocation list shared through Redis, so that a replica that
//! starts is current at once — before its first `GetJwks` answer or revocation snapshot, and
//! while the auth service is unreachable.
//!
//! The auth service is the only writer; every verifier reads. Layout (under the configured
//! key prefix, `umcp:` by default):
//! - `auth:jwks` — the JWKS JSON document (RFC 7517), exactly what `GetJwks` returns in
//!   `jwks_json`; rewritten when the published set changes and every
//!   [`REPUBLISH_EVERY`].
//! - `auth:revocations` — a sorted set, one member `kind:revoked_at:id` per revocation, scored
//!   by its `expires_at` (Unix seconds), so readers take only what still matters
//!   (`ZRANGEBYSCORE now +inf`) and the writer drops the rest (`ZREMRANGEBYSCORE`).
//!
//! // why: the auth service stays the authority (verifiers prefer its answers, and its
//! revocation stream stays the live feed); Redis is what a new replica reads first and what
//! everybody falls back to. The two keys may live on different cluster slots: each is read
//! and written with single-key commands.

use std::time::Duration;

use umcp_proto::auth::v1::Jwk;
use umcp_redis::fred::prelude::{KeysInterface, SortedSetsInterface};
use umcp_redis::fred::types::sorted_sets::Ordering;
use umcp_redis::{Redis, RedisError};

use crate::keys::{KeySource, KeySourceError, jwks_json, parse_jwks_json};
use crate::revocations::{Kind, Revocation};

/// How often the writer rewrites both keys even when nothing changed (a flushed or failed-over
/// Redis is repaired within this).
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(30);

const JWKS_KEY: &str = "auth:jwks";
const REVOCATIONS_KEY: &str = "auth:revocations";

/// Reads and writes the shared auth state (see the module docs).
#[derive(Debug, Clone)]
pub struct SharedAuthState {
    redis: Redis,
    jwks_key: String,
    revocations_key: String,
}

impl SharedAuthState {
    /// The shared state in `redis`.
    #[must_use]
    pub fn new(redis: Redis) -> Self {
        Self {
            jwks_key: redis.key(JWKS_KEY),
            revocations_key: redis.key(REVOCATIONS_KEY),
            redis,
        }
    }

    /// Publishes the JWKS (the auth service).
    ///
    /// # Errors
    /// See [`RedisError`].
    pub async fn publish_jwks(&self, keys: &[Jwk]) -> Result<(), RedisError> {
        let (key, json) = (self.jwks_key.clone(), jwks_json(keys));
        self.redis
            .call("auth.jwks.set", |c| async move {
                c.set::<(), _, _>(key, json, None, None, false).await
            })
            .await
    }

    /// Adds revocations and forgets those expired before `now` (the auth service). A member
    /// that exists keeps the later expiry.
    ///
    /// # Errors
    /// See [`RedisError`].
    pub async fn publish_revocations(
        &self,
        revocations: &[Revocation],
        now: i64,
    ) -> Result<(), RedisError> {
        if !revocations.is_empty() {
            let members: Vec<(f64, String)> = revocations
                .iter()
                .map(|r| (r.expires_at as f64, member(r)))
                .collect();
            let key = self.revocations_key.clone();
            self.redis
                .call("auth.revocations.add", |c| async move {
                    c.zadd::<i64, _, _>(
                        key,
                        None,
                        Some(Ordering::GreaterThan),
                        false,
                        false,
                        members,
                    )
                    .await
                })
                .await?;
        }
        let key = self.revocations_key.clone();
        self.redis
            .call("auth.revocations.purge", |c| async move {
                c.zremrangebyscore::<i64, _, _, _>(key, f64::NEG_INFINITY, (now - 1) as f64)
                    .await
            })
            .await?;
        Ok(())
    }

    /// The shared JWKS, `None` when nobody published one.
    ///
    /// # Errors
    /// See [`RedisError`]; a document that does not parse is [`RedisError::Refused`]-like
    /// garbage and reported as a [`KeySourceError`] by [`FallbackKeySource`].
    pub async fn jwks(&self) -> Result<Option<String>, RedisError> {
        let key = self.jwks_key.clone();
        self.redis
            .call("auth.jwks.get", |c| async move {
                c.get::<Option<String>, _>(key).await
            })
            .await
    }

    /// The revocations that still matter at `now`. Members that do not parse (written by a
    /// different version) are skipped.
    ///
    /// # Errors
    /// See [`RedisError`].
    pub async fn revocations(&self, now: i64) -> Result<Vec<Revocation>, RedisError> {
        let key = self.revocations_key.clone();
        let rows: Vec<(String, f64)> = self
            .redis
            .call("auth.revocations.get", |c| async move {
                c.zrangebyscore(key, now as f64, f64::INFINITY, true, None)
                    .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(m, expires_at)| parse_member(&m, expires_at as i64))
            .collect())
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Token => "token",
        Kind::Session => "session",
        Kind::User => "user",
    }
}

fn member(r: &Revocation) -> String {
    format!("{}:{}:{}", kind_name(r.kind), r.revoked_at, r.id)
}

fn parse_member(member: &str, expires_at: i64) -> Option<Revocation> {
    let mut parts = member.splitn(3, ':');
    let kind = match parts.next()? {
        "token" => Kind::Token,
        "session" => Kind::Session,
        "user" => Kind::User,
        _ => return None,
    };
    let revoked_at = parts.next()?.parse().ok()?;
    let id = parts.next().filter(|id| !id.is_empty())?.to_owned();
    Some(Revocation {
        kind,
        id,
        revoked_at,
        expires_at,
    })
}

/// The auth service's keys, or the shared copy when it cannot be reached.
pub struct FallbackKeySource {
    primary: Box<dyn KeySource>,
    shared: SharedAuthState,
}

impl std::fmt::Debug for FallbackKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackKeySource")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl FallbackKeySource {
    /// Asks `primary` first, then `shared`.
    #[must_use]
    pub fn new(primary: Box<dyn KeySource>, shared: SharedAuthState) -> Self {
        Self { primary, shared }
    }

    /// The shared copy only (start-up seeding).
    ///
    /// # Errors
    /// When Redis cannot answer, holds no JWKS, or holds one that does not parse.
    pub async fn shared_keys(&self) -> Result<Vec<Jwk>, KeySourceError> {
        match self.shared.jwks().await {
            Ok(Some(text)) => parse_jwks_json(&text),
            Ok(None) => Err(KeySourceError("no jwks shared in redis yet".into())),
            Err(e) => Err(KeySourceError(e.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl KeySource for FallbackKeySource {
    async fn fetch(&self) -> Result<Vec<Jwk>, KeySourceError> {
        match self.primary.fetch().await {
            Ok(keys) => Ok(keys),
            Err(primary) => match self.shared_keys().await {
                Ok(keys) if !keys.is_empty() => {
                    tracing::warn!(error = %primary, "auth service unreachable; using the jwks shared through redis");
                    Ok(keys)
                }
                Ok(_) => Err(primary),
                Err(shared) => Err(KeySourceError(format!("{primary}; {shared}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_ids_may_hold_colons() {
        for (kind, id) in [
            (Kind::Token, "jti-1"),
            (Kind::Session, "s:with:colons"),
            (Kind::User, "u1"),
        ] {
            let r = Revocation {
                kind,
                id: id.into(),
                revoked_at: 1_700_000_000,
                expires_at: 1_700_000_900,
            };
            assert_eq!(parse_member(&member(&r), r.expires_at), Some(r));
        }
        for bad in ["", "token", "token:x:id", "group:1:id", "user:1:"] {
            assert_eq!(parse_member(bad, 0), None, "{bad}");
        }
    }
}
