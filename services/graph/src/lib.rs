//! The knowledge-graph gRPC service
