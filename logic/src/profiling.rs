//! Profiling steps (docs/business-rules.md §12): timings reported by workers. Nothing is stored;
//! the step only travels as a PROFILING_STEP/CREATED event.

use orchestrator_proto::ProfilingStep;

use crate::asset;
use crate::call::Call;
use crate::error::{LogicError, Result};
use crate::validation::{FieldErrors, require_name, require_present, require_uuid};

const VALIDATION_KIND: &str = "profiling_step";

pub fn register(call: &mut Call<'_>, step: ProfilingStep) -> Result<()> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "asset_key", &step.asset_key);
    require_name(&mut errs, "step", &step.step);
    require_present(&mut errs, "duration", step.duration > 0);
    if let Some(msg) = errs.into_message() {
        return Err(LogicError::invalid(VALIDATION_KIND, msg));
    }
    asset::emit_created(call, step);
    Ok(())
}
