//! The exported API: the method table (name, read-only?) and the dispatcher.

use prost::Message;

use crate::call::{Call, Context};
use crate::error::{LogicError, Result};
use crate::imports::Imports;
use crate::{
    computeplan, computetask, datamanager, datasample, dataset, failurereport, function, info, model, organization,
    performance, profiling,
};

type MethodFn = fn(&mut Call<'_>, &[u8]) -> Result<Vec<u8>>;

/// One unary method of the orchestrator API.
pub struct Method {
    /// gRPC path without the leading slash.
    pub name: &'static str,
    /// Never writes state nor emits events.
    pub read_only: bool,
    handler: Option<MethodFn>,
}

/// Decode the request, run the handler, encode the response.
fn run_typed<Req, Resp>(call: &mut Call<'_>, bytes: &[u8], f: fn(&mut Call<'_>, Req) -> Result<Resp>) -> Result<Vec<u8>>
where
    Req: Message + Default,
    Resp: Message,
{
    let request = Req::decode(bytes).map_err(LogicError::malformed)?;
    Ok(f(call, request)?.encode_to_vec())
}

macro_rules! rpc {
    ($name:literal, $ro:expr, $f:path) => {
        Method { name: $name, read_only: $ro, handler: Some(|call, bytes| run_typed(call, bytes, $f)) }
    };
    // In the contract, not written yet: answers UNIMPLEMENTED (OE0010).
    ($name:literal, $ro:expr) => {
        Method { name: $name, read_only: $ro, handler: None }
    };
}

const RO: bool = true;
const RW: bool = false;

/// Every unary RPC of the contract (SubscribeToEvents, the one stream, is the host's).
pub static METHODS: &[Method] = &[
    rpc!("orchestrator.OrganizationService/RegisterOrganization", RW, organization::register),
    rpc!("orchestrator.OrganizationService/GetAllOrganizations", RO, organization::get_all),
    rpc!("orchestrator.ComputePlanService/RegisterPlan", RW, computeplan::register),
    rpc!("orchestrator.ComputePlanService/GetPlan", RO, computeplan::get),
    rpc!("orchestrator.ComputePlanService/ApplyPlanAction", RW, computeplan::apply_action),
    rpc!("orchestrator.ComputePlanService/QueryPlans", RO, computeplan::query),
    rpc!("orchestrator.ComputePlanService/UpdatePlan", RW, computeplan::update),
    rpc!("orchestrator.ComputePlanService/IsPlanRunning", RO, computeplan::is_running),
    rpc!("orchestrator.ComputeTaskService/RegisterTasks", RW, computetask::register),
    rpc!("orchestrator.ComputeTaskService/QueryTasks", RO, computetask::query),
    rpc!("orchestrator.ComputeTaskService/GetTask", RO, computetask::get),
    rpc!("orchestrator.ComputeTaskService/ApplyTaskAction", RW, computetask::apply_action),
    rpc!("orchestrator.ComputeTaskService/GetTaskInputAssets", RO, computetask::input_assets),
    rpc!("orchestrator.ComputeTaskService/DisableOutput", RW, computetask::disable_output),
    rpc!("orchestrator.DataManagerService/RegisterDataManager", RW, datamanager::register),
    rpc!("orchestrator.DataManagerService/GetDataManager", RO, datamanager::get),
    rpc!("orchestrator.DataManagerService/QueryDataManagers", RO, datamanager::query),
    rpc!("orchestrator.DataManagerService/UpdateDataManager", RW, datamanager::update),
    rpc!("orchestrator.DataSampleService/RegisterDataSamples", RW, datasample::register),
    rpc!("orchestrator.DataSampleService/UpdateDataSamples", RW, datasample::update),
    rpc!("orchestrator.DataSampleService/QueryDataSamples", RO, datasample::query),
    rpc!("orchestrator.DataSampleService/GetDataSample", RO, datasample::get),
    rpc!("orchestrator.DatasetService/GetDataset", RO, dataset::get),
    // Past events live where the host put them (its outbox), not in the logic's state: every host
    // answers QueryEvents itself. The logic only declares it (read-only).
    rpc!("orchestrator.EventService/QueryEvents", RO),
    rpc!("orchestrator.FailureReportService/RegisterFailureReport", RW, failurereport::register),
    rpc!("orchestrator.FailureReportService/GetFailureReport", RO, failurereport::get),
    rpc!("orchestrator.FunctionService/RegisterFunction", RW, function::register),
    rpc!("orchestrator.FunctionService/GetFunction", RO, function::get),
    rpc!("orchestrator.FunctionService/QueryFunctions", RO, function::query),
    rpc!("orchestrator.FunctionService/UpdateFunction", RW, function::update),
    rpc!("orchestrator.FunctionService/ApplyFunctionAction", RW, function::apply_action),
    rpc!("orchestrator.InfoService/QueryVersion", RO, info::query_version),
    rpc!("orchestrator.ModelService/RegisterModel", RW, model::register_one),
    rpc!("orchestrator.ModelService/RegisterModels", RW, model::register),
    rpc!("orchestrator.ModelService/GetModel", RO, model::get),
    rpc!("orchestrator.ModelService/GetComputeTaskOutputModels", RO, model::task_output_models),
    rpc!("orchestrator.PerformanceService/RegisterPerformance", RW, performance::register),
    rpc!("orchestrator.PerformanceService/QueryPerformances", RO, performance::query),
    rpc!("orchestrator.ProfilingService/RegisterProfilingStep", RW, profiling::register),
];

pub fn find(method: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == method)
}

/// Version of the logic.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Run one method against a host. On error the host must discard the call's writes and events.
pub fn invoke(ctx: &Context, host: &mut dyn Imports, method: &str, request: &[u8]) -> Result<Vec<u8>> {
    let Some(m) = find(method) else {
        return Err(LogicError::unimplemented(format!("unknown method {method:?}")));
    };
    let Some(handler) = m.handler else {
        return Err(LogicError::unimplemented(format!("{method} is not implemented yet")));
    };
    let mut call = Call::new(ctx, host);
    handler(&mut call, request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_every_unary_rpc_once() {
        assert_eq!(METHODS.len(), 39);
        let mut names: Vec<_> = METHODS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 39);
        assert!(find("orchestrator.EventService/SubscribeToEvents").is_none());
        let unwritten: Vec<&str> = METHODS.iter().filter(|m| m.handler.is_none()).map(|m| m.name).collect();
        assert_eq!(unwritten, ["orchestrator.EventService/QueryEvents"], "only the host's method has no handler");
    }
}
