//! Every call the scenarios make, sent again with each of its string fields made hostile (a NUL
//! inside, longer than any state key, 64 KiB long): the logic must answer with a client error,
//! never INTERNAL, and never quote more than a bounded part of the input back.
//!
//! Requests are mutated on the wire, field by field (embedded messages recursively), so no
//! method or field has to be listed here; each mutant runs on a copy of the state the original
//! call saw.

use orchestrator_logic::error::{ErrorKind, OrcError};
use orchestrator_logic::testing::{Driver, Harness};
use orchestrator_proto::Event;

/// A status message may quote input, but only a bounded part of it.
const MAX_MESSAGE_BYTES: usize = orchestrator_logic::error::MAX_MESSAGE_BYTES + 64;
/// Calls replayed per method and scenario (they repeat the same shapes).
const CALLS_PER_METHOD: usize = 3;

struct Recorded {
    before: Harness,
    msp: String,
    channel: String,
    method: String,
    request: Vec<u8>,
}

/// Runs the scenario natively and keeps each successful call with the state it ran on.
struct Recorder {
    harness: Harness,
    calls: Vec<Recorded>,
}

impl Driver for Recorder {
    fn call_raw(&mut self, msp: &str, channel: &str, method: &str, request: &[u8]) -> Result<Vec<u8>, OrcError> {
        let before = self.harness.clone();
        let result = self.harness.call_raw(msp, channel, method, request);
        let seen = self.calls.iter().filter(|c| c.method == method).count();
        if result.is_ok() && seen < CALLS_PER_METHOD {
            self.calls.push(Recorded {
                before,
                msp: msp.to_owned(),
                channel: channel.to_owned(),
                method: method.to_owned(),
                request: request.to_vec(),
            });
        }
        result
    }

    fn events(&self) -> Vec<Event> {
        self.harness.events()
    }
}

/// One protobuf field as found on the wire: its key bytes and, for length-delimited fields,
/// the payload (other wire types are kept as raw bytes).
struct Field {
    key: Vec<u8>,
    payload: Payload,
}

enum Payload {
    Raw(Vec<u8>),
    Delimited(Vec<u8>),
}

/// The varint at `bytes[*at..]` (prost's decoder), moving `at` past it.
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut rest = bytes.get(*at..)?;
    let value = prost::encoding::decode_varint(&mut rest).ok()?;
    *at = bytes.len() - rest.len();
    Some(value)
}

/// The fields of a message, or `None` if the bytes are not one.
fn parse(bytes: &[u8]) -> Option<Vec<Field>> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let key = read_varint(bytes, &mut at)?;
        if key >> 3 == 0 {
            return None;
        }
        let key_bytes = bytes[start..at].to_vec();
        let payload = match key & 7 {
            0 => {
                let from = at;
                read_varint(bytes, &mut at)?;
                Payload::Raw(bytes[from..at].to_vec())
            }
            1 => {
                at = at.checked_add(8).filter(|end| *end <= bytes.len())?;
                Payload::Raw(bytes[at - 8..at].to_vec())
            }
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                let end = at.checked_add(len).filter(|end| *end <= bytes.len())?;
                let payload = bytes[at..end].to_vec();
                at = end;
                Payload::Delimited(payload)
            }
            5 => {
                at = at.checked_add(4).filter(|end| *end <= bytes.len())?;
                Payload::Raw(bytes[at - 4..at].to_vec())
            }
            _ => return None,
        };
        fields.push(Field { key: key_bytes, payload });
    }
    Some(fields)
}

fn encode(fields: &[Field], replace: Option<(usize, &[u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        out.extend_from_slice(&field.key);
        match (&field.payload, replace) {
            (_, Some((at, with))) if at == i => {
                prost::encoding::encode_varint(with.len() as u64, &mut out);
                out.extend_from_slice(with);
            }
            (Payload::Raw(raw), _) => out.extend_from_slice(raw),
            (Payload::Delimited(payload), _) => {
                prost::encoding::encode_varint(payload.len() as u64, &mut out);
                out.extend_from_slice(payload);
            }
        }
    }
    out
}

/// Hostile versions of one string.
fn hostile(original: &str) -> Vec<Vec<u8>> {
    let mid = original.char_indices().nth(original.chars().count() / 2).map_or(0, |(i, _)| i);
    vec![
        format!("{}\0{}", &original[..mid], &original[mid..]).into_bytes(),
        "k".repeat(1_100).into_bytes(),
        "k".repeat(64 << 10).into_bytes(),
    ]
}

/// Every mutant of `bytes`: each length-delimited field replaced by a hostile string (when it
/// is text) and, when it is itself a message, by each of its own mutants.
fn mutants(bytes: &[u8], depth: usize) -> Vec<Vec<u8>> {
    let Some(fields) = parse(bytes) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let Payload::Delimited(payload) = &field.payload else { continue };
        if let Ok(text) = std::str::from_utf8(payload) {
            for with in hostile(text) {
                out.push(encode(&fields, Some((i, &with))));
            }
        }
        if depth < 4 && !payload.is_empty() {
            for inner in mutants(payload, depth + 1) {
                out.push(encode(&fields, Some((i, &inner))));
            }
        }
    }
    out
}

fn replay(scenario: fn(&mut dyn Driver)) {
    let mut recorder = Recorder { harness: Harness::new(), calls: Vec::new() };
    scenario(&mut recorder);
    let mut tried = 0;
    let mut failures = Vec::new();
    for call in &recorder.calls {
        for request in mutants(&call.request, 0) {
            tried += 1;
            let mut harness = call.before.clone();
            let Err(err) = harness.call_raw(&call.msp, &call.channel, &call.method, &request) else { continue };
            let internal = err.kind == ErrorKind::Internal;
            if internal || err.message.len() > MAX_MESSAGE_BYTES {
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
