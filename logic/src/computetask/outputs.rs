//! What tasks consume and produce: the assets registered on outputs, GetTaskInputAssets
//! (docs/business-rules.md §8.8) and DisableOutput (§8.9).

use std::collections::BTreeMap;

use orchestrator_proto::{
    AssetKind, ComputeTaskInputAsset, ComputeTaskOutputAsset, ComputeTaskStatus, DisableOutputParam,
    DisableOutputResponse, Function, GetTaskInputAssetsParam, GetTaskInputAssetsResponse, compute_task_input,
    compute_task_input_asset,
};

use super::{OutputAsset, TaskRecord, children_prefix, load_record, load_records, status_of};
use crate::asset::{self, load};
use crate::call::Call;
use crate::error::{ErrorKind, LogicError, Result};
use crate::keys;
use crate::model;
use crate::pagination::scan_all_keys;
use crate::validation::go_quote;

use ComputeTaskStatus::{StatusExecuting, StatusFailed, StatusWaitingForExecutorSlot};

/// Records an asset registered on a task output (the caller stores the record) and emits
/// COMPUTE_TASK_OUTPUT_ASSET/CREATED, keyed by the task.
pub fn add_output_asset(
    call: &mut Call<'_>,
    record: &mut TaskRecord,
    identifier: &str,
    kind: AssetKind,
    asset_key: &str,
) {
    record.output_assets.push(OutputAsset {
        identifier: identifier.to_owned(),
        asset_kind: kind as i32,
        asset_key: asset_key.to_owned(),
    });
    let output_asset = ComputeTaskOutputAsset {
        compute_task_key: record.task.key.clone(),
        compute_task_output_identifier: identifier.to_owned(),
        asset_kind: kind as i32,
        asset_key: asset_key.to_owned(),
    };
    asset::emit_created(call, output_asset);
}

/// Statuses in which a task's inputs are all known.
const INPUTS_DEFINED: [ComputeTaskStatus; 3] = [StatusWaitingForExecutorSlot, StatusExecuting, StatusFailed];

pub fn input_assets(call: &mut Call<'_>, req: GetTaskInputAssetsParam) -> Result<GetTaskInputAssetsResponse> {
    let record = load_record(call, &req.compute_task_key)?;
    let status = record.status();
    if !INPUTS_DEFINED.contains(&status) {
        return Err(LogicError::bad_request(format!(
            "Task inputs may not be defined in current task status ({})",
            go_quote(status.as_str_name())
        )));
    }
    let function: Function = load(call, &record.task.function_key)?;

    // The parents' records, read once: their output assets resolve the parent inputs.
    let parents = super::parent_keys(&record.task.inputs);
    let parent_records: BTreeMap<String, TaskRecord> =
        parents.iter().cloned().zip(load_records(call, &parents)?).filter_map(|(k, r)| r.map(|r| (k, r))).collect();

    let mut assets = Vec::with_capacity(record.task.inputs.len());
    for input in &record.task.inputs {
        let Some(function_input) = function.inputs.get(&input.identifier) else {
            return Err(LogicError::internal("missing function input"));
        };
        match &input.r#ref {
            Some(compute_task_input::Ref::AssetKey(key)) => {
                assets.push(input_asset(call, function_input.kind, key, &input.identifier)?);
            }
            Some(compute_task_input::Ref::ParentTaskOutput(parent)) => {
                let Some(parent_record) = parent_records.get(&parent.parent_task_key) else {
                    return Err(LogicError::not_found(super::ASSET, &parent.parent_task_key));
                };
                for asset in parent_record.output_assets.iter().filter(|a| a.identifier == parent.output_identifier) {
                    assets.push(input_asset(call, asset.asset_kind, &asset.asset_key, &input.identifier)?);
                }
            }
            None => return Err(LogicError::unimplemented("unsupported input type: <nil>")),
        }
    }
    Ok(GetTaskInputAssetsResponse { assets })
}

fn input_asset(call: &mut Call<'_>, kind: i32, key: &str, identifier: &str) -> Result<ComputeTaskInputAsset> {
    use compute_task_input_asset::Asset;
    let asset = match AssetKind::try_from(kind) {
        Ok(AssetKind::AssetModel) => Asset::Model(load(call, key)?),
        Ok(AssetKind::AssetDataManager) => Asset::DataManager(load(call, key)?),
        Ok(AssetKind::AssetDataSample) => Asset::DataSample(load(call, key)?),
        other => {
            let name = other.map(|k| k.as_str_name()).unwrap_or("ASSET_UNKNOWN");
            return Err(LogicError::unimplemented(format!("unsupported input kind: {}", go_quote(name))));
        }
    };
    Ok(ComputeTaskInputAsset { identifier: identifier.to_owned(), asset: Some(asset) })
}

fn is_final(status: ComputeTaskStatus) -> bool {
    matches!(
        status,
        ComputeTaskStatus::StatusDone
            | ComputeTaskStatus::StatusCanceled
            | ComputeTaskStatus::StatusFailed
            | ComputeTaskStatus::StatusUnknown
    )
}

fn cannot_disable(text: impl std::fmt::Display) -> LogicError {
    LogicError::new(ErrorKind::CannotDisableOutput, text)
}

/// Frees the models of a transient output once every consumer of the task is finished.
pub fn disable_output(call: &mut Call<'_>, req: DisableOutputParam) -> Result<DisableOutputResponse> {
    let record = load_record(call, &req.compute_task_key)?;
    if record.task.worker != call.requester() {
        return Err(LogicError::permission_denied("only the worker can disable a task output"));
    }
    if !is_final(record.status()) {
        return Err(cannot_disable("cannot disable asset: task not in final state"));
    }
    let Some(output) = record.task.outputs.get(&req.identifier) else {
        return Err(cannot_disable(format!(
            "there is no output identifier {} for task {}",
            req.identifier, req.compute_task_key
        )));
    };
    if !output.transient {
        return Err(cannot_disable("output is not transient"));
    }
    let assets: Vec<&OutputAsset> = record.output_assets.iter().filter(|a| a.identifier == req.identifier).collect();
    // The reference indexes the first asset unconditionally (a crash on an empty output).
    let Some(first) = assets.first() else {
        return Err(cannot_disable("cannot disable an output with no registered asset"));
    };
    if first.asset_kind != AssetKind::AssetModel as i32 {
        let kind = AssetKind::try_from(first.asset_kind).unwrap_or(AssetKind::AssetUnknown);
        return Err(cannot_disable(format!("cannot disable output of kind: {}", kind.as_str_name())));
    }

    let child_keys: Vec<String> = scan_all_keys(call, &children_prefix(&record.task.key))?
        .iter()
        .map(|k| keys::last_component(k).to_owned())
        .collect();
    if child_keys.is_empty() {
        return Err(cannot_disable("cannot disable output of a task with no children"));
    }
    for child in load_records(call, &child_keys)?.into_iter().flatten() {
        if !is_final(status_of(&child.task)) {
            return Err(cannot_disable("cannot disable asset: child not in final state"));
        }
    }

    let model_keys: Vec<String> = assets.iter().map(|a| a.asset_key.clone()).collect();
    let models = model::load_assets(call, &model_keys)?;
    // Disabling is done once: a second call is refused rather than emitting the events again.
    if models.iter().all(|m| m.address.is_none()) {
        return Err(cannot_disable("output already disabled"));
    }
    for m in models {
        model::disable(call, m)?;
    }
    Ok(DisableOutputResponse {})
}
