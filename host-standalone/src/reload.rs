//! Swapping the logic component while the server runs.
//!
//! On SIGHUP the server reads the file named by `ORCHESTRATOR_LOGIC` again and hands its bytes
//! to the runtime ([`Runtime::swap`]), which verifies them before anything changes: the
//! component compiles, instantiates, exports the same WIT world, and its method table keeps
//! every method of the current one with the same read-only flag. Calls in flight finish on the
//! version they started on; calls that start after the swap run on the new one. A refused
//! component leaves the current one serving, with one WARN line naming the file, its sha256
//! and the reason.
//!
//! Standalone mode only: in distributed mode the logic runs in the chaincode (the facade's copy
//! only tells evaluations from submissions), so there is nothing to reload here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use orchestrator_runtime::{LogicInfo, Runtime, RuntimeError, identity};

use crate::config::Mode;
use crate::metrics::{Metrics, SwapOutcome};

/// Why a reload did not change the version serving (which then serves on).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The server runs the embedded component.
    #[error("nothing to reload: no logic file is configured (ORCHESTRATOR_LOGIC); the embedded component serves on")]
    NoFile,
    /// Distributed mode: the chaincode runs the logic.
    #[error("nothing to reload: in distributed mode the logic runs in the chaincode (upgrade the chaincode instead)")]
    Distributed,
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime refused the component: it does not load, or cannot replace the current one.
    #[error("{} (sha256 {sha256}) refused: {source}", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// The sha256 of its bytes.
        sha256: String,
        /// The runtime's reason.
        #[source]
        source: RuntimeError,
    },
    /// The swap's blocking task did not finish (it panicked or the runtime is shutting down).
    #[error("the swap of {} did not finish: {message}", path.display())]
    Task {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// What a reload did.
#[derive(Debug, Clone)]
pub enum Reloaded {
    /// `to` serves the calls that start from now on; `from` finishes the calls in flight.
    Swapped {
        /// The version that served before.
        from: Arc<LogicInfo>,
        /// The version serving now.
        to: Arc<LogicInfo>,
    },
    /// The file holds the version already serving.
    Unchanged(Arc<LogicInfo>),
}

/// Reloads the logic file into the server's runtime (SIGHUP, or a test). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader {
    runtime: Runtime,
    path: Option<PathBuf>,
    mode: Mode,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// Reloads `path` (`ORCHESTRATOR_LOGIC`; `None`: the embedded component, nothing to reload)
    /// into `runtime`, counting outcomes in `metrics`.
    pub fn new(runtime: Runtime, path: Option<PathBuf>, mode: Mode, metrics: Arc<Metrics>) -> Self {
        Self { runtime, path, mode, metrics }
    }

    /// The file reloaded, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reads the file again and swaps it in, or says why not (and logs either way: one line).
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let started = Instant::now();
        let result = self.swap().await;
        // From the request (the signal) to the new version serving.
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        let serving = self.runtime.info();
        match &result {
            Ok(Reloaded::Swapped { from, to }) => {
                self.metrics.logic_swap(SwapOutcome::Accepted, to);
                tracing::info!(
                    file = %self.file(),
                    from_sha256 = %from.sha256,
                    from_version = %from.version,
                    to_sha256 = %to.sha256,
                    to_version = %to.version,
                    elapsed_ms,
                    "logic component swapped: new calls run on the new version"
                );
            }
            Ok(Reloaded::Unchanged(info)) => {
                self.metrics.logic_swap(SwapOutcome::Unchanged, info);
                tracing::info!(file = %self.file(), sha256 = %info.sha256, "logic component unchanged: the file holds the version serving");
            }
            Err(err @ (ReloadError::NoFile | ReloadError::Distributed)) => {
                tracing::warn!(serving_sha256 = %serving.sha256, "{err}");
            }
            Err(ReloadError::Refused { sha256, source, .. }) => {
                self.metrics.logic_swap(SwapOutcome::Refused, &serving);
                tracing::warn!(
                    file = %self.file(),
                    sha256 = %sha256,
                    serving_sha256 = %serving.sha256,
                    error = %source,
                    elapsed_ms,
                    "logic component refused: the current one keeps serving"
                );
            }
            Err(err @ (ReloadError::Read { .. } | ReloadError::Task { .. })) => {
                self.metrics.logic_swap(SwapOutcome::Refused, &serving);
                tracing::warn!(
                    file = %self.file(),
                    serving_sha256 = %serving.sha256,
                    error = %err,
                    "logic component refused: the current one keeps serving"
                );
            }
        }
        result
    }

    fn file(&self) -> String {
        self.path.as_ref().map_or_else(String::new, |path| path.display().to_string())
    }

    async fn swap(&self) -> Result<Reloaded, ReloadError> {
        if self.mode == Mode::Distributed {
            return Err(ReloadError::Distributed);
        }
        let Some(path) = &self.path else { return Err(ReloadError::NoFile) };
        let bytes = tokio::fs::read(path).await.map_err(|source| ReloadError::Read { path: path.clone(), source })?;
        let from = self.runtime.info();
        let runtime = self.runtime.clone();
        // Compiling a new component takes from milliseconds (cached) to seconds: not on the
        // executor's threads, which keep serving calls meanwhile.
        let swapped = tokio::task::spawn_blocking(move || {
            let swapped = runtime.swap(&bytes);
            (swapped, bytes)
        })
        .await
        .map_err(|err| ReloadError::Task { path: path.clone(), message: err.to_string() })?;
        match swapped {
            (Ok(to), _) if to.sha256 == from.sha256 => Ok(Reloaded::Unchanged(to)),
            (Ok(to), _) => Ok(Reloaded::Swapped { from, to }),
            (Err(source), bytes) => {
                Err(ReloadError::Refused { path: path.clone(), sha256: identity::sha256_hex(&bytes), source })
            }
        }
    }
}

/// Reloads on every SIGHUP until the process ends (signals that arrive during a reload make
/// one more). `hangup` is created before the server serves: from then on SIGHUP no longer
/// terminates the process.
#[cfg(unix)]
pub async fn on_sighup(reloader: Reloader, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        tracing::debug!(file = %reloader.file(), "SIGHUP: reloading the logic component");
        // The outcome is logged and counted by `reload`.
        let _ = reloader.reload().await;
    }
}
