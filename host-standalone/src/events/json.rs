//! The broker message body: one `orchestrator.Event` in protobuf JSON as the reference wrote it
//! (docs/api-contract.md §9.3): proto field names (snake_case), enums as strings, every field
//! present, timestamps in RFC 3339, 64-bit integers as strings.

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

/// Failure to encode an event.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The embedded descriptor set lacks `orchestrator.Event` or does not decode.
    #[error("event descriptor: {0}")]
    Descriptor(String),
    /// The stored bytes are not an Event.
    #[error("stored event does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// JSON serialization failed.
    #[error("event JSON: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Encodes stored events (protobuf bytes) as broker JSON.
#[derive(Debug, Clone)]
pub struct EventJson {
    event: MessageDescriptor,
    options: SerializeOptions,
}

impl EventJson {
    /// From the API's descriptor set.
    pub fn new(file_descriptor_set: &[u8]) -> Result<Self, JsonError> {
        let pool = DescriptorPool::decode(file_descriptor_set).map_err(|err| JsonError::Descriptor(err.to_string()))?;
        let event = pool
            .get_message_by_name("orchestrator.Event")
            .ok_or_else(|| JsonError::Descriptor("orchestrator.Event is missing".to_owned()))?;
        let options = SerializeOptions::new().use_proto_field_name(true).skip_default_fields(false);
        Ok(Self { event, options })
    }

    /// The JSON body of one stored event.
    pub fn encode(&self, payload: &[u8]) -> Result<Vec<u8>, JsonError> {
        let message = DynamicMessage::decode(self.event.clone(), payload)?;
        let mut out = Vec::with_capacity(payload.len().saturating_mul(2));
        let mut serializer = serde_json::Serializer::new(&mut out);
        message.serialize_with_options(&mut serializer, &self.options)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use orchestrator_proto::{AssetKind, Event, EventKind, Organization, event};
    use prost::Message;

    #[test]
    fn reference_shape() {
        let json = EventJson::new(orchestrator_proto::FILE_DESCRIPTOR_SET).expect("descriptor");
        let event = Event {
            id: "0b4d3a4c-1b7e-4c4e-9a53-5a0d9b8d2f10".to_owned(),
            asset_key: "MyOrg1MSP".to_owned(),
            asset_kind: AssetKind::AssetOrganization as i32,
            event_kind: EventKind::EventAssetCreated as i32,
            channel: "mychannel".to_owned(),
            timestamp: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 123_456_000 }),
            metadata: Default::default(),
            asset: Some(event::Asset::Organization(Organization {
                id: "MyOrg1MSP".to_owned(),
                address: String::new(),
                creation_date: None,
            })),
        };
        let body = json.encode(&event.encode_to_vec()).expect("encode");
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value["asset_key"], "MyOrg1MSP");
        assert_eq!(value["asset_kind"], "ASSET_ORGANIZATION");
        assert_eq!(value["event_kind"], "EVENT_ASSET_CREATED");
        assert_eq!(value["channel"], "mychannel");
        assert_eq!(value["timestamp"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(value["metadata"], serde_json::json!({}));
        // Unpopulated scalars are present, under their proto names.
        assert_eq!(value["organization"]["address"], "");
        assert!(value.get("assetKey").is_none());
        assert!(json.encode(&[0xff, 0xff]).is_err());
    }
}
