//! The Rust side of `scripts/fabric-net.sh`: a real local Fabric network for one test, torn
//! down when dropped (also when the test panics). Shared by the test crates that need one
//! (`#[path]`-included, as test crates cannot depend on each other).

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The network of one test run; `down` when dropped, also when the test panics.
pub struct Network {
    script: PathBuf,
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl Drop for Network {
    fn drop(&mut self) {
        let status = Command::new(&self.script).arg("down").arg(&self.dir).status();
        if !matches!(status, Ok(status) if status.success()) {
            eprintln!("fabric-net.sh down {} failed: {status:?}", self.dir.display());
        }
    }
}

impl Network {
    /// Brings up a network from the Fabric binaries of `bin_dir`, served by the chaincode
    /// binary `chaincode_bin`.
    pub fn up(bin_dir: &str, chaincode_bin: &str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fabric-net.sh");
        assert!(script.exists(), "{} is missing", script.display());
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("gateway-network-{}-{nanos}", std::process::id()));
        // Away from the script's default range (27050-27080), which a developer's own network
        // may hold; distinct per process so concurrent runs do not collide.
        let base_port = std::env::var("FABRIC_NET_BASE_PORT")
            .unwrap_or_else(|_| (27_200 + (std::process::id() % 100) * 40).to_string());
        let mut network = Self { script, dir, env: HashMap::new() };
        let started = Instant::now();
        let status = Command::new(&network.script)
            .arg("up")
            .arg(&network.dir)
            .env("FABRIC_BIN_DIR", bin_dir)
            .env("CHAINCODE_BIN", chaincode_bin)
            .env("FABRIC_NET_BASE_PORT", &base_port)
            .status()
            .expect("run fabric-net.sh up");
        assert!(status.success(), "fabric-net.sh up failed: {status}");
        println!("network up in {:.1?} (ports from {base_port})", started.elapsed());
        let output = Command::new(&network.script).arg("env").arg(&network.dir).output().expect("fabric-net.sh env");
        assert!(output.status.success(), "fabric-net.sh env: {}", String::from_utf8_lossy(&output.stderr));
        network.env = parse_exports(&String::from_utf8(output.stdout).unwrap());
        network
    }

    /// A variable `fabric-net.sh env` prints.
    pub fn var(&self, name: &str) -> &str {
        self.env.get(name).unwrap_or_else(|| panic!("fabric-net.sh env prints no {name}"))
    }

    /// The file a variable names.
    pub fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.var(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
    }
}

/// `export NAME=VALUE` lines (values as bash's `printf %q` writes them; these have no quoting
/// beyond backslashes).
fn parse_exports(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| {
            let value = value.trim_matches('\'');
            let mut unquoted = String::new();
            let mut chars = value.chars();
            while let Some(c) = chars.next() {
                unquoted.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
            }
            (name.to_owned(), unquoted)
        })
        .collect()
}
