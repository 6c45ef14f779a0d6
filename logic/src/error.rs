//! Orchestration errors: the reference's `OE` codes and message templates
//! (docs/api-contract.md §7).

use core::fmt;

use crate::validation::shown;

/// Longest status message: gRPC clients refuse trailers over 8 KiB (grpc-go), so a message
/// quoting many inputs is cut well below that.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// Error kinds, one to one with the WIT `error-kind` enum. Hosts map them to gRPC codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    BadRequest,
    Conflict,
    Internal,
    Unimplemented,
    InvalidAsset,
    PermissionDenied,
    IncompatibleTaskStatus,
    CannotDisableModel,
    MissingTaskOutput,
    IncompatibleKind,
    CannotDisableOutput,
    TerminatedComputePlan,
    TerminatedComputeTask,
    /// A plain error without code (illegal state transition, bad page token...).
    Unknown,
    /// Request bytes that do not decode as the method's message.
    MalformedRequest,
}

impl ErrorKind {
    /// The `OE` code prefixed to messages, when the kind has one.
    pub fn code(self) -> Option<&'static str> {
        Some(match self {
            ErrorKind::NotFound => "OE0002",
            ErrorKind::BadRequest => "OE0003",
            ErrorKind::Conflict => "OE0006",
            ErrorKind::Internal => "OE0007",
            ErrorKind::Unimplemented => "OE0010",
            ErrorKind::InvalidAsset => "OE0101",
            ErrorKind::PermissionDenied => "OE0102",
            ErrorKind::IncompatibleTaskStatus => "OE0104",
            ErrorKind::CannotDisableModel => "OE0105",
            ErrorKind::MissingTaskOutput => "OE0106",
            ErrorKind::IncompatibleKind => "OE0107",
            ErrorKind::CannotDisableOutput => "OE0108",
            ErrorKind::TerminatedComputePlan => "OE0109",
            ErrorKind::TerminatedComputeTask => "OE0110",
            ErrorKind::Unknown | ErrorKind::MalformedRequest => return None,
        })
    }

    /// The coded kind a status message starts with (`OE0002: ...` → NotFound), as a client
    /// recovers it; `None` for messages without a known code.
    pub fn from_message(message: &str) -> Option<ErrorKind> {
        const CODED: [ErrorKind; 14] = [
            ErrorKind::NotFound,
            ErrorKind::BadRequest,
            ErrorKind::Conflict,
            ErrorKind::Internal,
            ErrorKind::Unimplemented,
            ErrorKind::InvalidAsset,
            ErrorKind::PermissionDenied,
            ErrorKind::IncompatibleTaskStatus,
            ErrorKind::CannotDisableModel,
            ErrorKind::MissingTaskOutput,
            ErrorKind::IncompatibleKind,
            ErrorKind::CannotDisableOutput,
            ErrorKind::TerminatedComputePlan,
            ErrorKind::TerminatedComputeTask,
        ];
        let prefix = message.get(..6)?;
        CODED.into_iter().find(|kind| kind.code() == Some(prefix))
    }
}

/// A failed call: kind plus the complete status message (code prefix included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrcError {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = OrcError> = core::result::Result<T, E>;

impl OrcError {
    /// `<CODE>: <text>` for coded kinds, the bare text otherwise.
    pub fn new(kind: ErrorKind, text: impl fmt::Display) -> Self {
        let mut message = match kind.code() {
            Some(code) => format!("{code}: {text}"),
            None => text.to_string(),
        };
        // Inputs are quoted cut already; this bounds messages that list many of them.
        if message.len() > MAX_MESSAGE_BYTES {
            let total = message.len();
            let kept = crate::validation::cut_at_char(&message, MAX_MESSAGE_BYTES).len();
            message.truncate(kept);
            message.push_str(&format!("... (message cut, {total} bytes)"));
        }
        OrcError { kind, message }
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

    /// A plain (uncoded) error: surfaces as UNKNOWN, like the reference's non-orchestration errors.
    pub fn unknown(text: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Unknown, text)
    }

    /// The reference (grpc-go) answers undecodable requests with INTERNAL and this text.
    pub fn malformed(err: impl fmt::Display) -> Self {
        Self::new(ErrorKind::MalformedRequest, format!("grpc: error unmarshalling request: {err}"))
    }
}

impl fmt::Display for OrcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OrcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_messages() {
        for kind in
            [ErrorKind::NotFound, ErrorKind::Conflict, ErrorKind::TerminatedComputeTask, ErrorKind::InvalidAsset]
        {
            assert_eq!(ErrorKind::from_message(&OrcError::new(kind, "x").message), Some(kind));
        }
        assert_eq!(ErrorKind::from_message("OE9999: nothing"), None);
        assert_eq!(ErrorKind::from_message("plain"), None);
        assert_eq!(ErrorKind::from_message(""), None);
    }
}
