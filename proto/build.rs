//! Compiles the wire contract without `protoc`: `protox` parses `proto/*.proto` into a
//! `FileDescriptorSet`, which is written to `$OUT_DIR/orchestrator_descriptor.bin` (for gRPC
//! reflection) and handed to `prost-build` (messages) or `tonic-prost-build` (messages plus the
//! client/server stubs, when the `client`/`server` features are on).

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let proto_dir = manifest_dir.join("proto");

    println!("cargo:rerun-if-changed={}", proto_dir.display());

    // Every .proto of the include root, in a stable order.
    let mut files = Vec::new();
    for entry in fs::read_dir(&proto_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto file under {}", proto_dir.display()).into());
    }

    let fds = protox::Compiler::new([&proto_dir])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?
        .file_descriptor_set();

    // Reflection descriptor: every file (the google/protobuf imports included, so that clients
    // can resolve dependencies), without source info to keep it small.
    let mut reflection = fds.clone();
    for file in &mut reflection.file {
        file.source_code_info = None;
    }
    fs::write(out_dir.join("orchestrator_descriptor.bin"), reflection.encode_to_vec())?;

    // Code generation. The google/protobuf files stay in the set (prost-build needs them to
    // derive traits); their types map to `prost_types` and produce no module of ours.
    let codegen = fds;

    let mut config = prost_build::Config::new();
    // Deterministic encoding (the logic runs in WebAssembly): every map is a BTreeMap.
    config.btree_map(["."]);

    let client = env::var_os("CARGO_FEATURE_CLIENT").is_some();
    let server = env::var_os("CARGO_FEATURE_SERVER").is_some();
    if client || server {
        tonic_prost_build::configure()
            .build_client(client)
            .build_server(server)
            .compile_fds_with_config(codegen, config)?;
    } else {
        config.compile_fds(codegen)?;
    }
    Ok(())
}
