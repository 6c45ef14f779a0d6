//! A seeded mutation fuzzer over `invoke(method, request bytes)`, for any [`Target`]: the
//! logic natively here, the compiled component in the runtime crate's tests and benches.
//!
//! - **Seeds**: the request of every call the scenarios make (up to 256 KiB), and an empty
//!   request for every method of [`METHODS`].
//! - **Mutations** (deterministic, from the run's seed and the case's index): byte flips,
//!   truncation, insertions and deletions; on the wire, field by field at any depth: hostile
//!   strings (NUL, invalid UTF-8, key-limit lengths, 64 KiB, page-token shapes), strings that
//!   name real assets (harvested from the scenarios' requests and responses), varint values at
//!   the edges, lying length prefixes, removed, repeated, renumbered and spliced fields; now
//!   and then a request sent to another method, or as another organization.
//! - **State**: cases run in bursts of [`BURST`] on a copy of a state some scenario reached
//!   (mostly the one right before a seed call), so lookups hit real assets and accepted writes
//!   build on each other within the burst; each burst starts again from a clean copy, which
//!   keeps the state bounded.
//! - **Oracle**: no panic, no trap, no INTERNAL (malformed protobuf answers `MalformedRequest`,
//!   its own kind), no status message past the documented bound; with a reference target,
//!   the same answer as the reference.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::time::{Duration, Instant};

use super::Harness;
use super::record::Recording;
use super::scenarios::{CHANNEL, ORG1, ORG2, OTHER_CHANNEL, UNREGISTERED};
use super::wire::{Field, Payload, encode, is_message, key, parse, varint};
use crate::api::{METHODS, find};
use crate::call::Context;
use crate::error::{ErrorKind, LogicError, MAX_MESSAGE_BYTES};

/// Cases run on one copy of a world before the next copy.
pub const BURST: u64 = 64;
/// Requests are cut to this size after mutation (a case must stay cheap).
pub const MAX_REQUEST_BYTES: usize = 256 << 10;
/// A status message may quote input, but only a bounded part of it (the suffix noting a cut
/// message included).
pub const MAX_STATUS_BYTES: usize = MAX_MESSAGE_BYTES + 64;
/// States kept per method and scenario (the scenarios repeat the same shapes).
const SNAPSHOTS_PER_METHOD: usize = 3;
/// Harvested strings kept at most, and the longest one.
const DICTIONARY_CAP: usize = 20_000;
const DICTIONARY_ITEM_BYTES: usize = 200;
/// Bytes of a failing request shown in a report.
const SHOWN_BYTES: usize = 48;

// ---------------------------------------------------------------------------------------------
// Randomness.

/// splitmix64: tiny, fast, and good enough to drive mutations and the other seeded tests'
/// workloads reproducibly (the one test generator of the workspace: `testing::Rng`).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for item `index` of stream `seed`, independent of every other item.
    pub fn for_item(seed: u64, stream: u64, index: u64) -> Rng {
        let mut mixer = Rng(seed ^ stream.rotate_left(32));
        let base = mixer.next_u64();
        Rng::new(base ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// Uniform in `0..n` as a `u64` (0 when `n` is 0), for counts and key numbers.
    pub fn below64(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

// ---------------------------------------------------------------------------------------------
// Corpus.

/// A request to mutate, with where it was sent.
pub struct Seed {
    pub method: &'static str,
    pub msp: String,
    pub channel: String,
    pub request: Vec<u8>,
    /// The world it ran on (an empty request of the method table has none).
    pub world: Option<usize>,
}

/// Seeds, the worlds they ran on and the strings they used.
pub struct Corpus {
    pub worlds: Vec<Harness>,
    pub seeds: Vec<Seed>,
    /// Per world, the seeds that ran on it.
    local: Vec<Vec<usize>>,
    /// Per method of [`METHODS`], its empty-request seed.
    empty: Vec<usize>,
    /// Per method with scenario seeds, those seeds.
    by_method: Vec<Vec<usize>>,
    /// Short strings of the scenarios' requests and responses: keys, names, tokens.
    dictionary: Vec<Vec<u8>>,
}

impl Corpus {
    /// Every scenario, recorded.
    pub fn from_scenarios() -> Corpus {
        Corpus::from_recording(Recording::all_scenarios(SNAPSHOTS_PER_METHOD))
    }

    pub fn from_recording(recording: Recording) -> Corpus {
        let mut seeds = Vec::new();
        let mut dictionary = BTreeSet::new();
        for call in &recording.calls {
            harvest(&call.request, 0, &mut dictionary);
            if let Some(response) = &call.response {
                harvest(response, 0, &mut dictionary);
            }
            // Calls to unknown methods (the scenarios check them) reach no handler; the few
            // huge requests (a 1 MiB page token) would only make every case that picks them
            // slow, and the mutations make long strings of their own.
            let Some(method) = find(&call.method) else { continue };
            if call.request.len() > MAX_REQUEST_BYTES {
                continue;
            }
            seeds.push(Seed {
                method: method.name,
                msp: call.msp.clone(),
                channel: call.channel.clone(),
                request: call.request.clone(),
                world: Some(call.world),
            });
        }
        let mut empty = Vec::new();
        for method in METHODS {
            empty.push(seeds.len());
            let (msp, channel) = (ORG1.to_owned(), CHANNEL.to_owned());
            seeds.push(Seed { method: method.name, msp, channel, request: Vec::new(), world: None });
        }
        let mut local = vec![Vec::new(); recording.worlds.len()];
        let mut by_method: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, seed) in seeds.iter().enumerate() {
            if let Some(world) = seed.world {
                local[world].push(i);
                by_method.entry(seed.method).or_default().push(i);
            }
        }
        let by_method = by_method.into_values().collect();
        Corpus {
            worlds: recording.worlds,
            seeds,
            local,
            empty,
            by_method,
            dictionary: dictionary.into_iter().collect(),
        }
    }

    /// Methods with a seed from the scenarios (not only the empty one).
    pub fn methods_called(&self) -> BTreeSet<&'static str> {
        self.seeds.iter().filter(|s| s.world.is_some()).map(|s| s.method).collect()
    }

    /// Half the time a seed that ran on the burst's world (its state fits the request), else
    /// a seed of a method drawn uniformly (the scenarios call some methods far more often).
    fn pick_seed(&self, rng: &mut Rng, world: usize) -> &Seed {
        let local = &self.local[world];
        let index = match rng.below(16) {
            0 => self.empty[rng.below(self.empty.len())],
            1..=8 if !local.is_empty() => local[rng.below(local.len())],
            _ => match rng.pick(&self.by_method) {
                Some(seeds) => seeds[rng.below(seeds.len())],
                None => rng.below(self.seeds.len()),
            },
        };
        &self.seeds[index]
    }

    fn word(&self, rng: &mut Rng) -> Vec<u8> {
        rng.pick(&self.dictionary).cloned().unwrap_or_default()
    }

    /// A field of some seed, at some depth (for splicing).
    fn donor_field(&self, rng: &mut Rng) -> Option<Field> {
        let seed = rng.pick(&self.seeds)?;
        let mut fields = parse(&seed.request)?;
        for _ in 0..4 {
            if !rng.one_in(2) {
                break;
            }
            let Some(i) = pick_nested(rng, &fields) else { break };
            let Payload::Delimited(payload) = &fields[i].payload else { break };
            fields = parse(payload)?;
        }
        let at = rng.below(fields.len());
        (at < fields.len()).then(|| fields.swap_remove(at))
    }
}

/// A field of `fields` whose payload is itself a non-empty message, if any.
fn pick_nested(rng: &mut Rng, fields: &[Field]) -> Option<usize> {
    let nested: Vec<usize> = (0..fields.len())
        .filter(|i| matches!(&fields[*i].payload, Payload::Delimited(p) if !p.is_empty() && is_message(p)))
        .collect();
    rng.pick(&nested).copied()
}

/// Collects the short UTF-8 strings of a message, embedded messages included.
fn harvest(bytes: &[u8], depth: usize, into: &mut BTreeSet<Vec<u8>>) {
    let Some(fields) = parse(bytes) else { return };
    for field in fields {
        let Payload::Delimited(payload) = field.payload else { continue };
        if !payload.is_empty()
            && payload.len() <= DICTIONARY_ITEM_BYTES
            && std::str::from_utf8(&payload).is_ok()
            && into.len() < DICTIONARY_CAP
        {
            into.insert(payload.clone());
        }
        if depth < 6 {
            harvest(&payload, depth + 1, into);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// Varint values at the edges of the types they decode into (bools, enums, u32 page sizes,
/// i32/i64 counts and timestamps, negative values sign-extended to ten bytes).
const EDGE_VARINTS: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    100,
    127,
    128,
    255,
    999,
    1_000,
    1_001,
    10_000,
    10_001,
    65_535,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
];

/// A hostile replacement for string `original`.
fn hostile_string(rng: &mut Rng, original: &[u8], corpus: &Corpus) -> Vec<u8> {
    let text = String::from_utf8_lossy(original);
    match rng.below(24) {
        0 => {
            let mid = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i);
            format!("{}\0{}", &text[..mid], &text[mid..]).into_bytes()
        }
        1 => [original, b"\0"].concat(),
        // Around the state-key limit, and well past it.
        2 => "k".repeat([1_000, 1_023, 1_024, 1_025, 1_100][rng.below(5)]).into_bytes(),
        3 if rng.one_in(4) => "k".repeat(64 << 10).into_bytes(),
        // Invalid UTF-8 (a decode error in a `string` field, not in `bytes`).
        4 if rng.one_in(2) => [&[0xff, 0xfe][..], original].concat(),
        5 if rng.one_in(2) => {
            // A lone continuation byte, an overlong NUL, a surrogate.
            let bad: &[u8] = [&[0x80][..], &[0xc0, 0x80], &[0xed, 0xa0, 0x80]][rng.below(3)];
            let at = rng.below(original.len() + 1);
            [&original[..at], bad, &original[at..]].concat()
        }
        6 => Vec::new(),
        // Multi-byte characters across the 200-byte quoting cut.
        7 => format!("a{}", "€".repeat(400)).into_bytes(),
        8 => {
            let numbers =
                ["0", "-1", "1", "18446744073709551615", "18446744073709551616", "99999999999999999999", "+1", " 1"];
            numbers[rng.below(numbers.len())].as_bytes().to_vec()
        }
        // Page-token shapes: cursors of keys and of events, empty and extreme.
        9 => {
            let word = corpus.word(rng);
            let tails: [&[u8]; 6] = [b"", &word, original, "\u{10ffff}".as_bytes(), b"1:2", b"99999999999999999999:-1"];
            [b"k:".as_slice(), tails[rng.below(tails.len())]].concat()
        }
        10 => text.to_uppercase().into_bytes(),
        11 => [original, b"/", &corpus.word(rng)].concat(),
        12 if rng.one_in(2) => (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect(),
        13 => b"\n\r\t\x7f\x1b[0m%s%n{}\\\"'".to_vec(),
        _ => corpus.word(rng),
    }
}

/// One mutation of a message's fields (the caller re-encodes them).
fn mutate_fields(rng: &mut Rng, fields: &mut Vec<Field>, corpus: &Corpus) {
    let delimited: Vec<usize> =
        (0..fields.len()).filter(|i| matches!(fields[*i].payload, Payload::Delimited(_))).collect();
    let varints: Vec<usize> = (0..fields.len()).filter(|i| fields[*i].wire_type() == 0).collect();
    let fixed: Vec<usize> = (0..fields.len()).filter(|i| matches!(fields[*i].wire_type(), 1 | 5)).collect();
    match rng.below(13) {
        0..=3 if !delimited.is_empty() => {
            let i = delimited[rng.below(delimited.len())];
            if let Payload::Delimited(payload) = &fields[i].payload {
                fields[i].payload = Payload::Delimited(hostile_string(rng, payload, corpus));
            }
        }
        4 | 11 if !varints.is_empty() => {
            let i = varints[rng.below(varints.len())];
            let value = if rng.one_in(4) {
                rng.next_u64() >> rng.below(64)
            } else {
                EDGE_VARINTS[rng.below(EDGE_VARINTS.len())]
            };
            fields[i].payload = Payload::Raw(varint(value));
        }
        // Fixed-width values: float edges (performance values) and random bits.
        5 if !fixed.is_empty() => {
            let i = fixed[rng.below(fixed.len())];
            let bytes = if fields[i].wire_type() == 5 {
                let edges = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, f32::MAX, f32::MIN_POSITIVE];
                let value =
                    if rng.one_in(3) { f32::from_bits(rng.next_u64() as u32) } else { edges[rng.below(edges.len())] };
                value.to_le_bytes().to_vec()
            } else {
                let edges = [f64::NAN, f64::INFINITY, -0.0, f64::MAX, i64::MIN as f64];
                let value = if rng.one_in(3) { f64::from_bits(rng.next_u64()) } else { edges[rng.below(edges.len())] };
                value.to_le_bytes().to_vec()
            };
            fields[i].payload = Payload::Raw(bytes);
        }
        // A length prefix that lies: a little, or hugely (the rest of the message is then read
        // as the field, or the decoder runs out of bytes).
        6 if !delimited.is_empty() && rng.one_in(2) => {
            let i = delimited[rng.below(delimited.len())];
            if let Payload::Delimited(payload) = &fields[i].payload {
                let len = payload.len() as u64;
                let lie = [len + 1, len.saturating_sub(1), len + 100, 1 << 31, 1 << 62, u64::MAX][rng.below(6)];
                fields[i].payload = Payload::Raw([varint(lie), payload.clone()].concat());
            }
        }
        7 if !fields.is_empty() => {
            fields.remove(rng.below(fields.len()));
        }
        // Repeated (or, for singular fields, last-wins) copies, up to past the 1,000-item limits.
        8 if !fields.is_empty() => {
            let field = fields[rng.below(fields.len())].clone();
            let size = field.key.len() + 16 + payload_len(&field.payload);
            let wanted = [1, 2, 16, 1_001][rng.below(4)];
            let copies = wanted.min(MAX_REQUEST_BYTES / size.max(1));
            let at = rng.below(fields.len() + 1);
            fields.splice(at..at, std::iter::repeat_n(field, copies));
        }
        // Another field number, or the same number with another wire type.
        9 if !fields.is_empty() => {
            let i = rng.below(fields.len());
            let field = &mut fields[i];
            field.key = if rng.one_in(2) {
                let number = if rng.one_in(8) { (1 << 29) - 1 } else { 1 + rng.below(20) as u64 };
                key(number, field.wire_type())
            } else {
                key(field.number(), [0, 1, 2, 5][rng.below(4)])
            };
        }
        10 if fields.len() > 1 => {
            let (a, b) = (rng.below(fields.len()), rng.below(fields.len()));
            fields.swap(a, b);
        }
        // A field from another request (another method's, often), or a new one.
        _ => {
            let field = match corpus.donor_field(rng) {
                Some(field) if !rng.one_in(4) => field,
                _ => Field { key: key(1 + rng.below(16) as u64, 0), payload: Payload::Raw(varint(rng.next_u64())) },
            };
            let at = rng.below(fields.len() + 1);
            fields.insert(at, field);
        }
    }
}

fn payload_len(payload: &Payload) -> usize {
    match payload {
        Payload::Raw(raw) => raw.len(),
        Payload::Delimited(payload) => payload.len(),
    }
}

/// A mutation of the message at some depth of `bytes`, or `None` if `bytes` is not a message.
fn mutate_message(rng: &mut Rng, bytes: &[u8], corpus: &Corpus, depth: usize) -> Option<Vec<u8>> {
    let mut fields = parse(bytes)?;
    if depth < 6
        && rng.below(3) != 0
        && let Some(i) = pick_nested(rng, &fields)
        && let Payload::Delimited(payload) = &fields[i].payload
        && let Some(inner) = mutate_message(rng, payload, corpus, depth + 1)
    {
        fields[i].payload = Payload::Delimited(inner);
        return Some(encode(&fields));
    }
    mutate_fields(rng, &mut fields, corpus);
    Some(encode(&fields))
}

/// A mutation of the raw bytes, blind to their structure.
fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>, corpus: &Corpus) {
    let len = bytes.len();
    match rng.below(7) {
        0 if len > 0 => {
            let at = rng.below(len);
            bytes[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            bytes[at] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.below(5)];
        }
        2 if len > 0 => bytes.truncate(rng.below(len)),
        3 if len > 0 => {
            let from = rng.below(len);
            let to = (from + 1 + rng.below(16)).min(len);
            bytes.drain(from..to);
        }
        4 if len > 0 => {
            let from = rng.below(len);
            let to = (from + 1 + rng.below(32)).min(len);
            let chunk = bytes[from..to].to_vec();
            let at = rng.below(len + 1);
            bytes.splice(at..at, chunk);
        }
        // This request's head on another one's tail.
        5 => {
            let other = rng.pick(&corpus.seeds).map(|s| s.request.as_slice()).unwrap_or_default();
            let tail = &other[rng.below(other.len() + 1)..];
            bytes.truncate(rng.below(len + 1));
            bytes.extend_from_slice(tail);
        }
        _ => {
            let at = rng.below(len + 1);
            let new: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next_u64() as u8).collect();
            bytes.splice(at..at, new);
        }
    }
}

/// A mutant of `seed`: one to four mutations, mostly on the wire's structure (blind byte
/// changes mostly make malformed requests); now and then none at all
/// (the seed itself, on another state or for another organization, is a case too).
pub fn mutate(rng: &mut Rng, seed: &[u8], corpus: &Corpus) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    if rng.one_in(20) {
        return bytes;
    }
    // Mostly one mutation: each further one may make the request malformed, which ends the
    // case at decoding.
    let rounds = if rng.one_in(3) { 2 + rng.below(3) } else { 1 };
    for _ in 0..rounds {
        let structured = if rng.one_in(6) { None } else { mutate_message(rng, &bytes, corpus, 0) };
        match structured {
            Some(mutant) => bytes = mutant,
            None => mutate_bytes(rng, &mut bytes, corpus),
        }
        bytes.truncate(MAX_REQUEST_BYTES);
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// Targets and outcomes.

/// What a case's call came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok(Vec<u8>),
    /// An answer of the logic (a business error, or a malformed request).
    Err(LogicError),
    /// The logic panicked (native).
    Panic(String),
    /// The logic trapped (component: panic, fuel, memory).
    Trap(String),
    /// The host side failed otherwise (a runtime error that is not a trap).
    Fault(String),
}

/// Something that runs the logic: natively, through the component.
pub trait Target {
    /// Starts over from `world`'s committed state.
    fn load(&mut self, world: &Harness);
    /// Runs one call in `ctx`, committing its writes on success.
    fn invoke(&mut self, ctx: &Context, method: &str, request: &[u8]) -> Outcome;
}

/// The logic called natively, panics caught.
#[derive(Default)]
pub struct NativeTarget {
    harness: Harness,
}

impl Target for NativeTarget {
    fn load(&mut self, world: &Harness) {
        self.harness = world.without_events();
    }

    fn invoke(&mut self, ctx: &Context, method: &str, request: &[u8]) -> Outcome {
        match catch_quietly(|| self.harness.call_in(ctx, method, request)) {
            Ok(Ok(response)) => Outcome::Ok(response),
            Ok(Err(err)) => Outcome::Err(err),
            Err(panic) => Outcome::Panic(panic),
        }
    }
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`, turning a panic into its message (with its location), without printing it: a
/// fuzz run may see thousands. Other threads' panics still print (the hook is only quiet on a
/// thread inside this call).
pub fn catch_quietly<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
    QUIET.with(|quiet| quiet.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|quiet| quiet.set(false));
    result.map_err(|_| LAST_PANIC.with(|last| last.borrow_mut().take()).unwrap_or_else(|| "panic".to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Runs and reports.

/// Which cases to run: `cases` of them for `seed`, from case `from` (rounded down to the start
/// of its burst, whose earlier cases build the state it runs on).
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub seed: u64,
    pub cases: u64,
    pub from: u64,
}

impl Config {
    pub const DEFAULT_SEED: u64 = 0x5eed_0f0c_4e57;

    /// `FUZZ_SEED`, `FUZZ_CASES` (default `default_cases`) and `FUZZ_FROM` from the
    /// environment; numbers in decimal or `0x` hex, with `_` separators allowed.
    pub fn from_env(default_cases: u64) -> Config {
        let number = |name: &str| {
            let text = std::env::var(name).ok()?.replace('_', "");
            let text = text.trim();
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => text.parse::<u64>().ok(),
            }
        };
        Config {
            seed: number("FUZZ_SEED").unwrap_or(Config::DEFAULT_SEED),
            cases: number("FUZZ_CASES").unwrap_or(default_cases),
            from: number("FUZZ_FROM").unwrap_or(0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    Panic,
    Trap,
    Fault,
    Internal,
    LongMessage,
    /// The target and the reference answered differently.
    Divergence,
}

/// The first failing case of one (failure, method), and how many there were.
#[derive(Clone, Debug)]
pub struct Example {
    pub count: u64,
    pub case: u64,
    pub msp: String,
    pub channel: String,
    pub request_len: usize,
    pub request_head: String,
    pub detail: String,
}

/// Counts of one run, and an example of each kind of failure.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub label: String,
    pub seed: u64,
    pub cases: u64,
    pub ok: u64,
    /// Error answers by kind (`MalformedRequest` included).
    pub errors: BTreeMap<String, u64>,
    /// Per method: cases, and cases answered Ok.
    pub methods: BTreeMap<&'static str, (u64, u64)>,
    pub failures: BTreeMap<(Failure, &'static str), Example>,
    pub elapsed: Duration,
}

impl Report {
    pub fn count(&self, failure: Failure) -> u64 {
        self.failures.iter().filter(|((f, _), _)| *f == failure).map(|(_, e)| e.count).sum()
    }

    pub fn is_clean(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn rate(&self) -> f64 {
        self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Methods never answered Ok during the run.
    pub fn never_ok(&self) -> Vec<&'static str> {
        self.methods.iter().filter(|(_, (_, ok))| *ok == 0).map(|(m, _)| *m).collect()
    }

    /// One line of counts.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} cases in {:.1} s ({:.0} cases/s), seed {:#x}: {} panics, {} traps, {} INTERNAL, {} runtime faults, \
             {} over-long messages, {} divergences",
            self.label,
            self.cases,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.seed,
            self.count(Failure::Panic),
            self.count(Failure::Trap),
            self.count(Failure::Internal),
            self.count(Failure::Fault),
            self.count(Failure::LongMessage),
            self.count(Failure::Divergence),
        )
    }

    /// How the cases were answered, by share.
    pub fn answers(&self) -> String {
        let pct = |n: u64| 100.0 * n as f64 / self.cases.max(1) as f64;
        let mut out = format!("ok {:.1}%", pct(self.ok));
        let mut errors: Vec<_> = self.errors.iter().collect();
        errors.sort_by(|a, b| b.1.cmp(a.1));
        for (kind, n) in errors {
            let _ = write!(out, ", {kind} {:.1}%", pct(*n));
        }
        out
    }

    fn record(&mut self, case: u64, ctx: &Context, method: &'static str, request: &[u8], outcome: &Outcome) {
        self.cases += 1;
        let per_method = self.methods.entry(method).or_default();
        per_method.0 += 1;
        let failure = match outcome {
            Outcome::Ok(_) => {
                per_method.1 += 1;
                self.ok += 1;
                None
            }
            Outcome::Err(err) => {
                *self.errors.entry(format!("{:?}", err.kind)).or_default() += 1;
                if err.kind == ErrorKind::Internal {
                    Some((Failure::Internal, err.message.clone()))
                } else if err.message.len() > MAX_STATUS_BYTES {
                    Some((Failure::LongMessage, format!("{} bytes: {}", err.message.len(), err.message)))
                } else {
                    None
                }
            }
            Outcome::Panic(message) => Some((Failure::Panic, message.clone())),
            Outcome::Trap(message) => Some((Failure::Trap, message.clone())),
            Outcome::Fault(message) => Some((Failure::Fault, message.clone())),
        };
        if let Some((failure, detail)) = failure {
            self.fail(failure, case, ctx, method, request, detail);
        }
    }

    fn fail(
        &mut self,
        failure: Failure,
        case: u64,
        ctx: &Context,
        method: &'static str,
        request: &[u8],
        detail: String,
    ) {
        let example = self.failures.entry((failure, method)).or_insert_with(|| Example {
            count: 0,
            case,
            msp: ctx.msp_id.clone(),
            channel: ctx.channel.clone(),
            request_len: request.len(),
            request_head: request.iter().take(SHOWN_BYTES).map(|b| format!("{b:02x}")).collect(),
            detail: detail.replace('\n', " ").chars().take(400).collect(),
        });
        example.count += 1;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        writeln!(f, "  answers: {}", self.answers())?;
        let never_ok = self.never_ok();
        if !never_ok.is_empty() {
            writeln!(f, "  methods never answered Ok: {}", never_ok.join(", "))?;
        }
        for ((failure, method), e) in &self.failures {
            writeln!(
                f,
                "  {failure:?} x{} in {method}: first at case {} (as {} on {}), request of {} bytes, head {}{}\n    {}",
                e.count,
                e.case,
                e.msp,
                e.channel,
                e.request_len,
                e.request_head,
                if e.request_len > SHOWN_BYTES { "..." } else { "" },
                e.detail
            )?;
        }
        if !self.failures.is_empty() {
            writeln!(
                f,
                "  replay one: FUZZ_SEED={:#x} FUZZ_FROM=<case> FUZZ_CASES=<case + 1> (reruns the case's burst)",
                self.seed
            )?;
        }
        Ok(())
    }
}

/// Runs `config`'s cases on `target`; with a `reference`, every case also runs there and both
/// must answer alike (the reference's own failures are the reference's run to report).
pub fn run(
    label: &str,
    corpus: &Corpus,
    config: Config,
    target: &mut dyn Target,
    mut reference: Option<&mut dyn Target>,
) -> Report {
    let started = Instant::now();
    let mut report = Report { label: label.to_owned(), seed: config.seed, ..Report::default() };
    let mut case = config.from - config.from % BURST;
    while case < config.cases {
        let burst = case / BURST;
        let world_index = Rng::for_item(config.seed, 1, burst).below(corpus.worlds.len());
        let world = &corpus.worlds[world_index];
        target.load(world);
        if let Some(reference) = reference.as_deref_mut() {
            reference.load(world);
        }
        // Once the two have answered differently their states may differ: stop comparing.
        let mut in_step = true;
        let end = (case + BURST).min(config.cases);
        for (step, index) in (case..end).enumerate() {
            let mut rng = Rng::for_item(config.seed, 2, index);
            let seed = corpus.pick_seed(&mut rng, world_index);
            let method = if rng.one_in(24) { METHODS[rng.below(METHODS.len())].name } else { seed.method };
            let request = mutate(&mut rng, &seed.request, corpus);
            let msp = if rng.one_in(8) { [ORG1, ORG2, UNREGISTERED][rng.below(3)] } else { &seed.msp };
            let channel = if rng.one_in(32) { [CHANNEL, OTHER_CHANNEL][rng.below(2)] } else { &seed.channel };
            let ctx = Context {
                msp_id: msp.to_owned(),
                channel: channel.to_owned(),
                tx_id: format!("fuzz-{index}"),
                tx_time_micros: world.clock_micros + (step as i64 + 1) * 1_000,
            };
            let outcome = target.invoke(&ctx, method, &request);
            report.record(index, &ctx, method, &request, &outcome);
            let Some(reference) = reference.as_deref_mut().filter(|_| in_step) else { continue };
            let expected = reference.invoke(&ctx, method, &request);
            if let Some(detail) = divergence(&outcome, &expected) {
                report.fail(Failure::Divergence, index, &ctx, method, &request, detail);
                in_step = false;
            }
        }
        case = end;
    }
    report.elapsed = started.elapsed();
    report
}

/// How `got` differs from `expected`, when both are answers of the logic.
fn divergence(got: &Outcome, expected: &Outcome) -> Option<String> {
    let answer = |o: &Outcome| matches!(o, Outcome::Ok(_) | Outcome::Err(_));
    if got == expected {
        return None;
    }
    if !answer(got) || !answer(expected) {
        // A panic, trap or fault is reported as such: the difference adds nothing.
        return None;
    }
    let shown = |o: &Outcome| match o {
        Outcome::Ok(bytes) => format!("Ok({} bytes)", bytes.len()),
        Outcome::Err(err) => format!("{:?}: {}", err.kind, err.message.chars().take(150).collect::<String>()),
        _ => String::new(),
    };
    Some(format!("got {}, reference {}", shown(got), shown(expected)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_corpus() -> Corpus {
        let mut recording = Recording::default();
        recording.add("organizations", crate::testing::scenarios::organizations, 3);
        Corpus::from_recording(recording)
    }

    #[test]
    fn mutations_are_deterministic_and_varied() {
        let corpus = tiny_corpus();
        let seed = corpus.seeds.iter().find(|s| s.request.len() > 4).expect("a non-trivial seed");
        let mutants = |run: u64| -> Vec<Vec<u8>> {
            (0..500).map(|i| mutate(&mut Rng::for_item(run, 0, i), &seed.request, &corpus)).collect()
        };
        assert_eq!(mutants(1), mutants(1), "same seed, same mutants");
        assert_ne!(mutants(1), mutants(2));
        let distinct: BTreeSet<_> = mutants(1).into_iter().collect();
        assert!(distinct.len() > 300, "only {} distinct mutants of 500", distinct.len());
        let parsable = distinct.iter().filter(|m| parse(m).is_some()).count();
        assert!(parsable > 100 && parsable < distinct.len(), "{parsable} of {} still parse", distinct.len());
    }

    #[test]
    fn every_method_has_an_empty_seed() {
        let corpus = tiny_corpus();
        let empty: BTreeSet<&str> =
            corpus.seeds.iter().filter(|s| s.world.is_none() && s.request.is_empty()).map(|s| s.method).collect();
        assert_eq!(empty, METHODS.iter().map(|m| m.name).collect());
        assert!(!corpus.dictionary.is_empty());
    }

    #[test]
    fn panics_are_caught_quietly_with_their_location() {
        let caught = catch_quietly(|| -> u32 { panic!("boom {}", 42) }).expect_err("a panic");
        assert!(caught.contains("boom 42") && caught.contains("fuzz.rs"), "{caught}");
        assert_eq!(catch_quietly(|| 7), Ok(7));
    }

    #[test]
    fn the_oracle_tells_failures_apart() {
        let ctx = Context { msp_id: ORG1.into(), channel: CHANNEL.into(), tx_id: "t".into(), tx_time_micros: 1 };
        let mut report = Report::default();
        let m = METHODS[0].name;
        report.record(0, &ctx, m, b"", &Outcome::Ok(Vec::new()));
        report.record(1, &ctx, m, b"\xff", &Outcome::Err(LogicError::malformed("bad")));
        report.record(2, &ctx, m, b"", &Outcome::Err(LogicError::not_found("task", "x")));
        assert!(report.is_clean(), "{report}");
        report.record(3, &ctx, m, b"", &Outcome::Err(LogicError::internal("oops")));
        report.record(4, &ctx, m, b"", &Outcome::Panic("p".into()));
        report.record(5, &ctx, m, b"", &Outcome::Trap("t".into()));
        report.record(
            6,
            &ctx,
            m,
            b"",
            &Outcome::Err(LogicError { kind: ErrorKind::Unknown, message: "x".repeat(5000) }),
        );
        assert_eq!(
            [Failure::Internal, Failure::Panic, Failure::Trap, Failure::LongMessage].map(|f| report.count(f)),
            [1; 4]
        );
        assert_eq!((report.cases, report.ok), (7, 1));
        let ok = Outcome::Ok(vec![1]);
        assert!(divergence(&ok, &Outcome::Ok(vec![2])).is_some());
        assert!(divergence(&ok, &ok).is_none());
        assert!(divergence(&Outcome::Trap("t".into()), &ok).is_none());
    }
}
