//! Roles and what they grant. What each RPC needs is declared in the contract (the
//! `umcp.common.v1.policy` option of every RPC) and read by [`umcp_proto::catalogue`]; this
//! module only says which permissions each role holds.

use std::fmt;

/// A permission a role grants; declared in the contract (`umcp.common.v1.Permission`), where
/// each RPC's policy names the one it needs.
pub use umcp_proto::catalogue::Permission;

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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The design's table (DESIGN.md "Who may do what"), method by method, against the
    /// policies declared in the contract: a changed option or role fails here.
    #[test]
    fn each_role_may_call_exactly_the_designed_methods() {
        use umcp_proto::catalogue::{Access, MethodCatalogue};
        const PUBLIC: &[&str] = &["Login", "Refresh", "ExchangeApiKey", "GetJwks"];
        const SIGNED_IN: &[&str] = &[
            "Logout",
            "WhoAmI",
            "CreateApiKey",
            "ListApiKeys",
            "RevokeApiKey",
        ];
        let viewer: &[&str] = &["ListLanguages", "Lint", "GraphService/Query", "GetMetrics"];
        let developer = [
            viewer,
            &["Execute", "ExecuteStream", "RunTests", "GenerateCode"],
        ]
        .concat();
        let admin = [
            &developer[..],
            &[
                "Upsert",
                "Delete",
                "CreateUser",
                "ListUsers",
                "SetUserRoles",
                "DisableUser",
                "RotateSigningKey",
                "AuditService/Query",
                "Tail",
                "Verify",
                "ExportCheckpoint",
            ],
        ]
        .concat();
        let service: &[&str] = &["Record", "WatchRevocations", "Upsert"];
        let table = [
            (Role::Viewer, viewer),
            (Role::Developer, &developer[..]),
            (Role::Admin, &admin[..]),
            (Role::Service, service),
        ];
        let names = |m: &umcp_proto::catalogue::Method| {
            [
                m.name.clone(),
                format!("{}/{}", m.service.rsplit('.').next().unwrap(), m.name),
            ]
        };
        for method in MethodCatalogue::global().methods() {
            let [short, qualified] = names(method);
            let listed = |list: &[&str]| {
                list.contains(&short.as_str()) || list.contains(&qualified.as_str())
            };
            match method.access {
                Access::Public => assert!(listed(PUBLIC), "{} is public", method.path),
                Access::Authenticated => {
                    assert!(listed(SIGNED_IN), "{} is open to any caller", method.path)
                }
                Access::Permission(permission) => {
                    for (role, allowed) in table {
                        assert_eq!(
                            role.grants(permission),
                            listed(allowed),
                            "{role} on {}",
                            method.path
                        );
                    }
                }
            }
        }
    }
}
