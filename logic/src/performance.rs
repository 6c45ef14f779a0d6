//! Performances (docs/business-rules.md §10): one value per (task, output), registered by the
//! task's worker while it executes.
//!
//! State: `performance/<task>|<identifier>` holds the `Performance`. QueryPerformances is ordered
//! by creation date, then task key descending, and reads one of these indexes (value = the
//! record key):
//! * `idx/performance/created/<time>/<task, inverted>/<identifier>` (no filter),
//! * `idx/performance/task/<task>/<time>/<identifier>` (task filter),
//! * `idx/performance/identifier/<identifier>/<time>/<task, inverted>` (identifier filter);
//!
//! both filters name one record. "Inverted" maps every byte of the (UUID) task key so that the
//! ascending key order is the descending task order.

use orchestrator_proto::{
    AssetKind, ComputeTaskStatus, NewPerformance, Performance, QueryPerformancesParam, QueryPerformancesResponse,
};

use crate::asset::{self, Stored, require_new, store};
use crate::call::{Call, timestamp_to_micros};
use crate::computetask;
use crate::error::{LogicError, Result};
use crate::keys;
use crate::model::missing_output;
use crate::pagination::{paginate_vec, scan_page};
use crate::validation::{FieldErrors, go_quote, require_present, require_uuid};

pub const ASSET: &str = "performance";

/// The reference's composite key.
pub fn key(task: &str, identifier: &str) -> String {
    format!("{task}|{identifier}")
}

fn validate(new: &NewPerformance) -> Result<()> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "compute_task_key", &new.compute_task_key);
    require_present(&mut errs, "compute_task_output_identifier", !new.compute_task_output_identifier.is_empty());
    match errs.into_message() {
        Some(msg) => Err(LogicError::invalid(ASSET, msg)),
        None => Ok(()),
    }
}

pub fn register(call: &mut Call<'_>, new: NewPerformance) -> Result<Performance> {
    validate(&new)?;
    let mut record = computetask::load_record(call, &new.compute_task_key)?;
    if record.task.worker != call.requester() {
        return Err(LogicError::permission_denied(format!(
            "only {} worker can register performance",
            go_quote(&record.task.worker)
        )));
    }
    if record.status() != ComputeTaskStatus::StatusExecuting {
        return Err(LogicError::bad_request(format!(
            "cannot register performance for task with status {}",
            go_quote(record.status().as_str_name())
        )));
    }
    let identifier = new.compute_task_output_identifier.clone();
    if !record.task.outputs.contains_key(&identifier) {
        return Err(missing_output(&record.task.key, &identifier));
    }
    // Like the reference, the output's kind is not checked (a MODEL output accepts a value).
    let perf_key = key(&record.task.key, &identifier);
    require_new::<Performance>(call, &perf_key)?;
    let perf = Performance {
        compute_task_key: record.task.key.clone(),
        compute_task_output_identifier: identifier.clone(),
        performance_value: new.performance_value,
        creation_date: Some(call.now()),
    };
    store(call, &perf)?;
    let record_key = Performance::state_key(&perf_key);
    for index in index_keys(&perf) {
        call.put_raw(&index, record_key.clone().into_bytes())?;
    }
    asset::emit_created(call, perf.clone());
    computetask::add_output_asset(call, &mut record, &identifier, AssetKind::AssetPerformance, &perf_key);
    computetask::store_record(call, &record)?;
    Ok(perf)
}

/// Maps a task key so that ascending order of the result is descending order of the key.
/// Task keys are UUIDs (validated), so every byte is printable ASCII and the image never
/// contains `/` or `%`.
fn inverted(task: &str) -> String {
    task.bytes().map(|b| if (0x20..=0x7e).contains(&b) { char::from(0x9e - b) } else { char::from(b) }).collect()
}

fn created_prefix() -> String {
    keys::created_prefix(ASSET)
}
fn task_prefix(task: &str) -> String {
    keys::join(&["idx", ASSET, "task", task])
}
fn identifier_prefix(identifier: &str) -> String {
    keys::join(&["idx", ASSET, "identifier", identifier])
}

fn index_keys(perf: &Performance) -> [String; 3] {
    let time = keys::time(perf.creation_date.as_ref().map(timestamp_to_micros).unwrap_or_default());
    let task = &perf.compute_task_key;
    let identifier = keys::escape(&perf.compute_task_output_identifier);
    [
        format!("{}/{time}/{}/{identifier}", created_prefix(), inverted(task)),
        format!("{}/{time}/{identifier}", task_prefix(task)),
        format!("{}/{time}/{}", identifier_prefix(&perf.compute_task_output_identifier), inverted(task)),
    ]
}

pub fn query(call: &mut Call<'_>, req: QueryPerformancesParam) -> Result<QueryPerformancesResponse> {
    let filter = req.filter.unwrap_or_default();
    let prefix = match (filter.compute_task_key.is_empty(), filter.compute_task_output_identifier.is_empty()) {
        (true, true) => created_prefix(),
        (false, true) => task_prefix(&filter.compute_task_key),
        (true, false) => identifier_prefix(&filter.compute_task_output_identifier),
        (false, false) => {
            let one = call.load::<Performance>(&keys::performance(&key(
                &filter.compute_task_key,
                &filter.compute_task_output_identifier,
            )))?;
            let (performances, next_page_token) =
                paginate_vec(one.into_iter().collect(), &req.page_token, req.page_size)?;
            return Ok(QueryPerformancesResponse { performances, next_page_token });
        }
    };
    let (start, end) = keys::prefix_range(&prefix);
    let page = scan_page(call, &start, &end, &req.page_token, req.page_size)?;
    let record_keys: Vec<String> =
        page.entries.into_iter().map(|(_, v)| String::from_utf8_lossy(&v).into_owned()).collect();
    let performances = call
        .load_many::<Performance>(&record_keys)?
        .into_iter()
        .zip(&record_keys)
        .map(|(p, k)| p.ok_or_else(|| LogicError::internal(format!("index points to missing {k}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(QueryPerformancesResponse { performances, next_page_token: page.next_page_token })
}

#[cfg(test)]
mod tests {
    use super::inverted;

    #[test]
    fn inversion_reverses_order() {
        let a = "0a1b2c3d-0000-4000-8000-000000000001";
        let b = "0a1b2c3d-0000-4000-8000-00000000000f";
        assert!(a < b);
        assert!(inverted(a) > inverted(b));
        assert!(!inverted(a).contains(['/', '%']));
    }
}
