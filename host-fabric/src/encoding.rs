//! How the orchestrator's calls are laid out on Fabric (documented in README.md).

use prost::Message;

use crate::fabric::orchestrator_fabric::ChaincodeUpdates;

/// Name of the one chaincode event a transaction carries (kept from the Go chaincode).
pub const EVENT_NAME: &str = "chaincode-updates";

/// Prefix marking an escaped stored value (see [`encode_value`]).
const ESCAPE: u8 = 0x00;

/// Fabric records a PUT_STATE with an empty value as a delete, while the logic stores empty
/// values (index entries). Values that are empty or start with 0x00 are stored with a 0x00
/// prefix; others are stored as is (a protobuf message never starts with 0x00: field 0 does
/// not exist), so the mapping is bijective and never empty.
pub fn encode_value(value: &[u8]) -> Vec<u8> {
    if value.first().is_none_or(|first| *first == ESCAPE) {
        let mut stored = Vec::with_capacity(value.len() + 1);
        stored.push(ESCAPE);
        stored.extend_from_slice(value);
        stored
    } else {
        value.to_vec()
    }
}

/// Inverse of [`encode_value`]; an empty stored value means "absent".
pub fn decode_value(mut stored: Vec<u8>) -> Option<Vec<u8>> {
    match stored.first() {
        None => None,
        Some(&ESCAPE) => {
            stored.remove(0);
            Some(stored)
        }
        Some(_) => Some(stored),
    }
}

// A business error's `Response.status` is its kind's `fabric_status()` (orchestrator-contract),
// and a Gateway client recovers the kind with `ErrorKind::from_fabric`.

/// Status of a successful call.
pub const STATUS_OK: i32 = 200;
/// Status of a method the component does not export.
pub const STATUS_UNKNOWN_METHOD: i32 = 501;
/// Status of a trap (panic, fuel, memory) of the logic.
pub const STATUS_INTERNAL: i32 = 500;

/// The chaincode event payload: every event of the call, in emission order.
pub fn events_payload(events: &[Vec<u8>]) -> Vec<u8> {
    ChaincodeUpdates { events: events.to_vec() }.encode_to_vec()
}

/// Inverse of [`events_payload`]: the encoded `orchestrator.Event`s.
pub fn decode_events_payload(payload: &[u8]) -> Result<Vec<Vec<u8>>, prost::DecodeError> {
    Ok(ChaincodeUpdates::decode(payload)?.events)
}

/// The chaincode arguments of a call: `[method, request]`.
pub fn call_args(method: &str, request: &[u8]) -> Vec<Vec<u8>> {
    vec![method.as_bytes().to_vec(), request.to_vec()]
}

/// Malformed chaincode arguments.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    /// No argument at all.
    #[error("no method name in the chaincode arguments")]
    NoMethod,
    /// The method name is not UTF-8.
    #[error("the method name is not UTF-8")]
    MethodNotUtf8,
    /// More than `[method, request]`.
    #[error("expected [method, request] arguments, got {0}")]
    TooMany(usize),
}

/// Splits `[method, request]` (a missing request is an empty message).
pub fn parse_args(args: &[Vec<u8>]) -> Result<(&str, &[u8]), ArgsError> {
    let method = args.first().ok_or(ArgsError::NoMethod)?;
    let method = std::str::from_utf8(method).map_err(|_| ArgsError::MethodNotUtf8)?;
    if args.len() > 2 {
        return Err(ArgsError::TooMany(args.len()));
    }
    Ok((method, args.get(1).map(Vec::as_slice).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_are_never_empty() {
        for value in [&b""[..], b"\x00", b"\x00\x01", b"\x0a\x03abc", b"x"] {
            let stored = encode_value(value);
            assert!(!stored.is_empty());
            assert_eq!(decode_value(stored), Some(value.to_vec()));
        }
        assert_eq!(encode_value(b"\x0a\x01a"), b"\x0a\x01a".to_vec());
        assert_eq!(decode_value(Vec::new()), None);
    }

    #[test]
    fn args() {
        let args = call_args("a.B/C", b"\x01");
        assert_eq!(parse_args(&args), Ok(("a.B/C", &b"\x01"[..])));
        assert_eq!(parse_args(&[b"m".to_vec()]), Ok(("m", &b""[..])));
        assert_eq!(parse_args(&[]), Err(ArgsError::NoMethod));
        assert_eq!(parse_args(&[vec![0xff]]), Err(ArgsError::MethodNotUtf8));
        assert_eq!(parse_args(&[vec![], vec![], vec![]]), Err(ArgsError::TooMany(3)));
    }

    #[test]
    fn events_round_trip() {
        let events = vec![b"\x0a\x01a".to_vec(), b"\x0a\x01b".to_vec()];
        assert_eq!(decode_events_payload(&events_payload(&events)).ok(), Some(events));
    }
}
