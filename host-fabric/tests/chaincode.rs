//! The chaincode host driven by the peer simulator, as a Fabric peer would drive it.

use std::sync::OnceLock;

use orchestrator_fabric_testing::{
    ChaincodeConnection, Identity, IssueIdentity, Peer, SimError, SimProposal, ValidationCode, identity,
    spawn_chaincode,
};
use orchestrator_host_fabric::encoding::EVENT_NAME;
use orchestrator_host_fabric::fabric::common::{ChannelHeader, Header};
use orchestrator_host_fabric::fabric::kvrwset::range_query_info::ReadsInfo;
use orchestrator_host_fabric::fabric::protos::{ChaincodeInput, Proposal, SignedProposal};
use orchestrator_proto::{
    Addressable, DataManager, Event, GetAllOrganizationsParam, GetAllOrganizationsResponse, GetDataManagerParam,
    NewDataManager, NewDataSample, NewPermissions, Organization, QueryDataSamplesParam, QueryDataSamplesResponse,
    QueryVersionParam, QueryVersionResponse, RegisterDataSamplesParam, RegisterDataSamplesResponse,
    RegisterOrganizationParam,
};
use orchestrator_runtime::{Runtime, RuntimeConfig};
use prost::Message;
use sha2::Digest as _;

const CHANNEL: &str = "mychannel";
const CHAINCODE: &str = "orchestrator";
const PACKAGE_ID: &str = "orchestrator_1.0:0123456789abcdef";
const ORG1: &str = "MyOrg1MSP";
const ORG2: &str = "MyOrg2MSP";
const DM_KEY: &str = "00000000-0000-4000-8000-0000000000d1";

const REGISTER_ORGANIZATION: &str = "orchestrator.OrganizationService/RegisterOrganization";
const GET_ALL_ORGANIZATIONS: &str = "orchestrator.OrganizationService/GetAllOrganizations";
const REGISTER_DATA_MANAGER: &str = "orchestrator.DataManagerService/RegisterDataManager";
const GET_DATA_MANAGER: &str = "orchestrator.DataManagerService/GetDataManager";
const REGISTER_DATA_SAMPLES: &str = "orchestrator.DataSampleService/RegisterDataSamples";
const QUERY_DATA_SAMPLES: &str = "orchestrator.DataSampleService/QueryDataSamples";
const QUERY_VERSION: &str = "orchestrator.InfoService/QueryVersion";

/// One compiled component for the whole test binary.
fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Runtime::new(RuntimeConfig::default(), orchestrator_logic_component::COMPONENT).expect("runtime")
        })
        .clone()
}

async fn chaincode() -> ChaincodeConnection {
    let (endpoint, _server) = spawn_chaincode(runtime(), PACKAGE_ID).await.expect("serve");
    ChaincodeConnection::connect(endpoint).await.expect("connect")
}

fn events_of(payload: &[u8]) -> Vec<Event> {
    orchestrator_host_fabric::encoding::decode_events_payload(payload)
        .expect("payload")
        .iter()
        .map(|bytes| Event::decode(bytes.as_slice()).expect("event"))
        .collect()
}

fn data_manager(key: &str) -> NewDataManager {
    let addressable = |n: u32| Addressable {
        checksum: "a".repeat(64),
        storage_address: format!("http://backend.org-1:8000/api/datamanager/{n}/"),
    };
    NewDataManager {
        key: key.to_owned(),
        name: "dm".to_owned(),
        new_permissions: Some(NewPermissions { public: true, authorized_ids: vec![] }),
        description: Some(addressable(1)),
        opener: Some(addressable(2)),
        logs_permission: Some(NewPermissions { public: true, authorized_ids: vec![] }),
        ..Default::default()
    }
}

async fn register_org(peer: &Peer, cc: &ChaincodeConnection, msp_id: &str) {
    let proposal = peer.proposal(
        &Identity::new(msp_id).expect("identity"),
        REGISTER_ORGANIZATION,
        &RegisterOrganizationParam::default().encode_to_vec(),
    );
    let (endorsement, code) = peer.submit(cc, &proposal).await.expect("submit");
    assert_eq!(endorsement.response.status, 200, "{}", endorsement.response.message);
    assert_eq!(code, ValidationCode::Valid);
}

#[tokio::test(flavor = "multi_thread")]
async fn handshake_registers_the_package_id() {
    let cc = chaincode().await;
    assert_eq!(cc.package_id(), PACKAGE_ID);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_version_names_the_component_the_chaincode_runs() {
    let cc = chaincode().await;
    let peer = Peer::new(CHANNEL, CHAINCODE);
    let org1 = Identity::new(ORG1).expect("identity");
    let proposal = peer.proposal(&org1, QUERY_VERSION, &QueryVersionParam {}.encode_to_vec());
    let endorsement = peer.endorse(&cc, &proposal).await.expect("endorse");
    assert_eq!(endorsement.response.status, 200, "{}", endorsement.response.message);
    let version = QueryVersionResponse::decode(endorsement.response.payload.as_slice()).expect("response");
    assert_eq!(version.orchestrator, env!("CARGO_PKG_VERSION"));
    // Hashed here from the embedded bytes, not taken from the runtime.
    let sha256 = hex::encode(sha2::Sha256::digest(orchestrator_logic_component::COMPONENT));
    assert_eq!(version.logic_sha256, sha256);
    assert!(endorsement.rwset.writes.is_empty() && endorsement.event.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn register_organization_then_get_all() {
    let cc = chaincode().await;
    let peer = Peer::new(CHANNEL, CHAINCODE);
    let org1 = Identity::new(ORG1).expect("identity");
    let proposal = peer.proposal(&org1, REGISTER_ORGANIZATION, &RegisterOrganizationParam::default().encode_to_vec());
    let (endorsement, code) = peer.submit(&cc, &proposal).await.expect("submit");
    assert_eq!(code, ValidationCode::Valid);
    assert_eq!(endorsement.response.status, 200, "{}", endorsement.response.message);
    let organization = Organization::decode(endorsement.response.payload.as_slice()).expect("organization");
    assert_eq!(organization.id, ORG1);
    assert!(!endorsement.rwset.writes.is_empty());

    // One chaincode event, delivered after commit, carrying the call's events.
    let delivered = peer.events();
    assert_eq!(delivered.len(), 1);
    let event = &delivered[0].event;
    assert_eq!((event.event_name.as_str(), event.chaincode_id.as_str()), (EVENT_NAME, CHAINCODE));
    assert_eq!(event.tx_id, proposal.txid);
    let events = events_of(&event.payload);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].asset_key, ORG1);

    let query = peer.proposal(&org1, GET_ALL_ORGANIZATIONS, &GetAllOrganizationsParam::default().encode_to_vec());
    let endorsement = peer.endorse(&cc, &query).await.expect("endorse");
    assert_eq!(endorsement.response.status, 200, "{}", endorsement.response.message);
    let all = GetAllOrganizationsResponse::decode(endorsement.response.payload.as_slice()).expect("response");
    assert_eq!(all.organizations, vec![organization]);
    // Read-only: no write, no event.
    assert!(endorsement.rwset.writes.is_empty());
    assert!(endorsement.event.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn data_manager_and_data_samples() {
    let cc = chaincode().await;
    let peer = Peer::new(CHANNEL, CHAINCODE);
    let org1 = Identity::new(ORG1).expect("identity");
    register_org(&peer, &cc, ORG1).await;

    let proposal = peer.proposal(&org1, REGISTER_DATA_MANAGER, &data_manager(DM_KEY).encode_to_vec());
    let (endorsement, code) = peer.submit(&cc, &proposal).await.expect("submit");
    assert_eq!(endorsement.response.status, 200, "{}", endorsement.response.message);
    assert_eq!(code, ValidationCode::Valid);
    let dm = DataManager::decode(endorsement.response.payload.as_slice()).expect("data manager");
    assert_eq!((dm.key.as_str(), dm.owner.as_str()), (DM_KEY, ORG1));

    // 150 samples: enough for the logic's scans to cross a 100-result batch if it scans.
    let samples = (0..150)
        .map(|i| NewDataSample {
            key: format!("00000000-0000-4000-8000-{:012x}", 0x1000 + i),
            data_manager_keys: vec![DM_KEY.to_owned()],
            test_only: false,
            checksum: "b".repeat(64),
        })
        .collect();
    let request = RegisterDataSamplesParam { samples }.encode_to_vec();
    let (endorsement, code) =
        peer.submit(&cc, &peer.proposal(&org1, REGISTER_DATA_SAMPLES, &request)).await.expect("submit");
    assert_eq!(endorsement.response.status, 200, "{}", endorsement.response.message);
    assert_eq!(code, ValidationCode::Valid);
    let registered = RegisterDataSamplesResponse::decode(endorsement.response.payload.as_slice()).expect("response");
    assert_eq!(registered.data_samples.len(), 150);
    assert_eq!(events_of(&endorsement.event.as_ref().expect("event").payload).len(), 150);
    // Index entries are empty values: stored escaped, never as Fabric deletes.
    assert!(endorsement.rwset.writes.iter().all(|write| !write.is_delete && !write.value.is_empty()));

    // Registering the same samples again: a business error, not endorsed, nothing delivered.
    let (again, code) = peer.submit(&cc, &peer.proposal(&org1, REGISTER_DATA_SAMPLES, &request)).await.expect("submit");
    assert!(again.response.status >= 400, "{:?}", again.response);
    assert!(again.response.message.contains("OE"), "{}", again.response.message);
    assert_eq!(code, ValidationCode::EndorsementPolicyFailure);

    let get = peer.proposal(&org1, GET_DATA_MANAGER, &GetDataManagerParam { key: DM_KEY.to_owned() }.encode_to_vec());
    let response = peer.evaluate(&cc, &get).await.expect("evaluate");
    assert_eq!(DataManager::decode(response.payload.as_slice()).expect("data manager"), dm);
    let missing = GetDataManagerParam { key: "00000000-0000-4000-8000-00000000dead".to_owned() };
    let response = peer.evaluate(&cc, &peer.proposal(&org1, GET_DATA_MANAGER, &missing.encode_to_vec())).await;
    let response = response.expect("evaluate");
    assert_eq!(response.status, 404, "{}", response.message);
    assert!(response.message.contains("OE0002"), "{}", response.message);

    // A small page: the shim stops the peer's iterator early (QUERY_STATE_CLOSE), so the
    // recorded range is not exhausted.
    let query = |page_size| QueryDataSamplesParam { page_size, ..Default::default() }.encode_to_vec();
    let page = peer.endorse(&cc, &peer.proposal(&org1, QUERY_DATA_SAMPLES, &query(10))).await.expect("endorse");
    let samples = QueryDataSamplesResponse::decode(page.response.payload.as_slice()).expect("response");
    assert_eq!(samples.data_samples.len(), 10);
    assert!(!samples.next_page_token.is_empty());
    assert!(page.rwset.range_queries_info.iter().any(|range| !range.itr_exhausted));
    // A large page crosses the peer's 100-result batches (QUERY_STATE_NEXT).
    let page = peer.endorse(&cc, &peer.proposal(&org1, QUERY_DATA_SAMPLES, &query(500))).await.expect("endorse");
    let samples = QueryDataSamplesResponse::decode(page.response.payload.as_slice()).expect("response");
    assert_eq!(samples.data_samples.len(), 150);
    assert!(page.rwset.range_queries_info.iter().any(|range| {
        range.itr_exhausted
            && matches!(&range.reads_info, Some(ReadsInfo::RawReads(reads)) if reads.kv_reads.len() >= 150)
    }));
    assert!(page.rwset.writes.is_empty() && page.event.is_none());
    assert_eq!(peer.events().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_proposal_endorses_identically_on_two_chaincodes() {
    let (first, second) = tokio::join!(chaincode(), chaincode());
    let peer = Peer::new(CHANNEL, CHAINCODE);
    register_org(&peer, &first, ORG1).await;
    let proposal = peer.proposal(
        &Identity::new(ORG1).expect("identity"),
        REGISTER_DATA_MANAGER,
        &data_manager(DM_KEY).encode_to_vec(),
    );
    let (a, b) = tokio::join!(peer.endorse(&first, &proposal), peer.endorse(&second, &proposal));
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a.response.status, 200, "{}", a.response.message);
    assert!(a.payload.is_some());
    assert_eq!(a.payload, b.payload);
    assert_eq!(a.results, b.results);
    assert_eq!(a.event, b.event);
    assert_eq!(a, b);

    // A peer at another height records other read versions: the payloads differ, as the
    // Gateway would detect.
    let lagging = Peer::new(CHANNEL, CHAINCODE);
    lagging.commit_block(&[]);
    register_org(&lagging, &second, ORG1).await;
    let c = lagging.endorse(&second, &proposal).await.expect("lagging");
    assert_eq!(c.response, a.response);
    assert_ne!(c.payload, a.payload);
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicting_transactions_in_one_block() {
    let cc = chaincode().await;
    let peer = Peer::new(CHANNEL, CHAINCODE);
    register_org(&peer, &cc, ORG1).await;
    let org1 = Identity::new(ORG1).expect("identity");
    let request = data_manager(DM_KEY).encode_to_vec();
    let (p1, p2) =
        (peer.proposal(&org1, REGISTER_DATA_MANAGER, &request), peer.proposal(&org1, REGISTER_DATA_MANAGER, &request));
    // Both simulate on the same snapshot, in flight together on one stream.
    let (e1, e2) = tokio::join!(peer.endorse(&cc, &p1), peer.endorse(&cc, &p2));
    let (e1, e2) = (e1.expect("first"), e2.expect("second"));
    assert!(e1.is_endorsed() && e2.is_endorsed());
    let codes = peer.commit_block(&[e1, e2]);
    assert_eq!(codes[0], ValidationCode::Valid);
    assert_eq!(codes[1], ValidationCode::MvccReadConflict);
    let delivered: Vec<String> = peer.events().into_iter().map(|d| d.event.tx_id).collect();
    assert_eq!(delivered.len(), 2, "organization + first data manager only");
    assert_eq!(delivered[1], p1.txid);
    // The txid is consumed even though the transaction was invalid.
    assert!(peer.endorse(&cc, &p2).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_insert_into_a_scanned_range_is_a_phantom() {
    let cc = chaincode().await;
    let peer = Peer::new(CHANNEL, CHAINCODE);
    register_org(&peer, &cc, ORG1).await;
    let list = peer.proposal(&Identity::new(ORG1).expect("identity"), GET_ALL_ORGANIZATIONS, &[]);
    let register = peer.proposal(
        &Identity::new(ORG2).expect("identity"),
        REGISTER_ORGANIZATION,
        &RegisterOrganizationParam::default().encode_to_vec(),
    );
    let (scan, insert) = tokio::join!(peer.endorse(&cc, &list), peer.endorse(&cc, &register));
    let (scan, insert) = (scan.expect("scan"), insert.expect("insert"));
    assert!(!scan.rwset.range_queries_info.is_empty());
    // The scan ordered after the insert: its range result changed.
    assert_eq!(peer.commit_block(&[insert, scan]), vec![ValidationCode::Valid, ValidationCode::PhantomReadConflict]);
    // Ordered before it, a fresh scan and a fresh insert are both valid.
    let scan =
        peer.endorse(&cc, &peer.proposal(&Identity::new(ORG1).expect("identity"), GET_ALL_ORGANIZATIONS, &[])).await;
    let register = peer.proposal(
        &Identity::new("Org3MSP").expect("identity"),
        REGISTER_ORGANIZATION,
        &RegisterOrganizationParam::default().encode_to_vec(),
    );
    let insert = peer.endorse(&cc, &register).await.expect("insert");
    assert_eq!(peer.commit_block(&[scan.expect("scan"), insert]), vec![ValidationCode::Valid; 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_transactions_fail_alone_and_the_stream_keeps_serving() {
    let cc = chaincode().await;
    let peer = Peer::new(CHANNEL, CHAINCODE);
    let org2 = Identity::new(ORG2).expect("identity");

    let malformed_input = cc.raw_transaction("tx-1", CHANNEL, vec![0xff, 0xff, 0xff], None).await;
    assert!(malformed_input.expect_err("error").contains("ChaincodeInput"));

    let input = ChaincodeInput { args: vec![REGISTER_ORGANIZATION.as_bytes().to_vec()], ..Default::default() };
    let no_proposal = cc.raw_transaction("tx-2", CHANNEL, input.encode_to_vec(), None).await;
    assert!(no_proposal.expect_err("error").contains("proposal"));

    let garbage = SignedProposal { proposal_bytes: vec![0x0a, 0x05, 0x01], signature: vec![] };
    let bad_proposal = cc.raw_transaction("tx-3", CHANNEL, input.encode_to_vec(), Some(garbage)).await;
    assert!(bad_proposal.expect_err("error").contains("malformed"));

    // A real proposal whose txid differs from the message's.
    let other = SimProposal::new(CHANNEL, CHAINCODE, &org2, vec![REGISTER_ORGANIZATION.as_bytes().to_vec()]);
    let mismatch = cc.raw_transaction("tx-4", CHANNEL, input.encode_to_vec(), Some(other.signed)).await;
    assert!(mismatch.expect_err("error").contains("tx id"));

    let unknown = peer.proposal(&org2, "orchestrator.NoSuchService/Nothing", &[]);
    let endorsement = peer.endorse(&cc, &unknown).await.expect("endorse");
    assert_eq!(endorsement.response.status, 501);
    assert!(!endorsement.is_endorsed());

    // The same stream still serves.
    register_org(&peer, &cc, ORG2).await;
    assert_eq!(peer.events().len(), 1);
}

/// `proposal` with its channel header edited by `edit`, then signed again by `identity`.
fn resigned(proposal: &SimProposal, identity: &Identity, edit: impl FnOnce(&mut ChannelHeader)) -> SimProposal {
    let mut decoded = Proposal::decode(proposal.signed.proposal_bytes.as_slice()).expect("proposal");
    let mut header = Header::decode(decoded.header.as_slice()).expect("header");
    let mut channel_header = ChannelHeader::decode(header.channel_header.as_slice()).expect("channel header");
    edit(&mut channel_header);
    header.channel_header = channel_header.encode_to_vec();
    decoded.header = header.encode_to_vec();
    let mut resigned = proposal.clone();
    resigned.txid = channel_header.tx_id;
    resigned.signed.proposal_bytes = decoded.encode_to_vec();
    resigned.signed.signature = identity.sign(&resigned.signed.proposal_bytes).expect("sign");
    resigned
}

fn assert_refused(result: Result<orchestrator_fabric_testing::Endorsement, SimError>, what: &str) {
    match result {
        Err(SimError::BadProposal(reason)) => assert!(!reason.is_empty(), "{what}"),
        other => panic!("{what}: expected a refused proposal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proposals_are_signed_and_checked_before_the_chaincode_runs() {
    let cc = chaincode().await;
    let peer = Peer::new(CHANNEL, CHAINCODE).with_members([ORG1, ORG2]);
    let org1 = Identity::new(ORG1).expect("identity");
    let request = RegisterOrganizationParam::default().encode_to_vec();
    let valid = peer.proposal(&org1, REGISTER_ORGANIZATION, &request);
    peer.check_proposal(&valid).expect("a signed proposal passes");
    // Fabric's signature: DER, low-S, over the exact proposal bytes.
    orchestrator_host_fabric::signing::verify(org1.public_key(), &valid.signed.proposal_bytes, &valid.signed.signature)
        .expect("signature");

    // A signature over other bytes.
    let mut tampered = valid.clone();
    tampered.signed.signature = org1.sign(b"other bytes").expect("sign");
    assert_refused(peer.endorse(&cc, &tampered).await, "signature over other bytes");
    // Bytes changed after signing.
    let mut altered = valid.clone();
    let last = altered.signed.proposal_bytes.len() - 1;
    altered.signed.proposal_bytes[last] ^= 1;
    assert_refused(peer.endorse(&cc, &altered).await, "proposal bytes changed after signing");
    // The same signature in high-S form: valid ECDSA, refused by Fabric.
    let mut high_s = valid.clone();
    high_s.signed.signature = identity::flip_s(&valid.signed.signature).expect("flip");
    assert_refused(peer.endorse(&cc, &high_s).await, "high-S signature");
    // No signature.
    let mut unsigned = valid.clone();
    unsigned.signed.signature.clear();
    assert_refused(peer.endorse(&cc, &unsigned).await, "empty signature");
    // A txid that is not hex SHA-256(nonce ‖ creator), properly signed.
    let wrong_txid = resigned(&valid, &org1, |header| header.tx_id = "0".repeat(64));
    assert_refused(peer.endorse(&cc, &wrong_txid).await, "wrong txid");
    let upper_txid = resigned(&valid, &org1, |header| header.tx_id = header.tx_id.to_uppercase());
    assert_refused(peer.endorse(&cc, &upper_txid).await, "upper-case txid");
    // Other header checks: epoch 0, ENDORSER_TRANSACTION.
    assert_refused(peer.endorse(&cc, &resigned(&valid, &org1, |header| header.epoch = 1)).await, "epoch 1");
    assert_refused(peer.endorse(&cc, &resigned(&valid, &org1, |header| header.r#type = 1)).await, "CONFIG header");
    // An MSP that is not a member of the channel (its identity is valid otherwise).
    let outsider = Identity::new("Org3MSP").expect("identity");
    let foreign = peer.proposal(&outsider, REGISTER_ORGANIZATION, &request);
    assert_refused(peer.endorse(&cc, &foreign).await, "unknown MSP");
    assert!(Peer::new(CHANNEL, CHAINCODE).check_proposal(&foreign).is_ok(), "a member of an open channel");
    // ORG1's certificate and key presented as ORG2 (a member): not a certificate of ORG2.
    let forged = peer.proposal(&org1.with_msp_id(ORG2), REGISTER_ORGANIZATION, &request);
    assert_refused(peer.endorse(&cc, &forged).await, "certificate of another MSP");
    assert_eq!(cc.transactions(), 0, "no refused proposal reached the chaincode");

    // The valid proposal still passes, once.
    let (endorsement, code) = peer.submit(&cc, &valid).await.expect("submit");
    assert_eq!(endorsement.response.status, 200, "{}", endorsement.response.message);
    assert_eq!(code, ValidationCode::Valid);
    assert_eq!(cc.transactions(), 1);
    // Its txid is now in the ledger: refused before the chaincode.
    assert!(matches!(peer.endorse(&cc, &valid).await, Err(SimError::DuplicateTxid(txid)) if txid == valid.txid));
    let org2 = Identity::new(ORG2).expect("identity");
    let (endorsement, code) =
        peer.submit(&cc, &peer.proposal(&org2, REGISTER_ORGANIZATION, &request)).await.expect("submit");
    assert_eq!((endorsement.response.status, code), (200, ValidationCode::Valid));
    assert_eq!(cc.transactions(), 2);
}
