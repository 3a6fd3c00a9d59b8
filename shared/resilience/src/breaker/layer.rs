//! The breaker as a tower layer.

use tower::Layer;

use super::CircuitBreaker;
use super::state::Breaker;

/// Wraps a service in a [`CircuitBreaker`] sharing `breaker` (so every clone of a client, and
/// the metrics endpoint, see one state).
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C> {
    breaker: Breaker,
    classifier: C,
}

impl<C> CircuitBreakerLayer<C> {
    /// A layer recording outcomes in `breaker` as `classifier` decides.
    #[must_use]
    pub const fn new(breaker: Breaker, classifier: C) -> Self {
        Self {
            breaker,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}
