//! Distributed mode: the same gRPC front, with each call forwarded through a Fabric peer's
//! Gateway to the chaincode running the same logic component, and the ledger's events copied
//! into the PostgreSQL event store that QueryEvents, SubscribeToEvents and the relay read.
//!
//! - [`FabricBackend`]: read-only methods (the component's table) are evaluated on the peer,
//!   the others endorsed, submitted and awaited; MVCC and phantom conflicts are run again within
//!   the retry budget; a commit wait that times out is settled by asking the peer, never guessed.
//! - [`listener`]: one task per channel reading `chaincode-updates` events from a checkpoint.
//! - [`wallet`]: the identities that sign, chosen by the call's `mspid` header.

pub mod listener;
pub mod wallet;

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_host_fabric::encoding;
use orchestrator_host_fabric::gateway::{GatewayClient, GatewayError};
use orchestrator_runtime::{ErrorKind, LogicError};

use crate::postgres::{Call, CallError, CallOutcome, TxMode};
use wallet::Wallet;

/// `protos.TxValidationCode` values a new attempt can cure: another transaction changed what
/// this one read between endorsement and commit.
const MVCC_READ_CONFLICT: i32 = 11;
const PHANTOM_READ_CONFLICT: i32 = 12;

/// Calls forwarded to the chaincode through one peer's Gateway.
#[derive(Debug, Clone)]
pub struct FabricBackend {
    gateway: GatewayClient,
    wallet: Arc<Wallet>,
    chaincode: String,
    commit_timeout: Duration,
    retry_budget: Duration,
}

impl FabricBackend {
    /// Calls through `gateway`, signed with the `wallet`'s identities, to `chaincode` unless a
    /// call names another.
    pub fn new(
        gateway: GatewayClient,
        wallet: Arc<Wallet>,
        chaincode: String,
        commit_timeout: Duration,
        retry_budget: Duration,
    ) -> Self {
        Self { gateway, wallet, chaincode, commit_timeout, retry_budget }
    }

    /// Runs `call` on the chaincode (`chaincode`, when the call's header names one).
    pub async fn run(&self, call: Call, chaincode: Option<&str>) -> CallOutcome {
        let mut attempts = 0;
        let started = Instant::now();
        let result = loop {
            attempts += 1;
            match self.attempt(&call, chaincode.unwrap_or(&self.chaincode)).await {
                Err(Attempt::Conflict { txid, code }) if started.elapsed() < self.retry_budget => {
                    tracing::debug!(method = %call.method, txid, code, attempt = attempts, "ledger conflict: running the call again");
                }
                Err(Attempt::Conflict { txid, code }) => {
                    break Err(CallError::NotApplied(format!(
                        "the call was not applied: its transaction {txid} conflicted with concurrent ones \
                         (validation code {code}) until the retry budget of {:?} ran out; retrying is safe",
                        self.retry_budget
                    )));
                }
                Err(Attempt::Failed(err)) => break Err(err),
                Ok(payload) => break Ok(payload),
            }
        };
        // The chaincode ran the logic; its QueryVersion answer names its own version.
        CallOutcome { result, attempts, fuel_consumed: 0, logic: None }
    }

    async fn attempt(&self, call: &Call, chaincode: &str) -> Result<Vec<u8>, Attempt> {
        let identity = self.wallet.identity(&call.msp_id).map_err(|err| {
            Attempt::Failed(CallError::Logic(LogicError {
                kind: ErrorKind::PermissionDenied,
                message: format!("OE0102: {err}"),
            }))
        })?;
        let args = encoding::call_args(&call.method, &call.request);
        match call.mode {
            TxMode::ReadOnly => self
                .gateway
                .evaluate(&identity, &call.channel, chaincode, args)
                .await
                .map_err(|err| Attempt::Failed(before_submission(err))),
            TxMode::ReadWrite => {
                match self.gateway.submit(&identity, &call.channel, chaincode, args, self.commit_timeout).await {
                    Ok(submitted) => Ok(submitted.payload),
                    Err(GatewayError::Invalid { txid, code }) if is_conflict(code) => {
                        Err(Attempt::Conflict { txid, code })
                    }
                    Err(GatewayError::Invalid { txid, code }) => Err(Attempt::Failed(CallError::NotApplied(format!(
                        "the call was not applied: the ledger marked its transaction {txid} invalid \
                         (validation code {code}); retrying is safe"
                    )))),
                    Err(GatewayError::CommitTimeout { txid, payload }) => {
                        self.settle(&identity, &call.channel, txid, payload).await
                    }
                    Err(err) => Err(Attempt::Failed(before_submission(err))),
                }
            }
        }
    }

    /// The outcome of a submitted transaction whose commit was not seen in time: the peer's
    /// CommitStatus waits for it.
    async fn settle(
        &self,
        identity: &orchestrator_host_fabric::gateway::SigningIdentity,
        channel: &str,
        txid: String,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, Attempt> {
        let status =
            tokio::time::timeout(self.commit_timeout, self.gateway.commit_status(identity, channel, &txid)).await;
        match status {
            Ok(Ok(status)) if status.code == 0 => Ok(payload),
            Ok(Ok(status)) if is_conflict(status.code) => Err(Attempt::Conflict { txid, code: status.code }),
            Ok(Ok(status)) => Err(Attempt::Failed(CallError::NotApplied(format!(
                "the call was not applied: the ledger marked its transaction {txid} invalid (validation code {}); \
                 retrying is safe",
                status.code
            )))),
            Ok(Err(err)) => Err(Attempt::Failed(CallError::OutcomeUnknown(format!(
                "the outcome of transaction {txid} is unknown: it was submitted, then the peer could not say \
                 whether it committed ({err}); look for its events before sending the call again"
            )))),
            Err(_) => Err(Attempt::Failed(CallError::OutcomeUnknown(format!(
                "the outcome of transaction {txid} is unknown: it was submitted and had not committed after {:?}; \
                 look for its events before sending the call again",
                self.commit_timeout * 2
            )))),
        }
    }
}

/// One attempt's failure.
enum Attempt {
    /// MVCC or phantom conflict: nothing applied, run again.
    Conflict {
        txid: String,
        code: i32,
    },
    Failed(CallError),
}

fn is_conflict(code: i32) -> bool {
    code == MVCC_READ_CONFLICT || code == PHANTOM_READ_CONFLICT
}

/// An error before the transaction reached the orderer: the chaincode's business errors come
/// back as the logic's own; anything else left the ledger untouched.
fn before_submission(err: GatewayError) -> CallError {
    match err {
        GatewayError::Chaincode { status, message } => {
            CallError::Logic(LogicError { kind: ErrorKind::from_fabric(status, &message), message })
        }
        other => CallError::NotApplied(format!(
            "the call was not applied: the Fabric gateway failed ({other}); retrying is safe"
        )),
    }
}
