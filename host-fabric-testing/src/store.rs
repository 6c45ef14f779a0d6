//! The peer's versioned state (key → value, committed height), range scans over it, and the
//! MVCC/phantom validation of a transaction's read set against it (docs/fabric-encoding.md §5.4).

use std::collections::btree_map::Range;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use orchestrator_host_fabric::fabric::kvrwset::range_query_info::ReadsInfo;
use orchestrator_host_fabric::fabric::kvrwset::{KvRead, KvrwSet, QueryReads, RangeQueryInfo, Version};

/// A committed version: (block number, transaction number in the block).
pub type Height = (u64, u64);
/// Committed state: key → (value, version).
pub type State = BTreeMap<String, (Vec<u8>, Height)>;

/// One range scan of a simulation.
#[derive(Debug)]
pub(crate) struct RangeScan {
    pub(crate) start: String,
    pub(crate) end: String,
    /// Last key pulled from the state.
    pub(crate) cursor: Option<String>,
    pub(crate) pulled: Vec<(String, Height)>,
    pub(crate) lookahead: Option<(String, Vec<u8>)>,
    pub(crate) exhausted: bool,
}

/// A range of `state`, `None` when empty (BTreeMap::range panics on inverted bounds).
pub(crate) fn state_range<'a>(
    state: &'a State,
    lower: Bound<&str>,
    upper: Bound<&str>,
) -> Option<Range<'a, String, (Vec<u8>, Height)>> {
    let (low, low_included) = match lower {
        Bound::Included(key) => (key, true),
        Bound::Excluded(key) => (key, false),
        Bound::Unbounded => ("", true),
    };
    let empty = match upper {
        Bound::Unbounded => false,
        Bound::Included(high) => low > high || (low == high && !low_included),
        Bound::Excluded(high) => low >= high,
    };
    (!empty).then(|| state.range::<str, _>((lower, upper)))
}

/// `end = ""` means "to the end of the namespace".
pub(crate) fn end_bound(end: &str) -> Bound<&str> {
    if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) }
}

impl RangeScan {
    pub(crate) fn pull(&mut self, state: &State) -> Option<(String, Vec<u8>)> {
        let lower = match &self.cursor {
            Some(cursor) => Bound::Excluded(cursor.as_str()),
            None => Bound::Included(self.start.as_str()),
        };
        let next = state_range(state, lower, end_bound(&self.end)).and_then(|mut range| range.next());
        match next {
            Some((key, (value, height))) => {
                self.pulled.push((key.clone(), *height));
                self.cursor = Some(key.clone());
                Some((key.clone(), value.clone()))
            }
            None => {
                self.exhausted = true;
                None
            }
        }
    }

    pub(crate) fn info(&self) -> RangeQueryInfo {
        let end_key = match (&self.pulled.last(), self.exhausted) {
            (Some((last, _)), false) => last.clone(),
            _ => self.end.clone(),
        };
        RangeQueryInfo {
            start_key: self.start.clone(),
            end_key,
            itr_exhausted: self.exhausted,
            reads_info: Some(ReadsInfo::RawReads(QueryReads {
                kv_reads: self.pulled.iter().map(|(key, height)| kv_read(key, Some(*height))).collect(),
            })),
        }
    }
}

pub(crate) fn kv_read(key: &str, height: Option<Height>) -> KvRead {
    KvRead { key: key.to_owned(), version: height.map(|(block_num, tx_num)| Version { block_num, tx_num }) }
}

/// `protos.TxValidationCode` values the simulator produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidationCode {
    /// 0
    Valid = 0,
    /// 9
    DuplicateTxid = 9,
    /// 10: not endorsed (status >= 400 or chaincode ERROR).
    EndorsementPolicyFailure = 10,
    /// 11
    MvccReadConflict = 11,
    /// 12
    PhantomReadConflict = 12,
    /// 22
    BadRwset = 22,
}

/// MVCC then phantom checks of one transaction (docs/fabric-encoding.md §5.4).
pub(crate) fn validate(rwset: &KvrwSet, state: &State, written: &HashSet<String>) -> ValidationCode {
    let height = |version: &Option<Version>| version.as_ref().map(|v| (v.block_num, v.tx_num));
    for read in &rwset.reads {
        let current = state.get(&read.key).map(|(_, h)| *h);
        if written.contains(&read.key) || current != height(&read.version) {
            return ValidationCode::MvccReadConflict;
        }
    }
    for range in &rwset.range_queries_info {
        let recorded: Vec<(&str, Option<Height>)> = match &range.reads_info {
            Some(ReadsInfo::RawReads(reads)) => {
                reads.kv_reads.iter().map(|read| (read.key.as_str(), height(&read.version))).collect()
            }
            None => Vec::new(),
        };
        let upper =
            if range.itr_exhausted { end_bound(&range.end_key) } else { Bound::Included(range.end_key.as_str()) };
        let current: Vec<(&str, Option<Height>)> = state_range(state, Bound::Included(range.start_key.as_str()), upper)
            .map(|entries| entries.map(|(key, (_, h))| (key.as_str(), Some(*h))).collect())
            .unwrap_or_default();
        if current != recorded {
            return ValidationCode::PhantomReadConflict;
        }
    }
    ValidationCode::Valid
}
