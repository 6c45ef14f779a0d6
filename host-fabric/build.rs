//! Compiles the Fabric .proto subset under `proto/` without `protoc` (protox parses, then
//! tonic-prost-build generates messages plus the `protos.Chaincode` client and server).

use std::{env, error::Error, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let proto_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let mut files = Vec::new();
    for entry in fs::read_dir(&proto_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    files.sort();
    let fds = protox::Compiler::new([&proto_dir])?.include_imports(true).open_files(&files)?.file_descriptor_set();
    let mut config = prost_build::Config::new();
    // Deterministic encoding: maps (decorations, TransientMap) are BTreeMaps.
    config.btree_map(["."]);
    // No transport constructor on the client: it would be `connect`, like the RPC.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
