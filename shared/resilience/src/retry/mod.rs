//! Retries: exponential backoff with full jitter, a retry budget, and gRPC's rules of what may
//! be retried.
//!
//! // why: a retry turns a brief blip into a success, but a fixed "3 attempts" triples the load
//! on a backend that is already failing, and multiplies across hops. So a retry needs all of:
//! a retryable failure (`UNAVAILABLE`, or a connection error before any response; never a
//! breaker rejection), an idempotent call (never `Execute` without an idempotency key), time
//! left before the caller's deadline, and room in a budget shared by every call to the backend
//! (tower's `TpsBudget`: retries ≤ 20 % of recent calls + 10/s).
//!
//! # Two entry points, and why
//! tonic's generated clients send `http::Request<tonic::body::Body>`, a body that can be read
//! once, so tower's `Retry` (which clones requests) cannot sit under them.
//! - [`Retrier::call`] retries a typed unary call at the call site:
//!   `retrier.call(Idempotency::Idempotent, deadline, |a| client.clone().upsert(req.clone()))`.
//!   The message is cloned per attempt, nothing is buffered, and the breaker and timeout layers
//!   under the client see every attempt. This is what services use for their own clients.
//! - [`RetryLayer`] sits under the tonic client (or in a proxy) and retries requests marked
//!   [`Idempotent`] (or listed by method) by buffering their body, up to a limit. It decides on
//!   the response headers, so the "never after response headers" rule is enforced exactly.
//!
//! Retry at one layer only: a call retried by both the gateway and a service multiplies.

mod backoff;
mod call;
mod layer;
mod policy;
mod replay;
mod service;

pub use backoff::{Attempts, Backoff};
pub use call::{Attempt, Retrier};
pub use layer::RetryLayer;
pub use policy::{BudgetConfig, Idempotency, Idempotent, RetryConfig, RetryStats, is_retryable};
pub use service::Retry;
pub(crate) use service::grpc_timeout;
