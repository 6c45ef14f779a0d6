//! `orchestrator logic inspect [FILE]`: what a logic component is, without serving it.
//!
//! The component is loaded and verified as the server would load it (so what is printed is
//! what the runtime reads from it: its `version` and `methods` exports, the WIT package of its
//! `api` export), with no cache, socket or database.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use orchestrator_runtime::{LogicInfo, Runtime, RuntimeConfig, RuntimeError};

use crate::config::InspectFormat;

/// Why a component could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a component of the orchestrator world.
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    /// JSON output.
    #[error("encoding the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// What was inspected and what the runtime found in it.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The file, or `None` for the component embedded in this binary.
    pub file: Option<PathBuf>,
    /// Size of the component in bytes.
    pub size: usize,
    /// What loading it found.
    pub info: LogicInfo,
}

/// Loads the component of `file` (the embedded one when `None`) and reads its identity.
pub fn inspect(file: Option<&Path>) -> Result<Inspection, InspectError> {
    let bytes = match file {
        Some(path) => read(path)?,
        None => orchestrator_logic_component::COMPONENT.to_vec(),
    };
    inspect_bytes(file, &bytes)
}

/// The component file at `path`.
pub fn read(path: &Path) -> Result<Vec<u8>, InspectError> {
    std::fs::read(path).map_err(|source| InspectError::Read { path: path.to_owned(), source })
}

/// [`inspect`] of bytes already read (from `file`, when given).
pub fn inspect_bytes(file: Option<&Path>, bytes: &[u8]) -> Result<Inspection, InspectError> {
    // One instance is enough to verify it; no cache: inspecting leaves nothing behind.
    let config = RuntimeConfig { cache_dir: None, max_instances: 1, ..RuntimeConfig::default() };
    let runtime = Runtime::new(config, bytes)?;
    let info = LogicInfo::clone(&runtime.info());
    Ok(Inspection { file: file.map(Path::to_owned), size: bytes.len(), info })
}

impl Inspection {
    /// The report in `format`, ending with a newline.
    pub fn render(&self, format: InspectFormat) -> Result<String, InspectError> {
        let file = self.file.as_ref().map_or_else(|| "(embedded)".to_owned(), |path| path.display().to_string());
        let info = &self.info;
        match format {
            InspectFormat::Text => {
                let mut out = String::new();
                let _ = writeln!(out, "file     {file}");
                let _ = writeln!(out, "size     {} bytes", self.size);
                let _ = writeln!(out, "sha256   {}", info.sha256);
                let _ = writeln!(out, "version  {}", info.version);
                let _ = writeln!(out, "world    {}", info.world);
                let read_only = info.methods.iter().filter(|m| m.read_only).count();
                let _ = writeln!(
                    out,
                    "methods  {} ({read_only} read-only, {} read-write)",
                    info.methods.len(),
                    info.methods.len() - read_only
                );
                let width = info.methods.iter().map(|m| m.name.len()).max().unwrap_or(0);
                for method in &info.methods {
                    let kind = if method.read_only { "read-only" } else { "read-write" };
                    let _ = writeln!(out, "  {:width$}  {kind}", method.name);
                }
                Ok(out)
            }
            InspectFormat::Json => {
                let methods: Vec<serde_json::Value> = info
                    .methods
                    .iter()
                    .map(|m| serde_json::json!({ "name": m.name, "read_only": m.read_only }))
                    .collect();
                let report = serde_json::json!({
                    "file": self.file.as_ref().map(|path| path.display().to_string()),
                    "size": self.size,
                    "sha256": info.sha256,
                    "version": info.version,
                    "world": info.world,
                    "methods": methods,
                });
                Ok(format!("{}\n", serde_json::to_string_pretty(&report)?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use orchestrator_runtime::MethodInfo;

    use super::*;

    fn inspection() -> Inspection {
        Inspection {
            file: None,
            size: 3,
            info: LogicInfo {
                sha256: "ab".repeat(32),
                version: "0.1.0".to_owned(),
                world: "substra:orchestrator@0.1.0".to_owned(),
                methods: vec![
                    MethodInfo { name: "a.S/Get".to_owned(), read_only: true },
                    MethodInfo { name: "a.S/RegisterIt".to_owned(), read_only: false },
                ],
            },
        }
    }

    #[test]
    fn text_lists_every_method() {
        let text = match inspection().render(InspectFormat::Text) {
            Ok(text) => text,
            Err(err) => panic!("{err}"),
        };
        assert!(text.contains(&format!("sha256   {}\n", "ab".repeat(32))), "{text}");
        assert!(text.contains("file     (embedded)\n"), "{text}");
        assert!(text.contains("methods  2 (1 read-only, 1 read-write)\n"), "{text}");
        assert!(text.contains("  a.S/Get         read-only\n"), "{text}");
        assert!(text.contains("  a.S/RegisterIt  read-write\n"), "{text}");
    }

    #[test]
    fn json_is_one_object() {
        let json = match inspection().render(InspectFormat::Json) {
            Ok(json) => json,
            Err(err) => panic!("{err}"),
        };
        let value: serde_json::Value = match serde_json::from_str(&json) {
            Ok(value) => value,
            Err(err) => panic!("{err}: {json}"),
        };
        assert_eq!(value["file"], serde_json::Value::Null);
        assert_eq!(value["world"], "substra:orchestrator@0.1.0");
        assert_eq!(value["methods"][1]["read_only"], false);
    }
}
