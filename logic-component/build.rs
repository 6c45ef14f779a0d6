//! Builds `orchestrator-logic` for `wasm32-unknown-unknown` (linked into a component by the
//! toolchain's wasm-component-ld, see .cargo/config.toml) and hands its bytes to lib.rs.
//!
//! The nested cargo uses its own target directory (`<target>/component-build`): the outer
//! build holds the lock on the main one.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("workspace root").to_path_buf();
    for watched in ["logic", "proto", "wit"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.lock").display());
    println!("cargo:rerun-if-env-changed=ORCHESTRATOR_PREBUILT_COMPONENT");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out_dir.join("orchestrator_logic.wasm");
    build_component(&workspace, &out_dir, &dest);

    let bytes = std::fs::read(&dest).expect("read the component");
    let digest = hex(&Sha256::digest(&bytes));
    std::fs::write(out_dir.join("sha256.txt"), digest).expect("write sha256.txt");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn build_component(workspace: &Path, out_dir: &Path, dest: &Path) {
    // Escape hatch for packaging: use a component built elsewhere.
    if let Some(prebuilt) = env::var_os("ORCHESTRATOR_PREBUILT_COMPONENT") {
        std::fs::copy(&prebuilt, dest).expect("copy ORCHESTRATOR_PREBUILT_COMPONENT");
        return;
    }

    let target_dir = component_target_dir(workspace, out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--package", "orchestrator-logic", "--lib"])
        .args(["--target", "wasm32-unknown-unknown", "--profile", "component"])
        .arg("--target-dir")
        .arg(&target_dir);
    // Flags meant for the outer (native) build must not leak into the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the logic component");
    assert!(status.success(), "building the logic component failed");

    let built = target_dir.join("wasm32-unknown-unknown/component/orchestrator_logic.wasm");
    std::fs::copy(&built, dest).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
}

/// `<target>/component-build`, found from OUT_DIR (`<target>/<profile>/build/<pkg>/out`, or one
/// level deeper with an explicit `--target`).
fn component_target_dir(workspace: &Path, out_dir: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("component-build");
    }
    out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent())
        .and_then(|profile| profile.parent())
        .map(|target| target.join("component-build"))
        .unwrap_or_else(|| workspace.join("target/component-build"))
}
