//! The runtime with the real logic component (`orchestrator-logic-component`).
#![allow(clippy::unwrap_used)]

use orchestrator_logic_component::{COMPONENT, SHA256};
use orchestrator_proto::{QueryVersionResponse, RegisterOrganizationParam};
use orchestrator_runtime::{Context, ErrorKind, MemoryBackend, Runtime, RuntimeConfig, RuntimeError, identity};
use prost::Message;
use sha2::Digest as _;

const QUERY_VERSION: &str = "orchestrator.InfoService/QueryVersion";
const REGISTER_ORGANIZATION: &str = "orchestrator.OrganizationService/RegisterOrganization";

fn ctx(tx_id: &str) -> Context {
    Context {
        msp_id: "MyOrg1MSP".to_owned(),
        channel: "mychannel".to_owned(),
        tx_id: tx_id.to_owned(),
        tx_time_micros: 1_700_000_000_000_000,
    }
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default(), COMPONENT).unwrap()
}

#[test]
fn loads_the_logic_component() {
    let rt = runtime();
    let info = rt.info();
    assert_eq!(info.sha256, SHA256.trim());
    // Computed here too: the identity is the hash of exactly the bytes loaded.
    assert_eq!(info.sha256, hex::encode(sha2::Sha256::digest(COMPONENT)));
    assert!(!info.version.is_empty());
    // The package of wit/orchestrator.wit.
    assert_eq!(info.world, "substra:orchestrator@0.1.0");
    let method = |name: &str| info.methods.iter().find(|m| m.name == name).cloned();
    assert_eq!(method(QUERY_VERSION).map(|m| m.read_only), Some(true));
    assert_eq!(method(REGISTER_ORGANIZATION).map(|m| m.read_only), Some(false));
    assert_eq!(rt.is_read_only(QUERY_VERSION), Some(true));
    assert_eq!(rt.is_read_only(REGISTER_ORGANIZATION), Some(false));
}

#[tokio::test]
async fn query_version() {
    let rt = runtime();
    let backend = MemoryBackend::new();
    let invocation = rt.invoke(&ctx("tx-version"), QUERY_VERSION, &[], backend.clone()).await.outcome.unwrap();
    let response = QueryVersionResponse::decode(invocation.result.unwrap().as_slice()).unwrap();
    assert!(!response.orchestrator.is_empty(), "{response:?}");
    assert!(invocation.writes.is_empty());
    assert!(invocation.events.is_empty());
    assert!(invocation.fuel_consumed > 0);
    // The logic leaves its identity to the host, and the invocation says which version ran.
    assert_eq!(response.logic_sha256, "");
    assert_eq!(invocation.logic.sha256, SHA256.trim());

    assert_eq!(identity::QUERY_VERSION, QUERY_VERSION);
    let mut answered = response.encode_to_vec();
    identity::stamp_logic_sha256(QUERY_VERSION, &mut answered, &invocation.logic.sha256);
    let stamped = QueryVersionResponse::decode(answered.as_slice()).unwrap();
    assert_eq!(stamped.orchestrator, response.orchestrator);
    assert_eq!(stamped.logic_sha256, hex::encode(sha2::Sha256::digest(COMPONENT)));
}

#[tokio::test]
async fn register_organization() {
    let rt = runtime();
    let backend = MemoryBackend::new();
    let request = RegisterOrganizationParam { address: String::new() }.encode_to_vec();
    let invocation =
        rt.invoke(&ctx("tx-register"), REGISTER_ORGANIZATION, &request, backend.clone()).await.outcome.unwrap();
    assert!(invocation.result.is_ok(), "{:?}", invocation.result);
    assert!(!invocation.writes.is_empty());
    assert!(!invocation.events.is_empty());
    assert!(invocation.writes.windows(2).all(|w| w[0].0 < w[1].0));
    backend.apply(&invocation.writes);
    assert!(!backend.is_empty());

    // Once committed, registering the same organization again is refused and writes nothing.
    let again =
        rt.invoke(&ctx("tx-register-2"), REGISTER_ORGANIZATION, &request, backend.clone()).await.outcome.unwrap();
    assert!(again.result.is_err(), "{:?}", again.result);
    assert!(again.writes.is_empty() && again.events.is_empty());
}

#[tokio::test]
async fn malformed_request() {
    let rt = runtime();
    let invocation =
        rt.invoke(&ctx("tx"), REGISTER_ORGANIZATION, &[0xff, 0xff, 0xff], MemoryBackend::new()).await.outcome.unwrap();
    assert_eq!(invocation.result.map_err(|e| e.kind), Err(ErrorKind::MalformedRequest));
}

#[tokio::test]
async fn exhausted_fuel_fails_one_call_only() {
    // Loading verifies with its own budget: a tight per-call budget still loads.
    let starved = Runtime::new(RuntimeConfig { fuel_per_call: 1_000, ..RuntimeConfig::default() }, COMPONENT).unwrap();
    let request = RegisterOrganizationParam { address: String::new() }.encode_to_vec();
    let result = starved.invoke(&ctx("tx"), REGISTER_ORGANIZATION, &request, MemoryBackend::new()).await.outcome;
    assert!(matches!(&result, Err(RuntimeError::Trap(m)) if m.contains("fuel")), "{result:?}");
    let result = starved.invoke(&ctx("tx"), REGISTER_ORGANIZATION, &request, MemoryBackend::new()).await.outcome;
    assert!(matches!(&result, Err(RuntimeError::Trap(_))), "{result:?}");
    // The same component with a normal budget, in the same process, still serves.
    let rt = runtime();
    let invocation =
        rt.invoke(&ctx("tx"), REGISTER_ORGANIZATION, &request, MemoryBackend::new()).await.outcome.unwrap();
    assert!(invocation.result.is_ok());
}
