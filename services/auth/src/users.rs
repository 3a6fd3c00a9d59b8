//! Users: username (unique, lowercase), argon2id hash, roles, disabled flag.
//!
//! Uniqueness of usernames and every read-modify-write of a user run under one process-wide
//! async mutex: the store has no compare-and-set (and no unique constraint besides the node key,
//! which is the user id).

use std::collections::BTreeMap;

use umcp_authz::permissions::Role;
use umcp_store::{Node, Value};

use crate::clock::now_micros;
use crate::error::AuthError;
use crate::storage::{NodeExt, Records, props};
use crate::validate::new_id;

type Result<T> = std::result::Result<T, AuthError>;

const LABEL: &str = "AuthUser";

/// A user record.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Id (32 hex digits, time-ordered).
    pub id: String,
    /// Lowercase username.
    pub username: String,
    /// Roles, sorted.
    pub roles: Vec<Role>,
    /// Disabled users cannot log in, refresh or exchange API keys.
    pub disabled: bool,
    /// Unix microseconds.
    pub created_at: i64,
    /// PHC string (argon2id).
    pub password_hash: String,
}

impl std::fmt::Debug for User {
    // The hash stays out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// Roles as stored: comma-separated names.
#[must_use]
pub fn roles_to_string(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses stored roles (unknown names dropped: they grant nothing).
#[must_use]
pub fn roles_from_string(s: &str) -> Vec<Role> {
    let mut roles: Vec<Role> = s.split(',').filter_map(Role::parse).collect();
    roles.sort();
    roles.dedup();
    roles
}

fn user_key(id: &str) -> String {
    format!("user_{id}")
}

fn from_node(node: &Node) -> Result<User> {
    Ok(User {
        id: node.string("id")?,
        username: node.string("username")?,
        roles: roles_from_string(&node.string("roles")?),
        disabled: node.flag("disabled"),
        created_at: node.int("created_at")?,
        password_hash: node.string("password_hash")?,
    })
}

/// The user repository.
#[derive(Debug)]
pub struct Users {
    records: Records,
    lock: tokio::sync::Mutex<()>,
}

impl Users {
    /// Over the auth records.
    #[must_use]
    pub fn new(records: Records) -> Self {
        Self {
            records,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether no user exists yet (first start).
    ///
    /// # Errors
    /// Store errors.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(!self.records.any(LABEL).await?)
    }

    /// Creates a user; `username` must already be validated and lowercase.
    ///
    /// # Errors
    /// [`AuthError::NameTaken`] when the username is taken; store errors.
    pub async fn create(
        &self,
        username: &str,
        password_hash: String,
        roles: Vec<Role>,
    ) -> Result<User> {
        let _guard = self.lock.lock().await;
        if self.find_username(username).await?.is_some() {
            return Err(AuthError::NameTaken(format!(
                "username `{username}` is taken (usernames are case-insensitive)"
            )));
        }
        let user = User {
            id: new_id(),
            username: username.to_owned(),
            roles,
            disabled: false,
            created_at: now_micros(),
            password_hash,
        };
        self.write(&user).await?;
        tracing::info!(user_id = %user.id, username = %user.username, "user created");
        Ok(user)
    }

    /// The user with this (lowercase) username.
    ///
    /// # Errors
    /// Store errors.
    pub async fn by_username(&self, username: &str) -> Result<Option<User>> {
        self.find_username(username).await
    }

    /// The user with this id.
    ///
    /// # Errors
    /// Store errors.
    pub async fn by_id(&self, id: &str) -> Result<Option<User>> {
        self.records
            .get(LABEL, &user_key(id))
            .await?
            .as_ref()
            .map(from_node)
            .transpose()
    }

    /// Users in id order after `after`, at most `limit`.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list(&self, after: Option<&str>, limit: u32) -> Result<Vec<User>> {
        let after = after.map(user_key);
        self.records
            .scan(LABEL, "", BTreeMap::new(), "key", after.as_deref(), limit)
            .await?
            .iter()
            .map(from_node)
            .collect()
    }

    /// Replaces a user's roles.
    ///
    /// # Errors
    /// [`AuthError::DoesNotExist`]; store errors.
    pub async fn set_roles(&self, id: &str, roles: Vec<Role>) -> Result<User> {
        self.modify(id, |u| u.roles = roles).await
    }

    /// Replaces a user's password hash.
    ///
    /// # Errors
    /// [`AuthError::DoesNotExist`]; store errors.
    pub async fn set_password_hash(&self, id: &str, password_hash: String) -> Result<User> {
        self.modify(id, |u| u.password_hash = password_hash).await
    }

    /// Disables a user (idempotent).
    ///
    /// # Errors
    /// [`AuthError::DoesNotExist`]; store errors.
    pub async fn disable(&self, id: &str) -> Result<User> {
        self.modify(id, |u| u.disabled = true).await
    }

    async fn modify(&self, id: &str, change: impl FnOnce(&mut User)) -> Result<User> {
        let _guard = self.lock.lock().await;
        let mut user = self
            .by_id(id)
            .await?
            .ok_or_else(|| AuthError::DoesNotExist(format!("user {id} does not exist")))?;
        change(&mut user);
        self.write(&user).await?;
        Ok(user)
    }

    async fn find_username(&self, username: &str) -> Result<Option<User>> {
        let mut params = BTreeMap::new();
        params.insert("u".to_owned(), Value::String(username.into()));
        let nodes = self
            .records
            .scan(LABEL, "n.username = $u", params, "key", None, 1)
            .await?;
        nodes.first().map(from_node).transpose()
    }

    async fn write(&self, user: &User) -> Result<()> {
        self.records
            .put(
                &user_key(&user.id),
                LABEL,
                props([
                    ("id", Value::String(user.id.clone())),
                    ("username", Value::String(user.username.clone())),
                    ("roles", Value::String(roles_to_string(&user.roles))),
                    ("disabled", Value::Bool(user.disabled)),
                    ("created_at", Value::Int(user.created_at)),
                    ("password_hash", Value::String(user.password_hash.clone())),
                ]),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use umcp_store::grafeo::{GrafeoConfig, GrafeoStore};

    #[tokio::test]
    async fn create_find_list_modify() {
        let store = GrafeoStore::open(GrafeoConfig::in_memory()).await.unwrap();
        let users = Users::new(Records::new(Arc::new(store)));
        assert!(users.is_empty().await.unwrap());
        let a = users
            .create("alice", "$h".into(), vec![Role::Viewer])
            .await
            .unwrap();
        let err = users
            .create("alice", "$h".into(), vec![Role::Viewer])
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::NameTaken(_)));
        let b = users
            .create("bob", "$h".into(), vec![Role::Admin])
            .await
            .unwrap();
        assert!(!users.is_empty().await.unwrap());
        assert_eq!(users.by_username("alice").await.unwrap().unwrap(), a);
        assert!(users.by_username("carol").await.unwrap().is_none());
        assert_eq!(users.by_id(&b.id).await.unwrap().unwrap().username, "bob");

        let page = users.list(None, 1).await.unwrap();
        assert_eq!(page, vec![a.clone()]);
        assert_eq!(users.list(Some(&a.id), 10).await.unwrap(), vec![b.clone()]);

        let a2 = users
            .set_roles(&a.id, vec![Role::Viewer, Role::Developer])
            .await
            .unwrap();
        assert_eq!(a2.roles, vec![Role::Viewer, Role::Developer]);
        assert!(users.disable(&a.id).await.unwrap().disabled);
        assert!(users.by_id(&a.id).await.unwrap().unwrap().disabled);
        assert!(matches!(
            users.disable(&new_id()).await,
            Err(AuthError::DoesNotExist(_))
        ));
        assert!(!format!("{a:?}").contains("$h"));
        assert_eq!(
            roles_from_string("admin,bogus,viewer"),
            vec![Role::Viewer, Role::Admin]
        );
    }
}
