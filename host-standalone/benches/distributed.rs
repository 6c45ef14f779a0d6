//! Distributed mode through the facade, on a real local Fabric network (`scripts/fabric-net.sh`
//! from `FABRIC_BIN_DIR`), beside the same calls in standalone mode and beside what the
//! network allows a trivial chaincode, in one run:
//!
//! 1. RegisterDataSamples, 100 samples per call, one client;
//! 2. the same, 8 concurrent clients;
//! 3. RegisterTasks, batches of 100 tasks into one plan (a DAG: parents 1 and 7 before), one
//!    client;
//! 4. ApplyTaskAction (EXECUTING then DONE), 8 concurrent clients on distinct tasks;
//! 5. GetTask (read-only: an Evaluate), 8 concurrent clients;
//!
//! then straight through the Gateway client the facade uses (`host-fabric/src/gateway.rs`),
//! on the same network:
//!
//! 6. a trivial chaincode (one blind write per transaction, `support/trivial_chaincode.rs`),
//!    submitted by 8 and by 64 concurrent clients, and evaluated by 8;
//! 7. QueryVersion submitted to the orchestrator chaincode (a transaction touching no state).
//!
//! Per workload and side: calls/s, p50 and p99 latency as the client sees them, and the ratio
//! standalone/distributed. Through Fabric, also the Gateway calls per call (Evaluate, Endorse,
//! Submit, CommitStatus: each one round trip to the peer, counted by the Gateway client,
//! `gateway::RoundTrips`) and the blocks the facade's ledger listener received.
//!
//! The facade (MyOrg1MSP's, in distributed mode) and the standalone server run in this process
//! as the tests start them, each on a fresh PostgreSQL database dropped at the end; the peers
//! run the release `chaincode` binary, which the bench builds first (`cargo bench -p
//! orchestrator-host-standalone` builds no other package's binary). Without `FABRIC_BIN_DIR` it
//! says it skipped. `DISTRIBUTED_BENCH_SCALE` (a float, default 1.0) scales the call counts.
//! About 2 minutes at scale 1 on 2 cores.
//!
//! `FABRIC_BIN_DIR=../shared/fabric/bin cargo bench -p orchestrator-host-standalone --bench distributed`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/trivial_chaincode.rs"]
mod trivial_chaincode;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::network::Network;
use common::{RawCaller, TestServer, facade, percentile};
use orchestrator_host_fabric::encoding;
use orchestrator_host_fabric::gateway::{GatewayClient, RoundTrips, SigningIdentity};
use orchestrator_logic::testing::scenarios::computetask::{DM1, TRAIN, train_task};
use orchestrator_logic::testing::scenarios::{
    CHANNEL, ORG1, ORG2, key, new_data_manager, new_data_sample, new_function,
};
use orchestrator_proto::{
    ApplyFunctionActionParam, ApplyTaskActionParam, ComputeTaskAction, FunctionAction, GetTaskParam, NewComputePlan,
    NewComputeTask, RegisterDataSamplesParam, RegisterOrganizationParam, RegisterTasksParam,
};
use prost::Message;

/// Scales the call counts (trial runs).
const SCALE_ENV: &str = "DISTRIBUTED_BENCH_SCALE";
/// Concurrent clients of the concurrent workloads.
const CLIENTS: usize = 8;
/// Clients of the network-capacity run of the trivial chaincode.
const MANY_CLIENTS: usize = 64;
/// Samples or tasks per call.
const BATCH: u64 = 100;
/// A client call's deadline: above the facade's commit wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// After a workload, before reading the counters: the ledger listener receives the last
/// block's events about when the last commit is answered.
const SETTLE: Duration = Duration::from_millis(500);

/// A function that is built (READY): its tasks wait for their parents or an executor slot.
const READY: u64 = 37;
const PLAN: u64 = 40;
const SAMPLES_ONE_BASE: u64 = 1_000_000;
const SAMPLES_MANY_BASE: u64 = 2_000_000;
const TASKS_BASE: u64 = 3_000_000;
const ACTION_BASE: u64 = 4_000_000;

const REGISTER_DATA_SAMPLES: &str = "DataSampleService/RegisterDataSamples";
const REGISTER_TASKS: &str = "ComputeTaskService/RegisterTasks";
const APPLY_TASK_ACTION: &str = "ComputeTaskService/ApplyTaskAction";
const GET_TASK: &str = "ComputeTaskService/GetTask";
/// The trivial chaincode's name (its own namespace) on [`CHANNEL`].
const TRIVIAL: &str = "trivial";

// ---------------------------------------------------------------------------------------------
// Clients.

/// One client connection to an orchestrator, as `msp` on [`CHANNEL`]; sends message bytes as
/// they are (the same bytes to both sides).
async fn caller(addr: SocketAddr, msp: &str) -> RawCaller {
    RawCaller::connect("orchestrator", addr, msp, CHANNEL, CALL_TIMEOUT).await
}

/// What one client saw: each call's latency and outcome.
type Log = Vec<(Duration, Result<(), String>)>;

/// The calls of one client, one after the other.
type Script = Vec<(&'static str, Vec<u8>)>;

async fn run_script(mut caller: RawCaller, script: Script) -> Log {
    let mut log = Vec::with_capacity(script.len());
    for (method, body) in script {
        let t = Instant::now();
        let result = caller.call(method, body).await;
        log.push((t.elapsed(), result.map(drop).map_err(|s| format!("{:?}: {}", s.code(), s.message()))));
    }
    log
}

/// Gateway calls of one client straight to a chaincode, one after the other: submitted
/// (Endorse, Submit, CommitStatus) or evaluated.
async fn run_gateway(
    gateway: GatewayClient,
    identity: SigningIdentity,
    chaincode: String,
    submit: bool,
    calls: Vec<Vec<Vec<u8>>>,
) -> Log {
    let mut log = Vec::with_capacity(calls.len());
    for args in calls {
        let t = Instant::now();
        let result = if submit {
            gateway.submit(&identity, CHANNEL, &chaincode, args, facade::GATEWAY_TIMEOUT).await.map(drop)
        } else {
            gateway.evaluate(&identity, CHANNEL, &chaincode, args).await.map(drop)
        };
        log.push((t.elapsed(), result.map_err(|e| e.to_string())));
    }
    log
}

/// One workload on one side.
struct Measured {
    ok: usize,
    wall: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    failures: BTreeMap<String, usize>,
    /// The Gateway calls of this process during the workload (none on the standalone side).
    trips: RoundTrips,
}

impl Measured {
    fn calls(&self) -> usize {
        self.latencies.len()
    }

    fn per_s(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64()
    }

    fn p(&self, q: f64) -> Duration {
        percentile(&self.latencies, q)
    }
}

/// Runs the clients at once (each already connected) and measures them.
async fn measure<F>(clients: Vec<F>) -> Measured
where
    F: Future<Output = Log> + Send + 'static,
{
    let before = RoundTrips::now();
    let started = Instant::now();
    let handles: Vec<_> = clients.into_iter().map(tokio::spawn).collect();
    let mut log = Vec::new();
    for handle in handles {
        log.extend(handle.await.expect("a client"));
    }
    let wall = started.elapsed();
    tokio::time::sleep(SETTLE).await;
    let trips = RoundTrips::now().since(&before);
    let mut failures = BTreeMap::new();
    for (_, result) in &log {
        if let Err(message) = result {
            // Transaction ids and keys differ from call to call: keep the kind.
            let kind: String = message.split(" transaction ").next().unwrap_or_default().chars().take(160).collect();
            *failures.entry(kind).or_insert(0) += 1;
        }
    }
    let mut latencies: Vec<Duration> = log.iter().map(|(d, _)| *d).collect();
    latencies.sort();
    Measured { ok: log.iter().filter(|(_, r)| r.is_ok()).count(), wall, latencies, failures, trips }
}

/// The scripts run by as many clients of `addr` (as MyOrg1MSP).
async fn orchestrator(addr: SocketAddr, scripts: &[Script]) -> Measured {
    let mut clients = Vec::with_capacity(scripts.len());
    for script in scripts {
        clients.push(run_script(caller(addr, ORG1).await, script.clone()));
    }
    measure(clients).await
}

/// `count` calls spread over `clients` scripts, call `i` made by `call(i)`.
fn spread(count: u64, clients: usize, call: impl Fn(u64) -> (&'static str, Vec<u8>)) -> Vec<Script> {
    let mut scripts = vec![Script::new(); clients];
    for i in 0..count {
        scripts[(i % clients as u64) as usize].push(call(i));
    }
    scripts
}

// ---------------------------------------------------------------------------------------------
// Requests (encoded once, sent to both sides).

fn samples(first: u64) -> Vec<u8> {
    let dm = key(DM1);
    let samples = (first..first + BATCH).map(|n| new_data_sample(n, &[dm.as_str()])).collect();
    RegisterDataSamplesParam { samples }.encode_to_vec()
}

/// Task `n` of [`PLAN`] on READY, a train task of DM1 (worker MyOrg1MSP) consuming the `model`
/// of `parents`.
fn task(n: u64, parents: &[u64]) -> NewComputeTask {
    let mut t = train_task(n, DM1, &[20], parents);
    t.compute_plan_key = key(PLAN);
    t.function_key = key(READY);
    t
}

/// Batch `b` of the DAG: tasks `TASKS_BASE + b * BATCH ..`, each a child of the tasks 1 and 7
/// before it.
fn task_batch(b: u64) -> Vec<u8> {
    let tasks = (b * BATCH..(b + 1) * BATCH)
        .map(|i| {
            let parents: Vec<u64> = [1, 7].iter().filter(|d| i >= **d).map(|d| TASKS_BASE + i - d).collect();
            task(TASKS_BASE + i, &parents)
        })
        .collect();
    RegisterTasksParam { tasks }.encode_to_vec()
}

fn action(n: u64, action: ComputeTaskAction) -> Vec<u8> {
    ApplyTaskActionParam { compute_task_key: key(n), action: action as i32, log: String::new() }.encode_to_vec()
}

/// Organizations, DM1 (MyOrg1MSP) with samples 20 and 21, TRAIN (WAITING) and READY (built),
/// the plan. Independent calls at once: through the facade each costs about a block time.
async fn setup(addr: SocketAddr) {
    let mut org1 = caller(addr, ORG1).await;
    let mut org2 = caller(addr, ORG2).await;
    let organization = RegisterOrganizationParam::default();
    tokio::join!(
        org1.must("OrganizationService/RegisterOrganization", &organization),
        org2.must("OrganizationService/RegisterOrganization", &organization),
    );
    let data = {
        let mut caller = org1.clone();
        async move {
            caller.must("DataManagerService/RegisterDataManager", &new_data_manager(DM1)).await;
            let dm = key(DM1);
            let samples = [20, 21].iter().map(|s| new_data_sample(*s, &[dm.as_str()])).collect();
            caller.must(REGISTER_DATA_SAMPLES, &RegisterDataSamplesParam { samples }).await;
        }
    };
    let ready = {
        let mut caller = org1.clone();
        async move {
            caller.must("FunctionService/RegisterFunction", &new_function(READY)).await;
            for action in [FunctionAction::Building, FunctionAction::Ready] {
                let param = ApplyFunctionActionParam { function_key: key(READY), action: action as i32 };
                caller.must("FunctionService/ApplyFunctionAction", &param).await;
            }
        }
    };
    let mut train = org1.clone();
    let train_function = new_function(TRAIN);
    let plan = NewComputePlan { key: key(PLAN), name: format!("plan {PLAN}"), ..Default::default() };
    tokio::join!(
        data,
        ready,
        train.must("FunctionService/RegisterFunction", &train_function),
        org1.must("ComputePlanService/RegisterPlan", &plan),
    );
}

// ---------------------------------------------------------------------------------------------
// Output.

fn fmt_rate(r: f64) -> String {
    if r >= 100.0 { format!("{r:.0}") } else { format!("{r:.1}") }
}

/// The Gateway calls per call, e.g. `3.00 (Endorse 1.00, Submit 1.00, CommitStatus 1.00)`.
fn per_call(m: &Measured) -> String {
    let n = m.calls().max(1) as f64;
    let t = &m.trips;
    let mut parts = Vec::new();
    for (name, count) in
        [("Evaluate", t.evaluate), ("Endorse", t.endorse), ("Submit", t.submit), ("CommitStatus", t.commit_status)]
    {
        if count > 0 {
            parts.push(format!("{name} {:.2}", count as f64 / n));
        }
    }
    format!("{:.2} ({})", t.calls() as f64 / n, parts.join(", "))
}

fn print_side(side: &str, m: &Measured) {
    println!(
        "  {side:<12} {:>7} calls/s  p50 {:>9}  p99 {:>9}  ({} ok of {} in {})",
        fmt_rate(m.per_s()),
        common::fmt_duration(m.p(0.5)),
        common::fmt_duration(m.p(0.99)),
        m.ok,
        m.calls(),
        common::fmt_duration(m.wall),
    );
    if m.trips.calls() > 0 {
        println!(
            "  {:<12} Gateway calls per call {}; {} blocks of events received",
            "",
            per_call(m),
            m.trips.event_blocks
        );
    }
    for (kind, n) in &m.failures {
        println!("  {:<12} {n} failed: {kind}", "");
    }
}

/// One line of the closing table.
struct Row {
    workload: String,
    fabric: Measured,
    standalone: Option<Measured>,
}

fn report(rows: &mut Vec<Row>, workload: String, fabric: Measured, standalone: Option<Measured>) {
    println!("{workload}");
    let fabric_side = if standalone.is_some() { "distributed" } else { "Fabric" };
    print_side(fabric_side, &fabric);
    if let Some(standalone) = &standalone {
        print_side("standalone", standalone);
        println!(
            "  standalone/distributed: {:.1}x the calls/s, p50 latency {:.1}x lower",
            standalone.per_s() / fabric.per_s(),
            fabric.p(0.5).as_secs_f64() / standalone.p(0.5).as_secs_f64(),
        );
    }
    println!();
    rows.push(Row { workload, fabric, standalone });
}

fn print_table(rows: &[Row]) {
    println!(
        "| workload | through Fabric: calls/s | p50 | p99 | Gateway calls per call | standalone: calls/s | p50 | p99 | standalone/distributed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let f = &row.fabric;
        let failed = if f.ok < f.calls() { format!(" ({} failed)", f.calls() - f.ok) } else { String::new() };
        let standalone = row.standalone.as_ref().map_or_else(
            || "| | | | ".to_owned(),
            |s| {
                format!(
                    "| {} | {} | {} | **{:.1}x** ",
                    fmt_rate(s.per_s()),
                    common::fmt_duration(s.p(0.5)),
                    common::fmt_duration(s.p(0.99)),
                    s.per_s() / f.per_s()
                )
            },
        );
        println!(
            "| {} | {}{failed} | {} | {} | {} {standalone}|",
            row.workload,
            fmt_rate(f.per_s()),
            common::fmt_duration(f.p(0.5)),
            common::fmt_duration(f.p(0.99)),
            per_call(f),
        );
    }
}

// ---------------------------------------------------------------------------------------------

fn scale() -> f64 {
    match std::env::var(SCALE_ENV) {
        Ok(value) => match value.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => s,
            _ => panic!("{SCALE_ENV}={value}: expected a positive number"),
        },
        Err(_) => 1.0,
    }
}

/// `n` scaled, at least `min`.
fn scaled(n: u64, scale: f64, min: u64) -> u64 {
    ((n as f64 * scale).round() as u64).max(min)
}

/// The release `chaincode` binary, built (or found up to date) first: `cargo bench -p
/// orchestrator-host-standalone` builds no other package's binaries, and a stale or debug
/// chaincode would skew every figure.
fn release_chaincode() -> PathBuf {
    let exe = std::env::current_exe().expect("bench executable");
    let target_dir = exe.ancestors().nth(3).expect("<target>/release/deps/<bench>");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "orchestrator-host-fabric", "--bin", "chaincode", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --release -p orchestrator-host-fabric --bin chaincode: {status}");
    common::chaincode_binary()
}

/// The machine's load averages (other jobs share it).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "?".to_owned(), |text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(bin_dir) = facade::fabric_bin_dir() else { return };
    let scale = scale();
    let run_started = Instant::now();
    println!(
        "distributed mode through the facade vs standalone, local Fabric network from {bin_dir}{}; load average {}",
        if scale == 1.0 { String::new() } else { format!(", {SCALE_ENV}={scale}") },
        load()
    );
    let chaincode = release_chaincode();
    let network = tokio::task::block_in_place(|| Network::up(&bin_dir, &chaincode.to_string_lossy()));
    let distributed = facade::start(&network, 1, |_| {}).await;
    let standalone = TestServer::start().await;
    let setup_started = Instant::now();
    tokio::join!(setup(distributed.addr), setup(standalone.addr));
    println!("setup on both sides in {}", common::fmt_duration(setup_started.elapsed()));
    println!();
    let sides = [distributed.addr, standalone.addr];
    let mut rows = Vec::new();

    // 1, 2. RegisterDataSamples batches: one client, then 8.
    let n = scaled(10, scale, 1);
    let scripts = spread(n, 1, |i| (REGISTER_DATA_SAMPLES, samples(SAMPLES_ONE_BASE + i * BATCH)));
    let [fabric, alone] = run_both(sides, &scripts).await;
    report(
        &mut rows,
        format!("RegisterDataSamples ({BATCH} samples per call), 1 client, {n} calls"),
        fabric,
        Some(alone),
    );

    let n = scaled(32, scale, CLIENTS as u64);
    let scripts = spread(n, CLIENTS, |i| (REGISTER_DATA_SAMPLES, samples(SAMPLES_MANY_BASE + i * BATCH)));
    let [fabric, alone] = run_both(sides, &scripts).await;
    report(
        &mut rows,
        format!("RegisterDataSamples ({BATCH} samples per call), {CLIENTS} clients, {n} calls"),
        fabric,
        Some(alone),
    );

    // 3. RegisterTasks batches into one plan, one client (batches depend on earlier ones).
    let n = scaled(10, scale, 1);
    let scripts = spread(n, 1, |b| (REGISTER_TASKS, task_batch(b)));
    let [fabric, alone] = run_both(sides, &scripts).await;
    report(
        &mut rows,
        format!("RegisterTasks ({BATCH} tasks per call, one plan), 1 client, {n} calls"),
        fabric,
        Some(alone),
    );

    // 4. ApplyTaskAction on tasks without parents (waiting for an executor slot), by their
    //    worker: EXECUTING then DONE, each client on its own tasks.
    let tasks = scaled(96, scale, CLIENTS as u64);
    for side in sides {
        let mut caller = caller(side, ORG1).await;
        for first in (0..tasks).step_by(BATCH as usize) {
            let batch = (first..tasks.min(first + BATCH)).map(|i| task(ACTION_BASE + i, &[])).collect();
            caller.must(REGISTER_TASKS, &RegisterTasksParam { tasks: batch }).await;
        }
    }
    let mut scripts = vec![Script::new(); CLIENTS];
    for i in 0..tasks {
        let script = &mut scripts[(i % CLIENTS as u64) as usize];
        for step in [ComputeTaskAction::TaskActionExecuting, ComputeTaskAction::TaskActionDone] {
            script.push((APPLY_TASK_ACTION, action(ACTION_BASE + i, step)));
        }
    }
    let [fabric, alone] = run_both(sides, &scripts).await;
    report(
        &mut rows,
        format!("ApplyTaskAction (EXECUTING, DONE) on {tasks} tasks, {CLIENTS} clients, {} calls", tasks * 2),
        fabric,
        Some(alone),
    );

    // 5. Reads of those tasks, after one unmeasured round per side: the first concurrent
    //    reads open the server's read connections (a stall of 100-200 ms on standalone).
    let get = |i: u64| (GET_TASK, GetTaskParam { key: key(ACTION_BASE + i % tasks) }.encode_to_vec());
    run_both(sides, &spread(CLIENTS as u64, CLIENTS, get)).await;
    let n = scaled(200, scale, CLIENTS as u64);
    let scripts = spread(n, CLIENTS, get);
    let [fabric, alone] = run_both(sides, &scripts).await;
    report(&mut rows, format!("GetTask (Evaluate), {CLIENTS} clients, {n} calls"), fabric, Some(alone));

    // 6, 7. What the network allows: the same Gateway client, straight to a chaincode.
    let trivial = trivial_chaincode::deploy(&network, TRIVIAL, CHANNEL).await;
    let peer = network.peer(1);
    let ca = std::fs::read(&peer.tls_ca_cert).expect("the peer's TLS CA");
    let gateway = GatewayClient::connect(&peer.address, Some(&ca), None).await.expect("connect to the peer");
    let identity = SigningIdentity::from_wallet(&network.wallet(), ORG1).expect("MyOrg1MSP's user");
    // The peer dials the chaincode on its first transaction: not measured.
    let warm_up =
        run_gateway(gateway.clone(), identity.clone(), TRIVIAL.to_owned(), true, vec![vec![b"warm".to_vec()]]);
    if let Some((_, Err(error))) = warm_up.await.pop() {
        panic!("the trivial chaincode's first transaction: {error}");
    }
    let gateway_run = |clients: usize, per_client: u64, chaincode: &str, submit: bool, args: Vec<Vec<u8>>| {
        let calls: Vec<_> = (0..clients)
            .map(|_| {
                let calls = (0..per_client).map(|_| args.clone()).collect();
                run_gateway(gateway.clone(), identity.clone(), chaincode.to_owned(), submit, calls)
            })
            .collect();
        measure(calls)
    };
    let per_client = scaled(24, scale, 1);
    let m = gateway_run(CLIENTS, per_client, TRIVIAL, true, vec![b"put".to_vec()]).await;
    let what = format!(
        "trivial chaincode (one blind write), submitted, {CLIENTS} clients, {} tx",
        per_client * CLIENTS as u64
    );
    report(&mut rows, what, m, None);
    let many = scaled(5, scale, 1);
    let m = gateway_run(MANY_CLIENTS, many, TRIVIAL, true, vec![b"put".to_vec()]).await;
    let what = format!("trivial chaincode, submitted, {MANY_CLIENTS} clients, {} tx", many * MANY_CLIENTS as u64);
    report(&mut rows, what, m, None);
    let n = scaled(25, scale, 1);
    let m = gateway_run(CLIENTS, n, TRIVIAL, false, vec![b"get".to_vec()]).await;
    report(
        &mut rows,
        format!("trivial chaincode, evaluated, {CLIENTS} clients, {} calls", n * CLIENTS as u64),
        m,
        None,
    );
    let query_version = encoding::call_args("orchestrator.InfoService/QueryVersion", &[]);
    let m = gateway_run(CLIENTS, per_client, network.chaincode(), true, query_version).await;
    let what = format!(
        "orchestrator chaincode, QueryVersion submitted (no state), {CLIENTS} clients, {} tx",
        per_client * CLIENTS as u64
    );
    report(&mut rows, what, m, None);
    drop(trivial);

    print_table(&rows);
    println!();
    println!("whole run: {}; load average {}", common::fmt_duration(run_started.elapsed()), load());
    distributed.stop().await;
    standalone.stop().await;
    tokio::task::block_in_place(|| drop(network));
}

/// The scripts on the facade, then on the standalone server.
async fn run_both(sides: [SocketAddr; 2], scripts: &[Script]) -> [Measured; 2] {
    let fabric = orchestrator(sides[0], scripts).await;
    let standalone = orchestrator(sides[1], scripts).await;
    [fabric, standalone]
}
