//! Where the client's bearer token comes from: the one [`TokenProvider`] trait of
//! `umcp-authz`, implemented by the service's own `ServiceCredentials` (an API key exchanged for
//! short-lived access tokens) and by [`StaticToken`] (tests and tools). The client asks for a
//! token on every send, so renewal is the provider's business.

pub use umcp_authz::remote::{StaticToken, TokenProvider};
