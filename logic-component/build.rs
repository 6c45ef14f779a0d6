//! Builds `orchestrator-logic` for `wasm32-unknown-unknown` (linked into a component by the
//! toolchain's wasm-component-ld, see .cargo/config.toml) and hands its bytes to lib.rs.
//!
//! The nested cargo uses its own target directory (`<target>/component-build`): the outer
//! build holds the lock on the main one.
//!
//! This is the one definition of how the component is built: `make component` runs it too
//! (scripts/build-component.sh), so the sha256 it prints is the one every binary embeds. The
//! bytes depend on the sources, Cargo.lock and the toolchain only: every directory of the
//! build machine that rustc would write into panic locations (the clone, the target directory
//! where generated code lives, CARGO_HOME's registry, the user's home) is remapped to a fixed
//! name ([`remap_flags`]); scripts/reproducible-component.sh checks it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("workspace root").to_path_buf();
    for watched in ["contract", "logic", "proto", "wit"] {
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

    // The nested cargo runs in the workspace: a relative target directory is relative to it.
    let target_dir = workspace.join(component_target_dir(workspace, out_dir));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--package", "orchestrator-logic", "--lib"])
        .args(["--target", "wasm32-unknown-unknown", "--profile", "component"])
        .arg("--target-dir")
        .arg(&target_dir)
        // Merged with .cargo/config.toml's rustflags for the target (arrays are joined), which
        // RUSTFLAGS or CARGO_ENCODED_RUSTFLAGS would replace.
        .arg("--config")
        .arg(format!("target.wasm32-unknown-unknown.rustflags = {}", toml_array(&remap_flags(workspace, &target_dir))));
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

/// The directories of this machine that could end up in the component (as the file names of
/// panic locations: registry crates and generated code are compiled from absolute paths) and
/// the fixed name each is replaced with, as `--remap-path-prefix` flags.
///
/// rustc applies the last flag that matches a path, so the flags go from the shortest prefix
/// to the longest: a target directory inside the clone, or a CARGO_HOME inside the home, gets
/// its own name rather than its parent's. Nested directories are matched whole components at
/// a time (`/a/b` does not match `/a/bc`).
fn remap_flags(workspace: &Path, target_dir: &Path) -> Vec<String> {
    let home = env::var_os("HOME").or_else(|| env::var_os("USERPROFILE")).map(PathBuf::from);
    // Cargo tells build scripts neither CARGO_HOME nor its default; this is cargo's rule.
    let cargo_home = env::var_os("CARGO_HOME").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".cargo")));
    let mut mappings: Vec<(PathBuf, &str)> = Vec::new();
    let mut add = |from: Option<PathBuf>, to: &'static str| {
        // A root home (`HOME=/`) would rename every path.
        let Some(from) = from.filter(|p| p.is_absolute() && p.parent().is_some()) else { return };
        // Cargo hands rustc the paths as configured; a symlinked one may also be seen resolved.
        let resolved = from.canonicalize().ok().filter(|resolved| *resolved != from);
        for from in [Some(from), resolved].into_iter().flatten() {
            // One flag per directory: a later, more specific name replaces an earlier one.
            mappings.retain(|(known, _)| *known != from);
            mappings.push((from, to));
        }
    };
    add(home, "/home");
    add(cargo_home, "/cargo-home");
    add(Some(workspace.to_path_buf()), "/source");
    // Created before the nested build so that its resolved form is known.
    let _ = std::fs::create_dir_all(target_dir);
    add(Some(target_dir.to_path_buf()), "/target");
    mappings.sort_by_key(|(from, _)| from.components().count());
    mappings
        .into_iter()
        .filter_map(|(from, to)| match from.to_str() {
            Some(from) => Some(format!("--remap-path-prefix={from}={to}")),
            None => {
                // rustc could not be told about it either; the reproducibility check would say so.
                println!("cargo::warning=not remapped (not UTF-8): {}", from.display());
                None
            }
        })
        .collect()
}

/// `items` as a TOML array of basic strings (for `cargo --config`).
fn toml_array(items: &[String]) -> String {
    let quoted: Vec<String> =
        items.iter().map(|item| format!("\"{}\"", item.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("[{}]", quoted.join(", "))
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
