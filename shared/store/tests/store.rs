//! The store's one integration-test binary: the conformance suite on every backend (embedded
//! always; Neo4j whenever its launcher is available), Grafeo-specific behaviour, and chaos on a
//! Neo4j of its own.

mod conformance;
#[path = "store/grafeo.rs"]
mod grafeo;
#[path = "store/neo4j.rs"]
mod neo4j;
#[path = "store/neo4j_chaos.rs"]
mod neo4j_chaos;
