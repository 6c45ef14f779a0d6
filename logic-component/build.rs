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
    // Two clones sharing one CARGO_TARGET_DIR share this script's run (same package hash), and
    // its watched paths are the last clone's: a build in the other clone would embed a
    // component built from the first one's sources. `make` names the clone in this variable.
    println!("cargo:rerun-if-env-changed=ORCHESTRATOR_SOURCE_DIR");

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

    if !wasm_target_installed() {
        // One line, not the nested cargo's page of `can't find crate for core`.
        println!(
            "cargo::error=the Rust target wasm32-unknown-unknown is not installed: run `make wasm-target` \
             (or `rustup target add wasm32-unknown-unknown`)"
        );
        std::process::exit(0);
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

/// Whether the toolchain's sysroot holds the wasm32 standard library (rustup adds it only on
/// `rustup target add`, and `RUSTUP_AUTO_INSTALL=0` machines never do it by themselves).
fn wasm_target_installed() -> bool {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(output) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        // Let the nested build say what is wrong.
        return true;
    };
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    !output.status.success() || Path::new(&sysroot).join("lib/rustlib/wasm32-unknown-unknown/lib").is_dir()
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
