//! Compiles every `.proto` under `../../proto` with the vendored `protoc`, so a fresh machine
//! needs no system protobuf compiler.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "umcp/common/v1/common.proto",
    "umcp/common/v1/policy.proto",
    "umcp/common/v1/events.proto",
    "umcp/graph/v1/graph.proto",
    "umcp/auth/v1/auth.proto",
    "umcp/execution/v1/execution.proto",
    "umcp/audit/v1/audit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; prost-build reads PROTOC from the env.
    unsafe_set_protoc(&protoc);

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("umcp_descriptor.bin"))
        // Undecodable requests are the caller's mistake: INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::StrictCodec")
        .compile_protos(&files, &[root])?;
    Ok(())
}

#[allow(unsafe_code)]
fn unsafe_set_protoc(path: &std::path::Path) {
    // SAFETY: the build script runs no other threads that read the environment.
    unsafe { std::env::set_var("PROTOC", path) };
}
