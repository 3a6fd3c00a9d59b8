//! Generated code for the umcp v1 APIs, plus the encoded descriptor set that server reflection
//! serves (all services, so `grpcurl describe` works against any process, the gateway included).

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

pub mod codec;

/// Encoded `FileDescriptorSet` of every umcp proto file (and the well-known types they import).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("umcp_descriptor");

/// `umcp.common.v1`: typed values, paging, error details.
pub mod common {
    pub mod v1 {
        tonic::include_proto!("umcp.common.v1");
    }
}

/// `umcp.graph.v1`: the knowledge graph.
pub mod graph {
    pub mod v1 {
        tonic::include_proto!("umcp.graph.v1");
    }
}

/// `umcp.auth.v1`: users, tokens, keys.
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("umcp.auth.v1");
    }
}

/// `umcp.execution.v1`: sandboxed execution, lint, tests, templates.
pub mod execution {
    pub mod v1 {
        tonic::include_proto!("umcp.execution.v1");
    }
}

/// `umcp.audit.v1`: the hash-chained audit log.
pub mod audit {
    pub mod v1 {
        tonic::include_proto!("umcp.audit.v1");
    }
}

/// Fully qualified names of every umcp gRPC service, in one place for routing and health.
pub const SERVICE_NAMES: &[&str] = &[
    "umcp.auth.v1.AuthService",
    "umcp.graph.v1.GraphService",
    "umcp.execution.v1.ExecutionService",
    "umcp.audit.v1.AuditService",
];

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_decodes_and_lists_every_service() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("descriptor set is valid protobuf");
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                let pkg = f.package().to_owned();
                f.service.iter().map(move |s| format!("{pkg}.{}", s.name()))
            })
            .collect();
        for name in super::SERVICE_NAMES {
            assert!(
                services.iter().any(|s| s == name),
                "{name} missing from descriptor set"
            );
        }
    }
}
