//! The shim's own transactions, outside the orchestrator API: which logic version a channel
//! runs (docs/modes.md §3.7).
//!
//! - [`ACTIVATE`] (`ActivateLogic` → `LogicVersion`): makes a component the channel's version.
//!   Only an admin of its organization may (the creator's certificate holds the NodeOUs admin
//!   OU, [`ADMIN_OU`]), and the transaction needs the chaincode's endorsement policy like any
//!   other. Every endorser verifies the candidate first: it compiles, answers `version` and
//!   `methods`, exports the same WIT world as the active version and keeps each of its methods
//!   with the same read-only flag (`orchestrator_runtime::check_replaceable`, as a standalone
//!   hot swap). A refusal writes nothing and answers its reason with a status ≥ 400.
//! - [`ACTIVE`] (no request → `LogicVersion`): the version the channel runs, read-only.

use orchestrator_runtime::{ErrorKind, RuntimeError, check_replaceable, identity};
use prost::Message;

use crate::encoding::STATUS_UNKNOWN_METHOD;
use crate::fabric::orchestrator_fabric::{ActivateLogic, LogicVersion};
use crate::fabric::protos::{ChaincodeEvent, SignedProposal};
use crate::shim::{Completed, PeerLink};
use crate::versions::{ACTIVE_KEY, LogicVersions, component_key};
use crate::{proposal, signing};

/// Prefix of the shim's own methods (never a method of the orchestrator API).
pub const SERVICE_PREFIX: &str = "orchestrator.LogicAdmin/";
/// Activates a logic version on the channel.
pub const ACTIVATE: &str = "orchestrator.LogicAdmin/Activate";
/// The channel's logic version.
pub const ACTIVE: &str = "orchestrator.LogicAdmin/Active";
/// The chaincode event an activation carries (its payload: the new `LogicVersion`). Facades
/// copy only `chaincode-updates` events, so it is there for whoever audits the ledger.
pub const ACTIVATED_EVENT: &str = "logic-activated";
/// The Subject OU of an organization's admins under NodeOUs, as cryptogen and fabric-ca issue
/// them and as the MSP's `config.yaml` (`AdminOUIdentifier`) names the role.
pub const ADMIN_OU: &str = "admin";

/// Whether `method` is one of the shim's own.
pub fn is_admin_method(method: &str) -> bool {
    method.starts_with(SERVICE_PREFIX)
}

fn refused(kind: ErrorKind, message: String) -> Completed {
    Completed::failed(kind.fabric_status(), message)
}

/// Runs one of the shim's own methods. `Err`: the transaction fails (ERROR), as for the logic's.
pub(crate) async fn execute(
    versions: &LogicVersions,
    ctx: &orchestrator_runtime::Context,
    method: &str,
    request: &[u8],
    signed: Option<&SignedProposal>,
    link: &PeerLink,
) -> Result<Completed, String> {
    match method {
        ACTIVE => {
            let resolved = versions.resolve(link).await?;
            Ok(Completed::ok(resolved.describe().encode_to_vec(), None))
        }
        ACTIVATE => activate(versions, ctx, request, signed, link).await,
        _ => Ok(Completed::failed(STATUS_UNKNOWN_METHOD, format!("unknown logic administration method {method:?}"))),
    }
}

/// Why the creator may not activate, if it may not.
fn not_an_admin(signed: Option<&SignedProposal>) -> Result<Option<String>, String> {
    let creator = proposal::creator(signed).map_err(|e| e.to_string())?;
    let Some(ous) = signing::certificate_subject_ous(&creator.id_bytes) else {
        return Ok(Some(format!("the creator's certificate ({}) is not a readable X.509 certificate", creator.mspid)));
    };
    if ous.iter().any(|ou| ou == ADMIN_OU) {
        return Ok(None);
    }
    Ok(Some(format!(
        "activating a logic version takes an admin of the organization (certificate Subject OU={ADMIN_OU}); \
         the creator of {} has OU {ous:?}",
        creator.mspid
    )))
}

async fn activate(
    versions: &LogicVersions,
    ctx: &orchestrator_runtime::Context,
    request: &[u8],
    signed: Option<&SignedProposal>,
    link: &PeerLink,
) -> Result<Completed, String> {
    // Before any read: a refused creator leaves nothing in the transaction.
    if let Some(reason) = not_an_admin(signed)? {
        return Ok(refused(ErrorKind::PermissionDenied, format!("logic activation refused: {reason}")));
    }
    let Ok(request) = ActivateLogic::decode(request) else {
        return Ok(refused(
            ErrorKind::InvalidAsset,
            "logic activation refused: the request is not an orchestrator_fabric.ActivateLogic".to_owned(),
        ));
    };
    let current = versions.resolve(link).await?;
    let current_info = current.runtime.info();
    let (component, stored) = if request.component.is_empty() {
        if request.sha256.is_empty() {
            return Ok(refused(
                ErrorKind::InvalidAsset,
                "logic activation refused: give the component, or the sha256 of one stored on the channel".to_owned(),
            ));
        }
        let key = component_key(&request.sha256);
        match link.get_state(&key).await.map_err(|e| e.message)? {
            Some(component) => (component, true),
            None => {
                return Ok(refused(
                    ErrorKind::NotFound,
                    format!("logic activation refused: no component {} is stored on the channel", request.sha256),
                ));
            }
        }
    } else {
        (request.component, false)
    };
    let sha256 = identity::sha256_hex(&component);
    if !request.sha256.is_empty() && request.sha256 != sha256 {
        return Ok(refused(
            ErrorKind::InvalidAsset,
            format!("logic activation refused: the component's sha256 is {sha256}, not {}", request.sha256),
        ));
    }
    if sha256 == current_info.sha256 {
        // Already active: nothing to write (an activation sent again after a lost answer).
        return Ok(Completed::ok(current.describe().encode_to_vec(), None));
    }
    let candidate = match versions.compile(component.clone()).await {
        Ok(candidate) => candidate,
        Err(error) => {
            return Ok(refused(
                ErrorKind::InvalidAsset,
                format!("logic activation refused: component {sha256} does not load: {error}"),
            ));
        }
    };
    if let Err(error) = check_replaceable(&current_info, &candidate.info()) {
        let reason = match error {
            RuntimeError::Incompatible(reason) => reason,
            other => other.to_string(),
        };
        return Ok(refused(
            ErrorKind::BadRequest,
            format!(
                "logic activation refused: component {sha256} cannot replace the active version {}: {reason}",
                current_info.sha256
            ),
        ));
    }
    versions.remember(&candidate);
    let info = candidate.info();
    let record = LogicVersion {
        sha256: sha256.clone(),
        version: info.version.clone(),
        world: info.world.clone(),
        activated_by: ctx.msp_id.clone(),
        tx_id: ctx.tx_id.clone(),
        activated_at_micros: ctx.tx_time_micros,
    };
    let encoded = record.encode_to_vec();
    // In key order (`~logic/active` < `~logic/component/`), as every write of the shim.
    link.put_state(ACTIVE_KEY, &encoded).await.map_err(|e| e.message)?;
    if !stored {
        link.put_state(&component_key(&sha256), &component).await.map_err(|e| e.message)?;
    }
    tracing::info!(
        channel = %ctx.channel,
        tx_id = %ctx.tx_id,
        activated_by = %ctx.msp_id,
        from_sha256 = %current_info.sha256,
        to_sha256 = %sha256,
        "logic activation endorsed"
    );
    let event =
        ChaincodeEvent { event_name: ACTIVATED_EVENT.to_owned(), payload: encoded.clone(), ..Default::default() };
    Ok(Completed::ok(encoded, Some(event)))
}
