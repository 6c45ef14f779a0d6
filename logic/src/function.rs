//! Functions (docs/business-rules.md §6): registration, updates and the build state machine.

use orchestrator_proto::{
    Addressable, ApplyFunctionActionParam, ApplyFunctionActionResponse, AssetKind, Function, FunctionAction,
    FunctionStatus, GetFunctionParam, NewFunction, QueryFunctionsParam, QueryFunctionsResponse, UpdateFunctionParam,
    UpdateFunctionResponse,
};

use crate::asset::{self, load, load_owned, require_new, store, store_updated};
use crate::call::Call;
use crate::datamanager::addressable_parts;
use crate::error::{LogicError, Result};
use crate::keys;
use crate::organization::require_registered;
use crate::pagination::query_index;
use crate::permissions::new_permissions;
use crate::validation::{
    FieldErrors, check_metadata, require_addressable, require_identifier, require_name, require_uuid,
};

pub const ASSET: &str = "function";

/// Reason recorded on status events caused by a user's action.
pub const REASON_USER_ACTION: &str = "User action";

/// `idx/function/plan/<plan>/<time>/<function>`: functions used by at least one task of a plan,
/// in function creation order. Written by task registration.
pub fn by_plan_prefix(plan: &str) -> String {
    keys::join(&["idx", ASSET, "plan", plan])
}
pub fn by_plan_index(plan: &str, function_created_micros: i64, function: &str) -> String {
    keys::join(&["idx", ASSET, "plan", plan, &keys::time(function_created_micros), function])
}

fn validate_new(req: &NewFunction) -> Option<String> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "key", &req.key);
    require_name(&mut errs, "name", &req.name);
    let (present, checksum, address) = addressable_parts(req.description.as_ref());
    require_addressable(&mut errs, "description", present, checksum, address);
    let (present, checksum, address) = addressable_parts(req.archive.as_ref());
    require_addressable(&mut errs, "archive", present, checksum, address);
    check_metadata(&mut errs, "metadata", &req.metadata);
    if req.new_permissions.is_none() {
        errs.add("new_permissions", "cannot be blank");
    }

    // Like the reference, the first problem found under `inputs` (then `outputs`) is reported.
    if let Some(msg) = input_error(req) {
        errs.add("inputs", msg);
    }
    if let Some(msg) = output_error(req) {
        errs.add("outputs", msg);
    }
    errs.into_message()
}

/// One input or output entry: identifier length and kind. The reference's "must be one of"
/// rule lets kind 0 through (its database then fails); it is refused here as invalid instead.
fn entry_error(identifier: &str, kind: i32, allowed: &[AssetKind]) -> Option<String> {
    let mut one = FieldErrors::new();
    require_identifier(&mut one, "identifier", identifier);
    if !allowed.iter().any(|k| *k as i32 == kind) {
        one.add("kind", "must be a valid value");
    }
    one.into_message().map(|m| format!("({m})"))
}

fn input_error(req: &NewFunction) -> Option<String> {
    let allowed = [AssetKind::AssetModel, AssetKind::AssetDataSample, AssetKind::AssetDataManager];
    for (identifier, input) in &req.inputs {
        if let Some(msg) = entry_error(identifier, input.kind, &allowed) {
            return Some(msg);
        }
    }
    let is = |kind: AssetKind| move |input: &&orchestrator_proto::FunctionInput| input.kind == kind as i32;
    for (identifier, input) in &req.inputs {
        if is(AssetKind::AssetDataManager)(&input) && (input.multiple || input.optional) {
            return Some(format!(
                "OE0101: function input {identifier:?} of kind DATA_MANAGER cannot be Multiple or Optional"
            ));
        }
    }
    let managers = req.inputs.values().filter(is(AssetKind::AssetDataManager)).count();
    let samples = req.inputs.values().filter(is(AssetKind::AssetDataSample)).count();
    if managers > 1 {
        return Some("OE0101: cannot have multiple inputs of type ASSET_DATA_MANAGER".to_owned());
    }
    if (managers > 0) != (samples > 0) {
        return Some(
            "OE0101: cannot have an input of type ASSET_DATA_MANAGER without an input of type ASSET_DATA_SAMPLE, and vice versa"
                .to_owned(),
        );
    }
    None
}

fn output_error(req: &NewFunction) -> Option<String> {
    let allowed = [AssetKind::AssetModel, AssetKind::AssetPerformance];
    for (identifier, output) in &req.outputs {
        if let Some(msg) = entry_error(identifier, output.kind, &allowed) {
            return Some(msg);
        }
    }
    for (identifier, output) in &req.outputs {
        if output.kind == AssetKind::AssetPerformance as i32 && output.multiple {
            return Some(format!(
                "OE0101: Function output of kind PERFORMANCE cannot be Multiple. Invalid output: {identifier}"
            ));
        }
    }
    None
}

pub fn register(call: &mut Call<'_>, req: NewFunction) -> Result<Function> {
    if let Some(details) = validate_new(&req) {
        return Err(LogicError::invalid(ASSET, details));
    }
    require_new::<Function>(call, &req.key)?;
    let owner = call.requester().to_owned();
    require_registered(call, &owner)?;
    let permissions = new_permissions(call, &owner, req.new_permissions.as_ref().unwrap_or(&Default::default()))?;
    let function = Function {
        key: req.key,
        name: req.name,
        description: req.description,
        archive: req.archive,
        permissions: Some(permissions),
        owner,
        creation_date: Some(call.now()),
        metadata: req.metadata,
        inputs: req.inputs,
        outputs: req.outputs,
        status: FunctionStatus::Waiting as i32,
        image: Some(Addressable::default()),
    };
    store(call, &function)?;
    call.put_raw(&keys::created_index(ASSET, call.now_micros(), &function.key), Vec::new())?;
    asset::emit_created(call, function.clone());
    Ok(function)
}

pub fn get(call: &mut Call<'_>, req: GetFunctionParam) -> Result<Function> {
    load(call, &req.key)
}

pub fn query(call: &mut Call<'_>, req: QueryFunctionsParam) -> Result<QueryFunctionsResponse> {
    let plan = req.filter.map(|f| f.compute_plan_key).unwrap_or_default();
    let prefix = if plan.is_empty() { keys::created_prefix(ASSET) } else { by_plan_prefix(&plan) };
    let (functions, next_page_token) = query_index(call, &prefix, &req.page_token, req.page_size, keys::function)?;
    Ok(QueryFunctionsResponse { functions, next_page_token })
}

pub fn update(call: &mut Call<'_>, req: UpdateFunctionParam) -> Result<UpdateFunctionResponse> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "key", &req.key);
    require_name(&mut errs, "name", &req.name);
    if let Some(details) = errs.into_message() {
        return Err(LogicError::invalid(ASSET, details));
    }
    let mut function: Function = load_owned(call, &req.key, "requester does not own the function")?;
    function.name = req.name;
    if let Some(image) = req.image.filter(|i| !i.checksum.is_empty()) {
        function.image = Some(image);
    }
    let image_empty = function.image.as_ref().is_none_or(|i| i.checksum.is_empty());
    if image_empty && function.status == FunctionStatus::Ready as i32 {
        return Err(LogicError::invalid_asset("Image checksum should not be empty when function status is ready"));
    }
    store_updated(call, function)?;
    Ok(UpdateFunctionResponse {})
}

pub fn apply_action(call: &mut Call<'_>, req: ApplyFunctionActionParam) -> Result<ApplyFunctionActionResponse> {
    let target = match FunctionAction::try_from(req.action) {
        Ok(FunctionAction::Building) => FunctionStatus::Building,
        Ok(FunctionAction::Canceled) => FunctionStatus::Canceled,
        Ok(FunctionAction::Failed) => FunctionStatus::Failed,
        Ok(FunctionAction::Ready) => FunctionStatus::Ready,
        _ => return Err(LogicError::bad_request("unsupported action")),
    };
    let function = load_owned(call, &req.function_key, "only function owner can update it")?;
    transition(call, function, target, REASON_USER_ACTION)?;
    Ok(ApplyFunctionActionResponse {})
}

/// The function state machine (docs/business-rules.md §6.3): store the new status and emit
/// FUNCTION/UPDATED with the reason. Effects on the function's tasks (docs/business-rules.md §8.5
/// T1-T3, T7, T8) come with compute tasks.
pub fn transition(call: &mut Call<'_>, mut function: Function, to: FunctionStatus, reason: &str) -> Result<Function> {
    let from = FunctionStatus::try_from(function.status).unwrap_or(FunctionStatus::Unknown);
    let allowed = matches!(
        (from, to),
        (FunctionStatus::Waiting, FunctionStatus::Building)
            | (FunctionStatus::Waiting, FunctionStatus::Canceled)
            | (FunctionStatus::Building, FunctionStatus::Canceled)
            | (FunctionStatus::Building, FunctionStatus::Ready)
            | (FunctionStatus::Building, FunctionStatus::Failed)
    );
    if !allowed {
        // Same words as the reference's state machine library (a plain error: UNKNOWN).
        return Err(LogicError::unknown(format!(
            "event {} inappropriate in current state {}",
            transition_name(to),
            from.as_str_name()
        )));
    }
    function.status = to as i32;
    store(call, &function)?;
    asset::emit_status_change(call, function.clone(), reason);
    crate::computetask::on_function_status(call, &function, reason)?;
    Ok(function)
}

/// The reference's state machine names its events after the action.
fn transition_name(to: FunctionStatus) -> &'static str {
    match to {
        FunctionStatus::Building => "transitionBuilding",
        FunctionStatus::Canceled => "transitionCanceled",
        FunctionStatus::Failed => "transitionFailed",
        FunctionStatus::Ready => "transitionReady",
        _ => "transitionUnknown",
    }
}
