//! The logic component embedded in a plain Rust program with its own in-memory store: a third
//! host, beside the standalone server and the Fabric chaincode. It drives a compute plan to two
//! DONE tasks and prints each call with the events it committed. What a host must do: the crate
//! docs of `orchestrator_runtime`, "The contract between the runtime and a host".

use std::collections::BTreeMap;
use std::ops::Bound;

use orchestrator_proto::ComputeTaskAction::{TaskActionDone as Done, TaskActionExecuting as Executing};
use orchestrator_proto::compute_task_input::Ref;
use orchestrator_proto::event_query::EventQuery;
use orchestrator_proto::{
    Addressable, ApplyFunctionActionParam, ApplyTaskActionParam, AssetKind, ComputeTask, ComputeTaskInput, Event,
    EventQueryFilter, FunctionAction, FunctionInput, FunctionOutput, GetTaskParam, NewComputePlan, NewComputeTask,
    NewComputeTaskOutput, NewDataManager, NewDataSample, NewFunction, NewModel, NewPermissions, ParentTaskOutputRef,
    QueryEventsParam, RegisterDataSamplesParam, RegisterModelsParam, RegisterOrganizationParam, RegisterTasksParam,
    RegisterTasksResponse,
};
use orchestrator_runtime::{BackendError, BoxFuture, Context, Invoked, Runtime, RuntimeConfig, StateBackend};
use prost::Message;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;
type Read<'a, T> = BoxFuture<'a, Result<T, BackendError>>;

const ORG1: &str = "MyOrg1MSP";
const ORG2: &str = "MyOrg2MSP";

/// One channel's committed state and events. It is also each call's backend: the runtime
/// takes it by value and hands it back, so running one call at a time needs no lock.
#[derive(Default)]
struct Store {
    state: BTreeMap<String, Vec<u8>>,
    events: Vec<Event>,
}

impl StateBackend for Store {
    fn get_many<'a>(&'a mut self, keys: &'a [String]) -> Read<'a, Vec<Option<Vec<u8>>>> {
        Box::pin(std::future::ready(Ok(keys.iter().map(|key| self.state.get(key).cloned()).collect())))
    }

    fn scan<'a>(&'a mut self, start: &'a str, end: &'a str, limit: u32) -> Read<'a, Vec<(String, Vec<u8>)>> {
        let range = self.state.range::<str, _>((Bound::Included(start), Bound::Excluded(end)));
        let page = range.take(limit as usize).map(|(key, value)| (key.clone(), value.clone())).collect();
        Box::pin(std::future::ready(Ok(page)))
    }
}

struct Host {
    runtime: Runtime,
    store: Store,
    calls: i64,
}

impl Host {
    /// Runs `orchestrator.<method>` as `msp`; commits its writes and events, only on success.
    async fn call<R: Message + Default>(&mut self, msp: &str, method: &str, request: impl Message) -> Result<R> {
        self.calls += 1;
        // A fixed clock keeps the output reproducible; a real host passes the current time.
        let ctx = Context {
            msp_id: msp.into(),
            channel: "mychannel".into(),
            tx_id: format!("tx-{}", self.calls),
            tx_time_micros: 1_700_000_000_000_000 + self.calls * 1_000,
        };
        let (method, store) = (format!("orchestrator.{method}"), std::mem::take(&mut self.store));
        let Invoked { backend, outcome } = self.runtime.invoke(&ctx, &method, &request.encode_to_vec(), store).await;
        self.store = backend;
        // A trap or a backend failure, then a business error: nothing to commit.
        let invocation = outcome?;
        let response = R::decode(invocation.result?.as_slice())?;
        let events = invocation.events.iter().map(|e| Event::decode(&e[..])).collect::<Result<Vec<_>, _>>()?;
        for (key, value) in invocation.writes {
            match value {
                Some(value) => self.store.state.insert(key, value),
                None => self.store.state.remove(&key),
            };
        }
        println!("{msp} {}: [{}]", method.rsplit('/').next().unwrap_or(&method), names(&events));
        self.store.events.extend(events);
        Ok(response)
    }
}

/// `ASSET_COMPUTE_TASK` and `EVENT_ASSET_UPDATED` as `COMPUTE_TASK/UPDATED`.
fn names(events: &[Event]) -> String {
    let name = |e: &Event| {
        let (asset, kind) = (e.asset_kind().as_str_name(), e.event_kind().as_str_name());
        format!("{}/{}", asset.trim_start_matches("ASSET_"), kind.trim_start_matches("EVENT_ASSET_"))
    };
    events.iter().map(name).collect::<Vec<_>>().join(", ")
}

fn key(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn address(kind: &str, n: u64) -> Option<Addressable> {
    Some(Addressable { checksum: format!("{n:064x}"), storage_address: format!("http://org-1.example/{kind}/{n}/") })
}

fn sample(n: u64) -> NewDataSample {
    NewDataSample { key: key(n), data_manager_keys: vec![key(10)], checksum: format!("{n:064x}"), test_only: false }
}

fn model(n: u64, task: u64, output: &str) -> NewModel {
    let (compute_task_key, compute_task_output_identifier) = (key(task), output.into());
    NewModel { key: key(n), compute_task_key, compute_task_output_identifier, address: address("model", n) }
}

fn public() -> Option<NewPermissions> {
    Some(NewPermissions { public: true, authorized_ids: Vec::new() })
}

/// `{opener, datasamples, model} -> {output: MODEL}`; `model` is optional for a first train.
fn function(n: u64, name: &str, model_optional: bool, output: &str) -> NewFunction {
    let kind = |kind: AssetKind, multiple, optional| FunctionInput { kind: kind as i32, multiple, optional };
    let inputs = BTreeMap::from([
        ("opener".into(), kind(AssetKind::AssetDataManager, false, false)),
        ("datasamples".into(), kind(AssetKind::AssetDataSample, true, false)),
        ("model".into(), kind(AssetKind::AssetModel, false, model_optional)),
    ]);
    let outputs =
        BTreeMap::from([(output.into(), FunctionOutput { kind: AssetKind::AssetModel as i32, multiple: false })]);
    let function = NewFunction { key: key(n), name: name.into(), inputs, outputs, ..Default::default() };
    let (description, archive) = (address("description", n), address("archive", n));
    NewFunction { description, archive, new_permissions: public(), ..function }
}

/// A task of plan 40 on data manager 10 and `sample`, with `parent`'s model as input.
fn task(n: u64, function: u64, sample: u64, parent: Option<u64>, output: &str) -> NewComputeTask {
    let input = |identifier: &str, r#ref| ComputeTaskInput { identifier: identifier.into(), r#ref: Some(r#ref) };
    let mut inputs = vec![input("opener", Ref::AssetKey(key(10))), input("datasamples", Ref::AssetKey(key(sample)))];
    if let Some(parent) = parent {
        let parent = ParentTaskOutputRef { parent_task_key: key(parent), output_identifier: "model".into() };
        inputs.push(input("model", Ref::ParentTaskOutput(parent)));
    }
    let outputs = BTreeMap::from([(output.into(), NewComputeTaskOutput { permissions: public(), transient: false })]);
    let (key, function_key, compute_plan_key) = (key(n), key(function), key(40));
    NewComputeTask { key, function_key, compute_plan_key, inputs, outputs, ..Default::default() }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default(), orchestrator_logic_component::COMPONENT)?;
    println!("logic {} ({})", runtime.info().version, runtime.info().sha256);
    let mut host = Host { runtime, store: Store::default(), calls: 0 };

    for org in [ORG1, ORG2] {
        host.call::<()>(org, "OrganizationService/RegisterOrganization", RegisterOrganizationParam::default()).await?;
    }
    let dm = NewDataManager { key: key(10), name: "images".into(), r#type: "csv".into(), ..Default::default() };
    let (description, opener, new_permissions) = (address("description", 10), address("opener", 10), public());
    let dm = NewDataManager { description, opener, new_permissions, logs_permission: public(), ..dm };
    host.call::<()>(ORG1, "DataManagerService/RegisterDataManager", dm).await?;
    let samples = RegisterDataSamplesParam { samples: vec![sample(20), sample(21)] };
    host.call::<()>(ORG1, "DataSampleService/RegisterDataSamples", samples).await?;

    // A function runs once built: WAITING -> BUILDING -> READY.
    for function in [function(30, "train", true, "model"), function(31, "predict", false, "predictions")] {
        let function_key = function.key.clone();
        host.call::<()>(ORG1, "FunctionService/RegisterFunction", function).await?;
        for action in [FunctionAction::Building, FunctionAction::Ready] {
            let param = ApplyFunctionActionParam { function_key: function_key.clone(), action: action as i32 };
            host.call::<()>(ORG1, "FunctionService/ApplyFunctionAction", param).await?;
        }
    }
    let plan = NewComputePlan { key: key(40), name: "a plan".into(), ..Default::default() };
    host.call::<()>(ORG1, "ComputePlanService/RegisterPlan", plan).await?;

    // Train 101, then predict 102 on its model; the worker is the data manager's owner.
    let tasks = vec![task(101, 30, 20, None, "model"), task(102, 31, 21, Some(101), "predictions")];
    let registered: RegisterTasksResponse =
        host.call(ORG1, "ComputeTaskService/RegisterTasks", RegisterTasksParam { tasks }).await?;
    registered.tasks.iter().for_each(|task| println!("  task {} is {}", task.key, task.status().as_str_name()));
    // Each task: EXECUTING, its output registered, DONE (which lets its child start).
    for (n, output, model_n) in [(101, "model", 601), (102, "predictions", 602)] {
        let act = |action| ApplyTaskActionParam { compute_task_key: key(n), action: action as i32, log: String::new() };
        host.call::<()>(ORG1, "ComputeTaskService/ApplyTaskAction", act(Executing)).await?;
        let models = RegisterModelsParam { models: vec![model(model_n, n, output)] };
        host.call::<()>(ORG1, "ModelService/RegisterModels", models).await?;
        host.call::<()>(ORG1, "ComputeTaskService/ApplyTaskAction", act(Done)).await?;
    }

    // Reads take the same path and leave nothing to commit.
    for n in [101, 102] {
        let task: ComputeTask = host.call(ORG2, "ComputeTaskService/GetTask", GetTaskParam { key: key(n) }).await?;
        println!("  task {} is {}", task.key, task.status().as_str_name());
    }

    // QueryEvents is the host's to answer: the shared filter, order and paging over its rows.
    let filter = Some(EventQueryFilter { asset_key: key(101), ..Default::default() });
    let query = EventQuery::new(QueryEventsParam { filter, ..Default::default() })?;
    let page = query.page(host.store.events.iter().enumerate().map(|(i, event)| (i as i64, event)));
    println!("events of task {}: [{}]", key(101), names(&page.events));
    let (calls, events, entries) = (host.calls, host.store.events.len(), host.store.state.len());
    println!("{calls} calls, {events} events committed, {entries} state entries");
    Ok(())
}
