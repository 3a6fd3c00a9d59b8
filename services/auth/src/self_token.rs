//! The auth service's own identity towards the audit service. It holds the signing keys, so it
//! mints its own short-lived service token instead of exchanging an API key with itself.

use std::sync::{Arc, Weak};

use tokio::sync::Mutex;

use crate::clock::now_secs;
use crate::service::AuthCore;

/// Subject and session of the self-issued token.
const SELF_ID: &str = "auth-service";

/// See the module docs. Holds the core weakly, so it never keeps the store open after the
/// service stopped.
#[derive(Debug)]
pub(crate) struct SelfToken {
    core: Weak<AuthCore>,
    /// `(token, renew after (unix seconds))`.
    current: Mutex<Option<(Arc<str>, i64)>>,
}

impl SelfToken {
    /// Tokens minted by `core`.
    #[must_use]
    pub(crate) fn new(core: &Arc<AuthCore>) -> Self {
        Self {
            core: Arc::downgrade(core),
            current: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl umcp_authz::remote::TokenProvider for SelfToken {
    async fn token(&self) -> Result<Arc<str>, tonic::Status> {
        let mut current = self.current.lock().await;
        if let Some((token, renew_after)) = current.as_ref()
            && now_secs() < *renew_after
        {
            return Ok(Arc::clone(token));
        }
        let core = self
            .core
            .upgrade()
            .ok_or_else(|| tonic::Status::unavailable("the auth service is stopping"))?;
        let minted = core.mint_service_token(SELF_ID);
        let token: Arc<str> = Arc::from(minted.token);
        let lifetime = minted.claims.exp - minted.claims.iat;
        *current = Some((Arc::clone(&token), minted.claims.iat + lifetime * 4 / 5));
        Ok(token)
    }
}
