//! Every permission and ownership check of the auth domain, in one place.
//!
//! The `umcp-authz` layer in front of the port already enforces the catalogue's permission per
//! RPC; these checks are the domain's own lock on admin operations and the decisions that
//! depend on the request body (whose API keys a call acts on).

use umcp_authz::Principal;
use umcp_authz::permissions::Permission;

use crate::error::AuthError;

/// Refuses callers whose roles do not grant `permission`.
///
/// # Errors
/// [`AuthError::NotPermitted`] naming the permission and the caller's roles.
pub(crate) fn require(caller: &Principal, permission: Permission) -> Result<(), AuthError> {
    if caller.has(permission) {
        Ok(())
    } else {
        Err(AuthError::NotPermitted(format!(
            "this call needs the `{permission}` permission; the caller's roles ({}) do not grant it",
            caller.role_names()
        )))
    }
}

/// Refuses acting on `owner_id`'s API keys unless the caller is that user or an admin.
///
/// # Errors
/// [`AuthError::NotPermitted`].
pub(crate) fn require_owner(caller: &Principal, owner_id: &str) -> Result<(), AuthError> {
    if owner_id == caller.user_id || caller.has(Permission::SystemAdmin) {
        Ok(())
    } else {
        Err(AuthError::NotPermitted(
            "acting on another user's api keys needs the `system:admin` permission".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use umcp_authz::claims::AuthMethod;
    use umcp_authz::permissions::Role;

    use super::*;

    fn caller(roles: Vec<Role>) -> Principal {
        Principal {
            user_id: "u1".into(),
            username: "alice".into(),
            roles,
            token_id: "j1".into(),
            session_id: "s1".into(),
            auth_method: AuthMethod::Password,
            issued_at: 0,
            expires_at: 0,
            token: Arc::from(""),
        }
    }

    #[test]
    fn require_names_the_missing_permission() {
        assert!(require(&caller(vec![Role::Admin]), Permission::SystemAdmin).is_ok());
        let err = require(&caller(vec![]), Permission::SystemAdmin).unwrap_err();
        let AuthError::NotPermitted(message) = err else {
            panic!("{err:?}");
        };
        assert!(message.contains("system:admin"), "{message}");
        assert!(message.contains("(none)"), "{message}");
    }

    #[test]
    fn own_keys_need_no_admin_but_others_do() {
        assert!(require_owner(&caller(vec![]), "u1").is_ok());
        assert!(require_owner(&caller(vec![Role::Admin]), "u2").is_ok());
        assert!(matches!(
            require_owner(&caller(vec![]), "u2"),
            Err(AuthError::NotPermitted(_))
        ));
    }
}
