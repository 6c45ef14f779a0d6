//! Scenario runs recorded call by call: the request bytes of every call and the state some of
//! them ran on, as seeds for request mutators (the hostile-strings test, the fuzzer).

use orchestrator_proto::Event;

use super::{Driver, Harness};
use crate::error::LogicError;

/// One call a scenario made.
pub struct RecordedCall {
    pub scenario: &'static str,
    pub msp: String,
    pub channel: String,
    pub method: String,
    pub request: Vec<u8>,
    /// The response bytes, when the call succeeded.
    pub response: Option<Vec<u8>>,
    /// Index in [`Recording::worlds`] of the state the call ran on when `exact`, else of the
    /// latest snapshot taken before it (same scenario, an earlier state).
    pub world: usize,
    pub exact: bool,
}

/// Calls of one or more scenarios and the states they were snapshotted on. Snapshots carry no
/// event log.
#[derive(Default)]
pub struct Recording {
    pub worlds: Vec<Harness>,
    pub calls: Vec<RecordedCall>,
}

impl Recording {
    /// Runs `scenario` natively and records its calls. The state before a call is kept for the
    /// first `snapshots_per_method` successful calls of each method (the scenarios repeat the
    /// same shapes), and the scenario's start and final states always.
    pub fn add(&mut self, name: &'static str, scenario: fn(&mut dyn Driver), snapshots_per_method: usize) {
        self.worlds.push(Harness::new());
        let first_call = self.calls.len();
        let mut recorder =
            Recorder { harness: Harness::new(), recording: self, scenario: name, first_call, snapshots_per_method };
        scenario(&mut recorder);
        let last = recorder.harness.without_events();
        self.worlds.push(last);
    }

    /// Every scenario, each from an empty state.
    pub fn all_scenarios(snapshots_per_method: usize) -> Recording {
        let mut recording = Recording::default();
        for (name, scenario) in crate::scenario_tests!(all) {
            recording.add(name, *scenario, snapshots_per_method);
        }
        recording
    }
}

struct Recorder<'r> {
    harness: Harness,
    recording: &'r mut Recording,
    scenario: &'static str,
    /// Index of this scenario's first call in the recording.
    first_call: usize,
    snapshots_per_method: usize,
}

impl Driver for Recorder<'_> {
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, LogicError> {
        let before = self.harness.without_events();
        let result = self.harness.call_raw(msp, channel, method, request);
        let calls = &mut self.recording.calls;
        let snapshotted = calls[self.first_call..].iter().filter(|c| c.exact && c.method == method).count();
        let exact = result.is_ok() && snapshotted < self.snapshots_per_method;
        if exact {
            self.recording.worlds.push(before);
        }
        self.recording.calls.push(RecordedCall {
            scenario: self.scenario,
            msp: msp.to_owned(),
            channel: channel.to_owned(),
            method: method.to_owned(),
            request: request.to_vec(),
            response: result.as_ref().ok().cloned(),
            world: self.recording.worlds.len() - 1,
            exact,
        });
        result
    }

    fn events(&self) -> Vec<Event> {
        self.harness.events()
    }
}
