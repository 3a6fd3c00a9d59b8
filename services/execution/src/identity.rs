//! Who is calling: the user id of the verified access token. Every per-user decision
//! (idempotency keys, per-user concurrency) goes through [`caller`].

use tonic::Request;

use crate::error::ExecError;

/// The calling user's id, from the principal the auth layer put on the request.
///
/// # Errors
/// When the request did not pass the auth layer (a wiring mistake): `UNAUTHENTICATED`.
pub fn caller<T>(request: &Request<T>) -> Result<String, ExecError> {
    umcp_authz::principal(request)
        .map(|p| p.user_id.clone())
        .map_err(|status| ExecError::Unauthenticated(status.message().to_owned()))
}
