//! Distributed mode under faults, against a REAL Fabric 2.5 network (`scripts/fabric-net.sh`).
//!
//! - `killed_and_restarted_mid_workload`: the facade runs as the real `orchestrator` binary;
//!   several clients on both channels register data sample batches while the facade is
//!   SIGKILLed and restarted on the same database, then the chaincode server is SIGKILLed and
//!   restarted (same package id and address; the peers dial it again). Clients retry a failed
//!   batch, an ALREADY_EXISTS after an unclear failure telling them it had committed. Then:
//!   every acknowledged batch is on the ledger (read back through the facade), every batch is
//!   there exactly once; the facade's event store holds exactly the ledger's events (read
//!   straight from the peer's ChaincodeEvents from block 0: same ids and payloads in the same
//!   order, positions 1..n); a fresh facade on another database catches up to the same store.
//! - `ledger_conflicts_are_run_again`: TaskActionDone on the parents of one child task, all
//!   at once. Each Done reads the records of every parent of the child (to tell whether it is
//!   the last parent, which releases the child), and writes its own: two Dones endorsed on the
//!   same state conflict, and the later in block order commits as MVCC_READ_CONFLICT. With
//!   no retry budget some calls fail (UNAVAILABLE, "conflicted with concurrent ones",
//!   validation code 11); with a budget every call succeeds, the facade's
//!   `orc_db_transaction_total{outcome="rollback"}` counts the attempts run again, and the child
//!   is released once.
//!
//! Needs `FABRIC_BIN_DIR` (the `bin/` of a Fabric 2.5 release) and the `chaincode` and
//! `orchestrator` binaries (`cargo build -p orchestrator-host-fabric --bin chaincode -p
//! orchestrator-host-standalone --bin orchestrator`); without `FABRIC_BIN_DIR` each test says
//! it skipped. The tests take turns (one network at a time); on a 2-core machine about 30 s and
//! 15 s, under a minute together (network up in ~5 s, each write ~0.5 s of block time).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::network::Network;
use common::{Headers, Orchestrator, TestServer, facade};
use orchestrator_host_fabric::encoding::{self, EVENT_NAME};
use orchestrator_host_fabric::gateway::{GatewayClient, SigningIdentity};
use orchestrator_logic::testing::scenarios::computeplan::new_plan;
use orchestrator_logic::testing::scenarios::computetask::{
    AGG, DM1, PLAN, TRAIN, aggregate_function, aggregate_task, train_task,
};
use orchestrator_logic::testing::scenarios::{CHANNEL, ORG1, key, new_data_manager, new_data_sample, new_function};
use orchestrator_proto::compute_plan_service_client::ComputePlanServiceClient;
use orchestrator_proto::compute_task_service_client::ComputeTaskServiceClient;
use orchestrator_proto::data_manager_service_client::DataManagerServiceClient;
use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
use orchestrator_proto::function_service_client::FunctionServiceClient;
use orchestrator_proto::organization_service_client::OrganizationServiceClient;
use orchestrator_proto::{
    ApplyFunctionActionParam, ApplyTaskActionParam, ComputeTaskAction, ComputeTaskStatus, Event, FunctionAction,
    GetTaskParam, QueryDataSamplesParam, RegisterDataSamplesParam, RegisterOrganizationParam, RegisterTasksParam,
    event,
};
use prost::Message;
use sqlx::PgPool;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The tests take turns: one Fabric network at a time (ports and the machine's 2 cores).
static ONE_NETWORK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A test's own network, up once the other test's is down.
struct Turn {
    // Dropped first (fields drop in order): the network is down before the next test's turn.
    network: Network,
    _turn: tokio::sync::MutexGuard<'static, ()>,
    /// When the turn began (before the network came up).
    started: Instant,
}

impl std::ops::Deref for Turn {
    type Target = Network;

    fn deref(&self) -> &Network {
        &self.network
    }
}

/// Waits for this test's turn and brings its network up; `None` (said) without `FABRIC_BIN_DIR`.
async fn network_turn() -> Option<Turn> {
    let bin_dir = facade::fabric_bin_dir()?;
    let turn = ONE_NETWORK_AT_A_TIME.lock().await;
    let started = Instant::now();
    let network = Network::up(&bin_dir, &common::chaincode_binary().to_string_lossy());
    Some(Turn { network, _turn: turn, started })
}

const OTHER_CHANNEL: &str = "yourchannel";
/// How long the ledger (and a listener) may take to show what was committed.
const LEDGER_PATIENCE: Duration = Duration::from_secs(60);
/// A client call's deadline: above the facade's commit wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(90);
const REGISTER_DATA_SAMPLES: &str = "orchestrator.DataSampleService/RegisterDataSamples";

/// A database name of this test run; dropped with [`Databases`].
fn new_database_url() -> String {
    format!("{}/orch_test_{}", common::PG_SERVER, uuid::Uuid::new_v4().simple())
}

/// Databases dropped when the test ends (also when it panics).
struct Databases(Vec<String>);

impl Drop for Databases {
    fn drop(&mut self) {
        let urls = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                for url in urls {
                    let _ = rt.block_on(orchestrator_host_standalone::postgres::drop_database(&url));
                }
            }
        })
        .join();
    }
}

/// The environment of a facade of MyOrg1MSP in distributed mode (its peer, the wallet).
fn facade_env(network: &Network) -> Vec<(String, String)> {
    let mut env = facade::env(network, 1);
    for (name, value) in
        [("ORCHESTRATOR_AMQP_ENABLED", "false"), ("LOG_LEVEL", "info,orchestrator_host_standalone::distributed=debug")]
    {
        env.push((name.to_owned(), value.to_owned()));
    }
    env
}

async fn spawn_facade(db_url: &str, addr: Option<SocketAddr>, env: &[(String, String)], log: &Path) -> Orchestrator {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Orchestrator::spawn_with(db_url, addr, &env, Some(log)).await
}

/// A client channel to `addr` that connects on first use and again after the server is gone.
fn lazy_channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_TIMEOUT)
        .connect_lazy()
}

fn with_headers(channel: Channel, msp_id: &str, fabric_channel: &str) -> common::Client {
    InterceptedService::new(channel, Headers::new(&[("mspid", msp_id), ("channel", fabric_channel)]))
}

/// The Gateway client and identity of MyOrg1MSP, to read and write the ledger directly.
async fn ledger_reader(network: &Network) -> (GatewayClient, SigningIdentity) {
    let ca = network.file("ORCHESTRATOR_FABRIC_TLS_CA_CERT");
    let gateway = GatewayClient::connect(network.var("ORCHESTRATOR_FABRIC_PEER_ADDRESS"), Some(&ca), None)
        .await
        .expect("connect to the peer");
    let identity = SigningIdentity::from_wallet(&PathBuf::from(network.var("ORCHESTRATOR_FABRIC_WALLET")), ORG1)
        .expect("wallet identity");
    (gateway, identity)
}

/// Every orchestrator event of `channel` on the ledger, in ledger order, from block 0 through
/// block `through` (which must hold events).
async fn ledger_events(
    gateway: &GatewayClient,
    identity: &SigningIdentity,
    channel: &str,
    chaincode: &str,
    through: u64,
) -> Vec<Vec<u8>> {
    let stream = gateway.chaincode_events(identity, channel, chaincode, Some(0)).await.expect("ChaincodeEvents");
    tokio::pin!(stream);
    let mut events = Vec::new();
    loop {
        let block = tokio::time::timeout(LEDGER_PATIENCE, stream.next())
            .await
            .unwrap_or_else(|_| panic!("{channel}: no block after {LEDGER_PATIENCE:?} (want block {through})"))
            .unwrap_or_else(|| panic!("{channel}: the ledger's event stream ended before block {through}"))
            .expect("a block's events");
        for event in block.events.iter().filter(|event| event.event_name == EVENT_NAME) {
            events.extend(encoding::decode_events_payload(&event.payload).expect("chaincode-updates payload"));
        }
        if block.block_number >= through {
            return events;
        }
    }
}

/// One more write on `channel`, straight through the Gateway: the block it committed in.
async fn marker(gateway: &GatewayClient, identity: &SigningIdentity, channel: &str, chaincode: &str, n: u64) -> u64 {
    let request = common::new_samples(n, 1).encode_to_vec();
    let submitted = gateway
        .submit(identity, channel, chaincode, encoding::call_args(REGISTER_DATA_SAMPLES, &request), LEDGER_PATIENCE)
        .await
        .unwrap_or_else(|err| panic!("marker on {channel}: {err}"));
    submitted.block_number
}

async fn pool_of(db_url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(db_url).await.expect("pool")
}

/// Waits until the event store's checkpoint of `channel` reaches `block`.
async fn wait_for_checkpoint(pool: &PgPool, channel: &str, block: u64) {
    let deadline = Instant::now() + LEDGER_PATIENCE;
    loop {
        let stored: Option<i64> = sqlx::query_scalar("SELECT block FROM ledger_checkpoints WHERE channel = $1")
            .bind(channel)
            .fetch_optional(pool)
            .await
            .expect("checkpoint");
        if stored.is_some_and(|stored| stored >= i64::try_from(block).unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel}: checkpoint {stored:?} below block {block} after {LEDGER_PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(position, event id, payload)` of `channel`'s stored events, by position.
async fn stored_events(pool: &PgPool, channel: &str) -> Vec<(i64, String, Vec<u8>)> {
    sqlx::query_as(
        "SELECT channel_position, event_id, payload FROM events WHERE channel = $1 ORDER BY channel_position",
    )
    .bind(channel)
    .fetch_all(pool)
    .await
    .expect("events")
}

/// Every data sample key of the client's channel, through QueryDataSamples pages.
async fn listed_samples(client: common::Client) -> BTreeSet<String> {
    let mut samples = DataSampleServiceClient::new(client);
    let mut keys = BTreeSet::new();
    let mut token = String::new();
    loop {
        let param = QueryDataSamplesParam { page_token: token, page_size: 1_000, filter: None };
        let page = samples.query_data_samples(param).await.expect("QueryDataSamples").into_inner();
        for sample in page.data_samples {
            assert!(keys.insert(sample.key.clone()), "{} listed twice", sample.key);
        }
        if page.next_page_token.is_empty() {
            return keys;
        }
        token = page.next_page_token;
    }
}

// ---------------------------------------------------------------------------------------------
// Kill and restart mid-workload.

/// Samples per RegisterDataSamples batch.
const BATCH: u64 = 4;
/// How long one batch may keep failing (outages) before the test gives up.
const BATCH_PATIENCE: Duration = Duration::from_secs(90);
/// A client's pause after a failed attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Steady workload before, between and after the outages.
const PHASE: Duration = Duration::from_secs(5);

/// One call as a client saw it (times from the workload's start).
#[derive(Debug, Clone)]
struct Attempt {
    started: Duration,
    ended: Duration,
    result: Result<(), (Code, String)>,
}

/// What a client sent and learnt.
#[derive(Debug, Default)]
struct ClientLog {
    channel: &'static str,
    /// First sample number of each batch acknowledged OK.
    acknowledged: Vec<u64>,
    /// Batches whose retry found them registered (an earlier attempt committed, unacknowledged).
    committed_unacknowledged: Vec<u64>,
    attempts: Vec<Attempt>,
    /// Outcomes the facade must not give.
    unexpected: Vec<String>,
}

/// Whether a failure says the call left the ledger untouched.
fn said_not_applied(message: &str) -> bool {
    message.starts_with("the call was not applied")
}

/// Registers batches of [`BATCH`] samples numbered from `base` on `channel` until `stop`, each
/// until it is acknowledged or found registered.
async fn writer(addr: SocketAddr, channel: &'static str, base: u64, stop: Arc<AtomicBool>, t0: Instant) -> ClientLog {
    let mut client = DataSampleServiceClient::new(with_headers(lazy_channel(addr), ORG1, channel));
    let mut log = ClientLog { channel, ..Default::default() };
    let mut first = base;
    while !stop.load(Ordering::SeqCst) {
        let deadline = Instant::now() + BATCH_PATIENCE;
        let mut unclear = false;
        let mut tries = 0;
        loop {
            tries += 1;
            let started = t0.elapsed();
            let result = client.register_data_samples(common::new_samples(first, BATCH)).await;
            let result = result.map(drop).map_err(|status| (status.code(), status.message().to_owned()));
            log.attempts.push(Attempt { started, ended: t0.elapsed(), result: result.clone() });
            match result {
                Ok(()) => {
                    log.acknowledged.push(first);
                    break;
                }
                Err((Code::AlreadyExists, message)) if tries > 1 => {
                    if !unclear {
                        log.unexpected.push(format!(
                            "batch {first}: ALREADY_EXISTS ({message}) after failures that all said the call was \
                             not applied"
                        ));
                    }
                    log.committed_unacknowledged.push(first);
                    break;
                }
                Err((Code::Unavailable | Code::Unknown, message)) if Instant::now() < deadline => {
                    assert!(!message.is_empty(), "a failure without a message");
                    unclear |= !said_not_applied(&message);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err((code, message)) => {
                    log.unexpected.push(format!("batch {first}, try {tries}: {code:?}: {message}"));
                    break;
                }
            }
        }
        first += BATCH;
    }
    log
}

/// A failed attempt (a retry finding its batch registered is not one).
fn failed(attempt: &Attempt) -> bool {
    matches!(&attempt.result, Err((code, _)) if *code != Code::AlreadyExists)
}

/// The failures clients saw, by code and message (up to its first variable part), with counts.
fn failure_classes<'a>(attempts: impl Iterator<Item = &'a Attempt>) -> BTreeMap<String, usize> {
    let mut classes = BTreeMap::new();
    for attempt in attempts.filter(|attempt| failed(attempt)) {
        if let Err((code, message)) = &attempt.result {
            // Transaction ids and addresses differ from call to call.
            let short = message.split(" transaction ").next().unwrap_or_default();
            let short = short.split(" [").next().unwrap_or_default();
            *classes.entry(format!("{code:?}: {short}")).or_default() += 1;
        }
    }
    classes
}

/// What the clients saw from `from`: the attempts that failed from then until the first
/// acknowledgement of an attempt started after `from`, and how long after `from` that came.
fn outage(logs: &[ClientLog], from: Duration) -> (usize, Option<Duration>, BTreeMap<String, usize>) {
    let all = || logs.iter().flat_map(|log| log.attempts.iter());
    let recovered = all().filter(|a| a.started >= from && a.result.is_ok()).map(|a| a.ended).min();
    let until = recovered.unwrap_or(Duration::MAX);
    let failures: Vec<&Attempt> = all().filter(|a| failed(a) && a.ended >= from && a.started < until).collect();
    (failures.len(), recovered.map(|at| at - from), failure_classes(failures.into_iter()))
}

/// The first block a facade's listener of `channel` read from, per its log.
fn start_block(log: &Path, channel: &str) -> Option<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()).find_map(|line| {
        (line["message"] == "reading ledger events" && line["channel"] == channel)
            .then(|| line["start_block"].as_u64())
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_restarted_mid_workload() {
    let Some(network) = network_turn().await else { return };
    let started = network.started;
    let chaincode = network.chaincode().to_owned();
    let mut databases = Databases(Vec::new());
    let db_url = new_database_url();
    databases.0.push(db_url.clone());
    let env = facade_env(&network);
    let log_path = |name: &str| {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("distributed-faults-{}-{name}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    };
    let (first_log, restarted_log, fresh_log) = (log_path("facade"), log_path("restarted"), log_path("fresh"));
    println!("facade logs: {}, {}, {}", first_log.display(), restarted_log.display(), fresh_log.display());
    let mut facade = spawn_facade(&db_url, None, &env, &first_log).await;
    let addr = facade.addr;
    for channel in [CHANNEL, OTHER_CHANNEL] {
        common::register_org_and_data_manager(with_headers(lazy_channel(addr), ORG1, channel)).await;
    }

    // Six writers on mychannel, two on yourchannel, each with its own sample numbers.
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let channel = if w < 6 { CHANNEL } else { OTHER_CHANNEL };
            tokio::spawn(writer(addr, channel, 1_000_000 * (w + 1), Arc::clone(&stop), t0))
        })
        .collect();
    tokio::time::sleep(PHASE).await;

    // The facade: SIGKILL, down for a second, back on the same database and port.
    let facade_killed = t0.elapsed();
    facade.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    facade = spawn_facade(&db_url, Some(addr), &env, &restarted_log).await;
    let facade_back = t0.elapsed();
    tokio::time::sleep(PHASE).await;

    // The chaincode server: SIGKILL, down for a second, started again.
    let chaincode_killed = t0.elapsed();
    let killed_pid = tokio::task::block_in_place(|| network.kill_chaincode());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let listening_after = tokio::task::block_in_place(|| network.restart_chaincode());
    let chaincode_back = t0.elapsed();
    tokio::time::sleep(PHASE).await;

    stop.store(true, Ordering::SeqCst);
    let mut logs = Vec::new();
    for writer in writers {
        logs.push(writer.await.expect("writer"));
    }
    let workload = t0.elapsed();
    assert!(facade.running(), "the restarted facade is running");

    // What the clients saw.
    let attempts: usize = logs.iter().map(|log| log.attempts.len()).sum();
    let acknowledged: usize = logs.iter().map(|log| log.acknowledged.len()).sum();
    let unacknowledged: usize = logs.iter().map(|log| log.committed_unacknowledged.len()).sum();
    println!(
        "workload: {workload:.1?}, {attempts} calls, {acknowledged} batches acknowledged, {unacknowledged} committed \
         without acknowledgement (found by the client's retry)"
    );
    let unexpected: Vec<&String> = logs.iter().flat_map(|log| log.unexpected.iter()).collect();
    assert!(unexpected.is_empty(), "outcomes the facade must not give: {unexpected:#?}");
    let (failed, recovered, classes) = outage(&logs, facade_killed);
    println!(
        "facade SIGKILLed at {facade_killed:.1?}, serving again at {facade_back:.1?}: {failed} failed calls, first \
         acknowledgement {recovered:.1?} after the kill; {classes:#?}"
    );
    assert!(failed > 0, "the facade's outage failed no call: was it killed?");
    assert!(recovered.is_some(), "no call acknowledged after the facade's restart");
    let (failed, recovered, classes) = outage(&logs, chaincode_killed);
    println!(
        "chaincode server {killed_pid} SIGKILLed at {chaincode_killed:.1?}, listening again {listening_after:.1?} \
         after its restart ({chaincode_back:.1?}): {failed} failed calls, first acknowledgement {recovered:.1?} \
         after the kill; {classes:#?}"
    );
    assert!(failed > 0, "the chaincode's outage failed no call: was it killed?");
    assert!(recovered.is_some(), "no call acknowledged after the chaincode's restart");
    let all_classes = failure_classes(logs.iter().flat_map(|log| log.attempts.iter()));
    println!("every failure the clients saw: {all_classes:#?}");
    // The restarted facade went on from its checkpoint; the first one started from block 0.
    for channel in [CHANNEL, OTHER_CHANNEL] {
        assert_eq!(start_block(&first_log, channel), Some(0), "{channel}: the first facade's listener");
        let resumed = start_block(&restarted_log, channel);
        println!("{channel}: the restarted facade's listener resumed at block {resumed:?}");
        assert!(resumed.is_some_and(|block| block > 0), "{channel}: the restarted facade resumed at {resumed:?}");
    }

    // (a) Every acknowledged batch is on the ledger, read back through the facade; every batch
    // a client saw through (acknowledged or found registered) is there, nothing else.
    let (gateway, identity) = ledger_reader(&network).await;
    let marker_base = 9_000_000;
    let mut expected_samples: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for log in &logs {
        let expected = expected_samples.entry(log.channel).or_default();
        for first in log.acknowledged.iter().chain(&log.committed_unacknowledged) {
            expected.extend((*first..first + BATCH).map(common::uuid));
        }
    }
    let pool = pool_of(&db_url).await;
    let mut store = BTreeMap::new();
    let mut markers = BTreeMap::new();
    for (i, channel) in [CHANNEL, OTHER_CHANNEL].into_iter().enumerate() {
        let listed = listed_samples(with_headers(lazy_channel(addr), ORG1, channel)).await;
        for log in logs.iter().filter(|log| log.channel == channel) {
            for first in &log.acknowledged {
                for n in *first..first + BATCH {
                    assert!(
                        listed.contains(&common::uuid(n)),
                        "{channel}: acknowledged sample {n} is not on the ledger"
                    );
                }
            }
        }
        assert_eq!(&listed, &expected_samples[channel], "{channel}: the samples on the ledger");

        // (b) The event store holds exactly the ledger's events.
        let marker_n = marker_base + i as u64;
        let through = marker(&gateway, &identity, channel, &chaincode, marker_n).await;
        markers.insert(channel, through);
        let ledger = ledger_events(&gateway, &identity, channel, &chaincode, through).await;
        wait_for_checkpoint(&pool, channel, through).await;
        let stored = stored_events(&pool, channel).await;
        let positions: Vec<i64> = stored.iter().map(|(position, _, _)| *position).collect();
        assert_eq!(
            positions,
            (1..=i64::try_from(stored.len()).unwrap()).collect::<Vec<_>>(),
            "{channel}: positions 1..n"
        );
        let ledger_ids: Vec<String> =
            ledger.iter().map(|bytes| Event::decode(bytes.as_slice()).expect("event").id).collect();
        let stored_ids: Vec<String> = stored.iter().map(|(_, id, _)| id.clone()).collect();
        assert_eq!(
            stored_ids.iter().collect::<HashSet<_>>().len(),
            stored_ids.len(),
            "{channel}: an event id stored twice"
        );
        assert_eq!(stored_ids, ledger_ids, "{channel}: the store's events are the ledger's, in its order");
        let stored_payloads: Vec<&Vec<u8>> = stored.iter().map(|(_, _, payload)| payload).collect();
        assert!(stored_payloads.iter().copied().eq(ledger.iter()), "{channel}: stored payloads are the ledger's bytes");
        // One creation event per sample: setup (organization, data manager), the batches, the marker.
        let mut created: Vec<String> = ledger
            .iter()
            .map(|bytes| Event::decode(bytes.as_slice()).expect("event"))
            .filter(|e| e.asset_kind == orchestrator_proto::AssetKind::AssetDataSample as i32)
            .map(|e| e.asset_key)
            .collect();
        created.sort_unstable();
        let mut want: Vec<String> = expected_samples[channel].iter().cloned().collect();
        want.push(common::uuid(marker_n));
        want.sort_unstable();
        assert_eq!(created, want, "{channel}: one creation event per sample");
        println!("{channel}: {} events through block {through}, identical in the store", ledger.len());
        store.insert(channel, stored);
    }

    // (c) A fresh facade on another database catches up to the identical store.
    let fresh_url = new_database_url();
    databases.0.push(fresh_url.clone());
    let caught_up = Instant::now();
    let fresh = spawn_facade(&fresh_url, None, &env, &fresh_log).await;
    let fresh_pool = pool_of(&fresh_url).await;
    for channel in [CHANNEL, OTHER_CHANNEL] {
        wait_for_checkpoint(&fresh_pool, channel, markers[channel]).await;
        assert_eq!(stored_events(&fresh_pool, channel).await, store[channel], "{channel}: the fresh facade's store");
    }
    println!("a fresh facade caught up in {:.1?}", caught_up.elapsed());

    drop(fresh);
    drop(facade);
    pool.close().await;
    fresh_pool.close().await;
    drop(databases);
    drop(network);
    println!("test time: {:.1?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Ledger conflicts.

/// Parents per child task.
const FAN_IN: u64 = 6;
/// Child task of parents `CHILD_A + 1..=FAN_IN`, and of `CHILD_B + 1..=FAN_IN`.
const CHILD_A: u64 = 100;
const CHILD_B: u64 = 200;

/// A facade of MyOrg1MSP in this process, with `retry_budget` and its metrics endpoint.
async fn in_process_facade(network: &Network, retry_budget: Duration) -> TestServer {
    facade::start(network, 1, |config| {
        config.tx_retry_budget = retry_budget;
        config.metrics_enabled = true;
        config.metrics_addr = "127.0.0.1:0".parse().expect("address");
    })
    .await
}

/// `orc_db_transaction_total{method="orchestrator.<method>",outcome}` of the facade (0 when absent).
async fn transactions(server: &TestServer, method: &str, outcome: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.metrics_addr.expect("metrics on")).await.expect("connect");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    let prefix = format!("orc_db_transaction_total{{method=\"orchestrator.{method}\",outcome=\"{outcome}\"}} ");
    text.lines().find_map(|line| line.strip_prefix(&prefix)).map_or(0, |n| n.parse().expect("a count"))
}

/// Applies `action` to the tasks numbered `tasks`, all at once: each call's outcome.
async fn act_at_once(
    server: &TestServer,
    tasks: impl Iterator<Item = u64>,
    action: ComputeTaskAction,
) -> Vec<(u64, Result<(), tonic::Status>)> {
    let client = server.client(ORG1, CHANNEL).await;
    let calls: Vec<_> = tasks
        .map(|n| {
            let mut client = ComputeTaskServiceClient::new(client.clone());
            tokio::spawn(async move {
                let param =
                    ApplyTaskActionParam { compute_task_key: key(n), action: action as i32, log: String::new() };
                (n, client.apply_task_action(param).await.map(drop))
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.expect("call"));
    }
    outcomes
}

async fn task_status(server: &TestServer, n: u64) -> ComputeTaskStatus {
    let mut tasks = ComputeTaskServiceClient::new(server.client(ORG1, CHANNEL).await);
    let task = tasks.get_task(GetTaskParam { key: key(n) }).await.expect("GetTask").into_inner();
    ComputeTaskStatus::try_from(task.status).expect("a status")
}

/// Organization, data manager and sample, the train and aggregate functions, the plan; two
/// aggregate children of [`FAN_IN`] train parents each, every parent EXECUTING and both
/// children WAITING_FOR_PARENT_TASKS.
async fn two_fan_ins(server: &TestServer) {
    let client = server.client(ORG1, CHANNEL).await;
    OrganizationServiceClient::new(client.clone())
        .register_organization(RegisterOrganizationParam::default())
        .await
        .expect("RegisterOrganization");
    let dm_and_sample = {
        let client = client.clone();
        async move {
            DataManagerServiceClient::new(client.clone())
                .register_data_manager(new_data_manager(DM1))
                .await
                .expect("RegisterDataManager");
            let samples = RegisterDataSamplesParam { samples: vec![new_data_sample(20, &[key(DM1).as_str()])] };
            DataSampleServiceClient::new(client).register_data_samples(samples).await.expect("RegisterDataSamples");
        }
    };
    let mut functions = FunctionServiceClient::new(client.clone());
    let mut functions_2 = functions.clone();
    let mut plans = ComputePlanServiceClient::new(client.clone());
    let (_, train, aggregate, plan) = tokio::join!(
        dm_and_sample,
        functions.register_function(new_function(TRAIN)),
        functions_2.register_function(aggregate_function(AGG)),
        plans.register_plan(new_plan(PLAN)),
    );
    train.expect("RegisterFunction train");
    aggregate.expect("RegisterFunction aggregate");
    plan.expect("RegisterPlan");
    let mut tasks = Vec::new();
    for child in [CHILD_A, CHILD_B] {
        let parents: Vec<u64> = (child + 1..=child + FAN_IN).collect();
        tasks.extend(parents.iter().map(|p| train_task(*p, DM1, &[20], &[])));
        tasks.push(aggregate_task(child, ORG1, &parents));
    }
    ComputeTaskServiceClient::new(client.clone())
        .register_tasks(RegisterTasksParam { tasks })
        .await
        .expect("RegisterTasks");
    // Functions built: the parents wait for an executor, the children for their parents.
    for function in [TRAIN, AGG] {
        for action in [FunctionAction::Building, FunctionAction::Ready] {
            let param = ApplyFunctionActionParam { function_key: key(function), action: action as i32 };
            functions.apply_function_action(param).await.expect("ApplyFunctionAction");
        }
    }
    let parents = || (1..=FAN_IN).flat_map(|i| [CHILD_A + i, CHILD_B + i]);
    for (n, outcome) in act_at_once(server, parents(), ComputeTaskAction::TaskActionExecuting).await {
        outcome.unwrap_or_else(|status| panic!("Executing {n}: {status:?}"));
    }
    for child in [CHILD_A, CHILD_B] {
        assert_eq!(task_status(server, child).await, ComputeTaskStatus::StatusWaitingForParentTasks);
    }
}

/// The COMPUTE_TASK events of task `n` in the store with status `status`, once the store holds
/// at least `at_least` of them (the listener follows the ledger).
async fn task_events(server: &TestServer, n: u64, status: ComputeTaskStatus, at_least: usize) -> Vec<Event> {
    let deadline = Instant::now() + LEDGER_PATIENCE;
    loop {
        let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT payload FROM events WHERE channel = $1 AND asset_key = $2 ORDER BY channel_position",
        )
        .bind(CHANNEL)
        .bind(key(n))
        .fetch_all(&server.pool)
        .await
        .expect("events");
        let events: Vec<Event> = payloads
            .iter()
            .map(|p| Event::decode(p.as_slice()).expect("event"))
            .filter(|e| matches!(&e.asset, Some(event::Asset::ComputeTask(task)) if task.status == status as i32))
            .collect();
        if events.len() >= at_least {
            return events;
        }
        assert!(Instant::now() < deadline, "task {n}: {} events in {status:?} after {LEDGER_PATIENCE:?}", events.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_conflicts_are_run_again() {
    let Some(network) = network_turn().await else { return };
    let started = network.started;
    let patient = in_process_facade(&network, Duration::from_secs(30)).await;
    let hasty = in_process_facade(&network, Duration::ZERO).await;
    two_fan_ins(&patient).await;
    println!("setup done at {:.1?}", started.elapsed());
    const METHOD: &str = "ComputeTaskService/ApplyTaskAction";

    // No retry: the Dones of child A's parents conflict, the later ones fail and say so.
    let t = Instant::now();
    let outcomes = act_at_once(&hasty, (1..=FAN_IN).map(|i| CHILD_A + i), ComputeTaskAction::TaskActionDone).await;
    let elapsed = t.elapsed();
    let mut done = Vec::new();
    let mut conflicted = Vec::new();
    for (n, outcome) in outcomes {
        match outcome {
            Ok(()) => done.push(n),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "task {n}: {status:?}");
                assert!(status.message().contains("conflicted with concurrent ones"), "task {n}: {status:?}");
                assert!(status.message().contains("(validation code 11)"), "MVCC_READ_CONFLICT: {status:?}");
                conflicted.push((n, status.message().to_owned()));
            }
        }
    }
    println!(
        "without retries ({elapsed:.1?}): {} of {FAN_IN} Dones committed, {} conflicted, e.g. {:?}",
        done.len(),
        conflicted.len(),
        conflicted.first().map(|(_, message)| message)
    );
    assert!(!conflicted.is_empty(), "concurrent Dones on the parents of one child did not conflict");
    assert!(!done.is_empty(), "one of the concurrent Dones commits");
    let rolled_back = transactions(&hasty, METHOD, "rollback").await;
    assert_eq!(rolled_back, conflicted.len() as u64, "each failed call made one attempt");
    // Nothing half-applied: the conflicted parents still execute, the child still waits.
    for i in 1..=FAN_IN {
        let expected = if done.contains(&(CHILD_A + i)) {
            ComputeTaskStatus::StatusDone
        } else {
            ComputeTaskStatus::StatusExecuting
        };
        assert_eq!(task_status(&hasty, CHILD_A + i).await, expected, "parent {}", CHILD_A + i);
    }
    assert_eq!(task_status(&hasty, CHILD_A).await, ComputeTaskStatus::StatusWaitingForParentTasks);

    // With a budget: the same workload on child B's parents, every call succeeds.
    let rollbacks_before = transactions(&patient, METHOD, "rollback").await;
    let commits_before = transactions(&patient, METHOD, "commit").await;
    let t = Instant::now();
    let outcomes = act_at_once(&patient, (1..=FAN_IN).map(|i| CHILD_B + i), ComputeTaskAction::TaskActionDone).await;
    let elapsed = t.elapsed();
    for (n, outcome) in outcomes {
        outcome.unwrap_or_else(|status| panic!("Done {n} with a retry budget: {status:?}"));
    }
    let retried = transactions(&patient, METHOD, "rollback").await - rollbacks_before;
    let committed = transactions(&patient, METHOD, "commit").await - commits_before;
    println!(
        "with a 30s budget ({elapsed:.1?}): {committed} of {FAN_IN} Dones committed after {retried} conflicted attempts"
    );
    assert_eq!(committed, FAN_IN, "every Done committed");
    assert!(retried > 0, "the Dones conflicted, and were run again");
    for i in 1..=FAN_IN {
        assert_eq!(task_status(&patient, CHILD_B + i).await, ComputeTaskStatus::StatusDone);
    }
    // The last Done to commit saw every other parent DONE and released the child, once.
    assert_eq!(task_status(&patient, CHILD_B).await, ComputeTaskStatus::StatusWaitingForExecutorSlot);
    for i in 1..=FAN_IN {
        task_events(&patient, CHILD_B + i, ComputeTaskStatus::StatusDone, 1).await;
    }
    let released = task_events(&patient, CHILD_B, ComputeTaskStatus::StatusWaitingForExecutorSlot, 1).await;
    assert_eq!(released.len(), 1, "child released once: {released:?}");
    let reason = released[0].metadata.get("reason").cloned().unwrap_or_default();
    assert!(reason.starts_with("Last parent task "), "{reason}");
    println!("child {} released: {reason}", key(CHILD_B));

    hasty.stop().await;
    patient.stop().await;
    drop(network);
    println!("test time: {:.1?}", started.elapsed());
}
