//! The request's field rules (docs/business-rules.md §8.1 step 2), in the ozzo format of the
//! reference's `NewComputeTask.Validate`: checked on every task of the batch before any read.

use orchestrator_proto::{ComputeTaskInput, NewComputeTask, compute_task_input::Ref};

use crate::validation::{FieldErrors, MSG_REQUIRED, check_metadata, require_uuid};

pub(super) fn validate(task: &NewComputeTask) -> Option<String> {
    let mut errs = FieldErrors::new();
    require_uuid(&mut errs, "key", &task.key);
    require_uuid(&mut errs, "function_key", &task.function_key);
    require_uuid(&mut errs, "compute_plan_key", &task.compute_plan_key);
    check_metadata(&mut errs, "metadata", &task.metadata);
    // `By(validateTaskInputs)`: the errors of the first invalid input.
    if let Some(input_errs) = task.inputs.iter().map(input_errors).find(|e| !e.is_empty()) {
        errs.nested("inputs", input_errs);
    }
    // `By(validateTaskOutputs)`: the first invalid output (map order; sorted here).
    for (identifier, output) in &task.outputs {
        if identifier.is_empty() {
            errs.add("outputs", MSG_REQUIRED);
            break;
        }
        if output.permissions.is_none() {
            let mut inner = FieldErrors::new();
            inner.add("permissions", MSG_REQUIRED);
            errs.nested("outputs", inner);
            break;
        }
    }
    errs.into_message()
}

/// `ComputeTaskInput.Validate`. Field names are the Go struct's error names: the oneof field and
/// its `AssetKey` member have no JSON tag, hence `Ref` and `AssetKey`.
fn input_errors(input: &ComputeTaskInput) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if input.identifier.is_empty() {
        errs.add("identifier", MSG_REQUIRED);
    }
    if input.r#ref.is_none() {
        errs.add("Ref", MSG_REQUIRED);
    }
    if !errs.is_empty() {
        return errs;
    }
    match &input.r#ref {
        Some(Ref::AssetKey(key)) => require_uuid(&mut errs, "AssetKey", key),
        Some(Ref::ParentTaskOutput(parent)) => {
            require_uuid(&mut errs, "parent_task_key", &parent.parent_task_key);
            if parent.output_identifier.is_empty() {
                errs.add("output_identifier", MSG_REQUIRED);
            }
        }
        None => {}
    }
    errs
}
