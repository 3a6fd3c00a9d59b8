//! The timeout's error.

use std::fmt;
use std::sync::LazyLock;

static DEADLINE_EXCEEDED: LazyLock<tonic::Status> =
    LazyLock::new(|| tonic::Status::deadline_exceeded("the call timed out"));

/// The attempt took longer than the layer's timeout. Zero-sized (boxing does not allocate);
/// its source is a `DEADLINE_EXCEEDED` [`tonic::Status`] for tonic to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Elapsed;

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
