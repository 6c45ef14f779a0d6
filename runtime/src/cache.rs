//! Engines and compiled components, shared across every [`crate::Runtime`] of the process.
//!
//! A compiled [`Component`] belongs to the [`Engine`] that compiled it, so runtimes with the same
//! engine settings share one engine (and its pooling allocator), and each engine keeps the
//! components it compiled by sha256: a second runtime loading the same bytes does not recompile.
//! On disk, `<cache_dir>/<sha256>-<engine>.cwasm` holds the precompiled component, where
//! `<engine>` fingerprints wasmtime's version and every setting that shapes compiled code.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::{RuntimeConfig, RuntimeError};

/// Core instances one component instance may hold (the logic needs about 6: its module plus
/// the canonical-ABI shims wasm-component-ld adds).
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Linear memories one component instance may hold (the logic has one).
const MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables one component instance may hold.
const TABLES_PER_COMPONENT: u32 = 16;
/// 32-bit linear memories cannot grow past 4 GiB.
const MAX_32BIT_MEMORY: usize = 4 << 30;

/// What distinguishes two engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EngineKey {
    max_memory_bytes: usize,
    max_instances: u32,
}

impl EngineKey {
    fn of(config: &RuntimeConfig) -> Self {
        Self {
            max_memory_bytes: config.max_memory_bytes.clamp(64 << 10, MAX_32BIT_MEMORY),
            max_instances: config.max_instances.max(1),
        }
    }
}

/// One engine, its instance slots and the components it compiled.
pub(crate) struct EngineEntry {
    pub engine: Engine,
    /// One permit per pooling-allocator slot for calls: calls beyond `max_instances` wait
    /// instead of failing to instantiate.
    pub slots: Arc<Semaphore>,
    /// The pool's one extra slot, for verifying components: a load or swap never waits for
    /// calls (which could deadlock a single-threaded host that swaps while calls are parked).
    pub verify_slot: Mutex<()>,
    /// Memory cap per instance (enforced by the pool and by each store's limiter).
    pub max_memory_bytes: usize,
    /// Hex fingerprint of wasmtime's version and compilation settings.
    pub fingerprint: String,
    components: Mutex<HashMap<String, Component>>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Feeds `Hash` output into sha256 (std's hasher makes no stability promise across builds).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn engine_config(key: EngineKey) -> Config {
    // One slot per concurrent call, plus one for verification.
    let slots = key.max_instances.saturating_add(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_memories(slots.saturating_mul(MEMORIES_PER_COMPONENT))
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .total_tables(slots.saturating_mul(TABLES_PER_COMPONENT))
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_stacks(slots)
        .max_memory_size(key.max_memory_bytes);

    let mut config = Config::new();
    config
        // Deterministic execution: every Fabric endorser must compute the same result.
        .consume_fuel(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

fn engines() -> &'static Mutex<HashMap<EngineKey, Arc<EngineEntry>>> {
    static ENGINES: OnceLock<Mutex<HashMap<EngineKey, Arc<EngineEntry>>>> = OnceLock::new();
    ENGINES.get_or_init(Default::default)
}

/// The process-wide engine for `config`'s settings (created on first use).
pub(crate) fn engine_for(config: &RuntimeConfig) -> Result<Arc<EngineEntry>, RuntimeError> {
    let key = EngineKey::of(config);
    let mut engines = lock(engines());
    if let Some(entry) = engines.get(&key) {
        return Ok(entry.clone());
    }
    let entry = Arc::new(EngineEntry::new(key)?);
    engines.insert(key, entry.clone());
    Ok(entry)
}

impl EngineEntry {
    fn new(key: EngineKey) -> Result<Self, RuntimeError> {
        let engine = Engine::new(&engine_config(key))
            .map_err(|e| RuntimeError::Component(format!("creating the wasmtime engine: {e:#}")))?;
        let mut hasher = Sha256Hasher(Sha256::new());
        "orchestrator-runtime cwasm v1".hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let fingerprint = hex::encode(&hasher.0.finalize()[..8]);
        tracing::debug!(
            max_memory_bytes = key.max_memory_bytes,
            max_instances = key.max_instances,
            %fingerprint,
            "created wasmtime engine"
        );
        Ok(EngineEntry {
            engine,
            slots: Arc::new(Semaphore::new(key.max_instances as usize)),
            verify_slot: Mutex::new(()),
            max_memory_bytes: key.max_memory_bytes,
            fingerprint,
            components: Mutex::new(HashMap::new()),
        })
    }
}

/// Lowercase hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where does a component come from (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Memory,
    Disk,
    Compiled,
}

impl EngineEntry {
    fn cache_path(&self, dir: &Path, sha256: &str) -> PathBuf {
        dir.join(format!("{sha256}-{}.cwasm", self.fingerprint))
    }

    /// The compiled component for `bytes` (whose sha256 is `sha256`): from this engine's memory,
    /// else from `cache_dir`, else compiled (and then written to `cache_dir`).
    pub fn component(
        &self,
        bytes: &[u8],
        sha256: &str,
        cache_dir: Option<&Path>,
    ) -> Result<(Component, Source), RuntimeError> {
        let path = cache_dir.map(|dir| self.cache_path(dir, sha256));
        let in_memory = lock(&self.components).get(sha256).cloned();
        if let Some(component) = in_memory {
            tracing::debug!(%sha256, "component found in the in-process cache");
            // Another runtime of the process compiled it, maybe with another cache directory.
            if let Some(path) = &path
                && !path.is_file()
            {
                store(&component, path)?;
            }
            return Ok((component, Source::Memory));
        }
        if let Some(path) = &path
            && path.is_file()
        {
            let started = Instant::now();
            match self.deserialize(path) {
                Ok(component) => {
                    tracing::info!(
                        %sha256,
                        path = %path.display(),
                        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "cache hit: loaded the precompiled component"
                    );
                    lock(&self.components).insert(sha256.to_owned(), component.clone());
                    return Ok((component, Source::Disk));
                }
                Err(e) => tracing::warn!(
                    %sha256,
                    path = %path.display(),
                    error = %format!("{e:#}"),
                    "unusable precompiled component: compiling again"
                ),
            }
        }

        let started = Instant::now();
        let component =
            Component::new(&self.engine, bytes).map_err(|e| RuntimeError::Component(format!("compiling: {e:#}")))?;
        tracing::info!(
            %sha256,
            size = bytes.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            cached = path.is_some(),
            "cache miss: compiled the component"
        );
        if let Some(path) = &path {
            store(&component, path)?;
        }
        lock(&self.components).insert(sha256.to_owned(), component.clone());
        Ok((component, Source::Compiled))
    }

    fn deserialize(&self, path: &Path) -> wasmtime::Result<Component> {
        // SAFETY: `Component::deserialize_file` maps the file and runs its machine code without
        // validation, so the file must be a trusted output of `Component::serialize` from the
        // same wasmtime version and compilation settings. The runtime only ever writes files it
        // serialized itself into the configured cache directory (atomically: write + rename, so
        // no reader sees a partial file; a later rename swaps the inode, never the mapped bytes),
        // and the file name carries the fingerprint of wasmtime's version and settings
        // (`Engine::precompile_compatibility_hash`); wasmtime additionally rejects a file whose
        // header does not match the engine. The cache directory must not be writable by anyone
        // the host does not trust, and its files must only ever be replaced (rename), never
        // rewritten in place: truncating a mapped file crashes the process (SIGBUS).
        #[allow(unsafe_code)]
        unsafe {
            Component::deserialize_file(&self.engine, path)
        }
    }
}

/// Writes the precompiled `component` to `path`.
fn store(component: &Component, path: &Path) -> Result<(), RuntimeError> {
    let serialized = component.serialize().map_err(|e| RuntimeError::Component(format!("serializing: {e:#}")))?;
    write_atomically(path, &serialized)?;
    tracing::debug!(path = %path.display(), "stored the precompiled component");
    Ok(())
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let write = || -> Result<(), std::io::Error> {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        // Durable before it becomes visible: a crash must not leave a truncated file in place.
        file.sync_all()?;
        std::fs::rename(&temp, path)
    };
    let result = write();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests;
