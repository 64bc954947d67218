//! Cache of response wire bytes (DESIGN §3).
//!
//! Keyed by (qname case-insensitively, qtype, qclass, DO, CD). An entry holds the upstream's
//! response with its OPT record removed, the offsets of every TTL field, and when it was stored.
//! A hit copies the bytes into the caller's buffer and patches them in place: the client's ID,
//! the client's question bytes (so 0x20 case randomisation survives), TTLs less the entry's age,
//! and the client's EDNS. Nothing on the hit path parses the message or allocates.
//!
//! The cache is sharded by key hash; each shard is a hash table of slot indices plus a CLOCK
//! ring for eviction (a second-chance approximation of LRU with O(1) bookkeeping per hit).

use std::time::Instant;

use hashbrown::HashTable;
use parking_lot::Mutex;

use crate::budget::{MemoryBudget, Part};
use crate::config::CacheConfig;
use crate::wire::{self, QueryView, ResponseInfo, HEADER_LEN};

const SHARDS: usize = 64;
/// RFC 8767 §4: a stale answer carries a TTL of 30 seconds.
pub const STALE_TTL: u32 = 30;
/// Prefetch an entry once it was hit at least this often and less than this share of its
/// TTL remains (the same rule as unbound's prefetch: the last 10%).
const PREFETCH_MIN_HITS: u32 = 2;
const PREFETCH_REMAINING_DIVISOR: u32 = 10;

/// The cache key's flag byte.
const KEY_DO: u8 = 1;
const KEY_CD: u8 = 2;

/// Borrowed view of a lookup key, built from the client's query without copying.
#[derive(Clone, Copy, Debug)]
pub struct Key<'a> {
    /// Question name in wire form, any case.
    pub name: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub flags: u8,
}

impl<'a> Key<'a> {
    pub fn of_query(buf: &'a [u8], q: &QueryView) -> Key<'a> {
        let mut flags = 0;
        if q.dnssec_ok() {
            flags |= KEY_DO;
        }
        if q.checking_disabled() {
            flags |= KEY_CD;
        }
        Key {
            name: q.question.name_bytes(buf),
            qtype: q.question.qtype,
            qclass: q.question.qclass,
            flags,
        }
    }

    pub fn hash(&self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = hash_state().build_hasher();
        // Lowercase (RFC 4343) 8-byte words, the last one zero-padded: every byte of a word
        // folded at once, as a cache hit hashes its name on every answer.
        let mut words = self.name.chunks_exact(8);
        for w in &mut words {
            let w = u64::from_le_bytes(w.try_into().expect("eight bytes"));
            h.write_u64(wire::ascii_lowercase_word(w));
        }
        if !words.remainder().is_empty() {
            h.write_u64(wire::ascii_lowercase_word(wire::tail_word(self.name)));
        }
        h.write_u16(self.qtype);
        h.write_u16(self.qclass);
        h.write_u8(self.flags);
        h.finish()
    }

    /// An owned copy, for the in-flight table.
    pub fn to_owned_key(&self) -> OwnedKey {
        let mut name = self.name.to_vec();
        name.make_ascii_lowercase();
        OwnedKey {
            name,
            qtype: self.qtype,
            qclass: self.qclass,
            flags: self.flags,
        }
    }
}

/// The keys of the cache's hash, random for each process: names are chosen by whoever asks,
/// and with fixed keys they could be chosen to collide (one long probe sequence in a shard).
fn hash_state() -> &'static ahash::RandomState {
    static STATE: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    STATE.get_or_init(ahash::RandomState::new)
}

/// Key of the in-flight (coalescing) table: lowercase name bytes and the rest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnedKey {
    pub name: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    pub flags: u8,
}

/// A response ready to be patched for any client that asked the same question.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The response with its OPT removed; TTLs already capped.
    bytes: Box<[u8]>,
    ttl_offsets: Box<[u16]>,
    /// Seconds the entry is fresh for (after caps).
    ttl: u32,
    /// The record type label for metrics: success, denial, or (uncached) other.
    pub kind: AnswerKind,
    /// RCODE with the upstream's OPT extension (RFC 6891 §6.1.3): it survives the OPT's
    /// removal and goes back into each client's OPT.
    pub rcode: u16,
    pub answers: u16,
    /// The upstream set AA. Stored bytes have AA clear: an answer from cache is not
    /// authoritative (as CoreDNS's cache clears it); only the relay of a fresh upstream reply
    /// keeps it.
    authoritative: bool,
    /// Where the additional section starts in `bytes` (OPT removed): what may be left out for
    /// a client whose buffer the whole answer does not fit (RFC 2181 §9).
    additional_at: u16,
    /// Where the authority section starts when it may be left out too (a positive answer's
    /// NS records, `ResponseInfo::authority_only_ns`); else `additional_at`.
    optional_from: u16,
}

/// How an answer reaches the client, which decides its TTLs and AA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The upstream's reply, relayed as it came (AA kept, TTLs as stored).
    Fresh,
    /// From cache, stored this many seconds ago (AA clear, TTLs less the age).
    Cached(u32),
    /// Expired, within the serve-stale window (RFC 8767: TTL `STALE_TTL`).
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// Positive answer (CoreDNS cache label `success`).
    Success,
    /// NXDOMAIN or NODATA with an SOA (CoreDNS cache label `denial`).
    Denial,
    /// Not cacheable: SERVFAIL, no SOA, truncated, zero TTL.
    Uncacheable,
}

impl AnswerKind {
    pub fn as_label(self) -> &'static str {
        match self {
            AnswerKind::Success => "success",
            AnswerKind::Denial => "denial",
            AnswerKind::Uncacheable => "other",
        }
    }
}

impl Answer {
    /// Build from an upstream response that has been checked against its query. TTLs are
    /// capped by the cache settings (RFC 2308 §5 for the negative TTL).
    pub fn from_response(resp: &[u8], info: &ResponseInfo, cfg: &CacheConfig) -> Answer {
        // The message ends with the last record its counts announce (RFC 1035 §4.1). Bytes
        // after it are dropped, as unbound and BIND do, rather than the reply failed: the
        // records read whole, and kept, the junk would sit between them and the OPT `render`
        // appends, so no EDNS client could read the answer (nor a cached copy of it).
        let end = wire::message_end(resp).unwrap_or(resp.len());
        let resp = &resp[..end];
        let mut bytes = Vec::with_capacity(resp.len());
        let mut offsets: Vec<u16> = info.ttl_offsets.clone();
        match info.edns {
            Some(e) => {
                // Remove the OPT RR: each client gets its own (RFC 6891 §7: no OPT in a reply to
                // a query without one). TTL offsets after it move back by its length.
                bytes.extend_from_slice(&resp[..e.start]);
                bytes.extend_from_slice(&resp[e.start + e.len..]);
                let arcount = info.header.arcount - 1;
                bytes[10..12].copy_from_slice(&arcount.to_be_bytes());
                for o in offsets.iter_mut() {
                    if *o as usize > e.start {
                        *o -= e.len as u16;
                    }
                }
            }
            None => bytes.extend_from_slice(resp),
        }
        // Whatever the upstream sent, what we store reads as a response (QR), recursion
        // available (RA): the proxy is the client's recursive server. AA is kept aside.
        let authoritative = info.header.flags & wire::FLAG_AA != 0;
        bytes[2] = (bytes[2] | 0x80) & !((wire::FLAG_AA >> 8) as u8);
        bytes[3] |= 0x80;
        let rcode = info.rcode;
        let (kind, ttl) =
            if info.header.tc() || info.header.opcode() != 0 || rcode > 15 || info.ecs_scoped {
                // An ECS-scoped answer was tailored to one client's network (RFC 7871 §7.3): it is
                // relayed to that client and shared with no one.
                (AnswerKind::Uncacheable, 0)
            } else if rcode == wire::RCODE_NOERROR as u16 && info.header.ancount > 0 {
                let positive = info
                    .min_answer_ttl
                    .unwrap_or(0)
                    .clamp(cfg.min_ttl, cfg.max_ttl);
                match info.negative_ttl {
                    // Answers plus an SOA in the authority: a CNAME chain that ends in NODATA. The
                    // negative TTL bounds the whole answer (RFC 2308 §5), not the CNAME's TTL.
                    Some(neg) => (
                        AnswerKind::Denial,
                        positive.min(neg.min(cfg.negative_max_ttl).max(cfg.min_ttl)),
                    ),
                    None => (AnswerKind::Success, positive),
                }
            } else if rcode == wire::RCODE_NXDOMAIN as u16 || rcode == wire::RCODE_NOERROR as u16 {
                match info.negative_ttl {
                    // RFC 2308 §5: without an SOA a negative answer is not cached.
                    Some(t) => (
                        AnswerKind::Denial,
                        t.min(cfg.negative_max_ttl).max(cfg.min_ttl),
                    ),
                    None => (AnswerKind::Uncacheable, 0),
                }
            } else {
                (AnswerKind::Uncacheable, 0)
            };
        let (kind, ttl) = if ttl == 0 {
            (AnswerKind::Uncacheable, 0)
        } else {
            (kind, ttl)
        };
        if kind != AnswerKind::Uncacheable {
            // Every record's TTL is capped to the entry's lifetime so no client is told to keep
            // a record longer than we do; records below min_ttl are raised.
            wire::rewrite_ttls(&mut bytes, &offsets, |t| t.clamp(cfg.min_ttl.min(ttl), ttl));
        } else {
            // Relayed once as it came, except a TTL with its top bit set, which goes out as the
            // zero it means (RFC 2181 §8).
            wire::rewrite_ttls(&mut bytes, &offsets, |t| t);
        }
        Answer {
            bytes: bytes.into_boxed_slice(),
            ttl_offsets: offsets.into_boxed_slice(),
            ttl,
            kind,
            rcode,
            answers: info.header.ancount,
            authoritative,
            additional_at: info.additional_start.min(u16::MAX as usize) as u16,
            optional_from: if info.authority_only_ns
                && rcode == wire::RCODE_NOERROR as u16
                && info.header.ancount > 0
            {
                info.authority_start
            } else {
                info.additional_start
            }
            .min(u16::MAX as usize) as u16,
        }
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The RCODE `render` gives the client of `q`. An extended RCODE (RFC 6891 §6.1.3; from an
    /// upstream only BADVERS, `upstream::Server::finish` fails the others) cannot reach a
    /// client without EDNS: its four header bits alone would read as another RCODE (BADVERS,
    /// 16, as NOERROR). The upstream failed such a query: SERVFAIL, as for any upstream
    /// failure. (Never cached: `from_response` makes it uncacheable.)
    pub fn rcode_for(&self, q: &QueryView) -> u16 {
        if self.rcode > 15 && q.edns.is_none() {
            wire::RCODE_SERVFAIL as u16
        } else {
            self.rcode
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Write this answer for one client into `out`: its ID, its question bytes, TTLs and AA as
    /// `served` says, its EDNS (with the extended RCODE), and TC when the result does not fit
    /// `max_len` (RFC 1035 §4.2.1, RFC 6891 §7).
    pub fn render(
        &self,
        query: &[u8],
        q: &QueryView,
        served: Served,
        max_len: usize,
        out: &mut Vec<u8>,
    ) {
        let qend = q.question.end();
        if self.bytes.len() < qend
            || self.bytes[HEADER_LEN..qend].len() != query[HEADER_LEN..qend].len()
        {
            // The answer's question differs in length from the client's: cannot happen for a
            // matching key, but never write out of place.
            wire::minimal_response(query, q, wire::RCODE_SERVFAIL, false, out);
            return;
        }
        if self.rcode_for(q) != self.rcode {
            wire::minimal_response(query, q, wire::RCODE_SERVFAIL, false, out);
            return;
        }
        out.clear();
        out.extend_from_slice(&self.bytes);
        wire::set_id(out, q.header.id);
        // RD is echoed from the query (RFC 1035 §4.1.1).
        out[2] = (out[2] & !0x01) | (query[2] & 0x01);
        out[HEADER_LEN..qend].copy_from_slice(&query[HEADER_LEN..qend]);
        match served {
            Served::Fresh if self.authoritative => out[2] |= (wire::FLAG_AA >> 8) as u8,
            Served::Fresh | Served::Cached(0) => {}
            Served::Cached(age) => {
                wire::rewrite_ttls(out, &self.ttl_offsets, |t| t.saturating_sub(age))
            }
            Served::Stale => wire::rewrite_ttls(out, &self.ttl_offsets, |_| STALE_TTL),
        }
        // RFC 6840 §5.8: AD only to a client that asked with AD or DO (the key holds DO, not AD).
        if query[3] & (wire::FLAG_AD as u8) == 0 && !q.dnssec_ok() {
            out[3] &= !(wire::FLAG_AD as u8);
        }
        let opt_len = if q.edns.is_some() { 11 } else { 0 };
        let additional_at = self.additional_at as usize;
        if out.len() + opt_len > max_len && additional_at < out.len() {
            // RFC 2181 §9: what does not fit of the additional section is left out; TC only
            // when the answer or authority sections do not fit.
            out.truncate(additional_at);
            out[10..12].fill(0);
        }
        let optional_from = self.optional_from as usize;
        if out.len() + opt_len > max_len && optional_from < out.len() {
            // A positive answer's NS records are extra as well (RFC 2181 §9, as nsd leaves
            // them out): TC only when the answer section itself does not fit.
            out.truncate(optional_from);
            out[8..12].fill(0);
        }
        if let Some(e) = q.edns {
            wire::push_opt_with_rcode(out, e.dnssec_ok(), self.rcode);
            let ar = u16::from_be_bytes([out[10], out[11]]).wrapping_add(1);
            out[10..12].copy_from_slice(&ar.to_be_bytes());
        }
        if out.len() > max_len {
            wire::minimal_response_ext(query, q, self.rcode, true, out);
            // Keep AA/AD of the real answer off: a truncated reply carries no data.
        }
    }

    fn matches(&self, key: &Key) -> bool {
        let qend = HEADER_LEN + key.name.len();
        self.bytes.len() >= qend + 4
            && wire::names_equal(&self.bytes[HEADER_LEN..qend], key.name)
            && u16::from_be_bytes([self.bytes[qend], self.bytes[qend + 1]]) == key.qtype
            && u16::from_be_bytes([self.bytes[qend + 2], self.bytes[qend + 3]]) == key.qclass
    }
}

/// An entry. It holds its answer itself (not behind an `Arc`): a hit reads the table's
/// control bytes and index, the slot, and the answer's bytes and TTL offsets.
struct Slot {
    hash: u64,
    stored: Instant,
    answer: Answer,
    hits: u32,
    flags: u8,
    referenced: bool,
    prefetching: bool,
}

struct Shard {
    /// Indices into `slots`.
    table: HashTable<u32>,
    /// The entries, in CLOCK order: a new entry takes its victim's place, just behind the
    /// hand, so it lasts a whole turn of it.
    slots: Vec<Slot>,
    hand: usize,
    capacity: usize,
    /// [`entry_bytes`] of the entries held, within `Cache::shard_bytes`.
    bytes: usize,
}

impl Shard {
    /// The slot holding `key` (of `hash`).
    fn find(&self, hash: u64, key: &Key) -> Option<usize> {
        let held = |i: &u32| {
            let s = &self.slots[*i as usize];
            s.hash == hash && s.flags == key.flags && s.answer.matches(key)
        };
        self.table.find(hash, held).map(|&i| i as usize)
    }
}

/// What an entry holds, for the memory budget: the wire bytes and TTL offsets, the slot, and
/// its index in the table.
fn entry_bytes(a: &Answer) -> usize {
    a.len() + 2 * a.ttl_offsets.len() + std::mem::size_of::<Slot>() + 8
}

/// A key's shard, from bits the shard's table uses for neither its bucket (the low bits) nor
/// its tag (the top seven): from the tag's bits, a shard's keys would share two tags, and a
/// probe would read about half the entries of its group to compare them.
fn shard_of(hash: u64) -> usize {
    (hash >> 40) as usize % SHARDS
}

/// What a lookup found.
pub enum Lookup {
    /// Fresh: the answer was written to `out`. `prefetch` asks the caller to refresh it now.
    Hit {
        kind: AnswerKind,
        prefetch: bool,
        rcode: u16,
        answers: u16,
    },
    /// Expired but within the serve-stale window: the caller asks upstream and, if that fails,
    /// calls `serve_stale`.
    Stale,
    Miss,
}

pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    cfg: CacheConfig,
    epoch: Instant,
    /// `server.memory_limit`: the cache holds at most its `cache` share, in bytes, besides
    /// `cache.capacity` entries; each shard a 1/SHARDS of it.
    budget: std::sync::Arc<MemoryBudget>,
    shard_bytes: usize,
}

/// Counts for the `ndots_cache_*` gauges.
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheCounts {
    pub success: usize,
    pub denial: usize,
}

/// Outcome of an insert: whether the answer is now in the cache, and every entry that went to
/// make room for it (one insert may evict several when the bytes budget is tight).
#[derive(Debug, Default, Clone, Copy)]
pub struct Inserted {
    pub stored: bool,
    pub evicted: CacheCounts,
}

impl CacheCounts {
    fn add(&mut self, kind: AnswerKind) {
        match kind {
            AnswerKind::Success => self.success += 1,
            AnswerKind::Denial => self.denial += 1,
            AnswerKind::Uncacheable => {}
        }
    }
}

impl Cache {
    /// A cache bounded by entries only (tests, benches).
    pub fn new(cfg: CacheConfig) -> Cache {
        Cache::with_budget(cfg, std::sync::Arc::new(MemoryBudget::unbounded()))
    }

    /// A cache bounded by entries and by its share of `budget` in bytes.
    pub fn with_budget(cfg: CacheConfig, budget: std::sync::Arc<MemoryBudget>) -> Cache {
        let shard_bytes = budget.share(Part::Cache) / SHARDS;
        let per_shard = cfg.capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                // Grown as entries come, not made at capacity: a few thousand hot entries
                // then sit in a few hundred KB (a hit's cache lines and pages), not spread
                // over tables sized for the whole capacity.
                Mutex::new(Shard {
                    table: HashTable::new(),
                    slots: Vec::new(),
                    hand: 0,
                    capacity: per_shard,
                    bytes: 0,
                })
            })
            .collect();
        Cache {
            shards,
            cfg,
            epoch: Instant::now(),
            budget,
            shard_bytes,
        }
    }

    /// The memory budget this cache is charged to (the proxy's, shared with the other parts).
    pub fn budget(&self) -> &std::sync::Arc<MemoryBudget> {
        &self.budget
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[shard_of(hash)]
    }

    /// Look up the client's question; on a fresh hit the answer for this client is in `out`.
    pub fn lookup(
        &self,
        query: &[u8],
        q: &QueryView,
        now: Instant,
        max_len: usize,
        out: &mut Vec<u8>,
    ) -> Lookup {
        if self.cfg.capacity == 0 {
            return Lookup::Miss;
        }
        let key = Key::of_query(query, q);
        let hash = key.hash();
        let mut shard = self.shard(hash).lock();
        let Some(idx) = shard.find(hash, &key) else {
            return Lookup::Miss;
        };
        let slot = &mut shard.slots[idx];
        let age = now.saturating_duration_since(slot.stored).as_secs();
        let ttl = slot.answer.ttl as u64;
        if age >= ttl {
            return if age < ttl + self.cfg.serve_stale as u64 {
                Lookup::Stale
            } else {
                Lookup::Miss
            };
        }
        slot.referenced = true;
        slot.hits = slot.hits.saturating_add(1);
        let remaining = (ttl - age) as u32;
        let prefetch = self.cfg.prefetch
            && !slot.prefetching
            && slot.hits >= PREFETCH_MIN_HITS
            && slot.answer.ttl >= PREFETCH_REMAINING_DIVISOR
            && remaining <= slot.answer.ttl / PREFETCH_REMAINING_DIVISOR;
        if prefetch {
            slot.prefetching = true;
        }
        // Rendered under the shard lock: the entry is the slot's own.
        let answer = &slot.answer;
        answer.render(query, q, Served::Cached(age as u32), max_len, out);
        Lookup::Hit {
            kind: answer.kind,
            prefetch,
            rcode: answer.rcode,
            answers: answer.answers,
        }
    }

    /// Write an expired entry for this client with the stale TTL (RFC 8767), if one is still
    /// within the serve-stale window.
    pub fn serve_stale(
        &self,
        query: &[u8],
        q: &QueryView,
        now: Instant,
        max_len: usize,
        out: &mut Vec<u8>,
    ) -> Option<(u16, u16)> {
        let key = Key::of_query(query, q);
        let hash = key.hash();
        let shard = self.shard(hash).lock();
        let slot = &shard.slots[shard.find(hash, &key)?];
        let age = now.saturating_duration_since(slot.stored).as_secs();
        if age >= slot.answer.ttl as u64 + self.cfg.serve_stale as u64 {
            return None;
        }
        let answer = &slot.answer;
        answer.render(query, q, Served::Stale, max_len, out);
        Some((answer.rcode, answer.answers))
    }

    /// Store a cacheable answer (a copy of it) under the key of the query it answers. Older
    /// entries are evicted (CLOCK) to stay within `cache.capacity` entries and the shard's
    /// bytes.
    pub fn insert(&self, key: &Key, answer: &Answer, now: Instant) -> Inserted {
        if answer.kind == AnswerKind::Uncacheable || self.cfg.capacity == 0 {
            return Inserted::default();
        }
        let need = entry_bytes(answer);
        if need > self.shard_bytes {
            // Larger than the shard's share of the budget: not stored, counted.
            self.budget.refuse(Part::Cache);
            return Inserted::default();
        }
        let hash = key.hash();
        let mut guard = self.shard(hash).lock();
        let shard = &mut *guard;
        if let Some(idx) = shard.find(hash, key) {
            let s = &mut shard.slots[idx];
            let old = entry_bytes(&s.answer);
            s.answer = answer.clone();
            s.stored = now;
            s.prefetching = false;
            shard.bytes = shard.bytes - old + need;
            self.budget.release(Part::Cache, old);
            self.budget.charge(Part::Cache, need);
            let evicted = self.shrink_to_fit(shard, Some(idx));
            return Inserted {
                stored: true,
                evicted,
            };
        }
        let new = Slot {
            hash,
            stored: now,
            answer: answer.clone(),
            hits: 0,
            flags: key.flags,
            referenced: false,
            prefetching: false,
        };
        shard.bytes += need;
        self.budget.charge(Part::Cache, need);
        if shard.slots.len() < shard.capacity {
            let idx = shard.slots.len() as u32;
            shard.slots.push(new);
            let slots = &shard.slots;
            shard
                .table
                .insert_unique(hash, idx, |&i| slots[i as usize].hash);
            let evicted = self.shrink_to_fit(shard, Some(idx as usize));
            return Inserted {
                stored: true,
                evicted,
            };
        }
        let victim = Self::clock_victim(shard, None);
        let old_hash = shard.slots[victim].hash;
        let old_kind = shard.slots[victim].answer.kind;
        let old_bytes = entry_bytes(&shard.slots[victim].answer);
        if let Ok(e) = shard.table.find_entry(old_hash, |&i| i as usize == victim) {
            e.remove();
        }
        shard.slots[victim] = new;
        shard.bytes -= old_bytes;
        self.budget.release(Part::Cache, old_bytes);
        let slots = &shard.slots;
        shard
            .table
            .insert_unique(hash, victim as u32, |&i| slots[i as usize].hash);
        let mut evicted = self.shrink_to_fit(shard, Some(victim));
        evicted.add(old_kind);
        Inserted {
            stored: true,
            evicted,
        }
    }

    /// CLOCK: skip recently referenced entries once, evict the first that is not (never
    /// `keep`, the entry just stored).
    fn clock_victim(shard: &mut Shard, keep: Option<usize>) -> usize {
        loop {
            let i = shard.hand;
            shard.hand = (shard.hand + 1) % shard.slots.len();
            if Some(i) == keep {
                continue;
            }
            let s = &mut shard.slots[i];
            if s.referenced {
                s.referenced = false;
            } else {
                break i;
            }
        }
    }

    /// Evict entries (CLOCK) until the shard is within its bytes again; `keep` is the entry
    /// just stored. Returns what was evicted, by kind.
    fn shrink_to_fit(&self, shard: &mut Shard, mut keep: Option<usize>) -> CacheCounts {
        let mut evicted = CacheCounts::default();
        while shard.bytes > self.shard_bytes && shard.slots.len() > 1 {
            let victim = Self::clock_victim(shard, keep);
            let v_hash = shard.slots[victim].hash;
            if let Ok(e) = shard.table.find_entry(v_hash, |&i| i as usize == victim) {
                e.remove();
            }
            let last = shard.slots.len() - 1;
            if victim != last {
                // The last slot moves into the victim's place: re-point its index.
                let m_hash = shard.slots[last].hash;
                if let Ok(e) = shard.table.find_entry(m_hash, |&i| i as usize == last) {
                    *e.into_mut() = victim as u32;
                }
                if keep == Some(last) {
                    keep = Some(victim);
                }
            }
            let gone = shard.slots.swap_remove(victim);
            let b = entry_bytes(&gone.answer);
            shard.bytes -= b;
            self.budget.release(Part::Cache, b);
            evicted.add(gone.answer.kind);
            if shard.hand >= shard.slots.len() {
                shard.hand = 0;
            }
        }
        evicted
    }

    /// Mark a refresh of `key` as finished without a new entry (an error, or an answer that
    /// cannot be cached), so a later hit may prefetch again.
    pub fn prefetch_failed(&self, key: &Key) {
        let hash = key.hash();
        let mut shard = self.shard(hash).lock();
        if let Some(idx) = shard.find(hash, key) {
            shard.slots[idx].prefetching = false;
        }
    }

    pub fn counts(&self) -> CacheCounts {
        let mut c = CacheCounts::default();
        for s in self.shards.iter() {
            for slot in s.lock().slots.iter() {
                match slot.answer.kind {
                    AnswerKind::Success => c.success += 1,
                    AnswerKind::Denial => c.denial += 1,
                    AnswerKind::Uncacheable => {}
                }
            }
        }
        c
    }

    /// Seconds since the cache was made; used by tests.
    pub fn uptime(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }
}

impl Drop for Cache {
    /// A cache replaced on reload gives its bytes back to the budget it shares.
    fn drop(&mut self) {
        for s in self.shards.iter() {
            self.budget.release(Part::Cache, s.lock().bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{build_query, parse_query, parse_response};
    use std::sync::Arc;
    use std::time::Duration;

    fn cfg() -> CacheConfig {
        CacheConfig {
            capacity: 1000,
            min_ttl: 0,
            max_ttl: 3600,
            negative_max_ttl: 30,
            serve_stale: 60,
            prefetch: true,
            stale_after: Duration::from_millis(1800),
        }
    }

    /// A response to `query` with one A record of the given TTL.
    fn a_response(query: &[u8], ttl: u32, edns: bool) -> Vec<u8> {
        addresses_response(query, ttl, 1, edns)
    }

    /// A response to `query` with `n` A records of the given TTL.
    fn addresses_response(query: &[u8], ttl: u32, n: u8, edns: bool) -> Vec<u8> {
        let q = parse_query(query).unwrap();
        let mut r = query[..q.question.end()].to_vec();
        r[2] |= 0x80;
        r[3] |= 0x80;
        r[6..8].copy_from_slice(&u16::from(n).to_be_bytes());
        r[10..12].copy_from_slice(&(edns as u16).to_be_bytes());
        for i in 0..n {
            r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            r.extend_from_slice(&ttl.to_be_bytes());
            r.extend_from_slice(&[0, 4, 10, 0, 0, i]);
        }
        if edns {
            wire::push_opt(&mut r, false);
        }
        r
    }

    /// Store the answer `resp` to `q` as the proxy would.
    fn store(cache: &Cache, q: &[u8], resp: &[u8], at: Instant) -> Inserted {
        let info = parse_response(resp).unwrap();
        let v = parse_query(q).unwrap();
        let answer = Answer::from_response(resp, &info, cache.config());
        cache.insert(&Key::of_query(q, &v), &answer, at)
    }

    /// A cache whose shards hold `entries` each.
    fn cache_of_shards_holding(entries: usize) -> Cache {
        let mut c = cfg();
        c.capacity = SHARDS * entries;
        Cache::new(c)
    }

    /// `n` queries (for A, no EDNS) whose keys fall in one shard.
    fn queries_of_one_shard(n: usize) -> Vec<Vec<u8>> {
        let shard = |q: &[u8]| {
            let v = parse_query(q).unwrap();
            shard_of(Key::of_query(q, &v).hash())
        };
        let first = shard(&query(1, "n0.example.", false));
        (0..)
            .map(|i| query(1, &format!("n{i}.example."), false))
            .filter(|q| shard(q) == first)
            .take(n)
            .collect()
    }

    fn query(id: u16, name: &str, edns: bool) -> Vec<u8> {
        let mut v = Vec::new();
        build_query(id, name, 1, edns, &mut v).unwrap();
        v
    }

    #[test]
    fn hit_restores_id_case_and_decrements_ttl() {
        let cache = Cache::new(cfg());
        let q1 = query(1, "web.prod.svc.cluster.local.", true);
        let resp = a_response(&q1, 300, true);
        let info = parse_response(&resp).unwrap();
        let ans = Answer::from_response(&resp, &info, cache.config());
        let v1 = parse_query(&q1).unwrap();
        let t0 = Instant::now();
        cache.insert(&Key::of_query(&q1, &v1), &ans, t0);

        let q2 = query(77, "WeB.PROD.svc.cluster.local.", false);
        let v2 = parse_query(&q2).unwrap();
        let mut out = Vec::new();
        match cache.lookup(&q2, &v2, t0 + Duration::from_secs(100), 512, &mut out) {
            Lookup::Hit { .. } => {}
            _ => panic!("expected a hit"),
        }
        let r = parse_response(&out).unwrap();
        assert_eq!(r.header.id, 77);
        assert_eq!(
            &out[12..12 + 28],
            &q2[12..12 + 28],
            "question case restored"
        );
        assert!(r.edns.is_none(), "no OPT to a client that sent none");
        assert_eq!(r.min_answer_ttl, Some(200));
    }

    #[test]
    fn a_key_hashes_alike_in_any_case_of_any_byte() {
        // 29 bytes of wire name: three whole words and a tail of five.
        let q = query(1, "web.prod.svc.cluster.local.", true);
        let v = parse_query(&q).unwrap();
        let hash = Key::of_query(&q, &v).hash();
        let name_len = Key::of_query(&q, &v).name.len();
        for at in 0..name_len {
            let mut upper = q.clone();
            upper[HEADER_LEN + at] = upper[HEADER_LEN + at].to_ascii_uppercase();
            let k = Key::of_query(&upper, &v);
            assert_eq!(k.hash(), hash, "byte {at} in upper case");
            let mut other = q.clone();
            other[HEADER_LEN + at] ^= 0x01;
            assert_ne!(Key::of_query(&other, &v).hash(), hash, "byte {at} changed");
        }
    }

    #[test]
    fn do_bit_is_part_of_the_key() {
        let cache = Cache::new(cfg());
        let q1 = query(1, "a.example.", true);
        let resp = a_response(&q1, 300, true);
        store(&cache, &q1, &resp, Instant::now());
        let mut q2 = q1.clone();
        let n = q2.len();
        q2[n - 4] |= 0x80; // DO
        let v2 = parse_query(&q2).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            cache.lookup(&q2, &v2, Instant::now(), 512, &mut out),
            Lookup::Miss
        ));
    }

    #[test]
    fn expired_entries_go_stale_then_away() {
        let cache = Cache::new(cfg());
        let q = query(1, "a.example.", false);
        let resp = a_response(&q, 10, false);
        let v = parse_query(&q).unwrap();
        let t0 = Instant::now();
        store(&cache, &q, &resp, t0);
        let mut out = Vec::new();
        assert!(matches!(
            cache.lookup(&q, &v, t0 + Duration::from_secs(11), 512, &mut out),
            Lookup::Stale
        ));
        assert!(cache
            .serve_stale(&q, &v, t0 + Duration::from_secs(11), 512, &mut out)
            .is_some());
        assert_eq!(
            parse_response(&out).unwrap().min_answer_ttl,
            Some(STALE_TTL)
        );
        assert!(matches!(
            cache.lookup(&q, &v, t0 + Duration::from_secs(71), 512, &mut out),
            Lookup::Miss
        ));
    }

    #[test]
    fn popular_entries_ask_for_prefetch_near_expiry_once() {
        let cache = Cache::new(cfg());
        let q = query(1, "a.example.", false);
        let resp = a_response(&q, 100, false);
        let v = parse_query(&q).unwrap();
        let t0 = Instant::now();
        store(&cache, &q, &resp, t0);
        let prefetch_at =
            |secs| match cache.lookup(&q, &v, t0 + Duration::from_secs(secs), 512, &mut Vec::new())
            {
                Lookup::Hit { prefetch, .. } => prefetch,
                _ => panic!("expected a hit at {secs} s"),
            };
        assert!(!prefetch_at(10), "first hit, early");
        assert!(!prefetch_at(50), "popular, but 50% of the TTL left");
        assert!(prefetch_at(95), "popular and in the last 10%");
        assert!(!prefetch_at(96), "one prefetch at a time");
        cache.prefetch_failed(&Key::of_query(&q, &v));
        assert!(
            prefetch_at(97),
            "after a failed prefetch a later hit tries again"
        );
    }

    #[test]
    fn ttl_caps_apply() {
        let mut c = cfg();
        c.max_ttl = 60;
        let cache = Cache::new(c);
        let q = query(1, "a.example.", false);
        let resp = a_response(&q, 86400, false);
        let info = parse_response(&resp).unwrap();
        let ans = Answer::from_response(&resp, &info, cache.config());
        assert_eq!(ans.ttl(), 60);
    }

    #[test]
    fn bounded_with_eviction() {
        let mut c = cfg();
        c.capacity = SHARDS * 2;
        let cache = Cache::new(c);
        let now = Instant::now();
        let mut evicted = 0;
        for i in 0..(SHARDS * 20) {
            let q = query(1, &format!("n{i}.example."), false);
            let resp = a_response(&q, 300, false);
            let info = parse_response(&resp).unwrap();
            let v = parse_query(&q).unwrap();
            let r = cache.insert(
                &Key::of_query(&q, &v),
                &Answer::from_response(&resp, &info, cache.config()),
                now,
            );
            evicted += r.evicted.success + r.evicted.denial;
        }
        let n = cache.counts().success;
        assert!(n <= SHARDS * 2, "{n}");
        assert_eq!(evicted + n, SHARDS * 20);
    }

    /// CLOCK: an entry hit since the hand last passed gets a second chance, so at capacity the
    /// one not asked for goes.
    #[test]
    fn a_full_shard_evicts_the_entry_not_hit_since_the_hand_passed() {
        let (cache, names) = (cache_of_shards_holding(2), queries_of_one_shard(3));
        let now = Instant::now();
        let hit = |q: &[u8]| {
            let v = parse_query(q).unwrap();
            let mut out = Vec::new();
            matches!(cache.lookup(q, &v, now, 512, &mut out), Lookup::Hit { .. })
        };
        for q in &names[..2] {
            store(&cache, q, &a_response(q, 300, false), now);
        }
        assert!(hit(&names[0]));
        store(&cache, &names[2], &a_response(&names[2], 300, false), now);
        assert!(hit(&names[0]), "the entry hit kept its place");
        assert!(!hit(&names[1]), "the entry not hit was evicted");
        assert!(hit(&names[2]), "the entry just stored answers");
        assert_eq!(cache.counts().success, 2);
    }

    /// Found in review: with entries placed where their hash falls, a new entry could sit just
    /// ahead of the CLOCK hand and go at the very next insert. In a full shard it takes its
    /// victim's place, behind the hand, and lasts a whole turn.
    #[test]
    fn an_entry_just_stored_outlives_the_next_insert() {
        let (cache, names) = (cache_of_shards_holding(4), queries_of_one_shard(44));
        let now = Instant::now();
        // Held or not, without marking it (as a hit would): a stale answer is any entry.
        let held = |q: &[u8]| {
            let v = parse_query(q).unwrap();
            cache
                .serve_stale(q, &v, now, 512, &mut Vec::new())
                .is_some()
        };
        for (i, q) in names.iter().enumerate() {
            store(&cache, q, &a_response(q, 300, false), now);
            if i >= 5 {
                assert!(held(&names[i - 1]), "entry {} gone at insert {i}", i - 1);
            }
        }
        assert_eq!(cache.counts().success, 4);
    }

    /// Found in review: the shard came from the hash's top bits, which are the table's tag,
    /// so a shard's keys shared two tags and a probe compared about half its group's entries.
    #[test]
    fn keys_of_one_shard_carry_many_tags() {
        let tags: std::collections::HashSet<u64> = (0..4000)
            .map(|i| query(1, &format!("t{i}.example."), false))
            .map(|q| {
                let v = parse_query(&q).unwrap();
                Key::of_query(&q, &v).hash()
            })
            .filter(|&h| shard_of(h) == 0)
            .map(|h| h >> 57)
            .collect();
        assert!(tags.len() > 16, "{} tags in a shard", tags.len());
    }

    /// Found in review: an insert that evicted several entries to fit the bytes budget said
    /// one kind, so `ndots_cache_evictions_total` counted one of them.
    #[test]
    fn one_insert_that_evicted_several_entries_counted_one() {
        let mut c = cfg();
        c.capacity = 1_000_000;
        let cache = Cache::with_budget(c, Arc::new(MemoryBudget::new(crate::budget::MIN_LIMIT)));
        let now = Instant::now();
        let names = queries_of_one_shard(5_000);
        let mut names = names.iter();
        // Small answers into one shard until its bytes first make an insert evict.
        for q in names.by_ref() {
            if store(&cache, q, &a_response(q, 300, false), now)
                .evicted
                .success
                > 0
            {
                break;
            }
        }
        let before = cache.counts().success;
        let q = names.next().unwrap();
        let big = store(&cache, q, &addresses_response(q, 300, 200, false), now);
        assert!(big.stored);
        assert!(big.evicted.success > 1, "{big:?}");
        assert_eq!(
            cache.counts().success,
            before + 1 - big.evicted.success,
            "every entry that went is counted"
        );
    }

    /// An answer that cannot be cached is not stored and says so, so the caller can end the
    /// refresh that fetched it: a zero TTL after a prefetch left the entry unable to
    /// prefetch again until it expired.
    #[test]
    fn an_uncacheable_refresh_is_reported_not_stored() {
        let cache = Cache::new(cfg());
        let now = Instant::now();
        let q = query(1, "popular.example.", false);
        let v = parse_query(&q).unwrap();
        assert!(store(&cache, &q, &a_response(&q, 100, false), now).stored);
        let late = now + Duration::from_secs(95);
        let prefetches = |cache: &Cache| {
            (0..PREFETCH_MIN_HITS + 1)
                .filter(|_| {
                    let out = &mut Vec::new();
                    matches!(
                        cache.lookup(&q, &v, late, 512, out),
                        Lookup::Hit { prefetch: true, .. }
                    )
                })
                .count()
        };
        assert_eq!(prefetches(&cache), 1, "one prefetch at a time");
        let refreshed = store(&cache, &q, &a_response(&q, 0, false), late);
        assert!(!refreshed.stored, "a zero TTL is not cached");
        cache.prefetch_failed(&Key::of_query(&q, &v));
        assert_eq!(prefetches(&cache), 1, "the next hit may try again");
    }

    /// `server.memory_limit`: the cache stays within its share in bytes, whatever
    /// `cache.capacity` allows, evicting to make room; every entry left still answers.
    #[test]
    fn the_cache_stays_within_its_byte_share_of_the_memory_budget() {
        let budget = Arc::new(MemoryBudget::new(crate::budget::MIN_LIMIT));
        let share = budget.share(Part::Cache);
        let mut c = cfg();
        c.capacity = 1_000_000;
        let cache = Cache::with_budget(c, budget.clone());
        let now = Instant::now();
        let mut evicted = 0;
        let total = 100_000;
        for i in 0..total {
            let q = query(1, &format!("tenant-{i}.s3.eu-west-1.amazonaws.com."), false);
            let resp = a_response(&q, 300, false);
            let info = parse_response(&resp).unwrap();
            let v = parse_query(&q).unwrap();
            let r = cache.insert(
                &Key::of_query(&q, &v),
                &Answer::from_response(&resp, &info, cache.config()),
                now,
            );
            evicted += r.evicted.success + r.evicted.denial;
            assert!(budget.used(Part::Cache) <= share, "over the share at {i}");
        }
        let n = cache.counts().success;
        assert!(n < total && n > 1000, "{n} entries kept");
        assert_eq!(evicted + n, total, "every entry that went is counted");
        // The most recent insert of a shard is never the one evicted: it answers.
        let q = query(
            9,
            &format!("tenant-{}.s3.eu-west-1.amazonaws.com.", total - 1),
            false,
        );
        let v = parse_query(&q).unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            cache.lookup(&q, &v, now, 512, &mut out),
            Lookup::Hit { .. }
        ));
        drop(cache);
        assert_eq!(
            budget.used(Part::Cache),
            0,
            "a dropped cache gives its bytes back"
        );
    }

    #[test]
    fn oversized_answer_is_truncated_for_the_client() {
        let cache = Cache::new(cfg());
        let q = query(5, "a.example.", false);
        let resp = a_response(&q, 300, false);
        let info = parse_response(&resp).unwrap();
        let ans = Answer::from_response(&resp, &info, cache.config());
        let v = parse_query(&q).unwrap();
        let mut out = Vec::new();
        ans.render(&q, &v, Served::Cached(0), 30, &mut out);
        let h = wire::Header::parse(&out).unwrap();
        assert!(h.tc());
        assert_eq!(h.ancount, 0);
    }
}
