//! The http-level retry as a tower layer.

use std::sync::Arc;

use tower::Layer;

use super::Retrier;
use super::service::Retry;

/// Wraps a gRPC transport (`Service<http::Request<tonic::body::Body>>`) in a [`Retry`].
#[derive(Debug, Clone)]
pub struct RetryLayer {
    retrier: Retrier,
    idempotent_methods: Arc<[String]>,
    max_replay_bytes: usize,
}

impl RetryLayer {
    /// Retries requests marked [`Idempotent`](super::Idempotent) with `retrier`'s settings and
    /// budget, buffering bodies up to 64 KiB.
    #[must_use]
    pub fn new(retrier: Retrier) -> Self {
        Self {
            retrier,
            idempotent_methods: Arc::from([]),
            max_replay_bytes: 64 * 1024,
        }
    }

    /// Also retries these methods (`/package.Service/Method`) without a marker.
    #[must_use]
    pub fn idempotent_methods<I: IntoIterator<Item = S>, S: Into<String>>(mut self, m: I) -> Self {
        self.idempotent_methods = m.into_iter().map(Into::into).collect();
        self
    }

    /// Bodies larger than this are sent once.
    #[must_use]
    pub const fn max_replay_bytes(mut self, bytes: usize) -> Self {
        self.max_replay_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(
            inner,
            self.retrier.clone(),
            Arc::clone(&self.idempotent_methods),
            self.max_replay_bytes,
        )
    }
}
