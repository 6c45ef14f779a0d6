//! Logic-only workload, native vs component: the cost of running the business logic inside
//! wasmtime (fresh instance per call, fuel metering, boundary copies) against the same Rust
//! compiled natively, both over in-memory state. Prints figures and the component/native ratio.
//!
//! `cargo bench -p orchestrator-runtime --bench logic`

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/component_driver.rs"]
mod component_driver;

use std::time::{Duration, Instant};

use component_driver::ComponentDriver;
use orchestrator_logic::testing::scenarios::computetask::{
    DM1, PLAN, QUERY_TASKS, TRAIN, make_ready, register_tasks, setup_world, train_task,
};
use orchestrator_logic::testing::scenarios::{ORG1, key};
use orchestrator_logic::testing::{Driver, Harness, call};
use orchestrator_proto::{
    Addressable, DataManager, GetDataManagerParam, NewDataManager, NewDataSample, NewPermissions, Organization,
    QueryTasksParam, QueryTasksResponse, RegisterDataSamplesParam, RegisterDataSamplesResponse,
    RegisterOrganizationParam, TaskQueryFilter,
};

const ORG: &str = "MyOrg1MSP";
const CHANNEL: &str = "mychannel";
const DM_KEY: &str = "00000000-0000-4000-8000-0000000000d1";
const SAMPLES_PER_CALL: usize = 1_000;
const REGISTER_CALLS: usize = 20;
const GET_CALLS: usize = 5_000;
/// Tasks registered (batches of `TASK_BATCH`) before the QueryTasks pages of `TASK_PAGE`.
const TASKS: u64 = 10_000;
const TASK_BATCH: u64 = 1_000;
const TASK_PAGE: u32 = 5_000;
const QUERY_CALLS: u32 = 5;
/// Key numbers of the queried tasks, clear of the scenario's fixtures.
const TASK_BASE: u64 = 1 << 24;

fn uuid(n: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", n >> 48, n & 0xffff_ffff_ffff)
}

fn setup(d: &mut dyn Driver) {
    let _: Organization = call(
        d,
        ORG,
        CHANNEL,
        "orchestrator.OrganizationService/RegisterOrganization",
        &RegisterOrganizationParam { address: String::new() },
    )
    .unwrap();
    let addressable = |n: u32| Addressable {
        checksum: "a".repeat(64),
        storage_address: format!("http://backend.org-1:8000/api/datamanager/{n}/"),
    };
    let _: DataManager = call(
        d,
        ORG,
        CHANNEL,
        "orchestrator.DataManagerService/RegisterDataManager",
        &NewDataManager {
            key: DM_KEY.to_owned(),
            name: "bench".to_owned(),
            new_permissions: Some(NewPermissions { public: true, authorized_ids: vec![] }),
            description: Some(addressable(1)),
            opener: Some(addressable(2)),
            logs_permission: Some(NewPermissions { public: true, authorized_ids: vec![] }),
            ..Default::default()
        },
    )
    .unwrap();
}

struct Figures {
    register: Duration,
    get: Duration,
}

fn run(d: &mut dyn Driver) -> Figures {
    setup(d);
    let mut next = 1u64 << 20;
    let start = Instant::now();
    for _ in 0..REGISTER_CALLS {
        let samples = (0..SAMPLES_PER_CALL)
            .map(|_| {
                next += 1;
                NewDataSample {
                    key: uuid(next),
                    data_manager_keys: vec![DM_KEY.to_owned()],
                    test_only: false,
                    checksum: "b".repeat(64),
                }
            })
            .collect();
        let resp: RegisterDataSamplesResponse = call(
            d,
            ORG,
            CHANNEL,
            "orchestrator.DataSampleService/RegisterDataSamples",
            &RegisterDataSamplesParam { samples },
        )
        .unwrap();
        assert_eq!(resp.data_samples.len(), SAMPLES_PER_CALL);
    }
    let register = start.elapsed() / REGISTER_CALLS as u32;
    let start = Instant::now();
    for _ in 0..GET_CALLS {
        let dm: DataManager = call(
            d,
            ORG,
            CHANNEL,
            "orchestrator.DataManagerService/GetDataManager",
            &GetDataManagerParam { key: DM_KEY.to_owned() },
        )
        .unwrap();
        assert_eq!(dm.key, DM_KEY);
    }
    let get = start.elapsed() / GET_CALLS as u32;
    Figures { register, get }
}

/// The reference bench's workload 2 without the database, on a fresh driver: the mean of
/// `QUERY_CALLS` QueryTasks pages of `TASK_PAGE` tasks (filtered by the plan) out of `TASKS`.
fn query_tasks(d: &mut dyn Driver) -> Duration {
    setup_world(d);
    make_ready(d, TRAIN);
    for start in (0..TASKS).step_by(TASK_BATCH as usize) {
        let tasks: Vec<_> = (start..start + TASK_BATCH)
            .map(|i| {
                let parents: Vec<u64> = [1, 7].iter().filter(|p| i >= **p).map(|p| TASK_BASE + i - p).collect();
                train_task(TASK_BASE + i, DM1, &[20], &parents)
            })
            .collect();
        assert_eq!(register_tasks(d, ORG1, &tasks).unwrap().len() as u64, TASK_BATCH);
    }
    let filter = TaskQueryFilter { compute_plan_key: key(PLAN), ..Default::default() };
    let param = QueryTasksParam { page_token: String::new(), page_size: TASK_PAGE, filter: Some(filter) };
    let start = Instant::now();
    for _ in 0..QUERY_CALLS {
        let resp: QueryTasksResponse = call(d, ORG1, CHANNEL, QUERY_TASKS, &param).unwrap();
        assert_eq!(resp.tasks.len(), TASK_PAGE as usize);
    }
    start.elapsed() / QUERY_CALLS
}

fn main() {
    // Warm the component cache and the instance pool outside the measurement.
    let mut warm = ComponentDriver::new();
    setup(&mut warm);

    let native = run(&mut Harness::new());
    let component = run(&mut ComponentDriver::new());
    let (native_query, component_query) = (query_tasks(&mut Harness::new()), query_tasks(&mut ComponentDriver::new()));
    let ratio = |c: Duration, n: Duration| c.as_secs_f64() / n.as_secs_f64();
    println!("logic-only workload (in-memory state), per call:");
    println!(
        "  RegisterDataSamples x{SAMPLES_PER_CALL}: native {:>10.3?}  component {:>10.3?}  ratio {:.2}x",
        native.register,
        component.register,
        ratio(component.register, native.register)
    );
    println!(
        "  GetDataManager:              native {:>10.3?}  component {:>10.3?}  ratio {:.2}x",
        native.get,
        component.get,
        ratio(component.get, native.get)
    );
    println!(
        "  QueryTasks of {TASK_PAGE} ({TASKS} tasks): native {:>10.3?}  component {:>10.3?}  ratio {:.2}x",
        native_query,
        component_query,
        ratio(component_query, native_query)
    );
}
