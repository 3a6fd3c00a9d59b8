//! [`Accounts`]: what the gRPC adapter may ask of the auth domain, as a trait, so the adapter
//! depends on operations, not on [`AuthCore`]'s parts (and tests can put anything behind it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use umcp_authz::Principal;

use super::admin::KeyOwnerFilter;
use super::{AuthCore, RevocationBatch};
use crate::api_keys::ApiKey;
use crate::error::AuthError;
use crate::keyring::Jwks;
use crate::sessions::TokenPair;
use crate::tokens::AccessToken;
use crate::users::User;

type Result<T> = std::result::Result<T, AuthError>;

/// Every operation of the auth service. Each decides its own permissions and ownership; the
/// adapter only decodes and encodes.
#[tonic::async_trait]
pub trait Accounts: Send + Sync + std::fmt::Debug + 'static {
    /// Access-token lifetime in seconds.
    fn access_ttl_secs(&self) -> i64;
    /// Refresh-token lifetime.
    fn refresh_ttl(&self) -> Duration;
    /// The public signing keys.
    fn jwks(&self) -> Jwks;
    /// Password sign-in, throttled per user and per `peer` address.
    async fn login(&self, username: &str, password: &str, peer: Option<&str>) -> Result<TokenPair>;
    /// Rotates a refresh token.
    async fn refresh(&self, token: &str) -> Result<TokenPair>;
    /// Ends the caller's session.
    async fn logout(&self, caller: &Principal, refresh_token: &str) -> Result<()>;
    /// Exchanges an API key for an access token.
    async fn exchange(&self, key: &str) -> Result<AccessToken>;
    /// Creates a user.
    async fn create_user(
        &self,
        caller: &Principal,
        username: &str,
        password: &str,
        roles: &[i32],
    ) -> Result<User>;
    /// A page of users.
    async fn list_users(
        &self,
        caller: &Principal,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<User>>;
    /// Replaces a user's roles.
    async fn set_user_roles(
        &self,
        caller: &Principal,
        user_id: &str,
        roles: &[i32],
    ) -> Result<User>;
    /// Disables a user and revokes their sessions and keys.
    async fn disable_user(&self, caller: &Principal, user_id: &str) -> Result<User>;
    /// Creates an API key; returns it and its one-time secret.
    async fn create_api_key(
        &self,
        caller: &Principal,
        name: &str,
        expires_at: Option<i64>,
        roles: &[i32],
        owner_user_id: &str,
    ) -> Result<(ApiKey, String)>;
    /// A page of API keys.
    async fn list_api_keys(
        &self,
        caller: &Principal,
        filter: &KeyOwnerFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApiKey>>;
    /// Revokes an API key.
    async fn revoke_api_key(&self, caller: &Principal, key_id: &str) -> Result<()>;
    /// Rotates the signing key; returns the new kid and the retired ones.
    async fn rotate_signing_key(&self, caller: &Principal) -> Result<(String, Vec<String>)>;
    /// The revocation feed until `stopping` flips.
    fn watch_revocations(
        self: Arc<Self>,
        caller: &Principal,
        stopping: watch::Receiver<bool>,
    ) -> Result<mpsc::Receiver<RevocationBatch>>;
}

#[tonic::async_trait]
impl Accounts for AuthCore {
    fn access_ttl_secs(&self) -> i64 {
        AuthCore::access_ttl_secs(self)
    }
    fn refresh_ttl(&self) -> Duration {
        AuthCore::refresh_ttl(self)
    }
    fn jwks(&self) -> Jwks {
        AuthCore::jwks(self)
    }
    async fn login(&self, username: &str, password: &str, peer: Option<&str>) -> Result<TokenPair> {
        AuthCore::login(self, username, password, peer).await
    }
    async fn refresh(&self, token: &str) -> Result<TokenPair> {
        AuthCore::refresh(self, token).await
    }
    async fn logout(&self, caller: &Principal, refresh_token: &str) -> Result<()> {
        AuthCore::logout(self, caller, refresh_token).await
    }
    async fn exchange(&self, key: &str) -> Result<AccessToken> {
        AuthCore::exchange(self, key).await
    }
    async fn create_user(
        &self,
        caller: &Principal,
        username: &str,
        password: &str,
        roles: &[i32],
    ) -> Result<User> {
        AuthCore::create_user(self, caller, username, password, roles).await
    }
    async fn list_users(
        &self,
        caller: &Principal,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<User>> {
        AuthCore::list_users(self, caller, after, limit).await
    }
    async fn set_user_roles(
        &self,
        caller: &Principal,
        user_id: &str,
        roles: &[i32],
    ) -> Result<User> {
        AuthCore::set_user_roles(self, caller, user_id, roles).await
    }
    async fn disable_user(&self, caller: &Principal, user_id: &str) -> Result<User> {
        AuthCore::disable_user(self, caller, user_id).await
    }
    async fn create_api_key(
        &self,
        caller: &Principal,
        name: &str,
        expires_at: Option<i64>,
        roles: &[i32],
        owner_user_id: &str,
    ) -> Result<(ApiKey, String)> {
        AuthCore::create_api_key(self, caller, name, expires_at, roles, owner_user_id).await
    }
    async fn list_api_keys(
        &self,
        caller: &Principal,
        filter: &KeyOwnerFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ApiKey>> {
        AuthCore::list_api_keys(self, caller, filter, after, limit).await
    }
    async fn revoke_api_key(&self, caller: &Principal, key_id: &str) -> Result<()> {
        AuthCore::revoke_api_key(self, caller, key_id).await
    }
    async fn rotate_signing_key(&self, caller: &Principal) -> Result<(String, Vec<String>)> {
        AuthCore::rotate_signing_key(self, caller).await
    }
    fn watch_revocations(
        self: Arc<Self>,
        caller: &Principal,
        stopping: watch::Receiver<bool>,
    ) -> Result<mpsc::Receiver<RevocationBatch>> {
        AuthCore::watch_revocations(&self, caller, stopping)
    }
}
