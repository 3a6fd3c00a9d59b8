//! The verified caller, put into request extensions by the auth layer.

use std::sync::Arc;

use crate::claims::{AuthMethod, Claims};
use crate::permissions::{Permission, Role};

/// Who is calling, from a verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id (`sub`).
    pub user_id: String,
    /// Username (for logs and audit only).
    pub username: String,
    /// Known roles of the token.
    pub roles: Vec<Role>,
    /// Token id (`jti`).
    pub token_id: String,
    /// Session id (`sid`).
    pub session_id: String,
    /// How the session was established.
    pub auth_method: AuthMethod,
    /// Issued at (Unix seconds).
    pub issued_at: i64,
    /// Expiry (Unix seconds).
    pub expires_at: i64,
    /// The bearer token itself, so calls made on the caller's behalf can carry it.
    pub token: Arc<str>,
}

impl Principal {
    /// Builds the principal of verified `claims`.
    #[must_use]
    pub fn from_claims(claims: &Claims, token: Arc<str>) -> Self {
        Self {
            user_id: claims.sub.clone(),
            username: claims.name.clone(),
            roles: claims.parsed_roles(),
            token_id: claims.jti.clone(),
            session_id: claims.sid.clone(),
            auth_method: claims.amr,
            issued_at: claims.iat,
            expires_at: claims.exp,
            token,
        }
    }

    /// Whether any of the roles grants `permission`.
    #[must_use]
    pub fn has(&self, permission: Permission) -> bool {
        self.roles.iter().any(|r| r.grants(permission))
    }

    /// Every permission the roles grant, sorted, without duplicates.
    #[must_use]
    pub fn permissions(&self) -> Vec<Permission> {
        let mut all: Vec<Permission> = self
            .roles
            .iter()
            .flat_map(|r| r.permissions().iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Role names, comma-separated (for messages).
    #[must_use]
    pub fn role_names(&self) -> String {
        if self.roles.is_empty() {
            return "none".into();
        }
        self.roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
