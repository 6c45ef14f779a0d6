//! Error kinds and the business error (docs/api-contract.md §7).
//!
//! One table says, for every kind, its WIT name, its `OE` code, the gRPC code a client sees and
//! the status of a failed Fabric chaincode response; everything else (the enum, the lookups,
//! the conversions from the WIT bindings) is generated from it. A new kind is one row here and
//! one case in the WIT `error-kind` enum (a test checks that the two agree).

use core::fmt;

/// Longest status message: gRPC clients refuse trailers over 8 KiB (grpc-go), so a message
/// quoting many inputs is cut well below that.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// How the reference (grpc-go) begins the message of a request it cannot unmarshal; that kind
/// has no `OE` code, so clients recognize it by this text.
pub const MALFORMED_REQUEST_PREFIX: &str = "grpc: error unmarshalling request";

/// The gRPC status codes the kinds map to, with their wire numbers (as `tonic::Code` has them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum GrpcCode {
    Unknown = 2,
    InvalidArgument = 3,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    FailedPrecondition = 9,
    Unimplemented = 12,
    Internal = 13,
}

impl GrpcCode {
    /// The code's number on the wire (`grpc-status`).
    pub const fn as_i32(self) -> i32 {
        self as i32
    }
}

macro_rules! error_kinds {
    ($d:tt $( $(#[$doc:meta])* $kind:ident => $wit:literal, $code:expr, $grpc:ident, $fabric:literal; )+) => {
        /// Error kinds, in the order of the WIT `error-kind` enum.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $( $(#[$doc])* $kind, )+
        }

        impl ErrorKind {
            /// Every kind, in WIT order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind),+];

            /// The `OE` code prefixed to messages, when the kind has one.
            pub const fn code(self) -> Option<&'static str> {
                match self { $(ErrorKind::$kind => $code,)+ }
            }

            /// The gRPC status code of a call failing with this kind.
            pub const fn grpc_code(self) -> GrpcCode {
                match self { $(ErrorKind::$kind => GrpcCode::$grpc,)+ }
            }

            /// The `Response.status` of a chaincode call failing with this kind: HTTP-like,
            /// all >= 400, so a peer never endorses a failed call.
            pub const fn fabric_status(self) -> i32 {
                match self { $(ErrorKind::$kind => $fabric,)+ }
            }

            /// The case's name in the WIT `error-kind` enum.
            pub const fn wit_name(self) -> &'static str {
                match self { $(ErrorKind::$kind => $wit,)+ }
            }
        }

        /// Conversions between the contract's types and the bindings generated from the WIT
        /// world: `wit_conversions!(types: path::to::types, state: path::to::state)`, where the
        /// paths name the generated modules of the `types` and `state` interfaces. Both
        /// directions of every type, for the component (wit-bindgen) and the runtime
        /// (wasmtime's bindgen) alike; a WIT case the table lacks fails to compile here.
        #[macro_export]
        macro_rules! wit_conversions {
            (types: $d($d types:ident)::+, state: $d($d state:ident)::+) => {
                impl From<$d($d types)::+::ErrorKind> for $d crate::ErrorKind {
                    fn from(kind: $d($d types)::+::ErrorKind) -> Self {
                        match kind { $( $d($d types)::+::ErrorKind::$kind => $d crate::ErrorKind::$kind, )+ }
                    }
                }

                impl From<$d crate::ErrorKind> for $d($d types)::+::ErrorKind {
                    fn from(kind: $d crate::ErrorKind) -> Self {
                        match kind { $( $d crate::ErrorKind::$kind => $d($d types)::+::ErrorKind::$kind, )+ }
                    }
                }

                impl From<$d($d types)::+::Error> for $d crate::LogicError {
                    fn from(error: $d($d types)::+::Error) -> Self {
                        $d crate::LogicError { kind: error.kind.into(), message: error.message }
                    }
                }

                impl From<$d crate::LogicError> for $d($d types)::+::Error {
                    fn from(error: $d crate::LogicError) -> Self {
                        $d($d types)::+::Error { kind: error.kind.into(), message: error.message }
                    }
                }

                impl From<$d($d types)::+::Context> for $d crate::Context {
                    fn from(ctx: $d($d types)::+::Context) -> Self {
                        $d crate::Context {
                            msp_id: ctx.msp_id,
                            channel: ctx.channel,
                            tx_id: ctx.tx_id,
                            tx_time_micros: ctx.tx_time_micros,
                        }
                    }
                }

                impl From<&$d crate::Context> for $d($d types)::+::Context {
                    fn from(ctx: &$d crate::Context) -> Self {
                        $d($d types)::+::Context {
                            msp_id: ctx.msp_id.clone(),
                            channel: ctx.channel.clone(),
                            tx_id: ctx.tx_id.clone(),
                            tx_time_micros: ctx.tx_time_micros,
                        }
                    }
                }

                impl From<$d($d state)::+::StateError> for $d crate::StateError {
                    fn from(error: $d($d state)::+::StateError) -> Self {
                        match error {
                            $d($d state)::+::StateError::InvalidKey(key) => $d crate::StateError::InvalidKey(key),
                            $d($d state)::+::StateError::ValueTooLarge(size) => $d crate::StateError::ValueTooLarge(size),
                            $d($d state)::+::StateError::Backend(message) => $d crate::StateError::Backend(message),
                        }
                    }
                }

                impl From<$d crate::StateError> for $d($d state)::+::StateError {
                    fn from(error: $d crate::StateError) -> Self {
                        match error {
                            $d crate::StateError::InvalidKey(key) => $d($d state)::+::StateError::InvalidKey(key),
                            $d crate::StateError::ValueTooLarge(size) => $d($d state)::+::StateError::ValueTooLarge(size),
                            $d crate::StateError::Backend(message) => $d($d state)::+::StateError::Backend(message),
                        }
                    }
                }

                impl From<$d($d state)::+::ScanPage> for $d crate::ScanPage {
                    fn from(page: $d($d state)::+::ScanPage) -> Self {
                        $d crate::ScanPage {
                            entries: page.entries.into_iter().map(|entry| (entry.key, entry.value)).collect(),
                            next_cursor: page.next_cursor,
                        }
                    }
                }

                impl From<$d crate::ScanPage> for $d($d state)::+::ScanPage {
                    fn from(page: $d crate::ScanPage) -> Self {
                        $d($d state)::+::ScanPage {
                            entries: page
                                .entries
                                .into_iter()
                                .map(|(key, value)| $d($d state)::+::Entry { key, value })
                                .collect(),
                            next_cursor: page.next_cursor,
                        }
                    }
                }
            };
        }
    };
}

error_kinds! { $
    /// The asset does not exist.
    NotFound => "not-found", Some("OE0002"), NotFound, 404;
    /// The request cannot apply to the current state.
    BadRequest => "bad-request", Some("OE0003"), FailedPrecondition, 412;
    /// The asset already exists.
    Conflict => "conflict", Some("OE0006"), AlreadyExists, 409;
    /// Something that should not happen (a state error, a stored value that does not decode).
    Internal => "internal", Some("OE0007"), Internal, 500;
    /// The method exists in the API but is not implemented.
    Unimplemented => "unimplemented", Some("OE0010"), Unimplemented, 501;
    /// The request's asset is not valid (a field error).
    InvalidAsset => "invalid-asset", Some("OE0101"), InvalidArgument, 400;
    /// The caller may not do this.
    PermissionDenied => "permission-denied", Some("OE0102"), PermissionDenied, 403;
    IncompatibleTaskStatus => "incompatible-task-status", Some("OE0104"), InvalidArgument, 400;
    CannotDisableModel => "cannot-disable-model", Some("OE0105"), InvalidArgument, 400;
    MissingTaskOutput => "missing-task-output", Some("OE0106"), InvalidArgument, 400;
    IncompatibleKind => "incompatible-kind", Some("OE0107"), InvalidArgument, 400;
    /// UNKNOWN, as the reference answers it.
    CannotDisableOutput => "cannot-disable-output", Some("OE0108"), Unknown, 500;
    /// UNKNOWN, as the reference answers it.
    TerminatedComputePlan => "terminated-compute-plan", Some("OE0109"), Unknown, 500;
    /// UNKNOWN, as the reference answers it.
    TerminatedComputeTask => "terminated-compute-task", Some("OE0110"), Unknown, 500;
    /// A plain error without code (illegal state transition, bad page token, ...).
    Unknown => "unknown", None, Unknown, 500;
    /// Request bytes that do not decode as the method's message: INTERNAL, as grpc-go answers
    /// a message it cannot unmarshal.
    MalformedRequest => "malformed-request", None, Internal, 500;
}

impl ErrorKind {
    /// The kind a status message names, as a client recovers it: its `OE` prefix
    /// (`OE0002: ...` → NotFound), or the text of an undecodable request; `None` otherwise.
    pub fn from_message(message: &str) -> Option<ErrorKind> {
        if message.starts_with(MALFORMED_REQUEST_PREFIX) {
            return Some(ErrorKind::MalformedRequest);
        }
        let prefix = message.get(..6)?;
        ErrorKind::ALL.iter().copied().find(|kind| kind.code() == Some(prefix))
    }

    /// The kind of a failed gRPC call: what its message names, else the uncoded kind of its
    /// code, else the first kind of that code.
    pub fn from_grpc(code: i32, message: &str) -> ErrorKind {
        Self::recover(message, |kind| kind.grpc_code().as_i32() == code)
    }

    /// The kind of a failed chaincode response, as a Gateway client recovers it.
    pub fn from_fabric(status: i32, message: &str) -> ErrorKind {
        Self::recover(message, |kind| kind.fabric_status() == status)
    }

    fn recover(message: &str, same_code: impl Fn(ErrorKind) -> bool) -> ErrorKind {
        if let Some(kind) = Self::from_message(message) {
            return kind;
        }
        let mut candidates = ErrorKind::ALL.iter().copied().filter(|kind| same_code(*kind));
        let uncoded = candidates.clone().find(|kind| kind.code().is_none());
        uncoded.or_else(|| candidates.next()).unwrap_or(ErrorKind::Unknown)
    }
}

/// A failed call: kind plus the complete status message (code prefix included), e.g.
/// `OE0002: datamanager with key "..." not found`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicError {
    pub kind: ErrorKind,
    pub message: String,
}

/// How much of an input string a message quotes: messages go into gRPC trailers and log lines,
/// and a client cannot read a status whose metadata is over its limit (8 KiB in grpc-go).
pub const QUOTED_INPUT_BYTES: usize = 200;

/// `s` as a message shows it unquoted: whole when short, else its first
/// [`QUOTED_INPUT_BYTES`] and its length.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= QUOTED_INPUT_BYTES {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(format!("{}... ({} bytes)", cut_at_char(s, QUOTED_INPUT_BYTES), s.len()))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn cut_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

impl LogicError {
    /// `<CODE>: <text>` for coded kinds, the bare text otherwise, cut at
    /// [`MAX_MESSAGE_BYTES`].
    pub fn new(kind: ErrorKind, text: impl fmt::Display) -> Self {
        let mut message = match kind.code() {
            Some(code) => format!("{code}: {text}"),
            None => text.to_string(),
        };
        if message.len() > MAX_MESSAGE_BYTES {
            let total = message.len();
            let kept = cut_at_char(&message, MAX_MESSAGE_BYTES).len();
            message.truncate(kept);
            message.push_str(&format!("... (message cut, {total} bytes)"));
        }
        LogicError { kind, message }
    }

    /// `OE0002: <asset> with key "<key>" not found`
    pub fn not_found(asset: &str, key: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("{asset} with key \"{}\" not found", shown(key)))
    }

    /// `OE0006: <asset> with key "<key>" already exists`
    pub fn already_exists(asset: &str, key: &str) -> Self {
        Self::new(ErrorKind::Conflict, format!("{asset} with key \"{}\" already exists", shown(key)))
    }

    /// `OE0101: <asset> is not valid: <field errors>`
    pub fn invalid(asset: &str, details: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidAsset, format!("{asset} is not valid: {details}"))
    }

    pub fn invalid_asset(text: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidAsset, text)
    }

    pub fn bad_request(text: impl fmt::Display) -> Self {
        Self::new(ErrorKind::BadRequest, text)
    }

    pub fn permission_denied(text: impl fmt::Display) -> Self {
        Self::new(ErrorKind::PermissionDenied, text)
    }

    pub fn unimplemented(text: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Unimplemented, text)
    }

    pub fn internal(text: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, text)
    }

    /// A plain (uncoded) error: surfaces as UNKNOWN, like the reference's non-orchestration
    /// errors.
    pub fn unknown(text: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Unknown, text)
    }

    /// The reference (grpc-go) answers undecodable requests with INTERNAL and this text.
    pub fn malformed(err: impl fmt::Display) -> Self {
        Self::new(ErrorKind::MalformedRequest, format!("{MALFORMED_REQUEST_PREFIX}: {err}"))
    }
}

impl fmt::Display for LogicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LogicError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coded_kinds_round_trip_through_messages() {
        for &kind in ErrorKind::ALL {
            let message = LogicError::new(kind, "x").message;
            match kind.code() {
                Some(_) => assert_eq!(ErrorKind::from_message(&message), Some(kind)),
                None => assert_eq!(ErrorKind::from_message(&message), None, "{kind:?}"),
            }
        }
        assert_eq!(ErrorKind::from_message(&LogicError::malformed("eof").message), Some(ErrorKind::MalformedRequest));
        assert_eq!(ErrorKind::from_message("OE9999: nothing"), None);
        assert_eq!(ErrorKind::from_message(""), None);
    }

    #[test]
    fn every_kind_is_recovered_from_what_a_client_sees() {
        for &kind in ErrorKind::ALL {
            let error = match kind {
                ErrorKind::MalformedRequest => LogicError::malformed("eof"),
                _ => LogicError::new(kind, "x"),
            };
            assert_eq!(ErrorKind::from_grpc(kind.grpc_code().as_i32(), &error.message), kind);
            assert_eq!(ErrorKind::from_fabric(kind.fabric_status(), &error.message), kind);
        }
        // Uncoded messages: the class of the code.
        assert_eq!(ErrorKind::from_grpc(GrpcCode::Internal.as_i32(), "boom"), ErrorKind::MalformedRequest);
        assert_eq!(ErrorKind::from_grpc(GrpcCode::Unimplemented.as_i32(), "unknown method"), ErrorKind::Unimplemented);
        assert_eq!(ErrorKind::from_fabric(501, "unknown method"), ErrorKind::Unimplemented);
        assert_eq!(ErrorKind::from_fabric(500, "boom"), ErrorKind::Unknown);
        assert_eq!(ErrorKind::from_fabric(999, "boom"), ErrorKind::Unknown);
    }

    #[test]
    fn fabric_statuses_never_endorse() {
        assert!(ErrorKind::ALL.iter().all(|kind| kind.fabric_status() >= 400));
    }

    #[test]
    fn long_messages_are_cut_on_a_character() {
        let error = LogicError::new(ErrorKind::InvalidAsset, "é".repeat(MAX_MESSAGE_BYTES));
        assert!(error.message.starts_with("OE0101: é"));
        assert!(error.message.len() < MAX_MESSAGE_BYTES + 64, "{}", error.message.len());
        assert!(error.message.ends_with(&format!("(message cut, {} bytes)", 8 + 2 * MAX_MESSAGE_BYTES)));
    }
}
