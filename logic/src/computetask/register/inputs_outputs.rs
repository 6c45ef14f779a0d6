//! A task's inputs and outputs against its function (docs/business-rules.md §8.4), the last
//! step of createTask: every input declared, of a kind the function accepts, referring to an
//! asset or a parent output the task may use; the outputs exactly the function's.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_proto::{AssetKind, ComputeTask, ComputeTaskInput, Function, FunctionInput, compute_task_input::Ref};

use super::create::can_process_opt;
use super::prefetch::{World, find_parent};
use crate::computetask::ASSET;
use crate::datasample;
use crate::error::{LogicError, Result};
use crate::validation::go_quote;

fn unknown_input(identifier: &str) -> LogicError {
    LogicError::invalid_asset(format!(
        "unknown task input: this identifier was not declared in the Function: {}",
        go_quote(identifier)
    ))
}

pub(super) fn declared<'f>(function: &'f Function, input: &ComputeTaskInput) -> Result<&'f FunctionInput> {
    function.inputs.get(&input.identifier).ok_or_else(|| unknown_input(&input.identifier))
}

pub(super) fn is_kind(declared: &FunctionInput, kind: AssetKind) -> bool {
    declared.kind == kind as i32
}

pub(super) fn asset_key(input: &ComputeTaskInput) -> &str {
    match &input.r#ref {
        Some(Ref::AssetKey(key)) => key,
        _ => "",
    }
}

fn kind_name(kind: i32) -> String {
    AssetKind::try_from(kind).map_or_else(|_| kind.to_string(), |k| k.as_str_name().to_owned())
}

/// docs/business-rules.md §8.4, inputs: in order, then the mandatory inputs never given.
pub(super) fn validate_inputs(
    world: &World,
    batch: &BTreeMap<String, ComputeTask>,
    task: &ComputeTask,
    function: &Function,
) -> Result<()> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for input in &task.inputs {
        let declared_input = declared(function, input)?;
        if seen.contains(input.identifier.as_str()) && !declared_input.multiple {
            return Err(LogicError::invalid_asset(format!(
                "duplicate task input: this identifier is present multiple times in the task inputs, but it was not declared as \"Multiple\" in the Function: {}",
                go_quote(&input.identifier)
            )));
        }
        seen.insert(&input.identifier);
        match AssetKind::try_from(declared_input.kind) {
            // Checked with their data manager.
            Ok(AssetKind::AssetDataSample) => {}
            Ok(AssetKind::AssetDataManager) => validate_data_manager_input(world, task, input, function)?,
            _ => validate_input_ref(world, batch, task, input, declared_input)?,
        }
    }
    for (identifier, declared_input) in &function.inputs {
        if !declared_input.optional && !seen.contains(identifier.as_str()) {
            return Err(LogicError::invalid_asset(format!(
                "missing task input: this identifier is required by the Function: {}",
                go_quote(identifier)
            )));
        }
    }
    Ok(())
}

/// The data manager input: given by key; every data sample input given by key, each sample
/// linked to that manager; the owner may process the manager.
fn validate_data_manager_input(
    world: &World,
    task: &ComputeTask,
    dm_input: &ComputeTaskInput,
    function: &Function,
) -> Result<()> {
    if asset_key(dm_input).is_empty() {
        return Err(LogicError::invalid_asset(format!(
            "invalid task input {}: openers must be referenced using an asset key",
            go_quote(&dm_input.identifier)
        )));
    }
    let mut sample_keys = Vec::new();
    for input in &task.inputs {
        if !is_kind(declared(function, input)?, AssetKind::AssetDataSample) {
            continue;
        }
        let key = asset_key(input);
        if key.is_empty() {
            return Err(LogicError::invalid_asset(format!(
                "invalid task input {}: data samples must be referenced using an asset key",
                go_quote(&input.identifier)
            )));
        }
        sample_keys.push(key);
    }
    let dm = world.data_manager(asset_key(dm_input))?;
    if !can_process_opt(dm.permissions.as_ref(), &task.owner) {
        return Err(LogicError::permission_denied(format!(
            "not authorized to process datamanager {}",
            go_quote(&dm.key)
        )));
    }
    for key in sample_keys {
        let sample = world
            .samples
            .get(key)
            .and_then(Option::as_ref)
            .ok_or_else(|| LogicError::not_found(datasample::ASSET, key))?;
        if !sample.data_manager_keys.contains(&dm.key) {
            return Err(LogicError::invalid_asset("datasamples do not share a common manager"));
        }
    }
    Ok(())
}

/// A MODEL input (or any kind other than data manager/sample): an existing model the worker may
/// process, or a compatible output of a parent the worker may process.
fn validate_input_ref(
    world: &World,
    batch: &BTreeMap<String, ComputeTask>,
    task: &ComputeTask,
    input: &ComputeTaskInput,
    declared_input: &FunctionInput,
) -> Result<()> {
    let id = go_quote(&input.identifier);
    match &input.r#ref {
        Some(Ref::AssetKey(key)) => {
            if !is_kind(declared_input, AssetKind::AssetModel) {
                return Err(LogicError::unimplemented(format!("invalid task input {id}: invalid asset kind")));
            }
            let model = world.model(key)?;
            if !can_process_opt(model.permissions.as_ref(), &task.worker) {
                return Err(LogicError::permission_denied(format!(
                    "not authorized to process model {}",
                    go_quote(&model.key)
                )));
            }
            Ok(())
        }
        Some(Ref::ParentTaskOutput(reference)) => {
            let pk = &reference.parent_task_key;
            let oid = &reference.output_identifier;
            let Some(parent) = find_parent(world, batch, pk) else {
                let not_found = LogicError::not_found(ASSET, pk);
                return Err(LogicError::invalid_asset(format!(
                    "invalid task input {id}: parent task key {pk} not found: {}",
                    not_found.message
                )));
            };
            let parent_function = world.function(&parent.function_key)?;
            let Some(function_output) = parent_function.outputs.get(oid) else {
                return Err(LogicError::invalid_asset(format!(
                    "invalid task input {id}: parent task {pk}: function output not found: {}",
                    go_quote(oid)
                )));
            };
            if function_output.kind != declared_input.kind {
                // The reference quotes the output identifier here.
                return Err(LogicError::invalid_asset(format!(
                    "invalid task input {}: mismatching task input asset kinds: expecting {} but parent task output has kind {}",
                    go_quote(oid),
                    kind_name(declared_input.kind),
                    kind_name(function_output.kind)
                )));
            }
            if function_output.multiple && !declared_input.multiple {
                return Err(LogicError::invalid_asset(format!(
                    "invalid task input {id}: multiple task output used as single task input"
                )));
            }
            let Some(output) = parent.outputs.get(oid) else {
                return Err(LogicError::invalid_asset(format!(
                    "invalid task input {id}: parent task {pk}: output not found: {}",
                    go_quote(oid)
                )));
            };
            if !can_process_opt(output.permissions.as_ref(), &task.worker) {
                // Argument order as in the reference.
                return Err(LogicError::permission_denied(format!(
                    "invalid task input {id}: worker {} doesn't have permission to process output {} of task {oid}",
                    go_quote(&task.worker),
                    go_quote(pk)
                )));
            }
            Ok(())
        }
        None => Err(LogicError::invalid_asset(format!(
            "invalid task input {id}: an asset or task output reference must be specified"
        ))),
    }
}

/// docs/business-rules.md §8.4, outputs: the task's output identifiers are exactly the function's.
pub(super) fn validate_outputs(task: &ComputeTask, function: &Function) -> Result<()> {
    let tk = &task.key;
    for (identifier, output) in &task.outputs {
        let Some(declared_output) = function.outputs.get(identifier) else {
            return Err(LogicError::invalid_asset(format!(
                "invalid task {tk}, unknown task output: this identifier was not declared in the Function: {}",
                go_quote(identifier)
            )));
        };
        if declared_output.kind == AssetKind::AssetPerformance as i32 {
            let public = output.permissions.as_ref().and_then(|p| p.process.as_ref()).is_some_and(|p| p.public);
            if !public {
                return Err(LogicError::invalid_asset(format!(
                    "invalid task {tk}, invalid task output {}: a PERFORMANCE output should be public",
                    go_quote(identifier)
                )));
            }
            if output.transient {
                return Err(LogicError::invalid_asset(format!(
                    "invalid task {tk}, invalid task output {}: a PERFORMANCE output cannot be transient",
                    go_quote(identifier)
                )));
            }
        }
    }
    for identifier in function.outputs.keys() {
        if !task.outputs.contains_key(identifier) {
            return Err(LogicError::invalid_asset(format!(
                "invalid task {tk}, missing task output: this identifier is required by the Function: {}",
                go_quote(identifier)
            )));
        }
    }
    Ok(())
}
