//! The error accumulator of the field rules, rendered like ozzo-validation's `Errors.Error()`:
//! separate from the rules because the asset modules also build nested errors with it.

use std::collections::BTreeMap;
use std::fmt;

/// The failing fields of one struct, rendered like ozzo's `Errors.Error()`:
/// `a: <msg>; b: (<nested>.); c: <msg>.` — fields in byte order (Go's `sort.Strings`),
/// joined by `"; "`, closed by `"."`, a nested struct (or `Each` list, keyed `"0"`, `"1"`, …)
/// printed in parentheses with its own final dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors {
    fields: BTreeMap<String, FieldError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FieldError {
    Message(String),
    Nested(FieldErrors),
}

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `msg` for `field` unless the field already failed: ozzo stops at a field's first
    /// failing rule, so callers check one field's rules in the reference's order.
    pub fn add(&mut self, field: &str, msg: impl Into<String>) {
        self.fields.entry(field.to_owned()).or_insert_with(|| FieldError::Message(msg.into()));
    }

    /// Records the errors of a nested struct or list; nothing when `inner` is empty.
    pub fn nested(&mut self, field: &str, inner: FieldErrors) {
        if !inner.is_empty() {
            self.fields.entry(field.to_owned()).or_insert(FieldError::Nested(inner));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The ozzo text, or `None` when every field passed.
    pub fn into_message(self) -> Option<String> {
        (!self.is_empty()).then(|| self.to_string())
    }
}

impl fmt::Display for FieldErrors {
    /// Empty errors render as `""`, as in ozzo.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fields.is_empty() {
            return Ok(());
        }
        for (i, (field, error)) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match error {
                FieldError::Message(msg) => write!(f, "{field}: {msg}")?,
                FieldError::Nested(inner) => write!(f, "{field}: ({inner})")?,
            }
        }
        f.write_str(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::MSG_UUID;

    #[test]
    fn keys_sort_as_strings() {
        let mut errs = FieldErrors::new();
        for i in [2, 10, 1] {
            errs.add(&i.to_string(), MSG_UUID);
        }
        errs.add("B", "x");
        errs.add("a", "y");
        assert_eq!(
            errs.to_string(),
            "1: must be a valid UUID; 10: must be a valid UUID; 2: must be a valid UUID; B: x; a: y."
        );
    }
}
