//! RegisterTasks (docs/business-rules.md §8.1–8.4).
//!
//! The reference walks the batch task by task, fetching what each check needs. Here every
//! asset the batch refers to is fetched first, in a fixed number of batched state calls (tasks,
//! plans, functions, data managers, samples, models, organizations), then the checks run in
//! the reference's order on the prefetched data, so the error precedence is unchanged whatever
//! the size of the batch.
//!
//! This file is the flow and what only a whole batch decides (re-sends, the parents' order);
//! each step a task goes through has its own file:
//!
//! * `fields`: the request's field rules (§8.1 step 2);
//! * `prefetch`: the batched reads and the [`World`](prefetch::World) the checks read;
//! * `create`: `createTask`, check by check (§8.1 step 5, §8.2, §8.3);
//! * `inputs_outputs`: the task's inputs and outputs against its function (§8.4).

mod create;
mod fields;
mod inputs_outputs;
mod prefetch;

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_proto::{ComputeTask, NewComputeTask, RegisterTasksParam, RegisterTasksResponse};

use super::{ASSET, TaskRecord, insert, load_records, parent_keys};
use crate::call::{Call, timestamp_to_micros};
use crate::error::{LogicError, Result};
use crate::{asset, function, organization};
use create::{create_task, permission_with_owner};
use fields::validate;
use prefetch::{World, prefetch_known};

pub fn register(call: &mut Call<'_>, req: RegisterTasksParam) -> Result<RegisterTasksResponse> {
    let new_tasks = req.tasks;
    if new_tasks.is_empty() {
        return Err(LogicError::bad_request("no task to register"));
    }
    for task in &new_tasks {
        if let Some(details) = validate(task) {
            return Err(LogicError::invalid(ASSET, details));
        }
    }

    let batch_keys: Vec<String> = new_tasks.iter().map(|t| t.key.clone()).collect();
    prefetch_known(call, &new_tasks)?;
    let stored = load_records(call, &batch_keys)?;
    if let Some(first) = stored.iter().position(Option::is_some) {
        return resend(call.requester(), &new_tasks, stored, first);
    }
    // A key twice in one batch: the reference fails in its database (UNKNOWN).
    let mut seen = BTreeSet::new();
    for task in &new_tasks {
        if !seen.insert(task.key.as_str()) {
            return Err(LogicError::already_exists(ASSET, &task.key));
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
        .zip(load_records(call, &outside)?)
        .filter_map(|(key, record)| record.map(|r| (key, r)))
        .collect();
    let order =
        topological_order(&parents_of, &batch_index, |p| stored_parents.contains_key(p)).map_err(|unsorted| {
            LogicError::invalid_asset(format!(
                "cyclic dependency in compute plan graph or unknown task parent, unsorted_tasks_count: {unsorted}"
            ))
        })?;

    let owner = call.requester().to_owned();
    let world = World::fetch(call, &owner, &new_tasks, stored_parents)?;
    if !world.organizations.contains(&owner) {
        return Err(LogicError::not_found(organization::ASSET, &owner));
    }

    let now = call.now();
    let mut batch: BTreeMap<String, ComputeTask> = BTreeMap::new();
    let mut created: Vec<ComputeTask> = Vec::with_capacity(order.len());
    for i in order {
        let task = create_task(&world, &batch, &new_tasks[i], &owner, now)?;
        batch.insert(task.key.clone(), task.clone());
        created.push(task);
    }

    let mut plan_functions: BTreeSet<(&str, &str)> = BTreeSet::new();
    for task in &created {
        insert(call, task)?;
        // QueryFunctions' plan filter: the functions used by the plan's tasks.
        if !plan_functions.insert((&task.compute_plan_key, &task.function_key)) {
            continue;
        }
        if let Some(Some(f)) = world.functions.get(&task.function_key) {
            let function_created = f.creation_date.as_ref().map(timestamp_to_micros).unwrap_or_default();
            call.put_raw(&function::by_plan_index(&task.compute_plan_key, function_created, &f.key), Vec::new())?;
        }
    }
    for task in &created {
        asset::emit_created(call, task.clone());
    }
    Ok(RegisterTasksResponse { tasks: created })
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
    let conflict = || LogicError::already_exists(ASSET, &new_tasks[first].key);
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
