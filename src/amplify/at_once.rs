//! The lookups of cached answers asked again: most of a busy proxy's events are a positive
//! answer to a name asked in full, by a client with nothing open of that type, and each of
//! them makes a one-query lookup that differs from the last one of the same client, type,
//! name and answer source only in its times. [`AtOnceTable`] keeps the lookup each of those
//! made last (direct-mapped, by the name's wire form), so that [`super::WalkTracker`] makes
//! the next one from it without formatting the name, reading it against the search list or
//! building a walk.
//!
//! It holds only what the full path would do again: an entry is used while nothing it was
//! made from has changed (no walk open for the client's types, the tracker's client
//! knowledge at the same epoch) and is otherwise replaced by what the full path makes.
//! `tests.rs` holds the two paths to the same lookups on random event streams.

use std::net::IpAddr;

use super::walk::Lookup;
use crate::event::AnswerSource;

/// Slots: a node's pods ask a few thousand names of a few types, and direct-mapped, keys
/// share a slot (and push each other out) the fuller the table is: with 1,000 keys a tenth
/// of them shared one of 4,096 slots (callgrind_hit). Empty slots cost a pointer each.
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
    /// `WalkTracker`'s client epoch when it was made.
    epoch: u64,
    /// For `WalkTracker::resolved`: the text name's hash and length.
    pub name_hash: u64,
    pub name_len: u16,
    /// The lookup made; its times are replaced with the next event's.
    pub lookup: Lookup,
}

#[derive(Default)]
pub(super) struct AtOnceTable {
    /// Empty until the first entry (an offline tracker never uses it).
    slots: Vec<Option<Box<AtOnce>>>,
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
        let hash = key_hash(client, qtype, wire);
        self.slots[hash as usize % SLOTS].as_deref().filter(|e| {
            e.hash == hash
                && e.epoch == epoch
                && e.client == client
                && e.qtype == qtype
                && e.source == source
                && e.wire == wire
        })
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
        }
        let hash = key_hash(lookup.client, lookup.qtype, wire);
        let slot = &mut self.slots[hash as usize % SLOTS];
        let entry = AtOnce {
            hash,
            client: lookup.client,
            qtype: lookup.qtype,
            source,
            wire: wire.to_vec(),
            epoch,
            name_hash,
            name_len,
            lookup: lookup.clone(),
        };
        match slot {
            Some(e) => **e = entry,
            None => *slot = Some(Box::new(entry)),
        }
    }
}

/// A hash of the key, its name as bytes (case and all: a name in other case is another key),
/// a word at a time.
#[inline]
fn key_hash(client: IpAddr, qtype: u16, wire: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, w: u64| (h ^ w).wrapping_mul(K).rotate_left(31);
    let mut h = super::walk::ip_word(client) ^ (u64::from(qtype) << 48) ^ wire.len() as u64;
    let mut words = wire.chunks_exact(8);
    for w in &mut words {
        h = mix(h, u64::from_le_bytes(w.try_into().expect("eight bytes")));
    }
    let rest = words.remainder().len();
    h = mix(h, super::walk::partial_word(wire, wire.len() - rest, rest));
    // splitmix64's finish: the slot is the low bits.
    let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
