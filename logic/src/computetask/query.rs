//! QueryTasks (docs/business-rules.md §8.7): creation order then key, filters ANDed.
//!
//! The scan runs over the most selective index for the filter fields given (an exact prefix on
//! up to two of them); the remaining fields are checked on the index entry's value, so tasks
//! that do not match are never loaded. The page is filled by scanning on, and the token is a
//! cursor at the next matching entry (empty exactly when nothing matches after the page).

use orchestrator_proto::{ComputeTaskStatus, QueryTasksParam};
use prost::Message;

use super::{
    IndexEntry, created_prefix, function_prefix, function_status_prefix, plan_prefix, plan_status_prefix,
    status_prefix, worker_prefix, worker_status_prefix,
};
use crate::call::Call;
use crate::error::{LogicError, Result};
use crate::keys;
use crate::pagination::{MAX_PAGE_SIZE, PageStart, effective_page_size, parse_token};

/// Prefix of the cursor tokens handed out by `pagination` (`k:<next key>`).
const CURSOR_TOKEN_PREFIX: &str = "k:";
/// Largest scan chunk: a whole page and the entry after it, so an unfiltered page is one state
/// call (each is a database round trip in standalone mode).
const MAX_CHUNK: u32 = MAX_PAGE_SIZE + 1;
/// Smallest scan chunk when entries may be filtered out.
const MIN_FILTERED_CHUNK: u32 = 64;

/// Which index to scan and which fields remain to check on the entries.
struct Plan {
    prefix: String,
    worker: Option<String>,
    compute_plan_key: Option<String>,
    function_key: Option<String>,
}

impl Plan {
    fn choose(
        worker: Option<String>,
        status: Option<ComputeTaskStatus>,
        plan: Option<String>,
        function: Option<String>,
    ) -> Plan {
        let residual = |prefix: String, w: bool, p: bool, f: bool| Plan {
            prefix,
            worker: worker.clone().filter(|_| w),
            compute_plan_key: plan.clone().filter(|_| p),
            function_key: function.clone().filter(|_| f),
        };
        match (status, &plan, &function, &worker) {
            (Some(s), Some(p), _, _) => residual(plan_status_prefix(p, s), true, false, true),
            (Some(s), None, Some(f), _) => residual(function_status_prefix(f, s), true, false, false),
            (Some(s), None, None, Some(w)) => residual(worker_status_prefix(w, s), false, false, false),
            (Some(s), None, None, None) => residual(status_prefix(s), false, false, false),
            (None, Some(p), _, _) => residual(plan_prefix(p), true, false, true),
            (None, None, Some(f), _) => residual(function_prefix(f), true, false, false),
            (None, None, None, Some(w)) => residual(worker_prefix(w), false, false, false),
            (None, None, None, None) => residual(created_prefix(), false, false, false),
        }
    }

    fn filters(&self) -> bool {
        self.worker.is_some() || self.compute_plan_key.is_some() || self.function_key.is_some()
    }

    fn keeps(&self, key: &str, value: &[u8]) -> Result<bool> {
        if !self.filters() {
            return Ok(true);
        }
        let entry = IndexEntry::decode(value)
            .map_err(|e| LogicError::internal(format!("corrupt index entry at {key:?}: {e}")))?;
        Ok(self.worker.as_ref().is_none_or(|w| *w == entry.worker)
            && self.compute_plan_key.as_ref().is_none_or(|p| *p == entry.compute_plan_key)
            && self.function_key.as_ref().is_none_or(|f| *f == entry.function_key))
    }
}

fn given(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// `orchestrator.QueryTasksResponse` with its tasks kept encoded: a `bytes` field and an
/// embedded message are the same on the wire, so the stored tasks are copied into the page
/// instead of decoded and encoded again (the bulk of a large page's cost).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncodedTasksPage {
    /// Each an encoded `ComputeTask`.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub tasks: Vec<Vec<u8>>,
    #[prost(string, tag = "2")]
    pub next_page_token: String,
}

/// The task of a stored `TaskRecord` (its field 1), still encoded; the other fields are skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct EncodedTaskOfRecord {
    #[prost(bytes = "vec", tag = "1")]
    task: Vec<u8>,
}

pub fn query(call: &mut Call<'_>, req: QueryTasksParam) -> Result<EncodedTasksPage> {
    let filter = req.filter.unwrap_or_default();
    let status = match filter.status {
        0 => None,
        n => match ComputeTaskStatus::try_from(n) {
            Ok(s) => Some(s),
            // No task can have a status outside the enum.
            Err(_) => {
                parse_token(&req.page_token)?;
                return Ok(EncodedTasksPage::default());
            }
        },
    };
    let plan = Plan::choose(given(filter.worker), status, given(filter.compute_plan_key), given(filter.function_key));
    let (entries, next_page_token) = scan_filtered(call, &plan, &req.page_token, req.page_size)?;
    let record_keys: Vec<String> = entries.iter().map(|k| keys::computetask(keys::last_component(k))).collect();
    let mut tasks = Vec::with_capacity(record_keys.len());
    for (key, record) in record_keys.iter().zip(call.load_many::<EncodedTaskOfRecord>(&record_keys)?) {
        let record = record.ok_or_else(|| LogicError::internal(format!("index points to missing {key}")))?;
        tasks.push(record.task);
    }
    Ok(EncodedTasksPage { tasks, next_page_token })
}

/// One page of the index entries under `plan.prefix` that `plan` keeps: their keys and the token
/// of the next page (a cursor at the next kept entry, `""` when there is none). Decimal offset
/// tokens count kept entries, as the reference's offsets count filtered rows.
fn scan_filtered(call: &mut Call<'_>, plan: &Plan, token: &str, page_size: u32) -> Result<(Vec<String>, String)> {
    let size = effective_page_size(page_size) as usize;
    let (start, end) = keys::prefix_range(&plan.prefix);
    let (mut cursor, mut skip) = match parse_token(token)? {
        PageStart::Cursor(c) if c.as_str() < start.as_str() => (Some(start.clone()), 0),
        PageStart::Cursor(c) => (Some(c), 0),
        PageStart::Offset(n) => (None, n),
    };
    if cursor.as_deref().is_some_and(|c| c >= end.as_str()) {
        return Ok((Vec::new(), String::new()));
    }
    let min_chunk = if plan.filters() { MIN_FILTERED_CHUNK } else { 1 };
    let mut found: Vec<String> = Vec::new();
    loop {
        let wanted = skip.saturating_add((size - found.len()) as u64).saturating_add(1);
        let chunk = u32::try_from(wanted).unwrap_or(MAX_CHUNK).clamp(min_chunk, MAX_CHUNK);
        let page = call.scan(&start, &end, chunk, cursor.as_deref())?;
        for (key, value) in page.entries {
            if !plan.keeps(&key, &value)? {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if found.len() == size {
                return Ok((found, format!("{CURSOR_TOKEN_PREFIX}{key}")));
            }
            found.push(key);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((found, String::new())),
        }
    }
}

#[cfg(test)]
mod tests {
    use orchestrator_proto::{ComputeTask, QueryTasksResponse};

    use super::*;
    use crate::computetask::{OutputAsset, TaskRecord};

    #[test]
    fn encoded_page_is_byte_for_byte_the_response() {
        let tasks: Vec<ComputeTask> = (0..3)
            .map(|n| ComputeTask {
                key: format!("task-{n}"),
                rank: n,
                metadata: [("n".to_owned(), n.to_string())].into(),
                ..Default::default()
            })
            .collect();
        let records = tasks.iter().map(|task| {
            let output = OutputAsset { identifier: "model".into(), asset_kind: 1, asset_key: "m".into() };
            TaskRecord { task: task.clone(), output_assets: vec![output] }.encode_to_vec()
        });
        let page = EncodedTasksPage {
            tasks: records
                .map(|r| EncodedTaskOfRecord::decode(r.as_slice()).map(|r| r.task))
                .collect::<Result<_, _>>()
                .expect("a TaskRecord decodes"),
            next_page_token: "k:next".into(),
        };
        let response = QueryTasksResponse { tasks, next_page_token: "k:next".into() };
        assert_eq!(page.encode_to_vec(), response.encode_to_vec());
    }
}
