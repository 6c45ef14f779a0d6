//! Data samples (docs/business-rules.md §4). Batches are processed in request order with the
//! reference's error precedence, but every lookup is one batched state call.

use std::collections::{BTreeMap, BTreeSet};

use orchestrator_proto::{
    DataManager, DataSample, GetDataSampleParam, QueryDataSamplesParam, QueryDataSamplesResponse,
    RegisterDataSamplesParam, RegisterDataSamplesResponse, UpdateDataSamplesParam, UpdateDataSamplesResponse,
};

use crate::asset::{self, load, require_owner, store, store_updated};
use crate::call::{Call, timestamp_to_micros};
use crate::datamanager;
use crate::error::{LogicError, Result};
use crate::keys;
use crate::organization::require_registered;
use crate::pagination::{paginate_vec, query_index};
use crate::validation::{FieldErrors, check_uuid, require_checksum, require_uuid};

pub const ASSET: &str = "datasample";

/// `idx/datasample/datamanager/<dm>/<time>/<sample>`: the samples of a dataset in creation order.
pub fn by_manager_prefix(dm: &str) -> String {
    keys::join(&["idx", ASSET, "datamanager", dm])
}
fn by_manager_index(dm: &str, created_micros: i64, sample: &str) -> String {
    keys::join(&["idx", ASSET, "datamanager", dm, &keys::time(created_micros), sample])
}

/// The listed data managers must exist and be owned by the requester. Batched, and the denial
/// names the manager: not `asset::load_owned`.
fn check_managers(call: &mut Call<'_>, dm_keys: &[String]) -> Result<()> {
    let unique: Vec<String> = dm_keys.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let record_keys: Vec<String> = unique.iter().map(|k| keys::datamanager(k)).collect();
    let loaded: BTreeMap<&str, Option<DataManager>> =
        unique.iter().map(String::as_str).zip(call.load_many::<DataManager>(&record_keys)?).collect();
    // Report in request order, as the reference does.
    for key in dm_keys {
        match loaded.get(key.as_str()) {
            Some(Some(dm)) if dm.owner == call.requester() => {}
            Some(Some(_)) => {
                return Err(LogicError::permission_denied(format!("requester does not own the datamanager {key:?}")));
            }
            _ => return Err(LogicError::not_found(datamanager::ASSET, key)),
        }
    }
    Ok(())
}

pub fn register(call: &mut Call<'_>, req: RegisterDataSamplesParam) -> Result<RegisterDataSamplesResponse> {
    if req.samples.is_empty() {
        return Ok(RegisterDataSamplesResponse { data_samples: Vec::new() });
    }
    let owner = call.requester().to_owned();
    require_registered(call, &owner)?;

    // Batched reads: every referenced manager and every sample key, once.
    let mut all_dms: Vec<String> = req.samples.iter().flat_map(|s| s.data_manager_keys.iter().cloned()).collect();
    all_dms.sort_unstable();
    all_dms.dedup();
    let dm_records: Vec<String> = all_dms.iter().map(|k| keys::datamanager(k)).collect();
    let managers: BTreeMap<String, Option<DataManager>> =
        all_dms.iter().cloned().zip(call.load_many::<DataManager>(&dm_records)?).collect();
    let sample_records: Vec<String> = req.samples.iter().map(|s| keys::datasample(&s.key)).collect();
    let existing = call.exist_many(&sample_records)?;

    let now = call.now();
    let now_micros = call.now_micros();
    let mut seen = BTreeSet::new();
    let mut created = Vec::with_capacity(req.samples.len());
    for (sample, exists) in req.samples.into_iter().zip(existing) {
        let mut errs = FieldErrors::new();
        require_uuid(&mut errs, "key", &sample.key);
        let mut dm_errs = FieldErrors::new();
        for (i, dm) in sample.data_manager_keys.iter().enumerate() {
            check_uuid(&mut dm_errs, &i.to_string(), dm);
        }
        errs.nested("data_manager_keys", dm_errs);
        require_checksum(&mut errs, "checksum", &sample.checksum);
        if let Some(details) = errs.into_message() {
            return Err(LogicError::invalid(ASSET, details));
        }
        for dm in &sample.data_manager_keys {
            match managers.get(dm) {
                Some(Some(m)) if m.owner == owner => {}
                Some(Some(_)) => {
                    return Err(LogicError::permission_denied(format!(
                        "requester does not own the datamanager {dm:?}"
                    )));
                }
                _ => return Err(LogicError::not_found(datamanager::ASSET, dm)),
            }
        }
        // A key repeated inside the batch is a conflict too (the reference fails in the DB).
        if exists || !seen.insert(sample.key.clone()) {
            return Err(LogicError::already_exists(ASSET, &sample.key));
        }
        created.push(DataSample {
            key: sample.key,
            data_manager_keys: sample.data_manager_keys,
            owner: owner.clone(),
            test_only: false, // deprecated: accepted, never stored
            checksum: sample.checksum,
            creation_date: Some(now),
        });
    }

    for sample in &created {
        store(call, sample)?;
        call.put_raw(&keys::created_index(ASSET, now_micros, &sample.key), Vec::new())?;
        for dm in &sample.data_manager_keys {
            call.put_raw(&by_manager_index(dm, now_micros, &sample.key), Vec::new())?;
        }
        asset::emit_created(call, sample.clone());
    }
    Ok(RegisterDataSamplesResponse { data_samples: created })
}

pub fn update(call: &mut Call<'_>, req: UpdateDataSamplesParam) -> Result<UpdateDataSamplesResponse> {
    let mut errs = FieldErrors::new();
    if req.keys.is_empty() {
        errs.add("keys", "cannot be blank");
    }
    let mut key_errs = FieldErrors::new();
    for (i, key) in req.keys.iter().enumerate() {
        require_uuid(&mut key_errs, &i.to_string(), key);
    }
    errs.nested("keys", key_errs);
    let mut dm_errs = FieldErrors::new();
    for (i, dm) in req.data_manager_keys.iter().enumerate() {
        check_uuid(&mut dm_errs, &i.to_string(), dm);
    }
    errs.nested("data_manager_keys", dm_errs);
    if let Some(details) = errs.into_message() {
        return Err(LogicError::invalid(ASSET, details));
    }
    check_managers(call, &req.data_manager_keys)?;

    let records: Vec<String> = req.keys.iter().map(|k| keys::datasample(k)).collect();
    let samples = call.load_many::<DataSample>(&records)?;
    let mut updated: BTreeMap<String, DataSample> = BTreeMap::new();
    for (key, loaded) in req.keys.iter().zip(samples) {
        // A key listed twice sees its own earlier update.
        let mut sample = match updated.remove(key).or(loaded) {
            Some(s) => s,
            None => return Err(LogicError::not_found(ASSET, key)),
        };
        require_owner(call, &sample, "requester does not own the datasample")?;
        let created = sample.creation_date.as_ref().map(timestamp_to_micros).unwrap_or_default();
        for dm in &req.data_manager_keys {
            if !sample.data_manager_keys.contains(dm) {
                sample.data_manager_keys.push(dm.clone());
                call.put_raw(&by_manager_index(dm, created, &sample.key), Vec::new())?;
            }
        }
        // Stored under `sample.key`, which is `key`: it was loaded from `datasample/<key>`.
        store_updated(call, sample.clone())?;
        updated.insert(key.clone(), sample);
    }
    Ok(UpdateDataSamplesResponse {})
}

pub fn get(call: &mut Call<'_>, req: GetDataSampleParam) -> Result<DataSample> {
    load(call, &req.key)
}

pub fn query(call: &mut Call<'_>, req: QueryDataSamplesParam) -> Result<QueryDataSamplesResponse> {
    let filter_keys = req.filter.map(|f| f.keys).unwrap_or_default();
    if filter_keys.is_empty() {
        let (data_samples, next_page_token) =
            query_index(call, &keys::created_prefix(ASSET), &req.page_token, req.page_size, keys::datasample)?;
        return Ok(QueryDataSamplesResponse { data_samples, next_page_token });
    }
    // A key list: fetch those (bounded by the request), order as the index would.
    let mut unique = filter_keys;
    unique.sort_unstable();
    unique.dedup();
    let records: Vec<String> = unique.iter().map(|k| keys::datasample(k)).collect();
    let mut found: Vec<DataSample> = call.load_many::<DataSample>(&records)?.into_iter().flatten().collect();
    found.sort_by(|a, b| {
        let ta = a.creation_date.as_ref().map(timestamp_to_micros);
        let tb = b.creation_date.as_ref().map(timestamp_to_micros);
        ta.cmp(&tb).then_with(|| a.key.cmp(&b.key))
    });
    let (data_samples, next_page_token) = paginate_vec(found, &req.page_token, req.page_size)?;
    Ok(QueryDataSamplesResponse { data_samples, next_page_token })
}
