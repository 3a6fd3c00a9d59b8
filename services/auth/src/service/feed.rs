//! The `WatchRevocations` feed: the current revocations, then each one as it happens.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use umcp_authz::Principal;
use umcp_authz::permissions::Permission;

use super::access::require;
use crate::error::AuthError;
use crate::revocations::Revocation;
use crate::service::AuthCore;

/// Revocation batches buffered per watcher before the sender waits.
const WATCH_BUFFER: usize = 64;

/// One message of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationBatch {
    /// The revocations.
    pub revocations: Vec<Revocation>,
    /// Whether this is the whole list (replacing what the watcher knew) rather than news.
    pub snapshot: bool,
}

impl AuthCore {
    /// Starts a feed for `caller` (who needs `auth:watch`): the snapshot first, then each
    /// revocation as it happens, until the receiver is dropped or `stopping` flips. A watcher
    /// that falls behind the broadcast buffer gets a fresh snapshot.
    ///
    /// # Errors
    /// [`AuthError::NotPermitted`] without `auth:watch`.
    pub fn watch_revocations(
        self: &Arc<Self>,
        caller: &Principal,
        stopping: watch::Receiver<bool>,
    ) -> Result<mpsc::Receiver<RevocationBatch>, AuthError> {
        require(caller, Permission::AuthWatch)?;
        // Subscribe before taking the snapshot: a revocation in between is then delivered
        // twice (harmless) rather than never.
        let updates = self.revocations.subscribe();
        let snapshot = self.revocations.revocations_snapshot();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(forward(Arc::clone(self), snapshot, updates, tx, stopping));
        tracing::info!(watcher = %caller.user_id, "revocation watcher connected");
        Ok(rx)
    }
}

/// Sends the snapshot, then each revocation as it happens, until the receiver goes away or the
/// server stops. Holds the core (not only the list), so shutdown waits for it like for any
/// other user of the store.
async fn forward(
    core: Arc<AuthCore>,
    snapshot: Vec<Revocation>,
    mut updates: broadcast::Receiver<Revocation>,
    tx: mpsc::Sender<RevocationBatch>,
    mut stopping: watch::Receiver<bool>,
) {
    if tx.send(batch(snapshot, true)).await.is_err() {
        return;
    }
    loop {
        let message = tokio::select! {
            _ = stopping.changed() => return,
            () = tx.closed() => return,
            next = updates.recv() => match next {
                Ok(r) => batch(vec![r], false),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "revocation watcher lagged; resending snapshot");
                    batch(core.revocations.revocations_snapshot(), true)
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if tx.send(message).await.is_err() {
            return;
        }
    }
}

fn batch(revocations: Vec<Revocation>, snapshot: bool) -> RevocationBatch {
    RevocationBatch {
        revocations,
        snapshot,
    }
}
