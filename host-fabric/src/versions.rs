//! Which logic version a transaction runs: the one its channel's ledger names
//! (docs/modes.md §3.7).
//!
//! An activation (the shim's own admin transaction, [`crate::admin`]) stores the component under
//! `~logic/component/<sha256>` and names it in `~logic/active`. Every transaction first reads
//! `~logic/active` (GET_STATE, so the key is in its read set), then runs that version, or the
//! component the chaincode was started with when the channel has no activation. A transaction
//! endorsed before an activation and ordered after it therefore fails validation
//! (MVCC_READ_CONFLICT): all peers switch at the activation's block.
//!
//! Versions are compiled once per process and kept by sha256. When the channel names one, the
//! transaction also reads its component key, so that its read set does not depend on what this
//! process happens to have compiled: on a cache hit with GET_STATE_METADATA (the peer records the
//! key's version without sending the bytes), on a miss with GET_STATE (the bytes, checked against
//! the sha256, then compiled). Two endorsers, one that has the version compiled and one that
//! has not, thus endorse identical read sets.
//!
//! The logic never sees this namespace: the shim refuses its reads, scans and writes of
//! reserved keys (the logic's keys are `<asset>/...` and `idx/...`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use orchestrator_runtime::{Runtime, RuntimeError, identity};
use prost::Message;

use crate::fabric::orchestrator_fabric::LogicVersion;
use crate::shim::PeerLink;

/// Prefix of the keys only the shim reads and writes.
pub const RESERVED_PREFIX: &str = "~logic/";
/// The first key after every reserved one (`'0'` follows `'/'`).
const RESERVED_END: &str = "~logic0";
/// The record of the channel's active version (an encoded [`LogicVersion`]).
pub const ACTIVE_KEY: &str = "~logic/active";

/// Where the bytes of the component of `sha256` are stored.
pub fn component_key(sha256: &str) -> String {
    format!("{RESERVED_PREFIX}component/{sha256}")
}

/// Whether `key` is in the shim's reserved namespace.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// Whether the range `[start, end)` holds reserved keys.
pub fn overlaps_reserved(start: &str, end: &str) -> bool {
    start < RESERVED_END && end > RESERVED_PREFIX
}

/// The compiled versions of this process, by sha256, and the one it was started with.
#[derive(Debug)]
pub struct LogicVersions {
    base: Runtime,
    compiled: Mutex<HashMap<String, Runtime>>,
    /// Held while compiling, so that transactions needing the same new version compile it once.
    loading: tokio::sync::Mutex<()>,
}

/// The version a transaction runs.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    /// Its runtime.
    pub runtime: Runtime,
    /// The channel's record, `None` when the channel has no activation (the base version).
    pub record: Option<LogicVersion>,
}

impl Resolved {
    /// What `LogicAdmin/Active` answers: the record, with the version and world of the
    /// component (the base's alone when the channel has no activation).
    pub fn describe(&self) -> LogicVersion {
        let info = self.runtime.info();
        let record = self.record.clone().unwrap_or_default();
        LogicVersion { sha256: info.sha256.clone(), version: info.version.clone(), world: info.world.clone(), ..record }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogicVersions {
    /// Versions over `base`, the component the chaincode was started with (run on channels that
    /// name none).
    pub fn new(base: Runtime) -> Self {
        let compiled = HashMap::from([(base.info().sha256.clone(), base.clone())]);
        Self { base, compiled: Mutex::new(compiled), loading: tokio::sync::Mutex::new(()) }
    }

    /// The component the chaincode was started with.
    pub fn base(&self) -> &Runtime {
        &self.base
    }

    /// How many versions this process holds compiled, the base included.
    pub fn compiled(&self) -> usize {
        lock(&self.compiled).len()
    }

    fn cached(&self, sha256: &str) -> Option<Runtime> {
        lock(&self.compiled).get(sha256).cloned()
    }

    /// The version the channel of `link`'s transaction names, read through the transaction (see
    /// the module documentation for the reads it makes). `Err`: the transaction fails (ERROR).
    pub(crate) async fn resolve(&self, link: &PeerLink) -> Result<Resolved, String> {
        let Some(bytes) = link.get_state(ACTIVE_KEY).await.map_err(|e| e.message)? else {
            return Ok(Resolved { runtime: self.base.clone(), record: None });
        };
        let record = LogicVersion::decode(bytes.as_slice())
            .map_err(|e| format!("the channel's logic record {ACTIVE_KEY} does not decode: {e}"))?;
        let key = component_key(&record.sha256);
        if let Some(runtime) = self.cached(&record.sha256) {
            // The same read set as a miss, without the bytes.
            link.get_state_metadata(&key).await.map_err(|e| e.message)?;
            return Ok(Resolved { runtime, record: Some(record) });
        }
        let component = link.get_state(&key).await.map_err(|e| e.message)?.ok_or_else(|| {
            format!("the channel names logic version {} but holds no component under {key}", record.sha256)
        })?;
        let sha256 = identity::sha256_hex(&component);
        if sha256 != record.sha256 {
            return Err(format!("the component under {key} has sha256 {sha256}, not the one its key names"));
        }
        let runtime = self
            .compile(component)
            .await
            .map_err(|e| format!("the channel's logic version {sha256} does not load here: {e}"))?;
        self.remember(&runtime);
        Ok(Resolved { runtime, record: Some(record) })
    }

    /// Compiles and verifies `component`, or returns the runtime already compiled for its bytes.
    /// Not remembered: see [`LogicVersions::remember`].
    pub(crate) async fn compile(&self, component: Vec<u8>) -> Result<Runtime, RuntimeError> {
        let sha256 = identity::sha256_hex(&component);
        if let Some(runtime) = self.cached(&sha256) {
            return Ok(runtime);
        }
        let _loading = self.loading.lock().await;
        if let Some(runtime) = self.cached(&sha256) {
            return Ok(runtime);
        }
        let config = self.base.config().clone();
        // Compiling takes from tens of milliseconds to seconds: off the async threads.
        let runtime = tokio::task::spawn_blocking(move || Runtime::new(config, &component))
            .await
            .map_err(|e| RuntimeError::Component(format!("the compiling task failed: {e}")))??;
        tracing::info!(sha256 = %runtime.info().sha256, version = %runtime.info().version, "compiled a logic version");
        Ok(runtime)
    }

    /// Keeps `runtime` for the transactions that name its version.
    pub(crate) fn remember(&self, runtime: &Runtime) {
        lock(&self.compiled).entry(runtime.info().sha256.clone()).or_insert_with(|| runtime.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserved_namespace() {
        assert!(is_reserved(ACTIVE_KEY));
        assert!(is_reserved(&component_key("ab")));
        assert!(!is_reserved("~logic"));
        assert!(!is_reserved("computetask/1"));
        // The logic's scans: prefixes of its own keys.
        assert!(!overlaps_reserved("idx/", "idx0"));
        assert!(!overlaps_reserved("computetask/", "computetask0"));
        assert!(!overlaps_reserved("a", RESERVED_PREFIX));
        assert!(!overlaps_reserved(RESERVED_END, "~~"));
        assert!(overlaps_reserved("a", "~z"));
        assert!(overlaps_reserved(ACTIVE_KEY, "~logic/b"));
        assert!(overlaps_reserved("~logic/", "~logic/\u{1}"));
    }
}
