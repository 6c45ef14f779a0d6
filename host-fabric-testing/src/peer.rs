//! One simulated peer of one channel with one chaincode namespace: proposal checks,
//! endorsement over a [`ChaincodeConnection`], blocks validated and committed in order, and the
//! chaincode events of valid transactions.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use orchestrator_host_fabric::encoding;
use orchestrator_host_fabric::fabric::common::{ChannelHeader, Header, SignatureHeader};
use orchestrator_host_fabric::fabric::kvrwset::KvrwSet;
use orchestrator_host_fabric::fabric::msp::SerializedIdentity;
use orchestrator_host_fabric::fabric::protos::{
    ChaincodeAction, ChaincodeEvent, ChaincodeId, Proposal, ProposalResponsePayload, Response,
};
use orchestrator_host_fabric::fabric::rwset::{NsReadWriteSet, TxReadWriteSet};
use orchestrator_host_fabric::proposal::ENDORSER_TRANSACTION;
use orchestrator_host_fabric::signing;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::connection::ChaincodeConnection;
use crate::endorsement::{Endorsement, TxSimulator};
use crate::store::{State, ValidationCode, validate};
use crate::{CHAINCODE_VERSION, Identity, SimError, SimProposal, identity, lock};

/// A chaincode event delivered after its block committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredEvent {
    /// Block number.
    pub block: u64,
    /// The event (all four fields set).
    pub event: ChaincodeEvent,
}

#[derive(Debug)]
struct Ledger {
    state: Arc<State>,
    /// Next block number (block 0 is the genesis block).
    height: u64,
    txids: HashSet<String>,
    events: Vec<DeliveredEvent>,
}

/// A single simulated peer of one channel, with one chaincode namespace.
#[derive(Debug)]
pub struct Peer {
    channel_id: String,
    chaincode_name: String,
    /// MSPs whose members may write on the channel; `None`: every MSP the simulator issued an
    /// identity for.
    members: Option<HashSet<String>>,
    ledger: Mutex<Ledger>,
}

impl Peer {
    /// An empty ledger (genesis block only).
    pub fn new(channel_id: impl Into<String>, chaincode_name: impl Into<String>) -> Self {
        Self {
            channel_id: channel_id.into(),
            chaincode_name: chaincode_name.into(),
            members: None,
            ledger: Mutex::new(Ledger {
                state: Arc::new(State::new()),
                height: 1,
                txids: HashSet::new(),
                events: Vec::new(),
            }),
        }
    }

    /// Restricts the channel's writers to the members of `msp_ids`.
    pub fn with_members(mut self, msp_ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.members = Some(msp_ids.into_iter().map(Into::into).collect());
        self
    }

    /// The peer's proposal checks (docs/fabric-encoding.md §5.1 step 1), on the signed bytes:
    /// header type ENDORSER_TRANSACTION, epoch 0, this channel, non-empty nonce and creator, txid =
    /// hex SHA-256(nonce ‖ creator), the creator's certificate issued for its MSP, a low-S
    /// signature of `proposal_bytes` by that certificate's key, the MSP a member of the channel,
    /// and the txid not in the ledger.
    pub fn check_proposal(&self, proposal: &SimProposal) -> Result<(), SimError> {
        let refuse = |reason: String| SimError::BadProposal(reason);
        let signed = &proposal.signed;
        let decoded = Proposal::decode(signed.proposal_bytes.as_slice())
            .map_err(|e| refuse(format!("malformed proposal: {e}")))?;
        let header = Header::decode(decoded.header.as_slice()).map_err(|e| refuse(format!("malformed header: {e}")))?;
        let channel_header = ChannelHeader::decode(header.channel_header.as_slice())
            .map_err(|e| refuse(format!("malformed channel header: {e}")))?;
        let signature_header = SignatureHeader::decode(header.signature_header.as_slice())
            .map_err(|e| refuse(format!("malformed signature header: {e}")))?;
        if channel_header.r#type != ENDORSER_TRANSACTION {
            return Err(refuse(format!("invalid header type {}", channel_header.r#type)));
        }
        if channel_header.epoch != 0 {
            return Err(refuse(format!("invalid epoch {}, expected 0", channel_header.epoch)));
        }
        if channel_header.channel_id != self.channel_id || proposal.channel_id != self.channel_id {
            return Err(SimError::WrongChannel(channel_header.channel_id));
        }
        if signature_header.nonce.is_empty() {
            return Err(refuse("nonce is empty".to_owned()));
        }
        if signature_header.creator.is_empty() {
            return Err(refuse("creator is empty".to_owned()));
        }
        let expected = hex::encode(
            Sha256::new().chain_update(&signature_header.nonce).chain_update(&signature_header.creator).finalize(),
        );
        if channel_header.tx_id != expected || proposal.txid != channel_header.tx_id {
            return Err(refuse(format!("incorrect txid {}, expected {expected}", channel_header.tx_id)));
        }
        let creator = SerializedIdentity::decode(signature_header.creator.as_slice())
            .map_err(|e| refuse(format!("malformed creator: {e}")))?;
        let denied = || refuse(format!("access denied: channel [{}] creator org [{}]", self.channel_id, creator.mspid));
        let issued = identity::issued_with_certificate(&creator.mspid, &creator.id_bytes).ok_or_else(denied)?;
        if let Err(error) = signing::verify(issued.public_key(), &signed.proposal_bytes, &signed.signature) {
            tracing::debug!(%error, "creator signature refused");
            return Err(denied());
        }
        if self.members.as_ref().is_some_and(|members| !members.contains(&creator.mspid)) {
            return Err(denied());
        }
        if lock(&self.ledger).txids.contains(&channel_header.tx_id) {
            return Err(SimError::DuplicateTxid(channel_header.tx_id));
        }
        Ok(())
    }

    /// A proposal calling `method` with `request` as `identity`.
    pub fn proposal(&self, identity: &Identity, method: &str, request: &[u8]) -> SimProposal {
        SimProposal::new(&self.channel_id, &self.chaincode_name, identity, encoding::call_args(method, request))
    }

    /// Simulates `proposal` on `chaincode` against the current committed state.
    pub async fn endorse(
        &self,
        chaincode: &ChaincodeConnection,
        proposal: &SimProposal,
    ) -> Result<Endorsement, SimError> {
        if proposal.channel_id != self.channel_id {
            return Err(SimError::WrongChannel(proposal.channel_id.clone()));
        }
        self.check_proposal(proposal)?;
        let snapshot = {
            let ledger = lock(&self.ledger);
            if ledger.txids.contains(&proposal.txid) {
                return Err(SimError::DuplicateTxid(proposal.txid.clone()));
            }
            Arc::clone(&ledger.state)
        };
        let mut simulator = TxSimulator::new(&self.chaincode_name, snapshot);
        let outcome = chaincode
            .execute(
                &proposal.txid,
                &proposal.channel_id,
                proposal.input.encode_to_vec(),
                Some(proposal.signed.clone()),
                &mut simulator,
            )
            .await;
        let rwset = simulator.rwset();
        let results = TxReadWriteSet {
            data_model: 0,
            ns_rwset: vec![NsReadWriteSet { namespace: self.chaincode_name.clone(), rwset: rwset.encode_to_vec() }],
        }
        .encode_to_vec();
        let (response, event, payload) = match outcome {
            Ok((response, event)) => {
                let event = event.map(|event| ChaincodeEvent {
                    chaincode_id: self.chaincode_name.clone(),
                    tx_id: proposal.txid.clone(),
                    ..event
                });
                let action = ChaincodeAction {
                    results: results.clone(),
                    events: event.as_ref().map(Message::encode_to_vec).unwrap_or_default(),
                    response: Some(response.clone()),
                    chaincode_id: Some(ChaincodeId {
                        name: self.chaincode_name.clone(),
                        version: CHAINCODE_VERSION.to_owned(),
                        ..Default::default()
                    }),
                };
                let payload = ProposalResponsePayload {
                    proposal_hash: proposal.proposal_hash(),
                    extension: action.encode_to_vec(),
                }
                .encode_to_vec();
                (response, event, Some(payload))
            }
            Err(error) => {
                let response =
                    Response { status: 500, message: format!("error in simulation: {error}"), payload: Vec::new() };
                (response, None, None)
            }
        };
        let state_requests = simulator.requests;
        Ok(Endorsement { txid: proposal.txid.clone(), response, rwset, results, event, payload, state_requests })
    }

    /// Simulates and discards the rwset (Evaluate): nothing is committed nor emitted.
    pub async fn evaluate(
        &self,
        chaincode: &ChaincodeConnection,
        proposal: &SimProposal,
    ) -> Result<Response, SimError> {
        Ok(self.endorse(chaincode, proposal).await?.response)
    }

    /// Endorses `proposal` and commits it alone in a block.
    pub async fn submit(
        &self,
        chaincode: &ChaincodeConnection,
        proposal: &SimProposal,
    ) -> Result<(Endorsement, ValidationCode), SimError> {
        let endorsement = self.endorse(chaincode, proposal).await?;
        let code = self.commit_block(std::slice::from_ref(&endorsement)).pop().unwrap_or(ValidationCode::BadRwset);
        Ok((endorsement, code))
    }

    /// Validates and commits one block: transactions in order, each checked against the
    /// committed state plus the writes of the earlier valid transactions of the block.
    pub fn commit_block(&self, transactions: &[Endorsement]) -> Vec<ValidationCode> {
        let mut ledger = lock(&self.ledger);
        let block = ledger.height;
        let mut state: State = (*ledger.state).clone();
        let mut written: HashSet<String> = HashSet::new();
        let mut in_block: HashSet<&str> = HashSet::new();
        let mut codes = Vec::with_capacity(transactions.len());
        for (tx_num, tx) in (0u64..).zip(transactions) {
            let code = if ledger.txids.contains(&tx.txid) || !in_block.insert(tx.txid.as_str()) {
                ValidationCode::DuplicateTxid
            } else if !tx.is_endorsed() {
                ValidationCode::EndorsementPolicyFailure
            } else {
                match self.namespace_rwset(&tx.results) {
                    Some(rwset) => {
                        let code = validate(&rwset, &state, &written);
                        if code == ValidationCode::Valid {
                            for write in rwset.writes {
                                if write.is_delete {
                                    state.remove(&write.key);
                                } else {
                                    state.insert(write.key.clone(), (write.value, (block, tx_num)));
                                }
                                written.insert(write.key);
                            }
                            if let Some(event) = &tx.event {
                                ledger.events.push(DeliveredEvent { block, event: event.clone() });
                            }
                        }
                        code
                    }
                    None => ValidationCode::BadRwset,
                }
            };
            codes.push(code);
        }
        for tx in transactions {
            ledger.txids.insert(tx.txid.clone());
        }
        ledger.state = Arc::new(state);
        ledger.height += 1;
        codes
    }

    fn namespace_rwset(&self, results: &[u8]) -> Option<KvrwSet> {
        let tx = TxReadWriteSet::decode(results).ok()?;
        match tx.ns_rwset.as_slice() {
            [ns] if ns.namespace == self.chaincode_name => KvrwSet::decode(ns.rwset.as_slice()).ok(),
            [] => Some(KvrwSet::default()),
            _ => None,
        }
    }

    /// Chaincode events delivered so far (valid transactions only), in block and tx order.
    pub fn events(&self) -> Vec<DeliveredEvent> {
        lock(&self.ledger).events.clone()
    }

    /// Number of blocks, genesis included.
    pub fn height(&self) -> u64 {
        lock(&self.ledger).height
    }

    /// The committed state.
    pub fn state(&self) -> State {
        (*lock(&self.ledger).state).clone()
    }
}
