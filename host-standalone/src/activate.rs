//! `orchestrator logic activate FILE` and `orchestrator logic active`: the logic version of a
//! distributed deployment's channels, which the ledger names (docs/modes.md §3.7).
//!
//! An activation is one transaction per channel, `orchestrator.LogicAdmin/Activate` with the
//! component's bytes, submitted through the peer's Gateway as the facade submits calls, but
//! signed by an organization admin (`ORCHESTRATOR_FABRIC_ADMIN_WALLET`). The component is first
//! verified here as the server would load it, so a file that is no component is refused before
//! anything is sent; every endorser then verifies it again against the channel's active version.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use orchestrator_host_fabric::admin;
use orchestrator_host_fabric::encoding;
use orchestrator_host_fabric::fabric::orchestrator_fabric::{ActivateLogic, LogicVersion};
use orchestrator_host_fabric::gateway::{GatewayClient, GatewayError, SigningIdentity, validation_code_name};
use prost::Message;

use crate::channels::{ChannelConfig, LoadError};
use crate::config::{Config, Mode};
use crate::distributed::wallet::Wallet;
use crate::inspect::{self, InspectError};

/// Why the channels' logic version could not be set or read.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// Not in distributed mode.
    #[error(
        "the logic version of a channel lives on its ledger in distributed mode (ORCHESTRATOR_MODE=distributed); \
         in standalone mode, replace the file ORCHESTRATOR_LOGIC names and send the server SIGHUP"
    )]
    NotDistributed,
    /// A setting is missing or unusable.
    #[error("{0}")]
    Settings(String),
    /// The component cannot be read or does not load here.
    #[error(transparent)]
    Component(#[from] InspectError),
    /// The channel configuration.
    #[error(transparent)]
    Channels(#[from] LoadError),
    /// The chaincode refused (status ≥ 400): nothing was written on that channel.
    #[error("{channel}: refused ({status}): {message}")]
    Refused {
        /// The channel.
        channel: String,
        /// The chaincode's status.
        status: i32,
        /// Its reason.
        message: String,
    },
    /// The transaction was ordered but not committed valid: nothing was written.
    #[error("{channel}: transaction {txid} was not applied ({}, code {code}); running the command again is safe", validation_code_name(*.code))]
    Invalid {
        /// The channel.
        channel: String,
        /// The transaction.
        txid: String,
        /// Its validation code.
        code: i32,
    },
    /// Whether the transaction committed is unknown.
    #[error(
        "{channel}: the outcome of transaction {txid} is unknown (no commit status in time); \
         `orchestrator logic active` tells, and running the command again is safe"
    )]
    Unknown {
        /// The channel.
        channel: String,
        /// The transaction.
        txid: String,
    },
    /// The Gateway failed before the transaction was ordered.
    #[error("{channel}: {source}")]
    Gateway {
        /// The channel.
        channel: String,
        /// The failure.
        source: GatewayError,
    },
    /// The chaincode answered something that is not a `LogicVersion`.
    #[error("{channel}: the chaincode's answer is not an orchestrator_fabric.LogicVersion: {source}")]
    Answer {
        /// The channel.
        channel: String,
        /// The decoding error.
        source: prost::DecodeError,
    },
}

/// What happened on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelVersion {
    /// The channel.
    pub channel: String,
    /// Its logic version now.
    pub version: LogicVersion,
    /// The block of this command's transaction, when it activated the version (`None`: it was
    /// already active, or the version was only read).
    pub block: Option<u64>,
}

/// An activation's outcome: the component and each channel's version.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The component file.
    pub file: PathBuf,
    /// Its sha256.
    pub sha256: String,
    /// Its `version` export.
    pub version: String,
    /// Per channel, in order.
    pub channels: Vec<ChannelVersion>,
}

/// The peer, chaincode and channels of a command.
struct Target {
    gateway: GatewayClient,
    chaincode: String,
    channels: Vec<String>,
    timeout: std::time::Duration,
}

impl Target {
    async fn of(config: &Config, channels: &[String]) -> Result<Self, ActivateError> {
        let address = config
            .fabric_peer_address
            .as_deref()
            .ok_or_else(|| ActivateError::Settings("ORCHESTRATOR_FABRIC_PEER_ADDRESS is required".to_owned()))?;
        let tls_ca = match &config.fabric_tls_ca_cert {
            Some(path) => Some(std::fs::read(path).map_err(|err| {
                ActivateError::Settings(format!("ORCHESTRATOR_FABRIC_TLS_CA_CERT {}: {err}", path.display()))
            })?),
            None => None,
        };
        let channels = if channels.is_empty() {
            let (configured, _) = ChannelConfig::resolve(config.channel_config.as_deref())?;
            configured.channels().into_iter().map(str::to_owned).collect()
        } else {
            channels.to_vec()
        };
        let gateway = GatewayClient::connect(address, tls_ca.as_deref(), config.fabric_tls_server_name.as_deref())
            .await
            .map_err(|err| ActivateError::Settings(format!("peer {address}: {err}")))?;
        Ok(Self {
            gateway,
            chaincode: config.fabric_chaincode.clone(),
            channels,
            timeout: config.fabric_gateway_timeout,
        })
    }
}

fn distributed(config: &Config) -> Result<(), ActivateError> {
    if config.mode == Mode::Distributed { Ok(()) } else { Err(ActivateError::NotDistributed) }
}

/// The identity of `config`'s MSP id in `wallet` (the wallet's only one when unset).
fn identity(config: &Config, wallet: &Wallet, setting: &str) -> Result<Arc<SigningIdentity>, ActivateError> {
    let msp_id = match &config.msp_id {
        Some(msp_id) => msp_id.clone(),
        None => match wallet.msp_ids().as_slice() {
            [only] => only.clone(),
            ids => {
                return Err(ActivateError::Settings(format!(
                    "ORCHESTRATOR_MSPID is required: {setting} holds {ids:?}; which organization signs?"
                )));
            }
        },
    };
    wallet.identity(&msp_id).map_err(|err| ActivateError::Settings(format!("{setting}: {err}")))
}

/// Verifies the component of `file`, then activates it on `channels` (every configured channel
/// when empty), one transaction per channel, in order; stops at the first channel that refuses.
pub async fn activate(config: &Config, file: &Path, channels: &[String]) -> Result<Activation, ActivateError> {
    distributed(config)?;
    let bytes = inspect::read(file)?;
    let inspection = inspect::inspect_bytes(Some(file), &bytes)?;
    let dir = config.fabric_admin_wallet.clone().ok_or_else(|| {
        ActivateError::Settings(
            "ORCHESTRATOR_FABRIC_ADMIN_WALLET is required: the organization admins' <dir>/<msp id>/cert.pem, key.pem"
                .to_owned(),
        )
    })?;
    let admin = identity(config, &Wallet::new(Some(dir), None), "ORCHESTRATOR_FABRIC_ADMIN_WALLET")?;
    let target = Target::of(config, channels).await?;
    let request = ActivateLogic { component: bytes, sha256: inspection.info.sha256.clone() }.encode_to_vec();
    let mut done = Vec::with_capacity(target.channels.len());
    for channel in &target.channels {
        let args = encoding::call_args(admin::ACTIVATE, &request);
        let submitted = match target.gateway.submit(&admin, channel, &target.chaincode, args, target.timeout).await {
            Ok(submitted) => submitted,
            Err(GatewayError::Chaincode { status, message }) => {
                return Err(ActivateError::Refused { channel: channel.clone(), status, message });
            }
            Err(GatewayError::Invalid { txid, code }) => {
                return Err(ActivateError::Invalid { channel: channel.clone(), txid, code });
            }
            Err(GatewayError::CommitTimeout { txid, .. }) => {
                return Err(ActivateError::Unknown { channel: channel.clone(), txid });
            }
            Err(source) => return Err(ActivateError::Gateway { channel: channel.clone(), source }),
        };
        let version = LogicVersion::decode(submitted.payload.as_slice())
            .map_err(|source| ActivateError::Answer { channel: channel.clone(), source })?;
        // Already active: the record names an earlier transaction, and this one wrote nothing.
        let block = (version.tx_id == submitted.txid).then_some(submitted.block_number);
        done.push(ChannelVersion { channel: channel.clone(), version, block });
    }
    Ok(Activation {
        file: file.to_owned(),
        sha256: inspection.info.sha256,
        version: inspection.info.version,
        channels: done,
    })
}

/// The logic version of `channels` (every configured channel when empty), evaluated on the
/// peer with the facade's wallet identity of `ORCHESTRATOR_MSPID`.
pub async fn active(config: &Config, channels: &[String]) -> Result<Vec<ChannelVersion>, ActivateError> {
    distributed(config)?;
    let dir = config.fabric_wallet.clone().ok_or_else(|| {
        ActivateError::Settings("ORCHESTRATOR_FABRIC_WALLET is required: the identity that reads".to_owned())
    })?;
    let reader = identity(config, &Wallet::new(Some(dir), None), "ORCHESTRATOR_FABRIC_WALLET")?;
    let target = Target::of(config, channels).await?;
    let mut versions = Vec::with_capacity(target.channels.len());
    for channel in &target.channels {
        let args = encoding::call_args(admin::ACTIVE, &[]);
        let payload = match target.gateway.evaluate(&reader, channel, &target.chaincode, args).await {
            Ok(payload) => payload,
            Err(GatewayError::Chaincode { status, message }) => {
                return Err(ActivateError::Refused { channel: channel.clone(), status, message });
            }
            Err(source) => return Err(ActivateError::Gateway { channel: channel.clone(), source }),
        };
        let version = LogicVersion::decode(payload.as_slice())
            .map_err(|source| ActivateError::Answer { channel: channel.clone(), source })?;
        versions.push(ChannelVersion { channel: channel.clone(), version, block: None });
    }
    Ok(versions)
}

/// One aligned line per channel.
fn channel_lines(out: &mut String, channels: &[ChannelVersion], activated_now: bool) {
    let width = channels.iter().map(|c| c.channel.len()).max().unwrap_or(0);
    for ChannelVersion { channel, version, block } in channels {
        let origin = if version.tx_id.is_empty() {
            "the chaincode's own component (no activation on this channel)".to_owned()
        } else {
            format!("activated by {} in transaction {}", version.activated_by, version.tx_id)
        };
        let line = match (activated_now, block) {
            (true, Some(block)) => format!("activated in block {block} (transaction {})", version.tx_id),
            (true, None) => format!("already active: {origin}"),
            (false, _) => format!("{} ({})  {origin}", version.sha256, version.version),
        };
        let _ = writeln!(out, "{channel:width$}  {line}");
    }
}

impl Activation {
    /// `sha256 <hex>` first, then the version and one line per channel.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "sha256   {}", self.sha256);
        let _ = writeln!(out, "version  {}", self.version);
        let _ = writeln!(out, "file     {}", self.file.display());
        channel_lines(&mut out, &self.channels, true);
        out
    }
}

/// `<channel>  <sha256> (<version>)  <who activated it>` per channel.
pub fn render_active(channels: &[ChannelVersion]) -> String {
    let mut out = String::new();
    channel_lines(&mut out, channels, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(tx_id: &str) -> LogicVersion {
        LogicVersion {
            sha256: "ab".repeat(32),
            version: "0.1.0".to_owned(),
            world: "substra:orchestrator@0.1.0".to_owned(),
            activated_by: if tx_id.is_empty() { String::new() } else { "MyOrg1MSP".to_owned() },
            tx_id: tx_id.to_owned(),
            activated_at_micros: 0,
        }
    }

    #[test]
    fn reports_name_the_sha256_and_each_channel() {
        let activation = Activation {
            file: PathBuf::from("logic.wasm"),
            sha256: "ab".repeat(32),
            version: "0.1.0".to_owned(),
            channels: vec![
                ChannelVersion { channel: "mychannel".to_owned(), version: version("t1"), block: Some(7) },
                ChannelVersion { channel: "yourchannel".to_owned(), version: version("t0"), block: None },
            ],
        };
        let text = activation.render();
        assert!(text.starts_with(&format!("sha256   {}\n", "ab".repeat(32))), "{text}");
        assert!(text.contains("mychannel    activated in block 7 (transaction t1)\n"), "{text}");
        assert!(text.contains("yourchannel  already active: activated by MyOrg1MSP in transaction t0\n"), "{text}");
        let active = render_active(&[ChannelVersion { channel: "c".to_owned(), version: version(""), block: None }]);
        assert!(active.contains("(0.1.0)  the chaincode's own component"), "{active}");
    }

    #[tokio::test]
    async fn standalone_mode_has_no_ledger_version() {
        let config = Config::defaults();
        let err = activate(&config, Path::new("/nonexistent.wasm"), &[]).await.map(drop);
        assert!(matches!(err, Err(ActivateError::NotDistributed)), "{err:?}");
        let err = active(&config, &[]).await.map(drop);
        assert!(matches!(err, Err(ActivateError::NotDistributed)), "{err:?}");
        // Then the file, before any network.
        let config = Config { mode: Mode::Distributed, ..Config::defaults() };
        let err = activate(&config, Path::new("/nonexistent.wasm"), &[]).await.map(drop);
        assert!(matches!(err, Err(ActivateError::Component(InspectError::Read { .. }))), "{err:?}");
        let err = activate(&config, Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml").as_path(), &[]).await;
        assert!(matches!(err.map(drop), Err(ActivateError::Component(InspectError::Runtime(_)))));
    }
}
