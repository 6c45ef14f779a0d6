//! Organizations (docs/business-rules.md §2): one per MSP id and channel, never updated.

use orchestrator_proto::{
    GetAllOrganizationsParam, GetAllOrganizationsResponse, Organization, RegisterOrganizationParam,
};

use crate::asset::{self, require_new, store};
use crate::call::Call;
use crate::error::{LogicError, Result};
use crate::keys;
use crate::validation::{FieldErrors, is_request_url};

pub const ASSET: &str = "organization";

pub fn register(call: &mut Call<'_>, req: RegisterOrganizationParam) -> Result<Organization> {
    // The reference answers a bad address with a raw (UNKNOWN) error; INVALID_ARGUMENT naming
    // the field is what a client can act on (README, compatibility notes).
    if !req.address.is_empty() && !is_request_url(&req.address) {
        let mut errs = FieldErrors::new();
        errs.add("address", "must be a valid request URL");
        return Err(LogicError::invalid(ASSET, errs.into_message().unwrap_or_default()));
    }
    let id = call.requester().to_owned();
    require_new::<Organization>(call, &id)?;
    let org = Organization { id, creation_date: Some(call.now()), address: req.address };
    store(call, &org)?;
    asset::emit_created(call, org.clone());
    Ok(org)
}

pub fn get_all(call: &mut Call<'_>, _req: GetAllOrganizationsParam) -> Result<GetAllOrganizationsResponse> {
    let (start, end) = keys::prefix_range(keys::ORGANIZATIONS);
    let mut organizations = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = call.scan(&start, &end, 1_000, cursor.as_deref())?;
        for (key, bytes) in &page.entries {
            let org: Organization = prost::Message::decode(bytes.as_slice())
                .map_err(|e| LogicError::internal(format!("corrupt state at {key:?}: {e}")))?;
            organizations.push(org);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(GetAllOrganizationsResponse { organizations })
}

/// Assets can only be owned by organizations registered in the channel (the reference enforces
/// it with foreign keys, surfacing UNKNOWN; here it is NOT_FOUND naming the organization).
pub fn require_registered(call: &mut Call<'_>, id: &str) -> Result<()> {
    if call.exists(&keys::organization(id))? { Ok(()) } else { Err(LogicError::not_found(ASSET, id)) }
}

/// Whether every id is a registered organization of the channel (one state call).
pub fn all_registered(call: &mut Call<'_>, ids: &[String]) -> Result<bool> {
    let keys: Vec<String> = ids.iter().map(|id| keys::organization(id)).collect();
    Ok(call.exist_many(&keys)?.into_iter().all(|present| present))
}
