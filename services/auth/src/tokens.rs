//! Access tokens: claims signed by the key ring.

use std::sync::Arc;

use umcp_authz::claims::{AuthMethod, Claims};
use umcp_authz::permissions::Role;

use crate::clock::now_secs;
use crate::keyring::KeyRing;
use crate::revocations::Revocations;

/// A signed access token and what it says.
#[derive(Clone)]
pub struct AccessToken {
    /// The compact JWS.
    pub token: String,
    /// Its claims.
    pub claims: Claims,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("jti", &self.claims.jti)
            .finish_non_exhaustive()
    }
}

/// Mints access tokens. (Verification is the `umcp-authz` verifier's job, on this port too.)
#[derive(Debug)]
pub struct Tokens {
    keyring: Arc<KeyRing>,
    revocations: Arc<Revocations>,
    issuer: String,
    audience: String,
    ttl_secs: i64,
}

impl Tokens {
    /// Issues tokens as `issuer` for `audience`, valid `ttl_secs`.
    #[must_use]
    pub fn new(
        keyring: Arc<KeyRing>,
        revocations: Arc<Revocations>,
        issuer: String,
        audience: String,
        ttl_secs: u64,
    ) -> Self {
        Self {
            keyring,
            revocations,
            issuer,
            audience,
            ttl_secs: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
        }
    }

    /// The access-token lifetime in seconds.
    #[must_use]
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Signs a new access token.
    #[must_use]
    pub fn mint(
        &self,
        user_id: &str,
        username: &str,
        roles: &[Role],
        sid: &str,
        amr: AuthMethod,
    ) -> AccessToken {
        // After a USER revocation in this very second, start at the next one so the new
        // token is not caught by it (`iat` has whole seconds only).
        let iat = self.revocations.earliest_iat(user_id, now_secs());
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_owned(),
            name: username.to_owned(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            jti: uuid::Uuid::now_v7().to_string(),
            sid: sid.to_owned(),
            amr,
            iat,
            nbf: iat,
            exp: iat + self.ttl_secs,
        };
        AccessToken {
            token: self.keyring.sign(&claims),
            claims,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Records;
    use std::time::Duration;
    use umcp_authz::jws;
    use umcp_store::grafeo::{GrafeoConfig, GrafeoStore};

    #[tokio::test]
    async fn minted_tokens_carry_the_claims_and_verify_with_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let store = GrafeoStore::open(GrafeoConfig::in_memory()).await.unwrap();
        let revs = Revocations::load(Records::new(Arc::new(store)))
            .await
            .unwrap();
        let ring = KeyRing::open(dir.path().to_path_buf(), Duration::from_secs(60))
            .await
            .unwrap();
        let t = Tokens::new(
            Arc::clone(&ring),
            revs,
            "umcp-auth".into(),
            "umcp".into(),
            900,
        );
        let at = t.mint(
            "u1",
            "alice",
            &[Role::Viewer, Role::Developer],
            "s1",
            AuthMethod::Password,
        );
        let parsed = jws::parse(&at.token).unwrap();
        assert_eq!(parsed.header.kid, ring.active_kid());
        let key = jws::decoding_key(&ring.verifying_key(&parsed.header.kid).unwrap());
        let claims: Claims = parsed
            .verify(&key, &crate::keyring::tests::signature_only())
            .unwrap();
        assert_eq!(claims, at.claims);
        assert_eq!(
            (
                claims.iss.as_str(),
                claims.aud.as_str(),
                claims.sid.as_str()
            ),
            ("umcp-auth", "umcp", "s1")
        );
        assert_eq!(claims.roles, ["viewer", "developer"]);
        assert_eq!((claims.exp - claims.iat, claims.nbf), (900, claims.iat));
        assert_eq!(
            uuid::Uuid::parse_str(&claims.jti)
                .unwrap()
                .get_version_num(),
            7
        );
        assert!(!format!("{at:?}").contains(&at.token));
    }
}
