//! Reading the `umcp.common.v1.policy` option of every RPC out of an encoded descriptor set.

use prost_reflect::{DescriptorPool, MethodDescriptor};
use tonic::Code;

use super::{Access, AuditRule, EventType, Method, Permission, SideEffects, names};
use crate::common::v1 as pb;

/// The full name of the method option that carries a policy.
const POLICY_OPTION: &str = "umcp.common.v1.policy";

/// Why a descriptor set cannot become a catalogue.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The bytes are not a valid `FileDescriptorSet`.
    #[error("the descriptor set does not decode: {0}")]
    Decode(#[from] prost_reflect::DescriptorError),
    /// The set does not define the policy option at all.
    #[error("the descriptor set does not define the {POLICY_OPTION} method option")]
    NoPolicyExtension,
    /// An RPC has no policy: every RPC must declare one (default deny).
    #[error("{method} has no ({POLICY_OPTION}) option; every RPC must declare its policy")]
    MissingPolicy {
        /// `/package.Service/Method`.
        method: String,
    },
    /// An RPC's policy is incomplete or contradictory.
    #[error("{method} has an invalid policy: {reason}")]
    Invalid {
        /// `/package.Service/Method`.
        method: String,
        /// What is wrong, and what is allowed.
        reason: String,
    },
}

/// Every RPC of the set, in declaration order, with its validated policy.
pub(super) fn methods(bytes: &[u8]) -> Result<Vec<Method>, CatalogueError> {
    let pool = DescriptorPool::decode(bytes)?;
    let extension = pool
        .get_extension_by_name(POLICY_OPTION)
        .ok_or(CatalogueError::NoPolicyExtension)?;
    let mut out = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let options = method.options();
            if !options.has_extension(&extension) {
                return Err(CatalogueError::MissingPolicy { method: path });
            }
            let policy = options
                .get_extension(&extension)
                .as_message()
                .and_then(|m| m.transcode_to::<pb::MethodPolicy>().ok())
                .ok_or_else(|| invalid(&path, "the option is not a MethodPolicy message"))?;
            out.push(method_of(&method, path, &policy)?);
        }
    }
    Ok(out)
}

fn method_of(
    descriptor: &MethodDescriptor,
    path: String,
    policy: &pb::MethodPolicy,
) -> Result<Method, CatalogueError> {
    let access = access(&path, policy)?;
    let side_effects = match pb::SideEffects::try_from(policy.side_effects) {
        Ok(pb::SideEffects::None) => SideEffects::None,
        Ok(pb::SideEffects::Idempotent) => SideEffects::Idempotent,
        Ok(pb::SideEffects::IdempotentWithKey) => SideEffects::IdempotentWithKey,
        Ok(pb::SideEffects::Unsafe) => SideEffects::Unsafe,
        Ok(pb::SideEffects::Unspecified) | Err(_) => {
            return Err(invalid(
                &path,
                "side_effects must be NONE, IDEMPOTENT, IDEMPOTENT_WITH_KEY or UNSAFE",
            ));
        }
    };
    let rate_class = policy.rate_class.clone();
    if rate_class.is_empty()
        || !rate_class
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(invalid(
            &path,
            "rate_class must be 1 or more lowercase letters or `_`",
        ));
    }
    let audit = policy
        .audit
        .as_ref()
        .map(|a| audit_rule(&path, a))
        .transpose()?;
    Ok(Method {
        service: descriptor.parent_service().full_name().to_owned(),
        name: descriptor.name().to_owned(),
        path,
        access,
        audit,
        side_effects,
        rate_class,
        client_streaming: descriptor.is_client_streaming(),
        server_streaming: descriptor.is_server_streaming(),
    })
}

fn access(path: &str, policy: &pb::MethodPolicy) -> Result<Access, CatalogueError> {
    let permission = Permission::try_from(policy.permission).unwrap_or(Permission::Unspecified);
    match (pb::Access::try_from(policy.access), permission) {
        (Ok(pb::Access::Public), Permission::Unspecified) => Ok(Access::Public),
        (Ok(pb::Access::Authenticated), Permission::Unspecified) => Ok(Access::Authenticated),
        (Ok(pb::Access::Permission), Permission::Unspecified) => Err(invalid(
            path,
            "ACCESS_PERMISSION needs a permission (PERMISSION_TOOLS_READ … PERMISSION_AUTH_WATCH)",
        )),
        (Ok(pb::Access::Permission), p) => Ok(Access::Permission(p)),
        (Ok(pb::Access::Public | pb::Access::Authenticated), _) => Err(invalid(
            path,
            "a permission is allowed only with ACCESS_PERMISSION",
        )),
        (Ok(pb::Access::Unspecified) | Err(_), _) => Err(invalid(
            path,
            "access must be ACCESS_PUBLIC, ACCESS_AUTHENTICATED or ACCESS_PERMISSION",
        )),
    }
}

fn audit_rule(path: &str, policy: &pb::AuditPolicy) -> Result<AuditRule, CatalogueError> {
    if policy.action.is_empty() {
        return Err(invalid(path, "audit.action must not be empty"));
    }
    let event = |value: i32| match EventType::try_from(value) {
        Ok(EventType::Unspecified) | Err(_) => None,
        Ok(e) => Some(e),
    };
    let ok = event(policy.ok).ok_or_else(|| invalid(path, "audit.ok must name an event type"))?;
    Ok(AuditRule {
        action: policy.action.clone(),
        before: event(policy.before),
        ok,
        failed: event(policy.failed).unwrap_or(ok),
        violation_on: codes(path, &policy.violation_on)?,
        rate_limited_on: codes(path, &policy.rate_limited_on)?,
    })
}

fn codes(path: &str, names_in: &[String]) -> Result<Vec<Code>, CatalogueError> {
    names_in
        .iter()
        .map(|name| {
            names::code(name).ok_or_else(|| {
                invalid(
                    path,
                    &format!(
                        "`{name}` is not a gRPC status code name; use one of {}",
                        names::all()
                    ),
                )
            })
        })
        .collect()
}

fn invalid(method: &str, reason: &str) -> CatalogueError {
    CatalogueError::Invalid {
        method: method.to_owned(),
        reason: reason.to_owned(),
    }
}
