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
//!
//! The live tracker goes one step further (`WalkTracker::defer_repeats`): the lookups an entry
//! makes are held in it as their times alone ([`Repeats`]), up to [`REPEATS`] of one bucket
//! of the report's windows, and handed out together (`drain_repeats`), so that the report and
//! the metrics add them as one count. Each one is still a lookup with its own start and
//! duration; only the copy of the lookup, its two reference counts and the report's
//! per-lookup work (a top-name and a top-client table find) are saved.

use std::net::IpAddr;
use std::sync::Arc;

use super::walk::Lookup;
use crate::budget::{MemoryBudget, Part};
use crate::event::{AnswerSource, Timestamp};

/// Slots, in pairs: a key may sit in either slot of its pair. A node's pods ask a few
/// thousand names of a few types. With one slot a key, the keys that share one push each
/// other out at every event: of 1,000 keys, about 22% share a slot of 4,096, and with
/// 16,384 one event in eleven of callgrind_hit's 1,000 names still missed. Empty slots cost
/// a pointer and a hash each.
const SLOTS: usize = 16384;
/// Longer wire names are not kept (rare; the full path reads them).
const WIRE_MAX: usize = 128;
/// Lookups an entry holds before they are handed out: the report's and the metrics' work per
/// lookup (two table finds and a series' sums) is done once for this many. A name asked
/// every millisecond fills its entry between two ticks (250 ms); each one more costs 8 bytes
/// in every entry.
pub(super) const REPEATS: usize = 16;

/// The lookups made from one entry and not yet handed out: each one's start (µs since the
/// epoch, kept as an offset from the first one's) and its duration (µs); the rest of each is
/// the entry's `lookup`.
pub struct Repeats {
    n: u8,
    base: u64,
    start_offset: [i32; REPEATS],
    duration_us: [u32; REPEATS],
}

impl Repeats {
    const EMPTY: Repeats = Repeats {
        n: 0,
        base: 0,
        start_offset: [0; REPEATS],
        duration_us: [0; REPEATS],
    };

    /// Hold one more lookup, if there is room and its start is within an offset's reach of
    /// the first one's (events come nearly in order: a lookup that is not is made whole).
    fn push(&mut self, start: u64, duration_us: u32) -> bool {
        let n = self.n as usize;
        if n == REPEATS {
            return false;
        }
        if n == 0 {
            self.base = start;
        }
        // Two's complement: exact for any two starts less than 2^31 µs apart.
        let Ok(offset) = i32::try_from(start.wrapping_sub(self.base) as i64) else {
            return false;
        };
        self.start_offset[n] = offset;
        self.duration_us[n] = duration_us;
        self.n += 1;
        true
    }

    fn is_full(&self) -> bool {
        self.n as usize == REPEATS
    }

    /// Repeats of these (start µs, duration µs), at most `REPEATS` (tests).
    #[cfg(test)]
    pub fn of(times: &[(u64, u32)]) -> Repeats {
        let mut r = Repeats::EMPTY;
        for &(start, us) in times.iter().take(REPEATS) {
            assert!(r.push(start, us), "starts within an offset of the first");
        }
        r
    }

    /// How many lookups are held.
    pub fn held(&self) -> usize {
        self.n as usize
    }

    pub fn durations_us(&self) -> &[u32] {
        &self.duration_us[..self.n as usize]
    }

    /// Each lookup's start, end and duration (µs).
    pub fn times(&self) -> impl Iterator<Item = (Timestamp, Timestamp, u64)> + '_ {
        self.start_offset[..self.n as usize]
            .iter()
            .zip(self.durations_us())
            .map(|(&offset, &us)| {
                let start = self.base.saturating_add_signed(i64::from(offset));
                let us = u64::from(us);
                (Timestamp(start), Timestamp(start.saturating_add(us)), us)
            })
    }

    /// Each lookup, made whole from the entry's.
    pub fn lookups<'a>(&'a self, made: &'a Lookup) -> impl Iterator<Item = Lookup> + 'a {
        self.times().map(|(start, _, us)| made.repeated(start, us))
    }
}

/// The key's fields first, in declared order (`repr(C)`), so a find that reaches an entry
/// reads one cache line of it before the name's bytes.
#[repr(C)]
pub(super) struct AtOnce {
    /// The epoch of what the tracker knew of the client when it was made.
    epoch: u64,
    client: IpAddr,
    qtype: u16,
    source: Option<AnswerSource>,
    /// Whether its slot is in the table's `pending` list.
    listed: bool,
    /// The query name as the client sent it (wire form, its case kept).
    wire: Vec<u8>,
    /// For `WalkTracker::resolved`: the text name's hash and length.
    pub name_hash: u64,
    pub name_len: u16,
    /// The lookup made; the next ones are copies of it with their own times (`Repeats`).
    pub lookup: Lookup,
    /// The lookups made from it since the table's repeats were last handed out.
    repeats: Repeats,
}

impl AtOnce {
    fn is(&self, client: IpAddr, qtype: u16, source: Option<AnswerSource>, wire: &[u8]) -> bool {
        self.client == client && self.qtype == qtype && self.source == source && self.wire == wire
    }
}

pub(super) struct AtOnceTable {
    /// Empty until the first entry (an offline tracker never uses it).
    slots: Vec<Option<Box<AtOnce>>>,
    /// Each slot's key hash (0 while empty), beside the slots: a find reads the entry only
    /// of a slot whose hash is the key's, not both of the pair.
    hashes: Vec<u64>,
    /// Per pair, the slot kept into last: a new key goes into the other one.
    newer: Vec<u8>,
    /// Keys are hashed with it, random for each table: a client cannot aim its names at
    /// another client's slots.
    seed: u64,
    /// Slots whose entry holds repeats (or held some since every entry's were last handed
    /// out).
    pending: Vec<u32>,
    /// Slots whose entry is full: handed out alone (a hot name fills its entry long before
    /// the others fill theirs).
    full: Vec<u32>,
    /// The report bucket every held repeat ends in.
    pending_bucket: u64,
    /// A repeat of another bucket came: hand every entry's out.
    all_due: bool,
    /// What its slots and entries are charged to (the live tracker's budget).
    charge: Option<Charge>,
    /// Entries kept.
    entries: usize,
    /// Where `give_way` looks for the next entry to free.
    give_way_at: usize,
}

/// The table's charge to the `tracker_walks` share of the memory budget: the table is a cache
/// of work, and the open walks it shares with are what the report needs. So it takes only
/// room the walks leave free, half the share at most, and gives its entries back when a walk
/// needs the room (`give_way`). A key whose entry does not fit is not kept (its events take
/// the full path); an entry that changes hands is charged again for what it holds then.
struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: usize,
    cap: usize,
}

impl Charge {
    fn try_add(&mut self, bytes: usize) -> bool {
        let share = &self.budget;
        if self.bytes + bytes > self.cap
            || share.used(Part::TrackerWalks) + bytes > share.share(Part::TrackerWalks)
        {
            return false;
        }
        self.budget.charge(Part::TrackerWalks, bytes);
        self.bytes += bytes;
        true
    }

    fn release(&mut self, bytes: usize) {
        self.budget.release(Part::TrackerWalks, bytes);
        self.bytes -= bytes;
    }

    /// Move the charge of one entry from `was` to `now` bytes, without the cap: what a kept
    /// entry's allocations came to (a name's `Vec` may grow past what was asked).
    fn settle(&mut self, was: usize, now: usize) {
        if now > was {
            self.budget.charge(Part::TrackerWalks, now - was);
        } else {
            self.budget.release(Part::TrackerWalks, was - now);
        }
        self.bytes = self.bytes + now - was;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(Part::TrackerWalks, self.bytes);
    }
}

/// The bytes of the slot arrays, made at the first entry.
const TABLE_BYTES: usize =
    SLOTS * (std::mem::size_of::<Option<Box<AtOnce>>>() + std::mem::size_of::<u64>()) + SLOTS / 2;

/// The bytes an entry holds: its box, its name's bytes and the base name and namespace its
/// lookup keeps alive (shared with the walks and the report while they hold them too, so
/// this is an upper bound), with allocator rounding roughly.
fn entry_bytes(e: &AtOnce) -> usize {
    entry_bytes_of(e.wire.capacity(), &e.lookup)
}

fn entry_bytes_of(wire_capacity: usize, lookup: &Lookup) -> usize {
    let shared = |len: usize| (len + 16).next_multiple_of(16);
    std::mem::size_of::<AtOnce>().next_multiple_of(16)
        + wire_capacity.next_multiple_of(16)
        + shared(lookup.base.len())
        + lookup.namespace.as_deref().map_or(0, |n| shared(n.len()))
}

/// Which held repeats should be handed out now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    Nothing,
    /// The full entries'.
    Full,
    /// Every entry's.
    All,
}

impl Default for AtOnceTable {
    fn default() -> Self {
        AtOnceTable {
            slots: Vec::new(),
            hashes: Vec::new(),
            newer: Vec::new(),
            seed: rand::random(),
            pending: Vec::new(),
            full: Vec::new(),
            pending_bucket: 0,
            all_due: false,
            charge: None,
            entries: 0,
            give_way_at: 0,
        }
    }
}

impl AtOnceTable {
    /// Charge the table's slots and entries to `budget` (see [`Charge`]).
    pub fn charge_to(&mut self, budget: Arc<MemoryBudget>) {
        let cap = budget.share(Part::TrackerWalks) / 2;
        let bytes = if self.slots.is_empty() {
            0
        } else {
            TABLE_BYTES
                + self
                    .slots
                    .iter()
                    .flatten()
                    .map(|e| entry_bytes(e))
                    .sum::<usize>()
        };
        budget.charge(Part::TrackerWalks, bytes);
        self.charge = Some(Charge { budget, bytes, cap });
    }

    /// The bytes charged to the budget (0 without one).
    #[cfg(test)]
    pub fn charged(&self) -> usize {
        self.charge.as_ref().map_or(0, |c| c.bytes)
    }

    /// Entries kept.
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Free entries until `bytes` are given back to the budget or none is left (and then the
    /// slot arrays too), for an open walk that needs the room. The lookups the freed entries
    /// held as repeats go to `out`. False when there was nothing to free.
    pub fn give_way(&mut self, bytes: usize, out: &mut Vec<Lookup>) -> bool {
        let Some(charge) = &mut self.charge else {
            return false;
        };
        if self.slots.is_empty() {
            return false;
        }
        let mut freed = 0;
        while freed < bytes && self.entries > 0 {
            let i = self.give_way_at;
            self.give_way_at = (i + 1) % SLOTS;
            if let Some(e) = self.slots[i].take() {
                out.extend(e.repeats.lookups(&e.lookup));
                let b = entry_bytes(&e);
                charge.release(b);
                freed += b;
                self.hashes[i] = 0;
                self.entries -= 1;
            }
        }
        if self.entries == 0 {
            // Every listed slot's repeats went out above.
            (self.slots, self.hashes, self.newer) = (Vec::new(), Vec::new(), Vec::new());
            self.pending.clear();
            self.full.clear();
            self.all_due = false;
            charge.release(TABLE_BYTES);
        }
        true
    }

    /// The slot of the entry for this client, type, source and name, if one is kept and was
    /// made at `epoch`.
    #[inline]
    pub fn find(
        &self,
        client: IpAddr,
        qtype: u16,
        source: Option<AnswerSource>,
        wire: &[u8],
        epoch: u64,
    ) -> Option<usize> {
        if self.slots.is_empty() || wire.len() > WIRE_MAX {
            return None;
        }
        let hash = self.key_hash(client, qtype, source, wire);
        let pair = pair_of(hash);
        // A key is in one slot of its pair at most (`keep`).
        (pair..pair + 2).find(|&i| {
            self.hashes[i] == hash
                && self.slots[i]
                    .as_deref()
                    .is_some_and(|e| e.is(client, qtype, source, wire) && e.epoch == epoch)
        })
    }

    /// The entry in `slot` (from `find`).
    pub fn entry(&self, slot: usize) -> &AtOnce {
        self.slots[slot].as_deref().expect("a slot find returned")
    }

    /// Hold a lookup made from the entry in `slot`, started at `start` and answered after
    /// `duration_us`, until `drain_repeats`; false when it cannot be held (the entry is full,
    /// or the lookup ends in another bucket of `bucket_us` than those held), and must be
    /// handed out now.
    pub fn repeat(
        &mut self,
        slot: usize,
        start: Timestamp,
        duration_us: u32,
        bucket_us: u64,
    ) -> bool {
        let bucket = start.0.saturating_add(u64::from(duration_us)) / bucket_us;
        if self.pending.is_empty() {
            self.pending_bucket = bucket;
        } else if bucket != self.pending_bucket {
            self.all_due = true;
            return false;
        }
        let e = self.slots[slot]
            .as_deref_mut()
            .expect("a slot find returned");
        // Full: in `full` until handed out.
        if !e.repeats.push(start.0, duration_us) {
            return false;
        }
        if e.repeats.is_full() {
            self.full.push(slot as u32);
        }
        if !e.listed {
            e.listed = true;
            self.pending.push(slot as u32);
        }
        true
    }

    /// Which repeats held should be handed out now: the full entries', or every entry's when
    /// a lookup of another bucket came.
    pub fn repeats_due(&self) -> Due {
        if self.all_due {
            Due::All
        } else if !self.full.is_empty() {
            Due::Full
        } else {
            Due::Nothing
        }
    }

    /// Whether any lookup is held.
    pub fn holds_repeats(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The bucket the lookups held end in.
    pub fn repeats_bucket(&self) -> u64 {
        self.pending_bucket
    }

    /// Hand out the lookups held, every entry's or (`Due::Full`) the full entries': `f` gets
    /// each entry's lookup (its times those of the one the entry was made from) and its
    /// repeats.
    pub fn drain_repeats(&mut self, which: Due, f: impl FnMut(&Lookup, &Repeats)) {
        let more = self.drain_some_repeats(which, usize::MAX, f);
        debug_assert!(!more, "an unbounded hand-out left some");
    }

    /// Like `drain_repeats`, for at most `max` entries, oldest listed first; true when some
    /// of `which` are left (the caller asks again, the state as if it had not stopped).
    pub fn drain_some_repeats(
        &mut self,
        which: Due,
        max: usize,
        mut f: impl FnMut(&Lookup, &Repeats),
    ) -> bool {
        debug_assert!(max > 0, "a hand-out of nothing never ends");
        let AtOnceTable {
            slots,
            pending,
            full,
            all_due,
            ..
        } = self;
        let mut hand_out = |slot: u32, unlist: bool| {
            // An entry freed since it was listed (`give_way`) had its repeats handed out.
            let Some(e) = slots[slot as usize].as_deref_mut() else {
                return;
            };
            if unlist {
                e.listed = false;
            }
            if e.repeats.n > 0 {
                f(&e.lookup, &e.repeats);
                e.repeats.n = 0;
            }
        };
        match which {
            Due::Nothing => false,
            // Still listed in `pending`, held ones or not: the bucket rule looks at it.
            Due::Full => {
                let take = full.len().min(max);
                full.drain(..take).for_each(|slot| hand_out(slot, false));
                !full.is_empty()
            }
            Due::All => {
                let take = pending.len().min(max);
                pending.drain(..take).for_each(|slot| hand_out(slot, true));
                if !pending.is_empty() {
                    return true;
                }
                // Every full entry was listed in `pending` too, and is handed out.
                full.clear();
                *all_due = false;
                false
            }
        }
    }

    /// Keep `lookup` as what the next event of this key makes. The repeats an entry it
    /// replaces held are returned as lookups (a key's entry is replaced when the full path
    /// made its lookup again, or when another key takes its slot: seldom while it repeats).
    #[must_use = "the lookups of the entry replaced"]
    pub fn keep(
        &mut self,
        source: Option<AnswerSource>,
        wire: &[u8],
        epoch: u64,
        (name_hash, name_len): (u64, u16),
        lookup: &Lookup,
    ) -> Vec<Lookup> {
        let mut released = Vec::new();
        if wire.len() > WIRE_MAX {
            return released;
        }
        if self.slots.is_empty() {
            if let Some(c) = &mut self.charge {
                if !c.try_add(TABLE_BYTES) {
                    return released;
                }
            }
            self.slots.resize_with(SLOTS, || None);
            self.hashes = vec![0; SLOTS];
            self.newer = vec![0; SLOTS / 2];
        }
        let (client, qtype) = (lookup.client, lookup.qtype);
        let hash = self.key_hash(client, qtype, source, wire);
        let pair = pair_of(hash);
        // The key's own slot, else an empty one, else the one kept into first.
        let own = |i: usize| {
            self.hashes[i] == hash
                && self.slots[i]
                    .as_deref()
                    .is_some_and(|e| e.is(client, qtype, source, wire))
        };
        let way = (0..2)
            .find(|&w| own(pair + w))
            .or_else(|| (0..2).find(|&w| self.slots[pair + w].is_none()))
            .unwrap_or(1 - self.newer[pair / 2] as usize);
        let slot = pair + way;
        let held = self.slots[slot].as_deref().map_or(0, entry_bytes);
        let wire_capacity = self.slots[slot]
            .as_deref()
            .map_or(wire.len(), |e| e.wire.capacity().max(wire.len()));
        let need = entry_bytes_of(wire_capacity, lookup);
        if let Some(c) = &mut self.charge {
            if need > held && !c.try_add(need - held) {
                // Over the table's cap: this key's events take the full path.
                return released;
            }
        }
        self.newer[pair / 2] = way as u8;
        self.hashes[slot] = hash;
        match &mut self.slots[slot] {
            // An entry that changes hands keeps its allocations.
            Some(e) => {
                if e.repeats.n > 0 {
                    released.extend(e.repeats.lookups(&e.lookup));
                    e.repeats.n = 0;
                }
                e.client = client;
                e.qtype = qtype;
                e.source = source;
                e.wire.clear();
                // Exact, as `need` counted it (not doubled).
                e.wire.reserve_exact(wire.len());
                e.wire.extend_from_slice(wire);
                e.epoch = epoch;
                (e.name_hash, e.name_len) = (name_hash, name_len);
                e.lookup.clone_from(lookup);
            }
            empty => {
                self.entries += 1;
                *empty = Some(Box::new(AtOnce {
                    client,
                    qtype,
                    source,
                    wire: wire.to_vec(),
                    epoch,
                    name_hash,
                    name_len,
                    lookup: lookup.clone(),
                    repeats: Repeats::EMPTY,
                    listed: false,
                }))
            }
        }
        if let Some(c) = &mut self.charge {
            let now = entry_bytes(self.slots[slot].as_deref().expect("the entry just kept"));
            c.settle(need.max(held), now);
        }
        released
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts are kept as offsets from the first one's, before it or after: each comes back
    /// as it went in, and one out of an offset's reach is refused (its lookup is made whole).
    #[test]
    fn repeats_give_back_their_times_and_refuse_a_start_out_of_reach() {
        let first = 1_700_000_000_000_000u64;
        let times = [
            (first, 300u32),
            (first - 5_000, 7),
            (first + 9_999_999, u32::MAX),
        ];
        let r = Repeats::of(&times);
        let back: Vec<(u64, u64, u64)> = r.times().map(|(s, e, us)| (s.0, e.0, us)).collect();
        let want: Vec<(u64, u64, u64)> = times
            .iter()
            .map(|&(s, us)| (s, s + u64::from(us), u64::from(us)))
            .collect();
        assert_eq!(back, want);

        let mut r = Repeats::EMPTY;
        assert!(r.push(first, 1));
        assert!(!r.push(first + (1 << 31), 1), "past an i32 of µs");
        assert!(
            !r.push(first - (1 << 31) - 1, 1),
            "before it by more than an i32"
        );
        assert!(r.push(first - (1 << 31), 1), "the farthest back");
        assert_eq!(r.held(), 2);
        for i in 2..REPEATS {
            assert!(r.push(first + i as u64, 1));
        }
        assert!(r.is_full());
        assert!(!r.push(first, 1), "full");
    }
}
