//! The logic component as a Hyperledger Fabric chaincode (chaincode-as-a-service).
//!
//! - [`shim`]: the `protos.Chaincode/Connect` server the peer dials: handshake, one task per
//!   transaction, state requests to the peer through a [`orchestrator_runtime::StateBackend`],
//!   and [`shim::Shutdown`], which drains and ends the streams;
//! - [`proposal`]: the call context taken from the signed proposal;
//! - [`encoding`]: how arguments, values, responses, errors and events are laid out on Fabric;
//! - [`config`]: the CCaaS environment of the `chaincode` binary;
//! - [`identity`]: the simulator's client identities (P-256 keys, certificates, low-S signatures);
//! - [`gateway`]: a Fabric Gateway client (evaluate, submit, commit status, chaincode events);
//! - [`simulator`]: a peer simulator (endorsement, MVCC/phantom validation, blocks, events)
//!   for tests.

pub mod config;
pub mod encoding;
pub mod fabric;
pub mod gateway;
pub mod identity;
pub mod proposal;
pub mod shim;
pub mod simulator;

pub use shim::ChaincodeService;
