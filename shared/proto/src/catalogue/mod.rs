//! The method catalogue: what every RPC needs, records and may repeat, read once from the
//! `umcp.common.v1.policy` options declared next to each RPC in `proto/`.
//!
//! It is the only place per-method facts come from: the authorization layer (gateway and every
//! service), the audit layer, the gateway's router and health, and the rate limits all ask it.
//! Loading refuses a descriptor set in which any RPC lacks a valid policy, and the unit tests
//! load the one compiled into every binary, so a new RPC without a policy fails the build's
//! tests rather than slipping through at run time.

#![warn(missing_docs, clippy::all, clippy::pedantic)]

mod load;
mod names;

pub use names::code_name;

use std::collections::HashMap;
use std::sync::LazyLock;

pub use crate::common::v1::{EventType, Permission};
pub use load::CatalogueError;
use tonic::Code;

/// Services every umcp process serves itself, to anyone (health checks and reflection carry no
/// data a caller could misuse, and orchestrators probe without tokens).
pub const INFRASTRUCTURE_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a token.
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token whose roles grant this permission.
    Permission(Permission),
}

/// What a repeat of a call does, which decides whether it may be retried without the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideEffects {
    /// Reads only.
    None,
    /// Writes whose repeat leaves the same state.
    Idempotent,
    /// Repeats are recognised only with an idempotency key in the request.
    IdempotentWithKey,
    /// Every call acts again.
    Unsafe,
}

impl SideEffects {
    /// Whether a client may resend the call on its own after a transport failure, whatever the
    /// request holds.
    #[must_use]
    pub const fn retry_safe(self) -> bool {
        matches!(self, Self::None | Self::Idempotent)
    }
}

/// How a method is audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRule {
    /// The action name in events (`upsert`, `execute`, …).
    pub action: String,
    /// Recorded durably before the call runs; the call is refused when it cannot be.
    pub before: Option<EventType>,
    /// Recorded when the call succeeds.
    pub ok: EventType,
    /// Recorded when it fails.
    pub failed: EventType,
    /// These codes add a `security_violation` event.
    pub violation_on: Vec<Code>,
    /// These codes add a `rate_limit_exceeded` event.
    pub rate_limited_on: Vec<Code>,
}

/// One RPC and its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `/package.Service/Method`, as in HTTP/2 `:path`.
    pub path: String,
    /// Fully qualified service, `umcp.graph.v1.GraphService`.
    pub service: String,
    /// Method name, `Query`.
    pub name: String,
    /// Who may call it.
    pub access: Access,
    /// What it records, if anything beyond the authorization decision.
    pub audit: Option<AuditRule>,
    /// Whether it may be retried.
    pub side_effects: SideEffects,
    /// The rate-limit class it counts against.
    pub rate_class: String,
    /// The client sends a stream.
    pub client_streaming: bool,
    /// The server answers with a stream.
    pub server_streaming: bool,
}

/// What a request path is, as far as the catalogue knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A method of an [`INFRASTRUCTURE_SERVICES`] service: public, served locally.
    Infrastructure,
    /// A umcp RPC.
    Method(&'a Method),
    /// The service exists but has no such method.
    UnknownMethod {
        /// The fully qualified service.
        service: &'a str,
        /// The method asked for.
        method: &'a str,
    },
    /// No such service.
    UnknownService(&'a str),
    /// Not a `/package.Service/Method` path.
    Malformed,
}

/// Every umcp RPC with its policy. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct MethodCatalogue {
    methods: Vec<Method>,
    by_path: HashMap<String, usize>,
    services: Vec<String>,
}

static GLOBAL: LazyLock<MethodCatalogue> = LazyLock::new(|| {
    // The descriptor set is generated at build time from `proto/`; the unit tests load it, so
    // a failure here is a build defect, never an input error.
    MethodCatalogue::from_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .unwrap_or_else(|e| panic!("the compiled-in method catalogue is invalid: {e}"))
});

impl MethodCatalogue {
    /// The catalogue of the descriptor set compiled into this binary.
    #[must_use]
    pub fn global() -> &'static Self {
        &GLOBAL
    }

    /// Reads every RPC of an encoded `FileDescriptorSet`.
    ///
    /// # Errors
    /// When the set does not decode, or an RPC has no policy or an invalid one; the error
    /// names the RPC.
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, CatalogueError> {
        let methods = load::methods(bytes)?;
        let mut by_path = HashMap::with_capacity(methods.len());
        let mut services: Vec<String> = Vec::new();
        for (index, method) in methods.iter().enumerate() {
            by_path.insert(method.path.clone(), index);
            if !services.contains(&method.service) {
                services.push(method.service.clone());
            }
        }
        Ok(Self {
            methods,
            by_path,
            services,
        })
    }

    /// Classifies a request path.
    #[must_use]
    pub fn lookup<'a>(&'a self, path: &'a str) -> Lookup<'a> {
        let Some((service, method)) = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
        else {
            return Lookup::Malformed;
        };
        if INFRASTRUCTURE_SERVICES.contains(&service) {
            return Lookup::Infrastructure;
        }
        if let Some(&index) = self.by_path.get(path) {
            return Lookup::Method(&self.methods[index]);
        }
        if self.services.iter().any(|s| s == service) {
            Lookup::UnknownMethod { service, method }
        } else {
            Lookup::UnknownService(service)
        }
    }

    /// The RPC at `path`, if it is one.
    #[must_use]
    pub fn method(&self, path: &str) -> Option<&Method> {
        self.by_path.get(path).map(|&index| &self.methods[index])
    }

    /// Every RPC, in declaration order.
    pub fn methods(&self) -> impl Iterator<Item = &Method> {
        self.methods.iter()
    }

    /// Fully qualified names of every umcp service, in declaration order.
    #[must_use]
    pub fn services(&self) -> &[String] {
        &self.services
    }
}

impl Permission {
    /// The scope name in tokens and messages, e.g. `graph:query`.
    #[must_use]
    pub const fn scope(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::ToolsRead => "tools:read",
            Self::ToolsLint => "tools:lint",
            Self::ToolsExecute => "tools:execute",
            Self::ToolsTest => "tools:test",
            Self::ToolsGenerate => "tools:generate",
            Self::GraphQuery => "graph:query",
            Self::GraphUpsert => "graph:upsert",
            Self::GraphDelete => "graph:delete",
            Self::SystemAdmin => "system:admin",
            Self::AuditWrite => "audit:write",
            Self::AuthWatch => "auth:watch",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.scope())
    }
}

#[cfg(test)]
mod tests;
