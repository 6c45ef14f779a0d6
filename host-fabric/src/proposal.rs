//! The call context from a transaction's `SignedProposal` (docs/fabric-encoding.md §3.8). The peer
//! has already verified the signature: nothing here is cryptographic.

use orchestrator_runtime::Context;
use prost::Message;

use crate::fabric::common::{ChannelHeader, Header, SignatureHeader};
use crate::fabric::msp::SerializedIdentity;
use crate::fabric::protos::{Proposal, SignedProposal};

/// `common.HeaderType.ENDORSER_TRANSACTION`.
pub const ENDORSER_TRANSACTION: i32 = 3;

/// Why a proposal cannot give a call context.
#[derive(Debug, thiserror::Error)]
pub enum ProposalError {
    /// The TRANSACTION message carries no proposal.
    #[error("the transaction carries no signed proposal")]
    Missing,
    /// One of the nested messages does not decode.
    #[error("malformed {what}: {source}")]
    Decode {
        /// Which message.
        what: &'static str,
        /// The decoding error.
        source: prost::DecodeError,
    },
    /// A header field is missing or inconsistent with the shim message.
    #[error("invalid proposal: {0}")]
    Invalid(String),
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M, ProposalError> {
    M::decode(bytes).map_err(|source| ProposalError::Decode { what, source })
}

/// Builds the context of the transaction `(channel_id, txid)` from its proposal: creator MSP
/// id, channel and tx id from the channel header (checked against the shim message), and the
/// proposal timestamp as transaction time (identical on every endorser).
pub fn context(channel_id: &str, txid: &str, signed: Option<&SignedProposal>) -> Result<Context, ProposalError> {
    let signed = signed.ok_or(ProposalError::Missing)?;
    let proposal: Proposal = decode(&signed.proposal_bytes, "Proposal")?;
    let header: Header = decode(&proposal.header, "Header")?;
    let channel_header: ChannelHeader = decode(&header.channel_header, "ChannelHeader")?;
    let signature_header: SignatureHeader = decode(&header.signature_header, "SignatureHeader")?;
    let creator: SerializedIdentity = decode(&signature_header.creator, "SerializedIdentity")?;

    if channel_header.r#type != ENDORSER_TRANSACTION {
        return Err(ProposalError::Invalid(format!(
            "header type {} is not ENDORSER_TRANSACTION",
            channel_header.r#type
        )));
    }
    if channel_header.tx_id != txid {
        return Err(ProposalError::Invalid(format!(
            "tx id {:?} differs from the message's {txid:?}",
            channel_header.tx_id
        )));
    }
    if channel_header.channel_id != channel_id {
        return Err(ProposalError::Invalid(format!(
            "channel {:?} differs from the message's {channel_id:?}",
            channel_header.channel_id
        )));
    }
    if creator.mspid.is_empty() {
        return Err(ProposalError::Invalid("the creator has no MSP id".to_owned()));
    }
    let timestamp = channel_header.timestamp.ok_or_else(|| ProposalError::Invalid("no timestamp".to_owned()))?;
    let tx_time_micros = timestamp
        .seconds
        .checked_mul(1_000_000)
        .and_then(|micros| micros.checked_add(i64::from(timestamp.nanos) / 1_000))
        .ok_or_else(|| ProposalError::Invalid(format!("timestamp {}s out of range", timestamp.seconds)))?;
    Ok(Context {
        msp_id: creator.mspid,
        channel: channel_header.channel_id,
        tx_id: channel_header.tx_id,
        tx_time_micros,
    })
}

/// The creator of a transaction's proposal: its MSP id and certificate (`id_bytes`, PEM), as the
/// peer validated them against the channel's MSP definition before calling the chaincode.
pub fn creator(signed: Option<&SignedProposal>) -> Result<SerializedIdentity, ProposalError> {
    let signed = signed.ok_or(ProposalError::Missing)?;
    let proposal: Proposal = decode(&signed.proposal_bytes, "Proposal")?;
    let header: Header = decode(&proposal.header, "Header")?;
    let signature_header: SignatureHeader = decode(&header.signature_header, "SignatureHeader")?;
    decode(&signature_header.creator, "SerializedIdentity")
}
