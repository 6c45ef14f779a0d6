//! Ours next to the reference Substra orchestrator (Go, 1.0.0) on the same local PostgreSQL, in
//! one run: every workload runs on our server (in-process), then on the reference (a child
//! process started with its `run.sh`), each on a fresh database, with the same request bytes.
//!
//! 1. 10,000 RegisterTasks calls of one task each into one plan, every task consuming the `model`
//!    output of the same parent train task (the shape of upstream's e2e `TestLargeComputePlan`);
//! 2. 10,000 tasks (a DAG) in batches of 1,000 into one plan, then QueryTasks of 5,000 tasks;
//! 3. ApplyTaskAction (EXECUTING then DONE) with 8 concurrent clients;
//! 4. 1,000 live events (RegisterDataSamples) delivered to 10 SubscribeToEvents streams;
//! 5. 16 concurrent writers x 25 single-task RegisterTasks into one plan, retry budget 500ms.
//!
//! The reference is looked for in `../shared/reference` next to the repository, or in
//! `ORCHESTRATOR_REFERENCE_DIR`; absent, only our side runs. `REFERENCE_BENCH_SCALE` (a float,
//! default 1.0) scales the task, action and event counts, for trial runs;
//! `REFERENCE_BENCH_WORKLOADS` (e.g. `2,3`) runs only the workloads listed.
//!
//! `cargo bench -p orchestrator-host-standalone --bench reference`

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{RawCaller, TestServer, percentile};
use orchestrator_host_standalone::postgres;
use orchestrator_logic::testing::scenarios::computetask::{DM1, DM2, TRAIN, train_task};
use orchestrator_logic::testing::scenarios::{
    CHANNEL, ORG1, ORG2, key, new_data_manager, new_data_sample, new_function, private_permissions,
};
use orchestrator_proto::{
    ApplyFunctionActionParam, ApplyTaskActionParam, ComputeTaskAction, FunctionAction, NewComputePlan, NewComputeTask,
    QueryEventsParam, QueryEventsResponse, QueryTasksParam, QueryTasksResponse, QueryVersionParam,
    RegisterDataSamplesParam, RegisterOrganizationParam, RegisterTasksParam, SortOrder, TaskQueryFilter,
};
use prost::Message;
use tonic::Status;

/// Directory of the reference (README.md, run.sh, bin/orchestrator), overriding the default.
const REFERENCE_DIR_ENV: &str = "ORCHESTRATOR_REFERENCE_DIR";
const DEFAULT_REFERENCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference");
/// Scales the counts of the workloads (trial runs).
const SCALE_ENV: &str = "REFERENCE_BENCH_SCALE";

/// Comma-separated workload numbers to run (all when unset).
const WORKLOADS_ENV: &str = "REFERENCE_BENCH_WORKLOADS";

/// Transaction retry budget of workloads 1-4, both sides (the default of both).
const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
/// Transaction retry budget of the 16-writer workload, both sides (upstream's CI value).
const CONTENTION_BUDGET: Duration = Duration::from_millis(500);
/// Long enough for any one call of the workloads: a call that takes longer is a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// A function that is built (READY): its tasks wait for their parents or for an executor slot.
/// TRAIN stays WAITING: its tasks wait for a builder slot.
const READY: u64 = 37;
/// The plan of every workload (each runs on a fresh database).
const PLAN: u64 = 40;

const LARGE_PLAN_CALLS: u64 = 10_000;
const LARGE_PLAN_PARENT: u64 = 1_000_000;
const BATCHED_TASKS: u64 = 10_000;
const BATCH: u64 = 1_000;
const BATCHED_BASE: u64 = 2_000_000;
const QUERIED_TASKS: u64 = 5_000;
const QUERY_REPEATS: usize = 5;
/// The reference's run.sh connects with `sslmode=disable`; both sides and the floors do the same.
const NO_TLS: &str = "?sslmode=disable";
const ACTION_TASKS: u64 = 800;
const ACTION_CLIENTS: usize = 8;
const ACTION_BASE: u64 = 3_000_000;
const LIVE_EVENTS: u64 = 1_000;
const SAMPLES_PER_CALL: u64 = 100;
const STREAMS: usize = 10;
const SAMPLE_BASE: u64 = 4_000_000;
const WRITERS: u64 = 16;
const CALLS_PER_WRITER: u64 = 25;
const WRITERS_PARENT: u64 = 5_000_000;

const REGISTER_TASKS: &str = "ComputeTaskService/RegisterTasks";
const QUERY_TASKS: &str = "ComputeTaskService/QueryTasks";
const APPLY_TASK_ACTION: &str = "ComputeTaskService/ApplyTaskAction";
const REGISTER_DATA_SAMPLES: &str = "DataSampleService/RegisterDataSamples";

// ---------------------------------------------------------------------------------------------
// The clients: the same calls, on either side, by address.

// ---------------------------------------------------------------------------------------------
// The two sides.

enum Backend {
    Ours(TestServer),
    Reference(ReferenceServer),
}

/// One running orchestrator on a fresh database.
struct Side {
    name: &'static str,
    addr: SocketAddr,
    backend: Backend,
}

impl Side {
    /// Our server, in-process, with the bundled channel configuration.
    async fn ours(budget: Duration) -> Self {
        let server = TestServer::start_with(|c| {
            c.channel_config = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/channels.yaml").into());
            c.tx_retry_budget = budget;
            // As the reference's run.sh connects: no TLS on loopback.
            c.database_url.push_str(NO_TLS);
        })
        .await;
        Self { name: "ours", addr: server.addr, backend: Backend::Ours(server) }
    }

    /// The reference, as a child process.
    async fn reference(dir: &Path, budget: Duration, tag: &str) -> Self {
        let (server, addr) = ReferenceServer::start(dir, budget, tag).await;
        Self { name: "reference", addr, backend: Backend::Reference(server) }
    }

    async fn caller(&self, msp: &str) -> RawCaller {
        RawCaller::connect(self.name, self.addr, msp, CHANNEL, CALL_TIMEOUT).await
    }

    async fn stop(self) {
        match self.backend {
            Backend::Ours(server) => server.stop().await,
            Backend::Reference(server) => server.stop().await,
        }
    }
}

/// The reference server: `run.sh PORT DBNAME` (which creates the database, migrates it and
/// execs the Go binary), logs to a file.
struct ReferenceServer {
    child: std::process::Child,
    db_url: String,
    log: PathBuf,
    stopped: bool,
}

/// A port `p` such that `p` and `p + 1000` (the reference's metrics) are both free now.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        if port > 64_000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 1000)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of ports");
}

/// The last lines of a log file (for failures).
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl ReferenceServer {
    async fn start(dir: &Path, budget: Duration, tag: &str) -> (Self, SocketAddr) {
        let port = free_port_pair();
        let db = format!("orch_ref_{}", uuid::Uuid::new_v4().simple());
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("reference-{tag}.log"));
        let file = std::fs::File::create(&log).expect("reference log file");
        let child = std::process::Command::new(dir.join("run.sh"))
            .arg(port.to_string())
            .arg(&db)
            .env("RESET_DB", "1")
            .env("LOG_LEVEL", "WARN")
            .env("ORCHESTRATOR_TX_RETRY_BUDGET", format!("{}ms", budget.as_millis()))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", dir.join("run.sh").display()));
        let mut server = Self { child, db_url: format!("{}/{db}", common::PG_SERVER), log, stopped: false };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        server.wait_ready(addr).await;
        (server, addr)
    }

    /// Waits until the gRPC port accepts and QueryVersion answers.
    async fn wait_ready(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("reference status") {
                panic!("reference exited ({status}) before serving; log {}:\n{}", self.log.display(), tail(&self.log));
            }
            assert!(
                Instant::now() < deadline,
                "reference not serving on {addr} after 60 s; log {}:\n{}",
                self.log.display(),
                tail(&self.log)
            );
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let mut caller = RawCaller::connect("reference", addr, ORG1, CHANNEL, CALL_TIMEOUT).await;
                if caller.call("InfoService/QueryVersion", QueryVersionParam::default().encode_to_vec()).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL after 10 s; then drops the database.
    async fn stop(mut self) {
        self.stopped = true;
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().expect("reference status").is_none() {
            if Instant::now() >= deadline {
                eprintln!("reference: no exit 10 s after SIGTERM, killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        postgres::drop_database(&self.db_url).await.expect("drop the reference's database");
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        // A panic before `stop`: kill the server and drop its database anyway.
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let url = self.db_url.clone();
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    let _ = rt.block_on(postgres::drop_database(&url));
                }
            })
            .join();
        }
    }
}

/// Where the reference is, or `None` (said once) when it is absent.
fn locate_reference() -> Option<PathBuf> {
    let dir = std::env::var_os(REFERENCE_DIR_ENV).map_or_else(|| PathBuf::from(DEFAULT_REFERENCE_DIR), PathBuf::from);
    if dir.join("bin/orchestrator").is_file() && dir.join("run.sh").is_file() {
        Some(dir.canonicalize().unwrap_or(dir))
    } else {
        println!("reference: not found at {}, skipping the reference side", dir.display());
        None
    }
}

/// Runs `run` on a fresh server of ours, then on a fresh reference (when there is one).
async fn on_both<R>(
    reference: Option<&Path>,
    tag: &str,
    budget: Duration,
    run: impl AsyncFn(&Side) -> R,
) -> (R, Option<R>) {
    let side = Side::ours(budget).await;
    let ours = run(&side).await;
    side.stop().await;
    let theirs = match reference {
        Some(dir) => {
            let side = Side::reference(dir, budget, tag).await;
            let theirs = run(&side).await;
            side.stop().await;
            Some(theirs)
        }
        None => None,
    };
    (ours, theirs)
}

// ---------------------------------------------------------------------------------------------
// Requests (encoded once, sent to both sides).

/// Task `n` of [`PLAN`] on `function`: a train task on DM1 (worker MyOrg1MSP) with sample 20,
/// consuming the `model` output of `parents`.
fn task(n: u64, function: u64, parents: &[u64]) -> NewComputeTask {
    let mut t = train_task(n, DM1, &[20], parents);
    t.compute_plan_key = key(PLAN);
    t.function_key = key(function);
    t
}

fn register_tasks(tasks: Vec<NewComputeTask>) -> Vec<u8> {
    RegisterTasksParam { tasks }.encode_to_vec()
}

/// Organizations, DM1 (MyOrg1MSP) and DM2 (MyOrg2MSP) with two samples each, TRAIN (WAITING),
/// READY (built), and the plan [`PLAN`].
async fn setup(side: &Side) {
    for org in [ORG1, ORG2] {
        side.caller(org)
            .await
            .must("OrganizationService/RegisterOrganization", &RegisterOrganizationParam::default())
            .await;
    }
    for (n, owner, samples) in [(DM1, ORG1, [20, 21]), (DM2, ORG2, [22, 23])] {
        let mut caller = side.caller(owner).await;
        let mut dm = new_data_manager(n);
        dm.logs_permission = Some(private_permissions(&[]));
        caller.must("DataManagerService/RegisterDataManager", &dm).await;
        let dm_key = key(n);
        let samples = samples.iter().map(|s| new_data_sample(*s, &[dm_key.as_str()])).collect();
        caller.must(REGISTER_DATA_SAMPLES, &RegisterDataSamplesParam { samples }).await;
    }
    let mut caller = side.caller(ORG1).await;
    caller.must("FunctionService/RegisterFunction", &new_function(TRAIN)).await;
    caller.must("FunctionService/RegisterFunction", &new_function(READY)).await;
    for action in [FunctionAction::Building, FunctionAction::Ready] {
        let param = ApplyFunctionActionParam { function_key: key(READY), action: action as i32 };
        caller.must("FunctionService/ApplyFunctionAction", &param).await;
    }
    let plan = NewComputePlan { key: key(PLAN), name: format!("plan {PLAN}"), ..Default::default() };
    caller.must("ComputePlanService/RegisterPlan", &plan).await;
}

// ---------------------------------------------------------------------------------------------
// Failures, deduplicated.

/// Whether `s` is a UUID (8-4-4-4-12 hex digits).
fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter()
            .enumerate()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

/// `message` with its UUIDs replaced by `<key>` (so that failures deduplicate), cut at 240 chars.
fn normalize(message: &str) -> String {
    let bytes = message.as_bytes();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < bytes.len() {
        if i + 36 <= bytes.len() && is_uuid(&bytes[i..i + 36]) {
            out.push_str("<key>");
            i += 36;
        } else {
            let c = message[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    if out.chars().count() > 240 {
        out = out.chars().take(240).collect::<String>() + "…";
    }
    out
}

#[derive(Default)]
struct Failures {
    count: usize,
    kinds: BTreeMap<String, usize>,
}

impl Failures {
    fn add(&mut self, status: &Status) {
        self.count += 1;
        *self.kinds.entry(format!("{:?}: {}", status.code(), normalize(status.message()))).or_default() += 1;
    }

    fn merge(&mut self, other: Self) {
        self.count += other.count;
        for (kind, n) in other.kinds {
            *self.kinds.entry(kind).or_default() += n;
        }
    }

    /// One line per distinct failure, when there are any.
    fn print(&self, side: &str, what: &str) {
        if self.count == 0 {
            return;
        }
        println!("  {side:<9} {} {what} failed:", self.count);
        for (kind, n) in &self.kinds {
            println!("              {n:>5} x {kind}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workloads.

/// Workload 1: single-task RegisterTasks calls, one client, one after the other.
struct Sequential {
    total: Duration,
    calls: Vec<Duration>,
    failures: Failures,
}

async fn large_plan(side: &Side, parent: &[u8], calls: &[Vec<u8>]) -> Sequential {
    setup(side).await;
    let mut caller = side.caller(ORG1).await;
    caller.call(REGISTER_TASKS, parent.to_vec()).await.unwrap_or_else(|s| panic!("{}: parent task: {s:?}", side.name));
    let mut latencies = Vec::with_capacity(calls.len());
    let mut failures = Failures::default();
    let started = Instant::now();
    for body in calls {
        let t = Instant::now();
        let result = caller.call(REGISTER_TASKS, body.clone()).await;
        latencies.push(t.elapsed());
        if let Err(status) = result {
            failures.add(&status);
        }
    }
    Sequential { total: started.elapsed(), calls: latencies, failures }
}

/// The floors of workload 1 on this machine, one client, `n` calls one after the other:
/// - `sql`: the least a durable write costs, one PostgreSQL transaction per call writing one
///   row of `row_bytes` (BEGIN, INSERT, COMMIT: three round trips and one WAL flush), over TCP
///   with NODELAY like our pool;
/// - `grpc`: the least a call costs, QueryVersion on our server (no transaction).
struct Floors {
    sql: Sequential,
    grpc: Sequential,
}

async fn floors(n: usize, row_bytes: usize) -> Floors {
    use sqlx::Connection as _;
    let url = format!("{}/orch_floor_{}{NO_TLS}", common::PG_SERVER, uuid::Uuid::new_v4().simple());
    postgres::create_database_if_missing(&url).await.expect("create the floor database");
    let mut db = sqlx::PgConnection::connect(&url).await.expect("floor db");
    postgres::nodelay::set_on(&mut db).await.expect("TCP_NODELAY");
    sqlx::query("CREATE TABLE floor (id bigint PRIMARY KEY, value bytea NOT NULL)")
        .execute(&mut db)
        .await
        .expect("table");
    let value = vec![7u8; row_bytes];
    let mut sql = Sequential { total: Duration::ZERO, calls: Vec::with_capacity(n), failures: Failures::default() };
    let started = Instant::now();
    for id in 0..n {
        let t = Instant::now();
        let mut tx = db.begin().await.expect("begin");
        sqlx::query("INSERT INTO floor (id, value) VALUES ($1, $2)")
            .bind(i64::try_from(id).unwrap_or(i64::MAX))
            .bind(&value)
            .execute(&mut *tx)
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
        sql.calls.push(t.elapsed());
    }
    sql.total = started.elapsed();
    db.close().await.ok();
    postgres::drop_database(&url).await.ok();

    let side = Side::ours(DEFAULT_BUDGET).await;
    let mut caller = side.caller(ORG1).await;
    let mut grpc = Sequential { total: Duration::ZERO, calls: Vec::with_capacity(n), failures: Failures::default() };
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        if let Err(status) = caller.call("InfoService/QueryVersion", Vec::new()).await {
            grpc.failures.add(&status);
        }
        grpc.calls.push(t.elapsed());
    }
    grpc.total = started.elapsed();
    side.stop().await;
    Floors { sql, grpc }
}

/// Workload 2: batched RegisterTasks, then QueryTasks.
struct Batched {
    batches: Vec<Duration>,
    queries: Vec<Duration>,
    returned: usize,
    failures: Failures,
}

async fn batched(side: &Side, batches: &[Vec<u8>], query: &[u8]) -> Batched {
    setup(side).await;
    let mut caller = side.caller(ORG1).await;
    let mut failures = Failures::default();
    let mut times = Vec::with_capacity(batches.len());
    for body in batches {
        let t = Instant::now();
        let result = caller.call(REGISTER_TASKS, body.clone()).await;
        times.push(t.elapsed());
        if let Err(status) = result {
            failures.add(&status);
        }
    }
    let mut queries = Vec::with_capacity(QUERY_REPEATS);
    let mut returned = 0;
    for _ in 0..QUERY_REPEATS {
        let t = Instant::now();
        let result = caller.call(QUERY_TASKS, query.to_vec()).await;
        queries.push(t.elapsed());
        match result {
            Ok(bytes) => returned = QueryTasksResponse::decode(bytes).expect("QueryTasksResponse").tasks.len(),
            Err(status) => failures.add(&status),
        }
    }
    Batched { batches: times, queries, returned, failures }
}

/// Workloads 3 and 5: concurrent clients, each sending its calls one after the other.
struct Concurrent {
    wall: Duration,
    ok: usize,
    latencies: Vec<Duration>,
    failures: Failures,
}

/// Runs `prepare` (once, as MyOrg1MSP), then one client per element of `per_client`, at the same
/// time, each sending its bodies to `method` in order.
async fn concurrent(side: &Side, prepare: &[u8], method: &'static str, per_client: &[Vec<Vec<u8>>]) -> Concurrent {
    setup(side).await;
    side.caller(ORG1)
        .await
        .call(REGISTER_TASKS, prepare.to_vec())
        .await
        .unwrap_or_else(|s| panic!("{}: preparing tasks: {s:?}", side.name));
    let mut callers = Vec::with_capacity(per_client.len());
    for _ in per_client {
        callers.push(side.caller(ORG1).await);
    }
    let started = Instant::now();
    let handles: Vec<_> = callers
        .into_iter()
        .zip(per_client.iter().cloned())
        .map(|(mut caller, bodies)| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(bodies.len());
                let mut failures = Failures::default();
                for body in bodies {
                    let t = Instant::now();
                    let result = caller.call(method, body).await;
                    latencies.push(t.elapsed());
                    if let Err(status) = result {
                        failures.add(&status);
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = Failures::default();
    for handle in handles {
        let (l, f) = handle.await.expect("client task");
        latencies.extend(l);
        failures.merge(f);
    }
    let wall = started.elapsed();
    latencies.sort();
    Concurrent { wall, ok: latencies.len() - failures.count, latencies, failures }
}

/// Workload 4: live events to streams.
struct Fanout {
    /// From the first write until every stream had every event.
    elapsed: Duration,
    delivered: usize,
    failures: Failures,
}

async fn fanout(side: &Side, writes: &[Vec<u8>], expected: usize) -> Fanout {
    setup(side).await;
    let mut caller = side.caller(ORG1).await;
    let last = QueryEventsParam { page_size: 1, sort: SortOrder::Descending as i32, ..Default::default() };
    let last = QueryEventsResponse::decode(caller.must("EventService/QueryEvents", &last).await).expect("events");
    let last = last.events.first().expect("a last event").id.clone();
    let mut streams = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        streams.push(side.caller(ORG1).await);
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream_caller| {
            let last = last.clone();
            tokio::spawn(async move {
                let mut stream = stream_caller.subscribe(&last).await?;
                let mut received = 0;
                while received < expected {
                    match stream.message().await? {
                        Some(_) => received += 1,
                        None => return Err(Status::unknown(format!("stream ended after {received} events"))),
                    }
                }
                Ok::<_, Status>((received, Instant::now()))
            })
        })
        .collect();
    // The streams open first. A grpc-go server may hold a stream's response headers back until its
    // first message, so the client cannot await the subscription: it gives it a second (nothing is
    // lost either way, the streams start after the last event before the writes).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut failures = Failures::default();
    let started = Instant::now();
    for body in writes {
        if let Err(status) = caller.call(REGISTER_DATA_SAMPLES, body.clone()).await {
            failures.add(&status);
        }
    }
    let mut delivered = 0;
    let mut done = started;
    for mut reader in readers {
        let result = tokio::time::timeout(Duration::from_secs(60), &mut reader).await;
        reader.abort();
        match result {
            Ok(Ok(Ok((received, at)))) => {
                delivered += received;
                done = done.max(at);
            }
            Ok(Ok(Err(status))) => failures.add(&status),
            Ok(Err(e)) => panic!("{}: stream reader: {e}", side.name),
            Err(_) => failures.add(&Status::deadline_exceeded("a stream lacked events 60 s after the writes")),
        }
    }
    Fanout { elapsed: done - started, delivered, failures }
}

// ---------------------------------------------------------------------------------------------
// Output.

/// `n` with thousands separators: 10,000.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn sorted(d: &[Duration]) -> Vec<Duration> {
    let mut d = d.to_vec();
    d.sort();
    d
}

fn median(d: &[Duration]) -> Duration {
    percentile(&sorted(d), 0.5)
}

/// `speedup` (ours over the reference) as "N x faster" or "N x slower", next to the goal if any.
fn ratio_text(speedup: f64, goal: Option<f64>) -> String {
    let goal = goal.map_or_else(String::new, |goal| {
        format!(" (goal {goal}x: {})", if speedup >= goal { "met" } else { "not met" })
    });
    if speedup >= 1.0 { format!("{speedup:.1}x faster{goal}") } else { format!("{:.1}x slower{goal}", 1.0 / speedup) }
}

fn print_ratio(what: &str, speedup: Option<f64>, goal: f64) {
    match speedup {
        Some(s) => println!("  ratio     {what}{}", ratio_text(s, Some(goal))),
        None => println!("  reference (skipped)"),
    }
}

fn print_sequential(side: &str, r: &Sequential) {
    let s = sorted(&r.calls);
    println!(
        "  {side:<9} total {:<8}  p50 {}  p90 {}  p99 {}  max {}",
        common::fmt_duration(r.total),
        common::fmt_duration(percentile(&s, 0.5)),
        common::fmt_duration(percentile(&s, 0.9)),
        common::fmt_duration(percentile(&s, 0.99)),
        common::fmt_duration(s[s.len() - 1]),
    );
    let tenth = r.calls.len().div_ceil(10).max(1);
    let per: Vec<String> = r.calls.chunks(tenth).map(|c| format!("{:.2}", median(c).as_secs_f64() * 1e3)).collect();
    let label = if tenth == 1_000 { "per thousand".to_owned() } else { format!("per {tenth} calls") };
    println!("            {label} p50 (ms): {}", per.join(" "));
    r.failures.print(side, "calls");
}

fn print_batched(side: &str, r: &Batched) {
    let total: Duration = r.batches.iter().sum();
    let queries: Vec<String> = r.queries.iter().map(|d| common::fmt_duration(*d)).collect();
    println!(
        "  {side:<9} register total {:<8} (p50 {}/batch)   QueryTasks p50 {}  min {}  ({} tasks returned; runs: {})",
        common::fmt_duration(total),
        common::fmt_duration(median(&r.batches)),
        common::fmt_duration(median(&r.queries)),
        common::fmt_duration(*r.queries.iter().min().expect("queries")),
        r.returned,
        queries.join(", "),
    );
    r.failures.print(side, "calls");
}

fn actions_per_s(r: &Concurrent) -> f64 {
    r.ok as f64 / r.wall.as_secs_f64()
}

fn print_actions(side: &str, r: &Concurrent) {
    println!(
        "  {side:<9} {:>6.0} actions/s  ({} actions in {}; per action p50 {}  p99 {})",
        actions_per_s(r),
        r.ok,
        common::fmt_duration(r.wall),
        common::fmt_duration(percentile(&r.latencies, 0.5)),
        common::fmt_duration(percentile(&r.latencies, 0.99)),
    );
    r.failures.print(side, "actions");
}

fn deliveries_per_s(r: &Fanout) -> f64 {
    r.delivered as f64 / r.elapsed.as_secs_f64()
}

fn print_fanout(side: &str, r: &Fanout) {
    println!(
        "  {side:<9} all delivered {:<8} after the first write  {:>7.0} deliveries/s  ({} deliveries)",
        common::fmt_duration(r.elapsed),
        deliveries_per_s(r),
        r.delivered,
    );
    r.failures.print(side, "calls or streams");
}

fn print_writers(side: &str, r: &Concurrent) {
    println!(
        "  {side:<9} wall {:<8}  {} calls ok, {} failed  (per call p50 {}  p99 {}  max {})",
        common::fmt_duration(r.wall),
        r.ok,
        r.failures.count,
        common::fmt_duration(percentile(&r.latencies, 0.5)),
        common::fmt_duration(percentile(&r.latencies, 0.99)),
        common::fmt_duration(r.latencies[r.latencies.len() - 1]),
    );
    r.failures.print(side, "calls");
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

/// The workloads to run: those of `REFERENCE_BENCH_WORKLOADS`, or all five.
fn selected_workloads() -> Vec<u32> {
    match std::env::var(WORKLOADS_ENV) {
        Ok(value) => value
            .split(',')
            .map(|w| match w.trim().parse::<u32>() {
                Ok(n @ 1..=5) => n,
                _ => panic!("{WORKLOADS_ENV}={value}: expected workload numbers from 1 to 5, comma-separated"),
            })
            .collect(),
        Err(_) => (1..=5).collect(),
    }
}

/// `n` scaled, at least `min`.
fn scaled(n: u64, scale: f64, min: u64) -> u64 {
    ((n as f64 * scale).round() as u64).max(min)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scale = scale();
    let reference = locate_reference();
    let reference = reference.as_deref();
    let run_started = Instant::now();
    println!(
        "ours vs the reference orchestrator (Go 1.0.0), PostgreSQL on 127.0.0.1, fresh database per workload and side{}",
        if scale == 1.0 { String::new() } else { format!(", {SCALE_ENV}={scale}") }
    );
    if let Some(dir) = reference {
        println!("reference: {} (logs in {})", dir.display(), env!("CARGO_TARGET_TMPDIR"));
    }
    println!();

    let workloads = selected_workloads();
    if workloads.contains(&1) {
        // 1. TestLargeComputePlan: single-task calls, children of one train task (on TRAIN, which is
        //    not built: the parent waits for a builder slot, its children for their parent).
        let n = scaled(LARGE_PLAN_CALLS, scale, 10);
        let parent = register_tasks(vec![task(LARGE_PLAN_PARENT, TRAIN, &[])]);
        let calls: Vec<Vec<u8>> =
            (1..=n).map(|i| register_tasks(vec![task(LARGE_PLAN_PARENT + i, TRAIN, &[LARGE_PLAN_PARENT])])).collect();
        let (ours, theirs) = on_both(reference, "large_plan", DEFAULT_BUDGET, async |side: &Side| {
            large_plan(side, &parent, &calls).await
        })
        .await;
        println!(
            "1. {} single-task RegisterTasks into one plan (children of one train task), one client",
            thousands(n)
        );
        print_sequential("ours", &ours);
        if let Some(theirs) = &theirs {
            print_sequential("reference", theirs);
        }
        print_ratio("total ", theirs.as_ref().map(|t| t.total.as_secs_f64() / ours.total.as_secs_f64()), 10.0);
        // What no implementation can go below here: a durable transaction and a gRPC round trip.
        let floors = floors(calls.len(), calls[0].len()).await;
        print_sequential("floor SQL", &floors.sql);
        print_sequential("floor gRPC", &floors.grpc);
        assert_eq!(floors.grpc.failures.count, 0, "the gRPC floor's calls must succeed");
        let floor = floors.sql.total + floors.grpc.total;
        let over_floors = ours.total.as_secs_f64() / floor.as_secs_f64();
        match &theirs {
            Some(t) => println!(
                "  ours / (SQL + gRPC floors) {over_floors:.2}x; the floors allow at most {:.1}x over the reference",
                t.total.as_secs_f64() / floor.as_secs_f64()
            ),
            None => println!("  ours / (SQL + gRPC floors) {over_floors:.2}x"),
        }
        println!();
        drop(calls);
    }
    if workloads.contains(&2) {
        // 2. Batches (a DAG: each task's parents are the task before and the one 7 before, on READY),
        //    then one QueryTasks page of half the plan, filtered by the plan.
        let n = scaled(BATCHED_TASKS, scale, 10);
        let batch = BATCH.min(n);
        let batches: Vec<Vec<u8>> = (0..n)
            .collect::<Vec<u64>>()
            .chunks(batch as usize)
            .map(|chunk| {
                register_tasks(
                    chunk
                        .iter()
                        .map(|i| {
                            let parents: Vec<u64> =
                                [1, 7].iter().filter(|d| *i >= **d).map(|d| BATCHED_BASE + i - d).collect();
                            task(BATCHED_BASE + i, READY, &parents)
                        })
                        .collect(),
                )
            })
            .collect();
        let page = scaled(QUERIED_TASKS, scale, 1).min(n) as u32;
        let filter = TaskQueryFilter { compute_plan_key: key(PLAN), ..Default::default() };
        let query =
            QueryTasksParam { page_token: String::new(), page_size: page, filter: Some(filter) }.encode_to_vec();
        let (ours, theirs) =
            on_both(reference, "batched", DEFAULT_BUDGET, async |side: &Side| batched(side, &batches, &query).await)
                .await;
        println!(
            "2. {} tasks in batches of {} into one plan, then QueryTasks (page_size {page}, filter: the plan) x {QUERY_REPEATS}",
            thousands(n),
            thousands(batch)
        );
        print_batched("ours", &ours);
        if let Some(theirs) = &theirs {
            print_batched("reference", theirs);
            let register = |r: &Batched| r.batches.iter().sum::<Duration>().as_secs_f64();
            println!("  ratio     register {}", ratio_text(register(theirs) / register(&ours), None));
        }
        print_ratio(
            "QueryTasks p50 ",
            theirs.as_ref().map(|t| median(&t.queries).as_secs_f64() / median(&ours.queries).as_secs_f64()),
            4.0,
        );
        println!();
        drop(batches);
    }
    if workloads.contains(&3) {
        // 3. ApplyTaskAction: tasks without parents on READY (waiting for an executor slot), acted
        //    on by their worker, MyOrg1MSP: EXECUTING then DONE, 8 clients on distinct tasks.
        let n = scaled(ACTION_TASKS, scale, ACTION_CLIENTS as u64);
        let prepare = register_tasks((0..n).map(|i| task(ACTION_BASE + i, READY, &[])).collect());
        let per_client: Vec<Vec<Vec<u8>>> = (0..ACTION_CLIENTS as u64)
            .map(|c| {
                (0..n)
                    .filter(|i| i % ACTION_CLIENTS as u64 == c)
                    .flat_map(|i| {
                        [ComputeTaskAction::TaskActionExecuting, ComputeTaskAction::TaskActionDone].map(|action| {
                            ApplyTaskActionParam {
                                compute_task_key: key(ACTION_BASE + i),
                                action: action as i32,
                                log: String::new(),
                            }
                            .encode_to_vec()
                        })
                    })
                    .collect()
            })
            .collect();
        let (ours, theirs) = on_both(reference, "actions", DEFAULT_BUDGET, async |side: &Side| {
            concurrent(side, &prepare, APPLY_TASK_ACTION, &per_client).await
        })
        .await;
        println!(
            "3. ApplyTaskAction (EXECUTING then DONE) on {} tasks, {ACTION_CLIENTS} concurrent clients",
            thousands(n)
        );
        print_actions("ours", &ours);
        if let Some(theirs) = &theirs {
            print_actions("reference", theirs);
        }
        print_ratio("", theirs.as_ref().map(|t| actions_per_s(&ours) / actions_per_s(t)), 4.0);
        println!();
    }
    if workloads.contains(&4) {
        // 4. Live events: RegisterDataSamples of 100 samples (one event each), streams open first.
        let n = scaled(LIVE_EVENTS, scale, 1);
        let writes: Vec<Vec<u8>> = (0..n)
            .collect::<Vec<u64>>()
            .chunks(SAMPLES_PER_CALL as usize)
            .map(|chunk| {
                let dm = key(DM1);
                let samples = chunk.iter().map(|i| new_data_sample(SAMPLE_BASE + i, &[dm.as_str()])).collect();
                RegisterDataSamplesParam { samples }.encode_to_vec()
            })
            .collect();
        let (ours, theirs) =
            on_both(reference, "events", DEFAULT_BUDGET, async |side: &Side| fanout(side, &writes, n as usize).await)
                .await;
        println!(
            "4. {} live events ({} RegisterDataSamples of up to {SAMPLES_PER_CALL} samples) to {STREAMS} SubscribeToEvents streams",
            thousands(n),
            writes.len()
        );
        print_fanout("ours", &ours);
        if let Some(theirs) = &theirs {
            print_fanout("reference", theirs);
        }
        print_ratio("", theirs.as_ref().map(|t| deliveries_per_s(&ours) / deliveries_per_s(t)), 4.0);
        println!();
    }
    if workloads.contains(&5) {
        // 5. 16 writers into one plan, children of one train task, retry budget 500ms.
        let per_writer = scaled(CALLS_PER_WRITER, scale, 1);
        let parent = register_tasks(vec![task(WRITERS_PARENT, TRAIN, &[])]);
        let per_client: Vec<Vec<Vec<u8>>> = (0..WRITERS)
            .map(|w| {
                (0..per_writer)
                    .map(|i| register_tasks(vec![task(WRITERS_PARENT + 1 + w * 1_000 + i, TRAIN, &[WRITERS_PARENT])]))
                    .collect()
            })
            .collect();
        let (ours, theirs) = on_both(reference, "writers", CONTENTION_BUDGET, async |side: &Side| {
            concurrent(side, &parent, REGISTER_TASKS, &per_client).await
        })
        .await;
        println!(
            "5. {WRITERS} concurrent writers x {per_writer} single-task RegisterTasks into one plan, tx retry budget {}ms",
            CONTENTION_BUDGET.as_millis()
        );
        print_writers("ours", &ours);
        if let Some(theirs) = &theirs {
            print_writers("reference", theirs);
            println!("  ratio     wall {}", ratio_text(theirs.wall.as_secs_f64() / ours.wall.as_secs_f64(), None));
        } else {
            println!("  reference (skipped)");
        }
        println!();
    }
    println!("whole run: {}", common::fmt_duration(run_started.elapsed()));
}
