//! Signed proposals as a Fabric client builds them (docs/fabric-encoding.md §4.2), and the
//! proposal hash the peer puts in its response.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use orchestrator_host_fabric::fabric::common::{ChannelHeader, Header, SignatureHeader};
use orchestrator_host_fabric::fabric::protos::{
    ChaincodeHeaderExtension, ChaincodeId, ChaincodeInput, ChaincodeInvocationSpec, ChaincodeProposalPayload,
    ChaincodeSpec, Proposal, SignedProposal,
};
use orchestrator_host_fabric::proposal::ENDORSER_TRANSACTION;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::Identity;

/// A signed proposal and the parts the peer needs (docs/fabric-encoding.md §4.2).
#[derive(Clone, Debug)]
pub struct SimProposal {
    /// lowercase hex SHA-256(nonce ‖ creator).
    pub txid: String,
    /// Channel of the proposal.
    pub channel_id: String,
    /// What the peer receives from the client.
    pub signed: SignedProposal,
    /// The chaincode input (args).
    pub input: ChaincodeInput,
    channel_header: Vec<u8>,
    signature_header: Vec<u8>,
    /// `ChaincodeProposalPayload` without TransientMap (the proposal hash's last part).
    payload_without_transient: Vec<u8>,
}

impl SimProposal {
    /// A proposal with a random 24-byte nonce, timestamped now.
    pub fn new(channel_id: &str, chaincode_name: &str, identity: &Identity, args: Vec<Vec<u8>>) -> Self {
        let random = [uuid::Uuid::new_v4().into_bytes(), uuid::Uuid::new_v4().into_bytes()].concat();
        let nonce = random.get(..24).map(<[u8]>::to_vec).unwrap_or(random);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let timestamp = prost_types::Timestamp {
            seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
        };
        Self::with_nonce(channel_id, chaincode_name, identity, args, timestamp, nonce)
    }

    /// A proposal with the given timestamp and nonce (deterministic bytes).
    pub fn with_nonce(
        channel_id: &str,
        chaincode_name: &str,
        identity: &Identity,
        args: Vec<Vec<u8>>,
        timestamp: prost_types::Timestamp,
        nonce: Vec<u8>,
    ) -> Self {
        let creator = identity.serialized();
        let txid = hex::encode(Sha256::new().chain_update(&nonce).chain_update(&creator).finalize());
        let chaincode_id = ChaincodeId { name: chaincode_name.to_owned(), ..Default::default() };
        let extension = ChaincodeHeaderExtension { chaincode_id: Some(chaincode_id.clone()) }.encode_to_vec();
        let channel_header = ChannelHeader {
            r#type: ENDORSER_TRANSACTION,
            version: 0,
            timestamp: Some(timestamp),
            channel_id: channel_id.to_owned(),
            tx_id: txid.clone(),
            epoch: 0,
            extension,
            tls_cert_hash: Vec::new(),
        }
        .encode_to_vec();
        let signature_header = SignatureHeader { creator, nonce }.encode_to_vec();
        let header = Header { channel_header: channel_header.clone(), signature_header: signature_header.clone() };
        let input = ChaincodeInput { args, decorations: BTreeMap::new(), is_init: false };
        let spec = ChaincodeInvocationSpec {
            chaincode_spec: Some(ChaincodeSpec {
                r#type: orchestrator_host_fabric::fabric::protos::chaincode_spec::Type::Golang as i32,
                chaincode_id: Some(chaincode_id),
                input: Some(input.clone()),
                timeout: 0,
            }),
        };
        let payload = ChaincodeProposalPayload { input: spec.encode_to_vec(), transient_map: BTreeMap::new() };
        let payload_without_transient = payload.encode_to_vec();
        let proposal_bytes =
            Proposal { header: header.encode_to_vec(), payload: payload.encode_to_vec(), extension: Vec::new() }
                .encode_to_vec();
        // An empty signature (refused by the peer) only if the system has no randomness.
        let signature = identity.sign(&proposal_bytes).unwrap_or_else(|error| {
            tracing::error!(%error, "cannot sign the proposal");
            Vec::new()
        });
        Self {
            txid,
            channel_id: channel_id.to_owned(),
            signed: SignedProposal { proposal_bytes, signature },
            input,
            channel_header,
            signature_header,
            payload_without_transient,
        }
    }

    /// SHA-256(channel header ‖ signature header ‖ payload without TransientMap).
    pub fn proposal_hash(&self) -> Vec<u8> {
        Sha256::new()
            .chain_update(&self.channel_header)
            .chain_update(&self.signature_header)
            .chain_update(&self.payload_without_transient)
            .finalize()
            .to_vec()
    }
}
