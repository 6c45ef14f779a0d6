//! The Rust side of `scripts/fabric-net.sh`: a real local Fabric network for one test, torn
//! down when dropped (also when the test panics). Shared by the test crates that need one
//! (`#[path]`-included, as test crates cannot depend on each other).

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a client reaches the Gateway of one organization's peer.
#[derive(Debug, Clone)]
pub struct Peer {
    /// `MyOrg1MSP` or `MyOrg2MSP`.
    pub msp_id: String,
    /// `host:port` of the peer (and its Gateway).
    pub address: String,
    /// The PEM file of the peer's TLS CA.
    pub tls_ca_cert: PathBuf,
}

/// The network of one test run; `down` when dropped, also when the test panics.
pub struct Network {
    script: PathBuf,
    dir: PathBuf,
    env: HashMap<String, String>,
    /// Chaincode servers started by [`Network::restart_chaincode`] (reaped when dropped).
    restarted: Mutex<Vec<Child>>,
}

impl Drop for Network {
    fn drop(&mut self) {
        let status = Command::new(&self.script).arg("down").arg(&self.dir).status();
        if !matches!(status, Ok(status) if status.success()) {
            eprintln!("fabric-net.sh down {} failed: {status:?}", self.dir.display());
        }
        // `down` stopped the current one (its pid is in the pid file); reap them all.
        for child in self.restarted.get_mut().map(std::mem::take).unwrap_or_default().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Network {
    /// Brings up a network from the Fabric binaries of `bin_dir`, served by the chaincode
    /// binary `chaincode_bin`.
    pub fn up(bin_dir: &str, chaincode_bin: &str) -> Self {
        Self::up_with(bin_dir, chaincode_bin, &[])
    }

    /// [`Network::up`] with more settings of `fabric-net.sh up` (e.g. `FABRIC_CHAINCODE_NAMES`,
    /// `FABRIC_NET_EXTRA_ORGS`).
    pub fn up_with(bin_dir: &str, chaincode_bin: &str, settings: &[(&str, &str)]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fabric-net.sh");
        assert!(script.exists(), "{} is missing", script.display());
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!("gateway-network-{}-{nanos}", std::process::id()));
        // Away from the script's default range (27050-27080), which a developer's own network
        // may hold; distinct per process so concurrent runs do not collide.
        let base_port = std::env::var("FABRIC_NET_BASE_PORT")
            .unwrap_or_else(|_| (27_200 + (std::process::id() % 100) * 40).to_string());
        let mut network = Self { script, dir, env: HashMap::new(), restarted: Mutex::new(Vec::new()) };
        let started = Instant::now();
        let status = Command::new(&network.script)
            .arg("up")
            .arg(&network.dir)
            .env("FABRIC_BIN_DIR", bin_dir)
            .env("CHAINCODE_BIN", chaincode_bin)
            .env("FABRIC_NET_BASE_PORT", &base_port)
            .envs(settings.iter().copied())
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

    /// The network's directory (`fabric-net.sh up DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The peer of organization `org` (1: MyOrg1MSP, 2: MyOrg2MSP), as `fabric-net.sh env`
    /// prints it (`ORCHESTRATOR_FABRIC_PEER_ADDRESS` and `_TLS_CA_CERT`, or the `PEER2_` ones).
    pub fn peer(&self, org: u8) -> Peer {
        let (address, ca) = match org {
            1 => ("ORCHESTRATOR_FABRIC_PEER_ADDRESS", "ORCHESTRATOR_FABRIC_TLS_CA_CERT"),
            2 => ("ORCHESTRATOR_FABRIC_PEER2_ADDRESS", "ORCHESTRATOR_FABRIC_PEER2_TLS_CA_CERT"),
            _ => panic!("the network has the peers of organizations 1 and 2, not {org}"),
        };
        Peer {
            msp_id: format!("MyOrg{org}MSP"),
            address: self.var(address).to_owned(),
            tls_ca_cert: PathBuf::from(self.var(ca)),
        }
    }

    /// `<wallet>/<MSP id>/{cert.pem,key.pem}`: a user of every organization.
    pub fn wallet(&self) -> PathBuf {
        PathBuf::from(self.var("ORCHESTRATOR_FABRIC_WALLET"))
    }

    /// `<admin-wallet>/<MSP id>/{cert.pem,key.pem}`: the admin of every organization.
    pub fn admin_wallet(&self) -> PathBuf {
        PathBuf::from(self.var("ORCHESTRATOR_FABRIC_ADMIN_WALLET"))
    }

    /// The chaincode name `fabric-net.sh env` prints (the first of `FABRIC_CHAINCODE_NAMES`).
    pub fn chaincode(&self) -> &str {
        self.var("ORCHESTRATOR_FABRIC_CHAINCODE")
    }

    /// Runs the network's `peer` CLI with `args` as the admin of organization `org` against
    /// its peer (the settings of `fabric-net.sh env DIR org<N>`), in the network's directory.
    pub fn admin_cli(&self, org: u8, args: &[&str]) -> std::process::Output {
        let output = Command::new(&self.script)
            .arg("env")
            .arg(&self.dir)
            .arg(format!("org{org}"))
            .output()
            .expect("fabric-net.sh env DIR org<N>");
        assert!(output.status.success(), "fabric-net.sh env org{org}: {}", String::from_utf8_lossy(&output.stderr));
        let admin = parse_exports(&String::from_utf8(output.stdout).unwrap());
        let mut command = Command::new(self.dir.join("bin/peer"));
        // Only the organization's settings: a developer's own CORE_* must not leak in.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CORE_") || name == "FABRIC_CFG_PATH" {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .current_dir(&self.dir)
            .envs(&admin)
            .env("FABRIC_LOGGING_SPEC", "info")
            .stdin(Stdio::null())
            .output()
            .expect("run the peer CLI")
    }

    /// The pid of the chaincode server (`FABRIC_CHAINCODE_PID_FILE`), checked to be a live
    /// process of this network (its command line names the network's directory).
    pub fn chaincode_pid(&self) -> u32 {
        let file = self.var("FABRIC_CHAINCODE_PID_FILE");
        let text = std::fs::read_to_string(file).unwrap_or_else(|error| panic!("{file}: {error}"));
        let pid: u32 = text.trim().parse().unwrap_or_else(|error| panic!("{file}: {text:?}: {error}"));
        assert!(process_alive(pid), "chaincode server {pid} is not running");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let dir = format!("{}/", self.dir.display());
        assert!(
            String::from_utf8_lossy(&cmdline).contains(&dir),
            "pid {pid} of {file} is not a process of {dir}: {:?}",
            String::from_utf8_lossy(&cmdline)
        );
        pid
    }

    /// SIGKILLs the chaincode server (no drain: the peers' streams break) and waits until it
    /// is gone. Returns its pid.
    pub fn kill_chaincode(&self) -> u32 {
        let pid = self.chaincode_pid();
        let status = Command::new("kill").arg("-KILL").arg(pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill -KILL {pid}: {status}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) {
            assert!(Instant::now() < deadline, "chaincode server {pid} still alive 10 s after SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        pid
    }

    /// Starts the chaincode server again as `fabric-net.sh up` does (same package id, address
    /// and settings; its log in `logs/chaincode-restart-<n>.log`), records its pid in the pid
    /// file (so `down` stops it) and waits until it listens. The peers dial it again on their
    /// next transaction. Returns how long it took to listen.
    pub fn restart_chaincode(&self) -> Duration {
        let address = self.var("FABRIC_CHAINCODE_SERVER_ADDRESS").to_owned();
        let mut restarted = self.restarted.lock().unwrap();
        let log_path = self.dir.join(format!("logs/chaincode-restart-{}.log", restarted.len() + 1));
        let log = std::fs::File::create(&log_path).unwrap_or_else(|error| panic!("{}: {error}", log_path.display()));
        let started = Instant::now();
        let mut child = Command::new(self.dir.join("bin/chaincode"))
            .current_dir(&self.dir)
            .env("CHAINCODE_ID", self.var("FABRIC_CHAINCODE_PACKAGE_ID"))
            .env("CHAINCODE_SERVER_ADDRESS", &address)
            .env("CHAINCODE_TLS_DISABLED", "true")
            .env(
                "CHAINCODE_SHUTDOWN_GRACE",
                std::env::var("CHAINCODE_SHUTDOWN_GRACE").unwrap_or_else(|_| "2s".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start the chaincode server");
        std::fs::write(self.var("FABRIC_CHAINCODE_PID_FILE"), format!("{}\n", child.id())).expect("write the pid file");
        let deadline = started + Duration::from_secs(60);
        while std::net::TcpStream::connect(&address).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("the restarted chaincode server exited ({status}) before listening on {address}:\n{text}");
            }
            assert!(Instant::now() < deadline, "the restarted chaincode server did not listen on {address} in 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let elapsed = started.elapsed();
        restarted.push(child);
        elapsed
    }
}

/// The process exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
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
