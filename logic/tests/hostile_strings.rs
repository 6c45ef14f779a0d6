//! Every call the scenarios make, sent again with each of its string fields made hostile (a NUL
//! inside, longer than any state key, 64 KiB long): the logic must answer with a client error,
//! never INTERNAL, and never quote more than a bounded part of the input back.
//!
//! Requests are mutated on the wire, field by field (embedded messages recursively), so no
//! method or field has to be listed here; each mutant runs on a copy of the state the original
//! call saw.

use orchestrator_logic::error::ErrorKind;
use orchestrator_logic::testing::fuzz::MAX_STATUS_BYTES;
use orchestrator_logic::testing::record::Recording;
use orchestrator_logic::testing::wire::{Payload, encode_replacing, hostile, parse};
use orchestrator_logic::testing::{Driver, Harness};

/// Calls replayed per method and scenario (they repeat the same shapes).
const CALLS_PER_METHOD: usize = 3;

/// Every mutant of `bytes`: each length-delimited field replaced by a hostile string (when it
/// is text) and, when it is itself a message, by each of its own mutants.
fn mutants(bytes: &[u8], depth: usize) -> Vec<Vec<u8>> {
    let Some(fields) = parse(bytes) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let Payload::Delimited(payload) = &field.payload else { continue };
        if let Ok(text) = std::str::from_utf8(payload) {
            for with in hostile(text) {
                out.push(encode_replacing(&fields, Some((i, &with))));
            }
        }
        if depth < 4 && !payload.is_empty() {
            for inner in mutants(payload, depth + 1) {
                out.push(encode_replacing(&fields, Some((i, &inner))));
            }
        }
    }
    out
}

fn replay(scenario: fn(&mut dyn Driver)) {
    let mut recording = Recording::default();
    recording.add("scenario", scenario, CALLS_PER_METHOD);
    let mut tried = 0;
    let mut failures = Vec::new();
    for call in recording.calls.iter().filter(|c| c.exact) {
        for request in mutants(&call.request, 0) {
            tried += 1;
            let mut harness: Harness = recording.worlds[call.world].clone();
            let Err(err) = harness.call_raw(&call.msp, &call.channel, &call.method, &request) else { continue };
            let internal = err.kind == ErrorKind::Internal;
            if internal || err.message.len() > MAX_STATUS_BYTES {
                let shown: String = err.message.chars().take(300).collect();
                failures.push(format!("{} ({:?}, {} bytes): {shown}", call.method, err.kind, err.message.len()));
            }
        }
    }
    failures.sort();
    failures.dedup();
    assert!(tried > 0, "the scenario made no call to mutate");
    assert!(
        failures.is_empty(),
        "{} of {tried} hostile requests were answered badly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

orchestrator_logic::scenario_tests!(with replay);
