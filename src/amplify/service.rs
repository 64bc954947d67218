//! The live tracker: a cheap handle the proxy's packet path records events into, a thread that
//! groups them into lookups, updates the metrics and keeps the windowed report.
//!
//! The packet path only does a `try_send` on a bounded channel: when the tracker thread falls
//! behind, events are dropped and counted (`dropped_events` in the report), never waited for.
//!
//! Before that happens the tracker sheds whole walks: while its queue is more than a quarter
//! full in events, or half full in bytes, it raises a shed level, and the packet path leaves
//! out every event whose walk key (client, type, first label: the same for every candidate of
//! one walk) falls under it, so the walks it keeps are counted whole and the ones it leaves
//! out are counted as shed (`shed_events` in the report, `ndots_tracker_shed_events_total`),
//! never half of each. The queue's bytes are charged to the memory budget (`tracker_queue`,
//! each batch for the room it holds), the open walks too (`tracker_walks`, see
//! [`WalkTracker`]).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::report::{Report, Windowed};
use super::walk::{walk_sample_key, Due, Lookup, Outcome, Repeats, SuffixSlot, WalkTracker};
use crate::budget::{MemoryBudget, Part};
use crate::config::{ClusterConfig, TrackerConfig};
use crate::event::{QueryEvent, Timestamp};
use crate::metrics as m;
use crate::search::SearchShape;

/// Events waiting for the tracker thread before new ones are dropped. Counted in events, not
/// channel messages (a message may carry a receive batch of 32); the queue's bytes are bounded
/// apart from this, by its `tracker_queue` budget share, each batch charged for its room.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Events a thread gathers before handing them over in one batch (a listener hands over once
/// per receive batch, and the runtime's threads once per answer, before it is sent).
pub const EVENT_BATCH: usize = 64;
/// While events keep coming, the thread polls its queue this often instead of blocking
/// (see the loop); events wait at most this long, and senders never wake the thread. Each
/// wake-up costs the thread more than its events' share: per thread at full load
/// (`THREADS=1 benches/cpu_split.sh`), 4 ms took 0.20-0.25 µs of user time an answer where
/// 1 ms took 0.33-0.48, and less system time on a busy host. A turn that finds a backlog
/// polls sooner (`next_poll`).
const POLL_INTERVAL: Duration = Duration::from_millis(4);
/// The poll after a turn that found the queue fuller than the queue's bounds allow for at
/// `POLL_INTERVAL`: as often as before the interval grew, so the margins below the shed
/// thresholds and the spare batches' pools are what they were.
const POLL_INTERVAL_BUSY: Duration = Duration::from_millis(1);
/// Empty polls in a row after which the thread blocks again until the next event (20 ms).
const POLLS_BEFORE_BLOCKING: u32 = 5;
/// How often the thread closes idle walks when traffic is quiet.
const TICK: Duration = Duration::from_millis(250);
/// Held repeats handed out between two offers of the core (`sched_yield`). A tick hands out
/// every entry that repeated since the last: at 10k cache hits/s (1,000 names, 8 clients)
/// that took the thread 0.4-1.2 ms in one go, long enough for a thread woken on its core to
/// wait for it; 256 entries are a tenth of a tick's 2,500 queries there, or less. (A report
/// that did not wait for the thread, `SETTLE_WAIT`, may see a tick's repeats partly handed
/// out, as it may see a turn's events partly taken.)
const REPEATS_PER_CHUNK: usize = 256;
/// How long `Tracker::report` waits for the thread to publish what it holds.
const SETTLE_WAIT: Duration = Duration::from_millis(200);
/// The shed level is out of this: at `SHED_SCALE` every walk is shed.
const SHED_SCALE: u32 = 1024;
/// A queue fuller than this (or than half its byte share) raises the shed level; emptier than
/// `SHED_LOWER_BELOW` (and an eighth of its share) lowers it (`next_shed_level`).
const SHED_RAISE_ABOVE: usize = QUEUE_CAPACITY / 4;
const SHED_LOWER_BELOW: usize = QUEUE_CAPACITY / 32;

/// How full the tracker's queue is, in both units it is bounded in: events (`QUEUE_CAPACITY`)
/// and the bytes of its `tracker_queue` budget share.
#[derive(Clone, Copy, Debug)]
struct QueueFill {
    events: usize,
    bytes: usize,
    share: usize,
}

/// The shed level after one turn of the tracker thread, from the queue's fill when the turn
/// began and when it ended: behind, it sheds more walks; caught up, it takes them back,
/// slowly. Behind is over a quarter of the event capacity or half the byte share, whichever
/// comes first: the share is a fraction of the memory limit, so in a small pod it holds
/// fewer events than the event threshold, and a queue that refuses batches drops events in
/// the middle of walks, which shedding whole walks first is there to avoid. (The bytes per
/// event are bounded by `Tracker::hand_over`'s size classes; with near-empty 64-event
/// batches queued, a byte threshold shed 4.6-58% of the events in a 60 s brownout.)
/// Caught up, the level falls by one for each millisecond since the last turn, whatever the
/// poll interval.
fn next_shed_level(level: u32, at_start: QueueFill, at_end: QueueFill, since_ms: u32) -> u32 {
    let over = |f: QueueFill| f.events > SHED_RAISE_ABOVE || f.bytes > f.share / 2;
    let behind = over(at_start) || over(at_end);
    let caught_up = at_end.events < SHED_LOWER_BELOW && at_end.bytes < at_end.share / 8;
    if behind {
        (level + 64).min(SHED_SCALE)
    } else if caught_up {
        level.saturating_sub(since_ms.max(1))
    } else {
        level
    }
}

/// How long the thread sleeps before its next poll, from the queue it found at the start of
/// a turn and the messages the turn took: `POLL_INTERVAL`, or `POLL_INTERVAL_BUSY` when the
/// queue held more than a sixteenth of its byte share or `SHED_LOWER_BELOW` events (a rate at
/// which four times as much would come near the shed thresholds), or when the turn took more
/// than half a spare pool's batches (four times as many would empty the pools, and batches
/// would be allocated on the listeners).
fn next_poll(at_start: QueueFill, messages: usize) -> Duration {
    let busy = at_start.events >= SHED_LOWER_BELOW
        || at_start.bytes >= at_start.share / 16
        || messages > SPARE_BATCHES / 2;
    if busy {
        POLL_INTERVAL_BUSY
    } else {
        POLL_INTERVAL
    }
}

/// The bytes an event holds while queued (charged to the `tracker_queue` budget).
fn event_bytes(e: &QueryEvent) -> usize {
    std::mem::size_of::<QueryEvent>() + e.qname.capacity()
}

fn batch_bytes(evs: &Vec<QueryEvent>) -> usize {
    std::mem::size_of::<Vec<QueryEvent>>()
        + (evs.capacity() - evs.len()) * std::mem::size_of::<QueryEvent>()
        + evs.iter().map(event_bytes).sum::<usize>()
}

/// Answered queries as a listener hands them over: each event's name still in wire form, in
/// one buffer for the batch. The text form (`QueryEvent::qname`) is made on the tracker thread
/// into one reused `String`, so the packet path neither formats nor allocates a name, and no
/// allocation crosses threads per event.
pub struct WireBatch {
    /// The events, their `qname` left empty, with the range of their name in `names`.
    events: Vec<(QueryEvent, std::ops::Range<u32>)>,
    names: Vec<u8>,
}

impl WireBatch {
    /// An empty batch of size class `class` (`Tracker::hand_over`).
    fn of_class(class: usize) -> WireBatch {
        let events = 1 << class;
        WireBatch {
            events: Vec::with_capacity(events),
            names: Vec::with_capacity(events * NAME_ROOM),
        }
    }

    pub fn with_capacity(events: usize) -> WireBatch {
        WireBatch {
            events: Vec::with_capacity(events),
            names: Vec::with_capacity(events * 32),
        }
    }

    /// Move every event of `from` (left empty, its memory kept) to the end of this batch, with
    /// only its events' names (not those of events `retain` left out).
    fn take_from(&mut self, from: &mut WireBatch) {
        for (ev, r) in from.events.drain(..) {
            let start = self.names.len() as u32;
            let name = from.names.get(r.start as usize..r.end as usize);
            self.names.extend_from_slice(name.unwrap_or(&[]));
            self.events.push((ev, start..self.names.len() as u32));
        }
        from.names.clear();
    }

    /// The bytes of its events' names.
    fn names_len(&self) -> usize {
        self.events.iter().map(|(_, r)| r.len()).sum()
    }

    /// Add `event` (its `qname` is ignored) asking for `name`, a question name in wire form.
    #[inline]
    pub fn push(&mut self, event: QueryEvent, name: &[u8]) {
        let start = self.names.len() as u32;
        self.names.extend_from_slice(name);
        self.events.push((event, start..self.names.len() as u32));
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The bytes the batch holds while queued (the `tracker_queue` budget).
    fn bytes(&self) -> usize {
        std::mem::size_of::<WireBatch>()
            + self.events.capacity() * std::mem::size_of::<(QueryEvent, std::ops::Range<u32>)>()
            + self.names.capacity()
    }

    /// Each event with its name's wire bytes, in order. Leaves the batch empty, its memory
    /// kept for reuse.
    fn for_each_wire(&mut self, mut f: impl FnMut(&mut QueryEvent, &[u8])) {
        for (mut ev, range) in self.events.drain(..) {
            let name = self
                .names
                .get(range.start as usize..range.end as usize)
                .unwrap_or(&[]);
            f(&mut ev, name);
        }
        self.names.clear();
    }

    fn clear(&mut self) {
        self.events.clear();
        self.names.clear();
    }
}

/// Events handed over together, as a list of events (`record_batch`) or a listener's
/// `WireBatch`: what shedding needs of either.
trait EventBatch {
    fn len(&self) -> usize;
    /// Leave out the events for which `keep` is false, the others in order.
    fn retain_events(&mut self, keep: impl FnMut(&QueryEvent) -> bool);
}

impl EventBatch for Vec<QueryEvent> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn retain_events(&mut self, mut keep: impl FnMut(&QueryEvent) -> bool) {
        self.retain(|e| keep(e));
    }
}

impl EventBatch for WireBatch {
    fn len(&self) -> usize {
        WireBatch::len(self)
    }

    /// `keep` is given each event with its name made text.
    fn retain_events(&mut self, mut keep: impl FnMut(&QueryEvent) -> bool) {
        let names = &self.names;
        let mut scratch = String::new();
        self.events.retain_mut(|(ev, range)| {
            let name = names.get(range.start as usize..range.end as usize);
            ev.qname =
                crate::wire::name_text_into(name.unwrap_or(&[]), std::mem::take(&mut scratch));
            let k = keep(ev);
            scratch = std::mem::take(&mut ev.qname);
            k
        });
    }
}

enum Msg {
    Event(QueryEvent),
    /// A listener's receive batch with names in wire form (`WireBatch`).
    Wire(WireBatch),
    /// Several events at once: the proxy's listeners hand over a receive batch's events with
    /// one channel operation (and at most one wake-up of this thread).
    Batch(Vec<QueryEvent>),
    /// Answer once everything sent before has been processed; `true` closes open walks too.
    Sync(bool, SyncSender<()>),
}

struct Shared {
    windowed: Windowed,
}

struct Inner {
    tx: SyncSender<Msg>,
    /// Emptied batches, back from the tracker thread for the listeners to fill again.
    spare: Arc<Mutex<Spares>>,
    shared: Arc<Mutex<Shared>>,
    dropped: AtomicU64,
    /// Events sent and not yet taken by the thread.
    queued: Arc<AtomicUsize>,
    /// Walk keys below this (out of `SHED_SCALE`) are left out; set by the thread.
    shed_level: Arc<AtomicU32>,
    shed: AtomicU64,
    budget: Arc<MemoryBudget>,
    source: String,
    /// The pods' search list from the config (the report's context for its advice).
    cluster: ClusterConfig,
    /// The proxy's `shortcut.zones` (set by the proxy; never advised again).
    configured_zones: Mutex<Vec<String>>,
}

/// Handle to the tracker thread; cheap to clone. The thread ends when the last handle is
/// dropped (after closing the walks still open).
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

impl Tracker {
    /// Start the tracker thread for pods shaped like `cluster`, with `cfg`'s idle window and
    /// open-walk bound. The report's `source` is this host's name.
    pub fn start(cluster: &ClusterConfig, cfg: &TrackerConfig) -> Tracker {
        Self::start_named(cluster, cfg, &hostname())
    }

    /// Like [`Tracker::start`], its queue and open walks charged to `budget` (the proxy's).
    pub fn start_with_budget(
        cluster: &ClusterConfig,
        cfg: &TrackerConfig,
        budget: Arc<MemoryBudget>,
    ) -> Tracker {
        Self::start_budgeted(cluster, cfg, &hostname(), budget)
    }

    /// Like [`Tracker::start`] with an explicit `source` for the report.
    pub fn start_named(cluster: &ClusterConfig, cfg: &TrackerConfig, source: &str) -> Tracker {
        Self::start_budgeted(cluster, cfg, source, Arc::new(MemoryBudget::unbounded()))
    }

    /// Like [`Tracker::start_named`], its queue and open walks charged to `budget`.
    pub fn start_budgeted(
        cluster: &ClusterConfig,
        cfg: &TrackerConfig,
        source: &str,
        budget: Arc<MemoryBudget>,
    ) -> Tracker {
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE_CAPACITY);
        let shared = Arc::new(Mutex::new(Shared {
            windowed: Windowed::new(Timestamp::now()),
        }));
        let queued = Arc::new(AtomicUsize::new(0));
        let thread_queued = queued.clone();
        let shed_level = Arc::new(AtomicU32::new(0));
        let thread_shed = shed_level.clone();
        let thread_budget = budget.clone();
        let mut walks = WalkTracker::new(SearchShape::new(cluster), cfg)
            .with_budget(budget.clone())
            .defer_repeats(Windowed::BUCKET);
        let mut lookup_metrics = LookupMetrics::new(cfg.namespace_series);
        let thread_shared = shared.clone();
        let spare = Arc::new(Mutex::new(Spares::default()));
        let thread_spare = spare.clone();
        std::thread::Builder::new()
            .name("ndots-tracker".into())
            .spawn(move || {
                crate::sched::batch();
                // Event time, advanced by wall time while no events come, so idle walks close
                // on schedule whether events carry live or replayed timestamps.
                let mut clock = (Timestamp(0), Instant::now());
                let mut evictions = 0u64;
                let mut next_tick = Instant::now() + TICK;
                let mut empty_polls = 0u32;
                let mut poll = POLL_INTERVAL;
                let mut last_turn = Instant::now();
                loop {
                    let until_tick = next_tick.saturating_duration_since(Instant::now());
                    let msg = if empty_polls < POLLS_BEFORE_BLOCKING {
                        // Busy: poll. A receiver blocked in `recv` turns every listener's
                        // send into a futex wake-up, a syscall and a context switch per
                        // receive batch (one packet each at moderate rates), paid on the packet
                        // path; a polling one costs the senders an atomic load.
                        match rx.try_recv() {
                            Ok(m) => {
                                empty_polls = 0;
                                Ok(m)
                            }
                            Err(TryRecvError::Empty) => {
                                empty_polls += 1;
                                std::thread::sleep(poll.min(until_tick));
                                Err(RecvTimeoutError::Timeout)
                            }
                            Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                        }
                    } else {
                        // Idle: block, so an idle proxy does not wake up every few milliseconds.
                        let m = rx.recv_timeout(until_tick);
                        if m.is_ok() {
                            empty_polls = 0;
                        }
                        m
                    };
                    let mut disconnected = false;
                    // Hand out the lookups the walks hold as repeats at this turn's end.
                    let mut settle = false;
                    let mut handle = |msg: Msg, walks: &mut WalkTracker| match msg {
                        Msg::Event(ev) => {
                            thread_queued.fetch_sub(1, Ordering::Relaxed);
                            thread_budget.release(Part::TrackerQueue, event_bytes(&ev));
                            advance(&mut clock, Some(ev.time));
                            walks.observe(&ev);
                            None
                        }
                        Msg::Batch(evs) => {
                            thread_queued.fetch_sub(evs.len(), Ordering::Relaxed);
                            thread_budget.release(Part::TrackerQueue, batch_bytes(&evs));
                            advance(&mut clock, evs.iter().map(|e| e.time).max());
                            for ev in &evs {
                                walks.observe(ev);
                            }
                            None
                        }
                        Msg::Wire(mut batch) => {
                            thread_queued.fetch_sub(batch.len(), Ordering::Relaxed);
                            thread_budget.release(Part::TrackerQueue, batch.bytes());
                            advance(&mut clock, batch.events.iter().map(|(e, _)| e.time).max());
                            batch.for_each_wire(|ev, wire| walks.observe_wire(ev, wire));
                            recycle(&thread_spare, batch);
                            None
                        }
                        Msg::Sync(close, reply) => {
                            if close {
                                walks.finish();
                            }
                            Some(reply)
                        }
                    };
                    // The lookups each message closed are published before the next message:
                    // kept for a whole drain (hundreds of events at full load), the list of
                    // closed lookups outgrew the L1 cache between its writing and its reading.
                    // The metrics' sums are flushed under the same lock hold, so a scrape
                    // never counts fewer lookups than a report taken before it. The lookups
                    // of cached answers asked again are held by the walks as repeats and
                    // published when due (an entry full, a new bucket: before the lookups
                    // closed with them, which can be of the new bucket), at each tick, and at
                    // a sync (`Tracker::report` asks for one).
                    let mut publish = |walks: &mut WalkTracker, settle: bool| {
                        let due = match (settle, walks.holds_repeats()) {
                            (_, false) => Due::Nothing,
                            (true, true) => Due::All,
                            (false, true) => walks.repeats_due(),
                        };
                        if walks.closed_len() == 0 && due == Due::Nothing {
                            return;
                        }
                        // The repeats in chunks, each with the lock held and the metrics
                        // flushed, the core offered to whatever waits for it in between
                        // (`REPEATS_PER_CHUNK`); then the lookups closed.
                        loop {
                            let mut s = thread_shared.lock();
                            let more = walks.drain_some_repeats(due, REPEATS_PER_CHUNK, |l, r| {
                                lookup_metrics.record_repeated(l, r);
                                s.windowed.add_repeated(l, r);
                            });
                            if !more {
                                for l in walks.drain() {
                                    lookup_metrics.record(&l);
                                    s.windowed.add(&l);
                                }
                            }
                            lookup_metrics.flush();
                            drop(s);
                            if !more {
                                break;
                            }
                            std::thread::yield_now();
                        }
                    };
                    // A sync is answered at once, with everything before it published (the
                    // repeats held too): not after the rest of the turn.
                    let mut take = |msg: Msg, walks: &mut WalkTracker| {
                        let reply = handle(msg, walks);
                        publish(walks, reply.is_some());
                        if let Some(r) = reply {
                            let _ = r.send(());
                        }
                    };
                    let fill = || QueueFill {
                        events: thread_queued.load(Ordering::Relaxed),
                        bytes: thread_budget.used(Part::TrackerQueue),
                        share: thread_budget.share(Part::TrackerQueue),
                    };
                    // How far behind the thread was when it got to run: the end of the turn
                    // alone misses a backlog that one turn's drain empties.
                    let at_start = fill();
                    let mut messages = 0;
                    match msg {
                        Ok(msg) => {
                            take(msg, &mut walks);
                            messages += 1;
                            for _ in 0..4096 {
                                match rx.try_recv() {
                                    Ok(msg) => take(msg, &mut walks),
                                    Err(_) => break,
                                }
                                messages += 1;
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            walks.finish();
                            disconnected = true;
                            settle = true;
                        }
                    }
                    poll = next_poll(at_start, messages);
                    let since_ms = last_turn.elapsed().as_millis().min(64) as u32;
                    last_turn = Instant::now();
                    let level = thread_shed.load(Ordering::Relaxed);
                    let next = next_shed_level(level, at_start, fill(), since_ms);
                    if next != level {
                        thread_shed.store(next, Ordering::Relaxed);
                    }
                    if Instant::now() >= next_tick {
                        let now = Timestamp(clock.0 .0 + clock.1.elapsed().as_micros() as u64);
                        walks.flush(now);
                        next_tick = Instant::now() + TICK;
                        settle = true;
                    }
                    let ev = walks.evictions();
                    if ev > evictions {
                        metrics::counter!(m::TRACKER_EVICTIONS).increment(ev - evictions);
                        evictions = ev;
                    }
                    // What the tick and the end closed; the repeats held, at a tick or sync.
                    publish(&mut walks, settle);
                    if disconnected {
                        break;
                    }
                }
            })
            .expect("spawning the tracker thread");
        Tracker {
            inner: Arc::new(Inner {
                tx,
                spare,
                shared,
                dropped: AtomicU64::new(0),
                queued,
                shed_level,
                shed: AtomicU64::new(0),
                budget,
                source: source.to_string(),
                cluster: cluster.clone(),
                configured_zones: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Hand one event to the tracker thread without blocking; counted and dropped when the
    /// queue is full.
    #[inline]
    pub fn record(&self, event: QueryEvent) {
        let level = self.inner.shed_level.load(Ordering::Relaxed);
        if level > 0 && self.shed_key(&event) < level {
            self.inner.shed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let bytes = event_bytes(&event);
        if !self.reserve(1, bytes) {
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.inner.tx.try_send(Msg::Event(event))
        {
            self.unreserve(1, bytes);
        }
    }

    /// Where an event's walk falls on the shed scale: the same for every event of one walk.
    #[inline]
    fn shed_key(&self, e: &QueryEvent) -> u32 {
        (walk_sample_key(e.client, e.qtype, &e.qname) % u64::from(SHED_SCALE)) as u32
    }

    /// Room for `n` more events (`bytes` in all) in the queue; counts them dropped when there
    /// is none.
    #[inline]
    fn reserve(&self, n: usize, bytes: usize) -> bool {
        let before = self.inner.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > QUEUE_CAPACITY {
            self.inner.queued.fetch_sub(n, Ordering::Relaxed);
            self.inner.dropped.fetch_add(n as u64, Ordering::Relaxed);
            return false;
        }
        if !self.inner.budget.try_charge(Part::TrackerQueue, bytes) {
            self.inner.queued.fetch_sub(n, Ordering::Relaxed);
            self.inner.dropped.fetch_add(n as u64, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn unreserve(&self, n: usize, bytes: usize) {
        self.inner.queued.fetch_sub(n, Ordering::Relaxed);
        self.inner.budget.release(Part::TrackerQueue, bytes);
        self.inner.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Hand several events over at once (in order), without blocking.
    pub fn record_batch(&self, mut events: Vec<QueryEvent>) {
        self.shed_from(&mut events);
        if events.is_empty() {
            return;
        }
        let n = events.len();
        let bytes = batch_bytes(&events);
        if !self.reserve(n, bytes) {
            return;
        }
        if self.inner.tx.try_send(Msg::Batch(events)).is_err() {
            self.unreserve(n, bytes);
        }
    }

    /// Leave out the events of walks under the shed level, counted as shed.
    fn shed_from(&self, batch: &mut impl EventBatch) {
        let level = self.inner.shed_level.load(Ordering::Relaxed);
        if level > 0 {
            let before = batch.len();
            batch.retain_events(|e| self.shed_key(e) >= level);
            let shed = before - batch.len();
            self.inner.shed.fetch_add(shed as u64, Ordering::Relaxed);
        }
    }

    /// Queue `batch` (events already shed), or count its events dropped.
    fn record_wire_batch(&self, batch: WireBatch) {
        if batch.is_empty() {
            return recycle(&self.inner.spare, batch);
        }
        let n = batch.len();
        let bytes = batch.bytes();
        if !self.reserve(n, bytes) {
            return recycle(&self.inner.spare, batch);
        }
        if let Err(e) = self.inner.tx.try_send(Msg::Wire(batch)) {
            self.unreserve(n, bytes);
            if let TrySendError::Full(Msg::Wire(batch))
            | TrySendError::Disconnected(Msg::Wire(batch)) = e
            {
                recycle(&self.inner.spare, batch);
            }
        }
    }

    /// Hand over the events a thread gathered in `pending` and leave it empty for the next
    /// ones. The queue charges a batch for the room it holds (7.7 KB for `EVENT_BATCH` events
    /// and their names), so up to `COPIED_UP_TO` events go as a copy in a batch of their size
    /// class and `pending` keeps its room. The answers of spawned queries are handed over one
    /// at a time; sent in their threads' 64-event batches, they filled the queue's budget
    /// share while it held a few thousand events, and batches were refused with nothing shed
    /// (tests/overload.rs, 60 s brownouts at twice capacity on c2f2360: 0.05-0.17% of the
    /// events dropped).
    ///
    /// Batches go round (`recycle`) instead of being allocated on a listener and freed on the
    /// tracker thread: glibc frees into the allocating thread's arena under its lock, and the
    /// two threads contended for it (futex calls, and `madvise` as the arena's top shrank and
    /// grew, in `strace -c -f` at 50k QPS). A batch is only allocated when its pool is empty.
    pub fn hand_over(&self, pending: &mut WireBatch) {
        if pending.is_empty() {
            return; // most flushes of a thread with nothing answered
        }
        // Shed before the batch is sized: what is left is what the queue holds.
        self.shed_from(pending);
        if pending.is_empty() {
            pending.clear(); // the names of the events shed, if any
            return;
        }
        let need = pending.len().max(pending.names_len().div_ceil(NAME_ROOM));
        let batch = if need <= COPIED_UP_TO {
            let class = class_of(need);
            let spare = self.inner.spare.lock().classes[class].pop();
            let mut fitted = spare.unwrap_or_else(|| WireBatch::of_class(class));
            fitted.take_from(pending);
            fitted
        } else {
            let spare = self.inner.spare.lock().full.pop();
            std::mem::replace(
                pending,
                spare.unwrap_or_else(|| WireBatch::with_capacity(EVENT_BATCH)),
            )
        };
        self.record_wire_batch(batch);
    }

    /// Hand several events over, waiting while the queue is full: back-pressure for a caller
    /// that may block (`ndots collect` stops reading its senders), never the packet path.
    /// Returns false when the tracker thread is gone.
    pub fn record_batch_wait(&self, events: Vec<QueryEvent>) -> bool {
        if events.is_empty() {
            return true;
        }
        let n = events.len();
        loop {
            let before = self.inner.queued.fetch_add(n, Ordering::Relaxed);
            // A batch larger than the whole queue goes in once the queue is empty.
            if before == 0 || before + n <= QUEUE_CAPACITY {
                break;
            }
            self.inner.queued.fetch_sub(n, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(200));
        }
        // Charged like every queued message (over the share if need be: this caller waits on
        // the event count instead), since the thread releases what it takes in.
        let bytes = batch_bytes(&events);
        self.inner.budget.charge(Part::TrackerQueue, bytes);
        if self.inner.tx.send(Msg::Batch(events)).is_err() {
            self.inner.queued.fetch_sub(n, Ordering::Relaxed);
            self.inner.budget.release(Part::TrackerQueue, bytes);
            return false;
        }
        true
    }

    /// Set the shed level as the thread would when behind (tests).
    #[cfg(test)]
    fn force_shed_level(&self, level: u32) {
        self.inner.shed_level.store(level, Ordering::Relaxed);
    }

    /// Events of walks left out whole because the tracker was behind.
    pub fn shed(&self) -> u64 {
        self.inner.shed.load(Ordering::Relaxed)
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Wait until every event recorded before this call is processed; with `close_open`, also
    /// close the walks still open (tests, and shutdown).
    pub fn sync(&self, close_open: bool) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.inner.tx.send(Msg::Sync(close_open, tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Have the tracker thread publish the lookups it holds as repeats (cached answers asked
    /// again, published by count) and wait for it, at most `SETTLE_WAIT`: a report then
    /// counts every event handed over before it, unless the thread is that far behind or its
    /// queue is full (shedding), when it counts what was published.
    fn settle(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.inner.tx.try_send(Msg::Sync(false, tx)).is_ok() {
            let _ = rx.recv_timeout(SETTLE_WAIT);
        }
    }

    /// The report over the last `window` (or since start). Lookups still open are not in it.
    pub fn report(&self, window: Option<Duration>) -> Report {
        self.settle();
        let s = self.inner.shared.lock();
        let now = Timestamp::now().max(s.windowed.latest());
        let mut r = s.windowed.report(window, now, &self.inner.source);
        drop(s);
        r.dropped_events = self.dropped();
        r.configured_zones = self.inner.configured_zones.lock().clone();
        r.set_search(&self.inner.cluster, super::advice::SEARCH_CONFIG);
        r.shed_events = self.shed();
        r
    }

    /// The proxy's `shortcut.zones`, which the report's advice leaves out.
    pub fn set_configured_zones(&self, zones: &[String]) {
        *self.inner.configured_zones.lock() = zones.to_vec();
    }

    /// [`Tracker::report`] as the DESIGN §4 JSON (what `/report` serves).
    pub fn report_json(&self, window: Option<Duration>) -> String {
        serde_json::to_string(&self.report(window)).expect("the report serializes")
    }
}

/// The Prometheus series closed lookups move, with their handles held by the tracker thread:
/// one map lookup per lookup (by type, outcome and namespace) instead of one per series, and
/// the per-suffix counters in arrays. A handle is made when its series first moves, as the
/// counting sites did before.
///
/// Counters are summed here and the sums added at each publish (`flush`, after each message
/// that closed lookups, under the lock the report reads): a counter update is two atomic
/// operations (the exporter's recency tracking), and a lookup moves seven counters. The
/// histograms' records are held the same way (`PendingHistogram`).
struct LookupMetrics {
    namespaces: NamespaceLabels,
    /// By (type label number, outcome, namespace id).
    series: m::SummedSeries<(u64, Outcome, usize), LookupSeries>,
    suffix_wasted: [Option<metrics::Counter>; SuffixSlot::ALL.len()],
    suffix_queries: [Option<metrics::Counter>; SuffixSlot::ALL.len()],
    suffix_wasted_sum: [u64; SuffixSlot::ALL.len()],
    suffix_queries_sum: [u64; SuffixSlot::ALL.len()],
}

/// The handles of one (type, outcome, namespace).
struct LookupSeries {
    queries: m::PendingHistogram,
    duration: m::PendingHistogram,
    lookups: metrics::Counter,
    wasted_by_type: Option<metrics::Counter>,
    ns_lookups: metrics::Counter,
    ns_queries: metrics::Counter,
    ns_wasted: Option<metrics::Counter>,
    type_name: &'static str,
    namespace: String,
    /// Lookups, queries and wasted queries not yet added to the counters.
    lookups_sum: u64,
    queries_sum: u64,
    wasted_sum: u64,
}

impl LookupMetrics {
    fn new(namespace_series: usize) -> Self {
        LookupMetrics {
            namespaces: NamespaceLabels::new(namespace_series),
            series: m::SummedSeries::default(),
            suffix_wasted: Default::default(),
            suffix_queries: Default::default(),
            suffix_wasted_sum: [0; SuffixSlot::ALL.len()],
            suffix_queries_sum: [0; SuffixSlot::ALL.len()],
        }
    }

    fn record(&mut self, l: &Lookup) {
        let s = self.count(l, 1);
        if let Some(d) = l.duration {
            s.duration.record(d.as_secs_f64());
        }
    }

    /// `record` of each lookup `repeats` made as `l`.
    fn record_repeated(&mut self, l: &Lookup, repeats: &Repeats) {
        let s = self.count(l, repeats.held() as u64);
        for &us in repeats.durations_us() {
            s.duration.record(f64::from(us) / 1e6);
        }
    }

    /// Count `n` lookups like `l` (all but their durations); their series.
    fn count(&mut self, l: &Lookup, n: u64) -> &mut LookupSeries {
        let (t, type_name) = m::type_label(l.qtype);
        let (ns_id, ns) = self.namespaces.label(l.namespace.as_deref());
        let s = self.series.touch((t, l.outcome, ns_id), || {
            let ty = || vec![("type", type_name.to_string())];
            LookupSeries {
                queries: m::PendingHistogram::new(m::fixed_histogram(m::LOOKUP_QUERIES, &ty())),
                duration: m::PendingHistogram::new(m::fixed_histogram(
                    m::LOOKUP_DURATION,
                    &ty(),
                )),
                lookups: metrics::counter!(m::LOOKUPS, "type" => type_name, "outcome" => l.outcome.as_str()),
                wasted_by_type: None,
                ns_lookups: metrics::counter!(m::NAMESPACE_LOOKUPS, "namespace" => ns.to_string()),
                ns_queries: metrics::counter!(m::NAMESPACE_QUERIES, "namespace" => ns.to_string()),
                ns_wasted: None,
                type_name,
                namespace: ns.to_string(),
                lookups_sum: 0,
                queries_sum: 0,
                wasted_sum: 0,
            }
        });
        s.queries.record_n(f64::from(l.queries), n);
        s.lookups_sum += n;
        s.queries_sum += u64::from(l.queries) * n;
        s.wasted_sum += u64::from(l.wasted) * n;
        for i in 0..SuffixSlot::ALL.len() {
            self.suffix_wasted_sum[i] += u64::from(l.suffix_wasted[i]) * n;
            self.suffix_queries_sum[i] += u64::from(l.suffix_queries[i]) * n;
        }
        s
    }

    /// Add the sums recorded since the last call to the counters.
    fn flush(&mut self) {
        self.series.flush(|s| {
            s.queries.flush();
            s.duration.flush();
            s.lookups.increment(s.lookups_sum);
            s.ns_lookups.increment(s.lookups_sum);
            s.ns_queries.increment(s.queries_sum);
            if s.wasted_sum > 0 {
                let (type_name, ns) = (s.type_name, &s.namespace);
                s.wasted_by_type
                    .get_or_insert_with(
                        || metrics::counter!(m::WASTED_QUERIES_BY_TYPE, "type" => type_name),
                    )
                    .increment(s.wasted_sum);
                s.ns_wasted
                    .get_or_insert_with(
                        || metrics::counter!(m::NAMESPACE_WASTED, "namespace" => ns.clone()),
                    )
                    .increment(s.wasted_sum);
            }
            (s.lookups_sum, s.queries_sum, s.wasted_sum) = (0, 0, 0);
        });
        for slot in SuffixSlot::ALL {
            let i = slot as usize;
            let wasted = std::mem::take(&mut self.suffix_wasted_sum[i]);
            if wasted > 0 {
                self.suffix_wasted[i]
                    .get_or_insert_with(
                        || metrics::counter!(m::WASTED_QUERIES, "suffix" => slot.as_str()),
                    )
                    .increment(wasted);
            }
            let queries = std::mem::take(&mut self.suffix_queries_sum[i]);
            if queries > 0 {
                self.suffix_queries[i]
                    .get_or_insert_with(
                        || metrics::counter!(m::SEARCH_QUERIES, "suffix" => slot.as_str()),
                    )
                    .increment(queries);
            }
        }
    }
}

/// Batches kept for reuse, per size: what the listeners hand over between two polls of the
/// tracker (`next_poll` polls sooner when a turn takes more than half of them).
const SPARE_BATCHES: usize = 128;
/// A hand-over of at most `COPIED_UP_TO` events (and `NAME_ROOM` bytes of names an event) goes
/// as a copy in a batch with room for the next power of two (1, 2, 4, 8 or 16 events,
/// `NAME_ROOM` bytes of names each): a queued batch then holds at most about twice what its
/// events need, and from 17 events on a listener's 64-event batch goes as it is, under four
/// times (`Tracker::hand_over`).
const CLASSES: usize = 5;
const COPIED_UP_TO: usize = 1 << (CLASSES - 1);
/// Room for names per event in a copied batch: a walk's candidates under a cluster's search
/// list are 60-90 bytes in wire form.
const NAME_ROOM: usize = 128;

/// The size class of a hand-over that needs room for `n` (1 to `COPIED_UP_TO`) events.
fn class_of(n: usize) -> usize {
    n.next_power_of_two().trailing_zeros() as usize
}

/// Empty `batch` and keep it for reuse, unless enough of its size are kept or a run of long
/// names grew its name buffer past its room: the kept batches are outside the memory budget,
/// bounded by this (per size, 64 batches: of 64 events and 4 KiB of names, and of each class,
/// about 430 KiB for all five).
fn recycle(spare: &Mutex<Spares>, mut batch: WireBatch) {
    let events = batch.events.capacity();
    let (pool, name_room) = if events <= COPIED_UP_TO {
        if !events.is_power_of_two() {
            return; // not one of `hand_over`'s classes
        }
        (Some(class_of(events)), NAME_ROOM)
    } else {
        (None, 64)
    };
    if batch.names.capacity() > events.max(1) * name_room {
        return;
    }
    batch.clear();
    let mut spare = spare.lock();
    let pool = match pool {
        Some(class) => &mut spare.classes[class],
        None => &mut spare.full,
    };
    if pool.len() < SPARE_BATCHES {
        pool.push(batch);
    }
}

/// Emptied batches waiting to be filled again, by size (`Tracker::hand_over`).
#[derive(Default)]
struct Spares {
    full: Vec<WireBatch>,
    classes: [Vec<WireBatch>; CLASSES],
}

/// Move the tracker's event clock to `latest` (a batch's newest event time) if that is later,
/// with one wall-clock reading per batch: its events were answered together.
fn advance(clock: &mut (Timestamp, Instant), latest: Option<Timestamp>) {
    if let Some(t) = latest.filter(|t| *t >= clock.0) {
        *clock = (t, Instant::now());
    }
}

/// The `namespace` label values: the first `cap` namespaces seen keep their own (a counter
/// cannot move to another label later without breaking its rate), the rest are `other`, and
/// lookups whose namespace is not known (no `<ns>.svc` suffix seen) are `unknown`.
struct NamespaceLabels {
    cap: usize,
    seen: hashbrown::HashMap<String, usize>,
    names: Vec<String>,
    /// The id last looked up by name.
    last: usize,
}

impl NamespaceLabels {
    const OTHER: usize = usize::MAX;
    const UNKNOWN: usize = usize::MAX - 1;

    fn new(cap: usize) -> Self {
        NamespaceLabels {
            cap,
            seen: Default::default(),
            names: Vec::new(),
            last: 0,
        }
    }

    /// A small id (for the memoised handle) and the label value.
    fn label(&mut self, ns: Option<&str>) -> (usize, &str) {
        let Some(ns) = ns else {
            return (Self::UNKNOWN, "unknown");
        };
        // Lookups come in runs of one namespace: the last one is checked before the map.
        if self.names.get(self.last).is_some_and(|n| n == ns) {
            return (self.last, &self.names[self.last]);
        }
        if let Some(&i) = self.seen.get(ns) {
            self.last = i;
            return (i, &self.names[i]);
        }
        if self.names.len() >= self.cap {
            return (Self::OTHER, "other");
        }
        let i = self.names.len();
        self.seen.insert(ns.to_string(), i);
        self.names.push(ns.to_string());
        self.last = i;
        (i, &self.names[i])
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(s) = std::str::from_utf8(&buf[..end]) {
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    "proxy".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tracker thread's scheduling policy, from /proc (field 41 of a task's `stat`).
    fn tracker_policies() -> Vec<u64> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != "ndots-tracker" {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // After the `(comm)` field, fields start at 3 (state): policy is the 39th there.
            let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            if let Some(p) = rest.split_whitespace().nth(41 - 3) {
                out.push(p.parse().unwrap());
            }
        }
        out
    }

    /// `SCHED_BATCH` keeps the tracker's wake-ups from preempting a listener (latency at 10k
    /// QPS, benches/README.md).
    #[test]
    fn the_tracker_thread_runs_under_sched_batch() {
        let cluster = ClusterConfig::kubernetes("cluster.local");
        let cfg = TrackerConfig {
            idle: Duration::from_secs(2),
            max_open_walks: 100,
            namespace_series: crate::config::DEFAULT_NAMESPACE_SERIES,
        };
        let t = Tracker::start(&cluster, &cfg);
        t.sync(false); // the thread is past its start
                       // Other tests start trackers too: one just spawned may not have set its policy yet.
        let mut policies = tracker_policies();
        for _ in 0..200 {
            if !policies.is_empty() && policies.iter().all(|&p| p == libc::SCHED_BATCH as u64) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            policies = tracker_policies();
        }
        assert!(
            !policies.is_empty(),
            "no ndots-tracker thread in /proc/self/task"
        );
        assert!(
            policies.iter().all(|&p| p == libc::SCHED_BATCH as u64),
            "tracker threads' policies: {policies:?}"
        );
    }
    use crate::event::AnswerSource;

    /// The brownouts' drops (tests/overload.rs, 60 s at twice capacity, upstream dead): answers
    /// of spawned queries were handed over one at a time, each in a batch with room for 64
    /// events and charged for that room, so a few thousand queued events filled the queue's
    /// budget share and whole batches were refused with nothing shed. A few events now go in
    /// a batch of their size: here 1,000 single answers queue behind a tracker thread held
    /// up, in a share that 64-event batches would fill after about 130.
    #[test]
    fn answers_handed_over_one_at_a_time_fit_the_queue_share() {
        let budget = Arc::new(MemoryBudget::new(13_333_334));
        let share = budget.share(Part::TrackerQueue);
        assert_eq!(share, 999_975);
        let answers = 1000usize;
        let full = WireBatch::with_capacity(EVENT_BATCH).bytes();
        let one = WireBatch::of_class(0).bytes();
        assert!(
            answers * full > 5 * share,
            "64-event batches: {full} bytes each"
        );
        assert!(
            answers * one < share / 2,
            "batches of one: {one} bytes each"
        );
        let tr = one_domain_tracker("one-at-a-time", budget.clone());
        let mut pending = WireBatch::with_capacity(EVENT_BATCH);
        {
            // The thread stops at its first closed lookup (a positive answer closes one at
            // once), waiting for this lock.
            let _held = tr.inner.shared.lock();
            for i in 0..answers {
                pending.push(positive_answer(i), b"\x03www\x07example\x03com\x00");
                tr.hand_over(&mut pending);
                assert!(pending.is_empty());
            }
            assert_eq!(budget.refused(Part::TrackerQueue), 0);
            assert_eq!(tr.dropped(), 0, "refused while the thread was held up");
        }
        tr.sync(true);
        assert_eq!(tr.report(None).lookups, answers as u64);
        assert_eq!(budget.used(Part::TrackerQueue), 0, "every batch released");
    }

    /// A tracker for pods searching `<ns>.svc.cluster.local` only, charged to `budget`.
    fn one_domain_tracker(source: &str, budget: Arc<MemoryBudget>) -> Tracker {
        let cluster = ClusterConfig {
            domain: "cluster.local".into(),
            search: vec!["*.svc.cluster.local".into()],
            node_search: vec![],
        };
        let cfg = TrackerConfig {
            idle: Duration::from_secs(2),
            max_open_walks: 1000,
            namespace_series: crate::config::DEFAULT_NAMESPACE_SERIES,
        };
        Tracker::start_budgeted(&cluster, &cfg, source, budget)
    }

    fn positive_answer(i: usize) -> QueryEvent {
        QueryEvent {
            time: Timestamp(1_000_000 + i as u64),
            client: std::net::IpAddr::from([10, 0, (i / 200) as u8, (i % 200) as u8]),
            client_port: Some(40000),
            qname: String::new(),
            qtype: 1,
            rcode: Some(0),
            answers: Some(1),
            latency: Some(Duration::from_micros(300)),
            source: Some(AnswerSource::Upstream),
        }
    }

    /// The tracker holds the lookups of cached answers asked again and publishes them by
    /// count; a report must not miss them: it has the thread publish what it holds first.
    #[test]
    fn a_report_counts_the_lookups_held_as_repeats() {
        let tr = one_domain_tracker("held", Arc::new(MemoryBudget::unbounded()));
        let mut pending = WireBatch::with_capacity(EVENT_BATCH);
        for i in 0..60 {
            let mut e = positive_answer(0);
            e.time.0 += i;
            pending.push(e, b"\x03www\x07example\x03com\x00");
            if pending.len() == 3 {
                tr.hand_over(&mut pending);
            }
        }
        // Without a sync: the thread may still hold up to `REPEATS` of them.
        let r = tr.report(None);
        assert_eq!(r.lookups, 60);
        assert_eq!(r.duration_ms.map(|d| d.max), Some(0.3));
        // The Prometheus counter of this tracker's lookups is shared with other tests' ones:
        // that it moves with the report is `lookups_update_the_prometheus_metrics`'s.
    }

    /// A hand-over goes in a batch of its size class, its events and names as they were and in
    /// order, and the thread's batch is left empty with its room; a class's batch comes back
    /// to its own pool.
    #[test]
    fn a_hand_over_is_fitted_to_its_size() {
        assert_eq!(
            (1..=16).map(class_of).collect::<Vec<_>>(),
            [0, 1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4]
        );
        let tr = one_domain_tracker("fitted", Arc::new(MemoryBudget::unbounded()));
        let mut pending = WireBatch::with_capacity(EVENT_BATCH);
        let name = |i: usize| format!("\x01{}\x07example\x03com\x00", (b'a' + i as u8) as char);
        let mut copy = WireBatch::of_class(class_of(3));
        for i in 0..3 {
            pending.push(positive_answer(i), name(i).as_bytes());
        }
        copy.take_from(&mut pending);
        assert!(pending.is_empty() && pending.names.is_empty());
        assert_eq!(pending.events.capacity(), EVENT_BATCH);
        assert_eq!(copy.events.capacity(), 4);
        let mut texts = Vec::new();
        copy.for_each_wire(|e, name| {
            texts.push((e.time.0, crate::wire::name_text_into(name, String::new())))
        });
        assert_eq!(
            texts,
            [
                (1_000_000, "a.example.com.".to_string()),
                (1_000_001, "b.example.com.".to_string()),
                (1_000_002, "c.example.com.".to_string())
            ]
        );
        recycle(&tr.inner.spare, copy);
        assert_eq!(tr.inner.spare.lock().classes[2].len(), 1);
        // Seventeen events go as the listener's batch itself, which a spare replaces.
        for i in 0..17 {
            pending.push(positive_answer(i), name(i).as_bytes());
        }
        tr.hand_over(&mut pending);
        assert!(pending.is_empty());
        tr.sync(true);
        assert_eq!(tr.report(None).lookups, 17);
        let spare = tr.inner.spare.lock();
        assert_eq!(spare.full.len(), 1, "the 17 events' batch came back");
        assert_eq!(spare.classes[2].len(), 1);
    }

    /// A hand-over is sized after its shed events are left out: a listener's batch of 20
    /// events that shedding leaves with a few is queued in a batch of their size class, not
    /// in its own 64-event room (the byte count that shedding is meant to bring down).
    #[test]
    fn a_hand_over_is_sized_after_shedding() {
        let budget = Arc::new(MemoryBudget::new(13_333_334));
        let tr = one_domain_tracker("shed-then-sized", budget.clone());
        let name = |i: usize| format!("\x04h{:03}\x07example\x03com\x00", i);
        let mut pending = WireBatch::with_capacity(EVENT_BATCH);
        let _held = tr.inner.shared.lock();
        // One answer first: the thread takes it in, closes its lookup and waits for the lock.
        pending.push(positive_answer(1000), b"\x05first\x07example\x03com\x00");
        tr.hand_over(&mut pending);
        while budget.used(Part::TrackerQueue) != 0 {
            std::thread::yield_now();
        }
        tr.force_shed_level(SHED_SCALE * 3 / 4);
        for i in 0..20 {
            pending.push(positive_answer(i), name(i).as_bytes());
        }
        tr.hand_over(&mut pending);
        let kept = 20 - tr.shed() as usize;
        assert!((1..=16).contains(&kept), "kept {kept} of 20");
        assert!(pending.is_empty() && pending.names.is_empty());
        assert_eq!(
            budget.used(Part::TrackerQueue),
            WireBatch::of_class(class_of(kept)).bytes(),
            "{kept} events queued in their size class"
        );
    }

    /// `ndots collect` hands over with `record_batch_wait`, which did not charge the budget
    /// while the tracker thread released each batch: the queue's byte count wrapped below
    /// zero, and a shed rule that reads the bytes would have shed everything after.
    #[test]
    fn a_waited_batch_is_charged_for_what_the_thread_releases() {
        let budget = Arc::new(MemoryBudget::new(13_333_334));
        let tr = one_domain_tracker("waited", budget.clone());
        let events: Vec<QueryEvent> = (0..10)
            .map(|i| QueryEvent {
                qname: format!("w{i}.example.com."),
                ..positive_answer(i)
            })
            .collect();
        assert!(tr.record_batch_wait(events));
        tr.sync(false);
        assert_eq!(budget.used(Part::TrackerQueue), 0);
        assert_eq!(tr.report(None).lookups, 10);
    }

    /// Behind in either unit raises the shed level; caught up in both takes it back by the
    /// milliseconds since the last turn.
    #[test]
    fn the_shed_level_follows_the_queue_in_events_and_in_bytes() {
        let share = 7_549_725;
        let fill = |events, bytes| QueueFill {
            events,
            bytes,
            share,
        };
        let empty = fill(0, 0);
        let half_bytes = fill(5_000, share / 2 + 1);
        let unbounded = QueueFill {
            events: 100,
            bytes: 1 << 30,
            share: MemoryBudget::unbounded().share(Part::TrackerQueue),
        };
        // (level, fill at the turn's start, at its end, ms since the last turn) -> level
        let cases = [
            ((0, half_bytes, empty, 1), 64, "behind at the start"),
            ((0, empty, half_bytes, 1), 64, "behind at the end"),
            (
                (0, fill(SHED_RAISE_ABOVE + 1, 0), empty, 1),
                64,
                "behind in events",
            ),
            (
                (SHED_SCALE - 10, half_bytes, empty, 1),
                SHED_SCALE,
                "at most the scale",
            ),
            ((100, empty, fill(10, share / 16), 1), 99, "caught up"),
            ((100, empty, fill(10, share / 4), 1), 100, "held in bytes"),
            (
                (100, empty, fill(SHED_LOWER_BELOW, 0), 1),
                100,
                "held in events",
            ),
            ((0, empty, empty, 1), 0, "nothing to take back"),
            ((0, unbounded, unbounded, 1), 0, "no budget, no byte bound"),
            // Caught up, the level falls by the milliseconds since the last turn.
            ((100, empty, empty, 4), 96, "four ms"),
            ((3, empty, empty, 4), 0, "down to 0"),
            ((100, empty, empty, 0), 99, "at least one a turn"),
            ((100, empty, half_bytes, 4), 164, "behind is not caught up"),
        ];
        for ((level, start, end, ms), want, why) in cases {
            assert_eq!(next_shed_level(level, start, end, ms), want, "{why}");
        }
    }

    /// The tracker polls every `POLL_INTERVAL` unless a turn found a backlog: a sixteenth of
    /// the byte share, `SHED_LOWER_BELOW` events, or more than half a spare pool's batches.
    #[test]
    fn a_turn_that_finds_a_backlog_polls_sooner() {
        let share = 1 << 20;
        let fill = |events, bytes| QueueFill {
            events,
            bytes,
            share,
        };
        assert_eq!(next_poll(fill(0, 0), 0), POLL_INTERVAL);
        assert_eq!(
            next_poll(fill(800, share / 16 - 1), SPARE_BATCHES / 2),
            POLL_INTERVAL
        );
        assert_eq!(next_poll(fill(800, share / 16), 10), POLL_INTERVAL_BUSY);
        assert_eq!(next_poll(fill(SHED_LOWER_BELOW, 0), 10), POLL_INTERVAL_BUSY);
        assert_eq!(
            next_poll(fill(10, 0), SPARE_BATCHES / 2 + 1),
            POLL_INTERVAL_BUSY
        );
        assert!(POLL_INTERVAL_BUSY < POLL_INTERVAL);
    }

    /// A listener's wire-form batch reaches the walks with the same text names a capture
    /// reader makes (`question_name_to_string`: lowercase, escapes), in order, the reused name
    /// buffer never leaking one name into the next.
    #[test]
    fn wire_batch_names_equal_the_text_a_capture_reader_makes() {
        let names: [&[u8]; 4] = [
            b"\x03WwW\x07Example\x03com\x00",
            b"\x01a\x00",
            b"\x04a.b\xff\x03svc\x00",
            b"\x00",
        ];
        let mut batch = WireBatch::with_capacity(2);
        for (i, n) in names.iter().enumerate() {
            let ev = QueryEvent {
                time: Timestamp(i as u64),
                client: "10.0.0.1".parse().unwrap(),
                client_port: Some(1),
                qname: String::new(),
                qtype: 1,
                rcode: Some(0),
                answers: Some(1),
                latency: None,
                source: Some(AnswerSource::Cache),
            };
            batch.push(ev, n);
        }
        let mut seen = Vec::new();
        batch.for_each_wire(|e, name| {
            seen.push((e.time.0, crate::wire::name_text_into(name, String::new())))
        });
        let want: Vec<(u64, String)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut m = vec![0u8, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
                m.extend_from_slice(n);
                m.extend_from_slice(&[0, 1, 0, 1]);
                let q = crate::wire::parse_question(&m).unwrap();
                (i as u64, crate::wire::question_name_to_string(&m, &q))
            })
            .collect();
        assert_eq!(seen, want);
        assert_eq!(seen[0].1, "www.example.com.");
        assert_eq!(seen[3].1, ".");
    }

    /// The metrics land in the Prometheus exposition with DESIGN's names and buckets. TXT
    /// lookups keep this test's series apart from other tests sharing the global recorder.
    #[test]
    fn lookups_update_the_prometheus_metrics() {
        let handle = m::install();
        let cluster = ClusterConfig {
            domain: "cluster.local".into(),
            search: vec![
                "*.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            node_search: vec![],
        };
        let tr = Tracker::start_named(
            &cluster,
            &TrackerConfig {
                idle: Duration::from_secs(2),
                max_open_walks: 100,
                namespace_series: crate::config::DEFAULT_NAMESPACE_SERIES,
            },
            "m",
        );
        let t0 = Timestamp::now().0;
        let names = [
            "txt.example.ns1.svc.cluster.local.",
            "txt.example.svc.cluster.local.",
            "txt.example.cluster.local.",
            "txt.example.",
        ];
        for e in searched_walk(&names, "10.7.7.7", 16, t0) {
            tr.record(e);
        }
        tr.sync(false);
        let mut text = handle.render();
        m::render_extra(&mut text);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        // 4 queries: in the le=4 bucket, not in le=3.
        assert_eq!(
            line("ndots_lookup_queries_bucket{type=\"TXT\",le=\"3\"}"),
            "0"
        );
        assert_eq!(
            line("ndots_lookup_queries_bucket{type=\"TXT\",le=\"4\"}"),
            "1"
        );
        assert_eq!(line("ndots_lookup_queries_sum{type=\"TXT\"}"), "4");
        assert_eq!(
            line("ndots_lookups_total{type=\"TXT\",outcome=\"resolved\"}"),
            "1"
        );
        assert!(text.contains("ndots_lookup_duration_seconds_bucket{type=\"TXT\""));
        assert!(text.contains("ndots_wasted_queries_total{suffix=\"cluster\"}"));
    }

    /// The queries of a search walk from `client`, a millisecond apart from `t0`, each
    /// answered from upstream in 100 µs: NXDOMAIN but the last name's, which has an answer.
    fn searched_walk(names: &[&str], client: &str, qtype: u16, t0: u64) -> Vec<QueryEvent> {
        names
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let last = i == names.len() - 1;
                QueryEvent {
                    time: Timestamp(t0 + i as u64 * 1000),
                    client: client.parse().unwrap(),
                    client_port: None,
                    qname: q.to_string(),
                    qtype,
                    rcode: Some(if last { 0 } else { 3 }),
                    answers: Some(last as u16),
                    latency: Some(Duration::from_micros(100)),
                    source: Some(AnswerSource::Upstream),
                }
            })
            .collect()
    }

    /// The metrics of repeats recorded by count are those of each recorded alone, for a
    /// lookup whose every figure is set.
    #[test]
    fn repeats_recorded_by_count_are_each_repeat_recorded_alone() {
        let cluster = ClusterConfig::kubernetes("cluster.local");
        let mut walks = WalkTracker::new(
            SearchShape::new(&cluster),
            &TrackerConfig {
                idle: Duration::from_secs(2),
                max_open_walks: 100,
                namespace_series: crate::config::DEFAULT_NAMESPACE_SERIES,
            },
        );
        // A walk of HTTPS queries (a type no other test's metrics look at): wasted queries,
        // suffixes.
        let names = [
            "h.example.web.svc.cluster.local.",
            "h.example.web.svc.cluster.local.",
            "h.example.svc.cluster.local.",
            "h.example.cluster.local.",
            "h.example.",
        ];
        for e in searched_walk(&names, "10.8.8.8", 65, 1_000_000) {
            walks.observe(&e);
        }
        walks.finish();
        let mut l = walks
            .drain()
            .max_by_key(|l| l.queries)
            .expect("the walk's lookup");
        assert!(l.wasted > 0, "{l:?}");
        l.retries = 2; // no figure left at 0
        l.shortcut_answers = 1;
        let r = Repeats::of(&[(9_000_000, 250), (9_000_300, 9_000), (9_001_000, 1)]);
        let (mut counted, mut alone) = (LookupMetrics::new(8), LookupMetrics::new(8));
        counted.record_repeated(&l, &r);
        for one in r.lookups(&l) {
            alone.record(&one);
        }
        let sums = |m: &mut LookupMetrics| {
            let mut series = Vec::new();
            m.series.flush(|s| {
                series.push((
                    s.lookups_sum,
                    s.queries_sum,
                    s.wasted_sum,
                    s.queries.held(),
                    s.duration.held(),
                ))
            });
            (series, m.suffix_queries_sum, m.suffix_wasted_sum)
        };
        let (a, b) = (sums(&mut counted), sums(&mut alone));
        assert_eq!(a, b);
        assert_eq!(a.0[0].0, 3, "three lookups");
    }

    /// Shedding leaves out whole walks: every candidate of a walk shares its key, so each
    /// walk is counted with all its queries or not at all, and the report says how many
    /// events were left out.
    #[test]
    fn a_busy_tracker_sheds_whole_walks_and_says_so() {
        let cluster = ClusterConfig {
            domain: "cluster.local".into(),
            search: vec![
                "*.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            node_search: vec![],
        };
        let cfg = TrackerConfig {
            idle: Duration::from_secs(2),
            max_open_walks: 100_000,
            namespace_series: crate::config::DEFAULT_NAMESPACE_SERIES,
        };
        let tr = Tracker::start_named(&cluster, &cfg, "shed");
        tr.force_shed_level(SHED_SCALE / 2);
        let walks = 2000u64;
        let t0 = Timestamp::now().0;
        let mut events = Vec::new();
        for i in 0..walks {
            let base = format!("tenant-{i}.s3.eu-west-1.amazonaws.com");
            let cands = [
                format!("{base}.default.svc.cluster.local."),
                format!("{base}.svc.cluster.local."),
                format!("{base}.cluster.local."),
                format!("{base}."),
            ];
            for (k, q) in cands.iter().enumerate() {
                events.push(QueryEvent {
                    time: Timestamp(t0 + i * 10 + k as u64),
                    client: "10.7.7.8".parse().unwrap(),
                    client_port: None,
                    qname: q.clone(),
                    qtype: 1,
                    rcode: Some(if k == 3 { 2 } else { 3 }),
                    answers: Some(0),
                    latency: Some(Duration::from_micros(100)),
                    source: Some(AnswerSource::Upstream),
                });
            }
        }
        // One hand-over: the level the thread set applies to the whole batch.
        tr.record_batch(events);
        tr.sync(true);
        let r = tr.report(None);
        let shed = tr.shed();
        assert_eq!(r.shed_events, shed);
        assert_eq!(shed % 4, 0, "whole walks of 4 queries are shed: {shed}");
        let kept = walks - shed / 4;
        assert!(
            (walks / 4..walks * 3 / 4).contains(&kept),
            "about half the walks kept at half the scale: {kept} of {walks}"
        );
        assert_eq!(r.lookups, kept, "every kept walk is one lookup");
        assert_eq!(r.queries, kept * 4, "with all its queries");
        assert_eq!(r.dropped_events, 0);
    }
}
