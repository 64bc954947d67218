//! The lookups of cached answers asked again: most of a busy proxy's events are a positive
//! answer to a name asked in full, by a client with nothing open of that type, and each of
//! them makes a one-query lookup that differs from the last one of the same client, type,
//! name and answer source only in its times. [`AtOnceTable`] keeps the lookup each of those
//! made last (by the name's wire form), so that [`super::WalkTracker`] makes the next one
//! from it without formatting the name, reading it against the search list or building a
//! walk.
//!
//! It holds only what the full path would do again: an entry is used while nothing it was
//! made from has changed (no walk open for the client's types, what the tracker knows of
//! the client at the same epoch) and is otherwise replaced by what the full path makes.
//! `tests.rs` holds the two paths to the same lookups on random event streams.

use std::net::IpAddr;

use super::walk::Lookup;
use crate::event::AnswerSource;

/// Slots, in pairs: a key may sit in either slot of its pair. A node's pods ask a few
/// thousand names of a few types. With one slot a key, the keys that share one push each
/// other out at every event: of 1,000 keys, about 22% share a slot of 4,096, and with
/// 16,384 one event in eleven of callgrind_hit's 1,000 names still missed. Empty slots cost
/// a pointer each.
const SLOTS: usize = 16384;
/// Longer wire names are not kept (rare; the full path reads them).
const WIRE_MAX: usize = 128;

pub(super) struct AtOnce {
    hash: u64,
    client: IpAddr,
    qtype: u16,
    source: Option<AnswerSource>,
    /// The query name as the client sent it (wire form, its case kept).
    wire: Vec<u8>,
    /// The epoch of what the tracker knew of the client when it was made.
    epoch: u64,
    /// For `WalkTracker::resolved`: the text name's hash and length.
    pub name_hash: u64,
    pub name_len: u16,
    /// The lookup made; its times are replaced with the next event's.
    pub lookup: Lookup,
}

impl AtOnce {
    fn is(&self, client: IpAddr, qtype: u16, source: Option<AnswerSource>, wire: &[u8]) -> bool {
        self.client == client && self.qtype == qtype && self.source == source && self.wire == wire
    }
}

pub(super) struct AtOnceTable {
    /// Empty until the first entry (an offline tracker never uses it).
    slots: Vec<Option<Box<AtOnce>>>,
    /// Per pair, the slot kept into last: a new key goes into the other one.
    newer: Vec<u8>,
    /// Keys are hashed with it, random for each table: a client cannot aim its names at
    /// another client's slots.
    seed: u64,
}

impl Default for AtOnceTable {
    fn default() -> Self {
        AtOnceTable {
            slots: Vec::new(),
            newer: Vec::new(),
            seed: rand::random(),
        }
    }
}

impl AtOnceTable {
    /// The entry for this client, type, source and name, if one is kept and was made at
    /// `epoch`.
    #[inline]
    pub fn find(
        &self,
        client: IpAddr,
        qtype: u16,
        source: Option<AnswerSource>,
        wire: &[u8],
        epoch: u64,
    ) -> Option<&AtOnce> {
        if self.slots.is_empty() || wire.len() > WIRE_MAX {
            return None;
        }
        let hash = self.key_hash(client, qtype, source, wire);
        let pair = pair_of(hash);
        self.slots[pair..pair + 2]
            .iter()
            .filter_map(|s| s.as_deref())
            .find(|e| e.hash == hash && e.is(client, qtype, source, wire))
            .filter(|e| e.epoch == epoch)
    }

    /// Keep `lookup` as what the next event of this key makes.
    pub fn keep(
        &mut self,
        source: Option<AnswerSource>,
        wire: &[u8],
        epoch: u64,
        (name_hash, name_len): (u64, u16),
        lookup: &Lookup,
    ) {
        if wire.len() > WIRE_MAX {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, || None);
            self.newer = vec![0; SLOTS / 2];
        }
        let (client, qtype) = (lookup.client, lookup.qtype);
        let hash = self.key_hash(client, qtype, source, wire);
        let pair = pair_of(hash);
        // The key's own slot, else an empty one, else the one kept into first.
        let own = |s: &Option<Box<AtOnce>>| {
            s.as_deref()
                .is_some_and(|e| e.hash == hash && e.is(client, qtype, source, wire))
        };
        let way = (0..2)
            .find(|&w| own(&self.slots[pair + w]))
            .or_else(|| (0..2).find(|&w| self.slots[pair + w].is_none()))
            .unwrap_or(1 - self.newer[pair / 2] as usize);
        self.newer[pair / 2] = way as u8;
        match &mut self.slots[pair + way] {
            // An entry that changes hands keeps its allocations.
            Some(e) => {
                e.hash = hash;
                e.client = client;
                e.qtype = qtype;
                e.source = source;
                e.wire.clear();
                e.wire.extend_from_slice(wire);
                e.epoch = epoch;
                (e.name_hash, e.name_len) = (name_hash, name_len);
                e.lookup.clone_from(lookup);
            }
            empty => {
                *empty = Some(Box::new(AtOnce {
                    hash,
                    client,
                    qtype,
                    source,
                    wire: wire.to_vec(),
                    epoch,
                    name_hash,
                    name_len,
                    lookup: lookup.clone(),
                }))
            }
        }
    }

    /// A hash of the key, its name as bytes (case and all: a name in other case is another
    /// key), a word at a time.
    #[inline]
    fn key_hash(
        &self,
        client: IpAddr,
        qtype: u16,
        source: Option<AnswerSource>,
        wire: &[u8],
    ) -> u64 {
        use super::walk::{ip_word, mix_word, partial_word, splitmix_finish};
        let source = source.map_or(0, |s| s as u64 + 1);
        let mut h = mix_word(
            self.seed ^ ip_word(client),
            u64::from(qtype) << 48 | source << 40 | wire.len() as u64,
        );
        let mut words = wire.chunks_exact(8);
        for w in &mut words {
            h = mix_word(h, u64::from_le_bytes(w.try_into().expect("eight bytes")));
        }
        let rest = words.remainder().len();
        h = mix_word(h, partial_word(wire, wire.len() - rest, rest));
        // The slot is the low bits.
        splitmix_finish(h)
    }
}

/// The first slot of the pair a key of `hash` sits in.
fn pair_of(hash: u64) -> usize {
    (hash as usize % SLOTS) & !1
}
