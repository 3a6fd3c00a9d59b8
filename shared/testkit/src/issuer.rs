//! An in-process token issuer for tests of verifying components (gateway, services): a real
//! Ed25519 key, tokens in the real format, and a [`Verifier`] that trusts the key. End-to-end
//! tests use the real auth service instead.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use parking_lot::RwLock;
use umcp_authz::claims::{AuthMethod, Claims, DEFAULT_AUDIENCE, DEFAULT_ISSUER};
use umcp_authz::keys::{StaticKeys, jwk};
use umcp_authz::permissions::Role;
use umcp_authz::revocations::RevocationSet;
use umcp_authz::verifier::unix_now;
use umcp_authz::{Verifier, VerifierConfig, jws};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct TestIssuer {
    key: Arc<SigningKey>,
    kid: String,
    keys: StaticKeys,
    revocations: Arc<RevocationSet>,
}

impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIssuer {
    /// A fresh random key named `test-key`.
    ///
    /// # Panics
    /// When the OS has no randomness.
    #[must_use]
    pub fn new() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("os randomness");
        let key = SigningKey::from_bytes(&seed);
        let kid = "test-key".to_owned();
        let keys = StaticKeys(Arc::new(RwLock::new(vec![jwk(&kid, &key.verifying_key())])));
        Self {
            key: Arc::new(key),
            kid,
            keys,
            revocations: Arc::new(RevocationSet::new()),
        }
    }

    /// A verifier trusting this issuer's key (and sharing its revocation set).
    #[must_use]
    pub fn verifier(&self) -> Arc<Verifier> {
        Arc::new(Verifier::new(
            VerifierConfig {
                min_refetch: Duration::ZERO,
                ..VerifierConfig::default()
            },
            Arc::new(self.keys.clone()),
            Arc::clone(&self.revocations),
        ))
    }

    /// The JWKS of this issuer as JSON (for `UMCP_AUTH__JWKS_FILE` of real binaries).
    #[must_use]
    pub fn jwks_json(&self) -> String {
        umcp_authz::keys::jwks_json(&self.keys.0.read())
    }

    /// The revocation set the verifiers of this issuer consult.
    #[must_use]
    pub fn revocations(&self) -> &Arc<RevocationSet> {
        &self.revocations
    }

    /// Valid claims for user `sub` with `roles`, expiring in 15 minutes.
    #[must_use]
    pub fn claims(&self, sub: &str, roles: &[Role]) -> Claims {
        let now = unix_now();
        Claims {
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
            sub: sub.into(),
            name: sub.into(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            jti: uuid::Uuid::now_v7().to_string(),
            sid: uuid::Uuid::now_v7().to_string(),
            amr: AuthMethod::Password,
            iat: now,
            nbf: now,
            exp: now + 900,
        }
    }

    /// Signs arbitrary claims with this issuer's key.
    #[must_use]
    pub fn sign(&self, claims: &Claims) -> String {
        jws::sign(claims, &self.kid, &self.key)
    }

    /// A valid token for `sub` with `roles`.
    #[must_use]
    pub fn token(&self, sub: &str, roles: &[Role]) -> String {
        self.sign(&self.claims(sub, roles))
    }

    /// `Bearer <token>` for `sub` with `roles`, ready for the `authorization` metadata.
    ///
    /// # Panics
    /// Never: tokens are ASCII.
    #[must_use]
    pub fn bearer(
        &self,
        sub: &str,
        roles: &[Role],
    ) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
        format!("Bearer {}", self.token(sub, roles))
            .parse()
            .expect("tokens are ascii")
    }
}
