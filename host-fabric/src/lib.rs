//! The logic component as a Hyperledger Fabric chaincode (chaincode-as-a-service).
//!
//! - [`shim`]: the `protos.Chaincode/Connect` server the peer dials: handshake, one task per
//!   transaction, state requests to the peer through a [`orchestrator_runtime::StateBackend`],
//!   and [`shim::Shutdown`], which drains and ends the streams;
//! - [`versions`]: which logic version a transaction runs (the one its channel's ledger names,
//!   compiled once per process), and the shim's reserved keys;
//! - [`admin`]: the shim's own transactions: activate a logic version, read the active one;
//! - [`proposal`]: the call context taken from the signed proposal;
//! - [`encoding`]: how arguments, values, responses, errors and events are laid out on Fabric;
//! - [`config`]: the CCaaS environment of the `chaincode` binary;
//! - [`signing`]: a client identity from PEM files, and Fabric's signature rules (P-256, low-S);
//! - [`gateway`]: a Fabric Gateway client (evaluate, submit, commit status, chaincode events).
//!
//! The peer simulator the tests drive the shim with is `orchestrator-fabric-testing`
//! (`host-fabric-testing/`), kept out of this crate as fabric-chaincode-go keeps `shimtest`
//! apart from `shim`.

pub mod admin;
pub mod config;
pub mod encoding;
pub mod fabric;
pub mod gateway;
pub mod proposal;
pub mod shim;
pub mod signing;
pub mod versions;

pub use shim::ChaincodeService;
