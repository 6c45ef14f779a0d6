//! Failure reports (docs/business-rules.md §11): registering the report is the failure itself: the
//! task (from EXECUTING) or the function (from BUILDING) goes to FAILED, then the report is stored.
//!
//! State: `failurereport/<asset key>`, one report per failed asset.

use orchestrator_proto::{
    ApplyTaskActionParam, ComputeTaskAction, ComputeTaskStatus, ErrorType, FailedAssetKind, FailureReport, Function,
    FunctionStatus, GetFailureReportParam, NewFailureReport,
};

use crate::asset::{self, load, require_new, store};
use crate::call::Call;
use crate::computetask;
use crate::datamanager::addressable_parts;
use crate::error::{LogicError, Result};
use crate::function;
use crate::validation::{FieldErrors, check_in, go_quote, require_absent, require_addressable, require_uuid};

pub const ASSET: &str = "failure report";
/// The kind named in validation errors.
const VALIDATION_KIND: &str = "failurereport";
/// Reason carried by the status events of the failed asset.
pub const REASON: &str = "failure report registered";

fn validate(new: &NewFailureReport) -> Result<()> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "asset_key", &new.asset_key);
    // The reference's `In` lets 0 through and its database then refuses the row (UNKNOWN);
    // refused here as the invalid value it is.
    if new.error_type == ErrorType::Unspecified as i32 {
        errs.add("error_type", "cannot be blank");
    }
    check_in(
        &mut errs,
        "error_type",
        new.error_type,
        &[ErrorType::Build as i32, ErrorType::Execution as i32, ErrorType::Internal as i32],
    );
    let with_logs = new.error_type == ErrorType::Build as i32 || new.error_type == ErrorType::Execution as i32;
    let (present, checksum, address) = addressable_parts(new.logs_address.as_ref());
    if with_logs {
        require_addressable(&mut errs, "logs_address", present, checksum, address);
    } else {
        require_absent(&mut errs, "logs_address", present);
    }
    check_in(
        &mut errs,
        "asset_type",
        new.asset_type,
        &[FailedAssetKind::FailedAssetComputeTask as i32, FailedAssetKind::FailedAssetFunction as i32],
    );
    match errs.into_message() {
        Some(msg) => Err(LogicError::invalid(VALIDATION_KIND, msg)),
        None => Ok(()),
    }
}

pub fn register(call: &mut Call<'_>, new: NewFailureReport) -> Result<FailureReport> {
    validate(&new)?;
    // One report per asset: the reference leaves this to its primary key (UNKNOWN after the
    // status change); an explicit check with its proper code, before anything is written.
    require_new::<FailureReport>(call, &new.asset_key)?;
    let requester = call.requester().to_owned();
    match FailedAssetKind::try_from(new.asset_type) {
        Ok(FailedAssetKind::FailedAssetComputeTask) => fail_task(call, &new.asset_key, &requester)?,
        Ok(FailedAssetKind::FailedAssetFunction) => fail_function(call, &new.asset_key, &requester)?,
        _ => {
            return Err(LogicError::bad_request(
                "can only register failure for asset_kind values function and compute task",
            ));
        }
    }
    let report = FailureReport {
        asset_key: new.asset_key.clone(),
        error_type: new.error_type,
        logs_address: new.logs_address,
        creation_date: Some(call.now()),
        owner: requester,
        asset_type: new.asset_type,
    };
    store(call, &report)?;
    asset::emit_created(call, report.clone());
    Ok(report)
}

fn fail_task(call: &mut Call<'_>, key: &str, requester: &str) -> Result<()> {
    let record = computetask::load_record(call, key)?;
    if record.task.worker != requester {
        return Err(LogicError::permission_denied(format!(
            "only {} worker can register failure report for compute task",
            go_quote(&record.task.worker)
        )));
    }
    if record.status() != ComputeTaskStatus::StatusExecuting {
        return Err(LogicError::bad_request(format!(
            "cannot register failure report for task with status {}",
            go_quote(record.status().as_str_name())
        )));
    }
    computetask::apply_action(
        call,
        ApplyTaskActionParam {
            compute_task_key: key.to_owned(),
            action: ComputeTaskAction::TaskActionFailed as i32,
            log: REASON.to_owned(),
        },
    )?;
    Ok(())
}

fn fail_function(call: &mut Call<'_>, key: &str, requester: &str) -> Result<()> {
    let f: Function = load(call, key)?;
    // Not `asset::require_owner`: this denial names the owner.
    if f.owner != requester {
        return Err(LogicError::permission_denied(format!(
            "only {} owner can register failure report for function",
            go_quote(&f.owner)
        )));
    }
    function::transition(call, f, FunctionStatus::Failed, REASON)?;
    Ok(())
}

pub fn get(call: &mut Call<'_>, req: GetFailureReportParam) -> Result<FailureReport> {
    load(call, &req.asset_key)
}
