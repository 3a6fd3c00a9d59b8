//! Access-token verification: signature with a pinned algorithm and a cached key, then `iss`,
//! `aud`, `exp`, `nbf` (small clock-skew leeway) and the revocation set.
//!
//! Verified tokens are cached until they expire, so a client that sends the same token on
//! every call pays for the signature once; revocations, key retirement and expiry are still
//! checked on every hit.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::claims::{Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use crate::jws::{self, ClaimError, JwsError};
use crate::keys::{JwksCache, KeyError, KeySource};
use crate::principal::Principal;
use crate::revocations::RevocationSet;

/// Verifier settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Clock-skew leeway for `exp` and `nbf`.
    pub leeway: Duration,
    /// Minimum time between two JWKS fetches caused by unknown kids.
    pub min_refetch: Duration,
    /// Largest number of verified tokens kept.
    pub cache_capacity: u64,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            leeway: Duration::from_secs(30),
            min_refetch: Duration::from_secs(1),
            cache_capacity: 100_000,
        }
    }
}

/// Why a token was rejected. Every variant but [`AuthError::KeysUnavailable`] means
/// `UNAUTHENTICATED`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` header.
    #[error("missing bearer token: send `authorization: Bearer <access token>`")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("authorization header must be `Bearer <access token>`")]
    BadHeader,
    /// Structure, algorithm, type or signature.
    #[error(transparent)]
    Token(#[from] JwsError),
    /// No such key.
    #[error("token is signed with an unknown key `{0}`")]
    UnknownKey(String),
    /// Keys could not be fetched at all.
    #[error("token cannot be verified now: signing keys are unavailable")]
    KeysUnavailable,
    /// `iss` mismatch.
    #[error("token issuer is not accepted")]
    Issuer,
    /// `aud` mismatch.
    #[error("token audience is not accepted")]
    Audience,
    /// Past `exp`.
    #[error("token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("token is not valid yet")]
    NotYetValid,
    /// In the revocation set.
    #[error("token is revoked: {0}")]
    Revoked(&'static str),
}

#[derive(Debug, Clone)]
struct Verified {
    claims: Arc<Claims>,
    kid: Arc<str>,
    principal: Arc<Principal>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Verifier {
    config: VerifierConfig,
    keys: JwksCache,
    revocations: Arc<RevocationSet>,
    cache: moka::sync::Cache<Arc<str>, Verified>,
    /// The one `jsonwebtoken` validation (see [`jws::validation`]).
    validation: jsonwebtoken::Validation,
}

impl Verifier {
    /// A verifier over `source`, consulting `revocations`.
    #[must_use]
    pub fn new(
        config: VerifierConfig,
        source: Arc<dyn KeySource>,
        revocations: Arc<RevocationSet>,
    ) -> Self {
        let keys = JwksCache::new(source, config.min_refetch);
        let cache = moka::sync::Cache::builder()
            .max_capacity(config.cache_capacity)
            // Entries are checked against `exp` on every hit; this only bounds memory.
            .time_to_live(Duration::from_secs(3600))
            .build();
        let validation = jws::validation(&config.issuer, &config.audience, config.leeway.as_secs());
        Self {
            config,
            keys,
            revocations,
            cache,
            validation,
        }
    }

    /// The key cache (for periodic refresh).
    #[must_use]
    pub fn keys(&self) -> &JwksCache {
        &self.keys
    }

    /// The revocation set.
    #[must_use]
    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revocations
    }

    /// Verifies the value of an `authorization` header.
    ///
    /// # Errors
    /// See [`AuthError`].
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Arc<Principal>, AuthError> {
        let value = header.ok_or(AuthError::Missing)?;
        let token = bearer(value).ok_or(AuthError::BadHeader)?;
        self.verify(token).await
    }

    /// Verifies a bare token.
    ///
    /// # Errors
    /// See [`AuthError`].
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let now = unix_now();
        if let Some(hit) = self.cache.get(token) {
            // A retired key, an expiry or a revocation since the first check still count.
            if !self.keys.contains(&hit.kid) {
                self.cache.invalidate(token);
                return Err(AuthError::UnknownKey(hit.kid.to_string()));
            }
            self.check_times(&hit.claims, now)?;
            if let Some(reason) = self.revocations.check(&hit.claims) {
                return Err(AuthError::Revoked(reason));
            }
            return Ok(hit.principal);
        }
        let unverified = jws::parse(token)?;
        let key = self
            .keys
            .key(&unverified.header.kid)
            .await
            .map_err(|e| match e {
                KeyError::Unknown(kid) => AuthError::UnknownKey(kid),
                KeyError::Unavailable => AuthError::KeysUnavailable,
            })?;
        // Signature, algorithm, `iss`, `aud`, `exp`, `nbf` and the required claims, in one.
        let claims: Claims = unverified
            .verify(&key, &self.validation)
            .map_err(|e| match e {
                JwsError::Claim(ClaimError::Issuer) => AuthError::Issuer,
                JwsError::Claim(ClaimError::Audience) => AuthError::Audience,
                JwsError::Claim(ClaimError::Expired) => AuthError::Expired,
                JwsError::Claim(ClaimError::NotYetValid) => AuthError::NotYetValid,
                other => AuthError::Token(other),
            })?;
        if let Some(reason) = self.revocations.check(&claims) {
            return Err(AuthError::Revoked(reason));
        }
        let token: Arc<str> = Arc::from(token);
        let principal = Arc::new(Principal::from_claims(&claims, Arc::clone(&token)));
        self.cache.insert(
            token,
            Verified {
                claims: Arc::new(claims),
                kid: Arc::from(unverified.header.kid.as_str()),
                principal: Arc::clone(&principal),
            },
        );
        Ok(principal)
    }

    fn check_times(&self, claims: &Claims, now: i64) -> Result<(), AuthError> {
        let leeway = i64::try_from(self.config.leeway.as_secs()).unwrap_or(0);
        if now > claims.exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if now < claims.nbf.saturating_sub(leeway) {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }
}

/// The token of a `Bearer <token>` header value (scheme case-insensitive, RFC 7235).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer a b"), None);
    }
}
