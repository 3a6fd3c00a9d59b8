//! The rejection of an open breaker.

use std::fmt;
use std::sync::LazyLock;

/// The status an open breaker means for a gRPC caller, built once.
static UNAVAILABLE: LazyLock<tonic::Status> =
    LazyLock::new(|| tonic::Status::unavailable("circuit breaker open"));

/// The call was not made: the breaker is open (or half-open with every probe slot taken).
///
/// Zero-sized, so boxing it as a tower `BoxError` does not allocate. Its source is an
/// `UNAVAILABLE` [`tonic::Status`], so a tonic client above the layer turns it into
/// `UNAVAILABLE` (tonic looks for a status in the source chain) and keeps this error as the
/// status's source: `is_breaker_open` tells a rejection from a real outage, which matters
/// because a rejection must not be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Open;

impl fmt::Display for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("circuit breaker open")
    }
}

impl std::error::Error for Open {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*UNAVAILABLE)
    }
}

/// Whether `error` (or anything in its source chain) is a breaker rejection.
#[must_use]
pub fn is_breaker_open(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<Open>() {
            return true;
        }
        next = e.source();
    }
    false
}
