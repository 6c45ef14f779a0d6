//! Endorsement determinism and trap isolation through the peer simulator.
//!
//! - A seeded random workload (organizations, data managers, data samples, functions, a compute
//!   plan, tasks, queries, on both channels, successes and business errors alike) endorsed on two
//!   chaincode instances: every endorsement must be byte-identical (read/write set, response,
//!   event, proposal response payload, even the sequence of state requests), and two runs of the
//!   same seed must produce the same transcript.
//! - A logic trap (fuel exhausted) fails that one transaction while the stream keeps serving.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{FabricDriver, chaincode, runtime};
use orchestrator_fabric_testing::ValidationCode;
use orchestrator_host_fabric::encoding;
use orchestrator_logic::testing::scenarios::computetask::{DM1, DM2, PLAN, TRAIN, make_ready, setup_world, train_task};
use orchestrator_logic::testing::scenarios::{
    CHANNEL, ORG1, ORG2, OTHER_CHANNEL, UNREGISTERED, key, method, new_data_manager, new_data_sample, new_function,
};
use orchestrator_logic::testing::{Driver, Rng};
use orchestrator_logic::{ErrorKind, LogicError};
use orchestrator_proto::{
    GetAllOrganizationsParam, QueryDataSamplesParam, QueryTasksParam, RegisterDataSamplesParam,
    RegisterOrganizationParam, RegisterTasksParam, TaskQueryFilter,
};
use orchestrator_runtime::{Context, MemoryBackend, Runtime, RuntimeConfig};
use prost::Message;
use sha2::Digest;

const QUERY_TASKS: &str = "orchestrator.ComputeTaskService/QueryTasks";

/// Counts of the workload's outcomes, to check it exercised both paths.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcomes {
    committed: u64,
    failed: u64,
    queries: u64,
}

/// Runs `steps` random calls after the compute-task world is set up; returns the transcript.
fn random_workload(seed: u64, steps: u64, twin: bool) -> (Vec<u8>, Outcomes, usize) {
    let mut d = FabricDriver::new();
    if twin {
        // Its own runtime (own engine, compiled module and instance pool).
        let other = Runtime::new(RuntimeConfig::default(), orchestrator_logic_component::COMPONENT).expect("runtime");
        d.twin = Some(d.rt.block_on(chaincode(other)));
    }
    setup_world(&mut d);
    make_ready(&mut d, TRAIN);
    let mut rng = Rng::new(seed);
    let mut outcomes = Outcomes::default();
    let mut next = 100_000_u64;
    let mut tasks: Vec<u64> = Vec::new();
    for _ in 0..steps {
        let channel = if rng.below64(8) == 0 { OTHER_CHANNEL } else { CHANNEL };
        let mut msp = *rng.pick(&[ORG1, ORG1, ORG2, UNREGISTERED]).expect("MSP ids");
        let (m, request): (&str, Vec<u8>) = match rng.below64(9) {
            0 => (method::REGISTER_ORGANIZATION, RegisterOrganizationParam::default().encode_to_vec()),
            1 => (method::REGISTER_DATA_MANAGER, new_data_manager(1_000 + rng.below64(12)).encode_to_vec()),
            2 | 3 => {
                // Mostly the data manager's owner (setup_world: DM1 is ORG1's, DM2 is ORG2's).
                let dm = match rng.below64(4) {
                    0 => key(1_000 + rng.below64(3)),
                    _ => {
                        let (dm, owner) = if rng.below64(2) == 0 { (DM1, ORG1) } else { (DM2, ORG2) };
                        if rng.below64(5) != 0 {
                            msp = owner;
                        }
                        key(dm)
                    }
                };
                let samples = (0..1 + rng.below64(40))
                    .map(|_| {
                        next += 1;
                        // Now and then a key already used: a conflict.
                        let n = if rng.below64(10) == 0 { 20 } else { next };
                        new_data_sample(n, &[dm.as_str()])
                    })
                    .collect();
                (method::REGISTER_DATA_SAMPLES, RegisterDataSamplesParam { samples }.encode_to_vec())
            }
            4 => (method::REGISTER_FUNCTION, new_function(2_000 + rng.below64(6)).encode_to_vec()),
            5 | 6 => {
                // The plan is ORG1's.
                if rng.below64(5) != 0 {
                    msp = ORG1;
                }
                let batch: Vec<_> = (0..1 + rng.below64(12))
                    .map(|_| {
                        next += 1;
                        let mut parents = Vec::new();
                        for _ in 0..rng.below64(3) {
                            if !tasks.is_empty() {
                                let parent = tasks[rng.below(tasks.len())];
                                if !parents.contains(&parent) {
                                    parents.push(parent);
                                }
                            }
                        }
                        let (dm, sample) = if rng.below64(2) == 0 { (DM1, 20) } else { (DM2, 22) };
                        train_task(next, dm, &[sample], &parents)
                    })
                    .collect();
                let keys: Vec<u64> = batch.iter().map(|t| u64::from_str_radix(&t.key[24..], 16).unwrap()).collect();
                let request = RegisterTasksParam { tasks: batch }.encode_to_vec();
                let result = d.call_raw(msp, channel, method::REGISTER_TASKS, &request);
                if result.is_ok() && channel == CHANNEL {
                    tasks.extend(keys);
                }
                count(&mut outcomes, result.map(|_| false));
                continue;
            }
            7 => {
                let page_size = u32::try_from(1 + rng.below64(150)).expect("size");
                let request = QueryDataSamplesParam { page_size, ..Default::default() }.encode_to_vec();
                (method::QUERY_DATA_SAMPLES, request)
            }
            _ => {
                if rng.below64(2) == 0 {
                    (method::GET_ALL_ORGANIZATIONS, GetAllOrganizationsParam::default().encode_to_vec())
                } else {
                    let filter = TaskQueryFilter { compute_plan_key: key(PLAN), ..Default::default() };
                    let page_size = u32::try_from(1 + rng.below64(120)).expect("size");
                    (
                        QUERY_TASKS,
                        QueryTasksParam { page_size, filter: Some(filter), ..Default::default() }.encode_to_vec(),
                    )
                }
            }
        };
        let read_only = d.runtime.is_read_only(m) == Some(true);
        let result = d.call_raw(msp, channel, m, &request);
        count(&mut outcomes, result.map(|_| read_only));
    }
    let events = d.events().len();
    assert!(tasks.len() > 50, "{} tasks registered", tasks.len());
    (d.transcript.finalize().to_vec(), outcomes, events)
}

fn count(outcomes: &mut Outcomes, result: Result<bool, LogicError>) {
    match result {
        Ok(true) => outcomes.queries += 1,
        Ok(false) => outcomes.committed += 1,
        Err(error) => {
            assert_ne!(error.kind, ErrorKind::Internal, "no trap in the workload: {}", error.message);
            outcomes.failed += 1;
        }
    }
}

#[test]
fn random_workload_endorses_identically_on_two_chaincodes() {
    for seed in [0x5eed_cafe_f00d_0001, 0x0123_4567_89ab_cdef, 7] {
        let (first, outcomes, events) = random_workload(seed, 150, true);
        assert!(outcomes.committed >= 30 && outcomes.failed >= 10 && outcomes.queries >= 10, "{outcomes:?}");
        assert!(events > 150, "{events} events");
        // The same seed again, on a new chaincode and a new ledger: the same bytes.
        let (second, again, _) = random_workload(seed, 150, false);
        assert_eq!(again, outcomes);
        assert_eq!(first, second, "two runs of seed {seed:#x} endorse the same bytes");
    }
}

/// Fuel of `method` on a fresh call over `backend` (default budget), applying its writes.
async fn fuel_of(runtime: &Runtime, backend: &MemoryBackend, msp: &str, method: &str, request: &[u8]) -> u64 {
    let ctx = Context {
        msp_id: msp.to_owned(),
        channel: CHANNEL.to_owned(),
        tx_id: format!("fuel-{method}-{}", backend.len()),
        tx_time_micros: 1_700_000_000_000_000,
    };
    let invocation = runtime.invoke(&ctx, method, request, backend.clone()).await.outcome.expect("invoke");
    invocation.result.expect("the call succeeds");
    backend.apply(&invocation.writes);
    invocation.fuel_consumed
}

fn samples_request(first: u64, count: u64) -> Vec<u8> {
    let dm = key(DM1);
    let samples = (first..first + count).map(|n| new_data_sample(n, &[dm.as_str()])).collect();
    RegisterDataSamplesParam { samples }.encode_to_vec()
}

#[test]
fn a_logic_trap_fails_that_transaction_only() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    // Measure the calls with the default budget (fuel is deterministic), then pick a budget
    // between the small calls and the large batch.
    let measured = runtime();
    let backend = MemoryBackend::new();
    let register_org = RegisterOrganizationParam::default().encode_to_vec();
    let dm = new_data_manager(DM1).encode_to_vec();
    let (small, big) = rt.block_on(async {
        let org = fuel_of(&measured, &backend, ORG1, method::REGISTER_ORGANIZATION, &register_org).await;
        let dm = fuel_of(&measured, &backend, ORG1, method::REGISTER_DATA_MANAGER, &dm).await;
        let few = fuel_of(&measured, &backend, ORG1, method::REGISTER_DATA_SAMPLES, &samples_request(1, 5)).await;
        let many =
            fuel_of(&measured, &backend, ORG1, method::REGISTER_DATA_SAMPLES, &samples_request(100, 2_000)).await;
        (org.max(dm).max(few), many)
    });
    assert!(big > 8 * small, "the batch must cost much more fuel: {small} vs {big}");
    let budget = small * 4;
    let config = RuntimeConfig { fuel_per_call: budget, ..RuntimeConfig::default() };
    let starved = Runtime::new(config, orchestrator_logic_component::COMPONENT).expect("runtime");
    drop(rt);

    let mut d = FabricDriver::with_runtime(starved);
    d.call_raw(ORG1, CHANNEL, method::REGISTER_ORGANIZATION, &register_org).expect("organization");
    d.call_raw(ORG1, CHANNEL, method::REGISTER_DATA_MANAGER, &dm).expect("data manager");
    let events = d.events().len();
    let state = d.peer(CHANNEL).state();

    // Out of fuel: COMPLETED 500 with the OE0007 trap message, not endorsed, nothing committed.
    let (endorsement, code) = d.transact(ORG1, CHANNEL, method::REGISTER_DATA_SAMPLES, &samples_request(100, 2_000));
    assert_eq!(endorsement.response.status, encoding::STATUS_INTERNAL, "{}", endorsement.response.message);
    assert!(endorsement.response.message.starts_with("OE0007: logic trapped"), "{}", endorsement.response.message);
    assert!(endorsement.payload.is_some(), "a trap is a COMPLETED, not an ERROR");
    assert!(!endorsement.is_endorsed() && endorsement.event.is_none() && endorsement.rwset.writes.is_empty());
    assert_eq!(code, None);
    // A client that submits it anyway: the peer invalidates it.
    assert_eq!(
        d.peer(CHANNEL).commit_block(std::slice::from_ref(&endorsement)),
        vec![ValidationCode::EndorsementPolicyFailure]
    );
    assert_eq!(d.peer(CHANNEL).state(), state);
    assert_eq!(d.events().len(), events);
    let error = d.call_raw(ORG1, CHANNEL, method::REGISTER_DATA_SAMPLES, &samples_request(100, 2_000));
    assert_eq!(error.expect_err("trap").kind, ErrorKind::Internal);

    // The same stream keeps serving, and a small batch fits the budget.
    d.call_raw(ORG1, CHANNEL, method::REGISTER_DATA_SAMPLES, &samples_request(1, 5)).expect("small batch");
    assert_eq!(d.events().len(), events + 5);
    d.call_raw(ORG2, CHANNEL, method::REGISTER_ORGANIZATION, &register_org).expect("organization");
    assert_eq!(d.events().len(), events + 6);
}
