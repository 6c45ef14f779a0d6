//! The state a batch needs, read before any check in a fixed number of batched state calls:
//! the checks then run on [`World`] alone, so their order (the reference's) does not decide
//! the reads.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_proto::{
    AssetKind, ComputePlan, ComputeTask, ComputeTaskStatus, DataManager, DataSample, Function, Model, NewComputeTask,
    compute_task_input::Ref,
};

use crate::call::Call;
use crate::computetask::{TaskRecord, parent_keys, status_of};
use crate::error::{LogicError, Result};
use crate::{datamanager, function, keys, model};

/// What the request names directly, in one state call: the batch's task records (are they
/// stored?), the parents, plans and functions, and the organizations it names. What depends on
/// those (data managers, samples and models by the kind the function gives each input, the
/// parents' functions, the data managers' owners) is the second call, in [`World::fetch`].
pub(super) fn prefetch_known(call: &mut Call<'_>, new_tasks: &[NewComputeTask]) -> Result<()> {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    wanted.insert(keys::organization(call.requester()));
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
    call.prefetch(wanted)
}

/// Everything the batch refers to, fetched in batched state calls.
pub(super) struct World {
    pub(super) plans: BTreeMap<String, Option<ComputePlan>>,
    pub(super) functions: BTreeMap<String, Option<Function>>,
    pub(super) stored_parents: BTreeMap<String, TaskRecord>,
    pub(super) data_managers: BTreeMap<String, Option<DataManager>>,
    pub(super) samples: BTreeMap<String, Option<DataSample>>,
    /// Models given as inputs and models of DONE stored parents.
    pub(super) models: BTreeMap<String, Option<Model>>,
    /// Registered organizations among those the batch names.
    pub(super) organizations: BTreeSet<String>,
}

fn load_map<M: prost::Message + Default>(
    call: &mut Call<'_>,
    wanted: BTreeSet<String>,
    record_key: impl Fn(&str) -> String,
) -> Result<BTreeMap<String, Option<M>>> {
    let wanted: Vec<String> = wanted.into_iter().collect();
    let record_keys: Vec<String> = wanted.iter().map(|k| record_key(k)).collect();
    Ok(wanted.into_iter().zip(call.load_many::<M>(&record_keys)?).collect())
}

impl World {
    pub(super) fn fetch(
        call: &mut Call<'_>,
        owner: &str,
        new_tasks: &[NewComputeTask],
        stored_parents: BTreeMap<String, TaskRecord>,
    ) -> Result<World> {
        let plans = load_map(call, new_tasks.iter().map(|t| t.compute_plan_key.clone()).collect(), keys::computeplan)?;
        // The batch's functions were prefetched; they say what each input is.
        let mut functions: BTreeMap<String, Option<Function>> =
            load_map(call, new_tasks.iter().map(|t| t.function_key.clone()).collect(), keys::function)?;

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
        call.prefetch(
            dm_keys
                .iter()
                .map(|k| keys::datamanager(k))
                .chain(sample_keys.iter().map(|k| keys::datasample(k)))
                .chain(model_keys.iter().map(|k| keys::model(k)))
                .chain(parent_functions.iter().map(|k| keys::function(k))),
        )?;
        functions.extend(load_map(call, parent_functions, keys::function)?);
        let data_managers: BTreeMap<String, Option<DataManager>> = load_map(call, dm_keys, keys::datamanager)?;
        let samples = load_map(call, sample_keys, keys::datasample)?;
        let models = load_map(call, model_keys, keys::model)?;

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
            .zip(call.exist_many(&org_records)?)
            .filter_map(|(id, present)| present.then_some(id))
            .collect();

        Ok(World { plans, functions, stored_parents, data_managers, samples, models, organizations })
    }

    pub(super) fn function(&self, key: &str) -> Result<&Function> {
        self.functions.get(key).and_then(Option::as_ref).ok_or_else(|| LogicError::not_found(function::ASSET, key))
    }

    pub(super) fn data_manager(&self, key: &str) -> Result<&DataManager> {
        self.data_managers
            .get(key)
            .and_then(Option::as_ref)
            .ok_or_else(|| LogicError::not_found(datamanager::ASSET, key))
    }

    pub(super) fn model(&self, key: &str) -> Result<&Model> {
        self.models.get(key).and_then(Option::as_ref).ok_or_else(|| LogicError::not_found(model::ASSET, key))
    }
}

/// A parent: created earlier in this batch or stored.
pub(super) fn find_parent<'a>(
    world: &'a World,
    batch: &'a BTreeMap<String, ComputeTask>,
    key: &str,
) -> Option<&'a ComputeTask> {
    batch.get(key).or_else(|| world.stored_parents.get(key).map(|r| &r.task))
}
