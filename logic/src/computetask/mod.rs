//! Compute tasks (docs/business-rules.md §8): registration of task graphs, the task state machine,
//! the effects of function builds on tasks, and the queries.
//!
//! # State layout
//!
//! * `computetask/<key>`: a [`TaskRecord`], the `ComputeTask` as returned by GetTask plus what
//!   the logic needs besides: the assets registered on each output, in registration order
//!   (models and performances; what GetTaskInputAssets, DisableOutput, RegisterModels'
//!   single-output check and RegisterTasks' "model disabled" check read).
//! * `idx/computetask/children/<parent>/<child>` (empty value): the tasks consuming an output of
//!   `parent` (T4 on DONE, DisableOutput).
//! * Query indexes, ordered by creation time then key, whose value is an [`IndexEntry`] (worker,
//!   plan, function) so a filter on the other fields is checked without loading the task:
//!   - `idx/computetask/created/<time>/<key>`
//!   - `idx/computetask/plan/<plan>/<time>/<key>`
//!   - `idx/computetask/worker/<worker>/<time>/<key>`
//!   - `idx/computetask/function/<function>/<time>/<key>`
//!   - `idx/computetask/status/<status>/<time>/<key>`
//!   - `idx/computetask/plan-status/<plan>/<status>/<time>/<key>`
//!   - `idx/computetask/worker-status/<worker>/<status>/<time>/<key>`
//!   - `idx/computetask/function-status/<function>/<status>/<time>/<key>`
//!
//!   The first four never change; the four status indexes move (delete + put) on every status
//!   change. `<status>` is the enum name (`STATUS_DONE`); the worker is escaped like every MSP id.
//!
//! Every read is a key lookup or a range scan over one of these prefixes: IsPlanRunning probes
//! `plan-status` with a limit of 1, function builds select their tasks from `function-status`,
//! DONE finds the children under `children`.

mod outputs;
mod query;
mod register;
mod state;

use orchestrator_proto::{ComputeTask, ComputeTaskStatus, GetTaskParam, compute_task_input};
use prost::Message;

use crate::call::{Call, timestamp_to_micros};
use crate::error::{LogicError, Result};
use crate::keys;

pub use outputs::{add_output_asset, disable_output, input_assets};
pub use query::query;
pub use register::register;
pub use state::{Snapshot, Transition, apply_action, apply_transition, on_function_status};

pub const ASSET: &str = "computetask";

/// What is stored under `computetask/<key>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskRecord {
    /// The task, complete (inputs in request order, outputs with their permissions).
    #[prost(message, required, tag = "1")]
    pub task: ComputeTask,
    /// Assets registered on the task's outputs, in registration order.
    #[prost(message, repeated, tag = "2")]
    pub output_assets: Vec<OutputAsset>,
}

/// One asset registered on a task output.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutputAsset {
    /// The task output identifier.
    #[prost(string, tag = "1")]
    pub identifier: String,
    /// `AssetKind` (MODEL or PERFORMANCE).
    #[prost(int32, tag = "2")]
    pub asset_kind: i32,
    /// Model key, or `<task>|<identifier>` for a performance.
    #[prost(string, tag = "3")]
    pub asset_key: String,
}

/// Value of every query-index entry: the filterable fields that never change.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IndexEntry {
    #[prost(string, tag = "1")]
    pub worker: String,
    #[prost(string, tag = "2")]
    pub compute_plan_key: String,
    #[prost(string, tag = "3")]
    pub function_key: String,
}

impl TaskRecord {
    pub fn new(task: ComputeTask) -> Self {
        TaskRecord { task, output_assets: Vec::new() }
    }

    pub fn status(&self) -> ComputeTaskStatus {
        status_of(&self.task)
    }
}

pub fn status_of(task: &ComputeTask) -> ComputeTaskStatus {
    ComputeTaskStatus::try_from(task.status).unwrap_or(ComputeTaskStatus::StatusUnknown)
}

pub fn get(call: &mut Call<'_>, req: GetTaskParam) -> Result<ComputeTask> {
    Ok(load_record(call, &req.key)?.task)
}

/// The task's record, or NOT_FOUND. A task is stored as its record, not as the `ComputeTask`
/// events carry, so it has its own load and store rather than `asset::load`/`asset::store`.
pub fn load_record(call: &mut Call<'_>, key: &str) -> Result<TaskRecord> {
    call.load(&keys::computetask(key))?.ok_or_else(|| LogicError::not_found(ASSET, key))
}

/// Records of many tasks in one state call (one result per key, in order).
pub fn load_records(call: &mut Call<'_>, task_keys: &[String]) -> Result<Vec<Option<TaskRecord>>> {
    let record_keys: Vec<String> = task_keys.iter().map(|k| keys::computetask(k)).collect();
    call.load_many(&record_keys)
}

/// Rewrites a record whose status did not change (e.g. a new output asset).
pub fn store_record(call: &mut Call<'_>, record: &TaskRecord) -> Result<()> {
    call.store(&keys::computetask(&record.task.key), record)
}

/// Distinct parent task keys, in input order (the reference's `GetParentTaskKeys`).
pub fn parent_keys(task_inputs: &[orchestrator_proto::ComputeTaskInput]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for input in task_inputs {
        if let Some(compute_task_input::Ref::ParentTaskOutput(parent)) = &input.r#ref
            && !keys.contains(&parent.parent_task_key)
        {
            keys.push(parent.parent_task_key.clone());
        }
    }
    keys
}

/// The snapshot carried by events of tasks changed by a cascade (docs/business-rules.md §13.2): no
/// inputs, no outputs.
pub fn without_io(task: &ComputeTask) -> ComputeTask {
    ComputeTask { inputs: Vec::new(), outputs: Default::default(), ..task.clone() }
}

/// Whether at least one task of `plan` has `status`: a one-entry probe of the plan+status index.
pub fn plan_has_status(call: &mut Call<'_>, plan: &str, status: ComputeTaskStatus) -> Result<bool> {
    let (start, end) = keys::prefix_range(&plan_status_prefix(plan, status));
    Ok(!call.scan(&start, &end, 1, None)?.entries.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Index keys.

const PLAN: &str = "plan";
const WORKER: &str = "worker";
const FUNCTION: &str = "function";
const STATUS: &str = "status";
const PLAN_STATUS: &str = "plan-status";
const WORKER_STATUS: &str = "worker-status";
const FUNCTION_STATUS: &str = "function-status";
const CHILDREN: &str = "children";

fn status_name(status: ComputeTaskStatus) -> &'static str {
    status.as_str_name()
}

fn prefix(parts: &[&str]) -> String {
    let mut all = vec!["idx", ASSET];
    all.extend_from_slice(parts);
    keys::join(&all)
}

pub fn created_prefix() -> String {
    keys::created_prefix(ASSET)
}
pub fn plan_prefix(plan: &str) -> String {
    prefix(&[PLAN, plan])
}
pub fn worker_prefix(worker: &str) -> String {
    prefix(&[WORKER, worker])
}
pub fn function_prefix(function: &str) -> String {
    prefix(&[FUNCTION, function])
}
pub fn status_prefix(status: ComputeTaskStatus) -> String {
    prefix(&[STATUS, status_name(status)])
}
pub fn plan_status_prefix(plan: &str, status: ComputeTaskStatus) -> String {
    prefix(&[PLAN_STATUS, plan, status_name(status)])
}
pub fn worker_status_prefix(worker: &str, status: ComputeTaskStatus) -> String {
    prefix(&[WORKER_STATUS, worker, status_name(status)])
}
pub fn function_status_prefix(function: &str, status: ComputeTaskStatus) -> String {
    prefix(&[FUNCTION_STATUS, function, status_name(status)])
}
/// `idx/computetask/children/<parent>`: the children of a task, by child key.
pub fn children_prefix(parent: &str) -> String {
    prefix(&[CHILDREN, parent])
}
fn child_link(parent: &str, child: &str) -> String {
    prefix(&[CHILDREN, parent, child])
}

/// `<prefix>/<time>/<key>`.
fn entry(prefix: String, micros: i64, key: &str) -> String {
    format!("{prefix}/{}/{}", keys::time(micros), keys::escape(key))
}

fn created_micros(task: &ComputeTask) -> i64 {
    task.creation_date.as_ref().map(timestamp_to_micros).unwrap_or_default()
}

/// Index entries that never move.
fn static_index_keys(task: &ComputeTask) -> [String; 4] {
    let micros = created_micros(task);
    [
        keys::created_index(ASSET, micros, &task.key),
        entry(plan_prefix(&task.compute_plan_key), micros, &task.key),
        entry(worker_prefix(&task.worker), micros, &task.key),
        entry(function_prefix(&task.function_key), micros, &task.key),
    ]
}

/// Index entries of the task under `status`.
fn status_index_keys(task: &ComputeTask, status: ComputeTaskStatus) -> [String; 4] {
    let micros = created_micros(task);
    [
        entry(status_prefix(status), micros, &task.key),
        entry(plan_status_prefix(&task.compute_plan_key, status), micros, &task.key),
        entry(worker_status_prefix(&task.worker, status), micros, &task.key),
        entry(function_status_prefix(&task.function_key, status), micros, &task.key),
    ]
}

fn index_value(task: &ComputeTask) -> Vec<u8> {
    IndexEntry {
        worker: task.worker.clone(),
        compute_plan_key: task.compute_plan_key.clone(),
        function_key: task.function_key.clone(),
    }
    .encode_to_vec()
}

/// Stores a new task: its record, every index entry and the links from its parents.
fn insert(call: &mut Call<'_>, task: &ComputeTask) -> Result<()> {
    call.store(&keys::computetask(&task.key), &TaskRecord::new(task.clone()))?;
    let value = index_value(task);
    for key in static_index_keys(task).into_iter().chain(status_index_keys(task, status_of(task))) {
        call.put_raw(&key, value.clone())?;
    }
    for parent in parent_keys(&task.inputs) {
        call.put_raw(&child_link(&parent, &task.key), Vec::new())?;
    }
    Ok(())
}

/// Stores a status change: the record and the moved status index entries.
fn store_status(call: &mut Call<'_>, record: &mut TaskRecord, to: ComputeTaskStatus) -> Result<()> {
    let from = record.status();
    for key in status_index_keys(&record.task, from) {
        call.delete(&key)?;
    }
    record.task.status = to as i32;
    let value = index_value(&record.task);
    for key in status_index_keys(&record.task, to) {
        call.put_raw(&key, value.clone())?;
    }
    store_record(call, record)
}
