//! Audit events for every decision of an [`umcp_authz::AuthLayer`] (gateway and services):
//! `authz_granted`, `authz_denied`, and for rejected tokens `auth_failure` (no or malformed
//! header), `token_validation` (a token that fails a check) plus `security_violation` when the
//! token was forged (wrong algorithm or type, bad signature, unknown key).

use umcp_authz::verifier::AuthError;
use umcp_authz::{AuthObserver, Decision, Outcome};
use umcp_proto::audit::v1::EventType;

use crate::emit::Emitter;

impl AuthObserver for Emitter {
    fn decided(&self, decision: &Decision<'_>) {
        let event = |event_type: EventType, action: &str| {
            self.event(event_type, decision.path, action)
                .headers(decision.headers, None)
        };
        match &decision.outcome {
            Outcome::Granted(principal) => {
                self.emit(event(EventType::AuthzGranted, "authorize").actor(principal));
            }
            Outcome::Denied(principal, permission) => {
                self.emit(
                    event(EventType::AuthzDenied, "authorize")
                        .actor(principal)
                        .outcome(tonic::Code::PermissionDenied, "missing permission")
                        .detail("permission", permission.scope()),
                );
            }
            Outcome::Unauthenticated(error) => {
                let reason = error.to_string();
                let kind = match error {
                    AuthError::Missing | AuthError::BadHeader => EventType::AuthFailure,
                    _ => EventType::TokenValidation,
                };
                self.emit(
                    event(kind, "authenticate").outcome(tonic::Code::Unauthenticated, &reason),
                );
                if forged(error) {
                    self.emit(
                        event(EventType::SecurityViolation, "authenticate")
                            .outcome(tonic::Code::Unauthenticated, &reason)
                            .detail("violation", "forged_token"),
                    );
                }
            }
        }
    }
}

/// Rejections that only a forged or tampered token produces (an expired or revoked token is an
/// ordinary failure).
fn forged(error: &AuthError) -> bool {
    use umcp_authz::jws::JwsError;
    matches!(
        error,
        AuthError::Token(JwsError::Algorithm(_) | JwsError::Type(_) | JwsError::Signature)
            | AuthError::UnknownKey(_)
            | AuthError::Issuer
            | AuthError::Audience
    )
}
