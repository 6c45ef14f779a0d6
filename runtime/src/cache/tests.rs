#![allow(clippy::unwrap_used)]

use super::*;

#[path = "../../tests/common/mod.rs"]
mod common;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orchestrator-runtime-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn key() -> EngineKey {
    EngineKey { max_memory_bytes: 16 << 20, max_instances: 2 }
}

#[test]
fn compiles_once_then_hits_memory_then_disk() {
    let dir = temp_dir("cache-hits");
    let bytes = common::test_component("cache-1");
    let sha = sha256_hex(&bytes);

    let first = EngineEntry::new(key()).unwrap();
    let (_, source) = first.component(&bytes, &sha, Some(&dir)).unwrap();
    assert_eq!(source, Source::Compiled);
    let path = dir.join(format!("{sha}-{}.cwasm", first.fingerprint));
    assert!(path.is_file(), "{} missing", path.display());
    assert_eq!(first.fingerprint.len(), 16);
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    let (_, source) = first.component(&bytes, &sha, Some(&dir)).unwrap();
    assert_eq!(source, Source::Memory);

    // A fresh engine with the same settings: same fingerprint, loads the precompiled file.
    let second = EngineEntry::new(key()).unwrap();
    assert_eq!(second.fingerprint, first.fingerprint);
    let (_, source) = second.component(&bytes, &sha, Some(&dir)).unwrap();
    assert_eq!(source, Source::Disk);

    // A corrupt file is not trusted blindly: wasmtime rejects it, the runtime recompiles and
    // replaces it.
    // (Replaced, not rewritten in place: `second` maps the file, and truncating a mapped file
    // under a live component is exactly what the runtime's rename-based writes avoid.)
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"\x7fELF garbage").unwrap();
    let third = EngineEntry::new(key()).unwrap();
    let (_, source) = third.component(&bytes, &sha, Some(&dir)).unwrap();
    assert_eq!(source, Source::Compiled);
    let fourth = EngineEntry::new(key()).unwrap();
    let (_, source) = fourth.component(&bytes, &sha, Some(&dir)).unwrap();
    assert_eq!(source, Source::Disk);

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn memory_hit_still_fills_a_new_cache_dir() {
    let dir = temp_dir("cache-fill");
    let bytes = common::test_component("cache-2");
    let sha = sha256_hex(&bytes);
    let entry = EngineEntry::new(key()).unwrap();
    assert_eq!(entry.component(&bytes, &sha, None).unwrap().1, Source::Compiled);
    assert_eq!(entry.component(&bytes, &sha, Some(&dir)).unwrap().1, Source::Memory);
    assert!(dir.join(format!("{sha}-{}.cwasm", entry.fingerprint)).is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_cache_dir_is_an_error() {
    let dir = temp_dir("cache-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let bytes = common::test_component("cache-3");
    let sha = sha256_hex(&bytes);
    let entry = EngineEntry::new(key()).unwrap();
    let result = entry.component(&bytes, &sha, Some(&file.join("sub")));
    assert!(matches!(result, Err(RuntimeError::Cache(_))), "{result:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_bytes_do_not_compile() {
    let entry = EngineEntry::new(key()).unwrap();
    let result = entry.component(b"not wasm", &sha256_hex(b"not wasm"), None);
    assert!(matches!(result, Err(RuntimeError::Component(_))));
}

#[test]
fn engines_are_shared_per_settings() {
    let config = RuntimeConfig { max_memory_bytes: 24 << 20, max_instances: 3, ..RuntimeConfig::default() };
    let a = engine_for(&config).unwrap();
    let b = engine_for(&RuntimeConfig {
        fuel_per_call: 1,
        cache_dir: Some(PathBuf::from("/nonexistent")),
        ..config.clone()
    })
    .unwrap();
    assert!(Arc::ptr_eq(&a, &b), "fuel and cache dir do not split engines");
    let c = engine_for(&RuntimeConfig { max_instances: 4, ..config }).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
}
