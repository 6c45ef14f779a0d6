//! Writers on one plan and one channel, against the real PostgreSQL: every call succeeds without
//! a client retry, nothing is lost or doubled, and a call's database work does not grow with
//! the plan (counted in buffers, not timed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{Orchestrator, TestServer};
use orchestrator_logic::testing::scenarios::computetask::{DM1, TRAIN, train_task};
use orchestrator_logic::testing::scenarios::{
    CHANNEL, ORG1, ORG2, key, new_data_manager, new_data_sample, new_function,
};
use orchestrator_proto::compute_task_service_client::ComputeTaskServiceClient;
use orchestrator_proto::{
    ComputeTaskStatus, NewComputePlan, NewComputeTask, QueryTasksParam, RegisterDataSamplesParam,
    RegisterOrganizationParam, RegisterTasksParam, TaskQueryFilter,
};

const PLAN: u64 = 900;
/// The train task every registered task consumes the `model` of (upstream's large-plan shape).
const PARENT: u64 = 1_000;

/// Warnings PostgreSQL sent this process's connections (sqlx logs them under
/// `sqlx::postgres::notice`), e.g. `there is no transaction in progress` from a COMMIT or
/// ROLLBACK sent outside a transaction: each is a statement the writer should not have sent.
fn database_warnings() -> Arc<Mutex<Vec<String>>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    struct Notices(Arc<Mutex<Vec<String>>>);
    struct Message(String);
    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, _field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{value:?}"));
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Notices {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let meta = event.metadata();
            if meta.target() == "sqlx::postgres::notice" && *meta.level() <= tracing::Level::WARN {
                let mut message = Message(String::new());
                event.record(&mut message);
                self.0.lock().expect("notices").push(message.0);
            }
        }
    }
    static SEEN: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        tracing_subscriber::registry()
            .with(Notices(Arc::clone(&seen)))
            .try_init()
            .expect("the notice counter is the test binary's subscriber (unset TEST_LOG)");
        seen
    })
    .clone()
}

/// Organizations, a data manager with a sample, the train function, the plan and its parent task.
async fn plan_with_parent(server: &TestServer) {
    for org in [ORG1, ORG2] {
        server
            .call(org, CHANNEL, "OrganizationService/RegisterOrganization", &RegisterOrganizationParam::default())
            .await;
    }
    server.call(ORG1, CHANNEL, "DataManagerService/RegisterDataManager", &new_data_manager(DM1)).await;
    let samples = RegisterDataSamplesParam { samples: vec![new_data_sample(20, &[key(DM1).as_str()])] };
    server.call(ORG1, CHANNEL, "DataSampleService/RegisterDataSamples", &samples).await;
    server.call(ORG1, CHANNEL, "FunctionService/RegisterFunction", &new_function(TRAIN)).await;
    let plan = NewComputePlan { key: key(PLAN), name: "large".to_owned(), ..Default::default() };
    server.call(ORG1, CHANNEL, "ComputePlanService/RegisterPlan", &plan).await;
    server
        .call(
            ORG1,
            CHANNEL,
            "ComputeTaskService/RegisterTasks",
            &RegisterTasksParam { tasks: vec![child(PARENT, &[])] },
        )
        .await;
}

/// Task `n` of the plan, consuming the model of `parents`.
fn child(n: u64, parents: &[u64]) -> NewComputeTask {
    let mut task = train_task(n, DM1, &[20], parents);
    task.compute_plan_key = key(PLAN);
    task
}

/// Every task key of the plan, through QueryTasks pages.
async fn plan_task_keys(server: &TestServer, status: Option<ComputeTaskStatus>) -> Vec<String> {
    let mut client = ComputeTaskServiceClient::new(server.client(ORG1, CHANNEL).await);
    let filter =
        TaskQueryFilter { compute_plan_key: key(PLAN), status: status.map_or(0, |s| s as i32), ..Default::default() };
    let mut keys = Vec::new();
    let mut token = String::new();
    loop {
        let param = QueryTasksParam { page_token: token, page_size: 500, filter: Some(filter.clone()) };
        let page = client.query_tasks(param).await.expect("QueryTasks").into_inner();
        keys.extend(page.tasks.into_iter().map(|t| t.key));
        if page.next_page_token.is_empty() {
            return keys;
        }
        token = page.next_page_token;
    }
}

/// (asset key, count) of the channel's task-creation events.
async fn task_created_events(server: &TestServer) -> BTreeMap<String, usize> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT asset_key FROM events WHERE channel = $1 AND asset_kind = $2 AND event_kind = $3")
            .bind(CHANNEL)
            .bind(orchestrator_proto::AssetKind::AssetComputeTask as i32)
            .bind(orchestrator_proto::EventKind::EventAssetCreated as i32)
            .fetch_all(&server.pool)
            .await
            .expect("events");
    let mut counts = BTreeMap::new();
    for key in rows {
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Positions of the channel are 1..=n, each once.
async fn assert_gap_free_positions(server: &TestServer) {
    let (count, distinct, max): (i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT channel_position), max(channel_position) FROM events WHERE channel = $1",
    )
    .bind(CHANNEL)
    .fetch_one(&server.pool)
    .await
    .expect("positions");
    assert_eq!((count, distinct, max), (count, count, Some(count)), "positions are 1..=n, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_one_plan_all_succeed() {
    // The budget upstream's CI runs with: serial writes must not need it.
    let server = TestServer::start_with(|c| c.tx_retry_budget = Duration::from_millis(500)).await;
    let warnings = database_warnings();
    // The counter sees a stray COMMIT (from the test's own pool here).
    sqlx::raw_sql("COMMIT").execute(&server.pool).await.expect("COMMIT outside a transaction");
    let stray = std::mem::take(&mut *warnings.lock().expect("notices"));
    assert!(stray.iter().any(|m| m.contains("no transaction in progress")), "{stray:?}");
    plan_with_parent(&server).await;
    let writers: u64 = 16;
    let calls: u64 = 25;
    let mut handles = Vec::new();
    for w in 0..writers {
        let mut client = ComputeTaskServiceClient::new(server.client(ORG1, CHANNEL).await);
        handles.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for c in 0..calls {
                let task = child(10_000 + w * 1_000 + c, &[PARENT]);
                if let Err(status) = client.register_tasks(RegisterTasksParam { tasks: vec![task] }).await {
                    failures.push(format!("{:?}: {}", status.code(), status.message()));
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for handle in handles {
        failures.extend(handle.await.expect("writer"));
    }
    assert!(failures.is_empty(), "{} of {} calls failed: {:?}", failures.len(), writers * calls, failures);

    let expected: BTreeSet<String> = std::iter::once(key(PARENT))
        .chain((0..writers).flat_map(|w| (0..calls).map(move |c| key(10_000 + w * 1_000 + c))))
        .collect();
    let listed = plan_task_keys(&server, None).await;
    assert_eq!(listed.len(), expected.len(), "every task listed once");
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), expected);
    // The plan's counts by status: the function is not built, so every task waits for it.
    let waiting_builder = plan_task_keys(&server, Some(ComputeTaskStatus::StatusWaitingForBuilderSlot)).await;
    let waiting_parents = plan_task_keys(&server, Some(ComputeTaskStatus::StatusWaitingForParentTasks)).await;
    assert_eq!((waiting_builder.len(), waiting_parents.len()), (expected.len(), 0));
    let events = task_created_events(&server).await;
    assert_eq!(events.keys().cloned().collect::<BTreeSet<_>>(), expected, "one event per task");
    assert!(events.values().all(|n| *n == 1), "one event per task");
    assert_gap_free_positions(&server).await;
    let warnings = warnings.lock().expect("notices").clone();
    assert!(warnings.is_empty(), "PostgreSQL warned the orchestrator: {warnings:?}");
    server.stop().await;
}

/// Blocks of the user tables (heap, indexes and TOAST, hit or read) accessed so far in the
/// database by every backend.
async fn blocks_accessed(server: &TestServer) -> i64 {
    // An idle backend may keep its counters unpublished for up to 10 s; an exiting one publishes
    // them. End the server's connections (its pool opens new ones) and wait until they are gone.
    let mut conn = server.pool.acquire().await.expect("connection");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut *conn)
    .await
    .expect("end the server's connections");
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut *conn)
        .await
        .expect("pg_stat_activity");
        if others == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query_scalar(
        "SELECT (SELECT COALESCE(sum(heap_blks_hit + heap_blks_read + COALESCE(idx_blks_hit, 0) \
                 + COALESCE(idx_blks_read, 0) + COALESCE(toast_blks_hit, 0) + COALESCE(toast_blks_read, 0)), 0) \
                 FROM pg_statio_user_tables)::int8 \
         FROM (SELECT pg_stat_clear_snapshot()) AS cleared",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("pg_statio_user_tables")
}

/// Database blocks per call of `calls` single-task registrations into the plan, starting at
/// task number `first`, sent by 4 concurrent clients.
async fn blocks_per_registration(server: &TestServer, first: u64, calls: u64) -> f64 {
    let before = blocks_accessed(server).await;
    register_singles(server, first, calls).await;
    let after = blocks_accessed(server).await;
    (after - before) as f64 / calls as f64
}

async fn register_singles(server: &TestServer, first: u64, calls: u64) {
    let clients = 4;
    let mut handles = Vec::new();
    for c in 0..clients {
        let mut client = ComputeTaskServiceClient::new(server.client(ORG1, CHANNEL).await);
        handles.push(tokio::spawn(async move {
            for n in (first + c..first + calls).step_by(clients as usize) {
                let task = child(n, &[PARENT]);
                client.register_tasks(RegisterTasksParam { tasks: vec![task] }).await.expect("RegisterTasks");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("client");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registration_costs_the_same_at_1k_and_at_10k_tasks() {
    let server = TestServer::start().await;
    plan_with_parent(&server).await;
    // 1,000 single-task calls, as upstream's large-plan test sends them, then the measure.
    register_singles(&server, 100_000, 1_000).await;
    let at_1k = blocks_per_registration(&server, 200_000, 100).await;
    register_singles(&server, 300_000, 8_900).await;
    let at_10k = blocks_per_registration(&server, 400_000, 100).await;
    eprintln!("blocks per single-task RegisterTasks: {at_1k:.1} at 1k tasks, {at_10k:.1} at 10k tasks");
    // Index depth may grow by a level in between; anything that grows with the plan (dead row
    // versions, scans of the history) is ten times larger at 10k.
    assert!(at_10k < at_1k * 1.5, "database work grew with the plan: {at_1k:.1} → {at_10k:.1} blocks per call");
    assert_eq!(plan_task_keys(&server, None).await.len(), 1 + 1_000 + 100 + 8_900 + 100);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_database_keep_one_serial_order() {
    // The first server creates and migrates the database; two real processes then share it.
    let setup = TestServer::start().await;
    plan_with_parent(&setup).await;
    let db_url = setup.db_url.clone();
    let no_relay = [("ORCHESTRATOR_AMQP_ENABLED", "false")];
    let processes = [Orchestrator::spawn(&db_url, &no_relay).await, Orchestrator::spawn(&db_url, &no_relay).await];
    // 8 writers per process: each registers its own tasks, and every task is also sent by a
    // writer of the other process (a client retrying elsewhere): it must be created once.
    let per_writer: u64 = 20;
    let mut handles = Vec::new();
    for (p, process) in processes.iter().enumerate() {
        for w in 0..8u64 {
            let mut client = ComputeTaskServiceClient::new(process.client().await);
            handles.push(tokio::spawn(async move {
                for c in 0..per_writer {
                    // Writer w of either process sends the same task keys, in opposite orders.
                    let c = if p == 0 { c } else { per_writer - 1 - c };
                    let task = child(50_000 + w * 100 + c, &[PARENT]);
                    client.register_tasks(RegisterTasksParam { tasks: vec![task] }).await.expect("RegisterTasks");
                }
            }));
        }
    }
    for handle in handles {
        handle.await.expect("writer");
    }
    drop(processes);
    let expected: BTreeSet<String> = std::iter::once(key(PARENT))
        .chain((0..8u64).flat_map(|w| (0..per_writer).map(move |c| key(50_000 + w * 100 + c))))
        .collect();
    let listed = plan_task_keys(&setup, None).await;
    assert_eq!(listed.len(), expected.len(), "every task listed once");
    let events = task_created_events(&setup).await;
    assert_eq!(events.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(events.values().all(|n| *n == 1), "each task created once, by one process: {events:?}");
    assert_gap_free_positions(&setup).await;
    setup.stop().await;
}

/// Makes every write of a state key containing one of `markers` fail inside PostgreSQL, as a
/// database error the logic cannot foresee would.
async fn poison_keys(server: &TestServer, markers: &[&str]) {
    sqlx::raw_sql(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF EXISTS (SELECT 1 FROM unnest(TG_ARGV) AS m WHERE position(m IN NEW.key) > 0) THEN \
                 RAISE EXCEPTION 'injected failure'; \
             END IF; \
             RETURN NEW; END $$",
    )
    .execute(&server.pool)
    .await
    .expect("trigger function");
    let arguments: Vec<String> = markers.iter().map(|m| format!("'{m}'")).collect();
    let trigger = format!(
        "CREATE TRIGGER poison BEFORE INSERT ON state FOR EACH ROW EXECUTE FUNCTION poison({})",
        arguments.join(", ")
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(trigger)).execute(&server.pool).await.expect("trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_call_is_rolled_back_alone_in_its_group() {
    use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
    let server = TestServer::start().await;
    let client = server.client(ORG1, CHANNEL).await;
    common::register_org_and_data_manager(client.clone()).await;
    let poisoned = [1_000u64, 4_000];
    poison_keys(&server, &[&common::uuid(poisoned[0])[24..], &common::uuid(poisoned[1])[24..]]).await;

    // Hold the channel's lock so that the calls queue up and run as one group when it goes.
    let mut blocker = server.pool.begin().await.expect("blocker");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(orchestrator_host_standalone::postgres::channel_lock_key(CHANNEL))
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let send = |first: u64| {
        let mut samples = DataSampleServiceClient::new(client.clone());
        tokio::spawn(async move { samples.register_data_samples(common::new_samples(first, 3)).await })
    };
    // The first call of the group (no savepoint), then others, one of them poisoned (savepoint).
    let mut calls = vec![(poisoned[0], send(poisoned[0]))];
    tokio::time::sleep(Duration::from_millis(300)).await;
    for first in [2_000, 3_000, poisoned[1], 5_000, 6_000] {
        calls.push((first, send(first)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.rollback().await.expect("release");
    for (first, call) in calls {
        let result = call.await.expect("call");
        if poisoned.contains(&first) {
            let status = result.expect_err("poisoned call fails");
            assert!(status.message().contains("injected failure"), "{status:?}");
        } else {
            result.unwrap_or_else(|status| panic!("call {first} fails with its group: {status:?}"));
        }
    }
    // The other calls' samples and events are committed, the poisoned ones left nothing.
    let events: Vec<String> = sqlx::query_scalar("SELECT asset_key FROM events WHERE asset_kind = $1")
        .bind(orchestrator_proto::AssetKind::AssetDataSample as i32)
        .fetch_all(&server.pool)
        .await
        .expect("events");
    let expected: BTreeSet<String> =
        [2_000u64, 3_000, 5_000, 6_000].iter().flat_map(|f| (*f..f + 3).map(common::uuid)).collect();
    assert_eq!(events.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(events.len(), expected.len());
    assert_gap_free_positions(&server).await;
    server.stop().await;
}

/// Holds the channel's lock in a transaction of another session, as a second orchestrator
/// process would; returns once `server`'s writer gave it up.
async fn hold_channel_lock(server: &TestServer) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut blocker = server.pool.begin().await.expect("blocker");
    sqlx::query("SET LOCAL lock_timeout = '20s'").execute(&mut *blocker).await.expect("lock timeout");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(orchestrator_host_standalone::postgres::channel_lock_key(CHANNEL))
        .execute(&mut *blocker)
        .await
        .expect("the writer lets another session take the channel's lock");
    blocker
}

/// Events of data samples by the transaction that stored them (`inserted_at` is the start time
/// of the transaction).
async fn sample_event_transactions(server: &TestServer) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT inserted_at) FROM events WHERE asset_kind = $1")
        .bind(orchestrator_proto::AssetKind::AssetDataSample as i32)
        .fetch_one(&server.pool)
        .await
        .expect("transactions")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_calls_are_stored_in_one_flush() {
    use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
    let server = TestServer::start().await;
    let client = server.client(ORG1, CHANNEL).await;
    common::register_org_and_data_manager(client.clone()).await;
    let blocker = hold_channel_lock(&server).await;
    let calls: Vec<_> = (1..=6u64)
        .map(|n| {
            let mut samples = DataSampleServiceClient::new(client.clone());
            tokio::spawn(async move { samples.register_data_samples(common::new_samples(n * 1_000, 3)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.rollback().await.expect("release");
    for call in calls {
        call.await.expect("call").expect("registered");
    }
    assert_eq!(sample_event_transactions(&server).await, 1, "the queued calls were stored in one flush");
    assert_gap_free_positions(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_of_another_session_is_seen_once_the_lock_changed_hands() {
    use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
    use orchestrator_proto::organization_service_client::OrganizationServiceClient;
    let server = TestServer::start().await;
    let mine = server.client(ORG1, CHANNEL).await;
    OrganizationServiceClient::new(mine.clone())
        .register_organization(RegisterOrganizationParam { address: String::new() })
        .await
        .expect("organization");
    // The data manager does not exist yet: the writer has now read its key as absent.
    let refused = DataSampleServiceClient::new(mine.clone())
        .register_data_samples(common::new_samples(1, 1))
        .await
        .expect_err("no data manager yet");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    // Another session writes the data manager's rows into the channel (taken from a
    // registration on another channel, so no key layout is assumed here).
    common::register_org_and_data_manager(server.client(ORG1, "yourchannel").await).await;
    let mut blocker = hold_channel_lock(&server).await;
    let copied = sqlx::query(
        "INSERT INTO state (channel, key, value) SELECT $1, key, value FROM state WHERE channel = 'yourchannel' \
         ON CONFLICT (channel, key) DO NOTHING",
    )
    .bind(CHANNEL)
    .execute(&mut *blocker)
    .await
    .expect("copy the data manager");
    assert!(copied.rows_affected() >= 1);
    blocker.commit().await.expect("commit");
    DataSampleServiceClient::new(mine)
        .register_data_samples(common::new_samples(1, 1))
        .await
        .expect("the writer sees the other session's data manager");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_session_gets_the_lock_while_calls_keep_coming() {
    use orchestrator_proto::data_sample_service_client::DataSampleServiceClient;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let server = TestServer::start().await;
    let client = server.client(ORG1, CHANNEL).await;
    common::register_org_and_data_manager(client.clone()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    // Four clients calling back to back, so that the writer's queue never runs dry.
    let load: Vec<_> = (0..4u64)
        .map(|c| {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            let mut samples = DataSampleServiceClient::new(client.clone());
            tokio::spawn(async move {
                let mut n = 10_000 + c * 100_000;
                while !stop.load(Ordering::Relaxed) {
                    samples.register_data_samples(common::new_samples(n, 1)).await.expect("registered");
                    done.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Fails after its 20 s lock timeout if the writer kept the lock to itself.
    let blocker = hold_channel_lock(&server).await;
    // While the other session holds it, the channel's calls wait.
    let before = done.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(done.load(Ordering::Relaxed) <= before + 4, "a call ran while another session held the lock");
    blocker.rollback().await.expect("release");
    let resumed = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < resumed + 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in load {
        client.await.expect("load");
    }
    assert_gap_free_positions(&server).await;
    server.stop().await;
}
