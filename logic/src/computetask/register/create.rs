//! createTask (docs/business-rules.md §8.1 step 5), check by check in the reference's order,
//! on the prefetched [`World`]: plan, parents, function, initial status (§8.2), disabled models,
//! output permissions, worker (§8.3), logs permission, rank, then inputs and outputs (§8.4).

use std::collections::BTreeMap;

use orchestrator_proto::{
    AssetKind, ComputeTask, ComputeTaskInput, ComputeTaskOutput, ComputeTaskStatus, DataManager, Function,
    FunctionStatus, NewComputeTask, NewPermissions, Permission, Permissions,
};

use super::inputs_outputs::{asset_key, declared, is_kind, validate_inputs, validate_outputs};
use super::prefetch::{World, find_parent};
use crate::computetask::{parent_keys, status_of};
use crate::error::{LogicError, Result};
use crate::permissions::{can_process, union};
use crate::validation::go_quote;
use crate::{computeplan, organization};

pub(super) fn create_task(
    world: &World,
    batch: &BTreeMap<String, ComputeTask>,
    new: &NewComputeTask,
    owner: &str,
    now: prost_types::Timestamp,
) -> Result<ComputeTask> {
    // 1. The plan exists and belongs to the requester (termination is not checked).
    let plan = world
        .plans
        .get(&new.compute_plan_key)
        .and_then(Option::as_ref)
        .ok_or_else(|| LogicError::not_found(computeplan::ASSET, &new.compute_plan_key))?;
    if plan.owner != owner {
        return Err(LogicError::permission_denied("Cannot register tasks to a compute plan you don't own"));
    }

    // 2. Parents (the sort guarantees they are all known).
    let parents: Vec<&ComputeTask> =
        parent_keys(&new.inputs).iter().filter_map(|k| find_parent(world, batch, k)).collect();

    // 3. The function, processable by the owner.
    let function = world.function(&new.function_key)?;
    if !can_process_opt(function.permissions.as_ref(), owner) {
        return Err(LogicError::permission_denied(format!(
            "not authorized to process function {}",
            go_quote(&function.key)
        )));
    }

    // 4. Initial status.
    let status = initial_status(&parents, function);

    // 5. Models of DONE parents must not have been disabled.
    for parent in &parents {
        if status_of(parent) != ComputeTaskStatus::StatusDone {
            continue;
        }
        let Some(record) = world.stored_parents.get(&parent.key) else {
            continue;
        };
        for asset in &record.output_assets {
            if asset.asset_kind != AssetKind::AssetModel as i32 {
                continue;
            }
            if let Some(Some(model)) = world.models.get(&asset.asset_key)
                && model.address.is_none()
            {
                return Err(LogicError::invalid_asset(format!("Model {} has been disabled", go_quote(&model.key))));
            }
        }
    }

    // 6. Outputs, with their permissions (owner added).
    let mut outputs = BTreeMap::new();
    for (identifier, output) in &new.outputs {
        let default = NewPermissions::default();
        let permission = new_permission(world, owner, output.permissions.as_ref().unwrap_or(&default))?;
        outputs.insert(
            identifier.clone(),
            ComputeTaskOutput {
                permissions: Some(Permissions { process: Some(permission.clone()), download: Some(permission) }),
                transient: output.transient,
            },
        );
    }

    // 7. Worker, a registered organization.
    let worker = task_worker(world, new, function)?;
    if !world.organizations.contains(&worker) {
        return Err(LogicError::not_found(organization::ASSET, &worker));
    }

    // 8. Logs permission; 9. rank.
    let logs_permission = logs_permission(world, owner, &parents, &new.inputs, function)?;
    let rank = if parents.is_empty() { 0 } else { parents.iter().map(|p| p.rank).max().unwrap_or(0).saturating_add(1) };

    let task = ComputeTask {
        key: new.key.clone(),
        owner: owner.to_owned(),
        compute_plan_key: new.compute_plan_key.clone(),
        rank,
        status: status as i32,
        worker,
        creation_date: Some(now),
        logs_permission: Some(logs_permission),
        metadata: new.metadata.clone(),
        inputs: new.inputs.clone(),
        outputs,
        function_key: function.key.clone(),
    };

    // 10. Inputs and outputs against the function.
    validate_inputs(world, batch, &task, function)?;
    validate_outputs(&task, function)?;
    Ok(task)
}

pub(super) fn can_process_opt(permissions: Option<&Permissions>, who: &str) -> bool {
    permissions.is_some_and(|p| can_process(p, who))
}

/// docs/business-rules.md §1.2 on prefetched organizations: a private list may only name registered
/// organizations.
fn new_permission(world: &World, owner: &str, input: &NewPermissions) -> Result<Permission> {
    crate::permissions::check_size(input)?;
    if !input.public && !input.authorized_ids.iter().all(|id| world.organizations.contains(id)) {
        return Err(LogicError::bad_request("invalid permission input values"));
    }
    Ok(permission_with_owner(owner, input))
}

pub(super) fn permission_with_owner(owner: &str, input: &NewPermissions) -> Permission {
    let mut authorized_ids = input.authorized_ids.clone();
    if !authorized_ids.iter().any(|id| id == owner) {
        authorized_ids.push(owner.to_owned());
    }
    Permission { public: input.public, authorized_ids }
}

/// docs/business-rules.md §8.2.
fn initial_status(parents: &[&ComputeTask], function: &Function) -> ComputeTaskStatus {
    use ComputeTaskStatus as S;
    if parents.iter().any(|p| matches!(status_of(p), S::StatusFailed | S::StatusCanceled)) {
        return S::StatusCanceled;
    }
    match FunctionStatus::try_from(function.status) {
        Ok(FunctionStatus::Ready) => {
            if parents.iter().all(|p| status_of(p) == S::StatusDone) {
                S::StatusWaitingForExecutorSlot
            } else {
                S::StatusWaitingForParentTasks
            }
        }
        Ok(FunctionStatus::Waiting) => S::StatusWaitingForBuilderSlot,
        Ok(FunctionStatus::Building) => S::StatusBuilding,
        Ok(FunctionStatus::Failed) => S::StatusFailed,
        Ok(FunctionStatus::Canceled) => S::StatusCanceled,
        _ => S::StatusUnknown,
    }
}

/// The data manager of a DATA_MANAGER input, which must be given by asset key.
fn opener<'w>(world: &'w World, input: &ComputeTaskInput) -> Result<&'w DataManager> {
    let key = asset_key(input);
    if key.is_empty() {
        return Err(LogicError::invalid_asset(format!(
            "invalid task input {}: openers must be referenced using an asset key",
            go_quote(&input.identifier)
        )));
    }
    world.data_manager(key)
}

/// docs/business-rules.md §8.3: the owner of the first data manager input, else the explicit
/// worker.
fn task_worker(world: &World, new: &NewComputeTask, function: &Function) -> Result<String> {
    for input in &new.inputs {
        if !is_kind(declared(function, input)?, AssetKind::AssetDataManager) {
            continue;
        }
        let dm = opener(world, input)?;
        if !new.worker.is_empty() && new.worker != dm.owner {
            return Err(LogicError::bad_request(format!(
                "Specified worker {} does not match data manager owner: {}",
                go_quote(&new.worker),
                go_quote(&dm.owner)
            )));
        }
        return Ok(dm.owner.clone());
    }
    if new.worker.is_empty() {
        return Err(LogicError::bad_request("Worker cannot be inferred and must be explicitly set"));
    }
    Ok(new.worker.clone())
}

/// docs/business-rules.md §1.4: the data manager's logs permission, else the owner's private
/// permission united with every parent's.
fn logs_permission(
    world: &World,
    owner: &str,
    parents: &[&ComputeTask],
    inputs: &[ComputeTaskInput],
    function: &Function,
) -> Result<Permission> {
    for input in inputs {
        if is_kind(declared(function, input)?, AssetKind::AssetDataManager) {
            let dm = opener(world, input)?;
            return Ok(dm.logs_permission.clone().unwrap_or_default());
        }
    }
    let mut permission = Permission { public: false, authorized_ids: vec![owner.to_owned()] };
    for parent in parents {
        permission = union(&parent.logs_permission.clone().unwrap_or_default(), &permission);
    }
    Ok(permission)
}
