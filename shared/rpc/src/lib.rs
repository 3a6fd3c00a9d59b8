//! gRPC plumbing shared by every umcp process: serving a set of services with health,
//! reflection and bounded limits ([`serve`]), the correlation-id layer ([`correlation`]),
//! request deadlines ([`deadline`]) and `tonic::Status` constructors that carry
//! machine-readable details ([`status`]), and the common `main` of every binary ([`process`]).

pub mod correlation;
pub mod deadline;
pub mod framing;
pub mod process;
mod serve;
pub mod status;

pub use serve::{
    MAX_MESSAGE_BYTES, ServeError, reflection_services, serve, serve_with_auth,
    serve_with_auth_and, server_builder,
};
