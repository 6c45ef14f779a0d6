//! RegisterTasks (docs/business-rules.md §8.1–8.4).
//!
//! The reference walks the batch task by task, fetching what each check needs. Here every
//! asset the batch refers to is fetched first, in a fixed number of batched state calls (tasks,
//! plans, functions, data managers, samples, models, organizations), then the checks run in
//! the reference's order on the prefetched data, so the error precedence is unchanged whatever
//! the size of the batch.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_proto::{
    AssetKind, ComputePlan, ComputeTask, ComputeTaskInput, ComputeTaskOutput, ComputeTaskStatus, DataManager,
    DataSample, EventKind, Function, FunctionInput, FunctionStatus, Model, NewComputeTask, NewPermissions, Permission,
    Permissions, RegisterTasksParam, RegisterTasksResponse, compute_task_input::Ref, event,
};

use super::{ASSET, TaskRecord, insert, load_records, parent_keys, status_of};
use crate::error::{OrcError, Result};
use crate::permissions::{can_process, union};
use crate::tx::{Tx, timestamp_to_micros};
use crate::validation::{FieldErrors, MSG_REQUIRED, check_metadata, go_quote, require_uuid};
use crate::{computeplan, datamanager, datasample, function, keys};

pub fn register(tx: &mut Tx<'_>, req: RegisterTasksParam) -> Result<RegisterTasksResponse> {
    let new_tasks = req.tasks;
    if new_tasks.is_empty() {
        return Err(OrcError::bad_request("no task to register"));
    }
    for task in &new_tasks {
        if let Some(details) = validate(task) {
            return Err(OrcError::invalid(ASSET, details));
        }
    }

    let batch_keys: Vec<String> = new_tasks.iter().map(|t| t.key.clone()).collect();
    prefetch_known(tx, &new_tasks)?;
    let stored = load_records(tx, &batch_keys)?;
    if let Some(first) = stored.iter().position(Option::is_some) {
        return resend(tx.requester(), &new_tasks, stored, first);
    }
    // A key twice in one batch: the reference fails in its database (UNKNOWN).
    let mut seen = BTreeSet::new();
    for task in &new_tasks {
        if !seen.insert(task.key.as_str()) {
            return Err(OrcError::already_exists(ASSET, &task.key));
        }
    }

    // Parents outside the batch must be stored; inside the batch they must come first.
    let batch_index: BTreeMap<&str, usize> = new_tasks.iter().enumerate().map(|(i, t)| (t.key.as_str(), i)).collect();
    let parents_of: Vec<Vec<String>> = new_tasks.iter().map(|t| parent_keys(&t.inputs)).collect();
    let outside: Vec<String> = parents_of
        .iter()
        .flatten()
        .filter(|p| !batch_index.contains_key(p.as_str()))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let stored_parents: BTreeMap<String, TaskRecord> = outside
        .iter()
        .cloned()
        .zip(load_records(tx, &outside)?)
        .filter_map(|(key, record)| record.map(|r| (key, r)))
        .collect();
    let order =
        topological_order(&parents_of, &batch_index, |p| stored_parents.contains_key(p)).map_err(|unsorted| {
            OrcError::invalid_asset(format!(
                "cyclic dependency in compute plan graph or unknown task parent, unsorted_tasks_count: {unsorted}"
            ))
        })?;

    let owner = tx.requester().to_owned();
    let world = World::fetch(tx, &owner, &new_tasks, stored_parents)?;
    if !world.organizations.contains(&owner) {
        return Err(OrcError::not_found("organization", &owner));
    }

    let now = tx.now();
    let mut batch: BTreeMap<String, ComputeTask> = BTreeMap::new();
    let mut created: Vec<ComputeTask> = Vec::with_capacity(order.len());
    for i in order {
        let task = create_task(&world, &batch, &new_tasks[i], &owner, now)?;
        batch.insert(task.key.clone(), task.clone());
        created.push(task);
    }

    let mut plan_functions: BTreeSet<(&str, &str)> = BTreeSet::new();
    for task in &created {
        insert(tx, task)?;
        // QueryFunctions' plan filter: the functions used by the plan's tasks.
        if !plan_functions.insert((&task.compute_plan_key, &task.function_key)) {
            continue;
        }
        if let Some(Some(f)) = world.functions.get(&task.function_key) {
            let function_created = f.creation_date.as_ref().map(timestamp_to_micros).unwrap_or_default();
            tx.put_raw(&function::by_plan_index(&task.compute_plan_key, function_created, &f.key), Vec::new())?;
        }
    }
    for task in &created {
        tx.emit(
            AssetKind::AssetComputeTask,
            EventKind::EventAssetCreated,
            &task.key,
            event::Asset::ComputeTask(task.clone()),
            BTreeMap::new(),
        );
    }
    Ok(RegisterTasksResponse { tasks: created })
}

// ---------------------------------------------------------------------------------------------
// Validation (docs/business-rules.md §8.1 step 2), in the ozzo format of the reference's
// `NewComputeTask.Validate`.

fn validate(task: &NewComputeTask) -> Option<String> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "key", &task.key);
    require_uuid(&mut errs, "function_key", &task.function_key);
    require_uuid(&mut errs, "compute_plan_key", &task.compute_plan_key);
    check_metadata(&mut errs, "metadata", &task.metadata);
    // `By(validateTaskInputs)`: the errors of the first invalid input.
    if let Some(input_errs) = task.inputs.iter().map(input_errors).find(|e| !e.is_empty()) {
        errs.nested("inputs", input_errs);
    }
    // `By(validateTaskOutputs)`: the first invalid output (map order; sorted here).
    for (identifier, output) in &task.outputs {
        if identifier.is_empty() {
            errs.add("outputs", MSG_REQUIRED);
            break;
        }
        if output.permissions.is_none() {
            let mut inner = FieldErrors::new();
            inner.add("permissions", MSG_REQUIRED);
            errs.nested("outputs", inner);
            break;
        }
    }
    errs.into_message()
}

/// `ComputeTaskInput.Validate`. Field names are the Go struct's error names: the oneof field and
/// its `AssetKey` member have no JSON tag, hence `Ref` and `AssetKey`.
fn input_errors(input: &ComputeTaskInput) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if input.identifier.is_empty() {
        errs.add("identifier", MSG_REQUIRED);
    }
    if input.r#ref.is_none() {
        errs.add("Ref", MSG_REQUIRED);
    }
    if !errs.is_empty() {
        return errs;
    }
    match &input.r#ref {
        Some(Ref::AssetKey(key)) => require_uuid(&mut errs, "AssetKey", key),
        Some(Ref::ParentTaskOutput(parent)) => {
            require_uuid(&mut errs, "parent_task_key", &parent.parent_task_key);
            if parent.output_identifier.is_empty() {
                errs.add("output_identifier", MSG_REQUIRED);
            }
        }
        None => {}
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Re-sending a registered batch.

/// Some batch key is already stored. A retry of a batch that committed (same keys, same content)
/// answers the stored tasks, in the order of the original response, without events; anything
/// else is ALREADY_EXISTS naming the first stored key of the request.
fn resend(
    owner: &str,
    new_tasks: &[NewComputeTask],
    stored: Vec<Option<TaskRecord>>,
    first: usize,
) -> Result<RegisterTasksResponse> {
    let conflict = || OrcError::already_exists(ASSET, &new_tasks[first].key);
    let mut tasks = Vec::with_capacity(stored.len());
    for (new, record) in new_tasks.iter().zip(stored) {
        match record {
            Some(record) if same_content(new, &record.task, owner) => tasks.push(record.task),
            _ => return Err(conflict()),
        }
    }
    let batch_index: BTreeMap<&str, usize> = new_tasks.iter().enumerate().map(|(i, t)| (t.key.as_str(), i)).collect();
    if batch_index.len() != new_tasks.len() {
        return Err(conflict());
    }
    let parents_of: Vec<Vec<String>> = new_tasks.iter().map(|t| parent_keys(&t.inputs)).collect();
    // The original sort: parents outside the batch were stored then (they still are).
    let order =
        topological_order(&parents_of, &batch_index, |p| !batch_index.contains_key(p)).map_err(|_| conflict())?;
    let mut slots: Vec<Option<ComputeTask>> = tasks.into_iter().map(Some).collect();
    let tasks = order.into_iter().filter_map(|i| slots[i].take()).collect();
    Ok(RegisterTasksResponse { tasks })
}

/// Whether `stored` is what registering `new` as `owner` created (status and creation date
/// aside; rank, logs permission and an inferred worker derive from immutable assets).
fn same_content(new: &NewComputeTask, stored: &ComputeTask, owner: &str) -> bool {
    let outputs_match = new.outputs.len() == stored.outputs.len()
        && new.outputs.iter().all(|(identifier, output)| {
            stored.outputs.get(identifier).is_some_and(|s| {
                let expected = output.permissions.as_ref().map(|p| permission_with_owner(owner, p));
                s.transient == output.transient
                    && s.permissions.as_ref().and_then(|p| p.process.clone()) == expected
                    && s.permissions.as_ref().and_then(|p| p.download.clone()) == expected
            })
        });
    stored.key == new.key
        && stored.owner == owner
        && stored.function_key == new.function_key
        && stored.compute_plan_key == new.compute_plan_key
        && stored.metadata == new.metadata
        && stored.inputs == new.inputs
        && (new.worker.is_empty() || stored.worker == new.worker)
        && outputs_match
}

// ---------------------------------------------------------------------------------------------
// Topological sort (docs/business-rules.md §8.1 step 4).

/// Kahn's algorithm as the reference runs it: the initial queue holds the tasks without
/// unsatisfied parent in request order; each dequeued task releases its children in request
/// order. Fails with the number of tasks left unsorted (cycle, self-reference, unknown parent).
fn topological_order(
    parents_of: &[Vec<String>],
    batch_index: &BTreeMap<&str, usize>,
    is_stored: impl Fn(&str) -> bool,
) -> std::result::Result<Vec<usize>, usize> {
    let n = parents_of.len();
    let mut pending = vec![0usize; n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, parents) in parents_of.iter().enumerate() {
        for parent in parents {
            if is_stored(parent) {
                continue;
            }
            pending[i] += 1;
            if let Some(&j) = batch_index.get(parent.as_str()) {
                children[j].push(i);
            }
        }
    }
    let mut queue: std::collections::VecDeque<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(current) = queue.pop_front() {
        order.push(current);
        for &child in &children[current] {
            pending[child] -= 1;
            if pending[child] == 0 {
                queue.push_back(child);
            }
        }
    }
    if order.len() == n { Ok(order) } else { Err(n - order.len()) }
}

// ---------------------------------------------------------------------------------------------
// Prefetch.

/// What the request names directly, in one state call: the batch's task records (are they
/// stored?), the parents, plans and functions, and the organizations it names. What depends on
/// those (data managers, samples and models by the kind the function gives each input, the
/// parents' functions, the data managers' owners) is the second call, in [`World::fetch`].
fn prefetch_known(tx: &mut Tx<'_>, new_tasks: &[NewComputeTask]) -> Result<()> {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    wanted.insert(keys::organization(tx.requester()));
    for task in new_tasks {
        wanted.insert(keys::computetask(&task.key));
        wanted.extend(parent_keys(&task.inputs).iter().map(|p| keys::computetask(p)));
        wanted.insert(keys::computeplan(&task.compute_plan_key));
        wanted.insert(keys::function(&task.function_key));
        if !task.worker.is_empty() {
            wanted.insert(keys::organization(&task.worker));
        }
        for output in task.outputs.values() {
            if let Some(p) = output.permissions.as_ref().filter(|p| !p.public) {
                wanted.extend(p.authorized_ids.iter().map(|id| keys::organization(id)));
            }
        }
    }
    tx.prefetch(wanted)
}

/// Everything the batch refers to, fetched in batched state calls.
struct World {
    plans: BTreeMap<String, Option<ComputePlan>>,
    functions: BTreeMap<String, Option<Function>>,
    stored_parents: BTreeMap<String, TaskRecord>,
    data_managers: BTreeMap<String, Option<DataManager>>,
    samples: BTreeMap<String, Option<DataSample>>,
    /// Models given as inputs and models of DONE stored parents.
    models: BTreeMap<String, Option<Model>>,
    /// Registered organizations among those the batch names.
    organizations: BTreeSet<String>,
}

fn load_map<M: prost::Message + Default>(
    tx: &mut Tx<'_>,
    wanted: BTreeSet<String>,
    record_key: impl Fn(&str) -> String,
) -> Result<BTreeMap<String, Option<M>>> {
    let wanted: Vec<String> = wanted.into_iter().collect();
    let record_keys: Vec<String> = wanted.iter().map(|k| record_key(k)).collect();
    Ok(wanted.into_iter().zip(tx.load_many::<M>(&record_keys)?).collect())
}

impl World {
    fn fetch(
        tx: &mut Tx<'_>,
        owner: &str,
        new_tasks: &[NewComputeTask],
        stored_parents: BTreeMap<String, TaskRecord>,
    ) -> Result<World> {
        let plans = load_map(tx, new_tasks.iter().map(|t| t.compute_plan_key.clone()).collect(), keys::computeplan)?;
        // The batch's functions were prefetched; they say what each input is.
        let mut functions: BTreeMap<String, Option<Function>> =
            load_map(tx, new_tasks.iter().map(|t| t.function_key.clone()).collect(), keys::function)?;

        // Asset keys by the kind the task's function gives each input.
        let (mut dm_keys, mut sample_keys, mut model_keys) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for task in new_tasks {
            let Some(Some(f)) = functions.get(&task.function_key) else {
                continue;
            };
            for input in &task.inputs {
                let (Some(Ref::AssetKey(key)), Some(declared)) = (&input.r#ref, f.inputs.get(&input.identifier)) else {
                    continue;
                };
                match AssetKind::try_from(declared.kind) {
                    Ok(AssetKind::AssetDataManager) => dm_keys.insert(key.clone()),
                    Ok(AssetKind::AssetDataSample) => sample_keys.insert(key.clone()),
                    Ok(AssetKind::AssetModel) => model_keys.insert(key.clone()),
                    _ => false,
                };
            }
        }
        for parent in stored_parents.values() {
            if status_of(&parent.task) == ComputeTaskStatus::StatusDone {
                for asset in &parent.output_assets {
                    if asset.asset_kind == AssetKind::AssetModel as i32 {
                        model_keys.insert(asset.asset_key.clone());
                    }
                }
            }
        }
        let parent_functions: BTreeSet<String> = stored_parents.values().map(|p| p.task.function_key.clone()).collect();
        tx.prefetch(
            dm_keys
                .iter()
                .map(|k| keys::datamanager(k))
                .chain(sample_keys.iter().map(|k| keys::datasample(k)))
                .chain(model_keys.iter().map(|k| keys::model(k)))
                .chain(parent_functions.iter().map(|k| keys::function(k))),
        )?;
        functions.extend(load_map(tx, parent_functions, keys::function)?);
        let data_managers: BTreeMap<String, Option<DataManager>> = load_map(tx, dm_keys, keys::datamanager)?;
        let samples = load_map(tx, sample_keys, keys::datasample)?;
        let models = load_map(tx, model_keys, keys::model)?;

        let mut org_ids: BTreeSet<String> = BTreeSet::from([owner.to_owned()]);
        for task in new_tasks {
            if !task.worker.is_empty() {
                org_ids.insert(task.worker.clone());
            }
            for output in task.outputs.values() {
                if let Some(p) = output.permissions.as_ref().filter(|p| !p.public) {
                    org_ids.extend(p.authorized_ids.iter().cloned());
                }
            }
        }
        org_ids.extend(data_managers.values().flatten().map(|dm| dm.owner.clone()));
        let org_ids: Vec<String> = org_ids.into_iter().collect();
        let org_records: Vec<String> = org_ids.iter().map(|id| keys::organization(id)).collect();
        let organizations = org_ids
            .into_iter()
            .zip(tx.exist_many(&org_records)?)
            .filter_map(|(id, present)| present.then_some(id))
            .collect();

        Ok(World { plans, functions, stored_parents, data_managers, samples, models, organizations })
    }

    fn function(&self, key: &str) -> Result<&Function> {
        self.functions.get(key).and_then(Option::as_ref).ok_or_else(|| OrcError::not_found(function::ASSET, key))
    }

    fn data_manager(&self, key: &str) -> Result<&DataManager> {
        self.data_managers.get(key).and_then(Option::as_ref).ok_or_else(|| OrcError::not_found(datamanager::ASSET, key))
    }

    fn model(&self, key: &str) -> Result<&Model> {
        self.models.get(key).and_then(Option::as_ref).ok_or_else(|| OrcError::not_found("model", key))
    }
}

// ---------------------------------------------------------------------------------------------
// createTask (docs/business-rules.md §8.1 step 5), check by check in the reference's order.

/// A parent: created earlier in this batch or stored.
fn find_parent<'a>(world: &'a World, batch: &'a BTreeMap<String, ComputeTask>, key: &str) -> Option<&'a ComputeTask> {
    batch.get(key).or_else(|| world.stored_parents.get(key).map(|r| &r.task))
}

fn create_task(
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
        .ok_or_else(|| OrcError::not_found(computeplan::ASSET, &new.compute_plan_key))?;
    if plan.owner != owner {
        return Err(OrcError::permission_denied("Cannot register tasks to a compute plan you don't own"));
    }

    // 2. Parents (the sort guarantees they are all known).
    let parents: Vec<&ComputeTask> =
        parent_keys(&new.inputs).iter().filter_map(|k| find_parent(world, batch, k)).collect();

    // 3. The function, processable by the owner.
    let function = world.function(&new.function_key)?;
    if !can_process_opt(function.permissions.as_ref(), owner) {
        return Err(OrcError::permission_denied(format!(
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
                return Err(OrcError::invalid_asset(format!("Model {} has been disabled", go_quote(&model.key))));
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
        return Err(OrcError::not_found("organization", &worker));
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

fn can_process_opt(permissions: Option<&Permissions>, who: &str) -> bool {
    permissions.is_some_and(|p| can_process(p, who))
}

/// docs/business-rules.md §1.2 on prefetched organizations: a private list may only name registered
/// organizations.
fn new_permission(world: &World, owner: &str, input: &NewPermissions) -> Result<Permission> {
    crate::permissions::check_size(input)?;
    if !input.public && !input.authorized_ids.iter().all(|id| world.organizations.contains(id)) {
        return Err(OrcError::bad_request("invalid permission input values"));
    }
    Ok(permission_with_owner(owner, input))
}

fn permission_with_owner(owner: &str, input: &NewPermissions) -> Permission {
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

fn unknown_input(identifier: &str) -> OrcError {
    OrcError::invalid_asset(format!(
        "unknown task input: this identifier was not declared in the Function: {}",
        go_quote(identifier)
    ))
}

fn declared<'f>(function: &'f Function, input: &ComputeTaskInput) -> Result<&'f FunctionInput> {
    function.inputs.get(&input.identifier).ok_or_else(|| unknown_input(&input.identifier))
}

fn is_kind(declared: &FunctionInput, kind: AssetKind) -> bool {
    declared.kind == kind as i32
}

fn asset_key(input: &ComputeTaskInput) -> &str {
    match &input.r#ref {
        Some(Ref::AssetKey(key)) => key,
        _ => "",
    }
}

/// The data manager of a DATA_MANAGER input, which must be given by asset key.
fn opener<'w>(world: &'w World, input: &ComputeTaskInput) -> Result<&'w DataManager> {
    let key = asset_key(input);
    if key.is_empty() {
        return Err(OrcError::invalid_asset(format!(
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
            return Err(OrcError::bad_request(format!(
                "Specified worker {} does not match data manager owner: {}",
                go_quote(&new.worker),
                go_quote(&dm.owner)
            )));
        }
        return Ok(dm.owner.clone());
    }
    if new.worker.is_empty() {
        return Err(OrcError::bad_request("Worker cannot be inferred and must be explicitly set"));
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

fn kind_name(kind: i32) -> String {
    AssetKind::try_from(kind).map_or_else(|_| kind.to_string(), |k| k.as_str_name().to_owned())
}

/// docs/business-rules.md §8.4, inputs: in order, then the mandatory inputs never given.
fn validate_inputs(
    world: &World,
    batch: &BTreeMap<String, ComputeTask>,
    task: &ComputeTask,
    function: &Function,
) -> Result<()> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for input in &task.inputs {
        let declared_input = declared(function, input)?;
        if seen.contains(input.identifier.as_str()) && !declared_input.multiple {
            return Err(OrcError::invalid_asset(format!(
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
            return Err(OrcError::invalid_asset(format!(
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
        return Err(OrcError::invalid_asset(format!(
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
            return Err(OrcError::invalid_asset(format!(
                "invalid task input {}: data samples must be referenced using an asset key",
                go_quote(&input.identifier)
            )));
        }
        sample_keys.push(key);
    }
    let dm = world.data_manager(asset_key(dm_input))?;
    if !can_process_opt(dm.permissions.as_ref(), &task.owner) {
        return Err(OrcError::permission_denied(format!(
            "not authorized to process datamanager {}",
            go_quote(&dm.key)
        )));
    }
    for key in sample_keys {
        let sample = world
            .samples
            .get(key)
            .and_then(Option::as_ref)
            .ok_or_else(|| OrcError::not_found(datasample::ASSET, key))?;
        if !sample.data_manager_keys.contains(&dm.key) {
            return Err(OrcError::invalid_asset("datasamples do not share a common manager"));
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
                return Err(OrcError::unimplemented(format!("invalid task input {id}: invalid asset kind")));
            }
            let model = world.model(key)?;
            if !can_process_opt(model.permissions.as_ref(), &task.worker) {
                return Err(OrcError::permission_denied(format!(
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
                let not_found = OrcError::not_found(ASSET, pk);
                return Err(OrcError::invalid_asset(format!(
                    "invalid task input {id}: parent task key {pk} not found: {}",
                    not_found.message
                )));
            };
            let parent_function = world.function(&parent.function_key)?;
            let Some(function_output) = parent_function.outputs.get(oid) else {
                return Err(OrcError::invalid_asset(format!(
                    "invalid task input {id}: parent task {pk}: function output not found: {}",
                    go_quote(oid)
                )));
            };
            if function_output.kind != declared_input.kind {
                // The reference quotes the output identifier here.
                return Err(OrcError::invalid_asset(format!(
                    "invalid task input {}: mismatching task input asset kinds: expecting {} but parent task output has kind {}",
                    go_quote(oid),
                    kind_name(declared_input.kind),
                    kind_name(function_output.kind)
                )));
            }
            if function_output.multiple && !declared_input.multiple {
                return Err(OrcError::invalid_asset(format!(
                    "invalid task input {id}: multiple task output used as single task input"
                )));
            }
            let Some(output) = parent.outputs.get(oid) else {
                return Err(OrcError::invalid_asset(format!(
                    "invalid task input {id}: parent task {pk}: output not found: {}",
                    go_quote(oid)
                )));
            };
            if !can_process_opt(output.permissions.as_ref(), &task.worker) {
                // Argument order as in the reference.
                return Err(OrcError::permission_denied(format!(
                    "invalid task input {id}: worker {} doesn't have permission to process output {} of task {oid}",
                    go_quote(&task.worker),
                    go_quote(pk)
                )));
            }
            Ok(())
        }
        None => Err(OrcError::invalid_asset(format!(
            "invalid task input {id}: an asset or task output reference must be specified"
        ))),
    }
}

/// docs/business-rules.md §8.4, outputs: the task's output identifiers are exactly the function's.
fn validate_outputs(task: &ComputeTask, function: &Function) -> Result<()> {
    let tk = &task.key;
    for (identifier, output) in &task.outputs {
        let Some(declared_output) = function.outputs.get(identifier) else {
            return Err(OrcError::invalid_asset(format!(
                "invalid task {tk}, unknown task output: this identifier was not declared in the Function: {}",
                go_quote(identifier)
            )));
        };
        if declared_output.kind == AssetKind::AssetPerformance as i32 {
            let public = output.permissions.as_ref().and_then(|p| p.process.as_ref()).is_some_and(|p| p.public);
            if !public {
                return Err(OrcError::invalid_asset(format!(
                    "invalid task {tk}, invalid task output {}: a PERFORMANCE output should be public",
                    go_quote(identifier)
                )));
            }
            if output.transient {
                return Err(OrcError::invalid_asset(format!(
                    "invalid task {tk}, invalid task output {}: a PERFORMANCE output cannot be transient",
                    go_quote(identifier)
                )));
            }
        }
    }
    for identifier in function.outputs.keys() {
        if !task.outputs.contains_key(identifier) {
            return Err(OrcError::invalid_asset(format!(
                "invalid task {tk}, missing task output: this identifier is required by the Function: {}",
                go_quote(identifier)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parents(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter().map(|ps| ps.iter().map(|p| (*p).to_owned()).collect()).collect()
    }

    #[test]
    fn kahn_keeps_request_order() {
        // c → b → a, d independent: request [c, a, d, b].
        let keys = ["c", "a", "d", "b"];
        let index: BTreeMap<&str, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let p = parents(&[&["b"], &[], &[], &["a"]]);
        let order = topological_order(&p, &index, |_| false).expect("sorted");
        let sorted: Vec<&str> = order.iter().map(|&i| keys[i]).collect();
        assert_eq!(sorted, ["a", "d", "b", "c"]);
    }

    #[test]
    fn kahn_refuses_cycles_and_unknown_parents() {
        let keys = ["a", "b", "c"];
        let index: BTreeMap<&str, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let p = parents(&[&["b"], &["a"], &["z"]]);
        assert_eq!(topological_order(&p, &index, |_| false), Err(3));
        let p = parents(&[&[], &["a"], &["c"]]);
        assert_eq!(topological_order(&p, &index, |_| false), Err(1));
        let p = parents(&[&[], &["a"], &["z"]]);
        assert_eq!(topological_order(&p, &index, |k| k == "z").map(|o| o.len()), Ok(3));
    }
}
