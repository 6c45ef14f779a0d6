//! The task state machine (docs/business-rules.md §8.5, §8.6) and the effects of function builds on
//! tasks (T1–T3, T7, T8 for tasks of the function).

use std::collections::BTreeMap;

use orchestrator_proto::{
    ApplyTaskActionParam, ApplyTaskActionResponse, ComputeTaskAction, ComputeTaskStatus, Function, FunctionStatus,
};

use super::{
    ASSET, TaskRecord, children_prefix, function_status_prefix, load_record, load_records, parent_keys, status_of,
    store_status, without_io,
};
use crate::asset;
use crate::call::Call;
use crate::computeplan;
use crate::error::{LogicError, Result};
use crate::function::REASON_USER_ACTION;
use crate::keys;
use crate::pagination::scan_all_keys;

use ComputeTaskStatus::{
    StatusBuilding as BLD, StatusCanceled as CANCELED, StatusDone as DONE, StatusExecuting as EXE,
    StatusFailed as FAILED, StatusWaitingForBuilderSlot as WFBS, StatusWaitingForExecutorSlot as WFES,
    StatusWaitingForParentTasks as WFPT,
};

/// Tasks are processed in chunks of this many when a function build moves many of them.
const CHUNK: usize = 500;

/// The reference's state machine events (lib/service/computetaskstate.go), named as there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// WFBS → BLD: the function started building.
    Building,
    /// BLD → WFPT: the function is built, some parent is not DONE.
    WaitingParentTasks,
    /// BLD, WFPT → WFES: the function is built and every parent is DONE.
    WaitingExecutorSlot,
    /// WFES → EXE.
    Executing,
    /// EXE → DONE, then children may start (T4).
    Done,
    /// Any active status → CANCELED; no cascade.
    Canceled,
    /// Any active status → FAILED; the plan fails, no cascade.
    Failed,
}

impl Transition {
    pub fn name(self) -> &'static str {
        match self {
            Transition::Building => "transitionBuilding",
            Transition::WaitingParentTasks => "transitionWaitingParentTasks",
            Transition::WaitingExecutorSlot => "transitionWaitingExecutorSlot",
            Transition::Executing => "transitionExecuting",
            Transition::Done => "transitionDone",
            Transition::Canceled => "transitionCanceled",
            Transition::Failed => "transitionFailed",
        }
    }

    pub fn target(self) -> ComputeTaskStatus {
        match self {
            Transition::Building => BLD,
            Transition::WaitingParentTasks => WFPT,
            Transition::WaitingExecutorSlot => WFES,
            Transition::Executing => EXE,
            Transition::Done => DONE,
            Transition::Canceled => CANCELED,
            Transition::Failed => FAILED,
        }
    }

    pub fn allowed_from(self, from: ComputeTaskStatus) -> bool {
        let sources: &[ComputeTaskStatus] = match self {
            Transition::Building => &[WFBS],
            Transition::WaitingParentTasks => &[BLD],
            Transition::WaitingExecutorSlot => &[BLD, WFPT],
            Transition::Executing => &[WFES],
            Transition::Done => &[EXE],
            Transition::Canceled | Transition::Failed => &[WFBS, BLD, WFES, WFPT, EXE],
        };
        sources.contains(&from)
    }
}

/// What the status event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshot {
    /// The complete task (the task acted upon directly).
    Full,
    /// The task without inputs and outputs (tasks changed by a cascade, docs/business-rules.md §13.2).
    WithoutIo,
}

pub fn apply_action(call: &mut Call<'_>, req: ApplyTaskActionParam) -> Result<ApplyTaskActionResponse> {
    // The log becomes the event's `reason`: event metadata is stored where NUL cannot go
    // (PostgreSQL jsonb), and refusing it here keeps every host alike.
    if req.log.contains('\0') {
        return Err(LogicError::invalid("compute task action", "log: contains NUL"));
    }
    let mut record = load_record(call, &req.compute_task_key)?;
    let requester = call.requester();
    let is_owner = record.task.owner == requester;
    let is_worker = record.task.worker == requester;
    // Who may act depends on the action only, never on the status (docs/business-rules.md §8.6).
    let permitted = match ComputeTaskAction::try_from(req.action) {
        Ok(ComputeTaskAction::TaskActionExecuting) if is_worker => Some(Transition::Executing),
        Ok(ComputeTaskAction::TaskActionDone) if is_worker => Some(Transition::Done),
        Ok(ComputeTaskAction::TaskActionCanceled) if is_owner || is_worker => Some(Transition::Canceled),
        Ok(ComputeTaskAction::TaskActionFailed) if is_owner || is_worker => Some(Transition::Failed),
        _ => None,
    };
    let Some(transition) = permitted else {
        return Err(LogicError::permission_denied("only task owner can update it"));
    };
    let reason = if req.log.is_empty() { REASON_USER_ACTION } else { req.log.as_str() };
    apply_transition(call, &mut record, transition, reason, Snapshot::Full)?;
    Ok(ApplyTaskActionResponse {})
}

/// Applies one transition: refuses it when the current status does not allow it (UNKNOWN
/// `event <transition> inappropriate in current state <STATUS>`), stores the status, emits
/// COMPUTE_TASK/UPDATED `{reason}`, then DONE releases the children (T4) and FAILED fails the
/// plan. No other cascade.
pub fn apply_transition(
    call: &mut Call<'_>,
    record: &mut TaskRecord,
    transition: Transition,
    reason: &str,
    snapshot: Snapshot,
) -> Result<()> {
    let from = record.status();
    if !transition.allowed_from(from) {
        return Err(LogicError::unknown(format!(
            "event {} inappropriate in current state {}",
            transition.name(),
            from.as_str_name()
        )));
    }
    store_status(call, record, transition.target())?;
    let task = match snapshot {
        Snapshot::Full => record.task.clone(),
        Snapshot::WithoutIo => without_io(&record.task),
    };
    asset::emit_status_change(call, task, reason);
    match transition {
        Transition::Done => release_children(call, &record.task.key),
        Transition::Failed => computeplan::fail_plan(call, &record.task.compute_plan_key),
        _ => Ok(()),
    }
}

/// T4: every child waiting for its parents whose parents are now all DONE moves to WFES, in
/// child key order, with reason `Last parent task <parent> done`.
fn release_children(call: &mut Call<'_>, parent: &str) -> Result<()> {
    let child_keys: Vec<String> =
        scan_all_keys(call, &children_prefix(parent))?.iter().map(|k| keys::last_component(k).to_owned()).collect();
    let reason = format!("Last parent task {parent} done");
    for chunk in child_keys.chunks(CHUNK) {
        let waiting: Vec<TaskRecord> =
            load_records(call, chunk)?.into_iter().flatten().filter(|child| child.status() == WFPT).collect();
        let done = parents_done(call, &waiting)?;
        for (mut child, all_done) in waiting.into_iter().zip(done) {
            if all_done {
                apply_transition(call, &mut child, Transition::WaitingExecutorSlot, &reason, Snapshot::WithoutIo)?;
            }
        }
    }
    Ok(())
}

/// For each task, whether all its parents are DONE (one state call for all the parents).
fn parents_done(call: &mut Call<'_>, tasks: &[TaskRecord]) -> Result<Vec<bool>> {
    let mut all: Vec<String> = tasks.iter().flat_map(|t| parent_keys(&t.task.inputs)).collect();
    all.sort_unstable();
    all.dedup();
    let statuses: BTreeMap<String, ComputeTaskStatus> = all
        .iter()
        .cloned()
        .zip(load_records(call, &all)?)
        .filter_map(|(key, record)| record.map(|r| (key, status_of(&r.task))))
        .collect();
    Ok(tasks
        .iter()
        .map(|t| parent_keys(&t.task.inputs).iter().all(|p| statuses.get(p).is_none_or(|s| *s == DONE)))
        .collect())
}

/// Effects of a function status change on its tasks (called by the function state machine
/// after its own event): BUILDING starts the build of the tasks waiting for a builder slot
/// (T1, reason of the function action); READY sends the building tasks to their parents or to
/// an executor slot (T2/T3, reason `Function <key> finished building`); CANCELED and FAILED
/// cancel/fail the building tasks (T7/T8, reason of the function action; failures fail the
/// plans). Tasks are taken by creation order; events carry tasks without inputs and outputs.
pub fn on_function_status(call: &mut Call<'_>, function: &Function, reason: &str) -> Result<()> {
    let (selected, transition) = match FunctionStatus::try_from(function.status) {
        Ok(FunctionStatus::Building) => (WFBS, Some(Transition::Building)),
        Ok(FunctionStatus::Ready) => (BLD, None),
        Ok(FunctionStatus::Canceled) => (BLD, Some(Transition::Canceled)),
        Ok(FunctionStatus::Failed) => (BLD, Some(Transition::Failed)),
        _ => return Ok(()),
    };
    // Collect first: the transitions move the entries of the scanned index.
    let task_keys: Vec<String> = scan_all_keys(call, &function_status_prefix(&function.key, selected))?
        .iter()
        .map(|k| keys::last_component(k).to_owned())
        .collect();
    let built_reason = format!("Function {} finished building", function.key);
    for chunk in task_keys.chunks(CHUNK) {
        let mut records = Vec::with_capacity(chunk.len());
        for (key, record) in chunk.iter().zip(load_records(call, chunk)?) {
            records.push(record.ok_or_else(|| LogicError::internal(format!("index points to missing {ASSET} {key}")))?);
        }
        match transition {
            Some(transition) => {
                for mut record in records {
                    apply_transition(call, &mut record, transition, reason, Snapshot::WithoutIo)?;
                }
            }
            None => {
                let done = parents_done(call, &records)?;
                for (mut record, all_done) in records.into_iter().zip(done) {
                    let next = if all_done { Transition::WaitingExecutorSlot } else { Transition::WaitingParentTasks };
                    apply_transition(call, &mut record, next, &built_reason, Snapshot::WithoutIo)?;
                }
            }
        }
    }
    Ok(())
}
