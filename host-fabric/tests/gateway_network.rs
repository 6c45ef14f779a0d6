//! The Gateway client against a REAL Fabric 2.5 network (`scripts/fabric-net.sh`: one orderer,
//! MyOrg1MSP and MyOrg2MSP with one peer each, `mychannel` and `yourchannel`, this crate's
//! `chaincode` binary as the chaincode server). Needs `FABRIC_BIN_DIR` (the `bin/` of a Fabric
//! 2.5 release); without it the test prints `skipped: FABRIC_BIN_DIR not set` and passes.
//!
//! Everything runs in one test so that the network comes up once (about 20 s).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "support/network.rs"]
mod network;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use network::Network;

use orchestrator_host_fabric::encoding;
use orchestrator_host_fabric::fabric::gateway::gateway_client::GatewayClient as RawClient;
use orchestrator_host_fabric::fabric::gateway::{
    ChaincodeEventsRequest, EndorseRequest, EvaluateRequest, SignedChaincodeEventsRequest,
};
use orchestrator_host_fabric::fabric::orderer::{SeekNextCommit, SeekPosition, seek_position};
use orchestrator_host_fabric::gateway::{
    self, ChaincodeEvents, GatewayClient, GatewayError, SigningIdentity, build_proposal, error_details,
};
use orchestrator_proto::{
    Event, GetAllOrganizationsParam, GetAllOrganizationsResponse, Organization, QueryVersionResponse,
    RegisterOrganizationParam,
};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const QUERY_VERSION: &str = "orchestrator.InfoService/QueryVersion";
const REGISTER_ORGANIZATION: &str = "orchestrator.OrganizationService/RegisterOrganization";
const GET_ALL_ORGANIZATIONS: &str = "orchestrator.OrganizationService/GetAllOrganizations";
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stream read may take before the test calls it a hang (shared, slow machine).
const STEP: Duration = Duration::from_secs(30);

fn register(address: &str) -> Vec<Vec<u8>> {
    encoding::call_args(
        REGISTER_ORGANIZATION,
        &RegisterOrganizationParam { address: address.to_owned() }.encode_to_vec(),
    )
}

async fn organizations(client: &GatewayClient, id: &SigningIdentity, channel: &str, chaincode: &str) -> Vec<String> {
    let args = encoding::call_args(GET_ALL_ORGANIZATIONS, &GetAllOrganizationsParam {}.encode_to_vec());
    let payload = client.evaluate(id, channel, chaincode, args).await.expect("GetAllOrganizations");
    GetAllOrganizationsResponse::decode(payload.as_slice()).unwrap().organizations.into_iter().map(|o| o.id).collect()
}

/// Prints a raw Gateway error as it arrived: code, `grpc-message`, each ErrorDetail.
fn show_status(label: &str, status: &tonic::Status) {
    println!("{label}: code {:?}, grpc-message {:?}", status.code(), status.message());
    for detail in error_details(status.details()) {
        println!(
            "{label}:   ErrorDetail{{address {:?}, msp_id {:?}, message {:?}}}",
            detail.address, detail.msp_id, detail.message
        );
    }
}

#[tokio::test]
async fn gateway_client_against_a_real_network() {
    let Ok(bin_dir) = std::env::var("FABRIC_BIN_DIR") else {
        println!("skipped: FABRIC_BIN_DIR not set");
        return;
    };
    let network = Network::up(&bin_dir, env!("CARGO_BIN_EXE_chaincode"));
    let chaincode = network.var("ORCHESTRATOR_FABRIC_CHAINCODE").to_owned();
    let wallet = PathBuf::from(network.var("ORCHESTRATOR_FABRIC_WALLET"));
    let org1 = SigningIdentity::from_wallet(&wallet, "MyOrg1MSP").expect("MyOrg1MSP wallet");
    let org2 = SigningIdentity::from_wallet(&wallet, "MyOrg2MSP").expect("MyOrg2MSP wallet");
    assert_eq!(org1.msp_id(), "MyOrg1MSP");
    let peer1_address = network.var("ORCHESTRATOR_FABRIC_PEER_ADDRESS").to_owned();
    let peer1_ca = network.file("ORCHESTRATOR_FABRIC_TLS_CA_CERT");
    let peer1 = GatewayClient::connect(&peer1_address, Some(&peer1_ca), None).await.expect("connect to peer 1");
    // The Fabric host name as TLS name (the certificate names it besides 127.0.0.1).
    let peer2 = GatewayClient::connect(
        network.var("ORCHESTRATOR_FABRIC_PEER2_ADDRESS"),
        Some(&network.file("ORCHESTRATOR_FABRIC_PEER2_TLS_CA_CERT")),
        Some("peer0.org2.example.com"),
    )
    .await
    .expect("connect to peer 2");

    // QueryVersion by evaluate (empty request).
    let started = Instant::now();
    let payload = peer1
        .evaluate(&org1, "mychannel", &chaincode, encoding::call_args(QUERY_VERSION, &[]))
        .await
        .expect("QueryVersion");
    let first_evaluate = started.elapsed();
    let version = QueryVersionResponse::decode(payload.as_slice()).unwrap();
    assert!(!version.orchestrator.is_empty());
    println!("QueryVersion: {:?} in {first_evaluate:.1?} (first call)", version.orchestrator);
    let started = Instant::now();
    for _ in 0..10 {
        peer1.evaluate(&org1, "mychannel", &chaincode, encoding::call_args(QUERY_VERSION, &[])).await.unwrap();
    }
    println!("evaluate QueryVersion: {:.1?} each (mean of 10 sequential)", started.elapsed() / 10);
    let started = Instant::now();
    let concurrent: Vec<_> = (0..20)
        .map(|_| {
            let (client, id, chaincode) = (peer1.clone(), org1.clone(), chaincode.clone());
            tokio::spawn(async move {
                client.evaluate(&id, "mychannel", &chaincode, encoding::call_args(QUERY_VERSION, &[])).await
            })
        })
        .collect();
    for task in concurrent {
        task.await.unwrap().expect("concurrent QueryVersion");
    }
    println!("20 concurrent evaluates from clones: {:.1?} in all", started.elapsed());

    // RegisterOrganization by submit, as MyOrg1MSP on mychannel.
    let started = Instant::now();
    let submitted = peer1
        .submit(&org1, "mychannel", &chaincode, register("org1.example:443"), COMMIT_TIMEOUT)
        .await
        .expect("RegisterOrganization");
    let submit_latency = started.elapsed();
    let organization = Organization::decode(submitted.payload.as_slice()).unwrap();
    assert_eq!(organization.id, "MyOrg1MSP");
    assert_eq!(organization.address, "org1.example:443");
    assert_eq!(submitted.txid.len(), 64);
    println!(
        "RegisterOrganization: committed VALID in block {} as {} in {submit_latency:.1?} (endorse → commit)",
        submitted.block_number, submitted.txid
    );
    assert_eq!(organizations(&peer1, &org1, "mychannel", &chaincode).await, vec!["MyOrg1MSP".to_owned()]);

    // commit_status of that txid: VALID, same block, for the creator and for another Reader.
    let status = peer1.commit_status(&org1, "mychannel", &submitted.txid).await.expect("commit status");
    assert_eq!(status, gateway::CommitStatus { code: 0, block_number: submitted.block_number });
    let status = peer2.commit_status(&org2, "mychannel", &submitted.txid).await.expect("commit status on peer 2");
    assert_eq!(status.code, 0);

    // The same organization again: the chaincode's ALREADY_EXISTS-class error, recovered.
    let error = peer1
        .submit(&org1, "mychannel", &chaincode, register("org1.example:443"), COMMIT_TIMEOUT)
        .await
        .expect_err("registered twice");
    println!("RegisterOrganization again (submit): {error:?}");
    let GatewayError::Chaincode { status, message } = &error else { panic!("not a chaincode error: {error:?}") };
    assert_eq!(*status, 409, "ErrorKind::Conflict.fabric_status()");
    assert!(message.starts_with("OE"), "the logic's OE message: {message:?}");
    assert!(message.contains("MyOrg1MSP"), "{message:?}");
    let (submit_status, submit_message) = (*status, message.clone());
    // By evaluate (simulated only), the same status and message.
    let error = peer1
        .evaluate(&org1, "mychannel", &chaincode, register("org1.example:443"))
        .await
        .expect_err("registered twice (evaluate)");
    assert!(
        matches!(&error, GatewayError::Chaincode { status, message } if *status == submit_status && *message == submit_message),
        "{error:?}"
    );

    // What the Gateway sends, raw (for the documentation of `gateway`).
    let channel = Endpoint::from_shared(format!("https://{peer1_address}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&peer1_ca)))
        .unwrap()
        .connect()
        .await
        .expect("raw channel");
    let mut raw = RawClient::new(channel);
    let nonce = || {
        let mut nonce = vec![0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).unwrap();
        nonce
    };
    let now = prost_types::Timestamp::from(std::time::SystemTime::now());
    let tx = build_proposal(&org1, "mychannel", &chaincode, register("org1.example:443"), nonce(), now).unwrap();
    let status = raw
        .evaluate(EvaluateRequest {
            transaction_id: tx.txid.clone(),
            channel_id: "mychannel".to_owned(),
            proposed_transaction: Some(tx.signed.clone()),
            target_organizations: vec![],
        })
        .await
        .expect_err("raw evaluate");
    show_status("raw Evaluate, chaincode 409", &status);
    assert_eq!(status.code(), tonic::Code::Unknown);
    assert_eq!(
        status.message(),
        format!("evaluate call to endorser returned error: chaincode response 409, {submit_message}")
    );
    let tx = build_proposal(&org1, "mychannel", &chaincode, register("org1.example:443"), nonce(), now).unwrap();
    let status = raw
        .endorse(EndorseRequest {
            transaction_id: tx.txid.clone(),
            channel_id: "mychannel".to_owned(),
            proposed_transaction: Some(tx.signed),
            endorsing_organizations: vec![],
        })
        .await
        .expect_err("raw endorse");
    show_status("raw Endorse, chaincode 409", &status);
    assert_eq!(status.code(), tonic::Code::Aborted);
    let details = error_details(status.details());
    assert!(!details.is_empty());
    assert_eq!(details[0].message, format!("chaincode response 409, {submit_message}"));
    assert_eq!(details[0].msp_id, "MyOrg1MSP");
    // Status 500 (a request that does not decode) and 501 (unknown method).
    for (label, args) in [
        ("raw Evaluate, chaincode 500", encoding::call_args(REGISTER_ORGANIZATION, &[0xff, 0xff])),
        ("raw Evaluate, chaincode 501", encoding::call_args("orchestrator.Nope/Nothing", &[])),
    ] {
        let tx = build_proposal(&org1, "mychannel", &chaincode, args.clone(), nonce(), now).unwrap();
        let status = raw
            .evaluate(EvaluateRequest {
                transaction_id: tx.txid.clone(),
                channel_id: "mychannel".to_owned(),
                proposed_transaction: Some(tx.signed),
                target_organizations: vec![],
            })
            .await
            .expect_err(label);
        show_status(label, &status);
        let error = peer1.evaluate(&org1, "mychannel", &chaincode, args.clone()).await.unwrap_err();
        println!("{label} through the client: {error:?}");
        let expected = if label.ends_with("500") { 500 } else { 501 };
        assert!(matches!(&error, GatewayError::Chaincode { status, .. } if *status == expected), "{error:?}");
        let error = peer1.submit(&org1, "mychannel", &chaincode, args, COMMIT_TIMEOUT).await.unwrap_err();
        assert!(matches!(&error, GatewayError::Chaincode { status, .. } if *status == expected), "submit: {error:?}");
    }

    // ChaincodeEvents from block 0: the `chaincode-updates` event of the registration.
    let mut events = peer1.chaincode_events(&org1, "mychannel", &chaincode, Some(0)).await.expect("events");
    let ChaincodeEvents { block_number, events: block_events } =
        tokio::time::timeout(STEP, events.next()).await.expect("an event in time").expect("an item").expect("events");
    assert_eq!(block_number, submitted.block_number);
    assert_eq!(block_events.len(), 1);
    let event = &block_events[0];
    assert_eq!(event.txid, submitted.txid);
    assert_eq!(event.event_name, encoding::EVENT_NAME);
    let decoded: Vec<Event> = encoding::decode_events_payload(&event.payload)
        .expect("ChaincodeUpdates")
        .iter()
        .map(|bytes| Event::decode(bytes.as_slice()).expect("orchestrator.Event"))
        .collect();
    assert_eq!(decoded.len(), 1);
    assert_eq!(decoded[0].asset_key, "MyOrg1MSP");
    assert_eq!(decoded[0].channel, "mychannel");
    println!(
        "ChaincodeEvents from block 0: block {block_number}, event {:?} of {}, {} orchestrator event(s), kind {:?}/{:?}",
        event.event_name,
        event.txid,
        decoded.len(),
        decoded[0].asset_kind(),
        decoded[0].event_kind()
    );

    // Does the peer answer a ChaincodeEvents call before its first event? (Why the stream is lazy.)
    let request = ChaincodeEventsRequest {
        channel_id: "yourchannel".to_owned(),
        chaincode_id: chaincode.clone(),
        identity: org1.creator().to_vec(),
        start_position: Some(SeekPosition { r#type: Some(seek_position::Type::NextCommit(SeekNextCommit {})) }),
        after_transaction_id: String::new(),
    }
    .encode_to_vec();
    let signature = org1.sign(&request).unwrap();
    let headers = tokio::time::timeout(
        Duration::from_secs(3),
        raw.chaincode_events(SignedChaincodeEventsRequest { request, signature }),
    )
    .await;
    println!("raw ChaincodeEvents(next commit), no traffic: response headers within 3 s: {}", headers.is_ok());

    // The next-commit stream on yourchannel sees the registration of MyOrg2MSP there, made on
    // peer 2 as MyOrg2MSP.
    let mut next = peer1.chaincode_events(&org1, "yourchannel", &chaincode, None).await.expect("events");
    let pending = tokio::time::timeout(Duration::from_millis(500), next.next()).await;
    assert!(pending.is_err(), "no event before a commit");
    let started = Instant::now();
    let on_yours = peer2
        .submit(&org2, "yourchannel", &chaincode, register("org2.example:443"), COMMIT_TIMEOUT)
        .await
        .expect("RegisterOrganization as MyOrg2MSP on yourchannel");
    println!(
        "RegisterOrganization as MyOrg2MSP on yourchannel via peer 2: block {} in {:.1?}",
        on_yours.block_number,
        started.elapsed()
    );
    assert_eq!(Organization::decode(on_yours.payload.as_slice()).unwrap().id, "MyOrg2MSP");
    let seen = tokio::time::timeout(STEP, next.next()).await.expect("event in time").expect("item").expect("events");
    assert_eq!(seen.block_number, on_yours.block_number);
    assert_eq!(seen.events[0].txid, on_yours.txid);
    // Channels are separate ledgers: each lists only its own registration.
    assert_eq!(organizations(&peer2, &org2, "yourchannel", &chaincode).await, vec!["MyOrg2MSP".to_owned()]);
    assert_eq!(organizations(&peer1, &org1, "yourchannel", &chaincode).await, vec!["MyOrg2MSP".to_owned()]);
    assert_eq!(organizations(&peer2, &org2, "mychannel", &chaincode).await, vec!["MyOrg1MSP".to_owned()]);

    // Resume after a checkpoint: nothing after the last event seen, until the next commit.
    let mut resumed = peer1
        .chaincode_events_after(&org1, "yourchannel", &chaincode, Some(0), Some(&on_yours.txid))
        .await
        .expect("events");
    assert!(tokio::time::timeout(Duration::from_millis(500), resumed.next()).await.is_err(), "nothing new");

    // A refused proposal is a Gateway error, not a chaincode one: MyOrg2MSP's key with
    // MyOrg1MSP's certificate.
    let forged = SigningIdentity::from_pem(
        "MyOrg1MSP",
        &std::fs::read(wallet.join("MyOrg1MSP/cert.pem")).unwrap(),
        &std::fs::read(wallet.join("MyOrg2MSP/key.pem")).unwrap(),
    );
    assert!(matches!(forged, Err(GatewayError::Identity(_))), "key and certificate mismatch caught locally");
    let error = peer1
        .evaluate(&org1, "nochannel", &chaincode, encoding::call_args(QUERY_VERSION, &[]))
        .await
        .expect_err("unknown channel");
    println!("evaluate on an unknown channel: {error:?}");
    assert!(matches!(error, GatewayError::Gateway(_)), "{error:?}");
}
