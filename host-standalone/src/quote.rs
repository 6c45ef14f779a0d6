//! Quoting client input in status messages and logs, cut to a bounded length: a status goes
//! into HTTP/2 trailers, and a client cannot read one over its metadata limit (8 KiB in grpc-go).

/// Bytes of an input a message quotes at most (the logic's bound too).
pub const QUOTED_INPUT_BYTES: usize = 200;

/// `"<input>"`, escaped; cut to [`QUOTED_INPUT_BYTES`] with its full length when longer.
pub fn quoted(input: &str) -> String {
    if input.len() <= QUOTED_INPUT_BYTES {
        return format!("{input:?}");
    }
    let mut cut = QUOTED_INPUT_BYTES;
    while !input.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}... ({} bytes)", &input[..cut], input.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_inputs_whole_long_ones_cut() {
        assert_eq!(quoted("a\0b"), "\"a\\0b\"");
        let long = "é".repeat(1_000);
        let q = quoted(&long);
        assert!(q.len() < QUOTED_INPUT_BYTES + 40, "{q}");
        assert!(q.ends_with("... (2000 bytes)"), "{q}");
    }
}
