//! Who may do what: access-token claims ([`claims`]), the compact JWS format ([`jws`]), roles
//! and the one RPC permission table ([`permissions`]), the verifier with its JWKS cache and
//! revocation set ([`verifier`], [`keys`], [`revocations`], shared through Redis by [`shared`]), and the tower layer that enforces
//! it all on every request ([`layer`]).

#![warn(missing_docs)]

pub mod claims;
pub mod forwarded;
pub mod jws;
pub mod keys;
pub mod layer;
pub mod permissions;
pub mod principal;
pub mod remote;
pub mod revocations;
pub mod runtime;
pub mod shared;
pub mod verifier;

pub use layer::{AuthLayer, AuthObserver, Decision, Outcome, principal};
pub use principal::Principal;
pub use runtime::{AuthClient, AuthClientConfig};
pub use verifier::{AuthError, Verifier, VerifierConfig};
