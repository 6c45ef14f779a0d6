//! The protobuf wire format seen field by field, without the message types: what request
//! mutators (the hostile-strings test, the fuzzer) need to rewrite one field of any request.

/// One protobuf field as found on the wire: its key bytes (kept as sent, even a non-minimal
/// varint) and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub key: Vec<u8>,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Varint and fixed-width values, and anything written verbatim after the key (a mutator's
    /// lying length prefix, for one).
    Raw(Vec<u8>),
    /// A length-delimited field's payload (string, bytes, message, packed values); its length
    /// prefix is written again on encoding.
    Delimited(Vec<u8>),
}

impl Field {
    /// The key as a number (`field number << 3 | wire type`).
    pub fn tag(&self) -> u64 {
        read_varint(&self.key, &mut 0).unwrap_or(0)
    }

    pub fn number(&self) -> u64 {
        self.tag() >> 3
    }

    pub fn wire_type(&self) -> u8 {
        (self.tag() & 7) as u8
    }
}

/// The key bytes of field `number` with `wire_type`.
pub fn key(number: u64, wire_type: u8) -> Vec<u8> {
    varint(number << 3 | u64::from(wire_type & 7))
}

/// `value` as a minimal varint.
pub fn varint(value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    prost::encoding::encode_varint(value, &mut out);
    out
}

/// The varint at `bytes[*at..]` (prost's decoder), moving `at` past it.
pub fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut rest = bytes.get(*at..)?;
    let value = prost::encoding::decode_varint(&mut rest).ok()?;
    *at = bytes.len() - rest.len();
    Some(value)
}

/// The fields of a message, or `None` if the bytes are not one (groups, wire types 3 and 4,
/// count as not one).
pub fn parse(bytes: &[u8]) -> Option<Vec<Field>> {
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

/// Whether `bytes` parse as a message (as [`parse`] would), without building the fields.
pub fn is_message(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        let Some(key) = read_varint(bytes, &mut at) else { return false };
        if key >> 3 == 0 {
            return false;
        }
        let end = match key & 7 {
            0 => read_varint(bytes, &mut at).map(|_| at),
            1 => at.checked_add(8),
            2 => read_varint(bytes, &mut at)
                .and_then(|len| usize::try_from(len).ok())
                .and_then(|len| at.checked_add(len)),
            5 => at.checked_add(4),
            _ => None,
        };
        match end {
            Some(end) if end <= bytes.len() => at = end,
            _ => return false,
        }
    }
    true
}

/// The fields written back, the payload of field `replace.0` (if any) swapped for `replace.1`
/// (as a length-delimited payload).
pub fn encode_replacing(fields: &[Field], replace: Option<(usize, &[u8])>) -> Vec<u8> {
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

pub fn encode(fields: &[Field]) -> Vec<u8> {
    encode_replacing(fields, None)
}

/// Hostile versions of one string: a NUL inside, longer than any state key, 64 KiB long.
pub fn hostile(original: &str) -> Vec<Vec<u8>> {
    let mid = original.char_indices().nth(original.chars().count() / 2).map_or(0, |(i, _)| i);
    vec![
        format!("{}\0{}", &original[..mid], &original[mid..]).into_bytes(),
        "k".repeat(1_100).into_bytes(),
        "k".repeat(64 << 10).into_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode_round_trip() {
        // field 1 varint 150, field 2 "hi", field 3 fixed64, field 4 fixed32
        let mut bytes = vec![0x08, 0x96, 0x01, 0x12, 2, b'h', b'i', 0x19];
        bytes.extend([1, 2, 3, 4, 5, 6, 7, 8, 0x25, 9, 9, 9, 9]);
        let fields = parse(&bytes).expect("a message");
        assert_eq!(fields.len(), 4);
        assert_eq!((fields[0].number(), fields[0].wire_type()), (1, 0));
        assert_eq!(fields[1].payload, Payload::Delimited(b"hi".to_vec()));
        assert_eq!(encode(&fields), bytes);
        assert_eq!(encode_replacing(&fields[1..2], Some((0, b"abc"))), [0x12, 3, b'a', b'b', b'c']);
        assert_eq!(key(2, 2), [0x12]);
        // Truncated, a group, field number 0.
        assert!(is_message(&bytes) && is_message(&[]));
        for bad in [&bytes[..5], &[0x0b][..], &[0x00, 0x01][..]] {
            assert!(parse(bad).is_none(), "{bad:?}");
            assert!(!is_message(bad), "{bad:?}");
        }
    }
}
