//! Whose identity the sink writes with: always the service's own, never the caller's (the
//! user's token may not grant `graph:upsert`, and may have expired by the time the queued
//! result is sent). Any [`TokenProvider`] works: `ServiceCredentials` in production, a
//! `StaticToken` in tests.

pub use umcp_authz::remote::{StaticToken, TokenProvider};
