//! The live tracker: a cheap handle the proxy's packet path records events into, a thread that
//! groups them into lookups, updates the metrics and keeps the windowed report.
//!
//! The packet path only does a `try_send` on a bounded channel: when the tracker thread falls
//! behind, events are dropped and counted (`dropped_events` in the report), never waited for.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::report::{Report, Windowed};
use super::walk::{Lookup, SuffixSlot, WalkTracker};
use crate::config::{ClusterConfig, TrackerConfig};
use crate::event::{QueryEvent, Timestamp};
use crate::metrics as m;
use crate::search::SearchShape;

/// Events waiting for the tracker thread before new ones are dropped. Counted in events, not
/// channel messages (a message may carry a receive batch of 32), so the queue's memory is
/// bounded at about this many events (~100 bytes each) whatever the batching.
pub const QUEUE_CAPACITY: usize = 65_536;
/// How often the thread closes idle walks when traffic is quiet.
const TICK: Duration = Duration::from_millis(250);

enum Msg {
    Event(QueryEvent),
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
    shared: Arc<Mutex<Shared>>,
    dropped: AtomicU64,
    /// Events sent and not yet taken by the thread.
    queued: Arc<AtomicUsize>,
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

    /// Like [`Tracker::start`] with an explicit `source` for the report.
    pub fn start_named(cluster: &ClusterConfig, cfg: &TrackerConfig, source: &str) -> Tracker {
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE_CAPACITY);
        let shared = Arc::new(Mutex::new(Shared {
            windowed: Windowed::new(Timestamp::now()),
        }));
        let queued = Arc::new(AtomicUsize::new(0));
        let thread_queued = queued.clone();
        let mut walks = WalkTracker::new(SearchShape::new(cluster), cfg);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("ndots-tracker".into())
            .spawn(move || {
                // Event time, advanced by wall time while no events come, so idle walks close
                // on schedule whether events carry live or replayed timestamps.
                let mut clock = (Timestamp(0), Instant::now());
                let mut evictions = 0u64;
                let mut next_tick = Instant::now() + TICK;
                loop {
                    let msg = rx.recv_timeout(next_tick.saturating_duration_since(Instant::now()));
                    let mut syncs = Vec::new();
                    let mut disconnected = false;
                    let mut handle = |msg: Msg, walks: &mut WalkTracker| match msg {
                        Msg::Event(ev) => {
                            thread_queued.fetch_sub(1, Ordering::Relaxed);
                            if ev.time >= clock.0 {
                                clock = (ev.time, Instant::now());
                            }
                            walks.observe(&ev);
                        }
                        Msg::Batch(evs) => {
                            thread_queued.fetch_sub(evs.len(), Ordering::Relaxed);
                            for ev in &evs {
                                if ev.time >= clock.0 {
                                    clock = (ev.time, Instant::now());
                                }
                                walks.observe(ev);
                            }
                        }
                        Msg::Sync(close, reply) => {
                            if close {
                                walks.finish();
                            }
                            syncs.push(reply);
                        }
                    };
                    match msg {
                        Ok(msg) => {
                            handle(msg, &mut walks);
                            // Drain a batch before taking the lock once.
                            for _ in 0..4096 {
                                match rx.try_recv() {
                                    Ok(msg) => handle(msg, &mut walks),
                                    Err(_) => break,
                                }
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            walks.finish();
                            disconnected = true;
                        }
                    }
                    if Instant::now() >= next_tick {
                        let now = Timestamp(clock.0 .0 + clock.1.elapsed().as_micros() as u64);
                        walks.flush(now);
                        next_tick = Instant::now() + TICK;
                    }
                    let ev = walks.evictions();
                    if ev > evictions {
                        metrics::counter!(m::TRACKER_EVICTIONS).increment(ev - evictions);
                        evictions = ev;
                    }
                    let lookups: Vec<Lookup> = walks.drain().collect();
                    if !lookups.is_empty() {
                        for l in &lookups {
                            record_metrics(l);
                        }
                        let mut s = thread_shared.lock();
                        for l in &lookups {
                            s.windowed.add(l);
                        }
                    }
                    for reply in syncs {
                        let _ = reply.send(());
                    }
                    if disconnected {
                        break;
                    }
                }
            })
            .expect("spawning the tracker thread");
        Tracker {
            inner: Arc::new(Inner {
                tx,
                shared,
                dropped: AtomicU64::new(0),
                queued,
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
        if !self.reserve(1) {
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.inner.tx.try_send(Msg::Event(event))
        {
            self.unreserve(1);
        }
    }

    /// Room for `n` more events in the queue; counts them dropped when there is none.
    #[inline]
    fn reserve(&self, n: usize) -> bool {
        let before = self.inner.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > QUEUE_CAPACITY {
            self.unreserve(n);
            return false;
        }
        true
    }

    fn unreserve(&self, n: usize) {
        self.inner.queued.fetch_sub(n, Ordering::Relaxed);
        self.inner.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Hand several events over at once (in order), without blocking.
    pub fn record_batch(&self, events: Vec<QueryEvent>) {
        if events.is_empty() {
            return;
        }
        let n = events.len();
        if !self.reserve(n) {
            return;
        }
        if self.inner.tx.try_send(Msg::Batch(events)).is_err() {
            self.unreserve(n);
        }
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

    /// The report over the last `window` (or since start). Lookups still open are not in it.
    pub fn report(&self, window: Option<Duration>) -> Report {
        let s = self.inner.shared.lock();
        let now = Timestamp::now().max(s.windowed.latest());
        let mut r = s.windowed.report(window, now, &self.inner.source);
        drop(s);
        r.dropped_events = self.dropped();
        r.configured_zones = self.inner.configured_zones.lock().clone();
        r.set_search(&self.inner.cluster, super::advice::SEARCH_CONFIG);
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

/// Per-lookup metrics, with handles memoised on the tracker thread (one registry lookup per
/// label set, not per lookup).
fn record_metrics(l: &Lookup) {
    let (t, name) = m::type_label(l.qtype);
    let type_label = || name;
    m::cached_histogram(
        m::label_key(20, &[t]),
        || metrics::histogram!(m::LOOKUP_QUERIES, "type" => type_label()),
    )
    .record(f64::from(l.queries));
    if let Some(d) = l.duration {
        m::cached_histogram(
            m::label_key(21, &[t]),
            || metrics::histogram!(m::LOOKUP_DURATION, "type" => type_label()),
        )
        .record(d.as_secs_f64());
    }
    m::cached_counter(
        m::label_key(22, &[t, l.outcome as u64]),
        || metrics::counter!(m::LOOKUPS, "type" => type_label(), "outcome" => l.outcome.as_str()),
    )
    .increment(1);
    for s in SuffixSlot::ALL {
        let n = l.suffix_wasted[s as usize];
        if n > 0 {
            m::cached_counter(
                m::label_key(23, &[s as u64]),
                || metrics::counter!(m::WASTED_QUERIES, "suffix" => s.as_str()),
            )
            .increment(u64::from(n));
        }
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
    use crate::event::AnswerSource;

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
        for (i, q) in names.iter().enumerate() {
            let last = i == names.len() - 1;
            tr.record(QueryEvent {
                time: Timestamp(t0 + i as u64 * 1000),
                client: "10.7.7.7".parse().unwrap(),
                client_port: None,
                qname: q.to_string(),
                qtype: 16,
                rcode: Some(if last { 0 } else { 3 }),
                answers: Some(last as u16),
                latency: Some(Duration::from_micros(100)),
                source: Some(AnswerSource::Upstream),
            });
        }
        tr.sync(false);
        let text = handle.render();
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
}
