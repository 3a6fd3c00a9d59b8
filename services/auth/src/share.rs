//! Keeps the keys and revocations this service publishes in Redis (see
//! [`umcp_authz::shared`]) in step with the key ring and the revocation list.
//!
//! Each revocation is written as it happens; the JWKS when the published set changes (checked
//! every [`CHECK_EVERY`]: rotations, and retired keys leaving it as time passes); both in full
//! every [`REPUBLISH_EVERY`] and after any failed write (a flushed, restarted or failed-over
//! Redis is repaired within that). Redis being down never affects the service itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use umcp_authz::shared::{REPUBLISH_EVERY, SharedAuthState};
use umcp_authz::verifier::unix_now;

use crate::service::AuthCore;

/// How often the published key set is compared with what Redis holds.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true.
pub(crate) async fn share(
    shared: SharedAuthState,
    core: Arc<AuthCore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut updates = core.revocations().subscribe();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    let mut published_jwks = String::new();
    let mut full_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                let jwks = core.jwks();
                let due = full_at.is_none_or(|at| at.elapsed() >= REPUBLISH_EVERY);
                if !due && jwks.json == published_jwks {
                    continue;
                }
                if publish_all(&shared, &core, &jwks.keys).await {
                    published_jwks = jwks.json;
                    full_at = Some(Instant::now());
                } else {
                    full_at = None;
                }
            }
            update = updates.recv() => match update {
                Ok(revocation) => {
                    let one = [revocation.to_authz()];
                    if let Err(error) = shared.publish_revocations(&one, unix_now()).await {
                        tracing::warn!(%error, "cannot share a revocation in redis; retrying in full");
                        full_at = None;
                    }
                }
                // Missed some: the next tick writes the whole list.
                Err(broadcast::error::RecvError::Lagged(_)) => full_at = None,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

async fn publish_all(
    shared: &SharedAuthState,
    core: &AuthCore,
    keys: &[umcp_proto::auth::v1::Jwk],
) -> bool {
    let revocations: Vec<_> = core
        .revocations()
        .revocations_snapshot()
        .iter()
        .map(crate::revocations::Revocation::to_authz)
        .collect();
    let result = match shared.publish_jwks(keys).await {
        Ok(()) => shared.publish_revocations(&revocations, unix_now()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            tracing::debug!(
                keys = keys.len(),
                revocations = revocations.len(),
                "auth state shared in redis"
            );
            true
        }
        Err(error) => {
            tracing::warn!(%error, "cannot share the auth state in redis; retrying");
            false
        }
    }
}
