//! Compute tasks at scale, over gRPC against the real PostgreSQL:
//! - a 10,000-task plan (a DAG: every task has one or two parents) registered in batches of
//!   1,000, next to its floor: the same number of rows, of the same sizes, inserted with plain
//!   SQL in one transaction per batch;
//! - QueryTasks pages of 100 filtered by plan and status, with 1,000 and with 100,000 tasks in
//!   the channel (the page cost must not grow);
//! - ApplyTaskAction (EXECUTING then DONE) with 1 and with 8 concurrent clients.
//!
//! `cargo bench -p orchestrator-host-standalone --bench tasks`

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use orchestrator_logic::testing::scenarios::computetask::{DM1, DM2, TRAIN, train_task};
use orchestrator_logic::testing::scenarios::{
    CHANNEL, ORG1, ORG2, key, new_data_manager, new_data_sample, new_function, private_permissions,
};
use orchestrator_proto::compute_task_service_client::ComputeTaskServiceClient;
use orchestrator_proto::{
    ApplyFunctionActionParam, ApplyTaskActionParam, ComputeTaskAction, ComputeTaskStatus, FunctionAction,
    NewComputePlan, NewComputeTask, QueryTasksParam, RegisterDataSamplesParam, RegisterOrganizationParam,
    RegisterTasksParam, TaskQueryFilter,
};

const BATCH: u64 = 1_000;
const PLAN_TASKS: u64 = 10_000;
const CHANNEL_TASKS: u64 = 100_000;
const PAGE: u32 = 100;
const PAGES_MEASURED: usize = 50;
const ACTION_TASKS: u64 = 800;
const CLIENTS: u64 = 8;
/// A function that is READY: tasks on it wait for their parents or for an executor slot.
const READY: u64 = 37;

fn plan(n: u64) -> NewComputePlan {
    NewComputePlan { key: key(n), name: format!("plan {n}"), ..Default::default() }
}

/// Task `n` of plan `plan` on `function`, with the given parents.
fn task(n: u64, plan: u64, function: u64, parents: &[u64]) -> NewComputeTask {
    let (dm, sample) = if n.is_multiple_of(2) { (DM1, 20) } else { (DM2, 22) };
    let mut t = train_task(n, dm, &[sample], parents);
    t.compute_plan_key = key(plan);
    t.function_key = key(function);
    t
}

async fn setup(server: &TestServer) {
    for org in [ORG1, ORG2] {
        server
            .call(org, CHANNEL, "OrganizationService/RegisterOrganization", &RegisterOrganizationParam::default())
            .await;
    }
    for (n, owner, samples) in [(DM1, ORG1, [20, 21]), (DM2, ORG2, [22, 23])] {
        let mut dm = new_data_manager(n);
        dm.logs_permission = Some(private_permissions(&[]));
        server.call(owner, CHANNEL, "DataManagerService/RegisterDataManager", &dm).await;
        let dm_key = key(n);
        let samples = samples.iter().map(|s| new_data_sample(*s, &[dm_key.as_str()])).collect();
        server
            .call(owner, CHANNEL, "DataSampleService/RegisterDataSamples", &RegisterDataSamplesParam { samples })
            .await;
    }
    server.call(ORG1, CHANNEL, "FunctionService/RegisterFunction", &new_function(TRAIN)).await;
    server.call(ORG1, CHANNEL, "FunctionService/RegisterFunction", &new_function(READY)).await;
    for action in [FunctionAction::Building, FunctionAction::Ready] {
        let param = ApplyFunctionActionParam { function_key: key(READY), action: action as i32 };
        server.call(ORG1, CHANNEL, "FunctionService/ApplyFunctionAction", &param).await;
    }
}

/// (rows, bytes of keys and values) of the channel's state, and (rows, payload bytes) of its events.
async fn footprint(server: &TestServer) -> (i64, i64, i64, i64) {
    let (rows, bytes): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(octet_length(key) + octet_length(value))::int8 FROM state WHERE channel = $1",
    )
    .bind(CHANNEL)
    .fetch_one(&server.pool)
    .await
    .unwrap();
    let (events, payload): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), sum(octet_length(payload))::int8 FROM events WHERE channel = $1")
            .bind(CHANNEL)
            .fetch_one(&server.pool)
            .await
            .unwrap();
    (rows, bytes.unwrap_or(0), events, payload.unwrap_or(0))
}

/// The floor of one batch: `rows` state rows of `bytes` bytes in all and `events` event rows of
/// `payload` bytes, inserted with plain SQL in one SERIALIZABLE transaction.
async fn floor(server: &TestServer, batch: u64, rows: i64, bytes: i64, events: i64, payload: i64) -> Duration {
    let key_len = 60usize;
    let value_len = (bytes as usize / rows.max(1) as usize).saturating_sub(key_len);
    let keys: Vec<String> = (0..rows).map(|i| format!("floor/{batch:08}/{i:0>width$}", width = key_len - 15)).collect();
    let values: Vec<Vec<u8>> = (0..rows).map(|_| vec![7u8; value_len]).collect();
    let ids: Vec<String> = (0..events).map(|i| format!("floor-{batch}-{i}")).collect();
    let payloads: Vec<Vec<u8>> = (0..events).map(|_| vec![9u8; payload as usize / events.max(1) as usize]).collect();
    let t = Instant::now();
    let mut tx = server.pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").execute(&mut *tx).await.unwrap();
    sqlx::query(
        "INSERT INTO state (channel, key, value) SELECT 'floor', k, v FROM UNNEST($1::text[], $2::bytea[]) AS t(k, v)",
    )
    .bind(&keys)
    .bind(&values)
    .execute(&mut *tx)
    .await
    .unwrap();
    // The event columns QueryEvents indexes are part of the floor: the host writes them too.
    let asset_keys: Vec<String> = (0..events).map(|i| format!("{batch:08x}-0000-4000-8000-{i:012x}")).collect();
    sqlx::query(
        "INSERT INTO events (channel, event_id, payload, asset_key, asset_kind, event_kind, ts_micros, metadata) \
         SELECT 'floor', i, p, k, 7, 1, $4, '{}'::jsonb FROM UNNEST($1::text[], $2::bytea[], $3::text[]) AS t(i, p, k)",
    )
    .bind(&ids)
    .bind(&payloads)
    .bind(&asset_keys)
    .bind(batch as i64)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    t.elapsed()
}

/// Mean and p95 of the given latencies.
fn stats(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    let mean = d.iter().sum::<Duration>() / d.len() as u32;
    (mean, d[((d.len() - 1) as f64 * 0.95).round() as usize])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = TestServer::start_with(|c| {
        c.channel_config = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/channels.yaml").into());
    })
    .await;
    setup(&server).await;
    let mut tasks_client = ComputeTaskServiceClient::new(server.client(ORG1, CHANNEL).await);
    let mut next_plan = 1_000;
    let mut new_plan = || {
        next_plan += 1;
        next_plan
    };

    // 1. QueryTasks with 1,000 tasks in the channel: plan A, all waiting for a builder slot.
    let plan_a = new_plan();
    server.call(ORG1, CHANNEL, "ComputePlanService/RegisterPlan", &plan(plan_a)).await;
    let a: Vec<NewComputeTask> = (0..BATCH).map(|i| task(1_000_000 + i, plan_a, TRAIN, &[])).collect();
    tasks_client.register_tasks(RegisterTasksParam { tasks: a }).await.unwrap();
    let small = query_pages(&mut tasks_client, plan_a).await;

    // 2. The 10,000-task DAG plan, in batches of 1,000, each next to its floor.
    let plan_b = new_plan();
    server.call(ORG1, CHANNEL, "ComputePlanService/RegisterPlan", &plan(plan_b)).await;
    let mut register = Vec::new();
    let mut floors = Vec::new();
    let base = 2_000_000;
    for b in 0..PLAN_TASKS / BATCH {
        let batch: Vec<NewComputeTask> = (b * BATCH..(b + 1) * BATCH)
            .map(|i| {
                // Parents: the previous task and the one 7 before, when they exist (often in an
                // earlier batch): a DAG, not a chain.
                let parents: Vec<u64> = [1, 7].iter().filter(|d| i >= **d).map(|d| base + i - d).collect();
                task(base + i, plan_b, READY, &parents)
            })
            .collect();
        let before = footprint(&server).await;
        let t = Instant::now();
        let resp = tasks_client.register_tasks(RegisterTasksParam { tasks: batch }).await.unwrap();
        register.push(t.elapsed());
        assert_eq!(resp.into_inner().tasks.len() as u64, BATCH);
        let after = footprint(&server).await;
        floors.push(
            floor(&server, b, after.0 - before.0, after.1 - before.1, after.2 - before.2, after.3 - before.3).await,
        );
    }
    let (register_mean, register_p95) = stats(register.clone());
    let (floor_mean, _) = stats(floors);

    // 3. Fill the channel to 100,000 tasks (other plans), then the same pages of plan A.
    let mut n = 3_000_000;
    let mut total = BATCH + PLAN_TASKS;
    let mut filler_plan = new_plan();
    server.call(ORG1, CHANNEL, "ComputePlanService/RegisterPlan", &plan(filler_plan)).await;
    while total < CHANNEL_TASKS {
        if total.is_multiple_of(10_000) {
            filler_plan = new_plan();
            server.call(ORG1, CHANNEL, "ComputePlanService/RegisterPlan", &plan(filler_plan)).await;
        }
        let batch: Vec<NewComputeTask> = (0..BATCH).map(|i| task(n + i, filler_plan, TRAIN, &[])).collect();
        n += BATCH;
        tasks_client.register_tasks(RegisterTasksParam { tasks: batch }).await.unwrap();
        total += BATCH;
    }
    let large = query_pages(&mut tasks_client, plan_a).await;

    // 4. ApplyTaskAction: tasks without parents on a READY function wait for an executor slot.
    let plan_c = new_plan();
    server.call(ORG1, CHANNEL, "ComputePlanService/RegisterPlan", &plan(plan_c)).await;
    let c: Vec<NewComputeTask> = (0..2 * ACTION_TASKS).map(|i| task(5_000_000 + 2 * i, plan_c, READY, &[])).collect(); // even: DM1, worker ORG1
    tasks_client.register_tasks(RegisterTasksParam { tasks: c }).await.unwrap();
    let keys: Vec<String> = (0..2 * ACTION_TASKS).map(|i| key(5_000_000 + 2 * i)).collect();
    let (sequential, rest) = keys.split_at(ACTION_TASKS as usize / 4);
    let t = Instant::now();
    for k in sequential {
        act(&mut tasks_client, k).await;
    }
    let sequential_rate = 2.0 * sequential.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut handles = Vec::new();
    for slice in rest.chunks(rest.len().div_ceil(CLIENTS as usize)) {
        let mut client = ComputeTaskServiceClient::new(server.client(ORG1, CHANNEL).await);
        let slice = slice.to_vec();
        handles.push(tokio::spawn(async move {
            for k in &slice {
                act(&mut client, k).await;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let concurrent_rate = 2.0 * rest.len() as f64 / t.elapsed().as_secs_f64();

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("compute tasks over gRPC, PostgreSQL on 127.0.0.1 (2 cores):");
    println!(
        "  RegisterTasks, 10,000-task DAG plan in batches of {BATCH}: mean {register_mean:>9.2?}/batch  p95 {register_p95:>9.2?}  {:>6.0} tasks/s  (plan in {:.2?})",
        BATCH as f64 / register_mean.as_secs_f64(),
        register.iter().sum::<Duration>()
    );
    println!(
        "    floor (same rows and bytes, plain SQL, one tx per batch): {floor_mean:>9.2?}/batch   ratio {:.2}x",
        ratio(register_mean, floor_mean)
    );
    println!(
        "  QueryTasks(plan, status) pages of {PAGE}: {:>9.2?} with {BATCH} tasks in the channel, {:>9.2?} with {total} (ratio {:.2}x)",
        small.0,
        large.0,
        ratio(large.0, small.0)
    );
    println!("    p95: {:>9.2?} / {:>9.2?}", small.1, large.1);
    println!(
        "  ApplyTaskAction (EXECUTING, DONE): {sequential_rate:>6.0} actions/s with 1 client, {concurrent_rate:>6.0} actions/s with {CLIENTS} clients"
    );
    server.stop().await;
}

async fn act<T>(client: &mut ComputeTaskServiceClient<T>, k: &str)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    for action in [ComputeTaskAction::TaskActionExecuting, ComputeTaskAction::TaskActionDone] {
        let param = ApplyTaskActionParam { compute_task_key: k.to_owned(), action: action as i32, log: String::new() };
        client.apply_task_action(param).await.unwrap();
    }
}

/// Mean and p95 latency of `PAGES_MEASURED` QueryTasks pages of `plan` in status WFBS, walking
/// the plan from its first page and starting over at its end.
async fn query_pages<T>(client: &mut ComputeTaskServiceClient<T>, plan: u64) -> (Duration, Duration)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let filter = TaskQueryFilter {
        compute_plan_key: key(plan),
        status: ComputeTaskStatus::StatusWaitingForBuilderSlot as i32,
        ..Default::default()
    };
    let mut token = String::new();
    let mut latencies = Vec::with_capacity(PAGES_MEASURED);
    for _ in 0..PAGES_MEASURED + 5 {
        let param = QueryTasksParam { page_token: token.clone(), page_size: PAGE, filter: Some(filter.clone()) };
        let t = Instant::now();
        let page = client.query_tasks(param).await.unwrap().into_inner();
        latencies.push(t.elapsed());
        assert!(!page.tasks.is_empty(), "a page of the plan");
        token = page.next_page_token;
    }
    stats(latencies.split_off(5))
}
