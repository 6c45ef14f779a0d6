//! The call context the chaincode takes from a signed proposal (`proposal::context`), on a
//! proposal built by the peer simulator (moved out of `src/proposal.rs`: the simulator is a
//! separate crate that links this one).

use orchestrator_fabric_testing::{Identity, IssueIdentity, SimProposal};
use orchestrator_host_fabric::proposal::{ProposalError, context};

#[test]
fn context_from_the_channel_and_signature_headers() {
    let timestamp = prost_types::Timestamp { seconds: 1_700_000_000, nanos: 123_456_789 };
    let identity = Identity::new("MyOrg1MSP").expect("identity");
    let proposal = SimProposal::with_nonce("mychannel", "cc", &identity, vec![b"m".to_vec()], timestamp, vec![7; 24]);
    let creator = identity.serialized();
    let expected_txid = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::new().chain_update([7u8; 24]).chain_update(&creator).finalize())
    };
    assert_eq!(proposal.txid, expected_txid);
    let ctx = context("mychannel", &proposal.txid, Some(&proposal.signed)).expect("context");
    assert_eq!(ctx.msp_id, "MyOrg1MSP");
    assert_eq!(ctx.channel, "mychannel");
    assert_eq!(ctx.tx_id, proposal.txid);
    assert_eq!(ctx.tx_time_micros, 1_700_000_000_123_456);
    assert!(matches!(context("other", &proposal.txid, Some(&proposal.signed)), Err(ProposalError::Invalid(_))));
    assert!(matches!(context("mychannel", &proposal.txid, None), Err(ProposalError::Missing)));
}
