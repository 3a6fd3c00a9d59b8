//! Error classification, retries and circuit breakers of the Neo4j backend.
//!
//! Every error from `neo4rs` becomes a [`Failure`]: the [`StoreError`] callers see, whether a
//! retry may help (transient server errors, dropped connections), and what the breaker records.
//! Caller errors (syntax, type errors, missing parameters, constraint violations) are answers
//! from a healthy server: recorded as successes, never retried. Read and write calls have their
//! own breakers (`umcp_resilience`'s): a read outage does not stop writes from being tried and
//! the other way round.

use std::future::Future;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use umcp_resilience::breaker::{Breaker, BreakerConfig};
use umcp_resilience::classify::Outcome;
use umcp_resilience::retry::Backoff;

use crate::error::StoreError;

/// Attempts per call, the first included.
pub const ATTEMPTS: u32 = 3;
/// Consecutive failures that open the read breaker.
pub const READ_FAILURES_TO_OPEN: usize = 5;
/// Consecutive failures that open the write breaker.
pub const WRITE_FAILURES_TO_OPEN: usize = 3;
/// Probe calls let through by a half-open breaker; it closes unless every probe fails.
pub const PROBES_TO_CLOSE: usize = 2;

/// A classified failure of one attempt.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: StoreError,
    pub(crate) transient: bool,
    pub(crate) outcome: Outcome,
}

impl Failure {
    /// The caller's fault: answered by a healthy server, not retried.
    pub(crate) fn caller(error: StoreError) -> Self {
        Self {
            error,
            transient: false,
            outcome: Outcome::Success,
        }
    }

    /// Says nothing about the server (our own deadline, a decoding problem).
    pub(crate) fn neutral(error: StoreError) -> Self {
        Self {
            error,
            transient: false,
            outcome: Outcome::Ignore,
        }
    }

    fn infra(error: StoreError, transient: bool) -> Self {
        Self {
            error,
            transient,
            outcome: Outcome::Failure,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self::caller(error)
    }
}

/// `(line, column)` from a Neo4j message ending in `(line 2, column 5 (offset: 12))`.
fn position(message: &str) -> (Option<u32>, Option<u32>) {
    let number_after = |tag: &str| {
        let start = message.rfind(tag)? + tag.len();
        let digits: String = message[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    (number_after("line "), number_after("column "))
}

/// Classifies an error of `neo4rs`; `context` names the operation in logs and messages.
pub(crate) fn classify(err: neo4rs::Error, context: &str) -> Failure {
    use neo4rs::Error as E;
    match err {
        E::Neo4j(e) => classify_server(&e, context),
        E::IOError { .. }
        | E::ConnectionTimedOut
        | E::IncompleteBoltExchange
        | E::Ignored(_)
        | E::RequestIgnoredError
        | E::ServerUnavailableError(_)
        | E::UnexpectedMessage(_) => {
            tracing::warn!(error = %err, context, "neo4j connection failed");
            Failure::infra(
                StoreError::Unavailable(format!("{context}: neo4j connection failed: {err}")),
                true,
            )
        }
        // neo4rs reports every pool failure that is not a connect error (in practice the
        // acquisition timeout) as `ConnectionError`: the pool is exhausted, so retrying here
        // would only add load.
        E::ConnectionError => Failure::infra(
            StoreError::Unavailable(format!(
                "{context}: no neo4j connection became free in time"
            )),
            false,
        ),
        E::AuthenticationError(_)
        | E::UnsupportedVersion(..)
        | E::ProtocolMismatch(_)
        | E::UrlParseError(_)
        | E::UnsupportedScheme(_)
        | E::InvalidDnsName(_)
        | E::InvalidConfig => {
            tracing::error!(error = %err, context, "neo4j refused the connection");
            Failure::infra(
                StoreError::Unavailable(format!("{context}: cannot connect to neo4j: {err}")),
                false,
            )
        }
        other => Failure::neutral(StoreError::Internal(format!("{context}: {other}"))),
    }
}

fn classify_server(e: &neo4rs::Neo4jError, context: &str) -> Failure {
    use neo4rs::{Neo4jClientErrorKind as C, Neo4jErrorKind as K};
    let code = e.code();
    let message = e.message().to_string();
    match code {
        "Neo.ClientError.Statement.SyntaxError" => {
            let (line, column) = position(&message);
            return Failure::caller(StoreError::Syntax {
                message,
                line,
                column,
            });
        }
        "Neo.ClientError.Statement.AccessMode" | "Neo.ClientError.Security.Forbidden"
            if context == "query" =>
        {
            return Failure::caller(StoreError::WriteInReadOnlyQuery {
                clause: "a write".into(),
                line: None,
                column: None,
            });
        }
        "Neo.ClientError.Schema.ConstraintValidationFailed" => {
            return Failure::caller(StoreError::ConstraintViolated(message));
        }
        _ => {}
    }
    if code.starts_with("Neo.ClientError.Transaction.TransactionTimedOut") {
        return Failure::neutral(StoreError::DeadlineExceeded(format!(
            "neo4j stopped the {context} at its time limit and rolled it back"
        )));
    }
    match e.kind() {
        K::Transient | K::Client(C::SessionExpired) => Failure::infra(
            StoreError::Unavailable(format!("{context}: neo4j is busy ({code}), retry")),
            true,
        ),
        K::Client(C::Security(_) | C::FatalDiscovery | C::ProtocolViolation) => {
            tracing::error!(code, message = %message, context, "neo4j refused the request");
            Failure::infra(
                StoreError::Unavailable(format!("{context}: neo4j refused: {code}")),
                false,
            )
        }
        K::Client(C::TransactionTerminated) => Failure::infra(
            StoreError::Unavailable(format!("{context}: neo4j terminated the transaction")),
            false,
        ),
        K::Client(_) => Failure::caller(StoreError::QueryFailed(message)),
        K::Database | K::Unknown => {
            tracing::error!(code, message = %message, context, "neo4j failed");
            Failure::infra(
                StoreError::Unavailable(format!("{context}: neo4j failed ({code})")),
                false,
            )
        }
    }
}

/// Read or write: which breaker a call goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// The two breakers and the retry loop.
#[derive(Debug)]
pub(crate) struct Guard {
    read: Breaker,
    write: Breaker,
    backoff: Backoff,
    rng: Mutex<fastrand::Rng>,
}

fn breaker_config(failures: usize, open: Duration) -> BreakerConfig {
    BreakerConfig {
        // Count-based window of exactly `failures` calls at a 100 % threshold: the breaker
        // opens after that many failures in a row.
        sliding_window_size: failures,
        minimum_number_of_calls: failures,
        failure_rate_threshold: 100.0,
        slow_call_rate_threshold: 100.0,
        // Slowness is the deadline's business (queries are bounded); never a breaker signal.
        slow_call_duration_threshold: Duration::from_secs(24 * 3600),
        wait_duration_in_open_state: open,
        permitted_number_of_calls_in_half_open_state: PROBES_TO_CLOSE,
    }
}

impl Guard {
    pub(crate) fn new(read_open: Duration, write_open: Duration) -> Self {
        Self {
            read: Breaker::new(
                "neo4j-read",
                breaker_config(READ_FAILURES_TO_OPEN, read_open),
            ),
            write: Breaker::new(
                "neo4j-write",
                breaker_config(WRITE_FAILURES_TO_OPEN, write_open),
            ),
            backoff: Backoff {
                base: Duration::from_millis(50),
                cap: Duration::from_secs(1),
            },
            rng: Mutex::new(fastrand::Rng::new()),
        }
    }

    pub(crate) fn breaker(&self, access: Access) -> &Breaker {
        match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        }
    }

    /// Runs `attempt` up to [`ATTEMPTS`] times while it fails transiently and the deadline
    /// leaves room for the backoff; fails fast while the breaker is open.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        access: Access,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let breaker = self.breaker(access);
        let mut tries = 0;
        loop {
            tries += 1;
            let permit = breaker.try_acquire().map_err(|_| {
                let wait = breaker.retry_after().unwrap_or_default();
                StoreError::Unavailable(format!(
                    "neo4j {} circuit is open (retry in {} ms)",
                    match access {
                        Access::Read => "read",
                        Access::Write => "write",
                    },
                    wait.as_millis()
                ))
            })?;
            match attempt().await {
                Ok(value) => {
                    permit.record(Outcome::Success);
                    return Ok(value);
                }
                Err(failure) => {
                    permit.record(failure.outcome);
                    let delay = self.backoff.delay(tries, &mut self.rng.lock());
                    if !failure.transient || tries >= ATTEMPTS || Instant::now() + delay >= deadline
                    {
                        return Err(failure.error);
                    }
                    tracing::debug!(tries, delay_ms = delay.as_millis() as u64, error = %failure.error, "neo4j call retried");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn positions_are_read_from_neo4j_messages() {
        assert_eq!(
            position("Invalid input 'R': expected ')' (line 2, column 1 (offset: 9))"),
            (Some(2), Some(1))
        );
        assert_eq!(position("no position"), (None, None));
    }

    #[tokio::test]
    async fn only_transient_failures_are_retried_and_caller_errors_never_open() {
        let guard = Guard::new(Duration::from_secs(30), Duration::from_secs(60));
        let far = Instant::now() + Duration::from_secs(60);
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = guard
            .run(Access::Write, far, || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err(Failure::infra(StoreError::Unavailable("x".into()), true))
            })
            .await;
        assert!(matches!(out, Err(StoreError::Unavailable(_))));
        assert_eq!(calls.load(Ordering::Relaxed), ATTEMPTS);
        // three failures in a row: the write breaker is open, the read one is not
        let out: Result<(), _> = guard.run(Access::Write, far, || async { Ok(()) }).await;
        assert!(
            matches!(&out, Err(StoreError::Unavailable(m)) if m.contains("circuit is open")),
            "{out:?}"
        );
        let calls = AtomicU32::new(0);
        for _ in 0..20 {
            let out: Result<(), _> = guard
                .run(Access::Read, far, || async {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Err(Failure::caller(StoreError::QueryFailed("bad".into())))
                })
                .await;
            assert!(matches!(out, Err(StoreError::QueryFailed(_))));
        }
        assert_eq!(
            calls.load(Ordering::Relaxed),
            20,
            "caller errors are not retried"
        );
        assert_eq!(
            guard.breaker(Access::Read).state(),
            umcp_resilience::breaker::State::Closed
        );
    }
}
