//! Generated code for the umcp v1 APIs, plus the encoded descriptor set that server reflection
//! serves (all services, so `grpcurl describe` works against any process, the gateway included).

// The generated modules are not ours to document or lint; the hand-written ones are.
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

pub mod catalogue;
#[warn(missing_docs, unreachable_pub, clippy::all)]
pub mod codec;

/// Encoded `FileDescriptorSet` of every umcp proto file (and the well-known types they import).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("umcp_descriptor");

/// `umcp.common.v1`: typed values, paging, error details, audit events, method policy.
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
        /// The event vocabulary lives in `umcp.common.v1` (the method policy names it too).
        pub use crate::common::v1::EventType;
    }
}
