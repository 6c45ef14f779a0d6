//! Which logic answered: hosts add the component's sha256 to QueryVersion's answer.
//!
//! The component cannot hold the hash of its own bytes, so its QueryVersion answer leaves
//! `logic_sha256` empty and the host that ran it fills the field from [`crate::LogicInfo`]
//! ([`stamp_logic_sha256`]). The runtime's `invoke` leaves the answer as the logic gave it: it
//! is the same as the native logic's, byte for byte (the fuzz and scenario comparisons rely
//! on it); stamping is for answers that go to clients.

/// The identity of component bytes: their sha256, lowercase hex, as [`crate::LogicInfo::sha256`]
/// reports it (hosts name a file they could not load by it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::cache::sha256_hex(bytes)
}

/// The gRPC method whose answer names the logic.
pub const QUERY_VERSION: &str = "orchestrator.InfoService/QueryVersion";

/// Field number of `QueryVersionResponse.logic_sha256` (proto/proto/info.proto).
pub const LOGIC_SHA256_FIELD: u32 = 3;

/// When `method` is QueryVersion, sets `logic_sha256` to `sha256` in `response` (an encoded
/// `QueryVersionResponse`); other answers are left alone.
///
/// The field is appended: in a protobuf encoding the last occurrence of a singular field wins,
/// so this holds even if the logic set the field itself, and nothing is decoded.
pub fn stamp_logic_sha256(method: &str, response: &mut Vec<u8>, sha256: &str) {
    if method != QUERY_VERSION {
        return;
    }
    // Key: field number, wire type 2 (length-delimited).
    put_varint(response, u64::from(LOGIC_SHA256_FIELD << 3 | 2));
    put_varint(response, sha256.len() as u64);
    response.extend_from_slice(sha256.as_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_query_version_is_stamped() {
        let mut response = vec![0x0a, 0x01, b'1'];
        stamp_logic_sha256("orchestrator.InfoService/Other", &mut response, "ab");
        assert_eq!(response, [0x0a, 0x01, b'1']);
        stamp_logic_sha256(QUERY_VERSION, &mut response, "ab");
        assert_eq!(response, [0x0a, 0x01, b'1', 0x1a, 0x02, b'a', b'b']);
    }

    #[test]
    fn long_values_get_a_multi_byte_length() {
        let mut response = Vec::new();
        stamp_logic_sha256(QUERY_VERSION, &mut response, &"f".repeat(200));
        assert_eq!(&response[..3], &[0x1a, 0xc8, 0x01]);
        assert_eq!(response.len(), 3 + 200);
    }
}
