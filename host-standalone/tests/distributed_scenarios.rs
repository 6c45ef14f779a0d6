//! One API, both modes, on a REAL Fabric 2.5 network (`scripts/fabric-net.sh`): whatever a
//! client sends, the distributed-mode facade must answer exactly as the standalone server does
//! (same responses once creation timestamps are set aside, same gRPC codes and messages) and
//! leave the same events in its event store (ids and timestamps aside).
//!
//! - [`every_scenario_through_the_facade`]: every scenario of the logic's shared suite
//!   (`scenario_tests!`) runs through a facade, each call also sent to a standalone server of
//!   its own and compared there and then; the facade's events are those its ledger listener
//!   stored, compared at the end with the standalone's and the native harness's. Scenarios use
//!   fixed keys, so each one gets a ledger of its own: the network defines the same chaincode
//!   package under one chaincode name per scenario (a chaincode name is a state namespace), the
//!   scenario's facade reads that chaincode's events and every call names it in the `chaincode`
//!   header. Scenarios run a few at a time (block time, not CPU, bounds them).
//! - [`seeded_workload_in_both_modes`]: a seeded random workload of write calls from MyOrg1MSP
//!   and MyOrg2MSP, each sent to the standalone server and to its organization's facade (two
//!   facades, on two peers), one at a time; answers, events and both facades' event stores must
//!   match. `ORCHESTRATOR_PARITY_SEED` replays a seed (printed by every run),
//!   `ORCHESTRATOR_PARITY_CALLS` changes the count (default [`PARITY_CALLS`]).
//!
//! Both tests share one network (up once, down when the last of them ends, also on failure):
//! MyOrg1MSP and MyOrg2MSP with a peer each, and MyOrg3MSP — the scenarios' organization that
//! never registers, and must still sign calls — as a member without a peer
//! (`FABRIC_NET_EXTRA_ORGS`).
//!
//! Measured on the 2-core development machine: the network with its 28 chaincode definitions
//! comes up in about 17 s (3 s with one); the 26 scenarios (about 650 committed transactions,
//! 270 calls refused at endorsement, 790 reads; a block is cut 0.5 s at most after a lone
//! transaction) take about 90 s, 5 at a time, nearly all of it the longest one (`pagination`,
//! 138 commits one after the other); the workload of 300 calls (about half of them applied)
//! runs alongside in about 90 s. The whole file: under 2 minutes.
//!
//! Needs `FABRIC_BIN_DIR` (the `bin/` of a Fabric 2.5 release) and the `chaincode` binary
//! (`cargo build -p orchestrator-host-fabric --bin chaincode`); without `FABRIC_BIN_DIR` both
//! tests say they skipped. `ORCHESTRATOR_SCENARIO_JOBS` sets how many scenarios run at once,
//! `ORCHESTRATOR_SCENARIOS=name,name` runs only those (debugging).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestServer;
use common::network::Network;
use orchestrator_logic::testing::fuzz::Rng;
use orchestrator_logic::testing::scenarios::computeplan::{APPLY_PLAN_ACTION, UPDATE_PLAN, new_plan};
use orchestrator_logic::testing::scenarios::computetask::{APPLY_TASK_ACTION, aggregate_function, train_task};
use orchestrator_logic::testing::scenarios::outputs::{REGISTER_FAILURE_REPORT, REGISTER_MODELS, failure, new_model};
use orchestrator_logic::testing::scenarios::{
    CHANNEL, ORG1, ORG2, OTHER_CHANNEL, UNREGISTERED, key, method, new_data_manager, new_data_sample, new_function,
};
use orchestrator_logic::testing::{Driver, Harness};
use orchestrator_logic::{ErrorKind, LogicError};
use orchestrator_proto::{
    ApplyFunctionActionParam, ApplyPlanActionParam, ApplyTaskActionParam, ErrorType, Event, FailedAssetKind,
    GetAllOrganizationsParam, GetAllOrganizationsResponse, Organization, QueryDataManagersParam, QueryDataSamplesParam,
    QueryFunctionsParam, QueryPlansParam, QueryTasksParam, RegisterDataSamplesParam, RegisterModelsParam,
    RegisterOrganizationParam, RegisterTasksParam, UpdateComputePlanParam, UpdateDataManagerParam, UpdateFunctionParam,
};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use tonic::{Code, Status};

/// How long the ledger may take to show a committed call's events in a facade's store.
const LEDGER_PATIENCE: Duration = Duration::from_secs(60);
/// Scenarios run at once (each waits on block time, one call after the other).
const SCENARIO_JOBS: usize = 5;
/// Write calls of the seeded workload.
const PARITY_CALLS: u64 = 300;
/// Chaincode name of the namespace nothing but the MyOrg3MSP check writes to.
const HUB_CHAINCODE: &str = "orchestrator";
/// Chaincode name of the seeded workload.
const PARITY_CHAINCODE: &str = "parity";
const QUERY_DATA_MANAGERS: &str = "orchestrator.DataManagerService/QueryDataManagers";
const QUERY_PLANS: &str = "orchestrator.ComputePlanService/QueryPlans";

/// A scenario of the shared suite.
type Scenario = fn(&mut dyn Driver);

fn scenarios() -> &'static [(&'static str, Scenario)] {
    orchestrator_logic::scenario_tests!(all)
}

// ---------------------------------------------------------------------------------------------
// The network, shared by the tests of this file.

static NETWORK: Mutex<Weak<Network>> = Mutex::new(Weak::new());

/// The running network, or a new one; `None` (said) without `FABRIC_BIN_DIR`. Each test holds
/// it while it runs: the network goes down when the last holder drops it (also on a panic).
fn shared_network() -> Option<Arc<Network>> {
    let bin_dir = common::facade::fabric_bin_dir()?;
    let mut shared = NETWORK.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(network) = shared.upgrade() {
        return Some(network);
    }
    let mut names = vec![HUB_CHAINCODE, PARITY_CHAINCODE];
    names.extend(scenarios().iter().map(|(name, _)| *name));
    let names = names.join(" ");
    let chaincode = common::chaincode_binary();
    let network = Arc::new(Network::up_with(
        &bin_dir,
        &chaincode.to_string_lossy(),
        &[("FABRIC_CHAINCODE_NAMES", &names), ("FABRIC_NET_EXTRA_ORGS", UNREGISTERED)],
    ));
    *shared = Arc::downgrade(&network);
    Some(network)
}

/// Every scenario organization on both channels.
fn scenario_channels() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenario_channels.yaml"))
}

/// A facade on the peer of organization `org` (1 or 2), reading the events of `chaincode`.
async fn facade(network: &Network, org: u8, chaincode: &str) -> TestServer {
    common::facade::start(network, org, |config| {
        config.channel_config = Some(scenario_channels());
        config.database_max_connections = 3;
        config.fabric_chaincode = chaincode.to_owned();
        config.fabric_gateway_timeout = Duration::from_secs(60);
    })
    .await
}

async fn standalone() -> TestServer {
    TestServer::start_with(|config| {
        config.channel_config = Some(scenario_channels());
        config.database_max_connections = 3;
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// What a client sees, and what may differ between the modes.

/// The outcome of a call as a client sees it: the response bytes, or the code and message.
type Seen = Result<Bytes, (Code, String)>;

fn seen(result: Result<Bytes, Status>) -> Seen {
    result.map_err(|status| (status.code(), status.message().to_owned()))
}

/// `path` is `/package.Service/Method`.
async fn call(server: &TestServer, msp: &str, channel: &str, path: &str, body: Vec<u8>) -> Seen {
    seen(server.raw_call(path, body, &[("mspid", msp), ("channel", channel)]).await)
}

async fn call_on(server: &TestServer, chaincode: &str, msp: &str, channel: &str, path: &str, body: Vec<u8>) -> Seen {
    seen(server.raw_call(path, body, &[("mspid", msp), ("channel", channel), ("chaincode", chaincode)]).await)
}

fn show(outcome: &Seen) -> String {
    match outcome {
        Ok(bytes) => format!("OK ({} bytes)", bytes.len()),
        Err((code, message)) => {
            let cut: String = message.chars().take(300).collect();
            format!("{code:?} {cut:?}")
        }
    }
}

/// The logic's error as a scenario expects it (the contract's [`ErrorKind::from_grpc`]).
fn logic_error(code: Code, message: String) -> LogicError {
    LogicError { kind: ErrorKind::from_grpc(code as i32, &message), message }
}

/// Compares messages with what legitimately differs between the modes blanked: every
/// `google.protobuf.Timestamp` (creation dates and event times are transaction times: the
/// host's clock standalone, the proposal's on Fabric), event ids (derived from the transaction
/// id) and page tokens (they hold the creation time of the last asset of the page). A blanked
/// timestamp or token stays present, so presence still counts; a scenario pages on with the
/// facade's tokens, and the standalone server gets its own token for the same place instead
/// ([`Tokens`]), so the next pages are compared too.
struct Wire {
    pool: DescriptorPool,
    event: MessageDescriptor,
}

impl Wire {
    fn new() -> Self {
        let pool = DescriptorPool::decode(orchestrator_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let event = pool.get_message_by_name("orchestrator.Event").expect("orchestrator.Event");
        Self { pool, event }
    }

    /// The response of `method` (`orchestrator.Service/Method`), blanked.
    fn response(&self, method: &str, bytes: &[u8]) -> Result<DynamicMessage, String> {
        let mut message = self.decode(method, bytes, true)?;
        blank(&mut message);
        if message.get_field_by_name("next_page_token").is_some_and(|t| t.as_str().is_some_and(|t| !t.is_empty())) {
            message.set_field_by_name("next_page_token", Value::String("<token>".to_owned()));
        }
        Ok(message)
    }

    /// The `next_page_token` of a response, if it has one.
    fn next_page_token(&self, method: &str, bytes: &[u8]) -> Option<String> {
        let message = self.decode(method, bytes, true).ok()?;
        let token = message.get_field_by_name("next_page_token")?;
        token.as_str().filter(|t| !t.is_empty()).map(str::to_owned)
    }

    /// The request for the standalone server: the facade's page token replaced by the
    /// standalone's for the same place.
    fn translate(&self, method: &str, request: &[u8], tokens: &Tokens) -> Vec<u8> {
        let Ok(mut message) = self.decode(method, request, false) else { return request.to_vec() };
        let own = message.get_field_by_name("page_token").and_then(|t| t.as_str().and_then(|t| tokens.get(t).cloned()));
        match own {
            Some(own) => {
                message.set_field_by_name("page_token", Value::String(own));
                message.encode_to_vec()
            }
            None => request.to_vec(),
        }
    }

    /// `bytes` as the output (`response`) or input message of `method`, not blanked.
    fn decode(&self, method: &str, bytes: &[u8], response: bool) -> Result<DynamicMessage, String> {
        let (service, name) = method.split_once('/').ok_or_else(|| format!("method {method:?}"))?;
        let service = self.pool.get_service_by_name(service).ok_or_else(|| format!("no service of {method}"))?;
        let method_desc = service.methods().find(|m| m.name() == name).ok_or_else(|| format!("no method {method}"))?;
        let desc = if response { method_desc.output() } else { method_desc.input() };
        DynamicMessage::decode(desc, bytes).map_err(|err| format!("{method}: {err}"))
    }

    fn event(&self, bytes: &[u8]) -> DynamicMessage {
        let mut message = DynamicMessage::decode(self.event.clone(), bytes).expect("event decodes");
        blank(&mut message);
        message
    }

    fn events(&self, events: &[Vec<u8>]) -> Vec<DynamicMessage> {
        events.iter().map(|bytes| self.event(bytes)).collect()
    }

    /// `Ok` when the facade answered as the standalone server did.
    fn compare(&self, method: &str, standalone: &Seen, facade: &Seen) -> Result<(), String> {
        match (standalone, facade) {
            (Ok(a), Ok(b)) if a == b => Ok(()),
            (Ok(a), Ok(b)) => {
                let (a, b) = (self.response(method, a)?, self.response(method, b)?);
                if a == b {
                    Ok(())
                } else {
                    Err(format!(
                        "responses differ (timestamps aside):\n  standalone: {}\n  facade:     {}",
                        text(&a),
                        text(&b)
                    ))
                }
            }
            (Err(a), Err(b)) if a == b => Ok(()),
            _ => Err(format!("standalone answered {}, the facade {}", show(standalone), show(facade))),
        }
    }
}

/// A message as JSON, for failure reports.
fn text(message: &DynamicMessage) -> String {
    serde_json::to_string(message).unwrap_or_else(|err| format!("<{err}>"))
}

/// The facade's page tokens, with the standalone's token for the same place.
type Tokens = BTreeMap<String, String>;

fn blank(message: &mut DynamicMessage) {
    if message.descriptor().full_name() == "orchestrator.Event" {
        message.clear_field_by_name("id");
    }
    for (_, value) in message.fields_mut() {
        blank_value(value);
    }
}

fn blank_value(value: &mut Value) {
    match value {
        Value::Message(inner) if inner.descriptor().full_name() == "google.protobuf.Timestamp" => {
            *inner = DynamicMessage::new(inner.descriptor());
        }
        Value::Message(inner) => blank(inner),
        Value::List(items) => items.iter_mut().for_each(blank_value),
        Value::Map(entries) => entries.values_mut().for_each(blank_value),
        _ => {}
    }
}

/// `Err` naming the first difference of two event lists.
fn same_events(what: &str, expected: &[DynamicMessage], got: &[DynamicMessage]) -> Result<(), String> {
    if let Some(at) = expected.iter().zip(got).position(|(a, b)| a != b) {
        return Err(format!(
            "{what}: event {at} differs (ids and timestamps aside):\n  expected: {}\n  got:      {}",
            text(&expected[at]),
            text(&got[at])
        ));
    }
    if expected.len() != got.len() {
        return Err(format!("{what}: {} events expected, {} stored", expected.len(), got.len()));
    }
    Ok(())
}

async fn event_count(server: &TestServer) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&server.pool).await.expect("event count")
}

/// Waits until the facade's store holds as many events as the standalone's: the ledger
/// listener has stored every event committed so far (and the facade's peer has committed every
/// block holding them). More events than standalone is a difference at once.
async fn catch_up(facade: &TestServer, standalone: &TestServer) -> Result<(), String> {
    let expected = event_count(standalone).await;
    let deadline = Instant::now() + LEDGER_PATIENCE;
    loop {
        let stored = event_count(facade).await;
        if stored == expected {
            return Ok(());
        }
        if stored > expected {
            return Err(format!("the facade stored {stored} events, standalone committed {expected}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("the facade stored {stored} of {expected} events after {LEDGER_PATIENCE:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stored event payloads in store order.
async fn payloads(server: &TestServer) -> Vec<Vec<u8>> {
    server.events().await.into_iter().map(|row| row.payload).collect()
}

fn is_write(method: &str) -> bool {
    orchestrator_logic::api::find(method).is_some_and(|m| !m.read_only)
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".to_owned())
}

// ---------------------------------------------------------------------------------------------
// 1. The scenarios.

/// Runs a scenario through a facade (its calls in chaincode `chaincode`) and a standalone
/// server at once: each call goes to both, the facade's answer must be the standalone's, and
/// is what the scenario sees.
struct FacadeDriver {
    rt: tokio::runtime::Handle,
    wire: Arc<Wire>,
    chaincode: &'static str,
    facade: Option<TestServer>,
    standalone: Option<TestServer>,
    calls: u64,
    writes: u64,
    tokens: Tokens,
}

impl FacadeDriver {
    fn facade(&self) -> &TestServer {
        self.facade.as_ref().expect("facade running")
    }

    fn standalone(&self) -> &TestServer {
        self.standalone.as_ref().expect("standalone running")
    }

    /// The checks after the scenario: the facade's events are the standalone's and the native
    /// harness's (ids and timestamps aside), with unique ids; the chaincode header alone
    /// reaches this scenario's namespace through another facade. Stops both servers.
    fn finish(mut self, native: &[Event], hub: &TestServer) -> Result<(), String> {
        let (facade, standalone) = (self.facade.take().expect("facade"), self.standalone.take().expect("standalone"));
        let result = self.rt.block_on(async {
            catch_up(&facade, &standalone).await?;
            let stored = payloads(&facade).await;
            let ids: BTreeSet<String> =
                stored.iter().map(|bytes| Event::decode(bytes.as_slice()).expect("event").id).collect();
            if ids.len() != stored.len() || ids.contains("") {
                return Err(format!(
                    "{} events, {} distinct ids (empty: {})",
                    stored.len(),
                    ids.len(),
                    ids.contains("")
                ));
            }
            let stored = self.wire.events(&stored);
            same_events("standalone", &self.wire.events(&payloads(&standalone).await), &stored)?;
            let native: Vec<Vec<u8>> = native.iter().map(Message::encode_to_vec).collect();
            same_events("native harness", &self.wire.events(&native), &stored)?;

            let path = format!("/{}", method::GET_ALL_ORGANIZATIONS);
            let all = GetAllOrganizationsParam {}.encode_to_vec();
            let own = call(&facade, ORG1, CHANNEL, &path, all.clone()).await;
            let through_hub = call_on(hub, self.chaincode, ORG1, CHANNEL, &path, all).await;
            if own != through_hub {
                return Err(format!(
                    "GetAllOrganizations with `chaincode: {}` through another facade: {} vs {}",
                    self.chaincode,
                    show(&through_hub),
                    show(&own)
                ));
            }
            Ok(())
        });
        self.rt.block_on(async {
            facade.stop().await;
            standalone.stop().await;
        });
        result
    }
}

impl Driver for FacadeDriver {
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, LogicError> {
        self.calls += 1;
        if is_write(method) {
            self.writes += 1;
        }
        let path = format!("/{method}");
        let (facade, standalone) = (self.facade(), self.standalone());
        let own_request = self.wire.translate(method, request, &self.tokens);
        let outcome = self.rt.block_on(async {
            let expected = call(standalone, msp, channel, &path, own_request).await;
            let got = call_on(facade, self.chaincode, msp, channel, &path, request.to_vec()).await;
            self.wire.compare(method, &expected, &got)?;
            catch_up(facade, standalone).await?;
            Ok::<_, String>((expected, got))
        });
        match outcome {
            Ok((expected, got)) => {
                if let (Ok(expected), Ok(got)) = (&expected, &got) {
                    let tokens = (self.wire.next_page_token(method, got), self.wire.next_page_token(method, expected));
                    if let (Some(theirs), Some(own)) = tokens {
                        self.tokens.insert(theirs, own);
                    }
                }
                got.map(|bytes| bytes.to_vec()).map_err(|(code, message)| logic_error(code, message))
            }
            Err(difference) => {
                panic!("{}: call {} ({method} as {msp} on {channel}): {difference}", self.chaincode, self.calls)
            }
        }
    }

    fn events(&self) -> Vec<Event> {
        self.rt
            .block_on(payloads(self.facade()))
            .iter()
            .map(|bytes| Event::decode(bytes.as_slice()).expect("stored event decodes"))
            .collect()
    }
}

/// The native harness, counting the committed writes (to start the longest scenarios first).
struct Counting {
    native: Harness,
    committed: u64,
}

impl Driver for Counting {
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, LogicError> {
        let result = self.native.call_raw(msp, channel, method, request);
        if result.is_ok() && is_write(method) {
            self.committed += 1;
        }
        result
    }

    fn events(&self) -> Vec<Event> {
        self.native.events()
    }
}

struct Planned {
    index: usize,
    name: &'static str,
    scenario: Scenario,
    native_events: Vec<Event>,
    committed: u64,
}

/// One scenario on its own namespace, through the peer of organization 1 or 2 in turn.
fn run_scenario(
    rt: &tokio::runtime::Handle,
    network: &Network,
    wire: &Arc<Wire>,
    hubs: &[TestServer; 2],
    planned: &Planned,
) -> Result<(u64, u64), String> {
    let peer = if planned.index.is_multiple_of(2) { 1 } else { 2 };
    let (facade, standalone) = rt.block_on(async { (facade(network, peer, planned.name).await, standalone().await) });
    let mut driver = FacadeDriver {
        rt: rt.clone(),
        wire: Arc::clone(wire),
        chaincode: planned.name,
        facade: Some(facade),
        standalone: Some(standalone),
        calls: 0,
        writes: 0,
        tokens: Tokens::new(),
    };
    (planned.scenario)(&mut driver);
    let counts = (driver.calls, driver.writes);
    driver.finish(&planned.native_events, &hubs[usize::from(peer - 1)])?;
    Ok(counts)
}

/// Every scenario of `scenario_tests!`, each on its own chaincode namespace, through a facade
/// on the real network, against a standalone server and the native harness.
#[test]
fn every_scenario_through_the_facade() {
    let Some(network) = shared_network() else { return };
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("tokio");
    let rt = runtime.handle().clone();
    let wire = Arc::new(Wire::new());

    // Facades whose default chaincode is the hub's: they reach a scenario's namespace only
    // through the `chaincode` header.
    let hubs =
        rt.block_on(async { [facade(&network, 1, HUB_CHAINCODE).await, facade(&network, 2, HUB_CHAINCODE).await] });

    // MyOrg3MSP has no peer: the Gateway must still take its signed proposals, and the ledger
    // its transactions (a submit answers only once the transaction committed valid).
    let register = format!("/{}", method::REGISTER_ORGANIZATION);
    let org3 = rt.block_on(call(
        &hubs[0],
        UNREGISTERED,
        CHANNEL,
        &register,
        RegisterOrganizationParam::default().encode_to_vec(),
    ));
    let org3 = Organization::decode(org3.unwrap_or_else(|e| panic!("RegisterOrganization as {UNREGISTERED}: {e:?}")))
        .expect("organization");
    assert_eq!(org3.id, UNREGISTERED);

    // The native runs: the expected events, and the longest scenarios first.
    let only = std::env::var("ORCHESTRATOR_SCENARIOS").ok();
    let chosen = |name: &str| only.as_deref().is_none_or(|only| only.split(',').any(|o| o.trim() == name));
    let mut plan: Vec<Planned> = scenarios()
        .iter()
        .enumerate()
        .filter(|(_, (name, _))| chosen(name))
        .map(|(index, (name, scenario))| {
            let mut counting = Counting { native: Harness::new(), committed: 0 };
            scenario(&mut counting);
            Planned {
                index,
                name,
                scenario: *scenario,
                native_events: counting.native.events(),
                committed: counting.committed,
            }
        })
        .collect();
    plan.sort_by_key(|p| std::cmp::Reverse(p.committed));
    let committed: u64 = plan.iter().map(|p| p.committed).sum();
    let jobs = std::env::var("ORCHESTRATOR_SCENARIO_JOBS").ok().and_then(|j| j.parse().ok()).unwrap_or(SCENARIO_JOBS);
    println!("{} scenarios ({committed} committed writes natively), {jobs} at a time", plan.len());

    let queue = Mutex::new(plan.iter().collect::<Vec<_>>().into_iter());
    let results: Mutex<Vec<(&'static str, Result<String, String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                    let Some(planned) = next else { return };
                    let began = Instant::now();
                    // A scenario's failure is a panic (its own assertions, or a difference the
                    // driver found): reported with the others once every scenario has run.
                    let run = catch_unwind(AssertUnwindSafe(|| run_scenario(&rt, &network, &wire, &hubs, planned)));
                    let outcome = run.unwrap_or_else(|panic| Err(panic_text(&*panic))).map(|(calls, writes)| {
                        format!(
                            "{calls} calls ({writes} writes, {} committed) in {:.1?}",
                            planned.committed,
                            began.elapsed()
                        )
                    });
                    match &outcome {
                        Ok(summary) => println!("scenario {}: ok, {summary}", planned.name),
                        Err(error) => {
                            println!("scenario {}: FAILED after {:.1?}: {error}", planned.name, began.elapsed())
                        }
                    }
                    results.lock().unwrap_or_else(PoisonError::into_inner).push((planned.name, outcome));
                }
            });
        }
    });

    // Nothing reached the hub's namespace but MyOrg3MSP's registration: the namespaces are apart.
    let all = GetAllOrganizationsParam {}.encode_to_vec();
    let path = format!("/{}", method::GET_ALL_ORGANIZATIONS);
    let hub_orgs = rt.block_on(call(&hubs[1], ORG2, CHANNEL, &path, all)).expect("GetAllOrganizations on the hub");
    let ids: Vec<String> = GetAllOrganizationsResponse::decode(hub_orgs)
        .expect("organizations")
        .organizations
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, [UNREGISTERED], "the hub's namespace holds only what was written to it");
    rt.block_on(async {
        for hub in hubs {
            hub.stop().await;
        }
    });

    let results = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    let failed: Vec<String> =
        results.iter().filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}"))).collect();
    println!("{} of {} scenarios passed in {:.1?}", results.len() - failed.len(), plan.len(), started.elapsed());
    assert_eq!(results.len(), plan.len(), "every scenario ran");
    if only.is_some() {
        println!("only the scenarios of ORCHESTRATOR_SCENARIOS ran");
    }
    assert!(failed.is_empty(), "{} scenarios failed:\n{}", failed.len(), failed.join("\n"));
    drop(network);
}

// ---------------------------------------------------------------------------------------------
// 2. A seeded workload in both modes.

/// What the workload has created so far (per the standalone's answers, which the facades must
/// give too), to make most calls build on earlier ones.
#[derive(Default)]
struct World {
    organizations: BTreeSet<(&'static str, &'static str)>,
    /// Data manager numbers, with their owner.
    data_managers: Vec<(u64, &'static str)>,
    /// Sample numbers per data manager number.
    samples: BTreeMap<u64, Vec<u64>>,
    /// Function numbers: owner, train-shaped (else aggregate-shaped), last action applied.
    functions: Vec<(u64, &'static str, bool, i32)>,
    plans: Vec<(u64, &'static str)>,
    /// Task numbers with their worker (the owner of the task's data manager).
    tasks: Vec<(u64, &'static str)>,
    /// Tasks last moved to EXECUTING.
    executing: Vec<(u64, &'static str)>,
    next: u64,
}

impl World {
    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> Option<T> {
    rng.pick(items).copied()
}

/// `FunctionAction` values.
const BUILDING: i32 = 1;
const READY: i32 = 4;
/// `ComputeTaskAction` values.
const EXECUTING: i32 = 1;
const DONE: i32 = 4;

/// The next write call: `(msp, channel, method, request)`; mostly valid, now and then a
/// conflict, a permission error, a call out of order or on the other channel.
fn next_call(rng: &mut Rng, world: &mut World) -> (&'static str, &'static str, &'static str, Vec<u8>) {
    let mut msp = if rng.one_in(2) { ORG1 } else { ORG2 };
    let mut channel = if rng.one_in(12) { OTHER_CHANNEL } else { CHANNEL };
    // Both organizations on mychannel first (mostly), then anything.
    let missing = [ORG1, ORG2].into_iter().find(|org| !world.organizations.contains(&(*org, CHANNEL)));
    let choice = match missing {
        Some(org) if !rng.one_in(4) => {
            (msp, channel) = (org, CHANNEL);
            0
        }
        _ => rng.below(18),
    };
    // Mostly the one who may, sometimes whoever this call is from.
    let or_caller = |rng: &mut Rng, allowed: &'static str| if rng.one_in(6) { msp } else { allowed };
    let (msp, m, request): (&'static str, &'static str, Vec<u8>) = match choice {
        0 => {
            let param = RegisterOrganizationParam { address: format!("https://{msp}") };
            (msp, method::REGISTER_ORGANIZATION, param.encode_to_vec())
        }
        1 => {
            let n = match pick(rng, &world.data_managers) {
                Some((n, _)) if rng.one_in(8) => n,
                _ => world.fresh(),
            };
            (msp, method::REGISTER_DATA_MANAGER, new_data_manager(n).encode_to_vec())
        }
        2 | 3 => {
            let (dm, owner) = pick(rng, &world.data_managers).unwrap_or((world.next + 1, msp));
            let used: Vec<u64> = world.samples.values().flatten().copied().collect();
            let samples = (0..1 + rng.below(4))
                .map(|_| {
                    let n = match pick(rng, &used) {
                        Some(n) if rng.one_in(10) => n,
                        _ => world.fresh(),
                    };
                    new_data_sample(n, &[key(dm).as_str()])
                })
                .collect();
            (or_caller(rng, owner), method::REGISTER_DATA_SAMPLES, RegisterDataSamplesParam { samples }.encode_to_vec())
        }
        4 => {
            let Some((dm, owner)) = pick(rng, &world.data_managers) else { return next_call(rng, world) };
            let param = UpdateDataManagerParam { key: key(dm), name: format!("renamed {}", rng.below(100)) };
            (or_caller(rng, owner), method::UPDATE_DATA_MANAGER, param.encode_to_vec())
        }
        5 => {
            let n = world.fresh();
            let function = if rng.one_in(4) { aggregate_function(n) } else { new_function(n) };
            (msp, method::REGISTER_FUNCTION, function.encode_to_vec())
        }
        6 | 7 => {
            let Some((f, owner, _, last)) = pick(rng, &world.functions) else { return next_call(rng, world) };
            // WAITING -> BUILDING -> READY mostly, sometimes anything.
            let action = match last {
                0 if !rng.one_in(5) => BUILDING,
                BUILDING if !rng.one_in(5) => READY,
                _ => [1, 2, 3, 4][rng.below(4)],
            };
            let param = ApplyFunctionActionParam { function_key: key(f), action };
            (or_caller(rng, owner), method::APPLY_FUNCTION_ACTION, param.encode_to_vec())
        }
        8 => {
            let Some((f, owner, _, _)) = pick(rng, &world.functions) else { return next_call(rng, world) };
            let param =
                UpdateFunctionParam { key: key(f), name: format!("function renamed {}", rng.below(100)), image: None };
            (or_caller(rng, owner), method::UPDATE_FUNCTION, param.encode_to_vec())
        }
        9 => (msp, method::REGISTER_PLAN, new_plan(world.fresh()).encode_to_vec()),
        10 => {
            let Some((plan, owner)) = pick(rng, &world.plans) else { return next_call(rng, world) };
            if rng.one_in(5) {
                let param = ApplyPlanActionParam { key: key(plan), action: 1 };
                (or_caller(rng, owner), APPLY_PLAN_ACTION, param.encode_to_vec())
            } else {
                let param = UpdateComputePlanParam { key: key(plan), name: format!("plan renamed {}", rng.below(100)) };
                (or_caller(rng, owner), UPDATE_PLAN, param.encode_to_vec())
            }
        }
        11 | 12 => {
            let train: Vec<u64> = world.functions.iter().filter(|f| f.2 || rng.one_in(8)).map(|f| f.0).collect();
            let (Some((plan, owner)), Some(function), Some((dm, _))) =
                (pick(rng, &world.plans), pick(rng, &train), pick(rng, &world.data_managers))
            else {
                return next_call(rng, world);
            };
            let samples = world.samples.get(&dm).cloned().unwrap_or_default();
            let mut batch = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let n = world.fresh();
                let mut parents = Vec::new();
                if let Some((parent, _)) = pick(rng, &world.tasks).filter(|_| rng.one_in(3)) {
                    parents.push(parent);
                }
                let chosen: Vec<u64> = samples.iter().copied().filter(|_| !rng.one_in(3)).take(3).collect();
                let mut task = train_task(n, dm, &chosen, &parents);
                task.function_key = key(function);
                task.compute_plan_key = key(plan);
                batch.push(task);
            }
            (or_caller(rng, owner), method::REGISTER_TASKS, RegisterTasksParam { tasks: batch }.encode_to_vec())
        }
        13 | 14 => {
            // Running tasks mostly finish; the others mostly start.
            let (task, worker, action) = match pick(rng, &world.executing) {
                Some((task, worker)) if rng.one_in(2) => (task, worker, if rng.one_in(5) { 3 } else { DONE }),
                _ => {
                    let Some((task, worker)) = pick(rng, &world.tasks) else { return next_call(rng, world) };
                    (task, worker, if rng.one_in(4) { [2, 3, 4, 5, 6][rng.below(5)] } else { EXECUTING })
                }
            };
            let param = ApplyTaskActionParam { compute_task_key: key(task), action, log: String::new() };
            (or_caller(rng, worker), APPLY_TASK_ACTION, param.encode_to_vec())
        }
        15 | 16 => {
            let running = pick(rng, &world.executing).filter(|_| !rng.one_in(6));
            let Some((task, worker)) = running.or_else(|| pick(rng, &world.tasks)) else {
                return next_call(rng, world);
            };
            let param = RegisterModelsParam { models: vec![new_model(world.fresh(), task, "model")] };
            (or_caller(rng, worker), REGISTER_MODELS, param.encode_to_vec())
        }
        _ => {
            let running = pick(rng, &world.executing).filter(|_| !rng.one_in(4));
            let Some((task, worker)) = running.or_else(|| pick(rng, &world.tasks)) else {
                return next_call(rng, world);
            };
            let report = failure(task, FailedAssetKind::FailedAssetComputeTask, ErrorType::Execution);
            (or_caller(rng, worker), REGISTER_FAILURE_REPORT, report.encode_to_vec())
        }
    };
    (msp, channel, m, request)
}

/// Records what a call the standalone applied changed.
fn applied(world: &mut World, msp: &'static str, channel: &'static str, m: &str, request: &[u8]) {
    if m == method::REGISTER_ORGANIZATION {
        world.organizations.insert((msp, channel));
    }
    if channel != CHANNEL {
        return;
    }
    match m {
        method::REGISTER_DATA_MANAGER => {
            let n = orchestrator_proto::NewDataManager::decode(request).expect("request").key;
            world.data_managers.push((number(&n), msp));
        }
        method::REGISTER_DATA_SAMPLES => {
            for sample in RegisterDataSamplesParam::decode(request).expect("request").samples {
                for dm in &sample.data_manager_keys {
                    world.samples.entry(number(dm)).or_default().push(number(&sample.key));
                }
            }
        }
        method::REGISTER_FUNCTION => {
            let function = orchestrator_proto::NewFunction::decode(request).expect("request");
            world.functions.push((number(&function.key), msp, function.inputs.contains_key("opener"), 0));
        }
        method::APPLY_FUNCTION_ACTION => {
            let param = ApplyFunctionActionParam::decode(request).expect("request");
            let n = number(&param.function_key);
            world.functions.iter_mut().filter(|f| f.0 == n).for_each(|f| f.3 = param.action);
        }
        method::REGISTER_PLAN => {
            let n = orchestrator_proto::NewComputePlan::decode(request).expect("request").key;
            world.plans.push((number(&n), msp));
        }
        method::REGISTER_TASKS => {
            for task in RegisterTasksParam::decode(request).expect("request").tasks {
                // No explicit worker: the owner of the task's data manager works it.
                let dm = task.inputs.iter().find_map(|input| match (&input.identifier[..], &input.r#ref) {
                    ("opener", Some(orchestrator_proto::compute_task_input::Ref::AssetKey(dm))) => Some(number(dm)),
                    _ => None,
                });
                let worker = world.data_managers.iter().find(|d| Some(d.0) == dm).map_or(msp, |d| d.1);
                world.tasks.push((number(&task.key), worker));
            }
        }
        APPLY_TASK_ACTION => {
            let param = ApplyTaskActionParam::decode(request).expect("request");
            let n = number(&param.compute_task_key);
            world.executing.retain(|t| t.0 != n);
            if param.action == EXECUTING
                && let Some(task) = world.tasks.iter().find(|t| t.0 == n)
            {
                world.executing.push(*task);
            }
        }
        _ => {}
    }
}

/// The number of a [`key`].
fn number(key: &str) -> u64 {
    u64::from_str_radix(&key[24..], 16).expect("a scenario key")
}

/// The reads compared at the end of the workload.
fn final_reads() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut reads = Vec::new();
    for channel in [CHANNEL, OTHER_CHANNEL] {
        reads.push((channel, method::GET_ALL_ORGANIZATIONS, GetAllOrganizationsParam {}.encode_to_vec()));
    }
    reads.push((
        CHANNEL,
        QUERY_DATA_MANAGERS,
        QueryDataManagersParam { page_size: 500, ..Default::default() }.encode_to_vec(),
    ));
    reads.push((
        CHANNEL,
        method::QUERY_DATA_SAMPLES,
        QueryDataSamplesParam { page_size: 500, ..Default::default() }.encode_to_vec(),
    ));
    reads.push((
        CHANNEL,
        method::QUERY_FUNCTIONS,
        QueryFunctionsParam { page_size: 500, ..Default::default() }.encode_to_vec(),
    ));
    reads.push((CHANNEL, QUERY_PLANS, QueryPlansParam { page_size: 500, ..Default::default() }.encode_to_vec()));
    reads.push((
        CHANNEL,
        "orchestrator.ComputeTaskService/QueryTasks",
        QueryTasksParam { page_size: 500, ..Default::default() }.encode_to_vec(),
    ));
    reads
}

/// `(channel, channel position, event id, payload)` of every stored event.
async fn store(server: &TestServer) -> Vec<(String, i64, String, Vec<u8>)> {
    sqlx::query_as("SELECT channel, channel_position, event_id, payload FROM events ORDER BY channel, channel_position")
        .fetch_all(&server.pool)
        .await
        .expect("events")
}

/// The stored events of `channel`, in order.
async fn channel_events(server: &TestServer, channel: &str) -> Vec<Vec<u8>> {
    server.events().await.into_iter().filter(|row| row.channel == channel).map(|row| row.payload).collect()
}

/// A seeded workload of write calls from both organizations, each through its own
/// organization's facade and on standalone, one at a time: same answers, same events, and
/// both facades' event stores identical.
#[test]
fn seeded_workload_in_both_modes() {
    let Some(network) = shared_network() else { return };
    let seed = std::env::var("ORCHESTRATOR_PARITY_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("ORCHESTRATOR_PARITY_SEED: a number"))
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
            now.as_secs() ^ u64::from(now.subsec_nanos())
        });
    let calls = std::env::var("ORCHESTRATOR_PARITY_CALLS")
        .ok()
        .map(|s| s.parse::<u64>().expect("ORCHESTRATOR_PARITY_CALLS: a number"))
        .unwrap_or(PARITY_CALLS);
    println!("seeded workload: {calls} write calls, seed {seed} (replay: ORCHESTRATOR_PARITY_SEED={seed})");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let wire = Wire::new();
    runtime.block_on(async {
        let started = Instant::now();
        let facades = [facade(&network, 1, PARITY_CHAINCODE).await, facade(&network, 2, PARITY_CHAINCODE).await];
        let standalone = standalone().await;
        let facade_of = |msp: &str| if msp == ORG1 { &facades[0] } else { &facades[1] };
        let mut rng = Rng::new(seed);
        let mut world = World::default();
        let (mut applied_calls, mut refused) = (BTreeMap::<&str, u64>::new(), BTreeMap::<String, u64>::new());
        for n in 1..=calls {
            let (msp, channel, m, request) = next_call(&mut rng, &mut world);
            let path = format!("/{m}");
            let facade = facade_of(msp);
            // This facade's peer has committed every earlier call (possibly sent through the
            // other peer) before it endorses this one.
            catch_up(facade, &standalone).await.unwrap_or_else(|e| panic!("seed {seed}, before call {n}: {e}"));
            let expected = call(&standalone, msp, channel, &path, request.clone()).await;
            let got = call(facade, msp, channel, &path, request.clone()).await;
            if let Err(difference) = wire.compare(m, &expected, &got) {
                panic!("seed {seed}, call {n} ({m} as {msp} on {channel}): {difference}");
            }
            match &expected {
                Ok(_) => {
                    *applied_calls.entry(m.rsplit('/').next().unwrap_or(m)).or_default() += 1;
                    applied(&mut world, msp, channel, m, &request);
                }
                Err((code, _)) => *refused.entry(format!("{code:?}")).or_default() += 1,
            }
        }
        let accepted: u64 = applied_calls.values().sum();
        println!("{accepted} calls applied {applied_calls:?}, refused {refused:?}; {:.1?}", started.elapsed());
        assert!(accepted >= calls / 3, "seed {seed}: a third of the calls at least must apply ({accepted} of {calls})");

        // Same state read through each facade.
        for (facade, msp) in facades.iter().zip([ORG1, ORG2]) {
            catch_up(facade, &standalone).await.unwrap_or_else(|e| panic!("seed {seed}, at the end: {e}"));
            for (channel, m, request) in final_reads() {
                let path = format!("/{m}");
                let expected = call(&standalone, msp, channel, &path, request.clone()).await;
                let got = call(facade, msp, channel, &path, request).await;
                if let Err(difference) = wire.compare(m, &expected, &got) {
                    panic!("seed {seed}, final {m} on {channel} as {msp}: {difference}");
                }
            }
        }
        // Same events, channel by channel (each channel's listener stores its own in ledger
        // order), and identical stores.
        for channel in [CHANNEL, OTHER_CHANNEL] {
            let expected = wire.events(&channel_events(&standalone, channel).await);
            for (org, facade) in facades.iter().enumerate() {
                let got = wire.events(&channel_events(facade, channel).await);
                same_events(&format!("seed {seed}, {channel}, facade of org {}", org + 1), &expected, &got)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        let (one, two) = (store(&facades[0]).await, store(&facades[1]).await);
        assert!(!one.is_empty());
        assert!(
            one == two,
            "seed {seed}: both facades' event stores are identical ({} and {} rows)",
            one.len(),
            two.len()
        );
        println!("{} events alike in both modes and both stores; {:.1?} in all", one.len(), started.elapsed());
        let [one, two] = facades;
        for server in [one, two, standalone] {
            server.stop().await;
        }
    });
    drop(network);
}
