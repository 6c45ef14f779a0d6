//! The state-call budget of the batch paths: RegisterTasks must read its world in a few batched
//! calls, whatever the size of the batch.

use std::collections::BTreeMap;

use orchestrator_logic::call::Context;
use orchestrator_logic::imports::{Imports, ScanPage, StateError};
use orchestrator_logic::testing::scenarios::{CHANNEL, ORG1, computetask};
use orchestrator_logic::testing::{Harness, MemImports};
use orchestrator_proto::RegisterTasksParam;
use prost::Message;

/// A host that counts the state calls of one invocation.
struct Counting<'a> {
    inner: MemImports<'a>,
    reads: usize,
    keys_read: usize,
    scans: usize,
}

impl Imports for Counting<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.reads += 1;
        self.keys_read += 1;
        self.inner.get(key)
    }
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.reads += 1;
        self.keys_read += keys.len();
        self.inner.get_many(keys)
    }
    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        self.inner.put(key, value)
    }
    fn delete(&mut self, key: &str) -> Result<(), StateError> {
        self.inner.delete(key)
    }
    fn scan(&mut self, start: &str, end: &str, limit: u32, cursor: Option<&str>) -> Result<ScanPage, StateError> {
        self.scans += 1;
        self.inner.scan(start, end, limit, cursor)
    }
    fn emit(&mut self, event: Vec<u8>) {
        self.inner.emit(event)
    }
}

/// RegisterTasks with 1,000 tasks (a chain of rounds over two organizations, an aggregate per
/// round) reads its whole world in a handful of batched state calls.
#[test]
fn register_1000_tasks_in_few_state_calls() {
    let mut h = Harness::new();
    computetask::setup_world(&mut h);
    let mut tasks = Vec::new();
    let mut previous: Vec<u64> = Vec::new();
    let mut n = 10_000;
    while tasks.len() < 1_000 {
        let round: Vec<u64> = (0..4).map(|i| n + i).collect();
        for (i, k) in round.iter().enumerate() {
            let (dm, samples) = if i % 2 == 0 { (computetask::DM1, [20, 21]) } else { (computetask::DM2, [22, 23]) };
            tasks.push(computetask::train_task(*k, dm, &samples, &previous));
        }
        let aggregate = n + 4;
        tasks.push(computetask::aggregate_task(aggregate, ORG1, &round));
        previous = vec![aggregate];
        n += 5;
    }
    // Children first: the sort has work to do.
    tasks.reverse();
    let request = RegisterTasksParam { tasks }.encode_to_vec();

    let state = h.state(CHANNEL).expect("channel state");
    let committed: &BTreeMap<String, Vec<u8>> = &state.entries;
    let mut host = Counting { inner: MemImports::new(committed), reads: 0, keys_read: 0, scans: 0 };
    let ctx = Context {
        msp_id: ORG1.to_owned(),
        channel: CHANNEL.to_owned(),
        tx_id: "budget".to_owned(),
        tx_time_micros: 1_800_000_000_000_000,
    };
    let response =
        orchestrator_logic::invoke(&ctx, &mut host, "orchestrator.ComputeTaskService/RegisterTasks", &request)
            .expect("RegisterTasks");
    let registered = orchestrator_proto::RegisterTasksResponse::decode(response.as_slice()).expect("response");
    assert_eq!(registered.tasks.len(), 1_000);
    assert_eq!(registered.tasks.last().map(|t| t.rank), Some(399));
    // What the request names, what that names (inputs by kind, parents' functions), and the
    // data managers' owners: each state call is a database (or peer) round trip.
    assert!(host.reads <= 3, "{} read calls", host.reads);
    assert_eq!(host.scans, 0, "registration scans nothing");
    assert!(host.keys_read < 1_200, "{} keys read", host.keys_read);
}
