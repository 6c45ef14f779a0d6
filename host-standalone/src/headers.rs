//! Request metadata (docs/api-contract.md §6.1, §6.2): `mspid`, `channel`, `reqid`, and the channel
//! configuration check, with the reference's status codes and messages.

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::channels::{AccessError, ChannelConfig};
use crate::mspid::{MspVerifier, VerifyError};

/// Header carrying the caller's MSP id.
pub const MSPID: &str = "mspid";
/// Header carrying the channel.
pub const CHANNEL: &str = "channel";
/// Optional header carrying a request id for the logs.
pub const REQID: &str = "reqid";
/// Optional header naming the chaincode of a call (distributed mode).
pub const CHAINCODE: &str = "chaincode";

/// The validated identity of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// MSP id of the caller.
    pub msp_id: String,
    /// Channel of the call.
    pub channel: String,
}

/// A refused call, before any logic runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// `mspid` absent, repeated or not text.
    #[error("OE0003: missing or invalid header 'mspid'")]
    MspId,
    /// `channel` absent, repeated or not text.
    #[error("missing or invalid header 'channel'")]
    Channel,
    /// The client certificate does not vouch for the MSP id.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The channel configuration refuses the pair.
    #[error(transparent)]
    Access(#[from] AccessError),
}

impl HeaderError {
    /// The status of a unary call: orchestration errors go through the error mapper, plain
    /// errors are UNKNOWN.
    pub fn unary_status(&self) -> Status {
        let code = match self {
            Self::MspId => Code::FailedPrecondition,
            Self::Verify(VerifyError::NoTlsInfo) => Code::Internal,
            Self::Verify(_) => Code::PermissionDenied,
            Self::Channel | Self::Access(_) => Code::Unknown,
        };
        Status::new(code, self.to_string())
    }

    /// The status of a streaming call: the reference's stream chain has no error mapper, so
    /// every refusal is UNKNOWN with the error text.
    pub fn stream_status(&self) -> Status {
        Status::unknown(self.to_string())
    }
}

/// The single text value of a header, or `None` if absent, repeated or not ASCII text.
fn single(metadata: &MetadataMap, name: &str) -> Option<String> {
    let mut values = metadata.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok().map(str::to_owned)
}

/// The `chaincode` header, when present once and not empty.
pub fn chaincode(metadata: &MetadataMap) -> Option<String> {
    single(metadata, CHAINCODE).filter(|name| !name.is_empty())
}

/// The `reqid` header, or a fresh 8-hex-digit id when it is absent or repeated.
pub fn request_id(metadata: &MetadataMap) -> String {
    single(metadata, REQID).unwrap_or_else(|| {
        let mut id = uuid::Uuid::new_v4().simple().to_string();
        id.truncate(8);
        id
    })
}

/// Checks the headers of a call in the reference's order: mspid, certificate, channel,
/// channel configuration.
pub fn check(
    metadata: &MetadataMap,
    verifier: Option<&MspVerifier>,
    peer_certs: Option<&[rustls_pki_types::CertificateDer<'static>]>,
    channels: &ChannelConfig,
) -> Result<Caller, HeaderError> {
    let msp_id = single(metadata, MSPID).ok_or(HeaderError::MspId)?;
    if let Some(verifier) = verifier {
        verifier.verify(&msp_id, peer_certs)?;
    }
    let channel = single(metadata, CHANNEL).ok_or(HeaderError::Channel)?;
    channels.check(&msp_id, &channel)?;
    Ok(Caller { msp_id, channel })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn config() -> ChannelConfig {
        ChannelConfig::from_yaml("channels:\n  mychannel: [MyOrg1MSP]\n", "t").unwrap_or_default()
    }

    fn meta(pairs: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (k, v) in pairs {
            map.append(*k, MetadataValue::from_static(v));
        }
        map
    }

    #[test]
    fn codes_and_messages() {
        let config = config();
        let status = |m: MetadataMap| match check(&m, None, None, &config) {
            Ok(_) => (Code::Ok, String::new()),
            Err(e) => {
                let s = e.unary_status();
                (s.code(), s.message().to_owned())
            }
        };
        assert_eq!(
            status(meta(&[("channel", "mychannel")])),
            (Code::FailedPrecondition, "OE0003: missing or invalid header 'mspid'".to_owned())
        );
        assert_eq!(status(meta(&[("mspid", "MyOrg1MSP"), ("mspid", "MyOrg1MSP")])).0, Code::FailedPrecondition);
        assert_eq!(
            status(meta(&[("mspid", "MyOrg1MSP")])),
            (Code::Unknown, "missing or invalid header 'channel'".to_owned())
        );
        assert_eq!(
            status(meta(&[("mspid", "X"), ("channel", "mychannel")])),
            (Code::Unknown, "organization \"X\" is unknown".to_owned())
        );
        assert_eq!(
            status(meta(&[("mspid", "MyOrg1MSP"), ("channel", "other")])),
            (Code::Unknown, "organization \"MyOrg1MSP\" has not access to channel \"other\"".to_owned())
        );
        assert_eq!(status(meta(&[("mspid", "MyOrg1MSP"), ("channel", "mychannel")])).0, Code::Ok);
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id(&meta(&[("reqid", "abc")])), "abc");
        let generated = request_id(&meta(&[("reqid", "a"), ("reqid", "b")]));
        assert_eq!(generated.len(), 8);
        assert!(generated.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
