//! Hot swap on Fabric through the peer simulator (docs/modes.md §3.7): an admin's activation
//! names the logic version on the ledger, every later transaction runs it, transactions
//! endorsed before it are invalidated at commit, refusals write nothing, and chaincodes that
//! have the version compiled or not endorse the same bytes.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
#[path = "../../runtime/tests/common/mod.rs"]
mod test_component;

use orchestrator_fabric_testing::component::variant;
use orchestrator_fabric_testing::{
    ChaincodeConnection, Endorsement, Identity, IssueIdentity, Peer, SimProposal, ValidationCode, spawn_service,
};
use orchestrator_host_fabric::ChaincodeService;
use orchestrator_host_fabric::admin::{ACTIVATE, ACTIVATED_EVENT, ACTIVE};
use orchestrator_host_fabric::encoding;
use orchestrator_host_fabric::fabric::orchestrator_fabric::{ActivateLogic, LogicVersion};
use orchestrator_host_fabric::versions::{ACTIVE_KEY, component_key};
use orchestrator_proto::{
    GetAllOrganizationsParam, GetAllOrganizationsResponse, QueryVersionParam, QueryVersionResponse,
    RegisterOrganizationParam,
};
use orchestrator_runtime::identity::sha256_hex;
use prost::Message;

const CHANNEL: &str = "mychannel";
const ORG1: &str = "MyOrg1MSP";
const ORG2: &str = "MyOrg2MSP";
const QUERY_VERSION: &str = "orchestrator.InfoService/QueryVersion";
const REGISTER_ORGANIZATION: &str = "orchestrator.OrganizationService/RegisterOrganization";
const GET_ALL_ORGANIZATIONS: &str = "orchestrator.OrganizationService/GetAllOrganizations";

fn base_sha256() -> String {
    sha256_hex(orchestrator_logic_component::COMPONENT)
}

/// A chaincode server of its own (its own compiled versions) and a peer stream to it.
async fn chaincode() -> (ChaincodeService, ChaincodeConnection) {
    let service = ChaincodeService::new(common::runtime(), common::PACKAGE_ID);
    let (endpoint, _server) = spawn_service(service.clone()).await.expect("serve");
    (service, ChaincodeConnection::connect(endpoint).await.expect("connect"))
}

fn user(msp_id: &str) -> Identity {
    Identity::new(msp_id).expect("identity")
}

fn admin(msp_id: &str) -> Identity {
    Identity::admin(msp_id).expect("admin identity")
}

fn activation(component: &[u8]) -> Vec<u8> {
    ActivateLogic { component: component.to_vec(), sha256: String::new() }.encode_to_vec()
}

async fn endorse(peer: &Peer, cc: &ChaincodeConnection, proposal: &SimProposal) -> Endorsement {
    peer.endorse(cc, proposal).await.expect("endorse")
}

/// Endorses and commits alone in a block; the transaction must be valid.
async fn submit(peer: &Peer, cc: &ChaincodeConnection, id: &Identity, method: &str, request: &[u8]) -> Endorsement {
    let (endorsement, code) = peer.submit(cc, &peer.proposal(id, method, request)).await.expect("submit");
    assert_eq!(endorsement.response.status, 200, "{method}: {}", endorsement.response.message);
    assert_eq!(code, ValidationCode::Valid, "{method}");
    endorsement
}

async fn logic_sha256(peer: &Peer, cc: &ChaincodeConnection) -> String {
    let proposal = peer.proposal(&user(ORG1), QUERY_VERSION, &QueryVersionParam {}.encode_to_vec());
    let response = peer.evaluate(cc, &proposal).await.expect("evaluate");
    assert_eq!(response.status, 200, "{}", response.message);
    QueryVersionResponse::decode(response.payload.as_slice()).expect("QueryVersionResponse").logic_sha256
}

async fn active(peer: &Peer, cc: &ChaincodeConnection) -> LogicVersion {
    let response = peer.evaluate(cc, &peer.proposal(&user(ORG2), ACTIVE, &[])).await.expect("evaluate");
    assert_eq!(response.status, 200, "{}", response.message);
    LogicVersion::decode(response.payload.as_slice()).expect("LogicVersion")
}

fn written_keys(endorsement: &Endorsement) -> Vec<&str> {
    endorsement.rwset.writes.iter().map(|write| write.key.as_str()).collect()
}

/// The refusal of `request` by an admin of ORG1: its status and message; nothing written,
/// nothing endorsed.
async fn refused(peer: &Peer, cc: &ChaincodeConnection, identity: &Identity, request: &[u8]) -> (i32, String) {
    let (endorsement, code) = peer.submit(cc, &peer.proposal(identity, ACTIVATE, request)).await.expect("submit");
    assert!(endorsement.rwset.writes.is_empty(), "a refused activation writes nothing");
    assert!(endorsement.event.is_none());
    assert_eq!(code, ValidationCode::EndorsementPolicyFailure, "a refusal is never endorsed");
    (endorsement.response.status, endorsement.response.message)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_activates_a_version_and_every_later_call_runs_it() {
    let (_, cc) = chaincode().await;
    let peer = Peer::new(CHANNEL, common::CHAINCODE);
    submit(&peer, &cc, &user(ORG1), REGISTER_ORGANIZATION, &RegisterOrganizationParam::default().encode_to_vec()).await;
    assert_eq!(logic_sha256(&peer, &cc).await, base_sha256());
    let before = active(&peer, &cc).await;
    assert_eq!((before.sha256.as_str(), before.activated_by.as_str()), (base_sha256().as_str(), ""));
    assert_eq!(before.world, "substra:orchestrator@0.1.0");

    let v2 = variant(b"v2");
    let v2_sha256 = sha256_hex(&v2);
    let endorsement = submit(&peer, &cc, &admin(ORG1), ACTIVATE, &activation(&v2)).await;
    let answered = LogicVersion::decode(endorsement.response.payload.as_slice()).expect("LogicVersion");
    assert_eq!(answered.sha256, v2_sha256);
    assert_eq!((answered.activated_by.as_str(), answered.tx_id.as_str()), (ORG1, endorsement.txid.as_str()));
    assert_eq!(written_keys(&endorsement), [ACTIVE_KEY.to_owned(), component_key(&v2_sha256)]);
    let stored = &endorsement.rwset.writes[1].value;
    assert_eq!(encoding::decode_value(stored.clone()).as_deref(), Some(v2.as_slice()), "the bytes, escaped");
    let event = endorsement.event.as_ref().expect("an activation event");
    assert_eq!(event.event_name, ACTIVATED_EVENT);
    assert_eq!(LogicVersion::decode(event.payload.as_slice()).expect("payload"), answered);

    // Every later call runs the new version, on the same state.
    assert_eq!(logic_sha256(&peer, &cc).await, v2_sha256);
    let all = peer.proposal(&user(ORG2), GET_ALL_ORGANIZATIONS, &GetAllOrganizationsParam {}.encode_to_vec());
    let all = peer.evaluate(&cc, &all).await.expect("evaluate");
    let all = GetAllOrganizationsResponse::decode(all.payload.as_slice()).expect("organizations");
    assert_eq!(all.organizations.len(), 1);
    submit(&peer, &cc, &user(ORG2), REGISTER_ORGANIZATION, &RegisterOrganizationParam::default().encode_to_vec()).await;
    assert_eq!(active(&peer, &cc).await, answered);

    // The same component again: answered, nothing written (a retry after a lost answer).
    let again = submit(&peer, &cc, &admin(ORG2), ACTIVATE, &activation(&v2)).await;
    assert!(again.rwset.writes.is_empty());
    assert_eq!(LogicVersion::decode(again.response.payload.as_slice()).expect("LogicVersion"), answered);

    // Back to the base: its bytes were never stored, so a sha256 alone is not enough.
    let by_sha = ActivateLogic { component: Vec::new(), sha256: base_sha256() }.encode_to_vec();
    let (status, message) = refused(&peer, &cc, &admin(ORG1), &by_sha).await;
    assert_eq!(status, 404, "{message}");
    assert!(message.contains("no component") && message.contains(&base_sha256()), "{message}");
    let rollback =
        submit(&peer, &cc, &admin(ORG2), ACTIVATE, &activation(orchestrator_logic_component::COMPONENT)).await;
    assert_eq!(LogicVersion::decode(rollback.response.payload.as_slice()).expect("LogicVersion").activated_by, ORG2);
    assert_eq!(logic_sha256(&peer, &cc).await, base_sha256());
    // v2 is stored: its sha256 is enough, and only the record is written.
    let by_sha = ActivateLogic { component: Vec::new(), sha256: v2_sha256.clone() }.encode_to_vec();
    let forward = submit(&peer, &cc, &admin(ORG1), ACTIVATE, &by_sha).await;
    assert_eq!(written_keys(&forward), [ACTIVE_KEY]);
    assert_eq!(logic_sha256(&peer, &cc).await, v2_sha256);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_admin_may_activate_and_a_refusal_writes_nothing() {
    let (_, cc) = chaincode().await;
    let peer = Peer::new(CHANNEL, common::CHAINCODE);
    let v2 = variant(b"refused");
    let (endorsement, code) =
        peer.submit(&cc, &peer.proposal(&user(ORG1), ACTIVATE, &activation(&v2))).await.expect("submit");
    assert_eq!(endorsement.response.status, 403, "{}", endorsement.response.message);
    assert!(endorsement.response.message.contains("OU=admin"), "{}", endorsement.response.message);
    assert!(endorsement.response.message.contains("\"client\""), "{}", endorsement.response.message);
    // Refused before any read: the transaction holds nothing.
    assert!(endorsement.rwset.reads.is_empty() && endorsement.rwset.writes.is_empty());
    assert_eq!(code, ValidationCode::EndorsementPolicyFailure);
    assert!(peer.state().is_empty());
    assert_eq!(logic_sha256(&peer, &cc).await, base_sha256());
    // Evaluating it changes nothing either.
    let response = peer.evaluate(&cc, &peer.proposal(&user(ORG2), ACTIVATE, &activation(&v2))).await.expect("eval");
    assert_eq!(response.status, 403, "{}", response.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_that_cannot_replace_the_active_one_is_refused() {
    let (service, cc) = chaincode().await;
    let peer = Peer::new(CHANNEL, common::CHAINCODE);
    let admin = admin(ORG1);

    let (status, message) = refused(&peer, &cc, &admin, &activation(b"definitely not a component")).await;
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("does not load"), "{message}");

    // A component of the same world lacking the orchestrator's methods.
    let foreign = test_component::test_component("swap-test-foreign");
    let (status, message) = refused(&peer, &cc, &admin, &activation(&foreign)).await;
    assert_eq!(status, 412, "{message}");
    assert!(message.contains("cannot replace the active version") && message.contains("lacks"), "{message}");
    assert!(message.contains(&base_sha256()), "{message}");
    // Components of another world: semver-compatible (it links, but is not the same world), or
    // not (it does not link).
    let other_world = test_component::test_component_of("swap-test-world", "0.1.1", &test_component::METHODS);
    let (status, message) = refused(&peer, &cc, &admin, &activation(&other_world)).await;
    assert_eq!(status, 412, "{message}");
    assert!(message.contains("exports world substra:orchestrator@0.1.1"), "{message}");
    let far_world = test_component::test_component_of("swap-test-far", "0.2.0", &test_component::METHODS);
    let (status, message) = refused(&peer, &cc, &admin, &activation(&far_world)).await;
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("does not load"), "{message}");

    // The sha256 given does not match the bytes.
    let request = ActivateLogic { component: variant(b"x"), sha256: "ab".repeat(32) }.encode_to_vec();
    let (status, message) = refused(&peer, &cc, &admin, &request).await;
    assert_eq!(status, 400, "{message}");
    let (status, message) = refused(&peer, &cc, &admin, b"\xff\xff not a protobuf").await;
    assert_eq!(status, 400, "{message}");

    assert!(peer.state().is_empty(), "nothing was stored");
    assert_eq!(logic_sha256(&peer, &cc).await, base_sha256());
    assert_eq!(service.versions().compiled(), 1, "refused candidates are not kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_endorsed_before_the_swap_is_invalidated_by_its_block() {
    let (_, cc) = chaincode().await;
    let peer = Peer::new(CHANNEL, common::CHAINCODE);
    let register = RegisterOrganizationParam::default().encode_to_vec();
    let early = endorse(&peer, &cc, &peer.proposal(&user(ORG1), REGISTER_ORGANIZATION, &register)).await;
    assert_eq!(early.response.status, 200, "{}", early.response.message);
    // It read the (absent) version record.
    let read = early.rwset.reads.iter().find(|read| read.key == ACTIVE_KEY).expect("a read of the record");
    assert_eq!(read.version, None);
    let swap = endorse(&peer, &cc, &peer.proposal(&admin(ORG2), ACTIVATE, &activation(&variant(b"mvcc")))).await;
    assert_eq!(swap.response.status, 200, "{}", swap.response.message);

    // Ordered after the swap in the same block: invalid, as on every peer.
    let codes = peer.commit_block(&[swap, early.clone()]);
    assert_eq!(codes, [ValidationCode::Valid, ValidationCode::MvccReadConflict]);
    assert!(!peer.state().contains_key("organization/MyOrg1MSP"), "{:?}", peer.state().keys());
    // In a later block: invalid too.
    assert_eq!(peer.commit_block(&[early]), [ValidationCode::DuplicateTxid]);
    let late = endorse(&peer, &cc, &peer.proposal(&user(ORG1), REGISTER_ORGANIZATION, &register)).await;
    let stale = endorse(&peer, &cc, &peer.proposal(&user(ORG2), REGISTER_ORGANIZATION, &register)).await;
    let swap_back = endorse(
        &peer,
        &cc,
        &peer.proposal(&admin(ORG1), ACTIVATE, &activation(orchestrator_logic_component::COMPONENT)),
    )
    .await;
    assert_eq!(peer.commit_block(&[swap_back]), [ValidationCode::Valid]);
    assert_eq!(peer.commit_block(&[stale]), [ValidationCode::MvccReadConflict]);
    // Run again (as the facade does within its retry budget), it commits on the new version.
    assert_eq!(peer.commit_block(&[late]), [ValidationCode::MvccReadConflict]);
    submit(&peer, &cc, &user(ORG1), REGISTER_ORGANIZATION, &register).await;
    assert_eq!(logic_sha256(&peer, &cc).await, base_sha256());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_is_compiled_once_and_endorsed_alike_with_or_without_the_cache() {
    let (warm_service, warm) = chaincode().await;
    let (cold_service, cold) = chaincode().await;
    let peer = Peer::new(CHANNEL, common::CHAINCODE);
    let v2 = variant(b"cache");
    let v2_sha256 = sha256_hex(&v2);
    submit(&peer, &warm, &admin(ORG1), ACTIVATE, &activation(&v2)).await;
    assert_eq!(warm_service.versions().compiled(), 2, "the activating chaincode kept the candidate");
    assert_eq!(cold_service.versions().compiled(), 1);

    // The same proposal on both: the cold one reads the bytes, the warm one only the version,
    // and the endorsements are byte for byte the same (read sets included).
    let mut factory = common::ProposalFactory::new();
    let register = RegisterOrganizationParam::default().encode_to_vec();
    let proposal = factory.next(ORG1, CHANNEL, REGISTER_ORGANIZATION, &register);
    let on_warm = endorse(&peer, &warm, &proposal).await;
    let on_cold = endorse(&peer, &cold, &proposal).await;
    assert_eq!(on_warm.response.status, 200, "{}", on_warm.response.message);
    assert_eq!(on_warm.payload, on_cold.payload, "identical endorsements");
    assert!(on_warm.payload.is_some());
    let component = component_key(&v2_sha256);
    assert!(on_cold.rwset.reads.iter().any(|read| read.key == component), "the version's key is in the read set");
    assert_eq!(on_warm.state_requests.get_state_metadata, 1, "a hit reads the version, not the bytes");
    assert_eq!(on_cold.state_requests.get_state_metadata, 0);
    assert_eq!(on_cold.state_requests.get_state, on_warm.state_requests.get_state + 1, "a miss reads the bytes once");
    assert_eq!(cold_service.versions().compiled(), 2);

    // From then on the cold chaincode hits its cache too, also under concurrent calls.
    let (concurrent_service, concurrent) = chaincode().await;
    let proposals: Vec<SimProposal> =
        (0..4).map(|_| factory.next(ORG2, CHANNEL, QUERY_VERSION, &QueryVersionParam {}.encode_to_vec())).collect();
    let endorsements = tokio::join!(
        peer.endorse(&concurrent, &proposals[0]),
        peer.endorse(&concurrent, &proposals[1]),
        peer.endorse(&concurrent, &proposals[2]),
        peer.endorse(&concurrent, &proposals[3]),
    );
    let (a, b, c, d) = endorsements;
    for endorsement in [a, b, c, d] {
        let endorsement = endorsement.expect("endorse");
        let version = QueryVersionResponse::decode(endorsement.response.payload.as_slice()).expect("version");
        assert_eq!(version.logic_sha256, v2_sha256);
    }
    assert_eq!(concurrent_service.versions().compiled(), 2, "four cold calls compiled the version once");
    let again = endorse(&peer, &cold, &factory.next(ORG2, CHANNEL, QUERY_VERSION, &[])).await;
    assert_eq!((again.state_requests.get_state, again.state_requests.get_state_metadata), (1, 1));
}
