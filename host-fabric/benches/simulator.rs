//! Chaincode transactions per second through the peer simulator (endorsement over the chaincode
//! stream on a local socket + validation and commit of a one-transaction block), and the peer
//! round trips (state requests) each transaction costs:
//! - RegisterDataSamples, 100 samples per transaction;
//! - RegisterTasks, 100 tasks per transaction (one chain across all batches, on a READY function);
//! - the logic version's reads every transaction makes (docs/modes.md §3.7): QueryVersion
//!   evaluated (a call with no state of its own) and RegisterDataSamples, on a channel without
//!   an activation, then after one (the version compiled: a cache hit).
//!
//! `cargo bench -p orchestrator-host-fabric --bench simulator` (a few seconds).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, clippy::print_stdout, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::FabricDriver;
use orchestrator_fabric_testing::{Identity, IssueIdentity, SimProposal, StateRequests, ValidationCode};
use orchestrator_host_fabric::admin;
use orchestrator_host_fabric::encoding;
use orchestrator_host_fabric::fabric::orchestrator_fabric::{ActivateLogic, LogicVersion};
use orchestrator_logic::error::{ErrorKind, LogicError};
use orchestrator_logic::testing::Driver;
use orchestrator_logic::testing::scenarios::computetask::{DM1, TRAIN, make_ready, setup_world, train_task};
use orchestrator_logic::testing::scenarios::{CHANNEL, ORG1, key, method, new_data_sample};
use orchestrator_proto::Event;
use orchestrator_proto::{QueryVersionParam, RegisterDataSamplesParam, RegisterTasksParam};
use orchestrator_runtime::{BackendError, BoxFuture, Context, MemoryBackend, Runtime, StateBackend, StateEntry};
use prost::Message;

const QUERY_VERSION: &str = "orchestrator.InfoService/QueryVersion";
/// Items (samples or tasks) per transaction.
const BATCH: u64 = 100;
/// Stop a measurement after this many transactions or this long, whichever comes first.
const MAX_TXS: u64 = 40;
const MAX_TIME: Duration = Duration::from_secs(3);

/// Runs `request(i)` for i = 0.. as ORG1 until the limits; prints throughput and round trips.
fn measure(d: &mut FabricDriver, name: &str, what: &str, method: &str, mut request: impl FnMut(u64) -> Vec<u8>) {
    let mut total = StateRequests::default();
    let mut busy = Duration::ZERO;
    let mut txs = 0;
    while txs < MAX_TXS && busy < MAX_TIME {
        let bytes = request(txs);
        let started = Instant::now();
        let (endorsement, code) = d.transact(ORG1, CHANNEL, method, &bytes);
        busy += started.elapsed();
        assert_eq!(endorsement.response.status, 200, "{name}: {}", endorsement.response.message);
        assert_eq!(code, Some(ValidationCode::Valid));
        total += endorsement.state_requests;
        txs += 1;
    }
    let per_tx = |n: u64| n as f64 / txs as f64;
    let seconds = busy.as_secs_f64();
    println!(
        "{name:<22} {txs:>3} tx in {seconds:6.2} s: {:8.1} tx/s, {:9.0} {what}/s, {:7.2} ms/tx",
        txs as f64 / seconds,
        (txs * BATCH) as f64 / seconds,
        1_000.0 * seconds / txs as f64,
    );
    println!(
        "{:<22} round trips per tx: {:.1} ({:.2} per {what}); GET_STATE {:.1}, GET_STATE_METADATA {:.1}, \
         GET_STATE_BY_RANGE {:.1}, QUERY_STATE_NEXT {:.1}, QUERY_STATE_CLOSE {:.1}, PUT_STATE {:.1}, DEL_STATE {:.1}, \
         other {:.1}",
        "",
        per_tx(total.total()),
        per_tx(total.total()) / BATCH as f64,
        per_tx(total.get_state),
        per_tx(total.get_state_metadata),
        per_tx(total.get_state_by_range),
        per_tx(total.query_state_next),
        per_tx(total.query_state_close),
        per_tx(total.put_state),
        per_tx(total.del_state),
        per_tx(total.other),
    );
}

/// The standalone host's side of the same invocations: the component over an in-memory state
/// whose every backend call is counted. host-standalone's PostgreSQL backend answers each backend
/// call (a batch of keys, or a range) with one SQL statement, then flushes all writes and events
/// in one statement between BEGIN and COMMIT: round trips = backend calls + 3 (+0 flush when
/// nothing is written).
struct StandaloneCount {
    rt: tokio::runtime::Runtime,
    runtime: Runtime,
    states: BTreeMap<String, MemoryBackend>,
    calls: Arc<AtomicU64>,
    events: Vec<Event>,
    n: u64,
}

struct Counting {
    inner: MemoryBackend,
    calls: Arc<AtomicU64>,
}

impl StateBackend for Counting {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>, BackendError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.get_many(keys)
    }

    fn scan<'a>(
        &'a mut self,
        start: &'a str,
        end: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StateEntry>, BackendError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.scan(start, end, limit)
    }
}

impl StandaloneCount {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        Self {
            rt,
            runtime: common::runtime(),
            states: BTreeMap::new(),
            calls: Arc::default(),
            events: Vec::new(),
            n: 0,
        }
    }

    /// Runs one call; returns the SQL round trips the standalone host would make.
    fn round_trips(
        &mut self,
        msp: &str,
        channel: &str,
        method: &str,
        request: &[u8],
    ) -> (u64, Result<Vec<u8>, LogicError>) {
        self.n += 1;
        let ctx = Context {
            msp_id: msp.to_owned(),
            channel: channel.to_owned(),
            tx_id: format!("standalone-{}", self.n),
            tx_time_micros: 1_700_000_000_000_000 + i64::try_from(self.n).unwrap_or_default() * 1_000,
        };
        let state = self.states.entry(channel.to_owned()).or_default().clone();
        let before = self.calls.load(Ordering::Relaxed);
        let backend = Counting { inner: state.clone(), calls: Arc::clone(&self.calls) };
        let invocation = self.rt.block_on(self.runtime.invoke(&ctx, method, request, backend)).outcome.expect("invoke");
        let reads = self.calls.load(Ordering::Relaxed) - before;
        match invocation.result {
            Ok(response) => {
                let flush = u64::from(!(invocation.writes.is_empty() && invocation.events.is_empty()));
                state.apply(&invocation.writes);
                self.events.extend(invocation.events.iter().map(|e| Event::decode(e.as_slice()).expect("event")));
                (reads + flush + 2, Ok(response))
            }
            Err(err) => {
                let kind = ErrorKind::from_message(&err.message).unwrap_or(ErrorKind::Unknown);
                (reads + 2, Err(LogicError { kind, message: err.message }))
            }
        }
    }
}

impl Driver for StandaloneCount {
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, LogicError> {
        self.round_trips(msp, channel, method, request).1
    }

    fn events(&self) -> Vec<Event> {
        self.events.clone()
    }
}

fn samples_request(tx: u64) -> Vec<u8> {
    let dm = key(DM1);
    let first = 1_000_000 + tx * BATCH;
    let samples = (first..first + BATCH).map(|n| new_data_sample(n, &[dm.as_str()])).collect();
    RegisterDataSamplesParam { samples }.encode_to_vec()
}

/// One chain: each task's parent is the previous one (the first has none).
const FIRST_TASK: u64 = 10_000_000;

fn tasks_request(tx: u64) -> Vec<u8> {
    let first = FIRST_TASK + tx * BATCH;
    let tasks = (first..first + BATCH)
        .map(|n| {
            let parents: Vec<u64> = if n == FIRST_TASK { Vec::new() } else { vec![n - 1] };
            train_task(n, DM1, &[20], &parents)
        })
        .collect();
    RegisterTasksParam { tasks }.encode_to_vec()
}

/// QueryVersion evaluated `EVALUATIONS` times: ms per evaluation and its round trips.
fn measure_evaluations(d: &mut FabricDriver, name: &str) {
    const EVALUATIONS: u32 = 500;
    let request = QueryVersionParam {}.encode_to_vec();
    let mut total = StateRequests::default();
    let started = Instant::now();
    for _ in 0..EVALUATIONS {
        let (endorsement, code) = d.transact(ORG1, CHANNEL, QUERY_VERSION, &request);
        assert_eq!((endorsement.response.status, code), (200, None), "{}", endorsement.response.message);
        total += endorsement.state_requests;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{name:<40} {EVALUATIONS} evaluations: {:6.3} ms each; round trips each: GET_STATE {}, GET_STATE_METADATA {}",
        1_000.0 * elapsed / f64::from(EVALUATIONS),
        total.get_state / u64::from(EVALUATIONS),
        total.get_state_metadata / u64::from(EVALUATIONS),
    );
}

/// Activates on [`CHANNEL`], as MyOrg1MSP's admin, the embedded component with a custom section
/// appended (another sha256, the same code).
fn activate_variant(d: &mut FabricDriver) -> String {
    let component = orchestrator_fabric_testing::component::variant(b"bench");
    let request = ActivateLogic { component, sha256: String::new() }.encode_to_vec();
    let admin = Identity::admin(ORG1).expect("admin identity");
    let proposal = SimProposal::new(CHANNEL, common::CHAINCODE, &admin, encoding::call_args(admin::ACTIVATE, &request));
    let started = Instant::now();
    let (endorsement, code) = d.rt.block_on(d.peer(CHANNEL).submit(&d.cc, &proposal)).expect("activate");
    assert_eq!((endorsement.response.status, code), (200, ValidationCode::Valid), "{}", endorsement.response.message);
    let version = LogicVersion::decode(endorsement.response.payload.as_slice()).expect("LogicVersion");
    println!(
        "activation of {} (first compilation of the version included): {:.0} ms",
        version.sha256,
        started.elapsed().as_secs_f64() * 1_000.0
    );
    version.sha256
}

fn main() {
    let mut d = FabricDriver::new();
    setup_world(&mut d);
    make_ready(&mut d, TRAIN);
    println!("peer simulator + chaincode over a local socket, {BATCH} items per transaction");
    measure(&mut d, "RegisterDataSamples", "sample", method::REGISTER_DATA_SAMPLES, samples_request);
    measure(&mut d, "RegisterTasks", "task", method::REGISTER_TASKS, tasks_request);

    // The reads of the logic version (docs/modes.md §3.7), without then with an activation,
    // each on about the same ledger (the store grows with every measurement).
    measure_evaluations(&mut d, "QueryVersion, no activation");
    measure(&mut d, "RegisterDataSamples, no activation", "sample", method::REGISTER_DATA_SAMPLES, |tx| {
        samples_request(500 + tx)
    });
    activate_variant(&mut d);
    measure_evaluations(&mut d, "QueryVersion, after an activation");
    // Sample numbers after the first measurement's.
    measure(&mut d, "RegisterDataSamples, activated", "sample", method::REGISTER_DATA_SAMPLES, |tx| {
        samples_request(1_000 + tx)
    });

    // The same invocations on the standalone host: database round trips per transaction.
    let mut s = StandaloneCount::new();
    setup_world(&mut s);
    make_ready(&mut s, TRAIN);
    for (name, method, request) in [
        ("RegisterDataSamples", method::REGISTER_DATA_SAMPLES, samples_request as fn(u64) -> Vec<u8>),
        ("RegisterTasks", method::REGISTER_TASKS, tasks_request),
    ] {
        let txs = 10u64;
        let mut total = 0;
        for tx in 0..txs {
            let (trips, result) = s.round_trips(ORG1, CHANNEL, method, &request(tx));
            result.expect(name);
            total += trips;
        }
        println!(
            "{name:<22} standalone host, same invocations: {:.1} database round trips per tx (BEGIN, one statement per batch of keys or range, one flush, COMMIT)",
            total as f64 / txs as f64
        );
    }
}
