//! Compute plans (docs/business-rules.md §7): registration, renaming, cancellation, failure and the
//! derived "running" state.
//!
//! Layout: the plan under `computeplan/<key>`; `idx/computeplan/created/<time>/<key>` (default
//! order) and `idx/computeplan/owner/<owner>/<time>/<key>` (QueryPlans' owner filter), both with
//! empty values. Whether a plan is running is answered from the tasks' plan+status index
//! (`computetask::plan_has_status`), one range probe of one entry per status.

use orchestrator_proto::{
    ApplyPlanActionParam, ApplyPlanActionResponse, ComputePlan, ComputePlanAction, ComputeTaskStatus,
    GetComputePlanParam, IsPlanRunningParam, IsPlanRunningResponse, NewComputePlan, QueryPlansParam,
    QueryPlansResponse, UpdateComputePlanParam, UpdateComputePlanResponse,
};

use crate::asset::{self, load, load_owned, require_new, store, store_updated};
use crate::call::Call;
use crate::computetask;
use crate::error::{ErrorKind, LogicError, Result};
use crate::keys;
use crate::organization::require_registered;
use crate::pagination::query_index;
use crate::validation::{FieldErrors, check_metadata, check_tag, require_name, require_uuid};

pub const ASSET: &str = "computeplan";

/// `idx/computeplan/owner/<owner>/<time>/<key>`: the plans of one owner in creation order.
pub fn by_owner_prefix(owner: &str) -> String {
    keys::join(&["idx", ASSET, "owner", owner])
}
fn by_owner_index(owner: &str, created_micros: i64, key: &str) -> String {
    keys::join(&["idx", ASSET, "owner", owner, &keys::time(created_micros), key])
}

/// A plan is terminated once canceled or failed; both states are final.
pub fn is_terminated(plan: &ComputePlan) -> bool {
    plan.cancelation_date.is_some() || plan.failure_date.is_some()
}

/// OE0109 `compute plan <key> is already terminated` (UNKNOWN in the reference's mapping).
pub fn terminated_error(key: &str) -> LogicError {
    LogicError::new(ErrorKind::TerminatedComputePlan, format!("compute plan {key} is already terminated"))
}

pub fn register(call: &mut Call<'_>, req: NewComputePlan) -> Result<ComputePlan> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "key", &req.key);
    check_tag(&mut errs, "tag", &req.tag);
    require_name(&mut errs, "name", &req.name);
    check_metadata(&mut errs, "metadata", &req.metadata);
    if let Some(details) = errs.into_message() {
        return Err(LogicError::invalid(ASSET, details));
    }
    require_new::<ComputePlan>(call, &req.key)?;
    let owner = call.requester().to_owned();
    require_registered(call, &owner)?;
    let plan = ComputePlan {
        key: req.key,
        owner,
        creation_date: Some(call.now()),
        tag: req.tag,
        name: req.name,
        metadata: req.metadata,
        cancelation_date: None,
        failure_date: None,
    };
    let now = call.now_micros();
    store(call, &plan)?;
    call.put_raw(&keys::created_index(ASSET, now, &plan.key), Vec::new())?;
    call.put_raw(&by_owner_index(&plan.owner, now, &plan.key), Vec::new())?;
    asset::emit_created(call, plan.clone());
    Ok(plan)
}

pub fn get(call: &mut Call<'_>, req: GetComputePlanParam) -> Result<ComputePlan> {
    load(call, &req.key)
}

pub fn query(call: &mut Call<'_>, req: QueryPlansParam) -> Result<QueryPlansResponse> {
    let owner = req.filter.map(|f| f.owner).unwrap_or_default();
    let prefix = if owner.is_empty() { keys::created_prefix(ASSET) } else { by_owner_prefix(&owner) };
    let (plans, next_page_token) = query_index(call, &prefix, &req.page_token, req.page_size, keys::computeplan)?;
    Ok(QueryPlansResponse { plans, next_page_token })
}

/// Only the name is mutable; allowed on terminated plans too. Emits COMPUTE_PLAN/UPDATED.
pub fn update(call: &mut Call<'_>, req: UpdateComputePlanParam) -> Result<UpdateComputePlanResponse> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "key", &req.key);
    require_name(&mut errs, "name", &req.name);
    if let Some(details) = errs.into_message() {
        return Err(LogicError::invalid(ASSET, details));
    }
    let mut plan: ComputePlan = load_owned(call, &req.key, "requester does not own the compute plan")?;
    plan.name = req.name;
    store_updated(call, plan)?;
    Ok(UpdateComputePlanResponse {})
}

/// Cancellation only stamps `cancelation_date`: the tasks are not touched
/// (docs/business-rules.md §7.1).
pub fn apply_action(call: &mut Call<'_>, req: ApplyPlanActionParam) -> Result<ApplyPlanActionResponse> {
    let mut plan: ComputePlan = load_owned(call, &req.key, "only plan owner can act on it")?;
    if req.action != ComputePlanAction::PlanActionCanceled as i32 {
        return Err(LogicError::unimplemented("plan action unimplemented"));
    }
    if is_terminated(&plan) {
        return Err(terminated_error(&plan.key));
    }
    plan.cancelation_date = Some(call.now());
    store_updated(call, plan)?;
    Ok(ApplyPlanActionResponse {})
}

/// Task statuses meaning "waiting, building or executing".
const ACTIVE_STATUSES: [ComputeTaskStatus; 5] = [
    ComputeTaskStatus::StatusWaitingForBuilderSlot,
    ComputeTaskStatus::StatusBuilding,
    ComputeTaskStatus::StatusWaitingForParentTasks,
    ComputeTaskStatus::StatusWaitingForExecutorSlot,
    ComputeTaskStatus::StatusExecuting,
];

/// Running ⇔ not terminated, no task canceled or failed, and at least one task waiting,
/// building or executing. Unknown plan → NOT_FOUND (the reference crashes). Every check is a
/// one-entry probe of the plan+status index, whatever the number of tasks.
pub fn is_running(call: &mut Call<'_>, req: IsPlanRunningParam) -> Result<IsPlanRunningResponse> {
    let plan: ComputePlan = load(call, &req.key)?;
    let is_running = !is_terminated(&plan) && running_by_tasks(call, &plan.key)?;
    Ok(IsPlanRunningResponse { is_running })
}

fn running_by_tasks(call: &mut Call<'_>, plan: &str) -> Result<bool> {
    for stopped in [ComputeTaskStatus::StatusCanceled, ComputeTaskStatus::StatusFailed] {
        if computetask::plan_has_status(call, plan, stopped)? {
            return Ok(false);
        }
    }
    for active in ACTIVE_STATUSES {
        if computetask::plan_has_status(call, plan, active)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A task of the plan failed: stamp `failure_date` unless the plan is already terminated (then
/// nothing happens, silently). No event (docs/business-rules.md §13.2).
pub fn fail_plan(call: &mut Call<'_>, plan_key: &str) -> Result<()> {
    let mut plan: ComputePlan = load(call, plan_key)?;
    if is_terminated(&plan) {
        return Ok(());
    }
    plan.failure_date = Some(call.now());
    store(call, &plan)
}
