//! Distributed mode in the tests and benches: a local Fabric network from `FABRIC_BIN_DIR`, and
//! the facade's configuration on it (in process, or as the `orchestrator` binary's environment).

use std::time::Duration;

use orchestrator_host_standalone::Config;
use orchestrator_host_standalone::config::Mode;

use super::TestServer;
use super::network::Network;

/// Where the Fabric 2.5 binaries are (the `bin/` of a release).
pub const BIN_DIR_ENV: &str = "FABRIC_BIN_DIR";

/// How long a facade waits for a commit before asking the peer: the tests' transactions commit
/// within a block time or two (0.5 s each).
pub const GATEWAY_TIMEOUT: Duration = Duration::from_secs(30);

/// `FABRIC_BIN_DIR`, or `None` after saying the caller skipped.
pub fn fabric_bin_dir() -> Option<String> {
    let dir = std::env::var(BIN_DIR_ENV).ok();
    if dir.is_none() {
        println!("skipped: {BIN_DIR_ENV} not set");
    }
    dir
}

/// Makes `config` a facade of organization `org` (1: MyOrg1MSP, 2: MyOrg2MSP) on `network`:
/// its own peer's Gateway, the whole wallet (a call is signed by its `mspid`'s user), its MSP
/// id reading the ledger's events, the network's chaincode.
pub fn configure(config: &mut Config, network: &Network, org: u8) {
    let peer = network.peer(org);
    config.mode = Mode::Distributed;
    config.fabric_peer_address = Some(peer.address);
    config.fabric_tls_ca_cert = Some(peer.tls_ca_cert);
    config.fabric_wallet = Some(network.wallet());
    config.msp_id = Some(peer.msp_id);
    config.fabric_chaincode = network.chaincode().to_owned();
    config.fabric_gateway_timeout = GATEWAY_TIMEOUT;
}

/// A facade of organization `org` in this process ([`configure`], then `adjust`), on a
/// database of its own.
pub async fn start(network: &Network, org: u8, adjust: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|config| {
        configure(config, network, org);
        adjust(config);
    })
    .await
}

/// The settings of [`configure`] as the `orchestrator` binary's environment variables.
pub fn env(network: &Network, org: u8) -> Vec<(String, String)> {
    let mut config = Config::defaults();
    configure(&mut config, network, org);
    let path = |path: Option<std::path::PathBuf>| path.expect("set by configure").to_string_lossy().into_owned();
    [
        ("ORCHESTRATOR_MODE", "distributed".to_owned()),
        ("ORCHESTRATOR_FABRIC_PEER_ADDRESS", config.fabric_peer_address.expect("set by configure")),
        ("ORCHESTRATOR_FABRIC_TLS_CA_CERT", path(config.fabric_tls_ca_cert)),
        ("ORCHESTRATOR_FABRIC_WALLET", path(config.fabric_wallet)),
        ("ORCHESTRATOR_MSPID", config.msp_id.expect("set by configure")),
        ("ORCHESTRATOR_FABRIC_CHAINCODE", config.fabric_chaincode),
        ("ORCHESTRATOR_FABRIC_GATEWAY_TIMEOUT", format!("{}ms", config.fabric_gateway_timeout.as_millis())),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}
