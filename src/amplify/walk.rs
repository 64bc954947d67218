//! Walk grouping (DESIGN §4): turn a stream of [`QueryEvent`]s into [`Lookup`]s.
//!
//! Per (client, qtype) a query continues an open walk when it is a *later candidate of the same
//! base*: a search domain further down the shape than the last one the walk sent, or the base
//! itself as the absolute name (or the same candidate again: a retry). Otherwise it starts a
//! walk. A walk ends on a positive answer, on the answer of the absolute name sent after search
//! candidates, or when it has been idle for `tracker.idle` of *event time* (so a capture replayed
//! offline gives the same lookups as the live proxy).
//!
//! Decisions worth knowing:
//! - Answers are not needed. Captures without responses and dnsperf files still group: the
//!   candidate sequence decides membership, and the absolute name after search candidates (the
//!   last thing a stub sends for a short name) closes the walk; otherwise the idle window does.
//! - NXDOMAIN, NODATA, SERVFAIL and REFUSED on a search candidate do not end a walk: glibc goes
//!   on after all of them while musl stops on anything but NXDOMAIN. A stub that stopped simply
//!   sends nothing more, and the idle window closes the walk with the outcome of its last answer.
//! - An absolute name sent *first* (`d >= ndots`, or a name under no search suffix) that fails
//!   keeps the walk open: the stub may now try the search list.
//! - wasted = queries for candidates other than the last one of the walk (the one that ended
//!   it, or the last one tried when nothing answered). Retries of the last candidate are
//!   therefore not wasted; retries of earlier candidates are.
//! - A retry is the same candidate again after no answer, SERVFAIL or REFUSED. After NXDOMAIN
//!   or NODATA the same candidate again is a new lookup, and it closes the earlier walk of
//!   the same base (the stub evidently finished it). Concurrent lookups of the same name from
//!   one client (two threads of a pod) cannot be told apart by address and type; their
//!   queries are all counted, but how they split into lookups is a guess.
//! - Ambiguous readings (`web.prod.svc.cluster.local` = `web` in namespace `prod`, or
//!   `web.prod` under `svc.cluster.local`, ...): a reading that continues an open walk wins; a
//!   client's namespace, once confirmed, rules out namespace readings for other namespaces; else
//!   the longest suffix (what a stub sends first).
//! - A client's namespace is *confirmed* when a walk that began with a namespace reading is
//!   continued by another candidate of the same base (only the pod's own search list does that);
//!   a walk that begins with a namespace reading only *suggests* it (an FQDN query with a
//!   trailing dot for another namespace looks the same), which is used for reporting only.
//!
//! Cost: a name's bases and readings come from a memo of the names seen last (one hash, a few
//! comparisons; decomposed on a miss), then a hash lookup per base of (client, qtype, base) and
//! a walk over that key's open walks (usually none, one or two). Open walks live in a slab
//! threaded on an LRU list, so idle expiry and eviction pop from its head in O(1).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hashbrown::{HashMap, HashTable};

use super::at_once::AtOnceTable;
pub use super::at_once::{Due, Repeats};
use crate::budget::{MemoryBudget, Part};
use crate::config::TrackerConfig;
use crate::event::{AnswerSource, QueryEvent, Timestamp};
use crate::search::name::is_rfc1123_label;
use crate::search::{SearchShape, SuffixKind};

/// Which suffix a query carried, as a slot of the per-suffix counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SuffixSlot {
    Namespace = 0,
    Svc = 1,
    Cluster = 2,
    Node = 3,
    Other = 4,
    /// The base itself, sent as an absolute name.
    Absolute = 5,
}

impl SuffixSlot {
    pub const ALL: [SuffixSlot; 6] = [
        SuffixSlot::Namespace,
        SuffixSlot::Svc,
        SuffixSlot::Cluster,
        SuffixSlot::Node,
        SuffixSlot::Other,
        SuffixSlot::Absolute,
    ];
    /// The label used in metrics and JSON (`ndots_wasted_queries_total{suffix}`, `by_suffix`).
    pub fn as_str(self) -> &'static str {
        match self {
            SuffixSlot::Namespace => "namespace",
            SuffixSlot::Svc => "svc",
            SuffixSlot::Cluster => "cluster",
            SuffixSlot::Node => "node",
            SuffixSlot::Other => "other",
            SuffixSlot::Absolute => "absolute",
        }
    }
    pub fn from_str_label(s: &str) -> Option<SuffixSlot> {
        SuffixSlot::ALL.into_iter().find(|k| k.as_str() == s)
    }
    fn from_kind(k: SuffixKind) -> SuffixSlot {
        match k {
            SuffixKind::Namespace => SuffixSlot::Namespace,
            SuffixKind::Svc => SuffixSlot::Svc,
            SuffixKind::Cluster => SuffixSlot::Cluster,
            SuffixKind::Node => SuffixSlot::Node,
            SuffixKind::Other => SuffixSlot::Other,
        }
    }
}

/// How a lookup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// A positive answer (NOERROR with records, or NOERROR with an unknown record count).
    Resolved,
    NxDomain,
    /// NOERROR without records of the asked type.
    NoData,
    ServFail,
    Refused,
    /// Any other response code.
    Error,
    /// The last query had no answer while earlier ones did.
    Timeout,
    /// No query of the walk had an answer (captures without responses, dnsperf files).
    Unanswered,
    /// Evicted from the open-walk table before it ended (`tracker.max_open_walks`).
    Evicted,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Resolved,
        Outcome::NxDomain,
        Outcome::NoData,
        Outcome::ServFail,
        Outcome::Refused,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Unanswered,
        Outcome::Evicted,
    ];
    /// The label used in `ndots_lookups_total{outcome}` and the report's `outcomes`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Resolved => "resolved",
            Outcome::NxDomain => "nxdomain",
            Outcome::NoData => "nodata",
            Outcome::ServFail => "servfail",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Unanswered => "unanswered",
            Outcome::Evicted => "evicted",
        }
    }

    /// What a search walk whose last answer said `last` tells the application: a last
    /// NXDOMAIN gives way to NODATA if a name tried before exists without records, else to
    /// SERVFAIL if one could not be answered (docs/report.md, "The report"). The tracker's
    /// outcomes and replay's ends (`replay::end_of`) both follow this one rule.
    pub fn of_walk(last: Outcome, nodata_before: bool, servfail_before: bool) -> Outcome {
        match last {
            Outcome::NxDomain if nodata_before => Outcome::NoData,
            Outcome::NxDomain if servfail_before => Outcome::ServFail,
            o => o,
        }
    }
}

/// One lookup: what the application asked for once, per query type (DESIGN §1).
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    pub client: IpAddr,
    /// From the `<ns>.svc.<domain>` suffix the client used, in this walk or an earlier one.
    /// Lowercase; one shared copy per namespace (interned by the tracker).
    pub namespace: Option<Arc<str>>,
    /// The name the application meant, lowercase, with a trailing dot.
    pub base: BaseName,
    pub qtype: u16,
    pub queries: u32,
    pub wasted: u32,
    pub retries: u32,
    pub outcome: Outcome,
    /// What the last answer alone says (`outcome` can name an earlier candidate's NODATA or
    /// SERVFAIL): where a stub that stops on NODATA stopped.
    pub last_answer: Outcome,
    /// Time of the first query.
    pub start: Timestamp,
    /// Time of the last query or answer of the walk.
    pub end: Timestamp,
    /// First query to final answer; `None` when no answer was seen.
    pub duration: Option<Duration>,
    /// Queries by the suffix they carried, indexed by [`SuffixSlot`].
    pub suffix_queries: [u32; 6],
    /// Wasted queries by the suffix they carried.
    pub suffix_wasted: [u32; 6],
    /// The suffix of the candidate that answered positively.
    pub resolved_by: Option<SuffixSlot>,
    /// Queries that reached an upstream server (live: answered by upstream; offline: every
    /// captured query, since a capture is taken at a server) and how many of them were wasted.
    pub upstream_queries: u32,
    pub upstream_wasted: u32,
    /// Queries answered by the proxy's shortcut (`AnswerSource::Shortcut`).
    pub shortcut_answers: u32,
    /// Queries of the walk answered NXDOMAIN.
    pub nxdomain: u32,
    /// The search-shape index of the last candidate tried ([`crate::search::SearchShape`]),
    /// `None` when it was the absolute name: with `namespace` and `base` it gives the name the
    /// lookup ended at (replay compares it across settings).
    pub last_search_index: Option<u8>,
}

impl Lookup {
    /// Did it send a search-list candidate (a query under any suffix but the absolute name)?
    /// Only such a lookup can change with ndots: one that sent only the name as written (an
    /// FQDN, or a name with ndots or more dots answered as written first) costs the same at
    /// any lower ndots.
    pub fn searched(&self) -> bool {
        self.suffix_queries[..SuffixSlot::Absolute as usize]
            .iter()
            .any(|&q| q > 0)
    }

    /// This lookup made again by a query at `start` answered after `duration_us` (a cached
    /// answer asked again: `at_once`).
    pub fn repeated(&self, start: Timestamp, duration_us: u64) -> Lookup {
        let mut l = self.clone();
        l.start = start;
        l.duration = Some(Duration::from_micros(duration_us));
        l.end = Timestamp(start.0.saturating_add(duration_us));
        l
    }
}

const NIL: u32 = u32::MAX;
/// Bases one name is looked up under: itself and one per search entry it ends with.
const MAX_BASES: usize = 16;

/// The bytes an open walk holds, for the memory budget: its slot, its base, a namespace
/// string (at most a 63-byte label, usually shorter), its entry in the key map. Allocator
/// rounding included roughly.
fn walk_bytes(base_len: usize) -> usize {
    std::mem::size_of::<Slot>()
        + base_len.next_multiple_of(16)
        + 32
        + std::mem::size_of::<u32>()
        + 8
}

/// A hash of (client, qtype, first label): every candidate of one walk has the same, since
/// each is the walk's base plus a suffix. The live tracker sheds walks by it.
pub fn walk_sample_key(client: IpAddr, qtype: u16, qname: &str) -> u64 {
    let label = qname.split('.').next().unwrap_or("");
    let mut h = base_hash(label.as_bytes());
    h ^= ip_word(client) ^ (u64::from(qtype) << 48);
    // A final mix so the low bits, which pick the shed range, are uniform.
    splitmix_finish(h)
}

/// splitmix64's finalizer: every bit of `h` moves every bit of the result, so any slice of
/// the bits picks a uniform range or slot.
#[inline]
pub(super) fn splitmix_finish(h: u64) -> u64 {
    let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// One word into a running hash state (the tracker's name hashes, a word at a time).
#[inline]
pub(super) fn mix_word(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31)
}

/// One of 4,096 buckets, by the top twelve bits of `word` times the golden ratio (a bucket
/// per client, or per client and type).
#[inline]
fn bucket_4096(word: u64) -> usize {
    (word.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as usize
}

/// A client's address folded into one word (an IPv4 address is its own value), for the hashes
/// that pick a shed range or a counter bucket.
pub(super) fn ip_word(client: IpAddr) -> u64 {
    let ip = match client {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    (ip as u64) ^ ((ip >> 64) as u64).rotate_left(17)
}

/// (client, qtype, base hash): the key of a chain of open walks.
type WalkKey = (IpAddr, u16, u64);

/// The key of the open walk in slot `i`, which `by_key` holds only as `i`.
fn slot_key(slots: &[Slot], i: u32) -> WalkKey {
    slots[i as usize].walk.as_ref().expect("keyed slot").key()
}

/// A hash of the ASCII-lowercased bytes: the base's identity whatever the query's case (0x20
/// randomisation), without allocating. Not keyed: it only picks a walk chain, whose walks are
/// compared by name, or pairs a client's own A and AAAA answers.
///
/// `PrefixHash::at` of the whole name, without its bookkeeping for later prefixes: this runs
/// at every query, on the name the reading memo is looked up by.
#[inline]
fn base_hash(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut state = PrefixHash::SEED;
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        state = PrefixHash::mix(state, crate::wire::ascii_lowercase_word(w));
    }
    let rest = words.remainder().len();
    let tail = partial_word(bytes, bytes.len() - rest, rest);
    PrefixHash::finish(
        PrefixHash::mix(state, crate::wire::ascii_lowercase_word(tail)),
        bytes.len(),
    )
}

/// `bytes[from..from + rest]` (`rest` below 8) in the low bytes of a word, as a zero-padded
/// copy would have it, with one load: the eight bytes from `from` when the name has them, else
/// the name's last word shifted down to them.
#[inline(always)]
pub(super) fn partial_word(bytes: &[u8], from: usize, rest: usize) -> u64 {
    debug_assert!(rest < 8 && from + rest <= bytes.len());
    if rest == 0 {
        return 0;
    }
    let low = u64::MAX >> (64 - 8 * rest);
    if let Some(w) = bytes.get(from..from + 8) {
        u64::from_le_bytes(w.try_into().expect("eight bytes")) & low
    } else if bytes.len() >= 8 {
        let start = bytes.len() - 8;
        let w = u64::from_le_bytes(bytes[start..].try_into().expect("eight bytes"));
        (w >> (8 * (from - start))) & low
    } else {
        let mut tail = [0u8; 8];
        tail[..rest].copy_from_slice(&bytes[from..from + rest]);
        u64::from_le_bytes(tail)
    }
}

/// Hashes of prefixes of one name, eight bytes at a time: whole words are mixed into a running
/// state, and a prefix's hash is that state finished with the prefix's last partial word and
/// its length. The prefixes asked for must not get shorter from one call to the next.
struct PrefixHash<'a> {
    bytes: &'a [u8],
    /// Bytes mixed in so far (a multiple of 8).
    done: usize,
    state: u64,
}

impl<'a> PrefixHash<'a> {
    const SEED: u64 = 0x243f_6a88_85a3_08d3;
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new(bytes: &'a [u8]) -> Self {
        PrefixHash {
            bytes,
            done: 0,
            state: Self::SEED,
        }
    }

    fn mix(h: u64, w: u64) -> u64 {
        mix_word(h, w)
    }

    /// The hash of `bytes[..len]`.
    #[inline]
    fn at(&mut self, len: usize) -> u64 {
        debug_assert!(len >= self.done && len <= self.bytes.len());
        while self.done + 8 <= len {
            let w = u64::from_le_bytes(self.bytes[self.done..self.done + 8].try_into().unwrap());
            self.state = Self::mix(self.state, crate::wire::ascii_lowercase_word(w));
            self.done += 8;
        }
        let tail = partial_word(self.bytes, self.done, len - self.done);
        Self::finish(
            Self::mix(self.state, crate::wire::ascii_lowercase_word(tail)),
            len,
        )
    }

    /// splitmix64's finish, with the length in: "ab" and "ab\0" differ.
    #[inline]
    fn finish(h: u64, len: usize) -> u64 {
        splitmix_finish(h ^ (len as u64).wrapping_mul(Self::K))
    }
}

/// `a.eq_ignore_ascii_case(b)`, byte-for-byte equality first: names reach the tracker
/// lowercased, so the names the memo and the interned bases compare at every query are
/// equal as bytes (one `memcmp`), and only a mismatch pays the case-folding comparison.
#[inline]
fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a == b || a.eq_ignore_ascii_case(b)
}

/// What [`WalkTracker::candidate_bases`] finds: `len[i]` bytes of the name, hashed `hash[i]`;
/// entry 0 is the whole name.
#[derive(Clone, Copy, Default)]
struct Bases {
    len: [u16; MAX_BASES],
    hash: [u64; MAX_BASES],
    n: usize,
}

impl Bases {
    fn hash_of(&self, name: &str, base_len: u16) -> u64 {
        match self.len[..self.n].iter().position(|&l| l == base_len) {
            Some(i) => self.hash[i],
            // Every reading's base is one of them; hashed afresh should that ever change.
            None => base_hash(&name.as_bytes()[..base_len as usize]),
        }
    }
}
/// Decompositions of one name kept with it in the [`ReadingMemo`]; a name with more (a shape
/// of many entries) keeps the first ones and finds the rest afresh.
const MAX_READINGS: usize = 4;
/// Names per set of the [`ReadingMemo`]: a lookup is one hash and at most this many
/// comparisons.
const MEMO_WAYS: usize = 4;
/// The memo's sets when it starts, and at most: it grows (fourfold, starting over) while it
/// misses more than twice its size in names, so a tracker that sees few names (one workload's
/// of `analyze --pod-dns-config`) keeps a small one, and a busy proxy's holds 4,096 names:
/// 1.25 MB of slots and set heads, at most 0.5 MB of names.
const MEMO_SETS_START: usize = 4;
const MEMO_SETS: usize = 1024;
// A set is the hash masked with `sets - 1`.
const _: () = assert!(MEMO_SETS_START.is_power_of_two() && MEMO_SETS.is_power_of_two());
/// A longer name (rare: the text of a name is at most ~1 KB with escapes) is read afresh each
/// time, in a slot of its own outside the sets, so the memo's size does not depend on what
/// clients ask.
const MEMO_NAME_MAX: usize = 128;

/// What `observe` works out from a name alone: the bases it can be a candidate of and its
/// readings against the shape (longest suffix first), each with its namespace interned. They
/// depend on nothing but the name, and a busy proxy sees the same names over and over (every
/// cached answer of a service), so the names seen last keep theirs: for a service name under
/// `cluster.local` that is most of the tracker's work per query (callgrind). Four ways a set,
/// the least recently used one replaced: with two ways, the names of a set that three names
/// share evicted each other at every query (a tenth of 1,000 names asked in turn).
struct ReadingMemo {
    /// One per set: its ways' hashes and last uses, in one cache line, so a lookup reads one
    /// line to find its way (or the way to replace) and then only the slot it found.
    heads: Vec<SetHead>,
    /// `sets * MEMO_WAYS` slots, then the slot for a name longer than `MEMO_NAME_MAX` (or,
    /// with `sets == 0`, for every name: no memo, as tests compare).
    slots: Vec<MemoSlot>,
    /// A power of two: a name's set is `hash & (sets - 1)`.
    sets: usize,
    max_sets: usize,
    /// Misses since the memo last grew.
    misses: usize,
    /// Lookups so far: a way's `used` is the tick of its last use.
    tick: u64,
}

#[derive(Default, Clone, Copy)]
#[repr(align(64))]
struct SetHead {
    /// [`base_hash`] of each way's name.
    hash: [u64; MEMO_WAYS],
    /// `ReadingMemo::tick` at each way's last use: the least recently used way goes.
    used: [u64; MEMO_WAYS],
}

#[derive(Default)]
struct MemoSlot {
    /// The name's bytes (empty: the slot is unused; the root never gets here).
    name: Vec<u8>,
    bases: Bases,
    /// The first `known` readings (longest suffix first) with their namespaces: made as a new
    /// walk needs them, up to the first plausible one, as reading afresh would (a query that
    /// continues a walk needs none).
    readings: [Option<Reading>; MAX_READINGS],
    namespaces: [Option<Arc<str>>; MAX_READINGS],
    known: u8,
    /// No reading past the known ones.
    exhausted: bool,
}

impl ReadingMemo {
    fn new(sets: usize, max_sets: usize) -> Self {
        debug_assert!(sets == 0 || sets.is_power_of_two());
        ReadingMemo {
            heads: vec![SetHead::default(); sets],
            slots: (0..sets * MEMO_WAYS + 1)
                .map(|_| MemoSlot::default())
                .collect(),
            sets,
            max_sets,
            misses: 0,
            tick: 0,
        }
    }

    /// The slot holding `name`, whose [`base_hash`] is `hash`, if one does; otherwise the slot
    /// to fill with it (`Err`; see [`ReadingMemo::claim`]): its set's least recently used, or
    /// for a name longer than [`MEMO_NAME_MAX`] the slot kept for those. Names that differ in
    /// case only share a slot: what it holds does not depend on case.
    fn find(&mut self, name: &[u8], hash: u64) -> Result<usize, usize> {
        if name.len() > MEMO_NAME_MAX || self.sets == 0 {
            return Err(self.slots.len() - 1);
        }
        self.tick += 1;
        let set = hash as usize & (self.sets - 1);
        let first = set * MEMO_WAYS;
        let head = &mut self.heads[set];
        for way in 0..MEMO_WAYS {
            if head.hash[way] == hash {
                let s = &self.slots[first + way];
                if eq_ignore_case(&s.name, name) && !s.name.is_empty() {
                    head.used[way] = self.tick;
                    return Ok(first + way);
                }
            }
        }
        self.misses += 1;
        if self.sets < self.max_sets && self.misses > 2 * self.sets * MEMO_WAYS {
            // Starting over bigger: what was kept is found again at the next misses.
            *self = ReadingMemo::new((self.sets * 4).min(self.max_sets), self.max_sets);
            return self.find(name, hash);
        }
        let oldest = (0..MEMO_WAYS)
            .min_by_key(|&way| head.used[way])
            .expect("a set has ways");
        head.used[oldest] = self.tick;
        Err(first + oldest)
    }

    /// Slot `i`, which `find` gave to fill, now holds a name whose hash is `hash`. The slot
    /// for long names has no head: it is never a hit.
    fn claim(&mut self, i: usize, hash: u64) {
        if i < self.sets * MEMO_WAYS {
            debug_assert_eq!(
                i / MEMO_WAYS,
                hash as usize & (self.sets - 1),
                "slot of its set"
            );
            self.heads[i / MEMO_WAYS].hash[i % MEMO_WAYS] = hash;
        }
    }
}

/// The first reading of `name` (the name `slot` holds) that is `plausible`, with its
/// namespace: from the readings known, else decomposing on past them (and keeping what it
/// finds, up to [`MAX_READINGS`]).
fn first_plausible(
    slot: &mut MemoSlot,
    shape: &SearchShape,
    namespaces: &mut Namespaces,
    name: &str,
    plausible: impl Fn(&Reading) -> bool,
) -> Option<(Reading, Option<Arc<str>>)> {
    let known = slot.known as usize;
    if let Some(k) = (0..known).find(|&k| slot.readings[k].as_ref().is_some_and(&plausible)) {
        return Some((slot.readings[k]?, slot.namespaces[k].clone()));
    }
    if slot.exhausted {
        return None;
    }
    let mut all_kept = true;
    for d in shape.decompose(name).skip(known) {
        let r = reading_of(&d);
        let ns = d.namespace.map(|ns| namespaces.intern(ns));
        let k = slot.known as usize;
        if k < MAX_READINGS {
            slot.readings[k] = Some(r);
            slot.namespaces[k] = ns.clone();
            slot.known += 1;
        } else {
            all_kept = false;
        }
        if plausible(&r) {
            return Some((r, ns));
        }
    }
    slot.exhausted = all_kept;
    None
}

/// A decomposition as a reading of the name it was made from.
fn reading_of(d: &crate::search::Decomposition<'_>) -> Reading {
    Reading {
        base_len: d.base.len() as u16,
        pos: d.index.min(ABS as usize - 1) as u8,
        slot: SuffixSlot::from_kind(d.kind),
        ns_end: d
            .namespace
            .map(|ns| (d.base.len() + 1 + ns.len()) as u16)
            .unwrap_or(0),
    }
}

/// A walk this long is closed: no stub sends more than a few dozen queries for one lookup,
/// so this is a client retrying forever, and closing keeps each lookup's figures meaningful
/// (and within the histogram's exact range).
pub const MAX_WALK_QUERIES: u32 = 255;

/// How long a walk whose last query went unanswered in a capture (`AnswerSource::NoAnswer`)
/// stays open for the stub's retry, when that is longer than `tracker.idle`: the longest first
/// retry interval of the stubs of resolvers.md at their defaults (glibc's and Go's `timeout:5`;
/// musl resends at 2.5 s, c-ares at 2 s), and a second for the capture's timing. With the 2 s
/// idle window alone, real glibc's resend of an AAAA query dropped once (the conntrack race of
/// A and AAAA on one socket) was read as a lookup that timed out and a second lookup.
pub const RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(6);

/// The open walks' two LRU lists: walks whose last query was answered (or whose answers the
/// input does not hold) expire `tracker.idle` after their last activity, walks waiting on a
/// stub's retry after [`RETRY_WAIT`]. Each list is in order of last activity, so expiry pops
/// from the heads.
const ANSWERED: usize = 0;
const WAITING: usize = 1;
/// Candidate position of the absolute name (search positions are the shape's indices).
const ABS: u8 = u8::MAX;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Reading {
    /// The base is `name[..base_len]`.
    base_len: u16,
    /// Shape index, or `ABS`.
    pos: u8,
    slot: SuffixSlot,
    /// The namespace label is `name[base_len + 1..ns_end]` when non-zero.
    ns_end: u16,
}

struct Walk {
    client: IpAddr,
    qtype: u16,
    /// The base, lowercase, with its trailing dot: the `Lookup::base` it becomes, moved there
    /// at close without a copy. [`Walk::base`] is the base without the dot.
    base_dotted: BaseName,
    /// [`base_hash`] of `base`: with client and type, the key of the walk's chain.
    base_hash: u64,
    /// Order of creation: when walks of two bases both accept a query, the newer one wins.
    seq: u64,
    namespace: Option<Arc<str>>,
    /// The walk began with a namespace reading and nothing has continued it yet.
    ns_unconfirmed: bool,
    start: Timestamp,
    last_activity: Timestamp,
    last_answer_at: Option<Timestamp>,
    last_pos: u8,
    last_slot: SuffixSlot,
    /// Highest search position sent, if any.
    max_search: Option<u8>,
    abs_seen: bool,
    queries: u32,
    retries: u32,
    on_last: u32,
    upstream: u32,
    upstream_on_last: u32,
    shortcut: u32,
    nxdomain: u32,
    suffix_queries: [u32; 6],
    last_rcode: Option<u16>,
    last_answers: Option<u16>,
    any_answer: bool,
    /// Some candidate before the current one ended with NODATA: the name exists there.
    nodata_before: bool,
    /// Some candidate before the current one ended with SERVFAIL (or FORMERR, NOTIMP): its
    /// answer is unknown.
    servfail_before: bool,
    /// Source port of the last query, when the capture has it.
    last_port: Option<u16>,
    /// The last query went unanswered in a capture that holds answers: the stub is waiting to
    /// send it again ([`RETRY_WAIT`]).
    awaiting_retry: bool,
}

/// One entry of the search shape: `tail` is the whole suffix, or what follows the namespace
/// label for a `*` entry.
struct Pattern {
    tail: Box<str>,
    wildcard: bool,
    slot: SuffixSlot,
}

struct Slot {
    walk: Option<Walk>,
    lru_prev: u32,
    lru_next: u32,
    key_next: u32,
    /// The LRU list the walk is on: `ANSWERED` or `WAITING`.
    list: u8,
}

/// The two ends of one LRU list.
#[derive(Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
}

const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
};

/// What the tracker knows about a client beyond its open walks.
struct ClientInfo {
    namespace: Arc<str>,
    confirmed: bool,
}

/// What the tracker knows of the newest `max` clients beyond their open walks, the oldest
/// forgotten first, one for one (a hint, bounded without an LRU of its own). The entries sit
/// in a ring in the order the clients came, and the table holds only each one's number (four
/// bytes): on a capture of a million clients, a new client at nearly every query, the
/// table's probes stay in the cache and the ring is written and forgotten in order, where a
/// map of the entries themselves missed the cache at every probe, insert and removal. (Before
/// that, forgetting the map's first key scanned it from its start past every slot emptied:
/// a fifth of `analyze`'s time on 1M clients.)
struct ClientHints {
    /// Oldest first: `ring[i]` is client number `first + i` (numbers wrap; the ring holds
    /// at most 2^31).
    ring: std::collections::VecDeque<(IpAddr, ClientInfo)>,
    first: u32,
    /// Client numbers, by a hash of the address (seeded as `WalkTracker::key_hasher`).
    by_addr: HashTable<u32>,
    hasher: ahash::RandomState,
    max: usize,
    /// The number of the client found last: `observe` asks for the query's client two or
    /// three times, and a client's queries come in runs, so a find is often one compare
    /// instead of a hash and a probe (callgrind_hit: 89 instructions a find before, 44 after).
    /// Atomic only so that the tracker stays `Sync`; relaxed loads and stores cost what plain
    /// ones do.
    last: AtomicU32,
    /// Moved whenever what is known of a client of the bucket changes (learnt, forgotten):
    /// an [`AtOnceTable`] entry made at another epoch of its client's bucket is not used.
    /// By bucket, not in the entries, so that a client forgotten moves it too. Made when
    /// the table is first used (`track_epochs`): an offline tracker, one per workload in
    /// `analyze --pod-dns-config`, never has them.
    epochs: Vec<u64>,
}

const CLIENT_EPOCH_BUCKETS: usize = 4096;
const _: () = assert!(CLIENT_EPOCH_BUCKETS == 1 << 12);

impl ClientHints {
    fn new(max: usize) -> Self {
        ClientHints {
            ring: std::collections::VecDeque::new(),
            first: 0,
            by_addr: HashTable::new(),
            hasher: ahash::RandomState::new(),
            max: max.clamp(1, 1 << 31),
            last: AtomicU32::new(0),
            epochs: Vec::new(),
        }
    }

    fn epoch_bucket(client: IpAddr) -> usize {
        bucket_4096(ip_word(client))
    }

    /// The epoch of `client`'s bucket (see `epochs`).
    #[inline]
    fn epoch(&self, client: IpAddr) -> u64 {
        self.epochs
            .get(Self::epoch_bucket(client))
            .copied()
            .unwrap_or(0)
    }

    /// Count changes from now on (no entry was made before: every epoch starts at 0).
    #[inline]
    fn track_epochs(&mut self) {
        if self.epochs.is_empty() {
            self.epochs = vec![0; CLIENT_EPOCH_BUCKETS];
        }
    }

    /// What is known of `client` changed.
    fn changed(&mut self, client: IpAddr) {
        if let Some(e) = self.epochs.get_mut(Self::epoch_bucket(client)) {
            *e += 1;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ring.len()
    }

    /// The ring index of `client`.
    fn find(&self, client: &IpAddr) -> Option<usize> {
        let at = |n: u32| n.wrapping_sub(self.first) as usize;
        // A number is in the ring while it is within its length of `first`, and then it is
        // that entry's (the ring holds at most 2^31 of the 2^32 numbers).
        let last = at(self.last.load(Ordering::Relaxed));
        if self.ring.get(last).is_some_and(|(c, _)| c == client) {
            return Some(last);
        }
        let n = *self.by_addr.find(self.hasher.hash_one(client), |&n| {
            self.ring[at(n)].0 == *client
        })?;
        self.last.store(n, Ordering::Relaxed);
        Some(at(n))
    }

    fn get(&self, client: &IpAddr) -> Option<&ClientInfo> {
        self.find(client).map(|i| &self.ring[i].1)
    }

    fn get_mut(&mut self, client: &IpAddr) -> Option<&mut ClientInfo> {
        self.find(client).map(|i| &mut self.ring[i].1)
    }

    #[cfg(test)]
    fn contains_key(&self, client: &IpAddr) -> bool {
        self.find(client).is_some()
    }

    /// A client not known yet (the caller looked); past `max` the oldest is forgotten.
    fn insert_new(&mut self, client: IpAddr, info: ClientInfo) {
        debug_assert!(self.find(&client).is_none());
        if self.ring.len() >= self.max {
            if let Some((oldest, _)) = self.ring.pop_front() {
                self.changed(oldest);
                let first = self.first;
                // Found by its number: the table's probe reads no entry of the ring.
                if let Ok(e) = self
                    .by_addr
                    .find_entry(self.hasher.hash_one(oldest), |&n| n == first)
                {
                    e.remove();
                }
                self.first = first.wrapping_add(1);
            }
        }
        self.changed(client);
        let n = self.first.wrapping_add(self.ring.len() as u32);
        self.ring.push_back((client, info));
        let (ring, first, hasher) = (&self.ring, self.first, &self.hasher);
        self.by_addr
            .insert_unique(hasher.hash_one(client), n, |&m| {
                hasher.hash_one(ring[m.wrapping_sub(first) as usize].0)
            });
    }
}

/// Groups queries into walks and emits [`Lookup`]s. Single-threaded; the live proxy runs it on
/// the tracker thread ([`super::Tracker`]), offline readers call it directly.
pub struct WalkTracker {
    shape: SearchShape,
    /// The shape's entries, for matching a continuation at a known boundary.
    patterns: Vec<Pattern>,
    idle_us: u64,
    /// [`RETRY_WAIT`], or `idle_us` when that is longer.
    retry_wait_us: u64,
    /// The latest time seen (events, `flush`). Events of lost queries come late (when their
    /// retry does, or when the reader stops waiting for an answer): a walk already past its
    /// window at that time is closed at once rather than listed behind fresher ones.
    latest_us: u64,
    /// How much longer than `tracker.idle` an answered walk is kept open for a lost query's
    /// late event to join it: 0 live, and reading captures until the first lost query
    /// ([`Self::for_captures`]), then [`RETRY_WAIT`].
    late_lag_us: u64,
    /// Reading captures: the lag starts at the first lost query.
    lag_on_loss: bool,
    max_open: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Indexed by `ANSWERED` and `WAITING`.
    lru: [Ends; 2],
    open: usize,
    /// Open walks chained by (client, qtype, hash of the base): a query looks only at walks
    /// of the few bases it can be a candidate of, so the cost per event stays flat however
    /// many walks one client has open (a dead upstream leaves every walk open). An entry is
    /// the slot of a chain's newest walk, whose own fields are the key ([`Self::chain_head`]):
    /// four bytes, not the key's forty, so that the table stays in the cache with tens of
    /// thousands of walks open (on a capture of distinct clients its misses were a fifth of
    /// the tracker's time).
    by_key: HashTable<u32>,
    /// Hashes `by_key`'s keys, seeded from the OS's random source (ahash's `runtime-rng`):
    /// a client cannot aim its queries at another's chains.
    key_hasher: ahash::RandomState,
    /// Open walks per (client, qtype), counted in buckets: a bucket at 0 means `by_key` holds
    /// no chain of that client and type, and the lookups of its chains are skipped.
    open_kinds: OpenKinds,
    next_seq: u64,
    /// Open walks looked at to place queries (the cost that must not grow with open walks).
    probes: u64,
    /// Open walks are charged to its `tracker_walks` part; when it is full the oldest walk is
    /// evicted whole (`Outcome::Evicted`), as at `max_open_walks`.
    budget: Option<Arc<MemoryBudget>>,
    /// The last name that answered with addresses per (client, A or AAAA): its port and
    /// time. The other type's NODATA for the same name and port ends that walk too.
    resolved: ResolvedNames,
    clients: ClientHints,
    max_clients: usize,
    evictions: u64,
    closed: Vec<Lookup>,
    names: BaseNames,
    namespaces: Namespaces,
    memo: ReadingMemo,
    /// Lookups of cached answers asked again (`observe_wire`), and whether it is used.
    at_once: AtOnceTable,
    at_once_on: bool,
    /// Lookups made from it (tests check that theirs were).
    at_once_hits: u64,
    /// With `defer_repeats`: the report's bucket width (µs) the lookups made from the table
    /// are held by, until `drain_repeats`; 0: each one is in `closed` at once.
    repeat_bucket_us: u64,
    /// `observe_wire`'s text of the wire name `text_wire` (a run of one name is formatted
    /// once).
    text: String,
    text_wire: Vec<u8>,
}

impl WalkTracker {
    pub fn new(shape: SearchShape, cfg: &TrackerConfig) -> Self {
        let max_open = cfg.max_open_walks.max(1);
        // Namespaces are remembered for as many clients as walks may be open (at least
        // 1024): a client with no open walk is idle, and forgetting it only loses a hint.
        let max_clients = max_open.max(1024);
        let patterns = (0..shape.len())
            .map(|i| {
                let slot = SuffixSlot::from_kind(shape.kind(i));
                match shape.suffix(i, None) {
                    Some(tail) => Pattern {
                        tail: tail.into(),
                        wildcard: false,
                        slot,
                    },
                    None => {
                        // A `*` entry: its suffix for namespace `x` is `x.<tail>`.
                        let full = shape.suffix(i, Some("x")).unwrap_or_default();
                        Pattern {
                            tail: full.get(2..).unwrap_or_default().into(),
                            wildcard: true,
                            slot,
                        }
                    }
                }
            })
            .collect();
        WalkTracker {
            shape,
            patterns,
            idle_us: cfg.idle.as_micros() as u64,
            retry_wait_us: cfg.idle.max(RETRY_WAIT).as_micros() as u64,
            latest_us: 0,
            late_lag_us: 0,
            lag_on_loss: false,
            max_open,
            slots: Vec::new(),
            free: Vec::new(),
            lru: [EMPTY; 2],
            open: 0,
            by_key: HashTable::new(),
            key_hasher: ahash::RandomState::new(),
            open_kinds: OpenKinds::default(),
            resolved: ResolvedNames::default(),
            next_seq: 0,
            probes: 0,
            budget: None,
            clients: ClientHints::new(max_clients),
            max_clients,
            evictions: 0,
            closed: Vec::new(),
            names: BaseNames::default(),
            namespaces: Namespaces::default(),
            memo: ReadingMemo::new(MEMO_SETS_START, MEMO_SETS),
            at_once: AtOnceTable::default(),
            at_once_on: true,
            at_once_hits: 0,
            repeat_bucket_us: 0,
            text: String::new(),
            text_wire: Vec::new(),
        }
    }

    /// Lookups made from the [`AtOnceTable`] so far.
    #[cfg(test)]
    pub(crate) fn at_once_hits(&self) -> u64 {
        self.at_once_hits
    }

    /// Every event through the full path (tests compare the two).
    #[cfg(test)]
    pub(crate) fn without_at_once(mut self) -> Self {
        self.at_once_on = false;
        self
    }

    /// A reading memo of `sets` sets from the start, never growing; 0: none, every name is
    /// read afresh (tests compare the two).
    #[cfg(test)]
    pub(crate) fn with_memo_sets(mut self, sets: usize) -> Self {
        self.memo = ReadingMemo::new(sets, sets);
        self
    }

    /// Charge open walks and the at-once table to `budget` (the live tracker; offline readers
    /// have none).
    pub fn with_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.at_once.charge_to(budget.clone());
        self.budget = Some(budget);
        self
    }

    /// The at-once table's entries and the bytes it has charged to the budget.
    #[cfg(test)]
    pub(crate) fn at_once_use(&self) -> (usize, usize) {
        (self.at_once.entries(), self.at_once.charged())
    }

    /// Walks open now.
    pub fn open_walks(&self) -> usize {
        self.open
    }

    /// Open walks looked at so far to place queries: per event, a small constant however
    /// many walks are open (a test pins it).
    pub fn probes(&self) -> u64 {
        self.probes
    }

    /// Open walks as the per-(client, type) counters have them: always `open_walks`.
    #[cfg(test)]
    pub(crate) fn open_walks_counted(&self) -> usize {
        self.open_kinds.total()
    }

    /// Panics unless the chain table is what the walks make it: each entry the newest open
    /// walk of its key, each chain newest first and of one key, and every open walk on
    /// exactly one chain (tests call it after every event).
    #[cfg(test)]
    pub(crate) fn check_chains(&self) {
        let mut seen = vec![false; self.slots.len()];
        let mut keys = std::collections::HashSet::new();
        for &head in self.by_key.iter() {
            let key = slot_key(&self.slots, head);
            assert!(keys.insert(key), "two entries for one key");
            let (mut cur, mut newer) = (head, u64::MAX);
            while cur != NIL {
                let w = self.slots[cur as usize]
                    .walk
                    .as_ref()
                    .expect("chained slot is open");
                assert_eq!(w.key(), key, "a chain of two keys");
                assert!(w.seq < newer, "a chain not newest first");
                assert!(
                    !std::mem::replace(&mut seen[cur as usize], true),
                    "a walk chained twice"
                );
                newer = w.seq;
                cur = self.slots[cur as usize].key_next;
            }
        }
        let open: Vec<WalkKey> = (0..self.slots.len())
            .filter_map(|i| self.slots[i].walk.as_ref().map(|w| (i, w.key())))
            .map(|(i, key)| {
                assert!(seen[i], "an open walk on no chain");
                key
            })
            .collect();
        assert_eq!(open.len(), self.open);
        assert_eq!(
            keys,
            open.into_iter().collect(),
            "an open key without an entry"
        );
    }

    /// Walks evicted so far to stay within `max_open_walks`.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Lookups closed and not yet taken.
    pub fn closed_len(&self) -> usize {
        self.closed.len()
    }

    /// Take the lookups closed so far (without those `drain_repeats` hands out).
    pub fn drain(&mut self) -> std::vec::Drain<'_, Lookup> {
        self.closed.drain(..)
    }

    /// Hold the lookups made from the at-once table (cached answers asked again) as their
    /// times, up to `REPEATS` per entry and all ending in one `bucket` of the report's
    /// windows, for `drain_repeats` to hand out together (the live tracker: the report and
    /// the metrics then add them as a count).
    pub fn defer_repeats(mut self, bucket: Duration) -> Self {
        self.repeat_bucket_us = (bucket.as_micros() as u64).max(1);
        self
    }

    /// Which lookups held should be handed out now: the full entries', or every entry's when
    /// a lookup of another bucket was made (the held ones are handed out before it: the
    /// report's ring would take them for late ones after it).
    pub fn repeats_due(&self) -> Due {
        let other_bucket = || {
            self.at_once.holds_repeats()
                && self
                    .closed
                    .iter()
                    .any(|l| l.end.0 / self.repeat_bucket_us != self.at_once.repeats_bucket())
        };
        match self.at_once.repeats_due() {
            Due::All => Due::All,
            _ if other_bucket() => Due::All,
            due => due,
        }
    }

    /// Whether any lookup is held.
    pub fn holds_repeats(&self) -> bool {
        self.at_once.holds_repeats()
    }

    /// Hand out the lookups held (`which`): `f` gets one lookup (its times not theirs) and
    /// the times of those made as it.
    pub fn drain_repeats(&mut self, which: Due, f: impl FnMut(&Lookup, &Repeats)) {
        self.at_once.drain_repeats(which, f);
    }

    /// Like `drain_repeats`, for at most `max` entries; true when some of `which` are left.
    pub fn drain_some_repeats(
        &mut self,
        which: Due,
        max: usize,
        f: impl FnMut(&Lookup, &Repeats),
    ) -> bool {
        self.at_once.drain_some_repeats(which, max, f)
    }

    /// Close every walk idle at `now` (the tracker thread calls this when traffic is quiet;
    /// `observe` does it itself with the event's time).
    pub fn flush(&mut self, now: Timestamp) {
        let answered = self.idle_us + self.late_lag_us;
        for (list, window) in [(ANSWERED, answered), (WAITING, self.retry_wait_us)] {
            while self.lru[list].head != NIL {
                let i = self.lru[list].head;
                if now.0.saturating_sub(self.last_activity(i).0) <= window {
                    break;
                }
                self.close(i, None);
            }
        }
    }

    /// For events read from captures. A lost query's event comes late: when its retry comes
    /// (glibc and musl ask again with the same ID), up to [`RETRY_WAIT`] after the query, by
    /// which time the walk it continues (the candidates before it, answered) has been idle
    /// past `tracker.idle`. From a capture's first lost query on, answered walks are kept
    /// that much longer so it can still join (a query still joins only within the walk's own
    /// window); in a busy capture the walk was closed first, and the lost query with its retry
    /// read as a second lookup. Not before: holding every walk 6 s longer cost a fifth of the
    /// time on a capture of a million clients that lost nothing (RSS 84 -> 124 MB), and the
    /// first lost query is read as before.
    pub fn for_captures(mut self) -> Self {
        self.lag_on_loss = true;
        self
    }

    /// How long walk `w` stays open after its last activity.
    fn window_us(&self, w: &Walk) -> u64 {
        if w.awaiting_retry {
            self.retry_wait_us
        } else {
            self.idle_us
        }
    }

    /// Walk `w` was over by `now`: a later query starts a walk of its own.
    fn over_at(&self, w: &Walk, now: Timestamp) -> bool {
        now.0.saturating_sub(w.last_activity.0) > self.window_us(w)
    }

    fn last_activity(&self, i: u32) -> Timestamp {
        self.slots[i as usize]
            .walk
            .as_ref()
            .expect("listed slot holds a walk")
            .last_activity
    }

    /// The open walk least recently active, of both lists (`NIL` when none is open).
    fn oldest(&self) -> u32 {
        match (self.lru[ANSWERED].head, self.lru[WAITING].head) {
            (NIL, w) => w,
            (a, NIL) => a,
            (a, w) if self.last_activity(w) < self.last_activity(a) => w,
            (a, _) => a,
        }
    }

    /// Close every open walk (end of a capture).
    pub fn finish(&mut self) {
        while self.oldest() != NIL {
            self.close(self.oldest(), None);
        }
        debug_assert_eq!(
            self.open_kinds.total(),
            0,
            "open walks counted after finish"
        );
    }

    /// Feed one query (and its answer, when known).
    pub fn observe(&mut self, ev: &QueryEvent) {
        self.observe_text(ev);
    }

    /// Feed one query whose name is `wire` (the query's own bytes, uncompressed), its
    /// `ev.qname` empty (and left so). A cached answer asked again is made from the
    /// [`AtOnceTable`] (see there); every other event goes through `observe` with the
    /// name's text.
    pub fn observe_wire(&mut self, ev: &mut QueryEvent, wire: &[u8]) {
        let positive = ev.rcode == Some(0) && ev.answers != Some(0);
        // Nothing open of the query's type (for A and AAAA, of either): the query starts and
        // ends its own walk, ending none (`observe_text`'s at-once case).
        let quiet = positive
            && self.at_once_on
            && !self.open_kinds.any(ev.client, ev.qtype)
            && sibling(ev.qtype).is_none_or(|other| !self.open_kinds.any(ev.client, other));
        if quiet {
            self.clients.track_epochs();
            let epoch = self.clients.epoch(ev.client);
            if let Some(slot) = self
                .at_once
                .find(ev.client, ev.qtype, ev.source, wire, epoch)
            {
                let e = self.at_once.entry(slot);
                let name = (e.name_hash, e.name_len);
                // What `observe_text` does for it, in its order.
                self.flush(ev.time);
                self.next_seq += 1;
                self.remember_resolved(ev, name);
                let waited = ev.latency.map_or(0, |l| l.as_micros() as u64);
                let held = self.repeat_bucket_us > 0
                    && u32::try_from(waited).is_ok_and(|us| {
                        self.at_once
                            .repeat(slot, ev.time, us, self.repeat_bucket_us)
                    });
                if !held {
                    let lookup = self.at_once.entry(slot).lookup.repeated(ev.time, waited);
                    self.closed.push(lookup);
                }
                self.at_once_hits += 1;
                return;
            }
        }
        let text = std::mem::take(&mut self.text);
        ev.qname = if self.text_wire == wire {
            text
        } else {
            self.text_wire.clear();
            self.text_wire.extend_from_slice(wire);
            crate::wire::name_text_into(wire, text)
        };
        let at_once = self.observe_text(ev);
        if let (true, Some(name)) = (quiet, at_once) {
            let lookup = self.closed.last().expect("the lookup just made");
            let released =
                self.at_once
                    .keep(ev.source, wire, self.clients.epoch(ev.client), name, lookup);
            self.closed.extend(released);
        }
        self.text = std::mem::take(&mut ev.qname);
    }

    /// `observe` of an event with its name as text. When the query ended its walk at once
    /// (the lookup made last), the name's hash and length (`Resolved`).
    fn observe_text(&mut self, ev: &QueryEvent) -> Option<(u64, u16)> {
        // Of events only: the live tracker's `flush` time runs on with the wall clock, and
        // events queued behind a stall would all read as late.
        self.latest_us = self.latest_us.max(ev.time.0);
        self.flush(ev.time);
        let name = ev.qname.strip_suffix('.').unwrap_or(&ev.qname);
        if name.is_empty() {
            return None; // the root: nobody's search walk
        }
        let memo = self.remember_bases(name);
        let bases = self.memo.slots[memo].bases;
        let confirmed_ns: Option<&str> = self
            .clients
            .get(&ev.client)
            .filter(|c| c.confirmed)
            .map(|c| &*c.namespace);
        let ns_of = |r: &Reading| -> Option<&str> {
            (r.ns_end != 0).then(|| &name[r.base_len as usize + 1..r.ns_end as usize])
        };
        // A namespace reading for another namespace than the client's (confirmed) one cannot
        // be its own search expansion.
        let plausible = |r: &Reading| match (ns_of(r), confirmed_ns) {
            (Some(ns), Some(c)) => ns.eq_ignore_ascii_case(c),
            _ => true,
        };

        // 1. Does it continue an open walk of this (client, qtype)? Two open walks of the same
        //    base cannot both accept the same candidate, so the first match is the one.
        let mut found: Option<(u32, Reading, u64)> = None;
        let has_open = self.open_kinds.any(ev.client, ev.qtype);
        let chains = if has_open { bases.n } else { 0 };
        // glibc starting a pair's exchange over after a lost query sends the answered one again
        // on the same socket: the same candidate again, after NXDOMAIN, continues its walk.
        let pair_resent = has_open && self.pair_awaits_retry(ev, name, &bases);
        for &hash in &bases.hash[..chains] {
            let mut cur = self.chain_head(&(ev.client, ev.qtype, hash));
            while cur != NIL {
                self.probes += 1;
                let w = self.slots[cur as usize].walk.as_ref().expect("keyed slot");
                if found.is_some_and(|(_, _, seq)| seq > w.seq) {
                    break; // the chain runs newest first: nothing newer further down
                }
                // A walk waiting on a lost query's retry, open only because it is listed
                // behind one that is not over yet (a lost query's event arrives late, so that
                // list is not in time order). Answered walks keep the idle window's rule.
                if w.awaiting_retry && self.over_at(w, ev.time) {
                    cur = self.slots[cur as usize].key_next;
                    continue;
                }
                let resent = pair_resent && w.last_port == ev.client_port;
                if let Some(r) = self.continuation(name, w, confirmed_ns, resent) {
                    found = Some((cur, r, w.seq));
                    break;
                }
                cur = self.slots[cur as usize].key_next;
            }
        }
        let found = found.map(|(i, r, _)| (i, r));

        let positive = ev.rcode == Some(0) && ev.answers != Some(0);
        let (mut target, reading) = match found {
            Some((i, r)) => (Target::Open(i), r),
            None => {
                // 2. Start a walk with the most plausible reading, the longest suffix first.
                let abs = Reading {
                    base_len: name.len().min(u16::MAX as usize) as u16,
                    pos: ABS,
                    slot: SuffixSlot::Absolute,
                    ns_end: 0,
                };
                let (r, ns) = first_plausible(
                    &mut self.memo.slots[memo],
                    &self.shape,
                    &mut self.namespaces,
                    name,
                    plausible,
                )
                .unwrap_or((abs, None));
                // A stub that starts over with the same base has finished its earlier walk
                // (e.g. musl stops on NODATA): close it now. Not one whose last answer was
                // NXDOMAIN: every stub moves on after that, so the walk is still going and
                // this is a second lookup of the same name at the same time (two threads of
                // one pod); the two walks interleave and are kept apart.
                let base = &name[..r.base_len as usize];
                let hash = bases.hash_of(name, r.base_len);
                let key = (ev.client, ev.qtype, hash);
                let mut cur = if has_open { self.chain_head(&key) } else { NIL };
                while cur != NIL {
                    let next = self.slots[cur as usize].key_next;
                    let w = self.slots[cur as usize].walk.as_ref().expect("keyed slot");
                    if eq_ignore_case(w.base().as_bytes(), base.as_bytes())
                        && w.last_rcode != Some(3)
                    {
                        self.close(cur, None);
                    }
                    cur = next;
                }
                // A query that ends its walk at once (a positive answer; NODATA beside the
                // other type's addresses) is most of a busy proxy's traffic, every cached
                // answer of a name asked in full: its lookup is made without storing the walk,
                // so it takes no slot, no chain entry and no share of the memory budget.
                // A lost query's event past its own window (it comes late, up to the answer
                // wait after the query) with no walk to join: over already, so made without a
                // slot, which at the cap would have evicted a walk still in progress.
                let late_lost = ev.source == Some(AnswerSource::NoAnswer)
                    && self.latest_us.saturating_sub(ev.time.0) > self.retry_wait_us;
                let at_once = positive || late_lost || self.pair_resolved(ev, &bases);
                if !at_once {
                    self.make_room(r.base_len as usize);
                }
                if let Some(ns) = &ns {
                    self.learn_namespace(ev.client, ns, false);
                }
                self.next_seq += 1;
                let walk = Walk {
                    client: ev.client,
                    qtype: ev.qtype,
                    base_dotted: self.names.intern(base, hash),
                    base_hash: hash,
                    seq: self.next_seq,
                    ns_unconfirmed: ns.is_some(),
                    namespace: ns,
                    start: ev.time,
                    last_activity: ev.time,
                    last_answer_at: None,
                    last_pos: r.pos,
                    last_slot: r.slot,
                    max_search: None,
                    abs_seen: false,
                    queries: 0,
                    retries: 0,
                    on_last: 0,
                    upstream: 0,
                    upstream_on_last: 0,
                    shortcut: 0,
                    nxdomain: 0,
                    suffix_queries: [0; 6],
                    last_rcode: None,
                    last_answers: None,
                    any_answer: false,
                    nodata_before: false,
                    servfail_before: false,
                    last_port: None,
                    awaiting_retry: false,
                };
                if at_once {
                    (Target::Passing(walk), r)
                } else {
                    (Target::Open(self.insert(walk)), r)
                }
            }
        };

        // 3. Account the query in the walk.
        let upstream = matches!(
            ev.source,
            None | Some(AnswerSource::Upstream)
                | Some(AnswerSource::Captured)
                | Some(AnswerSource::Truncated)
                | Some(AnswerSource::NoAnswer)
        );
        // The stub will send it again (or give up) after its retry interval.
        let unanswered = ev.source == Some(AnswerSource::NoAnswer);
        if unanswered && self.lag_on_loss {
            self.late_lag_us = self.retry_wait_us;
        }
        let mut confirm: Option<Arc<str>> = None;
        let ends = {
            let w = match &mut target {
                Target::Open(i) => self.slots[*i as usize].walk.as_mut().expect("slot"),
                Target::Passing(w) => w,
            };
            let retry = w.queries > 0 && w.last_pos == reading.pos;
            if retry {
                w.retries += 1;
                w.on_last += 1;
                w.upstream_on_last += upstream as u32;
            } else {
                // The candidate before this one has ended: what it found counts for the
                // walk's outcome (a retry's answer replaces the try before it).
                w.nodata_before |= w.last_rcode == Some(0) && w.last_answers == Some(0);
                // SERVFAIL, or another error that no stub walks past as an answer (FORMERR,
                // NOTIMP): replay's answer table reads those as SERVFAIL too.
                w.servfail_before |= matches!(w.last_rcode, Some(r) if !matches!(r, 0 | 3 | 5));
                if w.queries > 0 && w.ns_unconfirmed {
                    // Another candidate of the same base after a namespace reading: the pod's
                    // own search list at work.
                    w.ns_unconfirmed = false;
                    confirm = w.namespace.clone();
                }
                if w.namespace.is_none() {
                    w.namespace = ns_of(&reading).map(|s| self.namespaces.intern(s));
                }
                w.on_last = 1;
                w.upstream_on_last = upstream as u32;
                w.last_pos = reading.pos;
                w.last_slot = reading.slot;
                if reading.pos == ABS {
                    w.abs_seen = true;
                } else {
                    w.max_search = Some(reading.pos);
                }
            }
            w.queries += 1;
            w.upstream += upstream as u32;
            w.shortcut += (ev.source == Some(AnswerSource::Shortcut)) as u32;
            w.nxdomain += (ev.rcode == Some(3)) as u32;
            w.suffix_queries[reading.slot as usize] += 1;
            // A retry that went unanswered leaves the try before it as the candidate's answer
            // (replay's answer table keeps it too).
            if ev.rcode.is_some() || !retry {
                w.last_rcode = ev.rcode;
                w.last_answers = ev.answers;
            }
            w.last_port = ev.client_port;
            w.awaiting_retry = unanswered;
            let mut activity = ev.time;
            if ev.rcode.is_some() {
                let at = Timestamp(ev.time.0 + ev.latency.map_or(0, |l| l.as_micros() as u64));
                w.last_answer_at = Some(at);
                w.any_answer = true;
                activity = activity.max(at);
            }
            w.last_activity = w.last_activity.max(activity);
            // The absolute name after search candidates is the stub's last try, answered or
            // not (a capture without answers); but a truncated answer is followed by the same
            // query over TCP, and a query a capture with answers saw go unanswered by the
            // same query again after the stub's retry interval. Sent first, only a positive
            // answer ends the walk.
            positive
                || (reading.pos == ABS
                    && w.max_search.is_some()
                    && !unanswered
                    && ev.source != Some(AnswerSource::Truncated))
                || w.queries >= MAX_WALK_QUERIES
        };
        let ends = match target {
            Target::Open(_) => ends || self.pair_resolved(ev, &bases),
            Target::Passing(_) => true,
        };
        if positive {
            self.pair_answered(ev, name, &bases);
        }
        if let Some(ns) = confirm {
            self.learn_namespace(ev.client, &ns, true);
        }
        match target {
            Target::Open(i) if ends => self.close(i, None),
            // A lost query's event that came after its walk's window (no retry came for it).
            // Lost queries only: events of other sources come in their own time order, but
            // not across sources (dnstap senders' clocks), where the latest time says nothing.
            Target::Open(i)
                if unanswered
                    && self.over_at(
                        self.slots[i as usize].walk.as_ref().expect("slot"),
                        Timestamp(self.latest_us),
                    ) =>
            {
                self.close(i, None)
            }
            Target::Open(i) => self.touch(i),
            Target::Passing(w) => {
                self.emit(w, None);
                return Some((bases.hash[0], bases.len[0]));
            }
        }
        None
    }

    /// Close the least recently active walk for room: evicted, unless it is over already and
    /// only kept for a lost query's late event (`late_lag_us`), which closes it as `flush` would.
    fn close_oldest(&mut self) {
        let latest = Timestamp(self.latest_us);
        for list in [ANSWERED, WAITING] {
            let head = self.lru[list].head;
            let over = head != NIL
                && self.over_at(
                    self.slots[head as usize]
                        .walk
                        .as_ref()
                        .expect("listed slot"),
                    latest,
                );
            if over {
                self.close(head, None);
                return;
            }
        }
        self.evictions += 1;
        self.close(self.oldest(), Some(Outcome::Evicted));
    }

    /// Room for one more open walk of a `base_len`-byte base: within `max_open_walks` and the
    /// memory budget, by closing the oldest walks whole.
    fn make_room(&mut self, base_len: usize) {
        if self.open >= self.max_open {
            self.close_oldest();
        }
        if let Some(b) = self.budget.clone() {
            let need = walk_bytes(base_len);
            // The at-once table is a cache of work: it gives way before an open walk does.
            while b.used(Part::TrackerWalks) + need > b.share(Part::TrackerWalks)
                && self.at_once.give_way(need, &mut self.closed)
            {}
            while !b.try_charge(Part::TrackerWalks, need) {
                if self.oldest() == NIL {
                    // A share smaller than one walk: over by one walk at most.
                    b.charge(Part::TrackerWalks, need);
                    break;
                }
                self.close_oldest();
            }
        }
    }

    /// NODATA for `name` while the other address type of the same name, from the same client
    /// and port (the two queries of one `getaddrinfo` go out together), had addresses: every
    /// stub ends the lookup there, so this walk ends too. Without it a walk whose absolute name
    /// came first stays open for the search list and swallows the client's next lookup of the
    /// same name (false changes in replay).
    fn pair_resolved(&self, ev: &QueryEvent, bases: &Bases) -> bool {
        if ev.rcode != Some(0) || ev.answers != Some(0) {
            return false;
        }
        let Some(other) = sibling(ev.qtype) else {
            return false;
        };
        self.resolved.get((ev.client, other)).is_some_and(|r| {
            r.name_hash == bases.hash[0]
                && r.name_len == bases.len[0]
                && (r.port.is_none() || ev.client_port.is_none() || r.port == ev.client_port)
                && ev.time.0.abs_diff(r.at.0) <= self.idle_us
        })
    }

    /// Whether the other type's walk of the pair waits on a lost query of `name` from the same
    /// socket: glibc, having timed out on one query of an A/AAAA pair, sends both again in
    /// single-request mode (resolvers.md), the answered one first. Only walks waiting on a lost
    /// query are looked at, so a capture that lost nothing pays one comparison.
    fn pair_awaits_retry(&self, ev: &QueryEvent, name: &str, bases: &Bases) -> bool {
        let Some(other) = sibling(ev.qtype) else {
            return false;
        };
        if self.lru[WAITING].head == NIL
            || ev.client_port.is_none()
            || !self.open_kinds.any(ev.client, other)
        {
            return false;
        }
        bases.hash[..bases.n].iter().any(|&hash| {
            let mut cur = self.chain_head(&(ev.client, other, hash));
            while cur != NIL {
                let w = self.slots[cur as usize].walk.as_ref().expect("keyed slot");
                if w.awaiting_retry
                    && w.last_port == ev.client_port
                    && self.is_last_candidate(w, name)
                {
                    return true;
                }
                cur = self.slots[cur as usize].key_next;
            }
            false
        })
    }

    /// `name` is the candidate walk `w` asked last.
    fn is_last_candidate(&self, w: &Walk, name: &str) -> bool {
        match w.last_pos {
            ABS => eq_ignore_case(w.base().as_bytes(), name.as_bytes()),
            _ => self
                .shape
                .position(name, w.base())
                .is_some_and(|p| p == w.last_pos as usize),
        }
    }

    /// `name` had addresses for `ev.qtype`: remember it for the other type's NODATA, and end
    /// an open walk of the other type whose last candidate was this name with NODATA.
    fn pair_answered(&mut self, ev: &QueryEvent, name: &str, bases: &Bases) {
        let Some(other) = sibling(ev.qtype) else {
            return;
        };
        self.remember_resolved(ev, (bases.hash[0], bases.len[0]));
        // The other type's walks that `name` can be a candidate of: one chain per base.
        let chains = if self.open_kinds.any(ev.client, other) {
            bases.n
        } else {
            0
        };
        for &hash in &bases.hash[..chains] {
            let mut cur = self.chain_head(&(ev.client, other, hash));
            while cur != NIL {
                let next = self.slots[cur as usize].key_next;
                let w = self.slots[cur as usize].walk.as_ref().expect("keyed slot");
                let last_name_matches = self.is_last_candidate(w, name);
                let same_port = w.last_port.is_none()
                    || ev.client_port.is_none()
                    || w.last_port == ev.client_port;
                if last_name_matches
                    && same_port
                    && w.last_rcode == Some(0)
                    && w.last_answers == Some(0)
                {
                    self.close(cur, None);
                }
                cur = next;
            }
        }
    }

    /// `name` (its hash and length) had addresses for `ev.qtype`, an A or AAAA query.
    fn remember_resolved(&mut self, ev: &QueryEvent, (name_hash, name_len): (u64, u16)) {
        if sibling(ev.qtype).is_none() {
            return;
        }
        let resolved = Resolved {
            name_hash,
            name_len,
            port: ev.client_port,
            at: ev.time,
        };
        self.resolved
            .remember((ev.client, ev.qtype), resolved, self.max_clients * 2);
    }

    /// The reading of `name` as a later candidate (or a retry) of walk `w`, if it is one.
    /// Matches only at the walk's own base boundary against the shape's entries, which is all
    /// a continuation can be: cheaper than decomposing the whole name, and the common case
    /// (most queries continue a walk).
    fn continuation(
        &self,
        name: &str,
        w: &Walk,
        confirmed_ns: Option<&str>,
        resent: bool,
    ) -> Option<Reading> {
        let b = w.base().len();
        let nb = name.as_bytes();
        if nb.len() < b || !eq_ignore_case(&nb[..b], w.base().as_bytes()) {
            return None;
        }
        if nb.len() == b {
            return w.accepts(ABS, resent).then_some(Reading {
                base_len: b as u16,
                pos: ABS,
                slot: SuffixSlot::Absolute,
                ns_end: 0,
            });
        }
        if nb[b] != b'.' || b > u16::MAX as usize - 64 {
            return None;
        }
        let suffix = &name[b + 1..];
        for (i, p) in self.patterns.iter().enumerate() {
            if i >= ABS as usize {
                break;
            }
            let ns_end = if p.wildcard {
                let Some((label, rest)) = suffix.split_once('.') else {
                    continue;
                };
                let same_ns =
                    |other: Option<&str>| other.is_none_or(|o| o.eq_ignore_ascii_case(label));
                if !rest.eq_ignore_ascii_case(&p.tail)
                    || !is_rfc1123_label(label)
                    || !same_ns(w.namespace.as_deref())
                    || !same_ns(confirmed_ns)
                {
                    continue;
                }
                (b + 1 + label.len()) as u16
            } else {
                if !suffix.eq_ignore_ascii_case(&p.tail) {
                    continue;
                }
                0
            };
            if w.accepts(i as u8, resent) {
                return Some(Reading {
                    base_len: b as u16,
                    pos: i as u8,
                    slot: p.slot,
                    ns_end,
                });
            }
        }
        None
    }

    /// The [`ReadingMemo`] slot that holds `name`'s bases, filled now if it did not.
    fn remember_bases(&mut self, name: &str) -> usize {
        let nb = name.as_bytes();
        let hash = base_hash(nb);
        let i = match self.memo.find(nb, hash) {
            Ok(i) => return i,
            Err(i) => i,
        };
        let bases = self.candidate_bases(name);
        debug_assert_eq!(bases.hash[0], hash);
        self.memo.claim(i, hash);
        let slot = &mut self.memo.slots[i];
        slot.name.clear();
        slot.name.extend_from_slice(nb);
        slot.bases = bases;
        slot.readings = [None; MAX_READINGS];
        slot.namespaces = Default::default();
        slot.known = 0;
        // A name under no suffix of the shape (`candidate_bases` found only the name itself)
        // has no other reading: no decomposition to try.
        slot.exhausted = bases.n == 1;
        debug_assert!(bases.n > 1 || self.shape.decompose(name).next().is_none());
        i
    }

    /// The bases `name` can be a candidate of: the name itself (the absolute candidate) and
    /// the name less each suffix of the shape it ends with (for a `*` entry, less one more
    /// label, the namespace). At most [`MAX_BASES`]. Each with its [`base_hash`], all from
    /// one pass over the name: every base is a prefix of it, and FNV is a running hash.
    fn candidate_bases(&self, name: &str) -> Bases {
        let nb = name.as_bytes();
        let mut out = Bases {
            len: [0; MAX_BASES],
            hash: [0; MAX_BASES],
            n: 1,
        };
        out.len[0] = nb.len().min(u16::MAX as usize) as u16;
        for p in &self.patterns {
            if out.n == MAX_BASES {
                break;
            }
            let t = p.tail.len();
            // `<base>.<tail>`: the tail after a label boundary, with something before it.
            if nb.len() < t + 2
                || nb[nb.len() - t - 1] != b'.'
                || !nb[nb.len() - t..].eq_ignore_ascii_case(p.tail.as_bytes())
            {
                continue;
            }
            let mut end = nb.len() - t - 1;
            if p.wildcard {
                // `<base>.<namespace>.<tail>`: drop the namespace label too.
                match nb[..end].iter().rposition(|&b| b == b'.') {
                    Some(dot) if dot > 0 => end = dot,
                    _ => continue,
                }
            }
            if end > 0 && end <= u16::MAX as usize && !out.len[..out.n].contains(&(end as u16)) {
                out.len[out.n] = end as u16;
                out.n += 1;
            }
        }
        // Hash the prefixes shortest first, each continuing the previous one's state.
        let mut order = [0u8; MAX_BASES];
        for (i, o) in order[..out.n].iter_mut().enumerate() {
            *o = i as u8;
        }
        order[..out.n].sort_unstable_by_key(|&i| out.len[i as usize]);
        let mut h = PrefixHash::new(&nb[..out.len[0] as usize]);
        for &i in &order[..out.n] {
            out.hash[i as usize] = h.at(out.len[i as usize] as usize);
        }
        out
    }

    fn learn_namespace(&mut self, client: IpAddr, ns: &Arc<str>, confirmed: bool) {
        if let Some(c) = self.clients.get_mut(&client) {
            let mut moved = false;
            if confirmed || !c.confirmed {
                if !Arc::ptr_eq(&c.namespace, ns) {
                    c.namespace = ns.clone();
                    moved = true;
                }
                moved |= confirmed && !c.confirmed;
                c.confirmed |= confirmed;
            }
            if moved {
                self.clients.changed(client);
            }
            return;
        }
        self.clients.insert_new(
            client,
            ClientInfo {
                namespace: ns.clone(),
                confirmed,
            },
        );
    }

    /// The slot of the newest open walk of `key`'s chain, or `NIL`.
    fn chain_head(&self, key: &WalkKey) -> u32 {
        self.by_key
            .find(self.key_hasher.hash_one(key), |&j| {
                slot_key(&self.slots, j) == *key
            })
            .copied()
            .unwrap_or(NIL)
    }

    fn insert(&mut self, walk: Walk) -> u32 {
        let key = walk.key();
        let (slots, hasher) = (&self.slots, &self.key_hasher);
        // One probe: the chain's entry, or room made for it (a rehash reads only open walks).
        let entry = self.by_key.entry(
            hasher.hash_one(key),
            |&j| slot_key(slots, j) == key,
            |&j| hasher.hash_one(slot_key(slots, j)),
        );
        let head = match &entry {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get(),
            hashbrown::hash_table::Entry::Vacant(_) => NIL,
        };
        let list = if walk.awaiting_retry {
            WAITING
        } else {
            ANSWERED
        };
        let slot = Slot {
            walk: Some(walk),
            lru_prev: NIL,
            lru_next: NIL,
            key_next: head,
            list: list as u8,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        // The new walk heads its chain.
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = i,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(i);
            }
        }
        self.open_kinds.add(key.0, key.1);
        self.lru_push_back(i);
        self.open += 1;
        i
    }

    /// Walk `i` was active: to the tail of the list its last query puts it on.
    fn touch(&mut self, i: u32) {
        let slot = &self.slots[i as usize];
        let awaiting = slot.walk.as_ref().is_some_and(|w| w.awaiting_retry);
        let list = if awaiting { WAITING } else { ANSWERED };
        if slot.list as usize != list || self.lru[list].tail != i {
            self.lru_unlink(i);
            self.slots[i as usize].list = list as u8;
            self.lru_push_back(i);
        }
    }

    /// Onto the tail of the slot's `list`.
    fn lru_push_back(&mut self, i: u32) {
        let list = self.slots[i as usize].list as usize;
        let tail = self.lru[list].tail;
        self.slots[i as usize].lru_prev = tail;
        self.slots[i as usize].lru_next = NIL;
        if tail != NIL {
            self.slots[tail as usize].lru_next = i;
        } else {
            self.lru[list].head = i;
        }
        self.lru[list].tail = i;
    }

    fn lru_unlink(&mut self, i: u32) {
        let slot = &self.slots[i as usize];
        let (p, n, list) = (slot.lru_prev, slot.lru_next, slot.list as usize);
        if p != NIL {
            self.slots[p as usize].lru_next = n;
        } else {
            self.lru[list].head = n;
        }
        if n != NIL {
            self.slots[n as usize].lru_prev = p;
        } else {
            self.lru[list].tail = p;
        }
    }

    /// Remove walk `i` and emit its lookup; `forced` overrides the outcome (eviction).
    fn close(&mut self, i: u32, forced: Option<Outcome>) {
        self.lru_unlink(i);
        let key = slot_key(&self.slots, i);
        let next = self.slots[i as usize].key_next;
        // Unlink from the key chain (short: the walks one client has open for one base),
        // while the slot still holds the walk that the chain's entry is compared with.
        let hash = self.key_hasher.hash_one(key);
        let slots = &self.slots;
        let mut head = NIL;
        if let Ok(entry) = self.by_key.find_entry(hash, |&j| slot_key(slots, j) == key) {
            head = *entry.get();
            if head == i {
                if next == NIL {
                    entry.remove();
                } else {
                    *entry.into_mut() = next;
                }
            }
        }
        let w = self.slots[i as usize]
            .walk
            .take()
            .expect("closing an open walk");
        if head != i {
            let mut c = head;
            while c != NIL {
                let cn = self.slots[c as usize].key_next;
                if cn == i {
                    self.slots[c as usize].key_next = next;
                    break;
                }
                c = cn;
            }
        }
        self.open_kinds.remove(key.0, key.1);
        self.free.push(i);
        self.open -= 1;
        if let Some(b) = &self.budget {
            b.release(Part::TrackerWalks, walk_bytes(w.base().len()));
        }
        self.emit(w, forced);
    }

    /// Emit the lookup of a walk that has ended; `forced` overrides the outcome (eviction).
    fn emit(&mut self, w: Walk, forced: Option<Outcome>) {
        let (outcome, last_answer) = match forced {
            Some(o) => (o, o),
            None => w.outcome(),
        };
        let mut suffix_wasted = w.suffix_queries;
        suffix_wasted[w.last_slot as usize] -= w.on_last;
        let namespace = w
            .namespace
            .or_else(|| self.clients.get(&w.client).map(|c| c.namespace.clone()));
        self.closed.push(Lookup {
            client: w.client,
            namespace,
            base: w.base_dotted,
            qtype: w.qtype,
            queries: w.queries,
            wasted: w.queries - w.on_last,
            retries: w.retries,
            outcome,
            last_answer,
            start: w.start,
            end: w.last_activity,
            duration: w.last_answer_at.map(|a| a.since(w.start)),
            suffix_queries: w.suffix_queries,
            suffix_wasted,
            resolved_by: (outcome == Outcome::Resolved).then_some(w.last_slot),
            upstream_queries: w.upstream,
            upstream_wasted: w.upstream - w.upstream_on_last,
            shortcut_answers: w.shortcut,
            nxdomain: w.nxdomain,
            last_search_index: (w.last_pos != ABS).then_some(w.last_pos),
        });
    }
}

/// A lookup's base name: lowercase, with its trailing dot, shared. A busy client asks the same
/// few names over and over, and each of its lookups, the walks behind them and the report's
/// top-name table hold the one copy [`BaseNames`] made, not an allocation each.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BaseName(Arc<str>);

impl BaseName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for BaseName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for BaseName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for BaseName {
    fn from(s: &str) -> Self {
        BaseName(s.into())
    }
}

impl std::fmt::Debug for BaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::fmt::Display for BaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for BaseName {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for BaseName {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

/// The base names recently made, by [`base_hash`]: a walk of a name seen before shares its
/// copy. Bounded: when full, the names nothing else holds any more are dropped, and if most
/// are still held the table starts over (those names live on where they are held).
#[derive(Default)]
struct BaseNames {
    by_hash: HashMap<u64, BaseName>,
    /// Where a new name is lowercased before its one allocation.
    scratch: String,
}

impl BaseNames {
    const CAP: usize = 4096;

    /// The shared copy of `base` (any case, without the dot), whose [`base_hash`] is `hash`.
    fn intern(&mut self, base: &str, hash: u64) -> BaseName {
        if let Some(n) = self.by_hash.get(&hash) {
            let b = n.as_bytes();
            if b.len() == base.len() + 1 && eq_ignore_case(&b[..base.len()], base.as_bytes()) {
                return n.clone();
            }
        }
        self.scratch.clear();
        self.scratch.push_str(base);
        self.scratch.make_ascii_lowercase();
        self.scratch.push('.');
        let name = BaseName(self.scratch.as_str().into());
        if self.by_hash.len() >= Self::CAP {
            self.by_hash.retain(|_, n| Arc::strong_count(&n.0) > 1);
            if self.by_hash.len() >= Self::CAP / 2 {
                self.by_hash.clear();
            }
        }
        // A hash shared with another name: the newer one takes the entry.
        self.by_hash.insert(hash, name.clone());
        name
    }
}

/// The namespaces seen, lowercase, one shared copy each: a walk, the client's entry, its
/// lookups and the report's top-client entry hold that copy, not an allocation each.
/// Bounded: a cluster has few namespaces, and should a capture hold more the table starts
/// over (the copies live on where they are held).
#[derive(Default)]
struct Namespaces {
    set: hashbrown::HashSet<Arc<str>>,
    /// Where a name is lowercased before it is looked up.
    scratch: String,
}

impl Namespaces {
    const CAP: usize = 4096;

    /// The shared lowercase copy of namespace `ns` (any case).
    fn intern(&mut self, ns: &str) -> Arc<str> {
        self.scratch.clear();
        self.scratch.push_str(ns);
        self.scratch.make_ascii_lowercase();
        if let Some(n) = self.set.get(self.scratch.as_str()) {
            return n.clone();
        }
        if self.set.len() >= Self::CAP {
            self.set.clear();
        }
        let n: Arc<str> = self.scratch.as_str().into();
        self.set.insert(n.clone());
        n
    }
}

/// A name that answered with addresses to a client. The name is kept as its [`base_hash`] and
/// length, not its text: the hash pairs only one client's own A and AAAA queries, so a
/// collision could only mislead that client's own figures.
#[derive(Clone, Copy)]
struct Resolved {
    name_hash: u64,
    name_len: u16,
    port: Option<u16>,
    at: Timestamp,
}

/// [`Resolved`] by (client, A or AAAA). Every positive answer is remembered, and a client's
/// queries come in runs (a pod asking again, its A and AAAA of one lookup): the key remembered
/// last is kept apart from the map and only goes into it when another key comes, so a run
/// costs a comparison an answer instead of a hash and a probe.
#[derive(Default)]
struct ResolvedNames {
    last: Option<((IpAddr, u16), Resolved)>,
    map: HashMap<(IpAddr, u16), Resolved>,
}

impl ResolvedNames {
    /// Remember `r` for `key`; the map holds at most `bound` keys (a hint only: cleared when
    /// full, without an LRU of its own).
    fn remember(&mut self, key: (IpAddr, u16), r: Resolved, bound: usize) {
        match &mut self.last {
            Some((k, last)) if *k == key => *last = r,
            last => {
                if let Some((k, older)) = last.replace((key, r)) {
                    if self.map.len() >= bound {
                        self.map.clear();
                    }
                    self.map.insert(k, older);
                }
            }
        }
    }

    fn get(&self, key: (IpAddr, u16)) -> Option<&Resolved> {
        match &self.last {
            Some((k, r)) if *k == key => Some(r),
            _ => self.map.get(&key),
        }
    }
}

/// Where the query being accounted goes: an open walk, or one that ends with this very query
/// and is never stored. On the stack for one query: boxing the walk would cost the allocation
/// this saves.
#[allow(clippy::large_enum_variant)]
enum Target {
    Open(u32),
    Passing(Walk),
}

/// Open walks counted per (client, qtype) bucket. A query whose bucket is at 0 has no walk
/// chain of its client and type in `by_key`, and `observe` skips the lookup of each of its
/// bases' chains in three places: the walk it may continue, the earlier walk of its base it
/// may end, and (for a positive answer) the other address type's walks it may end. Most
/// queries of a busy proxy are cached answers from clients with nothing open of that type.
/// Two kinds that share a bucket only cost those lookups. The counters (16 KiB) are made at
/// the first open walk: `analyze --pod-dns-config` keeps a tracker per workload.
#[derive(Default)]
struct OpenKinds {
    counts: Vec<u32>,
}

const OPEN_KIND_BUCKETS: usize = 4096;
const _: () = assert!(OPEN_KIND_BUCKETS == 1 << 12);

impl OpenKinds {
    fn bucket(client: IpAddr, qtype: u16) -> usize {
        bucket_4096(ip_word(client) ^ (u64::from(qtype) << 40))
    }

    /// May a walk of this client and type be open?
    fn any(&self, client: IpAddr, qtype: u16) -> bool {
        self.counts
            .get(Self::bucket(client, qtype))
            .is_some_and(|&c| c != 0)
    }

    fn add(&mut self, client: IpAddr, qtype: u16) {
        if self.counts.is_empty() {
            self.counts = vec![0; OPEN_KIND_BUCKETS];
        }
        self.counts[Self::bucket(client, qtype)] += 1;
    }

    fn remove(&mut self, client: IpAddr, qtype: u16) {
        let c = &mut self.counts[Self::bucket(client, qtype)];
        debug_assert!(*c > 0, "a walk closed that was never counted open");
        *c -= 1;
    }

    /// Walks counted open in all (`finish` and the tests hold it to the walks open).
    fn total(&self) -> usize {
        self.counts.iter().map(|&c| c as usize).sum()
    }
}

/// The other address type of a `getaddrinfo(AF_UNSPEC)` pair.
fn sibling(qtype: u16) -> Option<u16> {
    match qtype {
        1 => Some(28),
        28 => Some(1),
        _ => None,
    }
}

impl Walk {
    /// The key of its chain in `WalkTracker::by_key`.
    fn key(&self) -> WalkKey {
        (self.client, self.qtype, self.base_hash)
    }

    /// How the lookup ended: by its last answer, except that a last NXDOMAIN after a candidate
    /// that ended NODATA is NODATA (the name exists, without records of the type; glibc's
    /// `got_nodata` in res_query.c, c-ares' `ever_got_nodata`), else after one that ended
    /// SERVFAIL is SERVFAIL (glibc's `got_servfail`): NXDOMAIN only when no candidate before
    /// the last ended NODATA or SERVFAIL. Second, what the last answer alone says.
    fn outcome(&self) -> (Outcome, Outcome) {
        let last = match (self.last_rcode, self.last_answers) {
            (Some(0), Some(0)) => Outcome::NoData,
            (Some(0), _) => Outcome::Resolved,
            (Some(3), _) => Outcome::NxDomain,
            (Some(2), _) => Outcome::ServFail,
            (Some(5), _) => Outcome::Refused,
            (Some(_), _) => Outcome::Error,
            (None, _) if self.any_answer => Outcome::Timeout,
            (None, _) => Outcome::Unanswered,
        };
        (
            Outcome::of_walk(last, self.nodata_before, self.servfail_before),
            last,
        )
    }

    /// The base without its trailing dot.
    fn base(&self) -> &str {
        &self.base_dotted[..self.base_dotted.len() - 1]
    }

    /// Can a candidate at `pos` belong to this walk: the same candidate again (a retry), a
    /// search domain further down than any sent, or the absolute name not yet sent?
    /// `resent`: the stub is sending the pair again on the walk's socket (`pair_awaits_retry`).
    fn accepts(&self, pos: u8, resent: bool) -> bool {
        if pos == self.last_pos {
            // The same candidate again is a retry only when the last try said nothing
            // definite (no answer, SERVFAIL, REFUSED), or when the stub sends the pair again;
            // after NXDOMAIN or NODATA a stub moves on, so the same name again is a new lookup.
            return resent || self.last_rcode.is_none_or(|r| r != 0 && r != 3);
        }
        if pos == ABS {
            return !self.abs_seen;
        }
        // An absolute name sent first may be followed by the search list; sent after search
        // candidates it ends the walk, so no open walk has that shape.
        self.max_search.is_none_or(|m| pos > m)
    }
}

#[cfg(test)]
mod hash_tests {
    use super::*;

    /// Put a name the memo does not hold into the slot `find` gives, as `remember_bases` does.
    fn fill(m: &mut ReadingMemo, name: &[u8], hash: u64) -> usize {
        let i = m.find(name, hash).expect_err("a new name");
        m.claim(i, hash);
        m.slots[i].name = name.to_vec();
        i
    }

    /// Keys remembered in turn each give their own latest name, the one held apart as the last
    /// key and the ones put into the map when another key came; a full map starts again.
    #[test]
    fn resolved_names_give_each_key_its_latest_name() {
        let r = |name_hash, at| Resolved {
            name_hash,
            name_len: 3,
            port: None,
            at: Timestamp(at),
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut names = ResolvedNames::default();
        names.remember((a, 1), r(1, 1), 8);
        names.remember((a, 1), r(2, 2), 8);
        names.remember((b, 1), r(3, 3), 8);
        names.remember((a, 28), r(4, 4), 8);
        names.remember((a, 1), r(5, 5), 8);
        let got = |k| names.get(k).map(|r| (r.name_hash, r.at.0));
        assert_eq!(got((a, 1)), Some((5, 5)));
        assert_eq!(got((b, 1)), Some((3, 3)));
        assert_eq!(got((a, 28)), Some((4, 4)));
        assert_eq!(got((b, 28)), None);
        // Bound 1: the map is cleared before each key goes in, the last one is kept.
        let mut small = ResolvedNames::default();
        small.remember((a, 1), r(1, 1), 1);
        small.remember((b, 1), r(2, 2), 1);
        small.remember((a, 28), r(3, 3), 1);
        assert!(small.get((a, 1)).is_none());
        assert_eq!(small.get((b, 1)).map(|r| r.name_hash), Some(2));
        assert_eq!(small.get((a, 28)).map(|r| r.name_hash), Some(3));
    }

    /// A slot is found by its hash and its bytes: another name with the same hash (made up
    /// here) is a miss, the name in other case a hit; a full set gives its least recently used.
    #[test]
    fn the_reading_memo_tells_names_of_one_hash_apart() {
        let mut m = ReadingMemo::new(1, 1);
        let a = fill(&mut m, b"a.example", 7);
        assert!(m.find(b"b.example", 7).is_err());
        assert_eq!(m.find(b"A.Example", 7), Ok(a));
        // Filling the set: the slot used least recently is the one replaced.
        let b = fill(&mut m, b"b.example", 7);
        let c = fill(&mut m, b"c.example", 8);
        assert_eq!(m.find(b"a.example", 7), Ok(a));
        let d = fill(&mut m, b"d.example", 9);
        let e = fill(&mut m, b"e.example", 10);
        assert_eq!(e, b, "the least recently used slot is replaced");
        assert!(m.find(b"b.example", 7).is_err());
        assert_eq!(m.find(b"c.example", 8), Ok(c));
        assert_eq!(m.find(b"d.example", 9), Ok(d));
        // A name longer than the memo keeps takes the slot kept for those, never a hit.
        let long = vec![b'x'; MEMO_NAME_MAX + 1];
        let l = fill(&mut m, &long, 11);
        assert_eq!(l, m.slots.len() - 1);
        assert!(m.find(&long, 11).is_err());
    }

    /// With several sets, a name goes to the set its hash masks to, in the way `find` gave,
    /// and is found there; another set's names do not disturb it.
    #[test]
    fn the_reading_memo_keeps_a_name_in_the_set_of_its_hash() {
        let mut m = ReadingMemo::new(4, 4);
        let a = fill(&mut m, b"a.example", 1);
        let b = fill(&mut m, b"b.example", 5);
        let c = fill(&mut m, b"c.example", 2);
        assert_eq!(
            (a, b, c),
            (4, 5, 8),
            "set 1's first two ways, then set 2's first"
        );
        for n in 0..8u64 {
            fill(&mut m, format!("n{n}.example").as_bytes(), 3 + 4 * n);
        }
        assert_eq!(m.find(b"a.example", 1), Ok(a));
        assert_eq!(m.find(b"B.EXAMPLE", 5), Ok(b));
        assert_eq!(m.find(b"c.example", 2), Ok(c));
        assert!(
            m.find(b"a.example", 5).is_err(),
            "a name is found by its own hash"
        );
    }

    /// The memo starts small and grows while it misses, up to its bound.
    #[test]
    fn the_reading_memo_grows_with_the_names_it_misses() {
        // Ask 100,000 names, `distinct` of them in turn, keeping each one missed.
        let ask = |distinct: u64| {
            let mut m = ReadingMemo::new(MEMO_SETS_START, MEMO_SETS);
            for n in 0..100_000u64 {
                let name = format!("n{}.example", n % distinct);
                let hash = base_hash(name.as_bytes());
                if let Err(i) = m.find(name.as_bytes(), hash) {
                    m.claim(i, hash);
                    m.slots[i].name = name.into_bytes();
                }
            }
            m
        };
        let many = ask(100_000);
        assert_eq!(many.sets, MEMO_SETS);
        assert_eq!(many.slots.len(), MEMO_SETS * MEMO_WAYS + 1);
        assert_eq!(
            ask(8).sets,
            MEMO_SETS_START,
            "eight names fit the first memo"
        );
    }

    /// The client numbers wrap: a ring whose numbers pass `u32::MAX` finds the newest
    /// clients, forgets the oldest and keeps one table entry for each client it holds.
    #[test]
    fn client_hints_find_their_clients_across_the_number_wrap() {
        let mut h = ClientHints::new(4);
        h.first = u32::MAX - 5;
        let ip = |i: u32| IpAddr::from((10u32 << 24 | i).to_be_bytes());
        let info = |i: u32| ClientInfo {
            namespace: format!("ns-{i}").into(),
            confirmed: i % 2 == 0,
        };
        for i in 0..20 {
            h.insert_new(ip(i), info(i));
            assert_eq!(
                (h.len(), h.by_addr.len()),
                ((i + 1).min(4) as usize, h.len())
            );
            for j in 0..=i {
                let kept = j + 4 > i;
                assert_eq!(h.contains_key(&ip(j)), kept, "client {j} after {i}");
                if kept {
                    assert_eq!(&*h.get(&ip(j)).unwrap().namespace, format!("ns-{j}"));
                }
            }
        }
        h.get_mut(&ip(18)).unwrap().confirmed = true;
        assert!(h.get(&ip(18)).unwrap().confirmed && !h.get(&ip(17)).unwrap().confirmed);
        // The client found last is remembered, is not found once forgotten, and another
        // client asked right after it is not taken for it.
        assert!(h.contains_key(&ip(16)));
        let remembered = h.last.load(Ordering::Relaxed);
        assert_eq!(h.ring[remembered.wrapping_sub(h.first) as usize].0, ip(16));
        assert_eq!(&*h.get(&ip(17)).unwrap().namespace, "ns-17");
        assert!(h.contains_key(&ip(16)));
        h.insert_new(ip(20), info(20));
        assert!(!h.contains_key(&ip(16)));
        assert_eq!(&*h.get(&ip(20)).unwrap().namespace, "ns-20");
        assert_eq!(&*h.get(&ip(17)).unwrap().namespace, "ns-17");
    }

    /// Past `max_clients` the tracker forgets the client it learnt first, one for one: the
    /// map stays at its bound and the newest clients keep their namespaces. (It forgot the
    /// table's first key, which cost a scan from the table's start each time: quadratic on a
    /// capture of a million clients.)
    #[test]
    fn forgetting_a_client_scanned_the_client_table_from_its_start() {
        let cfg = TrackerConfig {
            idle: std::time::Duration::from_secs(2),
            max_open_walks: 10,
            namespace_series: 50,
        };
        let cluster = crate::config::ClusterConfig::kubernetes("cluster.local");
        let mut t = WalkTracker::new(SearchShape::new(&cluster), &cfg);
        let bound = t.max_clients;
        let ns: Arc<str> = "team-a".into();
        let ip = |i: u32| IpAddr::from((10u32 << 24 | i).to_be_bytes());
        for i in 0..(bound as u32 + 500) {
            t.learn_namespace(ip(i), &ns, false);
            assert!(t.clients.len() <= bound);
        }
        assert_eq!(t.clients.len(), bound);
        assert_eq!(t.clients.by_addr.len(), bound);
        assert!(!t.clients.contains_key(&ip(0)) && !t.clients.contains_key(&ip(499)));
        assert!(
            t.clients.contains_key(&ip(500)) && t.clients.contains_key(&ip(bound as u32 + 499))
        );
        // A client learnt again is not queued twice.
        t.learn_namespace(ip(600), &ns, true);
        assert_eq!(t.clients.len(), bound);
        assert!(t.clients.get(&ip(600)).is_some_and(|c| c.confirmed));
        assert!(
            t.clients.contains_key(&ip(500)),
            "nobody was forgotten for it"
        );
    }

    /// The hash by its definition: the lowercased bytes in zero-padded words, then the length.
    fn hash_by_definition(bytes: &[u8]) -> u64 {
        let lower = bytes.to_ascii_lowercase();
        let mut state = PrefixHash::SEED;
        let mut chunks = lower.chunks_exact(8);
        for c in &mut chunks {
            state = PrefixHash::mix(state, u64::from_le_bytes(c.try_into().unwrap()));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        let h = PrefixHash::mix(state, u64::from_le_bytes(tail));
        let mut h = h ^ (bytes.len() as u64).wrapping_mul(PrefixHash::K);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    #[test]
    fn whole_name_hashes_equal_the_definition_at_every_length() {
        let name = b"Svc-12.Default.svc.CLUSTER.local\\255x\xc1.some-Longer-label.Example.";
        for end in 0..=name.len() {
            for start in 0..end.min(9) {
                let bytes = &name[start..end];
                assert_eq!(
                    base_hash(bytes),
                    hash_by_definition(bytes),
                    "{start}..{end}"
                );
                assert_eq!(base_hash(bytes), PrefixHash::new(bytes).at(bytes.len()));
            }
        }
    }

    #[test]
    fn prefix_hashes_of_short_tails_equal_the_zero_padded_definition() {
        let name = b"Svc-12.Default.svc.CLUSTER.local\\255x\xc1";
        for end in 0..=name.len() {
            let bytes = &name[..end];
            let mut running = PrefixHash::new(bytes);
            for len in 0..=end {
                assert_eq!(
                    running.at(len),
                    hash_by_definition(&bytes[..len]),
                    "prefix {len} of {end} bytes"
                );
            }
        }
    }

    #[test]
    fn eq_ignore_case_agrees_with_the_standard_library() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Bytes around the capitals' edges ('@', 'A', 'Z', '[', '`', 'a', 'z', '{') and high bytes.
        let alphabet = b"@AZ[`az{.-0\xc1\xe1\xff";
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let a: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() as usize) % alphabet.len()])
                .collect();
            let mut b = a.clone();
            match next() % 3 {
                0 => b.make_ascii_uppercase(),
                1 if len > 0 => {
                    let i = (next() as usize) % len;
                    b[i] = alphabet[(next() as usize) % alphabet.len()];
                }
                _ => {}
            }
            assert_eq!(
                eq_ignore_case(&a, &b),
                a.eq_ignore_ascii_case(&b),
                "{a:?} {b:?}"
            );
            assert_eq!(
                eq_ignore_case(&a, &b[..len / 2]),
                a.eq_ignore_ascii_case(&b[..len / 2])
            );
        }
    }

    #[test]
    fn prefix_hashes_equal_the_hash_of_each_prefix_whatever_the_case() {
        let name = b"Api.GitHub.com.Default.svc.cluster.local";
        let lower = name.to_ascii_lowercase();
        let mut running = PrefixHash::new(name);
        for len in 0..=name.len() {
            let h = running.at(len);
            assert_eq!(h, base_hash(&name[..len]), "prefix {len}");
            assert_eq!(h, base_hash(&lower[..len]), "lowercase prefix {len}");
        }
        // Prefixes differ from each other, trailing NUL bytes included.
        let all: std::collections::HashSet<u64> =
            (0..=name.len()).map(|n| base_hash(&name[..n])).collect();
        assert_eq!(all.len(), name.len() + 1);
        assert_ne!(base_hash(b"ab"), base_hash(b"ab\0"));
    }
}
