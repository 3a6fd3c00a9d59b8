//! gRPC plumbing shared by every umcp process: assembling a server with health,
//! reflection, access rules and audit ([`Server`]), the correlation-id layer ([`correlation`]),
//! request deadlines ([`deadline`]), per-RPC metrics ([`metrics`]) and the HTTP operations port
//! ([`ops`]), and `tonic::Status` constructors that carry
//! machine-readable details ([`status`]), and the common `main` of every binary ([`process`]).

#![warn(missing_docs)]

pub mod correlation;
pub mod deadline;
pub mod framing;
pub mod metrics;
pub mod ops;
pub mod process;
mod serve;
pub mod status;

pub use serve::{
    MAX_MESSAGE_BYTES, ServeError, Server, Wiring, reflection_services, server_builder,
};
