//! Establishing and ending sessions: login, refresh rotation, logout, API-key exchange.

use umcp_authz::claims::AuthMethod;

use crate::api_keys;
use crate::clock::now_micros;
use crate::error::AuthError;
use crate::refresh::{self, Rotation};
use crate::revocations::RevocationKind;
use crate::service::AuthCore;
use crate::tokens::AccessToken;
use crate::validate;
use umcp_authz::Principal;

type Result<T> = std::result::Result<T, AuthError>;

/// An access token and, for password sessions, its refresh token.
#[derive(Debug, Clone)]
pub struct TokenPair {
    /// The access token.
    pub access: AccessToken,
    /// The refresh token (`None` for API-key exchanges).
    pub refresh: Option<refresh::Issued>,
}

impl AuthCore {
    /// Username and password → tokens. Unknown users, wrong passwords and disabled accounts
    /// all get the same answer after the same work (one argon2 verification).
    ///
    /// # Errors
    /// [`AuthError::InvalidInput`] for malformed input, [`AuthError::Throttled`] while
    /// locked out, [`AuthError::CredentialsRejected`] for bad credentials.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        peer: Option<&str>,
    ) -> Result<TokenPair> {
        let username = validate::username("username", username)?;
        validate::login_password("password", password)?;
        self.throttle.check(&username, peer)?;
        let user = self.users.by_username(&username).await?;
        let matched = self
            .passwords
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        let user = match user {
            Some(user) if matched && !user.disabled => user,
            _ => {
                self.throttle.failure(&username, peer);
                tracing::info!(peer = peer.unwrap_or("unknown"), "login failed");
                return Err(AuthError::invalid_credentials());
            }
        };
        self.throttle.success(&username);
        if self.passwords.needs_rehash(&user.password_hash) {
            self.upgrade_hash(&user.id, password).await;
        }
        let refresh = self.refresh.start(&user.id).await?;
        let access = self.tokens.mint(
            &user.id,
            &user.username,
            &user.roles,
            &refresh.sid,
            AuthMethod::Password,
        );
        tracing::info!(user_id = %user.id, sid = %refresh.sid, "login succeeded");
        Ok(TokenPair {
            access,
            refresh: Some(refresh),
        })
    }

    /// Rotates a refresh token. Reuse of a rotated token revokes the whole session.
    ///
    /// # Errors
    /// [`AuthError::InvalidInput`] for an empty token, [`AuthError::CredentialsRejected`] for
    /// an unknown, expired, revoked or reused token or a disabled user.
    pub async fn refresh(&self, token: &str) -> Result<TokenPair> {
        if token.is_empty() {
            return Err(AuthError::invalid("refresh_token", "is required"));
        }
        let issued = match self.refresh.rotate(token).await? {
            Rotation::Rotated(issued) => issued,
            Rotation::Reused { sid, .. } => {
                self.revoke_session(&sid).await?;
                return Err(AuthError::RefreshTokenReused);
            }
        };
        let user = self.users.by_id(&issued.user_id).await?;
        let Some(user) = user.filter(|u| !u.disabled) else {
            self.refresh.revoke_family(&issued.sid).await?;
            return Err(AuthError::rejected("the user is disabled"));
        };
        let access = self.tokens.mint(
            &user.id,
            &user.username,
            &user.roles,
            &issued.sid,
            AuthMethod::Refresh,
        );
        Ok(TokenPair {
            access,
            refresh: Some(issued),
        })
    }

    /// Ends the caller's session: revokes the presented access token and the refresh-token
    /// family (the given refresh token's, else the access token's own session). For an
    /// API-key token only the token itself is revoked (revoke the key to stop the rest).
    ///
    /// # Errors
    /// [`AuthError::CredentialsRejected`] for an unknown refresh token,
    /// [`AuthError::NotPermitted`] for another user's refresh token; store errors.
    pub async fn logout(&self, caller: &Principal, refresh_token: &str) -> Result<()> {
        let sid = if refresh_token.is_empty() {
            (caller.auth_method != AuthMethod::ApiKey).then(|| caller.session_id.clone())
        } else {
            let (sid, user_id) = self.refresh.family_of(refresh_token).await?;
            if user_id != caller.user_id {
                return Err(AuthError::NotPermitted(
                    "refresh_token belongs to another user".into(),
                ));
            }
            Some(sid)
        };
        let token_expiry = caller.expires_at.saturating_mul(1_000_000) + self.leeway_micros;
        self.revocations
            .revoke(RevocationKind::Token, &caller.token_id, token_expiry)
            .await?;
        if let Some(sid) = sid {
            self.revoke_session(&sid).await?;
        }
        tracing::info!(user_id = %caller.user_id, "logout");
        Ok(())
    }

    /// API key → access token (no refresh token).
    ///
    /// # Errors
    /// [`AuthError::InvalidInput`] for a key that is not an `umcp_` key (checked offline),
    /// [`AuthError::CredentialsRejected`] for an unknown, revoked or expired key or a disabled
    /// owner, [`AuthError::NotPermitted`] when the owner no longer holds any of its roles.
    pub async fn exchange(&self, key: &str) -> Result<AccessToken> {
        if !api_keys::well_formed(key) {
            return Err(AuthError::invalid(
                "api_key",
                format!(
                    "not an umcp API key (expected `umcp_` and {} letters or digits with a valid checksum)",
                    api_keys::KEY_LEN - api_keys::PREFIX.len()
                ),
            ));
        }
        let record = self
            .api_keys
            .by_secret(key)
            .await?
            .ok_or_else(|| AuthError::rejected("invalid api key"))?;
        if record.revoked {
            return Err(AuthError::rejected("api key has been revoked"));
        }
        if record.expires_at.is_some_and(|t| t <= now_micros()) {
            return Err(AuthError::rejected("api key has expired"));
        }
        let owner = self.users.by_id(&record.owner).await?;
        let Some(owner) = owner.filter(|u| !u.disabled) else {
            return Err(AuthError::rejected("the api key's owner is disabled"));
        };
        let roles = record.effective_roles(&owner.roles);
        if roles.is_empty() {
            return Err(AuthError::NotPermitted(
                "the api key's roles are no longer held by its owner".into(),
            ));
        }
        self.api_keys.touch(&record).await?;
        Ok(self.tokens.mint(
            &owner.id,
            &owner.username,
            &roles,
            &record.sid(),
            AuthMethod::ApiKey,
        ))
    }

    /// Rehashes a password made with older parameters. A failure only costs the upgrade, so
    /// it is logged and the login goes on.
    async fn upgrade_hash(&self, user_id: &str, password: &str) {
        let result = match self.passwords.hash(password).await {
            Ok(hash) => self
                .users
                .set_password_hash(user_id, hash)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => tracing::info!(user_id, "password hash upgraded to the current parameters"),
            Err(e) => tracing::warn!(user_id, error = %e, "password hash upgrade failed"),
        }
    }

    /// Revokes a refresh-token family and every access token of its session.
    pub(crate) async fn revoke_session(&self, sid: &str) -> Result<()> {
        if !sid.starts_with("key:") {
            self.refresh.revoke_family(sid).await?;
        }
        self.revocations
            .revoke(
                RevocationKind::Session,
                sid,
                now_micros() + self.horizon_micros,
            )
            .await?;
        Ok(())
    }
}
