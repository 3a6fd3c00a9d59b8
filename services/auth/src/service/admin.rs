//! Administration: users, API keys (own and, for admins, others'), signing keys.
//!
//! The permission table lets every authenticated caller reach the API-key calls; acting on
//! another user's keys depends on the request body, so it is checked here (with the checks
//! of `access`).

use umcp_authz::Principal;
use umcp_authz::permissions::{Permission, Role};

use super::access::{require, require_owner};
use crate::api_keys::ApiKey;
use crate::clock::now_micros;
use crate::error::AuthError;
use crate::revocations::RevocationKind;
use crate::service::AuthCore;
use crate::users::User;
use crate::validate;

type Result<T> = std::result::Result<T, AuthError>;

/// Whose keys `ListApiKeys` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOwnerFilter {
    /// The caller's.
    Own,
    /// Everyone's (admin).
    All,
    /// One user's (admin unless it is the caller).
    User(String),
}

impl KeyOwnerFilter {
    /// Parses `owner_user_id`: empty = own, `*` = all, else a user id.
    ///
    /// # Errors
    /// [`AuthError::InvalidInput`] for a malformed id.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "" => Ok(Self::Own),
            "*" => Ok(Self::All),
            id => {
                validate::id("owner_user_id", id)?;
                Ok(Self::User(id.to_owned()))
            }
        }
    }
}

impl AuthCore {
    /// Creates a user (admin).
    ///
    /// # Errors
    /// Invalid input, [`AuthError::NameTaken`], store errors.
    pub async fn create_user(
        &self,
        caller: &Principal,
        username: &str,
        password: &str,
        roles: &[i32],
    ) -> Result<User> {
        require(caller, Permission::SystemAdmin)?;
        let username = validate::username("username", username)?;
        validate::new_password("password", password)?;
        let roles = validate::roles("roles", roles, true)?;
        self.provision_user(&username, password, roles).await
    }

    /// Lists users (admin).
    ///
    /// # Errors
    /// Store errors.
    pub async fn list_users(
        &self,
        caller: &Principal,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<User>> {
        require(caller, Permission::SystemAdmin)?;
        self.users.list(after, limit).await
    }

    /// Replaces a user's roles (admin). Tokens issued before stop working (USER revocation),
    /// so a downgrade takes effect at once.
    ///
    /// # Errors
    /// Invalid input, [`AuthError::DoesNotExist`], store errors.
    pub async fn set_user_roles(
        &self,
        caller: &Principal,
        user_id: &str,
        roles: &[i32],
    ) -> Result<User> {
        require(caller, Permission::SystemAdmin)?;
        validate::id("user_id", user_id)?;
        let roles = validate::roles("roles", roles, true)?;
        if user_id == caller.user_id && !roles.contains(&Role::Admin) {
            return Err(AuthError::invalid(
                "roles",
                "you cannot remove the admin role from yourself (ask another admin)",
            ));
        }
        let before = self
            .users
            .by_id(user_id)
            .await?
            .ok_or_else(|| AuthError::DoesNotExist(format!("user {user_id} does not exist")))?;
        let user = self.users.set_roles(user_id, roles).await?;
        if before.roles != user.roles {
            self.revoke_user(user_id).await?;
        }
        tracing::info!(user_id, by = %caller.user_id, "user roles set");
        Ok(user)
    }

    /// Disables a user (admin): their tokens stop working, refresh tokens and API keys stop
    /// exchanging.
    ///
    /// # Errors
    /// Invalid input (including disabling yourself), [`AuthError::DoesNotExist`], store errors.
    pub async fn disable_user(&self, caller: &Principal, user_id: &str) -> Result<User> {
        require(caller, Permission::SystemAdmin)?;
        validate::id("user_id", user_id)?;
        if user_id == caller.user_id {
            return Err(AuthError::invalid("user_id", "you cannot disable yourself"));
        }
        let user = self.users.disable(user_id).await?;
        self.revoke_user(user_id).await?;
        tracing::info!(user_id, by = %caller.user_id, "user disabled");
        Ok(user)
    }

    async fn revoke_user(&self, user_id: &str) -> Result<()> {
        self.revocations
            .revoke(
                RevocationKind::User,
                user_id,
                now_micros() + self.horizon_micros,
            )
            .await
            .map(|_| ())
    }

    /// Creates an API key for the caller, or (admin) for `owner_user_id`. Requested roles must
    /// be a subset of the owner's.
    ///
    /// # Errors
    /// Invalid input, [`AuthError::NotPermitted`] (another user's key without admin, or
    /// roles the owner lacks), [`AuthError::DoesNotExist`] for an unknown owner, store errors.
    pub async fn create_api_key(
        &self,
        caller: &Principal,
        name: &str,
        expires_at: Option<i64>,
        roles: &[i32],
        owner_user_id: &str,
    ) -> Result<(ApiKey, String)> {
        validate::key_name("name", name)?;
        if expires_at.is_some_and(|t| t <= now_micros()) {
            return Err(AuthError::invalid(
                "expires_at",
                "must be in the future (or unset for no expiry)",
            ));
        }
        let roles = validate::roles("roles", roles, false)?;
        let owner_id = if owner_user_id.is_empty() {
            caller.user_id.clone()
        } else {
            validate::id("owner_user_id", owner_user_id)?;
            owner_user_id.to_owned()
        };
        require_owner(caller, &owner_id)?;
        let owner =
            self.users.by_id(&owner_id).await?.ok_or_else(|| {
                AuthError::DoesNotExist(format!("user {owner_id} does not exist"))
            })?;
        if owner.disabled {
            return Err(AuthError::invalid("owner_user_id", "the user is disabled"));
        }
        // A caller creating their own key cannot exceed the token they hold either: a key
        // exchanged with restricted roles must not mint a key with more.
        let ceiling: Vec<Role> = if owner.id == caller.user_id {
            owner
                .roles
                .iter()
                .copied()
                .filter(|r| caller.roles.contains(r))
                .collect()
        } else {
            owner.roles.clone()
        };
        if ceiling.is_empty() {
            return Err(AuthError::NotPermitted(
                "the caller's token grants none of the owner's roles, so no key can be created"
                    .into(),
            ));
        }
        if let Some((i, role)) = roles.iter().enumerate().find(|(_, r)| !ceiling.contains(r)) {
            return Err(AuthError::NotPermitted(format!(
                "roles[{i}]: role {role} is not allowed; a key grants a subset of [{}]",
                crate::users::roles_to_string(&ceiling)
            )));
        }
        let roles = if roles.is_empty() && ceiling != owner.roles {
            ceiling
        } else {
            roles
        };
        self.api_keys
            .create(&owner.id, name, roles, expires_at)
            .await
    }

    /// Lists API keys per `filter`.
    ///
    /// # Errors
    /// [`AuthError::NotPermitted`] for others' keys without admin; store errors.
    pub async fn list_api_keys(
        &self,
        caller: &Principal,
        filter: &KeyOwnerFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApiKey>> {
        let owner = match filter {
            KeyOwnerFilter::Own => Some(caller.user_id.as_str()),
            KeyOwnerFilter::All => {
                require(caller, Permission::SystemAdmin)?;
                None
            }
            KeyOwnerFilter::User(id) => {
                require_owner(caller, id)?;
                Some(id.as_str())
            }
        };
        self.api_keys.list(owner, after, limit).await
    }

    /// Revokes an API key (own, or any for admins); tokens already exchanged from it stop
    /// working too (SESSION revocation of `key:<id>`).
    ///
    /// # Errors
    /// Invalid input, [`AuthError::DoesNotExist`], [`AuthError::NotPermitted`], store errors.
    pub async fn revoke_api_key(&self, caller: &Principal, key_id: &str) -> Result<()> {
        validate::id("key_id", key_id)?;
        let key =
            self.api_keys.by_id(key_id).await?.ok_or_else(|| {
                AuthError::DoesNotExist(format!("api key {key_id} does not exist"))
            })?;
        require_owner(caller, &key.owner)?;
        let key = self.api_keys.revoke(key_id).await?;
        self.revoke_session(&key.sid()).await
    }

    /// Starts signing with a new key (admin). Returns the new kid and every published kid.
    ///
    /// # Errors
    /// Key-file errors.
    pub async fn rotate_signing_key(&self, caller: &Principal) -> Result<(String, Vec<String>)> {
        require(caller, Permission::SystemAdmin)?;
        let kid = self.keyring.rotate().await?;
        // The verifier on this port learns the new kid now rather than on its first miss.
        self.verifier.keys().refetch(true).await;
        let published = self
            .keyring
            .current_jwks()
            .into_iter()
            .map(|j| j.kid)
            .collect();
        Ok((kid, published))
    }
}

/// Start-up provisioning (the bootstrap admin and service account): no caller, no checks.
impl AuthCore {
    /// Whether any user exists.
    ///
    /// # Errors
    /// Store errors.
    pub(crate) async fn has_users(&self) -> Result<bool> {
        Ok(!self.users.is_empty().await?)
    }

    /// The user named `username` (canonical form), if any.
    ///
    /// # Errors
    /// Store errors.
    pub(crate) async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        self.users.by_username(username).await
    }

    /// Hashes `password` and creates the user.
    ///
    /// # Errors
    /// [`AuthError::NameTaken`], hashing and store errors.
    pub(crate) async fn provision_user(
        &self,
        username: &str,
        password: &str,
        roles: Vec<Role>,
    ) -> Result<User> {
        let hash = self.passwords.hash(password).await?;
        self.users.create(username, hash, roles).await
    }

    /// Creates an API key for `owner_id` (no expiry). Returns the record and the secret.
    ///
    /// # Errors
    /// Store errors.
    pub(crate) async fn provision_api_key(
        &self,
        owner_id: &str,
        name: &str,
        roles: Vec<Role>,
    ) -> Result<(ApiKey, String)> {
        self.api_keys.create(owner_id, name, roles, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_filter_parses() {
        assert_eq!(KeyOwnerFilter::parse("").unwrap(), KeyOwnerFilter::Own);
        assert_eq!(KeyOwnerFilter::parse("*").unwrap(), KeyOwnerFilter::All);
        let id = validate::new_id();
        assert_eq!(
            KeyOwnerFilter::parse(&id).unwrap(),
            KeyOwnerFilter::User(id)
        );
        assert!(KeyOwnerFilter::parse("bob").is_err());
    }
}
