//! Data managers (docs/business-rules.md §3).

use orchestrator_proto::{
    DataManager, GetDataManagerParam, NewDataManager, QueryDataManagersParam, QueryDataManagersResponse,
    UpdateDataManagerParam, UpdateDataManagerResponse,
};

use crate::asset::{self, load, load_owned, require_new, store, store_updated};
use crate::call::Call;
use crate::error::{LogicError, Result};
use crate::keys;
use crate::organization::require_registered;
use crate::pagination::query_index;
use crate::permissions::{new_permission, new_permissions};
use crate::validation::{FieldErrors, check_metadata, require_addressable, require_name, require_uuid};

pub const ASSET: &str = "datamanager";

pub fn register(call: &mut Call<'_>, req: NewDataManager) -> Result<DataManager> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "key", &req.key);
    require_name(&mut errs, "name", &req.name);
    if req.new_permissions.is_none() {
        errs.add("new_permissions", "cannot be blank");
    }
    let (present, checksum, address) = addressable_parts(req.description.as_ref());
    require_addressable(&mut errs, "description", present, checksum, address);
    let (present, checksum, address) = addressable_parts(req.opener.as_ref());
    require_addressable(&mut errs, "opener", present, checksum, address);
    check_metadata(&mut errs, "metadata", &req.metadata);
    if req.logs_permission.is_none() {
        errs.add("logs_permission", "cannot be blank");
    }
    if let Some(details) = errs.into_message() {
        return Err(LogicError::invalid(ASSET, details));
    }

    require_new::<DataManager>(call, &req.key)?;
    let owner = call.requester().to_owned();
    require_registered(call, &owner)?;
    let default_permissions = Default::default();
    let permissions = new_permissions(call, &owner, req.new_permissions.as_ref().unwrap_or(&default_permissions))?;
    let logs_permission = new_permission(call, &owner, req.logs_permission.as_ref().unwrap_or(&default_permissions))?;

    let dm = DataManager {
        key: req.key,
        name: req.name,
        owner,
        permissions: Some(permissions),
        description: req.description,
        opener: req.opener,
        r#type: String::new(), // accepted on input, never stored (as the reference)
        creation_date: Some(call.now()),
        logs_permission: Some(logs_permission),
        metadata: req.metadata,
    };
    store(call, &dm)?;
    call.put_raw(&keys::created_index(ASSET, call.now_micros(), &dm.key), Vec::new())?;
    asset::emit_created(call, dm.clone());
    Ok(dm)
}

pub fn get(call: &mut Call<'_>, req: GetDataManagerParam) -> Result<DataManager> {
    load(call, &req.key)
}

pub fn query(call: &mut Call<'_>, req: QueryDataManagersParam) -> Result<QueryDataManagersResponse> {
    let (data_managers, next_page_token) =
        query_index(call, &keys::created_prefix(ASSET), &req.page_token, req.page_size, keys::datamanager)?;
    Ok(QueryDataManagersResponse { data_managers, next_page_token })
}

pub fn update(call: &mut Call<'_>, req: UpdateDataManagerParam) -> Result<UpdateDataManagerResponse> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "key", &req.key);
    require_name(&mut errs, "name", &req.name);
    if let Some(details) = errs.into_message() {
        return Err(LogicError::invalid(ASSET, details));
    }
    let mut dm: DataManager = load_owned(call, &req.key, "requester does not own the data manager")?;
    dm.name = req.name;
    store_updated(call, dm)?;
    Ok(UpdateDataManagerResponse {})
}

/// (present, checksum, storage address) of an optional Addressable, for validation.
pub fn addressable_parts(a: Option<&orchestrator_proto::Addressable>) -> (bool, &str, &str) {
    match a {
        Some(a) => (true, a.checksum.as_str(), a.storage_address.as_str()),
        None => (false, "", ""),
    }
}
