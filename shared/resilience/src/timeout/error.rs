//! The timeout's error.

use std::fmt;
use std::sync::LazyLock;

static DEADLINE_EXCEEDED: LazyLock<tonic::Status> =
    LazyLock::new(|| tonic::Status::deadline_exceeded("the call timed out"));

/// The attempt took longer than the layer's timeout. Its source is a `DEADLINE_EXCEEDED`
/// [`tonic::Status`] for tonic to find.
///
/// // why: an attempt cut short by a caller's own tight deadline says more about the caller
/// than about the backend (one client asking for 5 ms answers must not open the breaker for
/// everybody), so the error remembers whether it counts against the backend; the gRPC
/// classifier ignores the ones that do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed {
    counts: bool,
}

impl Default for Elapsed {
    fn default() -> Self {
        Self::backend()
    }
}

impl Elapsed {
    /// The backend was too slow for a budget it should have met: a failure.
    #[must_use]
    pub const fn backend() -> Self {
        Self { counts: true }
    }

    /// The caller's own deadline, shorter than the floor that counts, ran out: not recorded.
    #[must_use]
    pub const fn caller() -> Self {
        Self { counts: false }
    }

    /// Whether this expiry counts against the backend's breaker.
    #[must_use]
    pub const fn counts_against_backend(&self) -> bool {
        self.counts
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("the call timed out")
    }
}

impl std::error::Error for Elapsed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*DEADLINE_EXCEEDED)
    }
}
