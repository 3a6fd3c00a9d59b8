//! Which client address a service may believe.
//!
//! The gateway terminates client connections, so the services see the gateway's address as the
//! peer; it passes the client's address on in `x-forwarded-for`. A client that reaches a
//! service port directly could send that header too — defeating per-address login throttling
//! and writing a forged address into the audit log — and every local process shares
//! 127.0.0.1, so the peer's IP proves nothing. The header is therefore believed only when the
//! same request carries `x-umcp-forwarder: Bearer <token>` with a valid token of the `service`
//! role (the mesh's own service accounts; the gateway sends its own). Otherwise it is removed,
//! and everything downstream (auth's throttling, audit events) falls back to the TCP peer.
//! The forwarder header is removed in every case: it is a credential.

use http::HeaderMap;

use crate::permissions::Role;
use crate::verifier::Verifier;

/// The client address the gateway vouches for.
pub const FORWARDED_FOR: &str = "x-forwarded-for";
/// `Bearer <token>` of the caller that vouches for [`FORWARDED_FOR`].
pub const FORWARDER: &str = "x-umcp-forwarder";

/// Keeps `x-forwarded-for` only when a `service`-role token vouches for it (module docs).
pub async fn settle(verifier: &Verifier, headers: &mut HeaderMap) {
    let vouched = match headers.remove(FORWARDER) {
        Some(value) if headers.contains_key(FORWARDED_FOR) => {
            match verifier.verify_header(value.to_str().ok()).await {
                Ok(principal) => principal.roles.contains(&Role::Service),
                Err(error) => {
                    tracing::warn!(error = %error, "forwarder token refused; x-forwarded-for ignored");
                    false
                }
            }
        }
        _ => false,
    };
    if !vouched && headers.remove(FORWARDED_FOR).is_some() {
        tracing::debug!("x-forwarded-for without a service forwarder ignored");
    }
}
