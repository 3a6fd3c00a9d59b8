//! Roles, permissions and the one table that maps every RPC of every service to what it needs.
//!
//! Default deny: a method missing from [`METHODS`] is refused by [`requirement`]. A unit test
//! walks the descriptor set and fails when an RPC is added to a proto without a row here.

use std::fmt;

/// A permission a role grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// `tools:read`: list languages and tool metadata.
    ToolsRead,
    /// `tools:lint`.
    ToolsLint,
    /// `tools:execute`: run code in the sandbox.
    ToolsExecute,
    /// `tools:test`: run tests in the sandbox.
    ToolsTest,
    /// `tools:generate`: render templates.
    ToolsGenerate,
    /// `graph:query`: read-only queries and metrics.
    GraphQuery,
    /// `graph:upsert`.
    GraphUpsert,
    /// `graph:delete`.
    GraphDelete,
    /// `system:admin`: users, keys of others, signing keys, the audit log.
    SystemAdmin,
    /// `audit:write`: record audit events (service role only).
    AuditWrite,
    /// `auth:watch`: follow revocations (service role only).
    AuthWatch,
}

impl Permission {
    /// Every permission, in a stable order.
    pub const ALL: [Self; 11] = [
        Self::ToolsRead,
        Self::ToolsLint,
        Self::ToolsExecute,
        Self::ToolsTest,
        Self::ToolsGenerate,
        Self::GraphQuery,
        Self::GraphUpsert,
        Self::GraphDelete,
        Self::SystemAdmin,
        Self::AuditWrite,
        Self::AuthWatch,
    ];

    /// The wire name, e.g. `graph:query`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
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

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role; its permissions are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Read-only user of the tools and graph.
    Viewer,
    /// Viewer plus running code, tests and templates.
    Developer,
    /// Developer plus graph writes and administration.
    Admin,
    /// Internal service-to-service identity.
    Service,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 4] = [Self::Viewer, Self::Developer, Self::Admin, Self::Service];

    /// The claim value, e.g. `developer`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Developer => "developer",
            Self::Admin => "admin",
            Self::Service => "service",
        }
    }

    /// Parses a claim value; unknown names are `None` (and grant nothing).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// What the role grants.
    #[must_use]
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::{
            AuditWrite, AuthWatch, GraphDelete, GraphQuery, GraphUpsert, SystemAdmin, ToolsExecute,
            ToolsGenerate, ToolsLint, ToolsRead, ToolsTest,
        };
        match self {
            Self::Viewer => &[ToolsRead, ToolsLint, GraphQuery],
            Self::Developer => &[
                ToolsRead,
                ToolsLint,
                GraphQuery,
                ToolsExecute,
                ToolsTest,
                ToolsGenerate,
            ],
            Self::Admin => &[
                ToolsRead,
                ToolsLint,
                GraphQuery,
                ToolsExecute,
                ToolsTest,
                ToolsGenerate,
                GraphUpsert,
                GraphDelete,
                SystemAdmin,
            ],
            // Services persist their results (execution → graph) under their own identity,
            // never the caller's: the user's token may lack graph:upsert or expire meanwhile.
            Self::Service => &[AuditWrite, AuthWatch, GraphUpsert],
        }
    }

    /// Whether the role grants `permission`.
    #[must_use]
    pub fn grants(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a method needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Anyone, with or without a token.
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token whose roles grant this permission.
    Permission(Permission),
}

/// The table: `(service, method, requirement)` for every RPC (DESIGN.md "Who may do what").
pub const METHODS: &[(&str, &str, Requirement)] = {
    use Permission::{
        AuditWrite, AuthWatch, GraphDelete, GraphQuery, GraphUpsert, SystemAdmin, ToolsExecute,
        ToolsGenerate, ToolsLint, ToolsRead, ToolsTest,
    };
    use Requirement::{Authenticated, Permission as P, Public};
    const AUTH: &str = "umcp.auth.v1.AuthService";
    const GRAPH: &str = "umcp.graph.v1.GraphService";
    const EXEC: &str = "umcp.execution.v1.ExecutionService";
    const AUDIT: &str = "umcp.audit.v1.AuditService";
    &[
        (AUTH, "Login", Public),
        (AUTH, "Refresh", Public),
        (AUTH, "ExchangeApiKey", Public),
        (AUTH, "GetJwks", Public),
        (AUTH, "Logout", Authenticated),
        (AUTH, "WhoAmI", Authenticated),
        // Own keys; acting on another user's keys additionally needs system:admin, checked by
        // the auth service because it depends on the request body.
        (AUTH, "CreateApiKey", Authenticated),
        (AUTH, "ListApiKeys", Authenticated),
        (AUTH, "RevokeApiKey", Authenticated),
        (AUTH, "CreateUser", P(SystemAdmin)),
        (AUTH, "ListUsers", P(SystemAdmin)),
        (AUTH, "SetUserRoles", P(SystemAdmin)),
        (AUTH, "DisableUser", P(SystemAdmin)),
        (AUTH, "RotateSigningKey", P(SystemAdmin)),
        (AUTH, "WatchRevocations", P(AuthWatch)),
        (EXEC, "ListLanguages", P(ToolsRead)),
        (EXEC, "Lint", P(ToolsLint)),
        (EXEC, "Execute", P(ToolsExecute)),
        (EXEC, "ExecuteStream", P(ToolsExecute)),
        (EXEC, "RunTests", P(ToolsTest)),
        (EXEC, "GenerateCode", P(ToolsGenerate)),
        (GRAPH, "Query", P(GraphQuery)),
        (GRAPH, "GetMetrics", P(GraphQuery)),
        (GRAPH, "Upsert", P(GraphUpsert)),
        (GRAPH, "Delete", P(GraphDelete)),
        (AUDIT, "Record", P(AuditWrite)),
        (AUDIT, "Query", P(SystemAdmin)),
        (AUDIT, "Tail", P(SystemAdmin)),
        (AUDIT, "Verify", P(SystemAdmin)),
        (AUDIT, "ExportCheckpoint", P(SystemAdmin)),
    ]
};

/// Services that are public as a whole (health and reflection).
const PUBLIC_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// What the gRPC path `/package.Service/Method` needs; `None` when the method is not in the
/// table (refuse it: default deny).
#[must_use]
pub fn requirement(path: &str) -> Option<Requirement> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if PUBLIC_SERVICES.contains(&service) {
        return Some(Requirement::Public);
    }
    METHODS
        .iter()
        .find(|(s, m, _)| *s == service && *m == method)
        .map(|&(_, _, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn every_rpc_in_the_protos_has_exactly_one_row() {
        let set = prost_types::FileDescriptorSet::decode(umcp_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut seen = 0;
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    let rows = METHODS
                        .iter()
                        .filter(|(s, m, _)| *s == name && *m == method.name())
                        .count();
                    assert_eq!(rows, 1, "{name}/{} has {rows} rows", method.name());
                    seen += 1;
                }
            }
        }
        assert_eq!(
            seen,
            METHODS.len(),
            "the table has rows for methods that do not exist"
        );
    }

    #[test]
    fn unknown_methods_are_denied_and_health_is_public() {
        assert_eq!(requirement("/umcp.graph.v1.GraphService/Nope"), None);
        assert_eq!(requirement("/x/y"), None);
        assert_eq!(requirement("garbage"), None);
        assert_eq!(
            requirement("/grpc.health.v1.Health/Check"),
            Some(Requirement::Public)
        );
        assert_eq!(
            requirement("/umcp.graph.v1.GraphService/Upsert"),
            Some(Requirement::Permission(Permission::GraphUpsert))
        );
    }

    #[test]
    fn roles_follow_the_design() {
        assert!(Role::Viewer.grants(Permission::GraphQuery));
        assert!(!Role::Viewer.grants(Permission::ToolsExecute));
        assert!(Role::Developer.grants(Permission::ToolsExecute));
        assert!(!Role::Developer.grants(Permission::GraphUpsert));
        assert!(Role::Admin.grants(Permission::SystemAdmin));
        assert!(!Role::Admin.grants(Permission::AuditWrite));
        assert!(Role::Service.grants(Permission::AuditWrite));
        assert!(Role::Service.grants(Permission::GraphUpsert));
        assert!(!Role::Service.grants(Permission::GraphDelete));
        assert!(!Role::Service.grants(Permission::GraphQuery));
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
