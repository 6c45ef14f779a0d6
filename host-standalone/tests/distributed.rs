//! Distributed mode against a REAL Fabric 2.5 network (`scripts/fabric-net.sh`): the
//! orchestrator forwards calls through a peer's Gateway to the chaincode, and copies the
//! ledger's events into its event store. Each organization runs its own facade (its peer, its
//! database); both must answer like the standalone server, and number the same events alike.
//!
//! Needs `FABRIC_BIN_DIR` (the `bin/` of a Fabric 2.5 release) and the `chaincode` binary
//! (built by `cargo test --workspace`); without `FABRIC_BIN_DIR` the test says it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::network::Network;
use common::{TestServer, facade};
use orchestrator_proto::event_service_client::EventServiceClient;
use orchestrator_proto::{
    Event, GetAllOrganizationsParam, GetAllOrganizationsResponse, GetDataManagerParam, QueryEventsParam,
    QueryEventsResponse, QueryVersionParam, RegisterOrganizationParam, SubscribeToEventsParam,
};
use prost::Message;
use tonic::Status;

const REGISTER_ORGANIZATION: &str = "/orchestrator.OrganizationService/RegisterOrganization";
const GET_ALL_ORGANIZATIONS: &str = "/orchestrator.OrganizationService/GetAllOrganizations";
const GET_DATA_MANAGER: &str = "/orchestrator.DataManagerService/GetDataManager";
const QUERY_VERSION: &str = "/orchestrator.InfoService/QueryVersion";
const QUERY_EVENTS: &str = "/orchestrator.EventService/QueryEvents";
/// How long the ledger may take to show a committed call's events (block time is 0.5 s).
const LEDGER_PATIENCE: Duration = Duration::from_secs(60);

async fn call(server: &TestServer, msp_id: &str, path: &str, body: Vec<u8>) -> Result<Bytes, Status> {
    server.raw_call(path, body, &[("mspid", msp_id), ("channel", "mychannel")]).await
}

/// The outcome as a caller sees it: the response bytes, or the code and message.
fn seen(result: Result<Bytes, Status>) -> Result<Vec<u8>, (tonic::Code, String)> {
    result.map(|b| b.to_vec()).map_err(|s| (s.code(), s.message().to_owned()))
}

/// The events of mychannel as QueryEvents pages them, once there are at least `count`.
async fn events_once(server: &TestServer, count: usize) -> Vec<Event> {
    let deadline = Instant::now() + LEDGER_PATIENCE;
    loop {
        let page = call(
            server,
            "MyOrg1MSP",
            QUERY_EVENTS,
            QueryEventsParam { page_size: 100, ..Default::default() }.encode_to_vec(),
        )
        .await
        .expect("QueryEvents");
        let events = QueryEventsResponse::decode(page).expect("events").events;
        if events.len() >= count {
            return events;
        }
        assert!(Instant::now() < deadline, "{} of {count} events after {LEDGER_PATIENCE:?}", events.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(channel, position, event id)` of every stored event.
async fn positions(server: &TestServer) -> Vec<(String, i64, String)> {
    sqlx::query_as("SELECT channel, channel_position, event_id FROM events ORDER BY channel, channel_position")
        .fetch_all(&server.pool)
        .await
        .expect("events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_api_over_a_real_fabric_network() {
    let Some(bin_dir) = facade::fabric_bin_dir() else { return };
    let chaincode = common::chaincode_binary();
    let network = Network::up(&bin_dir, &chaincode.to_string_lossy());
    let org1 = facade::start(&network, 1, |_| {}).await;
    let org2 = facade::start(&network, 2, |_| {}).await;
    let standalone = TestServer::start().await;

    // The same calls on standalone and through each facade: same answers, same errors.
    let register = |address: &str| RegisterOrganizationParam { address: address.to_owned() }.encode_to_vec();
    let version = QueryVersionParam {}.encode_to_vec();
    assert_eq!(
        seen(call(&org1, "MyOrg1MSP", QUERY_VERSION, version.clone()).await),
        seen(call(&standalone, "MyOrg1MSP", QUERY_VERSION, version).await)
    );
    for (server, msp_id) in [(&standalone, "MyOrg1MSP"), (&org1, "MyOrg1MSP")] {
        call(server, msp_id, REGISTER_ORGANIZATION, register("https://org1.example")).await.expect("register org 1");
    }
    for (server, msp_id) in [(&standalone, "MyOrg2MSP"), (&org2, "MyOrg2MSP")] {
        call(server, msp_id, REGISTER_ORGANIZATION, register("https://org2.example")).await.expect("register org 2");
    }
    let again = seen(call(&org2, "MyOrg1MSP", REGISTER_ORGANIZATION, register("https://x.example")).await);
    assert_eq!(again, seen(call(&standalone, "MyOrg1MSP", REGISTER_ORGANIZATION, register("https://x.example")).await));
    assert_eq!(again.as_ref().map_err(|e| e.0), Err(tonic::Code::AlreadyExists), "{again:?}");
    let missing = GetDataManagerParam { key: "00000000-0000-4000-8000-000000000001".to_owned() }.encode_to_vec();
    let not_found = seen(call(&org1, "MyOrg2MSP", GET_DATA_MANAGER, missing.clone()).await);
    assert_eq!(not_found, seen(call(&standalone, "MyOrg2MSP", GET_DATA_MANAGER, missing).await));
    assert_eq!(not_found.as_ref().map_err(|e| e.0), Err(tonic::Code::NotFound), "{not_found:?}");
    let all = GetAllOrganizationsParam {}.encode_to_vec();
    for facade in [&org1, &org2] {
        let orgs = GetAllOrganizationsResponse::decode(
            call(facade, "MyOrg1MSP", GET_ALL_ORGANIZATIONS, all.clone()).await.unwrap(),
        )
        .unwrap();
        let ids: Vec<&str> = orgs.organizations.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["MyOrg1MSP", "MyOrg2MSP"], "the ledger is shared");
    }

    // A caller the wallet cannot sign for (allowed by the channel configuration).
    let refused = call(&org1, "Org3MSP", REGISTER_ORGANIZATION, register("https://org3.example")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("ORCHESTRATOR_FABRIC_WALLET"), "{refused:?}");

    // Events: both facades hold the ledger's events, numbered alike, and they match standalone's.
    let from_org1 = events_once(&org1, 2).await;
    let from_org2 = events_once(&org2, 2).await;
    assert_eq!(from_org1, from_org2, "both facades serve the same events");
    let from_standalone = events_once(&standalone, 2).await;
    let shape = |events: &[Event]| -> Vec<(String, i32, i32, String)> {
        events.iter().map(|e| (e.asset_key.clone(), e.asset_kind, e.event_kind, e.channel.clone())).collect()
    };
    assert_eq!(shape(&from_org1), shape(&from_standalone), "same events as standalone (ids and times aside)");
    assert_eq!(positions(&org1).await, positions(&org2).await, "same positions in both event stores");
    // SubscribeToEvents replays them, then follows the ledger.
    let client = org2.client("MyOrg2MSP", "mychannel").await;
    let mut stream = EventServiceClient::new(client)
        .subscribe_to_events(SubscribeToEventsParam { start_event_id: String::new() })
        .await
        .expect("subscribe")
        .into_inner();
    for expected in &from_org1 {
        let next = tokio::time::timeout(LEDGER_PATIENCE, stream.message()).await.expect("replayed in time");
        assert_eq!(&next.expect("stream").expect("an event"), expected);
    }
    let data_manager = common::new_data_manager("00000000-0000-4000-8000-0000000000d1");
    call(&org1, "MyOrg1MSP", "/orchestrator.DataManagerService/RegisterDataManager", data_manager.encode_to_vec())
        .await
        .expect("register a data manager through org 1");
    let live = tokio::time::timeout(LEDGER_PATIENCE, stream.message()).await.expect("live event in time");
    let live = live.expect("stream").expect("an event");
    assert_eq!(live.asset_key, "00000000-0000-4000-8000-0000000000d1", "org 2's stream sees org 1's write");
    drop(stream);

    for server in [org1, org2, standalone] {
        server.stop().await;
    }
    drop(network);
}
