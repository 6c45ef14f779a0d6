//! Compute tasks (docs/business-rules.md §8): registration of task graphs (checks, order, worker,
//! permissions, idempotent re-sends), the task state machine, the effects of function builds,
//! and QueryTasks.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_proto::{
    ApplyTaskActionParam, ApplyTaskActionResponse, AssetKind, ComputeTask, ComputeTaskAction, ComputeTaskInput,
    ComputeTaskStatus, EventKind, FunctionAction, GetTaskParam, NewComputeTask, NewComputeTaskOutput, NewFunction,
    NewPermissions, ParentTaskOutputRef, Permission, QueryTasksParam, QueryTasksResponse, RegisterTasksParam,
    RegisterTasksResponse, TaskQueryFilter, compute_task_input::Ref, event,
};

use super::computeplan::{get_plan, new_plan, register_plan};
use super::{
    CHANNEL, ORG1, ORG2, OTHER_CHANNEL, Res, UNREGISTERED, apply_function_action, assert_no_event_since, check_event,
    events_since, expect_err, input, key, method, new_data_manager, new_data_sample, new_function, output,
    private_permissions, public_permissions, query_functions, register_data_manager, register_data_samples,
    register_function, setup_organizations, strings, time_key,
};
use crate::error::ErrorKind;
use crate::testing::{Driver, call};

use ComputeTaskStatus::{
    StatusBuilding as BLD, StatusCanceled as CANCELED, StatusDone as DONE, StatusExecuting as EXE,
    StatusFailed as FAILED, StatusWaitingForBuilderSlot as WFBS, StatusWaitingForExecutorSlot as WFES,
    StatusWaitingForParentTasks as WFPT,
};

pub const QUERY_TASKS: &str = "orchestrator.ComputeTaskService/QueryTasks";
pub const GET_TASK: &str = "orchestrator.ComputeTaskService/GetTask";
pub const APPLY_TASK_ACTION: &str = "orchestrator.ComputeTaskService/ApplyTaskAction";

// ---------------------------------------------------------------------------------------------
// The world of these scenarios.

/// Data manager of ORG1 (public, private logs) with samples 20 and 21.
pub const DM1: u64 = 10;
/// Data manager of ORG2 (public, private logs) with samples 22 and 23.
pub const DM2: u64 = 11;
/// Train-shaped function of ORG1 (public): `{opener, datasamples, model?*} → {model}`.
pub const TRAIN: u64 = 30;
/// Aggregate-shaped function of ORG1 (public): `{model?*} → {model}`.
pub const AGG: u64 = 31;
/// Plan of ORG1.
pub const PLAN: u64 = 40;

/// `{model: MODEL multiple optional} → {model: MODEL}`.
pub fn aggregate_function(n: u64) -> NewFunction {
    let mut f = new_function(n);
    f.inputs = BTreeMap::from([("model".to_owned(), input(AssetKind::AssetModel, true, true))]);
    f
}

/// `{opener, datasamples, predictions: MODEL} → {performance: PERFORMANCE}`.
pub fn metric_function(n: u64) -> NewFunction {
    let mut f = new_function(n);
    f.inputs.remove("model");
    f.inputs.insert("predictions".to_owned(), input(AssetKind::AssetModel, false, false));
    f.outputs = BTreeMap::from([("performance".to_owned(), output(AssetKind::AssetPerformance, false))]);
    f
}

/// Organizations, DM1/DM2 and their samples, TRAIN and AGG (WAITING), the plan PLAN.
pub fn setup_world(d: &mut dyn Driver) {
    setup_organizations(d, CHANNEL);
    for (n, owner, samples) in [(DM1, ORG1, [20, 21]), (DM2, ORG2, [22, 23])] {
        let mut dm = new_data_manager(n);
        dm.logs_permission = Some(private_permissions(&[]));
        register_data_manager(d, owner, CHANNEL, &dm).expect("data manager");
        let dm_key = key(n);
        let samples = samples.iter().map(|s| new_data_sample(*s, &[dm_key.as_str()])).collect();
        register_data_samples(d, owner, CHANNEL, samples).expect("samples");
    }
    register_function(d, ORG1, CHANNEL, &new_function(TRAIN)).expect("train function");
    register_function(d, ORG1, CHANNEL, &aggregate_function(AGG)).expect("aggregate function");
    register_plan(d, ORG1, &new_plan(PLAN)).expect("plan");
}

/// Builds function `n` (owned by ORG1): WAITING → BUILDING → READY.
pub fn make_ready(d: &mut dyn Driver, n: u64) {
    for action in [FunctionAction::Building, FunctionAction::Ready] {
        apply_function_action(d, ORG1, CHANNEL, &key(n), action as i32).expect("function action");
    }
}

pub fn asset_input(identifier: &str, asset_key: String) -> ComputeTaskInput {
    ComputeTaskInput { identifier: identifier.to_owned(), r#ref: Some(Ref::AssetKey(asset_key)) }
}

pub fn parent_input(identifier: &str, parent: u64, output: &str) -> ComputeTaskInput {
    ComputeTaskInput {
        identifier: identifier.to_owned(),
        r#ref: Some(Ref::ParentTaskOutput(ParentTaskOutputRef {
            parent_task_key: key(parent),
            output_identifier: output.to_owned(),
        })),
    }
}

pub fn task_output(permissions: NewPermissions, transient: bool) -> NewComputeTaskOutput {
    NewComputeTaskOutput { permissions: Some(permissions), transient }
}

/// A TRAIN task of PLAN on data manager `dm` with `samples`, consuming the `model` output of
/// `parents`; a public `model` output; no explicit worker.
pub fn train_task(n: u64, dm: u64, samples: &[u64], parents: &[u64]) -> NewComputeTask {
    let mut inputs = vec![asset_input("opener", key(dm))];
    inputs.extend(samples.iter().map(|s| asset_input("datasamples", key(*s))));
    inputs.extend(parents.iter().map(|p| parent_input("model", *p, "model")));
    NewComputeTask {
        key: key(n),
        function_key: key(TRAIN),
        compute_plan_key: key(PLAN),
        worker: String::new(),
        metadata: BTreeMap::from([("n".to_owned(), n.to_string())]),
        inputs,
        outputs: BTreeMap::from([("model".to_owned(), task_output(public_permissions(), false))]),
    }
}

/// An AGG task of PLAN on `worker`, consuming the `model` output of `parents`.
pub fn aggregate_task(n: u64, worker: &str, parents: &[u64]) -> NewComputeTask {
    NewComputeTask {
        key: key(n),
        function_key: key(AGG),
        compute_plan_key: key(PLAN),
        worker: worker.to_owned(),
        metadata: BTreeMap::new(),
        inputs: parents.iter().map(|p| parent_input("model", *p, "model")).collect(),
        outputs: BTreeMap::from([("model".to_owned(), task_output(public_permissions(), true))]),
    }
}

// ---------------------------------------------------------------------------------------------
// Typed calls.

pub fn register_tasks(d: &mut dyn Driver, msp: &str, tasks: &[NewComputeTask]) -> Res<Vec<ComputeTask>> {
    let param = RegisterTasksParam { tasks: tasks.to_vec() };
    call::<_, RegisterTasksResponse>(d, msp, CHANNEL, method::REGISTER_TASKS, &param).map(|r| r.tasks)
}

pub fn get_task(d: &mut dyn Driver, key: &str) -> Res<ComputeTask> {
    call(d, ORG2, CHANNEL, GET_TASK, &GetTaskParam { key: key.to_owned() })
}

pub fn apply_task_action(d: &mut dyn Driver, msp: &str, key: &str, action: ComputeTaskAction, log: &str) -> Res<()> {
    apply_raw_action(d, msp, key, action as i32, log)
}

fn apply_raw_action(d: &mut dyn Driver, msp: &str, key: &str, action: i32, log: &str) -> Res<()> {
    let param = ApplyTaskActionParam { compute_task_key: key.to_owned(), action, log: log.to_owned() };
    call::<_, ApplyTaskActionResponse>(d, msp, CHANNEL, APPLY_TASK_ACTION, &param).map(|_| ())
}

pub fn query_tasks(
    d: &mut dyn Driver,
    filter: &TaskQueryFilter,
    page_token: &str,
    page_size: u32,
) -> Res<QueryTasksResponse> {
    let param = QueryTasksParam { page_token: page_token.to_owned(), page_size, filter: Some(filter.clone()) };
    call(d, ORG1, CHANNEL, QUERY_TASKS, &param)
}

fn status_of(d: &mut dyn Driver, n: u64) -> ComputeTaskStatus {
    let task = get_task(d, &key(n)).expect("GetTask");
    ComputeTaskStatus::try_from(task.status).expect("known status")
}

fn keys_of(tasks: &[ComputeTask]) -> Vec<String> {
    tasks.iter().map(|t| t.key.clone()).collect()
}

fn perm(public: bool, ids: &[&str]) -> Permission {
    Permission { public, authorized_ids: strings(ids) }
}

/// Checks one COMPUTE_TASK/UPDATED event and returns the task it carries.
#[track_caller]
fn task_event(event: &orchestrator_proto::Event, n: u64, status: ComputeTaskStatus, reason: &str) -> ComputeTask {
    let asset = check_event(
        event,
        AssetKind::AssetComputeTask,
        EventKind::EventAssetUpdated,
        &key(n),
        CHANNEL,
        &[("reason", reason)],
    );
    let event::Asset::ComputeTask(task) = asset else { panic!("not a task: {asset:?}") };
    assert_eq!(task.status, status as i32, "status in {event:?}");
    task
}

/// A task event of a cascade: the task without inputs nor outputs.
#[track_caller]
fn cascade_event(
    d: &mut dyn Driver,
    event: &orchestrator_proto::Event,
    n: u64,
    status: ComputeTaskStatus,
    reason: &str,
) {
    let task = task_event(event, n, status, reason);
    let stored = get_task(d, &key(n)).expect("GetTask");
    assert!(!stored.inputs.is_empty() && !stored.outputs.is_empty());
    assert_eq!(
        task,
        ComputeTask { inputs: Vec::new(), outputs: BTreeMap::new(), ..stored },
        "cascaded events carry the task without inputs and outputs"
    );
}

// ---------------------------------------------------------------------------------------------
// Registration.

pub fn task_registration(d: &mut dyn Driver) {
    setup_world(d);

    // A composite-like graph over two organizations, sent children first: round 1 trains on
    // both data managers (workers inferred), an aggregate on ORG1 (explicit worker), round 2
    // trains consuming the aggregate.
    let t101 = train_task(101, DM1, &[20, 21], &[]);
    let t102 = train_task(102, DM2, &[22, 23], &[]);
    let t103 = aggregate_task(103, ORG1, &[101, 102]);
    let t104 = train_task(104, DM1, &[20], &[103]);
    let t105 = train_task(105, DM2, &[22], &[103]);
    let request = [t105.clone(), t103.clone(), t101.clone(), t104.clone(), t102.clone()];
    let before = d.events().len();
    let tasks = register_tasks(d, ORG1, &request).expect("register the graph");

    // Kahn, request order: [101, 102] have no parent; 103 follows; its children in request order.
    assert_eq!(keys_of(&tasks), [key(101), key(102), key(103), key(105), key(104)], "response in topological order");
    let events = events_since(d, before);
    assert_eq!(events.len(), 5);
    for (event, task) in events.iter().zip(&tasks) {
        let asset =
            check_event(event, AssetKind::AssetComputeTask, EventKind::EventAssetCreated, &task.key, CHANNEL, &[]);
        assert_eq!(asset, event::Asset::ComputeTask(task.clone()), "full task in the event");
        assert_eq!(event.timestamp, task.creation_date, "one transaction time");
    }
    let by_key: BTreeMap<&str, &ComputeTask> = tasks.iter().map(|t| (t.key.as_str(), t)).collect();
    let sent: BTreeMap<String, &NewComputeTask> = request.iter().map(|t| (t.key.clone(), t)).collect();
    for task in &tasks {
        let new = sent[&task.key];
        assert_eq!(task.owner, ORG1);
        assert_eq!(task.compute_plan_key, key(PLAN));
        assert_eq!(task.function_key, new.function_key);
        assert_eq!(task.metadata, new.metadata);
        assert_eq!(task.inputs, new.inputs, "inputs as sent, in order");
        assert_eq!(task.status, WFBS as i32, "functions still WAITING: waiting for a builder slot");
        let output = &task.outputs["model"];
        assert_eq!(output.transient, new.outputs["model"].transient);
        let permissions = output.permissions.clone().expect("permissions");
        assert_eq!(permissions.process, Some(perm(true, &[ORG1])), "owner appended");
        assert_eq!(permissions.download, permissions.process);
    }
    let expect = |k: u64, worker: &str, rank: i32, logs: Permission| {
        let t = by_key[key(k).as_str()];
        assert_eq!((t.worker.as_str(), t.rank), (worker, rank), "task {k}");
        assert_eq!(t.logs_permission, Some(logs), "logs permission of {k}");
    };
    // Train tasks take their data manager's logs permission; others unite their parents'.
    expect(101, ORG1, 0, perm(false, &[ORG1]));
    expect(102, ORG2, 0, perm(false, &[ORG2]));
    expect(103, ORG1, 1, perm(false, &[ORG1, ORG2]));
    expect(104, ORG1, 2, perm(false, &[ORG1]));
    expect(105, ORG2, 2, perm(false, &[ORG2]));
    assert!(by_key[key(103).as_str()].outputs["model"].transient);
    for task in &tasks {
        assert_eq!(&get_task(d, &task.key).expect("GetTask"), task);
    }
    expect_err(
        get_task(d, &key(199)),
        ErrorKind::NotFound,
        &format!("OE0002: computetask with key \"{}\" not found", key(199)),
    );
    let other: Res<ComputeTask> = call(d, ORG1, OTHER_CHANNEL, GET_TASK, &GetTaskParam { key: key(101) });
    expect_err(other, ErrorKind::NotFound, "computetask");

    // The plan's functions, for QueryFunctions (in function creation order).
    let functions = query_functions(d, CHANNEL, "", 0, Some(&key(PLAN))).expect("QueryFunctions");
    assert_eq!(functions.functions.iter().map(|f| f.key.clone()).collect::<Vec<_>>(), [key(TRAIN), key(AGG)]);

    // Stored parents, explicit worker equal to the data manager owner, cross-plan parents, a
    // request by ORG2 (worker ORG2 may process the public outputs of ORG1's tasks).
    let plan2 = register_plan(d, ORG2, &new_plan(41)).expect("ORG2's plan");
    let mut t106 = train_task(106, DM2, &[23], &[104, 105]);
    t106.worker = ORG2.to_owned();
    t106.compute_plan_key = plan2.key.clone();
    let t106 = register_tasks(d, ORG2, &[t106]).expect("cross-plan child").remove(0);
    assert_eq!((t106.owner.as_str(), t106.worker.as_str(), t106.rank), (ORG2, ORG2, 3));
    assert_eq!(t106.logs_permission, Some(perm(false, &[ORG2])));
    assert_eq!(t106.outputs["model"].permissions.clone().expect("p").process, Some(perm(true, &[ORG2])));
    let functions = query_functions(d, CHANNEL, "", 0, Some(&plan2.key)).expect("QueryFunctions");
    assert_eq!(functions.functions.len(), 1);

    // --- Initial statuses (docs/business-rules.md §8.2) ------------------------------------------
    // Functions in every status: READY (32), BUILDING (33), FAILED (34), CANCELED (35).
    for n in 32..=35 {
        register_function(d, ORG1, CHANNEL, &new_function(n)).expect("function");
    }
    make_ready(d, 32);
    apply_function_action(d, ORG1, CHANNEL, &key(33), FunctionAction::Building as i32).expect("b");
    apply_function_action(d, ORG1, CHANNEL, &key(34), FunctionAction::Building as i32).expect("b");
    apply_function_action(d, ORG1, CHANNEL, &key(34), FunctionAction::Failed as i32).expect("f");
    apply_function_action(d, ORG1, CHANNEL, &key(35), FunctionAction::Canceled as i32).expect("c");
    let with_function =
        |n: u64, f: u64, parents: &[u64]| NewComputeTask { function_key: key(f), ..train_task(n, DM1, &[20], parents) };
    let batch = [
        with_function(110, 32, &[]),
        with_function(111, 32, &[101]),
        with_function(112, 33, &[]),
        with_function(113, 34, &[]),
        with_function(114, 35, &[]),
        with_function(115, 32, &[113]),
        with_function(116, 32, &[114]),
        with_function(117, 33, &[112]),
    ];
    let before = d.events().len();
    let created = register_tasks(d, ORG1, &batch).expect("every initial status");
    let statuses: Vec<(String, i32)> = created.iter().map(|t| (t.key.clone(), t.status)).collect();
    assert_eq!(
        statuses,
        [
            (key(110), WFES as i32),
            (key(111), WFPT as i32),
            (key(112), BLD as i32),
            (key(113), FAILED as i32),
            (key(114), CANCELED as i32),
            (key(117), BLD as i32),
            (key(115), CANCELED as i32),
            (key(116), CANCELED as i32),
        ]
    );
    assert_eq!(events_since(d, before).len(), 8, "only CREATED events");
    assert_eq!(
        get_plan(d, ORG1, &key(PLAN)).expect("plan").failure_date,
        None,
        "a task born FAILED does not fail its plan"
    );
}

/// Registering `tasks` as ORG1 fails with `kind` and exactly `message`.
#[track_caller]
fn refuse(d: &mut dyn Driver, tasks: &[NewComputeTask], kind: ErrorKind, message: &str) {
    let err = expect_err(register_tasks(d, ORG1, tasks), kind, message);
    assert_eq!(err.message, message);
}

pub fn task_registration_errors(d: &mut dyn Driver) {
    use AssetKind::AssetModel as MODEL;
    setup_world(d);
    // More fixtures: a private data manager of ORG2 (12) with sample 24, a private function of
    // ORG2 (36), a metric function (37), an aggregate with a multiple output (38), ORG2's plan.
    let mut dm3 = new_data_manager(12);
    dm3.new_permissions = Some(private_permissions(&[]));
    register_data_manager(d, ORG2, CHANNEL, &dm3).expect("private dm");
    register_data_samples(d, ORG2, CHANNEL, vec![new_data_sample(24, &[key(12).as_str()])]).expect("sample");
    let mut private = new_function(36);
    private.new_permissions = Some(private_permissions(&[]));
    register_function(d, ORG2, CHANNEL, &private).expect("private function");
    register_function(d, ORG1, CHANNEL, &metric_function(37)).expect("metric");
    let mut multiple = aggregate_function(38);
    multiple.outputs = BTreeMap::from([("model".to_owned(), output(MODEL, true))]);
    register_function(d, ORG1, CHANNEL, &multiple).expect("multiple output");
    register_plan(d, ORG2, &new_plan(41)).expect("ORG2's plan");
    register_tasks(d, ORG1, &[train_task(101, DM1, &[20], &[])]).expect("a stored task");
    let before = d.events().len();

    for Refusal { what, batch, kind, message } in registration_refusals() {
        let err = register_tasks(d, ORG1, &batch).expect_err(what);
        assert_eq!((err.kind, err.message.as_str()), (kind, message.as_str()), "{what}");
        if let Some(code) = kind.code() {
            assert!(message.starts_with(&format!("{code}: ")), "{what}: the message should start with {code}");
        }
    }

    // Nothing of all that was stored or emitted; the valid task still registers.
    assert_no_event_since(d, before);
    expect_err(get_task(d, &key(161)), ErrorKind::NotFound, "computetask");
    let registered = register_tasks(d, ORG1, &[valid_task(), metric_task(161, 101)]).expect("valid batch");
    assert_eq!(registered.len(), 2);
    assert_eq!(registered[1].worker, ORG1);
}

/// A batch ORG1 must see refused, and the error it gets, exactly.
struct Refusal {
    /// What the case checks; a failure names it.
    what: &'static str,
    batch: Vec<NewComputeTask>,
    kind: ErrorKind,
    message: String,
}

fn refusal(what: &'static str, batch: Vec<NewComputeTask>, kind: ErrorKind, message: impl Into<String>) -> Refusal {
    Refusal { what, batch, kind, message: message.into() }
}

/// The task most refusals alter: TRAIN on DM1 with samples 20 and 21, child of the stored 101.
fn valid_task() -> NewComputeTask {
    train_task(150, DM1, &[20, 21], &[101])
}

/// `task` after `change`.
fn altered(mut task: NewComputeTask, change: impl FnOnce(&mut NewComputeTask)) -> NewComputeTask {
    change(&mut task);
    task
}

/// [`valid_task`] with one more input.
fn with_input(input: ComputeTaskInput) -> NewComputeTask {
    altered(valid_task(), |t| t.inputs.push(input))
}

/// A task of the metric function (37) on DM1 and sample 21, scoring the `model` output of `parent`.
fn metric_task(n: u64, parent: u64) -> NewComputeTask {
    NewComputeTask {
        key: key(n),
        function_key: key(37),
        compute_plan_key: key(PLAN),
        worker: String::new(),
        metadata: BTreeMap::new(),
        inputs: vec![
            asset_input("opener", key(DM1)),
            asset_input("datasamples", key(21)),
            parent_input("predictions", parent, "model"),
        ],
        outputs: BTreeMap::from([("performance".to_owned(), task_output(public_permissions(), false))]),
    }
}

/// The cases of [`task_registration_errors`], in the order of RegisterTasks' checks
/// (docs/business-rules.md §8.1), each run on the world that function builds.
fn registration_refusals() -> Vec<Refusal> {
    use ErrorKind::{BadRequest, Conflict, InvalidAsset, NotFound, PermissionDenied};
    let invalid = |detail: &str| format!("OE0101: computetask is not valid: {detail}");
    let exists = |n: u64| format!("OE0006: computetask with key \"{}\" already exists", key(n));
    let cyclic = |n: usize| {
        format!("OE0101: cyclic dependency in compute plan graph or unknown task parent, unsorted_tasks_count: {n}")
    };
    let not_found = |asset: &str, n: u64| format!("OE0002: {asset} with key \"{}\" not found", key(n));
    let invalid_asset = |m: &str| format!("OE0101: {m}");
    let no_plan = || altered(valid_task(), |t| t.compute_plan_key = key(49));
    let tk = key(150);
    vec![
        // --- 1. Empty batch ----------------------------------------------------------------
        refusal("empty batch", vec![], BadRequest, "OE0003: no task to register"),
        // --- 2. Validation, any task of the batch ------------------------------------------
        refusal(
            "uppercase key in the second task",
            vec![valid_task(), altered(valid_task(), |t| t.key = key(0xabc).to_uppercase())],
            InvalidAsset,
            invalid("key: must be a valid UUID."),
        ),
        refusal(
            "blank and malformed keys",
            vec![altered(valid_task(), |t| {
                t.key.clear();
                t.function_key = "x".to_owned();
                t.compute_plan_key.clear();
            })],
            InvalidAsset,
            invalid("compute_plan_key: cannot be blank; function_key: must be a valid UUID; key: cannot be blank."),
        ),
        refusal(
            "input without identifier",
            vec![with_input(ComputeTaskInput { identifier: String::new(), r#ref: Some(Ref::AssetKey(key(20))) })],
            InvalidAsset,
            invalid("inputs: (identifier: cannot be blank.)."),
        ),
        refusal(
            "input without reference",
            vec![with_input(ComputeTaskInput { identifier: "datasamples".to_owned(), r#ref: None })],
            InvalidAsset,
            invalid("inputs: (Ref: cannot be blank.)."),
        ),
        refusal(
            "empty input",
            vec![with_input(ComputeTaskInput::default())],
            InvalidAsset,
            invalid("inputs: (Ref: cannot be blank; identifier: cannot be blank.)."),
        ),
        refusal(
            "input asset key not a UUID",
            vec![with_input(asset_input("datasamples", "abc".to_owned()))],
            InvalidAsset,
            invalid("inputs: (AssetKey: must be a valid UUID.)."),
        ),
        refusal(
            "blank input asset key",
            vec![with_input(asset_input("datasamples", String::new()))],
            InvalidAsset,
            invalid("inputs: (AssetKey: cannot be blank.)."),
        ),
        refusal(
            "blank parent output reference",
            vec![with_input(ComputeTaskInput {
                identifier: "model".to_owned(),
                r#ref: Some(Ref::ParentTaskOutput(ParentTaskOutputRef::default())),
            })],
            InvalidAsset,
            invalid("inputs: (output_identifier: cannot be blank; parent_task_key: cannot be blank.)."),
        ),
        refusal(
            "output without identifier",
            vec![altered(valid_task(), |t| {
                t.outputs.insert(String::new(), task_output(public_permissions(), false));
            })],
            InvalidAsset,
            invalid("outputs: cannot be blank."),
        ),
        refusal(
            "output without permissions",
            vec![altered(valid_task(), |t| {
                t.outputs.insert("model".to_owned(), NewComputeTaskOutput { permissions: None, transient: false });
            })],
            InvalidAsset,
            invalid("outputs: (permissions: cannot be blank.)."),
        ),
        refusal(
            "metadata value too long",
            vec![altered(valid_task(), |t| {
                t.metadata.insert("k".to_owned(), "v".repeat(101));
            })],
            InvalidAsset,
            invalid("metadata: OE0101: metadata value for key \"k\" is too long."),
        ),
        // --- 3. Existence: stored keys first, then keys repeated in the batch --------------
        refusal("stored key", vec![valid_task(), train_task(101, DM1, &[20], &[])], Conflict, exists(101)),
        refusal("key twice in the batch", vec![valid_task(), valid_task()], Conflict, exists(150)),
        // --- 4. Topological sort -----------------------------------------------------------
        refusal(
            "cycle",
            vec![
                train_task(152, DM1, &[20], &[153]),
                train_task(153, DM1, &[20], &[152]),
                train_task(154, DM1, &[20], &[]),
            ],
            InvalidAsset,
            cyclic(2),
        ),
        refusal("unknown parent", vec![valid_task(), train_task(155, DM1, &[20], &[999])], InvalidAsset, cyclic(1)),
        refusal(
            "own parent",
            vec![train_task(156, DM1, &[20], &[156]), train_task(157, DM1, &[20], &[156])],
            InvalidAsset,
            cyclic(2),
        ),
        // --- 5.1 Plan, 5.3 function: in the sorted order -----------------------------------
        refusal("unknown plan", vec![no_plan()], NotFound, not_found("computeplan", 49)),
        refusal(
            "plan of another organization",
            vec![altered(valid_task(), |t| t.compute_plan_key = key(41))],
            PermissionDenied,
            "OE0102: Cannot register tasks to a compute plan you don't own",
        ),
        refusal(
            "unknown function",
            vec![altered(valid_task(), |t| t.function_key = key(39))],
            NotFound,
            not_found("function", 39),
        ),
        refusal(
            "unknown plan and function",
            vec![altered(no_plan(), |t| t.function_key = key(39))],
            NotFound,
            not_found("computeplan", 49),
        ),
        // The child (bad function) comes first in the request, its parent (bad plan) first in the
        // sorted order: the parent's error wins.
        refusal(
            "errors in sorted order",
            vec![altered(train_task(158, DM1, &[20], &[150]), |t| t.function_key = key(39)), no_plan()],
            NotFound,
            not_found("computeplan", 49),
        ),
        refusal(
            "private function of another organization",
            vec![altered(valid_task(), |t| t.function_key = key(36))],
            PermissionDenied,
            format!("OE0102: not authorized to process function \"{}\"", key(36)),
        ),
        // --- 5.6 Output permissions, 5.7 worker --------------------------------------------
        refusal(
            "worker not the data manager's owner",
            vec![altered(valid_task(), |t| t.worker = ORG2.to_owned())],
            BadRequest,
            format!("OE0003: Specified worker \"{ORG2}\" does not match data manager owner: \"{ORG1}\""),
        ),
        refusal(
            "no worker to infer",
            vec![aggregate_task(159, "", &[101])],
            BadRequest,
            "OE0003: Worker cannot be inferred and must be explicitly set",
        ),
        refusal(
            "unregistered worker",
            vec![aggregate_task(159, UNREGISTERED, &[101])],
            NotFound,
            format!("OE0002: organization with key \"{UNREGISTERED}\" not found"),
        ),
        refusal(
            "output permission for an unregistered organization",
            vec![altered(aggregate_task(159, "", &[101]), |t| {
                t.outputs.insert("model".to_owned(), task_output(private_permissions(&[UNREGISTERED]), false));
            })],
            BadRequest,
            "OE0003: invalid permission input values",
        ),
        // --- 5.10 Inputs (docs/business-rules.md §8.4) -------------------------------------------
        refusal(
            "undeclared input",
            vec![with_input(asset_input("foo", key(20)))],
            InvalidAsset,
            invalid_asset("unknown task input: this identifier was not declared in the Function: \"foo\""),
        ),
        refusal(
            "single input given twice",
            vec![with_input(asset_input("opener", key(DM1)))],
            InvalidAsset,
            invalid_asset(
                "duplicate task input: this identifier is present multiple times in the task inputs, but it was not declared as \"Multiple\" in the Function: \"opener\"",
            ),
        ),
        refusal(
            "mandatory input missing",
            vec![train_task(150, DM1, &[], &[101])],
            InvalidAsset,
            invalid_asset("missing task input: this identifier is required by the Function: \"datasamples\""),
        ),
        refusal(
            "opener from a parent",
            vec![altered(valid_task(), |t| t.inputs[0] = parent_input("opener", 101, "model"))],
            InvalidAsset,
            invalid_asset("invalid task input \"opener\": openers must be referenced using an asset key"),
        ),
        refusal(
            "data samples from a parent",
            vec![with_input(parent_input("datasamples", 101, "model"))],
            InvalidAsset,
            invalid_asset("invalid task input \"datasamples\": data samples must be referenced using an asset key"),
        ),
        refusal("unknown data manager", vec![train_task(150, 19, &[20], &[])], NotFound, not_found("datamanager", 19)),
        refusal(
            "private data manager of another organization",
            vec![train_task(150, 12, &[24], &[])],
            PermissionDenied,
            format!("OE0102: not authorized to process datamanager \"{}\"", key(12)),
        ),
        refusal(
            "unknown data sample",
            vec![train_task(150, DM1, &[20, 29], &[])],
            NotFound,
            not_found("datasample", 29),
        ),
        refusal(
            "data sample of another data manager",
            vec![train_task(150, DM1, &[20, 22], &[])],
            InvalidAsset,
            "OE0101: datasamples do not share a common manager",
        ),
        refusal("unknown model", vec![with_input(asset_input("model", key(28)))], NotFound, not_found("model", 28)),
        refusal(
            "undeclared parent output",
            vec![with_input(parent_input("model", 101, "nope"))],
            InvalidAsset,
            invalid_asset(&format!(
                "invalid task input \"model\": parent task {}: function output not found: \"nope\"",
                key(101)
            )),
        ),
        // Parents created earlier in the same batch are visible to later tasks.
        refusal(
            "parent output of another kind",
            vec![
                altered(train_task(162, DM1, &[20], &[]), |t| t.inputs.push(parent_input("model", 161, "performance"))),
                metric_task(161, 101),
            ],
            InvalidAsset,
            invalid_asset(
                "invalid task input \"performance\": mismatching task input asset kinds: expecting ASSET_MODEL but parent task output has kind ASSET_PERFORMANCE",
            ),
        ),
        refusal(
            "multiple output as a single input",
            vec![altered(aggregate_task(163, ORG1, &[101]), |t| t.function_key = key(38)), metric_task(164, 163)],
            InvalidAsset,
            invalid_asset("invalid task input \"predictions\": multiple task output used as single task input"),
        ),
        refusal(
            "parent output the worker may not process",
            vec![
                altered(train_task(165, DM1, &[20], &[]), |t| {
                    t.outputs.insert("model".to_owned(), task_output(private_permissions(&[]), false));
                }),
                train_task(166, DM2, &[22], &[165]),
            ],
            PermissionDenied,
            format!(
                "OE0102: invalid task input \"model\": worker \"{ORG2}\" doesn't have permission to process output \"{}\" of task model",
                key(165)
            ),
        ),
        // --- 5.10 Outputs ------------------------------------------------------------------
        refusal(
            "undeclared output",
            vec![altered(valid_task(), |t| {
                t.outputs.insert("extra".to_owned(), task_output(public_permissions(), false));
            })],
            InvalidAsset,
            invalid_asset(&format!(
                "invalid task {tk}, unknown task output: this identifier was not declared in the Function: \"extra\""
            )),
        ),
        refusal(
            "declared output missing",
            vec![altered(valid_task(), |t| t.outputs.clear())],
            InvalidAsset,
            invalid_asset(&format!(
                "invalid task {tk}, missing task output: this identifier is required by the Function: \"model\""
            )),
        ),
        refusal(
            "private performance output",
            vec![altered(metric_task(150, 101), |t| {
                t.outputs.insert("performance".to_owned(), task_output(private_permissions(&[ORG2]), false));
            })],
            InvalidAsset,
            invalid_asset(&format!(
                "invalid task {tk}, invalid task output \"performance\": a PERFORMANCE output should be public"
            )),
        ),
        refusal(
            "transient performance output",
            vec![altered(metric_task(150, 101), |t| {
                t.outputs.insert("performance".to_owned(), task_output(public_permissions(), true));
            })],
            InvalidAsset,
            invalid_asset(&format!(
                "invalid task {tk}, invalid task output \"performance\": a PERFORMANCE output cannot be transient"
            )),
        ),
    ]
}

pub fn task_resend(d: &mut dyn Driver) {
    setup_world(d);
    let batch =
        [aggregate_task(103, ORG1, &[101, 102]), train_task(101, DM1, &[20], &[]), train_task(102, DM2, &[22], &[])];
    let first = register_tasks(d, ORG1, &batch).expect("register");
    assert_eq!(keys_of(&first), [key(101), key(102), key(103)]);

    // The same batch again (a retry after a timeout): the stored tasks, same order, no event.
    let before = d.events().len();
    assert_eq!(register_tasks(d, ORG1, &batch).expect("re-send"), first);
    assert_eq!(register_tasks(d, ORG1, &batch[1..]).expect("part of it"), first[..2].to_vec());
    assert_no_event_since(d, before);
    // The answer reflects the current state.
    apply_function_action(d, ORG1, CHANNEL, &key(TRAIN), FunctionAction::Building as i32).expect("build");
    let again = register_tasks(d, ORG1, &batch).expect("re-send after a change");
    assert_eq!(again[0].status, BLD as i32);
    assert_eq!(again[2], first[2]);

    // Same keys with another content, another requester, or with new keys: ALREADY_EXISTS
    // naming the first stored key of the request.
    let before = d.events().len();
    let exists = |n: u64| format!("OE0006: computetask with key \"{}\" already exists", key(n));
    let mut changed = batch.clone();
    changed[2].metadata.insert("other".to_owned(), "content".to_owned());
    refuse(d, &changed, ErrorKind::Conflict, &exists(103));
    let mut changed = batch.clone();
    changed[1].outputs.insert("model".to_owned(), task_output(public_permissions(), true));
    refuse(d, &changed, ErrorKind::Conflict, &exists(103));
    let mut changed = batch.clone();
    changed[0].worker = ORG2.to_owned();
    refuse(d, &changed, ErrorKind::Conflict, &exists(103));
    expect_err(register_tasks(d, ORG2, &batch), ErrorKind::Conflict, &exists(103));
    let mixed = [train_task(104, DM1, &[20], &[101]), batch[2].clone()];
    refuse(d, &mixed, ErrorKind::Conflict, &exists(102));
    assert_no_event_since(d, before);
    expect_err(get_task(d, &key(104)), ErrorKind::NotFound, "computetask");
}

// ---------------------------------------------------------------------------------------------
// The state machine.

pub fn task_actions(d: &mut dyn Driver) {
    use ComputeTaskAction as A;
    setup_world(d);
    make_ready(d, TRAIN);
    make_ready(d, AGG);
    // 101 (ORG1), 102 (worker ORG2) → 103 aggregate on ORG1 → 104, 105 on ORG2.
    let batch = [
        train_task(101, DM1, &[20], &[]),
        train_task(102, DM2, &[22], &[]),
        aggregate_task(103, ORG1, &[101, 102]),
        train_task(104, DM2, &[22], &[103]),
        train_task(105, DM2, &[23], &[103]),
    ];
    register_tasks(d, ORG1, &batch).expect("register");
    for (n, status) in [(101, WFES), (102, WFES), (103, WFPT), (104, WFPT), (105, WFPT)] {
        assert_eq!(status_of(d, n), status, "task {n}");
    }

    // --- Permissions by action, whatever the status ----------------------------------------
    let before = d.events().len();
    let denied = "OE0102: only task owner can update it";
    for (msp, action) in [
        (ORG1, A::TaskActionExecuting as i32),
        (ORG1, A::TaskActionDone as i32),
        (UNREGISTERED, A::TaskActionCanceled as i32),
        (UNREGISTERED, A::TaskActionFailed as i32),
        (ORG2, A::TaskActionBuildStarted as i32),
        (ORG2, A::TaskActionBuildFinished as i32),
        (ORG2, A::TaskActionUnknown as i32),
        (ORG1, A::TaskActionUnknown as i32),
        (ORG2, 99),
    ] {
        expect_err(apply_raw_action(d, msp, &key(102), action, ""), ErrorKind::PermissionDenied, denied);
    }
    expect_err(
        apply_task_action(d, ORG1, &key(199), A::TaskActionCanceled, ""),
        ErrorKind::NotFound,
        &format!("OE0002: computetask with key \"{}\" not found", key(199)),
    );
    // --- Illegal transitions: plain errors (UNKNOWN) ---------------------------------------
    let err = expect_err(
        apply_task_action(d, ORG2, &key(102), A::TaskActionDone, ""),
        ErrorKind::Unknown,
        "event transitionDone inappropriate in current state STATUS_WAITING_FOR_EXECUTOR_SLOT",
    );
    assert!(!err.message.starts_with("OE"));
    expect_err(
        apply_task_action(d, ORG1, &key(103), A::TaskActionExecuting, ""),
        ErrorKind::Unknown,
        "event transitionExecuting inappropriate in current state STATUS_WAITING_FOR_PARENT_TASKS",
    );
    assert_no_event_since(d, before);

    // --- T5, T6: one parent DONE, the aggregate still waits --------------------------------
    let before = d.events().len();
    apply_task_action(d, ORG1, &key(101), A::TaskActionExecuting, "").expect("T5");
    apply_task_action(d, ORG1, &key(101), A::TaskActionDone, "model uploaded").expect("T6");
    let events = events_since(d, before);
    assert_eq!(events.len(), 2, "{events:?}");
    let full = task_event(&events[0], 101, EXE, "User action");
    assert_eq!(
        ComputeTask { status: WFES as i32, ..full },
        get_task(d, &key(101)).map(|t| ComputeTask { status: WFES as i32, ..t }).expect("get"),
        "the acted task is complete in its event"
    );
    assert!(!task_event(&events[1], 101, DONE, "model uploaded").inputs.is_empty());
    assert_eq!(status_of(d, 103), WFPT);

    // --- T4: the last parent DONE releases the aggregate (cascade event without I/O) -------
    apply_task_action(d, ORG2, &key(102), A::TaskActionExecuting, "").expect("T5");
    let before = d.events().len();
    apply_task_action(d, ORG2, &key(102), A::TaskActionDone, "").expect("T6");
    let events = events_since(d, before);
    assert_eq!(events.len(), 2, "{events:?}");
    task_event(&events[0], 102, DONE, "User action");
    let reason = format!("Last parent task {} done", key(102));
    cascade_event(d, &events[1], 103, WFES, &reason);
    assert_eq!(events[0].timestamp, events[1].timestamp);
    assert_eq!((status_of(d, 104), status_of(d, 105)), (WFPT, WFPT));
    expect_err(
        apply_task_action(d, ORG2, &key(102), A::TaskActionDone, ""),
        ErrorKind::Unknown,
        "event transitionDone inappropriate in current state STATUS_DONE",
    );

    // --- T7 by the owner, no cascade -------------------------------------------------------
    let before = d.events().len();
    apply_task_action(d, ORG1, &key(104), A::TaskActionCanceled, "not needed").expect("T7");
    let events = events_since(d, before);
    assert_eq!(events.len(), 1);
    task_event(&events[0], 104, CANCELED, "not needed");
    for action in [A::TaskActionCanceled, A::TaskActionFailed] {
        expect_err(
            apply_task_action(d, ORG2, &key(104), action, ""),
            ErrorKind::Unknown,
            "inappropriate in current state STATUS_CANCELED",
        );
    }

    // --- T8: the plan fails (no plan event), children keep their status -------------------
    apply_task_action(d, ORG1, &key(103), A::TaskActionExecuting, "").expect("T5");
    let before = d.events().len();
    apply_task_action(d, ORG1, &key(103), A::TaskActionFailed, "").expect("T8");
    let events = events_since(d, before);
    assert_eq!(events.len(), 1, "only the task event: {events:?}");
    task_event(&events[0], 103, FAILED, "User action");
    let plan = get_plan(d, ORG1, &key(PLAN)).expect("plan");
    assert_eq!(plan.failure_date, events[0].timestamp);
    assert_eq!(status_of(d, 105), WFPT, "no cascade to children");
    // Worker ORG2 fails its waiting task: the plan keeps its first failure date.
    apply_task_action(d, ORG2, &key(105), A::TaskActionFailed, "").expect("T8 from WFPT");
    assert_eq!(get_plan(d, ORG1, &key(PLAN)).expect("plan").failure_date, plan.failure_date);

    // --- Every refused transition from every status, by names ------------------------------
    let checks: [(u64, &str, A, &str); 4] = [
        (101, ORG1, A::TaskActionExecuting, "event transitionExecuting inappropriate in current state STATUS_DONE"),
        (103, ORG1, A::TaskActionDone, "event transitionDone inappropriate in current state STATUS_FAILED"),
        (105, ORG2, A::TaskActionCanceled, "event transitionCanceled inappropriate in current state STATUS_FAILED"),
        (101, ORG1, A::TaskActionFailed, "event transitionFailed inappropriate in current state STATUS_DONE"),
    ];
    let before = d.events().len();
    for (n, msp, action, message) in checks {
        let err = expect_err(apply_task_action(d, msp, &key(n), action, ""), ErrorKind::Unknown, message);
        assert_eq!(err.message, message);
    }
    assert_no_event_since(d, before);

    // --- A terminated plan does not block task actions -------------------------------------
    let second = register_plan(d, ORG1, &new_plan(41)).expect("plan");
    let mut t = train_task(110, DM1, &[20], &[]);
    t.compute_plan_key = second.key.clone();
    register_tasks(d, ORG1, &[t]).expect("task");
    super::computeplan::cancel_plan(d, ORG1, &second.key).expect("cancel");
    apply_task_action(d, ORG1, &key(110), A::TaskActionExecuting, "").expect("executing");
    apply_task_action(d, ORG1, &key(110), A::TaskActionDone, "").expect("done");
    assert_eq!(status_of(d, 110), DONE);
}

pub fn task_function_builds(d: &mut dyn Driver) {
    use ComputeTaskAction as A;
    setup_world(d);
    let train = key(TRAIN);
    let batch =
        [train_task(101, DM1, &[20], &[]), train_task(102, DM2, &[22], &[101]), aggregate_task(103, ORG1, &[101])];
    register_tasks(d, ORG1, &batch).expect("register");

    // T1: BUILDING moves the function's tasks waiting for a builder slot, after its own event.
    let before = d.events().len();
    apply_function_action(d, ORG1, CHANNEL, &train, FunctionAction::Building as i32).expect("build");
    let events = events_since(d, before);
    assert_eq!(events.len(), 3, "{events:?}");
    check_event(
        &events[0],
        AssetKind::AssetFunction,
        EventKind::EventAssetUpdated,
        &train,
        CHANNEL,
        &[("reason", "User action")],
    );
    cascade_event(d, &events[1], 101, BLD, "User action");
    cascade_event(d, &events[2], 102, BLD, "User action");
    assert_eq!(status_of(d, 103), WFBS, "another function's task");
    // A task registered while its function builds starts BUILDING.
    register_tasks(d, ORG1, &[train_task(104, DM1, &[21], &[])]).expect("register");
    assert_eq!(status_of(d, 104), BLD);

    // T2/T3: READY sends them to an executor slot or to their parents.
    let before = d.events().len();
    apply_function_action(d, ORG1, CHANNEL, &train, FunctionAction::Ready as i32).expect("ready");
    let events = events_since(d, before);
    assert_eq!(events.len(), 4, "{events:?}");
    let built = format!("Function {train} finished building");
    cascade_event(d, &events[1], 101, WFES, &built);
    cascade_event(d, &events[2], 102, WFPT, &built);
    cascade_event(d, &events[3], 104, WFES, &built);
    // Tasks registered after READY.
    register_tasks(d, ORG1, &[train_task(105, DM2, &[23], &[101]), train_task(106, DM2, &[23], &[])])
        .expect("register");
    assert_eq!((status_of(d, 105), status_of(d, 106)), (WFPT, WFES));

    // The aggregate builds while its parent finishes: T4 skips it (BUILDING), READY checks the
    // parents itself.
    apply_function_action(d, ORG1, CHANNEL, &key(AGG), FunctionAction::Building as i32).expect("build");
    assert_eq!(status_of(d, 103), BLD);
    apply_task_action(d, ORG1, &key(101), A::TaskActionExecuting, "").expect("T5");
    let before = d.events().len();
    apply_task_action(d, ORG1, &key(101), A::TaskActionDone, "").expect("T6");
    let events = events_since(d, before);
    let reason = format!("Last parent task {} done", key(101));
    assert_eq!(events.len(), 3, "{events:?}");
    cascade_event(d, &events[1], 102, WFES, &reason);
    cascade_event(d, &events[2], 105, WFES, &reason);
    assert_eq!(status_of(d, 103), BLD);
    let before = d.events().len();
    apply_function_action(d, ORG1, CHANNEL, &key(AGG), FunctionAction::Ready as i32).expect("ready");
    let events = events_since(d, before);
    assert_eq!(events.len(), 2);
    cascade_event(d, &events[1], 103, WFES, &format!("Function {} finished building", key(AGG)));

    // T7: CANCELED cancels the BUILDING tasks only; tasks of a function canceled while WAITING
    // stay in WFBS.
    for n in [32, 33, 34] {
        register_function(d, ORG1, CHANNEL, &new_function(n)).expect("function");
    }
    let on = |n: u64, f: u64| NewComputeTask { function_key: key(f), ..train_task(n, DM1, &[20], &[]) };
    register_tasks(d, ORG1, &[on(110, 32), on(111, 33)]).expect("register");
    apply_function_action(d, ORG1, CHANNEL, &key(32), FunctionAction::Building as i32).expect("build");
    let before = d.events().len();
    apply_function_action(d, ORG1, CHANNEL, &key(32), FunctionAction::Canceled as i32).expect("cancel");
    let events = events_since(d, before);
    assert_eq!(events.len(), 2);
    cascade_event(d, &events[1], 110, CANCELED, "User action");
    let before = d.events().len();
    apply_function_action(d, ORG1, CHANNEL, &key(33), FunctionAction::Canceled as i32).expect("cancel");
    assert_eq!(events_since(d, before).len(), 1, "only the function event");
    assert_eq!(status_of(d, 111), WFBS);

    // T8: FAILED fails the BUILDING tasks and their plans (no plan event).
    let second = register_plan(d, ORG2, &new_plan(41)).expect("plan");
    let mut t = on(112, 34);
    t.compute_plan_key = second.key.clone();
    register_tasks(d, ORG2, &[t]).expect("register");
    apply_function_action(d, ORG1, CHANNEL, &key(34), FunctionAction::Building as i32).expect("build");
    let before = d.events().len();
    apply_function_action(d, ORG1, CHANNEL, &key(34), FunctionAction::Failed as i32).expect("fail");
    let events = events_since(d, before);
    assert_eq!(events.len(), 2, "{events:?}");
    cascade_event(d, &events[1], 112, FAILED, "User action");
    assert_eq!(get_plan(d, ORG2, &second.key).expect("plan").failure_date, events[1].timestamp);
    assert_eq!(get_plan(d, ORG1, &key(PLAN)).expect("plan").failure_date, None);
}

// ---------------------------------------------------------------------------------------------
// QueryTasks.

/// Every task of the filter, page by page; checks page fullness and that a token means more.
#[track_caller]
fn walk_tasks(d: &mut dyn Driver, filter: &TaskQueryFilter, page_size: u32, total: usize) -> Vec<ComputeTask> {
    let size = if page_size == 0 { 50 } else { page_size as usize };
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = query_tasks(d, filter, &token, page_size).expect("QueryTasks");
        let count = page.tasks.len();
        all.extend(page.tasks);
        if page.next_page_token.is_empty() {
            assert!(count <= size, "last page of {count} for size {size}");
            assert_eq!(all.len(), total, "{filter:?} size {page_size}");
            return all;
        }
        assert_eq!(count, size, "a page with a token is full ({filter:?}, size {page_size})");
        assert!(all.len() < total, "a token only when more tasks match ({filter:?}, size {page_size})");
        token = page.next_page_token;
    }
}

pub fn task_queries(d: &mut dyn Driver) {
    use ComputeTaskAction as A;
    const TOTAL: u64 = 260;
    setup_world(d);
    register_plan(d, ORG1, &new_plan(41)).expect("second plan");
    make_ready(d, TRAIN);

    // 260 tasks in 5 batches: keys scattered against creation order, two plans, two functions
    // (TRAIN ready → WFES, AGG waiting → WFBS), two workers.
    let mut all_new = Vec::new();
    for i in 0..TOTAL {
        let n = 1_000 + (i * 97) % TOTAL;
        let mut t = if i % 4 == 3 {
            aggregate_task(n, if i % 8 == 3 { ORG1 } else { ORG2 }, &[])
        } else if i % 2 == 0 {
            train_task(n, DM1, &[20], &[])
        } else {
            train_task(n, DM2, &[22, 23], &[])
        };
        if i % 3 == 0 {
            t.compute_plan_key = key(41);
        }
        all_new.push(t);
    }
    for chunk in all_new.chunks(52) {
        register_tasks(d, ORG1, chunk).expect("register a batch");
    }
    // Move some tasks: EXECUTING, DONE, CANCELED.
    for (i, t) in all_new.iter().enumerate() {
        if t.function_key != key(TRAIN) {
            continue;
        }
        let worker = if t.inputs[0] == asset_input("opener", key(DM1)) { ORG1 } else { ORG2 };
        if i % 7 == 0 {
            apply_task_action(d, worker, &t.key, A::TaskActionExecuting, "").expect("executing");
            if i % 14 == 0 {
                apply_task_action(d, worker, &t.key, A::TaskActionDone, "").expect("done");
            }
        } else if i % 11 == 5 {
            apply_task_action(d, ORG1, &t.key, A::TaskActionCanceled, "").expect("canceled");
        }
    }

    let everything = TaskQueryFilter::default();
    let all = walk_tasks(d, &everything, 1_000, TOTAL as usize);
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| {
        time_key(a.creation_date.as_ref()).cmp(&time_key(b.creation_date.as_ref())).then_with(|| a.key.cmp(&b.key))
    });
    assert_eq!(all, sorted, "creation order, then key");
    let unique: BTreeSet<&str> = all.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(unique.len(), TOTAL as usize);
    assert!(
        all.iter().all(|t| !t.outputs.is_empty() && (t.function_key == key(AGG) || t.inputs.len() >= 2)),
        "complete tasks"
    );
    let count = |s: ComputeTaskStatus| all.iter().filter(|t| t.status == s as i32).count();
    assert!([WFES, WFBS, EXE, DONE, CANCELED].iter().all(|s| count(*s) > 0));

    let filter =
        |worker: &str, status: Option<ComputeTaskStatus>, plan: Option<u64>, function: Option<u64>| TaskQueryFilter {
            worker: worker.to_owned(),
            status: status.map_or(0, |s| s as i32),
            compute_plan_key: plan.map(key).unwrap_or_default(),
            function_key: function.map(key).unwrap_or_default(),
        };
    let filters = [
        filter("", None, None, None),
        filter("", None, Some(PLAN), None),
        filter("", None, Some(41), None),
        filter("", Some(WFES), None, None),
        filter("", Some(DONE), None, None),
        filter(ORG2, None, None, None),
        filter("", None, None, Some(AGG)),
        filter("", Some(WFES), Some(PLAN), None),
        filter("", Some(WFBS), None, Some(AGG)),
        filter(ORG1, Some(EXE), None, None),
        filter(ORG2, None, Some(41), None),
        filter(ORG1, None, Some(PLAN), Some(AGG)),
        filter(ORG2, Some(WFES), Some(PLAN), Some(TRAIN)),
        filter(ORG1, None, None, Some(TRAIN)),
        filter("", Some(CANCELED), Some(41), Some(TRAIN)),
        filter(UNREGISTERED, None, None, None),
        filter("", None, Some(999), None),
        filter("", Some(FAILED), None, None),
    ];
    for f in &filters {
        let expected: Vec<ComputeTask> = all
            .iter()
            .filter(|t| {
                (f.worker.is_empty() || t.worker == f.worker)
                    && (f.status == 0 || t.status == f.status)
                    && (f.compute_plan_key.is_empty() || t.compute_plan_key == f.compute_plan_key)
                    && (f.function_key.is_empty() || t.function_key == f.function_key)
            })
            .cloned()
            .collect();
        for size in [7, 0, 1_000] {
            assert_eq!(walk_tasks(d, f, size, expected.len()), expected, "{f:?} size {size}");
        }
        // Offsets count matching tasks.
        if expected.len() > 12 {
            let page = query_tasks(d, f, "5", 7).expect("offset token");
            assert_eq!(page.tasks, expected[5..12].to_vec(), "{f:?} offset");
        }
    }
    let none = query_tasks(d, &TaskQueryFilter { status: 99, ..Default::default() }, "", 0).expect("unknown status");
    assert!(none.tasks.is_empty() && none.next_page_token.is_empty());
    expect_err(query_tasks(d, &everything, "not a token", 0), ErrorKind::Unknown, "");

    // Status indexes follow status changes.
    let waiting = filter("", Some(WFES), Some(PLAN), Some(TRAIN));
    let first = walk_tasks(
        d,
        &waiting,
        0,
        all.iter()
            .filter(|t| t.status == WFES as i32 && t.compute_plan_key == key(PLAN) && t.function_key == key(TRAIN))
            .count(),
    );
    let moved = &first[0];
    apply_task_action(d, &moved.worker, &moved.key, A::TaskActionExecuting, "").expect("executing");
    let now = walk_tasks(d, &waiting, 0, first.len() - 1);
    assert!(!now.iter().any(|t| t.key == moved.key));
    let executing = query_tasks(d, &filter(&moved.worker, Some(EXE), Some(PLAN), None), "", 1_000).expect("q");
    assert!(executing.tasks.iter().any(|t| t.key == moved.key));
}

/// Input that no state key or event can hold (issue 11): keys longer than a state key once
/// prefixed, or with NUL, are simply not found; a NUL in a task action's log (it becomes event
/// metadata) is refused as invalid, so it never reaches a database; a huge page token is quoted
/// back cut.
pub fn hostile_inputs(d: &mut dyn Driver) {
    setup_world(d);
    register_tasks(d, ORG1, &[train_task(1, DM1, &[20], &[])]).expect("task");
    let before = d.events().len();
    for bad in ["k".repeat(1_013), "k".repeat(5_000), format!("{}\0", key(1)), "a\0b".to_owned()] {
        let err = super::get_data_manager(d, ORG1, CHANNEL, &bad).expect_err("no such data manager");
        assert_eq!(err.kind, ErrorKind::NotFound, "{}", err.message);
        let err = get_task(d, &bad).expect_err("no such task");
        assert_eq!(err.kind, ErrorKind::NotFound, "{}", err.message);
        let err = apply_task_action(d, ORG1, &bad, ComputeTaskAction::TaskActionCanceled, "").expect_err("no task");
        assert_eq!(err.kind, ErrorKind::NotFound, "{}", err.message);
        assert!(err.message.len() < 400, "the key is quoted cut: {} bytes", err.message.len());
        // A filter no key can hold matches nothing.
        let filter = TaskQueryFilter { worker: bad.clone(), ..Default::default() };
        assert_eq!(query_tasks(d, &filter, "", 10).expect("query").tasks, vec![]);
    }
    let err = apply_task_action(d, ORG1, &key(1), ComputeTaskAction::TaskActionCanceled, "x\0y").expect_err("NUL log");
    assert_eq!(err.kind, ErrorKind::InvalidAsset, "{}", err.message);
    assert!(err.message.contains("log"), "names the field: {}", err.message);
    assert_eq!(get_task(d, &key(1)).expect("task").status, WFBS as i32);
    for token in [format!("k:{}", "k".repeat(1 << 20)), "x".repeat(1 << 20), "k:a\0b".to_owned()] {
        let err = query_tasks(d, &TaskQueryFilter::default(), &token, 10).expect_err("not a token of ours");
        assert_eq!(err.kind, ErrorKind::Unknown, "{}", &err.message[..err.message.len().min(300)]);
        assert!(err.message.len() < 400, "the token is quoted cut: {} bytes", err.message.len());
    }
    // Fields that could make an asset outgrow a state value are capped, the field named.
    let mut dm = new_data_manager(0x77);
    let ids = (0..1_001).map(|n| format!("Org{n}MSP")).collect();
    dm.new_permissions = Some(NewPermissions { public: true, authorized_ids: ids });
    let err = register_data_manager(d, ORG1, CHANNEL, &dm).expect_err("too many organizations");
    assert_eq!(err.kind, ErrorKind::InvalidAsset, "{}", err.message);
    assert!(err.message.contains("authorized_ids") && err.message.contains("1000"), "{}", err.message);
    let mut plan = new_plan(0x78);
    plan.metadata = (0..1_001).map(|n| (format!("k{n}"), "v".to_owned())).collect();
    let err = register_plan(d, ORG1, &plan).expect_err("too much metadata");
    assert_eq!(err.kind, ErrorKind::InvalidAsset, "{}", err.message);
    assert!(err.message.contains("metadata") && err.message.contains("1000"), "{}", err.message);
    assert_eq!(d.events().len(), before, "nothing happened");
}
