//! Whose identity the sink writes with: always the service's own, never the caller's (the
//! user's token may not grant `graph:upsert`, and may have expired by the time the queued
//! result is sent).

use std::fmt;

use tonic::metadata::{Ascii, MetadataValue};
use umcp_authz::remote::ServiceCredentials;
use umcp_proto::graph::v1::UpsertRequest;

/// Adds the service's credentials to an upsert.
#[async_trait::async_trait]
pub trait Credentials: Send + Sync + fmt::Debug {
    /// Sets `authorization` on `request`.
    ///
    /// # Errors
    /// When no token can be had (e.g. the auth service is unreachable).
    async fn authorize(
        &self,
        request: &mut tonic::Request<UpsertRequest>,
    ) -> Result<(), tonic::Status>;
}

/// The production source: the service API key exchanged for short-lived tokens.
#[async_trait::async_trait]
impl Credentials for ServiceCredentials {
    async fn authorize(
        &self,
        request: &mut tonic::Request<UpsertRequest>,
    ) -> Result<(), tonic::Status> {
        ServiceCredentials::authorize(self, request).await
    }
}

/// A token fixed at construction (tests, or a token minted by a deployment tool).
#[derive(Clone)]
pub struct FixedToken(MetadataValue<Ascii>);

impl FixedToken {
    /// `Bearer <token>` on every request.
    ///
    /// # Errors
    /// When the token cannot be a header value.
    pub fn new(token: &str) -> Result<Self, String> {
        format!("Bearer {token}")
            .parse()
            .map(Self)
            .map_err(|_| "the token is not a valid header value".to_owned())
    }
}

impl fmt::Debug for FixedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("FixedToken").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Credentials for FixedToken {
    async fn authorize(
        &self,
        request: &mut tonic::Request<UpsertRequest>,
    ) -> Result<(), tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(())
    }
}
