//! One call's view of the world: its context, typed state access and event emission.

use std::collections::BTreeMap;

use orchestrator_proto::{AssetKind, Event, EventKind, event};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::{LogicError, Result};
use crate::imports::{Imports, MAX_VALUE_BYTES, ScanPage, key_fault};
use crate::validation::{cut_at_char, go_quote};

pub use orchestrator_contract::Context;

/// A call in progress.
pub struct Call<'a> {
    ctx: &'a Context,
    host: &'a mut dyn Imports,
    events_emitted: u32,
    /// Values fetched ahead by [`Call::prefetch`], served until the key is written (then read
    /// from the host again), so read-your-writes holds.
    prefetched: BTreeMap<String, Option<Vec<u8>>>,
}

impl<'a> Call<'a> {
    pub fn new(ctx: &'a Context, host: &'a mut dyn Imports) -> Self {
        Call { ctx, host, events_emitted: 0, prefetched: BTreeMap::new() }
    }

    /// Fetches `keys` in one state call for the reads that follow. Every state call is a round
    /// trip to the database (or the peer): a call that knows what it will read asks at once.
    pub fn prefetch(&mut self, keys: impl IntoIterator<Item = String>) -> Result<()> {
        let wanted: std::collections::BTreeSet<String> =
            keys.into_iter().filter(|k| !self.prefetched.contains_key(k) && key_fault(k).is_none()).collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let wanted: Vec<String> = wanted.into_iter().collect();
        let values = self.host.get_many(&wanted)?;
        self.prefetched.extend(wanted.into_iter().zip(values));
        Ok(())
    }

    /// Values of `keys`, one per key in order: prefetched ones first, the rest in one state call.
    fn get_values(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        // A key that cannot be stored is absent: the host is not asked (it would refuse it).
        let mut values: Vec<Option<Option<Vec<u8>>>> = keys
            .iter()
            .map(|k| if key_fault(k).is_some() { Some(None) } else { self.prefetched.get(k).cloned() })
            .collect();
        let missing: Vec<String> =
            keys.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(k, _)| k.clone()).collect();
        if !missing.is_empty() {
            let mut fetched = self.host.get_many(&missing)?.into_iter();
            for value in values.iter_mut().filter(|v| v.is_none()) {
                *value = Some(fetched.next().flatten());
            }
        }
        Ok(values.into_iter().map(Option::flatten).collect())
    }

    /// MSP id of the caller.
    pub fn requester(&self) -> &str {
        &self.ctx.msp_id
    }

    pub fn ctx(&self) -> &Context {
        self.ctx
    }

    /// The transaction time as a protobuf timestamp (µs precision, like the reference).
    pub fn now(&self) -> prost_types::Timestamp {
        micros_to_timestamp(self.ctx.tx_time_micros)
    }

    pub fn now_micros(&self) -> i64 {
        self.ctx.tx_time_micros
    }

    /// The stored value under `key`; `None` also for a key that no value can be stored under
    /// (input-derived keys reach reads unchecked: such an asset simply does not exist).
    pub fn get_raw(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        if key_fault(key).is_some() {
            return Ok(None);
        }
        match self.prefetched.get(key) {
            Some(value) => Ok(value.clone()),
            None => Ok(self.host.get(key)?),
        }
    }

    pub fn exists(&mut self, key: &str) -> Result<bool> {
        Ok(self.get_raw(key)?.is_some())
    }

    /// Load and decode one stored message.
    pub fn load<M: Message + Default>(&mut self, key: &str) -> Result<Option<M>> {
        match self.get_raw(key)? {
            Some(bytes) => decode_stored(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Load many stored messages in at most one state call; one result per key, in order.
    pub fn load_many<M: Message + Default>(&mut self, keys: &[String]) -> Result<Vec<Option<M>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values = self.get_values(keys)?;
        keys.iter().zip(values).map(|(key, value)| value.map(|bytes| decode_stored(key, &bytes)).transpose()).collect()
    }

    /// Presence of many keys in at most one state call.
    pub fn exist_many(&mut self, keys: &[String]) -> Result<Vec<bool>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.get_values(keys)?.into_iter().map(|v| v.is_some()).collect())
    }

    pub fn store<M: Message>(&mut self, key: &str, msg: &M) -> Result<()> {
        self.put_raw(key, msg.encode_to_vec())
    }

    pub fn put_raw(&mut self, key: &str, value: Vec<u8>) -> Result<()> {
        refuse_unstorable(key)?;
        // The fields that can grow are capped by validation; this catches what adds up.
        if value.len() > MAX_VALUE_BYTES {
            return Err(LogicError::invalid_asset(format!(
                "the asset takes {} bytes once encoded, over the {MAX_VALUE_BYTES} bytes an asset may take",
                value.len()
            )));
        }
        self.prefetched.remove(key);
        Ok(self.host.put(key, value)?)
    }

    pub fn delete(&mut self, key: &str) -> Result<()> {
        refuse_unstorable(key)?;
        self.prefetched.remove(key);
        Ok(self.host.delete(key)?)
    }

    /// Keys in `[start, end)`. A range whose keys would all share a prefix that cannot be part
    /// of a key (too long, or with NUL: a filter or parent given by the caller) is empty.
    pub fn scan(&mut self, start: &str, end: &str, limit: u32, cursor: Option<&str>) -> Result<ScanPage> {
        if key_fault(common_prefix(start, end)).is_some() {
            return Ok(ScanPage::default());
        }
        Ok(self.host.scan(start, end, limit, cursor)?)
    }

    /// Emit an event: fills the envelope (id derived from the transaction id, channel, timestamp).
    /// Assets emit through [`crate::asset::emit`].
    pub fn emit(
        &mut self,
        asset_kind: AssetKind,
        event_kind: EventKind,
        asset_key: String,
        asset: event::Asset,
        metadata: BTreeMap<String, String>,
    ) {
        let id = self.next_event_id();
        let event = Event {
            id,
            asset_key,
            asset_kind: asset_kind as i32,
            event_kind: event_kind as i32,
            channel: self.ctx.channel.clone(),
            timestamp: Some(self.now()),
            metadata,
            asset: Some(asset),
        };
        self.host.emit(event.encode_to_vec());
    }

    /// Event ids are UUID-shaped and unique, but derived from (transaction id, index) rather than random:
    /// every Fabric endorser must compute the same events.
    fn next_event_id(&mut self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.ctx.tx_id.as_bytes());
        hasher.update(b"/event/");
        hasher.update(self.events_emitted.to_be_bytes());
        self.events_emitted += 1;
        let digest = hasher.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0f) | 0x40; // version 4 layout, so strict v4 parsers accept it
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        format_uuid(&b)
    }
}

/// Every key in `[start, end)` starts with this.
fn common_prefix<'k>(start: &'k str, end: &str) -> &'k str {
    let shared = start.bytes().zip(end.bytes()).take_while(|(a, b)| a == b).count();
    cut_at_char(start, shared)
}

/// A write under a key built from input that the validation let through: the input's fault.
fn refuse_unstorable(key: &str) -> Result<()> {
    match key_fault(key) {
        Some(fault) => Err(LogicError::invalid_asset(format!("a field used as a key {fault}: {}", go_quote(key)))),
        None => Ok(()),
    }
}

fn decode_stored<M: Message + Default>(key: &str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| LogicError::internal(format!("corrupt state at {key:?}: {e}")))
}

pub fn micros_to_timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

pub fn timestamp_to_micros(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds.saturating_mul(1_000_000).saturating_add(i64::from(ts.nanos) / 1_000)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::error::ErrorKind;
    use crate::imports::MAX_KEY_BYTES;
    use crate::testing::MemImports;

    fn ctx() -> Context {
        Context { msp_id: "MyOrg1MSP".into(), channel: "mychannel".into(), tx_id: "t".into(), tx_time_micros: 1 }
    }

    #[test]
    fn unstorable_keys_are_absent_to_reads_and_invalid_to_writes() {
        let committed = BTreeMap::from([("a/b".to_owned(), vec![1])]);
        let mut host = MemImports::new(&committed);
        let ctx = ctx();
        let mut call = Call::new(&ctx, &mut host);
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        for bad in [long.as_str(), "a\0b"] {
            assert_eq!(call.get_raw(bad).expect("read"), None);
            assert_eq!(call.exist_many(&[bad.to_owned(), "a/b".to_owned()]).expect("read"), vec![false, true]);
            let (start, end) = crate::keys::prefix_range(bad);
            assert!(call.scan(&start, &end, 10, None).expect("scan").entries.is_empty());
            let err = call.put_raw(bad, vec![]).expect_err("write");
            assert_eq!(err.kind, ErrorKind::InvalidAsset, "{}", err.message);
            assert!(err.message.len() < 400, "{}", err.message);
        }
        let err = call.put_raw("a/c", vec![0; MAX_VALUE_BYTES + 1]).expect_err("too large");
        assert_eq!(err.kind, ErrorKind::InvalidAsset, "{}", err.message);
        call.put_raw("a/c", vec![0; MAX_VALUE_BYTES]).expect("the limit itself fits");
    }
}
