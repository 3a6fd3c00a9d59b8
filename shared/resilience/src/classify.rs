//! What counts against a breaker: only infrastructure failures, never the caller's mistakes.
//!
//! A backend that answers `INVALID_ARGUMENT` or `NOT_FOUND` is healthy: it understood the
//! request and said no. Counting those would let one client with bad input open the breaker
//! for everybody, so they count as successes (the call still counts towards the window and
//! can still be slow). `CANCELLED` says nothing about the backend (the caller gave up) and is
//! not recorded at all.
//!
//! # What a tower layer below tonic can see
//! A gRPC status travels either in the response headers (a "trailers-only" response: how tonic
//! servers, and our auth layer, answer every immediate error of a unary call) or in the
//! trailers after the body. A layer that completes with the response headers sees only the
//! first kind; a status in trailers (a streaming call failing half-way, or a server that
//! writes headers before failing) is invisible to it and the call counts as a success. Unary
//! calls of our services fail trailers-only, so for them the classification is complete.

use std::error::Error as StdError;

use tonic::Code;

use crate::BoxError;
use crate::timeout::Elapsed;

/// How one call is recorded by a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered (including "no" to a bad request).
    Success,
    /// The backend, or the way to it, failed.
    Failure,
    /// Says nothing about the backend (e.g. the caller cancelled): not recorded.
    Ignore,
}

/// Decides the [`Outcome`] of a call from its result.
pub trait Classify<Res, E> {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;
}

/// The gRPC classifier: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, transport and connect errors, and
/// HTTP 5xx answers without a `grpc-status` are failures; `CANCELLED` and a caller's own short
/// deadline running out ([`Elapsed::caller`]) are ignored; every other
/// code is the backend answering. More codes can be made failures (e.g. `INTERNAL` for a
/// backend known to use it only for its own faults).
#[derive(Debug, Clone, Copy)]
pub struct GrpcClassifier {
    /// Bit `n` set: code `n` is a failure.
    failure_codes: u32,
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcClassifier {
    /// `UNAVAILABLE` and `DEADLINE_EXCEEDED` are failures.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            failure_codes: (1 << Code::Unavailable as u32) | (1 << Code::DeadlineExceeded as u32),
        }
    }

    /// Also counts `code` as a failure.
    #[must_use]
    pub const fn with_failure_code(mut self, code: Code) -> Self {
        self.failure_codes |= 1 << code as u32;
        self
    }

    /// The outcome of a call that ended with `code`.
    #[must_use]
    pub const fn code(&self, code: Code) -> Outcome {
        match code {
            Code::Ok => Outcome::Success,
            Code::Cancelled => Outcome::Ignore,
            c if self.failure_codes & (1 << c as u32) != 0 => Outcome::Failure,
            _ => Outcome::Success,
        }
    }

    /// The outcome of a typed call (above the tonic client).
    #[must_use]
    pub fn status(&self, status: &tonic::Status) -> Outcome {
        self.code(status.code())
    }

    /// The outcome of an error below the tonic client: a [`tonic::Status`] somewhere in the
    /// source chain is classified by its code; anything else (connect, h2, I/O errors) is a
    /// failure of the transport.
    #[must_use]
    pub fn error(&self, error: &(dyn StdError + 'static)) -> Outcome {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(elapsed) = e.downcast_ref::<Elapsed>()
                && !elapsed.counts_against_backend()
            {
                return Outcome::Ignore;
            }
            if let Some(status) = e.downcast_ref::<tonic::Status>() {
                return self.code(status.code());
            }
            next = e.source();
        }
        Outcome::Failure
    }

    /// The outcome of a response at the headers level (see the module docs for the limit).
    #[must_use]
    pub fn response<B>(&self, response: &http::Response<B>) -> Outcome {
        match response.headers().get("grpc-status") {
            Some(value) => self.code(Code::from_bytes(value.as_bytes())),
            None if response.status().is_server_error() => Outcome::Failure,
            None => Outcome::Success,
        }
    }
}

impl<B> Classify<http::Response<B>, BoxError> for GrpcClassifier {
    fn classify(&self, result: &Result<http::Response<B>, BoxError>) -> Outcome {
        match result {
            Ok(response) => self.response(response),
            Err(e) => self.error(e.as_ref()),
        }
    }
}

impl<T> Classify<T, tonic::Status> for GrpcClassifier {
    fn classify(&self, result: &Result<T, tonic::Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(status) => self.status(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(code: Code) -> http::Response<()> {
        http::Response::builder()
            .header("grpc-status", (code as i32).to_string())
            .body(())
            .unwrap()
    }

    #[test]
    fn only_infrastructure_failures_count() {
        let c = GrpcClassifier::new();
        for code in [Code::Unavailable, Code::DeadlineExceeded] {
            assert_eq!(c.response(&grpc(code)), Outcome::Failure, "{code:?}");
            assert_eq!(c.status(&tonic::Status::new(code, "")), Outcome::Failure);
        }
        for code in [
            Code::Ok,
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::ResourceExhausted,
            Code::Internal,
        ] {
            assert_eq!(c.response(&grpc(code)), Outcome::Success, "{code:?}");
        }
        assert_eq!(c.response(&grpc(Code::Cancelled)), Outcome::Ignore);
        let internal = c.with_failure_code(Code::Internal);
        assert_eq!(internal.response(&grpc(Code::Internal)), Outcome::Failure);
    }

    #[test]
    fn http_answers_without_grpc_status() {
        let c = GrpcClassifier::new();
        let status = |s: u16| http::Response::builder().status(s).body(()).unwrap();
        assert_eq!(c.response(&status(503)), Outcome::Failure);
        assert_eq!(c.response(&status(502)), Outcome::Failure);
        // A 200 without grpc-status carries its status in trailers: not visible here.
        assert_eq!(c.response(&status(200)), Outcome::Success);
        assert_eq!(c.response(&status(404)), Outcome::Success);
    }

    #[test]
    fn errors_are_failures_unless_they_carry_a_caller_status() {
        let c = GrpcClassifier::new();
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(c.error(&io), Outcome::Failure);
        let bad = tonic::Status::invalid_argument("bad");
        assert_eq!(c.error(&bad), Outcome::Success);
        let boxed: BoxError = Box::new(tonic::Status::unavailable("x"));
        let r: Result<http::Response<()>, _> = Err(boxed);
        assert_eq!(c.classify(&r), Outcome::Failure);
    }
}
