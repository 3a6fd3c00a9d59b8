//! The gRPC adapter: decode, find the caller, call the domain, encode, map the error. Every
//! decision (permissions, ownership, the revocation feed) is the domain's, in [`crate::service`].

use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::adapters::Map;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use umcp_authz::Principal;
use umcp_authz::permissions::Role;
use umcp_proto::auth::v1 as pb;
use umcp_proto::auth::v1::auth_service_server::AuthService;
use umcp_proto::common::v1::PageResponse;

use crate::admin::KeyOwnerFilter;
use crate::api_keys::ApiKey;
use crate::clock::{micros_of, timestamp};
use crate::error::AuthError;
use crate::revocations::Revocation;
use crate::service::{Accounts, RevocationBatch};
use crate::sessions::TokenPair;
use crate::users::User;
use crate::validate::{self, role_to_proto};

/// The `AuthService` implementation.
#[derive(Debug, Clone)]
pub struct AuthGrpc {
    core: Arc<dyn Accounts>,
    trust_forwarded_for: bool,
    /// Flips to true at shutdown so open `WatchRevocations` streams end and graceful shutdown
    /// does not wait for them forever.
    stopping: watch::Receiver<bool>,
}

impl AuthGrpc {
    /// Wraps the domain (`AuthCore` in production).
    #[must_use]
    pub fn new(
        core: Arc<dyn Accounts>,
        trust_forwarded_for: bool,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            core,
            trust_forwarded_for,
            stopping,
        }
    }

    /// The authenticated caller, as verified by the `umcp-authz` layer in front of this
    /// service (the same verifier and permission table as everywhere in the mesh).
    fn caller<T>(request: &Request<T>) -> Result<Arc<Principal>, Status> {
        umcp_authz::principal(request)
    }

    /// The client address used for throttling.
    fn peer<T>(&self, request: &Request<T>) -> Option<String> {
        if self.trust_forwarded_for {
            let forwarded = request
                .metadata()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty());
            if let Some(ip) = forwarded {
                return Some(ip.to_owned());
            }
        }
        request.remote_addr().map(|a| a.ip().to_string())
    }
}

fn tokens(core: &dyn Accounts, pair: TokenPair) -> pb::Tokens {
    let (refresh_token, refresh_ttl) = match pair.refresh {
        Some(r) => (
            r.token,
            u32::try_from(core.refresh_ttl().as_secs()).unwrap_or(u32::MAX),
        ),
        None => (String::new(), 0),
    };
    pb::Tokens {
        access_token: pair.access.token,
        expires_in_seconds: u32::try_from(core.access_ttl_secs()).unwrap_or(u32::MAX),
        refresh_token,
        refresh_expires_in_seconds: refresh_ttl,
        token_type: "Bearer".into(),
    }
}

fn roles_proto(roles: &[Role]) -> Vec<i32> {
    roles.iter().map(|r| role_to_proto(*r)).collect()
}

fn user_proto(u: &User) -> pb::User {
    pb::User {
        id: u.id.clone(),
        username: u.username.clone(),
        roles: roles_proto(&u.roles),
        disabled: u.disabled,
        created_at: Some(timestamp(u.created_at)),
    }
}

fn key_proto(k: &ApiKey) -> pb::ApiKeyInfo {
    pb::ApiKeyInfo {
        id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        owner_user_id: k.owner.clone(),
        roles: roles_proto(&k.roles),
        created_at: Some(timestamp(k.created_at)),
        expires_at: k.expires_at.map(timestamp),
        last_used_at: k.last_used_at.map(timestamp),
        revoked: k.revoked,
    }
}

/// Trims a `limit + 1` fetch to `limit` items and the cursor of the next page.
fn paged<T>(
    mut items: Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> String,
) -> (Vec<T>, Option<PageResponse>) {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_page_token = if more {
        items.last().map(&id).unwrap_or_default()
    } else {
        String::new()
    };
    (items, Some(PageResponse { next_page_token }))
}

fn batch_proto(batch: RevocationBatch) -> Result<pb::WatchRevocationsResponse, Status> {
    Ok(pb::WatchRevocationsResponse {
        revocations: batch.revocations.iter().map(Revocation::to_proto).collect(),
        snapshot: batch.snapshot,
    })
}

/// The status of a failed domain call. Unexpected failures are logged here, where every
/// domain call's error passes, because their detail never reaches the caller.
fn failed(err: AuthError) -> Status {
    if let AuthError::Unexpected(detail) = &err {
        tracing::error!(error = %detail, "auth internal error");
    }
    Status::from(err)
}

/// The status of a failed `Refresh`: a reused refresh token is also flagged for the audit
/// layer, which records it as a security violation.
fn refresh_failed(err: AuthError) -> Status {
    let reused = err == AuthError::RefreshTokenReused;
    let mut status = failed(err);
    if reused {
        status.metadata_mut().insert(
            umcp_audit_client::VIOLATION_HEADER,
            tonic::metadata::MetadataValue::from_static("refresh_token_reuse"),
        );
    }
    status
}

type Rpc<T> = Result<Response<T>, Status>;

type RevocationFeed = Map<
    ReceiverStream<RevocationBatch>,
    fn(RevocationBatch) -> Result<pb::WatchRevocationsResponse, Status>,
>;

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Rpc<pb::LoginResponse> {
        let peer = self.peer(&request);
        let req = request.into_inner();
        let pair = self
            .core
            .login(&req.username, &req.password, peer.as_deref())
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(tokens(self.core.as_ref(), pair)),
        }))
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> Rpc<pb::RefreshResponse> {
        let pair = self
            .core
            .refresh(&request.into_inner().refresh_token)
            .await
            .map_err(refresh_failed)?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(tokens(self.core.as_ref(), pair)),
        }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Rpc<pb::LogoutResponse> {
        let caller = Self::caller(&request)?;
        self.core
            .logout(&caller, &request.into_inner().refresh_token)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn exchange_api_key(
        &self,
        request: Request<pb::ExchangeApiKeyRequest>,
    ) -> Rpc<pb::ExchangeApiKeyResponse> {
        let access = self
            .core
            .exchange(&request.into_inner().api_key)
            .await
            .map_err(failed)?;
        let pair = TokenPair {
            access,
            refresh: None,
        };
        Ok(Response::new(pb::ExchangeApiKeyResponse {
            tokens: Some(tokens(self.core.as_ref(), pair)),
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Rpc<pb::CreateApiKeyResponse> {
        let caller = Self::caller(&request)?;
        let req = request.into_inner();
        let expires_at = match &req.expires_at {
            Some(ts) => Some(micros_of(ts).ok_or_else(|| {
                AuthError::invalid("expires_at", "not a valid timestamp (nanos must be 0..1e9)")
            })?),
            None => None,
        };
        let (key, secret) = self
            .core
            .create_api_key(
                &caller,
                &req.name,
                expires_at,
                &req.roles,
                &req.owner_user_id,
            )
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: Some(key_proto(&key)),
            api_key: secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Rpc<pb::ListApiKeysResponse> {
        let caller = Self::caller(&request)?;
        let req = request.into_inner();
        let (limit, after) = validate::page(req.page.as_ref())?;
        let filter = KeyOwnerFilter::parse(&req.owner_user_id)?;
        let keys = self
            .core
            .list_api_keys(&caller, &filter, after.as_deref(), limit + 1)
            .await
            .map_err(failed)?;
        let (keys, page) = paged(keys, limit, |k| k.id.clone());
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.iter().map(key_proto).collect(),
            page,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Rpc<pb::RevokeApiKeyResponse> {
        let caller = Self::caller(&request)?;
        self.core
            .revoke_api_key(&caller, &request.into_inner().key_id)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Rpc<pb::CreateUserResponse> {
        let caller = Self::caller(&request)?;
        let req = request.into_inner();
        let user = self
            .core
            .create_user(&caller, &req.username, &req.password, &req.roles)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(user_proto(&user)),
        }))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Rpc<pb::ListUsersResponse> {
        let caller = Self::caller(&request)?;
        let (limit, after) = validate::page(request.get_ref().page.as_ref())?;
        let users = self
            .core
            .list_users(&caller, after.as_deref(), limit + 1)
            .await
            .map_err(failed)?;
        let (users, page) = paged(users, limit, |u| u.id.clone());
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(user_proto).collect(),
            page,
        }))
    }

    async fn set_user_roles(
        &self,
        request: Request<pb::SetUserRolesRequest>,
    ) -> Rpc<pb::SetUserRolesResponse> {
        let caller = Self::caller(&request)?;
        let req = request.into_inner();
        let user = self
            .core
            .set_user_roles(&caller, &req.user_id, &req.roles)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::SetUserRolesResponse {
            user: Some(user_proto(&user)),
        }))
    }

    async fn disable_user(
        &self,
        request: Request<pb::DisableUserRequest>,
    ) -> Rpc<pb::DisableUserResponse> {
        let caller = Self::caller(&request)?;
        let user = self
            .core
            .disable_user(&caller, &request.into_inner().user_id)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::DisableUserResponse {
            user: Some(user_proto(&user)),
        }))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Rpc<pb::WhoAmIResponse> {
        let caller = Self::caller(&request)?;
        Ok(Response::new(pb::WhoAmIResponse {
            user_id: caller.user_id.clone(),
            username: caller.username.clone(),
            roles: roles_proto(&caller.roles),
            permissions: caller
                .permissions()
                .iter()
                .map(|p| p.scope().to_owned())
                .collect(),
            auth_method: caller.auth_method.as_str().into(),
            token_expires_at: Some(timestamp(caller.expires_at.saturating_mul(1_000_000))),
        }))
    }

    async fn get_jwks(&self, _request: Request<pb::GetJwksRequest>) -> Rpc<pb::GetJwksResponse> {
        let jwks = self.core.jwks();
        Ok(Response::new(pb::GetJwksResponse {
            keys: jwks.keys,
            jwks_json: jwks.json,
        }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Rpc<pb::RotateSigningKeyResponse> {
        let caller = Self::caller(&request)?;
        let (kid, published_kids) = self
            .core
            .rotate_signing_key(&caller)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::RotateSigningKeyResponse {
            kid,
            published_kids,
        }))
    }

    type WatchRevocationsStream = RevocationFeed;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Rpc<Self::WatchRevocationsStream> {
        let caller = Self::caller(&request)?;
        let feed = Arc::clone(&self.core)
            .watch_revocations(&caller, self.stopping.clone())
            .map_err(failed)?;
        let encode: fn(RevocationBatch) -> _ = batch_proto;
        Ok(Response::new(ReceiverStream::new(feed).map(encode)))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn a_reused_refresh_token_is_flagged_for_the_audit_layer() {
        let status = refresh_failed(AuthError::RefreshTokenReused);
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            status
                .metadata()
                .get(umcp_audit_client::VIOLATION_HEADER)
                .unwrap(),
            "refresh_token_reuse"
        );
    }

    #[test]
    fn other_failures_carry_no_violation() {
        for status in [
            refresh_failed(AuthError::invalid_credentials()),
            failed(AuthError::RefreshTokenReused),
            failed(AuthError::Unexpected("detail".into())),
        ] {
            assert!(
                status
                    .metadata()
                    .get(umcp_audit_client::VIOLATION_HEADER)
                    .is_none(),
                "{status:?}"
            );
        }
    }
}
