//! Models (docs/business-rules.md §9): registered by a task's worker on the task's MODEL outputs
//! while it executes, disabled through DisableOutput.
//!
//! State: `model/<key>` holds the `Model`. Which models a task produced, per output and in
//! registration order, is kept in the task's record (`TaskRecord::output_assets`), so
//! GetComputeTaskOutputModels reads one record and the models in one batched call.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_proto::{
    AssetKind, ComputeTaskStatus, EventKind, Function, GetComputeTaskModelsParam, GetComputeTaskModelsResponse,
    GetModelParam, Model, NewModel, RegisterModelsParam, RegisterModelsResponse,
};

use crate::asset::{self, load, store};
use crate::call::Call;
use crate::computetask::{self, OutputAsset, TaskRecord};
use crate::datamanager::addressable_parts;
use crate::error::{LogicError, Result};
use crate::keys;
use crate::validation::{FieldErrors, go_quote, require_addressable, require_present, require_uuid};

pub const ASSET: &str = "model";

fn validate(new: &NewModel) -> Result<()> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "key", &new.key);
    require_uuid(&mut errs, "compute_task_key", &new.compute_task_key);
    require_present(&mut errs, "compute_task_output_identifier", !new.compute_task_output_identifier.is_empty());
    let (present, checksum, address) = addressable_parts(new.address.as_ref());
    require_addressable(&mut errs, "address", present, checksum, address);
    match errs.into_message() {
        Some(msg) => Err(LogicError::invalid(ASSET, msg)),
        None => Ok(()),
    }
}

/// RegisterModel (deprecated): RegisterModels with one model.
pub fn register_one(call: &mut Call<'_>, new: NewModel) -> Result<Model> {
    let mut models = register(call, RegisterModelsParam { models: vec![new] })?.models;
    models.pop().ok_or_else(|| LogicError::internal("no model registered"))
}

/// RegisterModels: every model of the batch belongs to the task of the first one; all or none.
pub fn register(call: &mut Call<'_>, req: RegisterModelsParam) -> Result<RegisterModelsResponse> {
    // The reference indexes the first element unconditionally (and crashes on an empty list).
    let Some(first) = req.models.first() else {
        return Err(LogicError::invalid(ASSET, "models: cannot be blank."));
    };
    let mut record = computetask::load_record(call, &first.compute_task_key)?;
    let task_key = record.task.key.clone();
    let requester = call.requester().to_owned();

    // Assets already registered per output (the single-output rule counts them with the batch's).
    let mut per_output: BTreeMap<String, usize> = BTreeMap::new();
    for asset in &record.output_assets {
        *per_output.entry(asset.identifier.clone()).or_default() += 1;
    }

    // Validate the whole batch before reading anything else, as the reference would fail on the
    // first bad model before writing (its writes then roll back).
    let mut function = None;
    let mut models = Vec::with_capacity(req.models.len());
    let mut batch_keys = BTreeSet::new();
    for new in &req.models {
        if new.compute_task_key != task_key {
            return Err(LogicError::bad_request("All models should be part of the same task"));
        }
        validate(new)?;
        if record.task.worker != requester {
            return Err(LogicError::permission_denied(format!(
                "only {} worker can register model",
                go_quote(&record.task.worker)
            )));
        }
        if record.status() != ComputeTaskStatus::StatusExecuting {
            return Err(LogicError::bad_request(format!(
                "cannot register model for task with status {}",
                go_quote(record.status().as_str_name())
            )));
        }
        let identifier = &new.compute_task_output_identifier;
        let Some(output) = record.task.outputs.get(identifier) else {
            return Err(missing_output(&task_key, identifier));
        };
        let f = match &function {
            Some(f) => f,
            None => function.insert(load::<Function>(call, &record.task.function_key)?),
        };
        let Some(function_output) = f.outputs.get(identifier) else {
            return Err(LogicError::internal(format!(
                "missing function output {} for task {}",
                go_quote(identifier),
                go_quote(&task_key)
            )));
        };
        if function_output.kind != AssetKind::AssetModel as i32 {
            return Err(incompatible_kind(&task_key, identifier, function_output.kind, AssetKind::AssetModel));
        }
        let count = per_output.entry(identifier.clone()).or_default();
        if *count >= 1 && !function_output.multiple {
            return Err(LogicError::new(
                crate::error::ErrorKind::Conflict,
                format!(
                    "compute task {} already has its unique output {} registered",
                    go_quote(&task_key),
                    go_quote(identifier)
                ),
            ));
        }
        *count += 1;
        // The reference relies on its database's primary key here (UNKNOWN); say it properly.
        if !batch_keys.insert(new.key.clone()) {
            return Err(LogicError::already_exists(ASSET, &new.key));
        }
        models.push(Model {
            key: new.key.clone(),
            compute_task_key: task_key.clone(),
            address: new.address.clone(),
            permissions: output.permissions.clone(),
            owner: requester.clone(),
            creation_date: Some(call.now()),
        });
    }
    let model_keys: Vec<String> = models.iter().map(|m| keys::model(&m.key)).collect();
    if let Some(pos) = call.exist_many(&model_keys)?.iter().position(|exists| *exists) {
        return Err(LogicError::already_exists(ASSET, &models[pos].key));
    }

    for (model, new) in models.iter().zip(&req.models) {
        store(call, model)?;
        asset::emit_created(call, model.clone());
        computetask::add_output_asset(
            call,
            &mut record,
            &new.compute_task_output_identifier,
            AssetKind::AssetModel,
            &model.key,
        );
    }
    computetask::store_record(call, &record)?;
    Ok(RegisterModelsResponse { models })
}

pub fn get(call: &mut Call<'_>, req: GetModelParam) -> Result<Model> {
    load(call, &req.key)
}

/// Every model the task registered, on any output, in registration order; an unknown task has
/// none.
pub fn task_output_models(call: &mut Call<'_>, req: GetComputeTaskModelsParam) -> Result<GetComputeTaskModelsResponse> {
    let Some(record) = call.load::<TaskRecord>(&keys::computetask(&req.compute_task_key))? else {
        return Ok(GetComputeTaskModelsResponse { models: Vec::new() });
    };
    let models = load_assets(call, &models_of(&record.output_assets))?;
    Ok(GetComputeTaskModelsResponse { models })
}

/// Keys of the model assets among `assets`, in order.
pub fn models_of(assets: &[OutputAsset]) -> Vec<String> {
    assets.iter().filter(|a| a.asset_kind == AssetKind::AssetModel as i32).map(|a| a.asset_key.clone()).collect()
}

/// Many models by key in one state call; a missing one is an internal error (a task record
/// points to it).
pub fn load_assets(call: &mut Call<'_>, model_keys: &[String]) -> Result<Vec<Model>> {
    let record_keys: Vec<String> = model_keys.iter().map(|k| keys::model(k)).collect();
    call.load_many::<Model>(&record_keys)?
        .into_iter()
        .zip(model_keys)
        .map(|(m, k)| m.ok_or_else(|| LogicError::internal(format!("task output points to missing model {k}"))))
        .collect()
}

/// Frees a model's storage: its address is removed; MODEL/DISABLED carries the model without it.
pub fn disable(call: &mut Call<'_>, mut model: Model) -> Result<()> {
    model.address = None;
    store(call, &model)?;
    asset::emit(call, EventKind::EventAssetDisabled, model, BTreeMap::new());
    Ok(())
}

/// `OE0106: Task "<t>" has no output named "<id>"`
pub fn missing_output(task: &str, identifier: &str) -> LogicError {
    LogicError::new(
        crate::error::ErrorKind::MissingTaskOutput,
        format!("Task {} has no output named {}", go_quote(task), go_quote(identifier)),
    )
}

/// `OE0107: Incompatible kind for task "<t>": output "<id>" expects "<KIND>", received "<KIND>"`
pub fn incompatible_kind(task: &str, identifier: &str, expected: i32, actual: AssetKind) -> LogicError {
    let expected = AssetKind::try_from(expected).unwrap_or(AssetKind::AssetUnknown);
    LogicError::new(
        crate::error::ErrorKind::IncompatibleKind,
        format!(
            "Incompatible kind for task {}: output {} expects {}, received {}",
            go_quote(task),
            go_quote(identifier),
            go_quote(expected.as_str_name()),
            go_quote(actual.as_str_name())
        ),
    )
}
