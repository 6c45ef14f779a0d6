//! The syntax of the hosts' settings: Go's, because the reference orchestrator and Fabric read
//! theirs with `time.ParseDuration` and `strconv.ParseBool`, and operators reuse those values.

use std::time::Duration;

/// Parses a non-negative Go `time.ParseDuration` string: an optional `+`, then `0` or one or
/// more decimal numbers (fraction allowed), each followed by a unit among `ns`, `us` (`µs`),
/// `ms`, `s`, `m`, `h`: `500ms`, `1.5s`, `1m30s`. A bare number other than `0` is refused, as in
/// Go; so are negative durations (no setting here can be negative).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (e.g. 10s, 500ms, 1m30s)");
    let body = text.trim();
    if body.starts_with('-') {
        return Err(format!("negative duration {text:?}"));
    }
    let body = body.strip_prefix('+').unwrap_or(body);
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(invalid());
    }
    let mut rest = body;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {text:?} (e.g. 10s, 500ms, 1m30s)")),
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        // Integer arithmetic, so `500ms` is exactly 500 ms; extra fraction digits truncate, as in Go.
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(invalid());
        }
        let digits = |part: &str| if part.is_empty() { Ok(0) } else { part.parse::<u128>().map_err(|_| invalid()) };
        let mut nanos = digits(whole)?.checked_mul(nanos_per_unit).ok_or_else(invalid)?;
        let mut scale = nanos_per_unit;
        for digit in fraction.bytes() {
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        let nanos = u64::try_from(nanos).map_err(|_| invalid())?;
        total = total.checked_add(Duration::from_nanos(nanos)).ok_or_else(invalid)?;
        rest = after;
    }
    Ok(total)
}

/// Parses a boolean the way Go's `strconv.ParseBool` does.
pub fn parse_go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("invalid boolean {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_go_duration("+90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("2h1us"), Ok(Duration::from_secs(7200) + Duration::from_micros(1)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("10µs"), Ok(Duration::from_micros(10)));
        for bad in ["", "5", "5d", "-1s", "s", "1x", ".s", "1..2s", "1s2", "99999999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("true"), Ok(true));
        assert_eq!(parse_go_bool("T"), Ok(true));
        assert_eq!(parse_go_bool("0"), Ok(false));
        assert!(parse_go_bool("yes").is_err());
        assert!(parse_go_bool("").is_err());
    }
}
