//! The access-token format shared by the auth service (which signs) and every verifier.
//!
//! JWS compact serialisation, header `{"alg":"EdDSA","typ":"at+jwt","kid":"<kid>"}` (RFC 9068
//! style `typ`), Ed25519 signatures, and the claims below. Times are Unix seconds.

use serde::{Deserialize, Serialize};

use crate::permissions::Role;

/// The only accepted `alg`.
pub const ALGORITHM: &str = "EdDSA";
/// The only accepted `typ`.
pub const TOKEN_TYPE: &str = "at+jwt";
/// Default `iss`.
pub const DEFAULT_ISSUER: &str = "umcp-auth";
/// Default `aud`.
pub const DEFAULT_AUDIENCE: &str = "umcp";

/// How the session behind a token was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Username and password (`Login`).
    Password,
    /// A rotated refresh token (`Refresh`).
    Refresh,
    /// An API key (`ExchangeApiKey`).
    ApiKey,
}

impl AuthMethod {
    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Refresh => "refresh",
            Self::ApiKey => "api_key",
        }
    }
}

/// Access-token claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience (a single string).
    pub aud: String,
    /// User id.
    pub sub: String,
    /// Username, for logs and `WhoAmI` (not used for decisions).
    pub name: String,
    /// Role names (`viewer`, `developer`, `admin`, `service`); unknown names grant nothing.
    pub roles: Vec<String>,
    /// Token id (UUIDv7), for single-token revocation.
    pub jti: String,
    /// Session id: the refresh-token family (or `key:<api key id>`), for session revocation.
    pub sid: String,
    /// How the session was established.
    pub amr: AuthMethod,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expires at.
    pub exp: i64,
}

impl Claims {
    /// The roles this token grants (unknown names dropped).
    #[must_use]
    pub fn parsed_roles(&self) -> Vec<Role> {
        self.roles.iter().filter_map(|r| Role::parse(r)).collect()
    }
}

/// The JOSE header the auth service writes and verifiers require.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Must be [`ALGORITHM`].
    pub alg: String,
    /// Must be [`TOKEN_TYPE`].
    pub typ: String,
    /// Key id; must name a key of the JWKS.
    pub kid: String,
}
