//! What tasks produce and consume (docs/business-rules.md §8.8, §8.9, §9-12): models, performances,
//! failure reports, profiling steps, GetTaskInputAssets, DisableOutput, and a two-organization
//! composite → aggregate → composite plan driven to the end.

use std::collections::BTreeMap;

use orchestrator_proto::{
    Addressable, AssetKind, ComputeTaskAction, ComputeTaskInputAsset, ComputeTaskOutputAsset, ComputeTaskStatus,
    DisableOutputParam, DisableOutputResponse, ErrorType, EventKind, FailedAssetKind, FailureReport, FunctionAction,
    FunctionStatus, GetComputeTaskModelsParam, GetComputeTaskModelsResponse, GetFailureReportParam, GetModelParam,
    GetTaskInputAssetsParam, GetTaskInputAssetsResponse, IsPlanRunningParam, IsPlanRunningResponse, Model,
    NewComputeTask, NewFailureReport, NewModel, NewPerformance, Performance, PerformanceQueryFilter, ProfilingStep,
    QueryPerformancesParam, QueryPerformancesResponse, RegisterModelsParam, RegisterModelsResponse,
    compute_task_input_asset, event,
};

use super::computeplan::{get_plan, new_plan, register_plan};
use super::computetask::{
    AGG, DM1, DM2, PLAN, TRAIN, aggregate_function, aggregate_task, apply_task_action, get_task, make_ready,
    metric_function, parent_input, register_tasks, setup_world, task_output, train_task,
};
use super::{
    CHANNEL, ORG1, ORG2, Res, UNREGISTERED, addressable, apply_function_action, assert_no_event_since, check_event,
    events_since, expect_err, get_function, input, key, new_function, output, private_permissions, public_permissions,
    register_function,
};
use crate::error::ErrorKind;
use crate::testing::{Driver, call};

use ComputeTaskStatus::{
    StatusDone as DONE, StatusExecuting as EXE, StatusFailed as FAILED, StatusWaitingForExecutorSlot as WFES,
    StatusWaitingForParentTasks as WFPT,
};

pub const REGISTER_MODELS: &str = "orchestrator.ModelService/RegisterModels";
pub const REGISTER_MODEL: &str = "orchestrator.ModelService/RegisterModel";
pub const GET_MODEL: &str = "orchestrator.ModelService/GetModel";
pub const GET_TASK_MODELS: &str = "orchestrator.ModelService/GetComputeTaskOutputModels";
pub const REGISTER_PERFORMANCE: &str = "orchestrator.PerformanceService/RegisterPerformance";
pub const QUERY_PERFORMANCES: &str = "orchestrator.PerformanceService/QueryPerformances";
pub const REGISTER_FAILURE_REPORT: &str = "orchestrator.FailureReportService/RegisterFailureReport";
pub const GET_FAILURE_REPORT: &str = "orchestrator.FailureReportService/GetFailureReport";
pub const REGISTER_PROFILING_STEP: &str = "orchestrator.ProfilingService/RegisterProfilingStep";
pub const GET_TASK_INPUT_ASSETS: &str = "orchestrator.ComputeTaskService/GetTaskInputAssets";
pub const DISABLE_OUTPUT: &str = "orchestrator.ComputeTaskService/DisableOutput";
pub const IS_PLAN_RUNNING: &str = "orchestrator.ComputePlanService/IsPlanRunning";

/// Metric-shaped function of ORG1: `{opener, datasamples, predictions: MODEL} → {performance}`.
pub const METRIC: u64 = 32;
/// Composite-shaped function of ORG1:
/// `{opener, datasamples, local: MODEL?, shared: MODEL?} → {local: MODEL, shared: MODEL}`.
pub const COMPOSITE: u64 = 33;

// ---------------------------------------------------------------------------------------------
// Builders and typed calls.

pub fn new_model(n: u64, task: u64, identifier: &str) -> NewModel {
    NewModel {
        key: key(n),
        compute_task_key: key(task),
        compute_task_output_identifier: identifier.to_owned(),
        address: Some(addressable("model", n)),
    }
}

pub fn register_models(d: &mut dyn Driver, msp: &str, models: &[NewModel]) -> Res<Vec<Model>> {
    let param = RegisterModelsParam { models: models.to_vec() };
    call::<_, RegisterModelsResponse>(d, msp, CHANNEL, REGISTER_MODELS, &param).map(|r| r.models)
}

pub fn get_model(d: &mut dyn Driver, n: u64) -> Res<Model> {
    call(d, ORG2, CHANNEL, GET_MODEL, &GetModelParam { key: key(n) })
}

pub fn task_models(d: &mut dyn Driver, task: &str) -> Vec<Model> {
    let param = GetComputeTaskModelsParam { compute_task_key: task.to_owned() };
    call::<_, GetComputeTaskModelsResponse>(d, ORG2, CHANNEL, GET_TASK_MODELS, &param).expect("task models").models
}

pub fn register_performance(
    d: &mut dyn Driver,
    msp: &str,
    task: u64,
    identifier: &str,
    value: f32,
) -> Res<Performance> {
    let param = NewPerformance {
        compute_task_key: key(task),
        compute_task_output_identifier: identifier.to_owned(),
        performance_value: value,
    };
    call(d, msp, CHANNEL, REGISTER_PERFORMANCE, &param)
}

pub fn query_performances(
    d: &mut dyn Driver,
    filter: PerformanceQueryFilter,
    token: &str,
    size: u32,
) -> Res<QueryPerformancesResponse> {
    let param = QueryPerformancesParam { page_token: token.to_owned(), page_size: size, filter: Some(filter) };
    call(d, ORG2, CHANNEL, QUERY_PERFORMANCES, &param)
}

pub fn failure(asset: u64, asset_type: FailedAssetKind, error_type: ErrorType) -> NewFailureReport {
    let logs = matches!(error_type, ErrorType::Build | ErrorType::Execution);
    NewFailureReport {
        asset_key: key(asset),
        error_type: error_type as i32,
        logs_address: logs.then(|| addressable("logs", asset)),
        asset_type: asset_type as i32,
    }
}

pub fn register_failure(d: &mut dyn Driver, msp: &str, report: &NewFailureReport) -> Res<FailureReport> {
    call(d, msp, CHANNEL, REGISTER_FAILURE_REPORT, report)
}

pub fn get_failure(d: &mut dyn Driver, n: u64) -> Res<FailureReport> {
    call(d, ORG2, CHANNEL, GET_FAILURE_REPORT, &GetFailureReportParam { asset_key: key(n) })
}

pub fn input_assets(d: &mut dyn Driver, msp: &str, task: u64) -> Res<Vec<ComputeTaskInputAsset>> {
    let param = GetTaskInputAssetsParam { compute_task_key: key(task) };
    call::<_, GetTaskInputAssetsResponse>(d, msp, CHANNEL, GET_TASK_INPUT_ASSETS, &param).map(|r| r.assets)
}

pub fn disable_output(d: &mut dyn Driver, msp: &str, task: u64, identifier: &str) -> Res<()> {
    let param = DisableOutputParam { compute_task_key: key(task), identifier: identifier.to_owned() };
    call::<_, DisableOutputResponse>(d, msp, CHANNEL, DISABLE_OUTPUT, &param).map(|_| ())
}

pub fn is_running(d: &mut dyn Driver, plan: u64) -> bool {
    let param = IsPlanRunningParam { key: key(plan) };
    call::<_, IsPlanRunningResponse>(d, ORG1, CHANNEL, IS_PLAN_RUNNING, &param).expect("IsPlanRunning").is_running
}

fn status(d: &mut dyn Driver, n: u64) -> ComputeTaskStatus {
    ComputeTaskStatus::try_from(get_task(d, &key(n)).expect("GetTask").status).expect("known status")
}

fn act(d: &mut dyn Driver, msp: &str, n: u64, action: ComputeTaskAction) {
    apply_task_action(d, msp, &key(n), action, "").unwrap_or_else(|e| panic!("{action:?} on task {n}: {e}"));
}

/// A model asset of an input, its key and whether it still has an address.
fn model_input(asset: &ComputeTaskInputAsset) -> (String, String, bool) {
    match &asset.asset {
        Some(compute_task_input_asset::Asset::Model(m)) => {
            (asset.identifier.clone(), m.key.clone(), m.address.is_some())
        }
        other => panic!("not a model input: {other:?}"),
    }
}

/// Task 101 (TRAIN on DM1, worker ORG1) registered, TRAIN built, 101 executing.
fn executing_train_task(d: &mut dyn Driver) {
    setup_world(d);
    make_ready(d, TRAIN);
    register_tasks(d, ORG1, &[train_task(101, DM1, &[20, 21], &[])]).expect("register 101");
    act(d, ORG1, 101, ComputeTaskAction::TaskActionExecuting);
}

// ---------------------------------------------------------------------------------------------
// Models.

pub fn models(d: &mut dyn Driver) {
    setup_world(d);
    make_ready(d, TRAIN);
    make_ready(d, AGG);
    // 101 on ORG1, 102 on ORG2 (worker inferred from DM2), 103 aggregates both on ORG1.
    let tasks =
        [train_task(101, DM1, &[20], &[]), train_task(102, DM2, &[22], &[]), aggregate_task(103, ORG1, &[101, 102])];
    register_tasks(d, ORG1, &tasks).expect("register");

    // Empty list: the reference crashes; a clean INVALID_ARGUMENT here.
    expect_err(register_models(d, ORG1, &[]), ErrorKind::InvalidAsset, "model is not valid: models: cannot be blank");
    // Unknown task; not executing; not the worker.
    expect_err(register_models(d, ORG1, &[new_model(500, 999, "model")]), ErrorKind::NotFound, "computetask with key");
    let before = d.events().len();
    expect_err(
        register_models(d, ORG1, &[new_model(500, 101, "model")]),
        ErrorKind::BadRequest,
        "cannot register model for task with status \"STATUS_WAITING_FOR_EXECUTOR_SLOT\"",
    );
    assert_no_event_since(d, before);
    act(d, ORG1, 101, ComputeTaskAction::TaskActionExecuting);
    let before = d.events().len();
    expect_err(
        register_models(d, ORG2, &[new_model(500, 101, "model")]),
        ErrorKind::PermissionDenied,
        "only \"MyOrg1MSP\" worker can register model",
    );
    // Validation, naming every field.
    let mut bad = new_model(500, 101, "");
    bad.key = "not-a-uuid".to_owned();
    bad.address = Some(Addressable { checksum: "abc".to_owned(), storage_address: String::new() });
    let err = expect_err(register_models(d, ORG1, &[bad]), ErrorKind::InvalidAsset, "model is not valid: ");
    for field in ["key: must be a valid UUID", "compute_task_output_identifier: cannot be blank", "address: (checksum"]
    {
        assert!(err.message.contains(field), "{field:?} in {}", err.message);
    }
    let mut no_address = new_model(500, 101, "model");
    no_address.address = None;
    expect_err(register_models(d, ORG1, &[no_address]), ErrorKind::InvalidAsset, "address: cannot be blank");
    // Mixed tasks; unknown output.
    expect_err(
        register_models(d, ORG1, &[new_model(500, 101, "model"), new_model(501, 102, "model")]),
        ErrorKind::BadRequest,
        "All models should be part of the same task",
    );
    expect_err(
        register_models(d, ORG1, &[new_model(500, 101, "predictions")]),
        ErrorKind::MissingTaskOutput,
        &format!("Task \"{}\" has no output named \"predictions\"", key(101)),
    );
    // The output is single: two models in one batch is one too many, and nothing stays.
    expect_err(
        register_models(d, ORG1, &[new_model(500, 101, "model"), new_model(501, 101, "model")]),
        ErrorKind::Conflict,
        &format!("compute task \"{}\" already has its unique output \"model\" registered", key(101)),
    );
    expect_err(get_model(d, 500), ErrorKind::NotFound, "model with key");
    assert_no_event_since(d, before);

    // One model: stored with the output's permissions, owner = worker; two events.
    let models = register_models(d, ORG1, &[new_model(500, 101, "model")]).expect("register model");
    assert_eq!(models.len(), 1);
    let model = &models[0];
    let task = get_task(d, &key(101)).expect("task");
    assert_eq!(model.key, key(500));
    assert_eq!(model.compute_task_key, key(101));
    assert_eq!(model.address, Some(addressable("model", 500)));
    assert_eq!(model.permissions, task.outputs["model"].permissions);
    assert_eq!(model.owner, ORG1);
    assert_eq!(get_model(d, 500).expect("GetModel"), *model);
    let events = events_since(d, before);
    assert_eq!(events.len(), 2, "{events:?}");
    let asset = check_event(&events[0], AssetKind::AssetModel, EventKind::EventAssetCreated, &key(500), CHANNEL, &[]);
    assert_eq!(asset, event::Asset::Model(model.clone()));
    let asset = check_event(
        &events[1],
        AssetKind::AssetComputeTaskOutputAsset,
        EventKind::EventAssetCreated,
        &key(101),
        CHANNEL,
        &[],
    );
    assert_eq!(
        asset,
        event::Asset::ComputeTaskOutputAsset(ComputeTaskOutputAsset {
            compute_task_key: key(101),
            compute_task_output_identifier: "model".to_owned(),
            asset_kind: AssetKind::AssetModel as i32,
            asset_key: key(500),
        })
    );
    assert_eq!(status(d, 101), EXE, "registering a model does not change the status");
    // Single output already taken.
    expect_err(
        register_models(d, ORG1, &[new_model(501, 101, "model")]),
        ErrorKind::Conflict,
        "already has its unique output",
    );

    // The deprecated RegisterModel on 102 (ORG2's worker), then a key reuse.
    act(d, ORG2, 102, ComputeTaskAction::TaskActionExecuting);
    let m: Model = call(d, ORG2, CHANNEL, REGISTER_MODEL, &new_model(502, 102, "model")).expect("RegisterModel");
    assert_eq!((m.key.as_str(), m.owner.as_str()), (key(502).as_str(), ORG2));
    act(d, ORG1, 101, ComputeTaskAction::TaskActionDone);
    act(d, ORG2, 102, ComputeTaskAction::TaskActionDone);
    assert_eq!(status(d, 103), WFES);
    act(d, ORG1, 103, ComputeTaskAction::TaskActionExecuting);
    expect_err(register_models(d, ORG1, &[new_model(500, 103, "model")]), ErrorKind::Conflict, "model with key");

    // Output kinds: a PERFORMANCE output refuses models.
    register_function(d, ORG1, CHANNEL, &metric_function(METRIC)).expect("metric function");
    make_ready(d, METRIC);
    let mut test = train_task(104, DM1, &[21], &[]);
    test.function_key = key(METRIC);
    test.inputs.push(parent_input("predictions", 101, "model"));
    test.outputs = BTreeMap::from([("performance".to_owned(), task_output(public_permissions(), false))]);
    register_tasks(d, ORG1, &[test]).expect("test task");
    act(d, ORG1, 104, ComputeTaskAction::TaskActionExecuting);
    expect_err(
        register_models(d, ORG1, &[new_model(503, 104, "performance")]),
        ErrorKind::IncompatibleKind,
        &format!(
            "Incompatible kind for task \"{}\": output \"performance\" expects \"ASSET_PERFORMANCE\", received \"ASSET_MODEL\"",
            key(104)
        ),
    );

    // GetComputeTaskOutputModels: per task, registration order; unknown task → empty.
    assert_eq!(task_models(d, &key(101)), vec![model.clone()]);
    assert_eq!(task_models(d, &key(102)), vec![m]);
    assert!(task_models(d, &key(103)).is_empty());
    assert!(task_models(d, &key(999)).is_empty());
    expect_err(get_model(d, 999), ErrorKind::NotFound, &format!("model with key \"{}\" not found", key(999)));
}

/// A `multiple` output takes many models, in one batch or several.
pub fn multiple_models(d: &mut dyn Driver) {
    setup_world(d);
    let mut f = new_function(34);
    f.outputs = BTreeMap::from([("models".to_owned(), output(AssetKind::AssetModel, true))]);
    register_function(d, ORG1, CHANNEL, &f).expect("function");
    make_ready(d, 34);
    let mut t = train_task(101, DM1, &[20], &[]);
    t.function_key = key(34);
    t.outputs = BTreeMap::from([("models".to_owned(), task_output(public_permissions(), false))]);
    register_tasks(d, ORG1, &[t]).expect("task");
    act(d, ORG1, 101, ComputeTaskAction::TaskActionExecuting);
    let before = d.events().len();
    let batch = [new_model(500, 101, "models"), new_model(501, 101, "models")];
    let models = register_models(d, ORG1, &batch).expect("two models");
    assert_eq!(models.iter().map(|m| m.key.clone()).collect::<Vec<_>>(), [key(500), key(501)]);
    let kinds: Vec<(i32, String)> =
        events_since(d, before).iter().map(|e| (e.asset_kind, e.asset_key.clone())).collect();
    let (model, out) = (AssetKind::AssetModel as i32, AssetKind::AssetComputeTaskOutputAsset as i32);
    assert_eq!(kinds, [(model, key(500)), (out, key(101)), (model, key(501)), (out, key(101))], "per model, in order");
    // The same key twice in one batch.
    expect_err(
        register_models(d, ORG1, &[new_model(502, 101, "models"), new_model(502, 101, "models")]),
        ErrorKind::Conflict,
        "model with key",
    );
    register_models(d, ORG1, &[new_model(502, 101, "models")]).expect("a third one");
    let keys: Vec<String> = task_models(d, &key(101)).into_iter().map(|m| m.key).collect();
    assert_eq!(keys, [key(500), key(501), key(502)]);
}

// ---------------------------------------------------------------------------------------------
// Performances.

pub fn performances(d: &mut dyn Driver) {
    setup_world(d);
    make_ready(d, TRAIN);
    register_function(d, ORG1, CHANNEL, &metric_function(METRIC)).expect("metric function");
    make_ready(d, METRIC);
    register_tasks(d, ORG1, &[train_task(101, DM1, &[20], &[])]).expect("train");
    act(d, ORG1, 101, ComputeTaskAction::TaskActionExecuting);
    register_models(d, ORG1, &[new_model(500, 101, "model")]).expect("model");
    act(d, ORG1, 101, ComputeTaskAction::TaskActionDone);
    // Three test tasks on ORG1's data, created in one batch (one creation time).
    let tests: Vec<NewComputeTask> = [111, 112, 113]
        .iter()
        .map(|n| {
            let mut t = train_task(*n, DM1, &[21], &[]);
            t.function_key = key(METRIC);
            t.inputs.push(parent_input("predictions", 101, "model"));
            t.outputs = BTreeMap::from([("performance".to_owned(), task_output(public_permissions(), false))]);
            t
        })
        .collect();
    register_tasks(d, ORG1, &tests).expect("test tasks");

    // Refusals: validation, unknown task, worker, status, output.
    let err = expect_err(
        call::<_, Performance>(d, ORG1, CHANNEL, REGISTER_PERFORMANCE, &NewPerformance::default()),
        ErrorKind::InvalidAsset,
        "performance is not valid: ",
    );
    assert!(err.message.contains("compute_task_key: cannot be blank"), "{}", err.message);
    assert!(err.message.contains("compute_task_output_identifier: cannot be blank"), "{}", err.message);
    expect_err(register_performance(d, ORG1, 999, "performance", 0.5), ErrorKind::NotFound, "computetask with key");
    expect_err(
        register_performance(d, ORG2, 111, "performance", 0.5),
        ErrorKind::PermissionDenied,
        "only \"MyOrg1MSP\" worker can register performance",
    );
    expect_err(
        register_performance(d, ORG1, 111, "performance", 0.5),
        ErrorKind::BadRequest,
        "cannot register performance for task with status \"STATUS_WAITING_FOR_EXECUTOR_SLOT\"",
    );
    for n in [111, 112, 113] {
        act(d, ORG1, n, ComputeTaskAction::TaskActionExecuting);
    }
    expect_err(
        register_performance(d, ORG1, 111, "auc", 0.5),
        ErrorKind::MissingTaskOutput,
        "has no output named \"auc\"",
    );

    let before = d.events().len();
    let perf = register_performance(d, ORG1, 112, "performance", 0.75).expect("performance");
    assert_eq!(perf.compute_task_key, key(112));
    assert_eq!(perf.compute_task_output_identifier, "performance");
    assert_eq!(perf.performance_value, 0.75);
    let perf_key = format!("{}|performance", key(112));
    let events = events_since(d, before);
    assert_eq!(events.len(), 2);
    let asset =
        check_event(&events[0], AssetKind::AssetPerformance, EventKind::EventAssetCreated, &perf_key, CHANNEL, &[]);
    assert_eq!(asset, event::Asset::Performance(perf.clone()));
    let asset = check_event(
        &events[1],
        AssetKind::AssetComputeTaskOutputAsset,
        EventKind::EventAssetCreated,
        &key(112),
        CHANNEL,
        &[],
    );
    let event::Asset::ComputeTaskOutputAsset(out) = asset else { panic!("output asset") };
    assert_eq!((out.asset_kind, out.asset_key.as_str()), (AssetKind::AssetPerformance as i32, perf_key.as_str()));
    expect_err(
        register_performance(d, ORG1, 112, "performance", 0.1),
        ErrorKind::Conflict,
        &format!("performance with key \"{perf_key}\" already exists"),
    );
    assert_eq!(status(d, 112), EXE, "no status change");
    register_performance(d, ORG1, 111, "performance", 0.5).expect("111");
    register_performance(d, ORG1, 113, "performance", 0.25).expect("113");

    // Order: creation date, then task key descending.
    let all = query_performances(d, PerformanceQueryFilter::default(), "", 0).expect("query");
    let tasks: Vec<String> = all.performances.iter().map(|p| p.compute_task_key.clone()).collect();
    assert_eq!(tasks, [key(112), key(111), key(113)], "112 first (earlier), then 111 and 113 by creation");
    assert!(all.next_page_token.is_empty());
    // Pages of one follow the same order.
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let page = query_performances(d, PerformanceQueryFilter::default(), &token, 1).expect("page");
        paged.extend(page.performances.into_iter().map(|p| p.compute_task_key));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(paged, tasks);
    // Filters.
    let by_task = PerformanceQueryFilter { compute_task_key: key(111), ..Default::default() };
    let found = query_performances(d, by_task, "", 0).expect("by task").performances;
    assert_eq!(found.iter().map(|p| p.performance_value).collect::<Vec<_>>(), [0.5]);
    let by_id =
        PerformanceQueryFilter { compute_task_output_identifier: "performance".to_owned(), ..Default::default() };
    assert_eq!(query_performances(d, by_id, "", 0).expect("by id").performances.len(), 3);
    let both =
        PerformanceQueryFilter { compute_task_key: key(113), compute_task_output_identifier: "performance".to_owned() };
    assert_eq!(query_performances(d, both, "", 0).expect("both").performances.len(), 1);
    let none = PerformanceQueryFilter { compute_task_output_identifier: "auc".to_owned(), ..Default::default() };
    assert!(query_performances(d, none, "", 0).expect("none").performances.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Failure reports and profiling.

pub fn failure_reports(d: &mut dyn Driver) {
    executing_train_task(d);
    register_tasks(d, ORG1, &[train_task(102, DM2, &[22], &[101])]).expect("a child on ORG2");

    // Validation.
    let mut bad = failure(101, FailedAssetKind::FailedAssetComputeTask, ErrorType::Execution);
    bad.logs_address = None;
    expect_err(
        register_failure(d, ORG1, &bad),
        ErrorKind::InvalidAsset,
        "failurereport is not valid: logs_address: cannot be blank",
    );
    let mut bad = failure(101, FailedAssetKind::FailedAssetComputeTask, ErrorType::Internal);
    bad.logs_address = Some(addressable("logs", 1));
    expect_err(register_failure(d, ORG1, &bad), ErrorKind::InvalidAsset, "logs_address: must be blank");
    let bad = failure(101, FailedAssetKind::FailedAssetComputeTask, ErrorType::Unspecified);
    expect_err(register_failure(d, ORG1, &bad), ErrorKind::InvalidAsset, "error_type: cannot be blank");
    let mut bad = failure(101, FailedAssetKind::FailedAssetComputeTask, ErrorType::Internal);
    bad.asset_key = "x".to_owned();
    expect_err(register_failure(d, ORG1, &bad), ErrorKind::InvalidAsset, "asset_key: must be a valid UUID");
    let bad = failure(101, FailedAssetKind::FailedAssetUnknown, ErrorType::Internal);
    expect_err(
        register_failure(d, ORG1, &bad),
        ErrorKind::BadRequest,
        "can only register failure for asset_kind values function and compute task",
    );
    // Task: unknown, not the worker, not executing.
    let on_task = failure(101, FailedAssetKind::FailedAssetComputeTask, ErrorType::Execution);
    let unknown = failure(999, FailedAssetKind::FailedAssetComputeTask, ErrorType::Execution);
    expect_err(register_failure(d, ORG1, &unknown), ErrorKind::NotFound, "computetask with key");
    expect_err(
        register_failure(d, ORG2, &on_task),
        ErrorKind::PermissionDenied,
        "only \"MyOrg1MSP\" worker can register failure report for compute task",
    );
    let on_child = failure(102, FailedAssetKind::FailedAssetComputeTask, ErrorType::Execution);
    expect_err(
        register_failure(d, ORG2, &on_child),
        ErrorKind::BadRequest,
        "cannot register failure report for task with status \"STATUS_WAITING_FOR_PARENT_TASKS\"",
    );
    expect_err(
        get_failure(d, 101),
        ErrorKind::NotFound,
        &format!("failure report with key \"{}\" not found", key(101)),
    );

    // The report fails the task (full snapshot, reason), stamps the plan, then is stored.
    let before = d.events().len();
    let report = register_failure(d, ORG1, &on_task).expect("report");
    assert_eq!(report.owner, ORG1);
    assert_eq!(report.asset_key, key(101));
    assert_eq!(report.logs_address, Some(addressable("logs", 101)));
    assert_eq!(get_failure(d, 101).expect("GetFailureReport"), report);
    let events = events_since(d, before);
    assert_eq!(events.len(), 2, "{events:?}");
    let asset = check_event(
        &events[0],
        AssetKind::AssetComputeTask,
        EventKind::EventAssetUpdated,
        &key(101),
        CHANNEL,
        &[("reason", "failure report registered")],
    );
    let event::Asset::ComputeTask(task) = asset else { panic!("task") };
    assert_eq!(task.status, FAILED as i32);
    assert!(!task.inputs.is_empty(), "the failed task itself: complete snapshot");
    let asset =
        check_event(&events[1], AssetKind::AssetFailureReport, EventKind::EventAssetCreated, &key(101), CHANNEL, &[]);
    assert_eq!(asset, event::Asset::FailureReport(report.clone()));
    assert_eq!(status(d, 101), FAILED);
    assert_eq!(status(d, 102), WFPT, "no cascade to children");
    let plan = get_plan(d, ORG1, &key(PLAN)).expect("plan");
    assert!(plan.failure_date.is_some(), "the plan failed");
    // A second report on the same asset.
    expect_err(register_failure(d, ORG1, &on_task), ErrorKind::Conflict, "failure report with key");

    // Function failure: from BUILDING only, by its owner; fails its building tasks.
    register_function(d, ORG1, CHANNEL, &aggregate_function(35)).expect("function 35");
    register_plan(d, ORG1, &new_plan(41)).expect("a second plan");
    let mut t = aggregate_task(103, ORG1, &[]);
    t.function_key = key(35);
    t.compute_plan_key = key(41);
    register_tasks(d, ORG1, &[t]).expect("task on 35");
    let on_function = failure(35, FailedAssetKind::FailedAssetFunction, ErrorType::Build);
    expect_err(
        register_failure(d, ORG2, &on_function),
        ErrorKind::PermissionDenied,
        "only \"MyOrg1MSP\" owner can register failure report for function",
    );
    expect_err(
        register_failure(d, ORG1, &on_function),
        ErrorKind::Unknown,
        "event transitionFailed inappropriate in current state FUNCTION_STATUS_WAITING",
    );
    expect_err(get_failure(d, 35), ErrorKind::NotFound, "failure report");
    apply_function_action(d, ORG1, CHANNEL, &key(35), FunctionAction::Building as i32).expect("building");
    let before = d.events().len();
    register_failure(d, ORG1, &on_function).expect("function failure");
    let f = get_function(d, ORG1, CHANNEL, &key(35)).expect("function");
    assert_eq!(f.status, FunctionStatus::Failed as i32);
    assert_eq!(status(d, 103), FAILED);
    let kinds: Vec<(i32, String)> =
        events_since(d, before).iter().map(|e| (e.asset_kind, e.asset_key.clone())).collect();
    assert_eq!(
        kinds,
        [
            (AssetKind::AssetFunction as i32, key(35)),
            (AssetKind::AssetComputeTask as i32, key(103)),
            (AssetKind::AssetFailureReport as i32, key(35)),
        ]
    );
    let unknown_function = failure(998, FailedAssetKind::FailedAssetFunction, ErrorType::Build);
    expect_err(register_failure(d, ORG1, &unknown_function), ErrorKind::NotFound, "function with key");
}

pub fn profiling(d: &mut dyn Driver) {
    setup_world(d);
    let step = ProfilingStep { duration: 1_500, asset_key: key(TRAIN), step: "build image".to_owned() };
    let before = d.events().len();
    // No existence or permission check: any caller, any key.
    call::<_, ()>(d, UNREGISTERED, CHANNEL, REGISTER_PROFILING_STEP, &step).expect("profiling step");
    let events = events_since(d, before);
    assert_eq!(events.len(), 1);
    let asset =
        check_event(&events[0], AssetKind::AssetProfilingStep, EventKind::EventAssetCreated, &key(TRAIN), CHANNEL, &[]);
    assert_eq!(asset, event::Asset::ProfilingStep(step));
    let before = d.events().len();
    let bad = ProfilingStep { duration: 0, asset_key: "k".to_owned(), step: "x".repeat(101) };
    let err = expect_err(
        call::<_, ()>(d, ORG1, CHANNEL, REGISTER_PROFILING_STEP, &bad),
        ErrorKind::InvalidAsset,
        "profiling_step is not valid: ",
    );
    for field in
        ["asset_key: must be a valid UUID", "duration: cannot be blank", "step: the length must be between 1 and 100"]
    {
        assert!(err.message.contains(field), "{field:?} in {}", err.message);
    }
    assert_no_event_since(d, before);
}

// ---------------------------------------------------------------------------------------------
// GetTaskInputAssets and DisableOutput.

pub fn task_input_assets(d: &mut dyn Driver) {
    setup_world(d);
    make_ready(d, TRAIN);
    make_ready(d, AGG);
    let mut f = aggregate_function(36);
    f.outputs = BTreeMap::from([("model".to_owned(), output(AssetKind::AssetModel, true))]);
    register_function(d, ORG1, CHANNEL, &f).expect("multi-output function");
    make_ready(d, 36);
    let mut producer = aggregate_task(101, ORG1, &[]);
    producer.function_key = key(36);
    register_tasks(d, ORG1, &[producer]).expect("producer");
    let consumer = train_task(102, DM1, &[20, 21], &[101]);
    register_tasks(d, ORG1, &[consumer]).expect("consumer");

    expect_err(input_assets(d, ORG1, 999), ErrorKind::NotFound, "computetask with key");
    expect_err(
        input_assets(d, ORG1, 102),
        ErrorKind::BadRequest,
        "Task inputs may not be defined in current task status (\"STATUS_WAITING_FOR_PARENT_TASKS\")",
    );
    // An output with nothing registered contributes nothing.
    act(d, ORG1, 101, ComputeTaskAction::TaskActionExecuting);
    assert!(input_assets(d, ORG2, 101).expect("no inputs").is_empty());
    register_models(d, ORG1, &[new_model(500, 101, "model"), new_model(501, 101, "model")]).expect("two models");
    act(d, ORG1, 101, ComputeTaskAction::TaskActionDone);
    assert_eq!(status(d, 102), WFES);

    // Anyone may ask (no permission check); inputs in task order, a parent's models in order.
    let assets = input_assets(d, UNREGISTERED, 102).expect("inputs");
    let identifiers: Vec<&str> = assets.iter().map(|a| a.identifier.as_str()).collect();
    assert_eq!(identifiers, ["opener", "datasamples", "datasamples", "model", "model"]);
    match &assets[0].asset {
        Some(compute_task_input_asset::Asset::DataManager(dm)) => assert_eq!(dm.key, key(DM1)),
        other => panic!("opener: {other:?}"),
    }
    for (asset, n) in assets[1..3].iter().zip([20, 21]) {
        match &asset.asset {
            Some(compute_task_input_asset::Asset::DataSample(s)) => assert_eq!(s.key, key(n)),
            other => panic!("sample: {other:?}"),
        }
    }
    assert_eq!(model_input(&assets[3]), ("model".to_owned(), key(500), true));
    assert_eq!(model_input(&assets[4]), ("model".to_owned(), key(501), true));
    act(d, ORG1, 102, ComputeTaskAction::TaskActionExecuting);
    assert_eq!(input_assets(d, ORG1, 102).expect("executing").len(), 5);
    act(d, ORG1, 102, ComputeTaskAction::TaskActionFailed);
    assert_eq!(input_assets(d, ORG1, 102).expect("failed").len(), 5);
}

pub fn disable_outputs(d: &mut dyn Driver) {
    setup_world(d);
    make_ready(d, TRAIN);
    make_ready(d, AGG);
    // 101 (aggregate, transient output) → 102 (train); 103: a train without children.
    let mut t101 = aggregate_task(101, ORG1, &[]);
    t101.outputs.insert("model".to_owned(), task_output(public_permissions(), true));
    let mut t103 = train_task(103, DM1, &[21], &[]);
    t103.outputs.insert("model".to_owned(), task_output(public_permissions(), true));
    register_tasks(d, ORG1, &[t101, train_task(102, DM1, &[20], &[101]), t103]).expect("tasks");

    expect_err(disable_output(d, ORG1, 999, "model"), ErrorKind::NotFound, "computetask with key");
    expect_err(
        disable_output(d, ORG2, 101, "model"),
        ErrorKind::PermissionDenied,
        "only the worker can disable a task output",
    );
    expect_err(
        disable_output(d, ORG1, 101, "model"),
        ErrorKind::CannotDisableOutput,
        "cannot disable asset: task not in final state",
    );
    act(d, ORG1, 101, ComputeTaskAction::TaskActionExecuting);
    register_models(d, ORG1, &[new_model(500, 101, "model")]).expect("model");
    act(d, ORG1, 101, ComputeTaskAction::TaskActionDone);
    expect_err(
        disable_output(d, ORG1, 101, "local"),
        ErrorKind::CannotDisableOutput,
        &format!("there is no output identifier local for task {}", key(101)),
    );
    expect_err(
        disable_output(d, ORG1, 101, "model"),
        ErrorKind::CannotDisableOutput,
        "cannot disable asset: child not in final state",
    );
    act(d, ORG1, 102, ComputeTaskAction::TaskActionExecuting);
    expect_err(disable_output(d, ORG1, 101, "model"), ErrorKind::CannotDisableOutput, "child not in final state");
    act(d, ORG1, 102, ComputeTaskAction::TaskActionDone);

    // Disabled: the model loses its address; MODEL/DISABLED carries it without.
    let before = d.events().len();
    disable_output(d, ORG1, 101, "model").expect("disable");
    let model = get_model(d, 500).expect("model");
    assert!(model.address.is_none());
    let events = events_since(d, before);
    assert_eq!(events.len(), 1);
    let asset = check_event(&events[0], AssetKind::AssetModel, EventKind::EventAssetDisabled, &key(500), CHANNEL, &[]);
    assert_eq!(asset, event::Asset::Model(model));
    // Once only.
    let before = d.events().len();
    expect_err(disable_output(d, ORG1, 101, "model"), ErrorKind::CannotDisableOutput, "already disabled");
    assert_no_event_since(d, before);
    // A new child of the DONE task cannot consume the disabled model.
    expect_err(
        register_tasks(d, ORG1, &[train_task(104, DM1, &[20], &[101])]),
        ErrorKind::InvalidAsset,
        &format!("Model \"{}\" has been disabled", key(500)),
    );
    // Non-transient output; output without children; output with nothing registered.
    act(d, ORG1, 103, ComputeTaskAction::TaskActionExecuting);
    act(d, ORG1, 103, ComputeTaskAction::TaskActionDone);
    expect_err(
        disable_output(d, ORG1, 103, "model"),
        ErrorKind::CannotDisableOutput,
        "cannot disable an output with no registered asset",
    );
    expect_err(disable_output(d, ORG1, 102, "model"), ErrorKind::CannotDisableOutput, "output is not transient");
}

// ---------------------------------------------------------------------------------------------
// A federated plan over two organizations.

fn composite_function(n: u64) -> orchestrator_proto::NewFunction {
    let mut f = new_function(n);
    f.inputs.remove("model");
    f.inputs.insert("local".to_owned(), input(AssetKind::AssetModel, false, true));
    f.inputs.insert("shared".to_owned(), input(AssetKind::AssetModel, false, true));
    f.outputs = BTreeMap::from([
        ("local".to_owned(), output(AssetKind::AssetModel, false)),
        ("shared".to_owned(), output(AssetKind::AssetModel, false)),
    ]);
    f
}

/// A composite task on `dm` (worker = its owner): `local` kept by the worker, `shared` public.
fn composite_task(
    n: u64,
    dm: u64,
    sample: u64,
    local: Option<u64>,
    shared: Option<u64>,
    worker: &str,
) -> NewComputeTask {
    let mut t = train_task(n, dm, &[sample], &[]);
    t.function_key = key(COMPOSITE);
    if let Some(p) = local {
        t.inputs.push(parent_input("local", p, "local"));
    }
    if let Some(p) = shared {
        t.inputs.push(parent_input("shared", p, "model"));
    }
    t.outputs = BTreeMap::from([
        ("local".to_owned(), task_output(private_permissions(&[worker]), true)),
        ("shared".to_owned(), task_output(public_permissions(), false)),
    ]);
    t
}

/// Composite (both organizations) → aggregate (ORG1) → composite (both), driven to DONE by the
/// workers, models registered on the way; the plan stops running at the end.
pub fn two_organization_plan(d: &mut dyn Driver) {
    setup_world(d);
    register_function(d, ORG1, CHANNEL, &composite_function(COMPOSITE)).expect("composite function");
    make_ready(d, COMPOSITE);
    make_ready(d, AGG);
    let c1 = composite_task(201, DM1, 20, None, None, ORG1);
    let c2 = composite_task(202, DM2, 22, None, None, ORG2);
    let mut agg = aggregate_task(203, ORG1, &[]);
    agg.inputs = vec![parent_input("model", 201, "shared"), parent_input("model", 202, "shared")];
    let c3 = composite_task(204, DM1, 21, Some(201), Some(203), ORG1);
    let c4 = composite_task(205, DM2, 23, Some(202), Some(203), ORG2);
    let tasks = register_tasks(d, ORG1, &[c4, c3, agg, c2, c1]).expect("the plan");
    let workers: BTreeMap<String, String> = tasks.iter().map(|t| (t.key.clone(), t.worker.clone())).collect();
    assert_eq!(workers[&key(202)], ORG2, "worker inferred from DM2");
    assert_eq!(workers[&key(205)], ORG2);
    assert!(is_running(d, PLAN));

    let mut model_n = 600;
    let mut run = |d: &mut dyn Driver, n: u64, worker: &str, outputs: &[&str]| {
        assert_eq!(status(d, n), WFES, "task {n} ready");
        act(d, worker, n, ComputeTaskAction::TaskActionExecuting);
        let inputs = input_assets(d, worker, n).expect("inputs");
        let models: Vec<NewModel> = outputs
            .iter()
            .map(|o| {
                model_n += 1;
                new_model(model_n, n, o)
            })
            .collect();
        register_models(d, worker, &models).expect("models");
        act(d, worker, n, ComputeTaskAction::TaskActionDone);
        inputs
    };
    run(d, 201, ORG1, &["local", "shared"]);
    // The ORG1 worker cannot act for ORG2.
    expect_err(
        apply_task_action(d, ORG1, &key(202), ComputeTaskAction::TaskActionExecuting, ""),
        ErrorKind::PermissionDenied,
        "only task owner can update it",
    );
    assert_eq!(status(d, 203), WFPT, "the aggregate waits for both");
    run(d, 202, ORG2, &["local", "shared"]);
    let agg_inputs = run(d, 203, ORG1, &["model"]);
    let consumed: Vec<(String, String, bool)> = agg_inputs.iter().map(model_input).collect();
    assert_eq!(
        consumed,
        [("model".to_owned(), key(602), true), ("model".to_owned(), key(604), true)],
        "both shared models"
    );
    let c3_inputs = run(d, 204, ORG1, &["local", "shared"]);
    let models: Vec<(String, String, bool)> = c3_inputs.iter().skip(2).map(model_input).collect();
    assert_eq!(models, [("local".to_owned(), key(601), true), ("shared".to_owned(), key(605), true)]);
    assert!(is_running(d, PLAN));
    run(d, 205, ORG2, &["local", "shared"]);
    for n in 201..=205 {
        assert_eq!(status(d, n), DONE, "task {n}");
    }
    assert!(!is_running(d, PLAN), "every task done");

    // The transient local outputs of round 1 can go now that their consumers are done.
    disable_output(d, ORG2, 202, "local").expect("ORG2 frees its local model");
    assert!(get_model(d, 603).expect("model").address.is_none());
    disable_output(d, ORG1, 201, "local").expect("ORG1 frees its local model");
    expect_err(disable_output(d, ORG1, 201, "shared"), ErrorKind::CannotDisableOutput, "output is not transient");
    let plan = get_plan(d, ORG1, &key(PLAN)).expect("plan");
    assert!(plan.failure_date.is_none() && plan.cancelation_date.is_none());
}
