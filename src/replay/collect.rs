//! Collection: capture events through the walk tracker into lookups, the answer table, and
//! each lookup reduced to its demand as it closes (A+AAAA pairs joined, the name the
//! application asked), alike lookups counted together: memory bounded by the capture's
//! working set (clients, names), not its length.

use std::collections::HashMap;
use std::net::IpAddr;

use super::report::CHANGE_CLIENTS;
use super::{AnswerTable, Captured, CapturedLookup, Demand, End, LookupKey, Replay, TimedLookup};
use crate::amplify::{Lookup, Outcome, WalkTracker};
use crate::config::TrackerConfig;
use crate::event::{QueryEvent, Timestamp};
use crate::search::{SearchShape, QTYPE_A, QTYPE_AAAA};

/// Lookups closed waiting for their A/AAAA partner at most, before they count alone (a
/// bound whatever the capture's rate; the walk tracker holds 200,000 open walks).
const MAX_PENDING: usize = 200_000;

/// Reads a capture's events: rebuilds lookups with the walk tracker, keeps the answers, and
/// reduces each lookup to its demand as it closes. What it keeps grows with the capture's
/// variety (clients, names, distinct figures), not with its length.
pub struct Collector {
    walks: WalkTracker,
    shape: SearchShape,
    captured: Captured,
    answers: AnswerTable,
    events: u64,
    /// The pairing window (the tracker's idle time), microseconds.
    window: u64,
    /// How long a walk waits on a lost query's retry (`walk::RETRY_WAIT`), in µs.
    retry_wait: u64,
    /// Closed A and AAAA lookups waiting for their partner, by client and base.
    pending: HashMap<(IpAddr, Box<str>), Vec<Lookup>>,
    pending_len: usize,
    /// Capture time of the last sweep of `pending`.
    swept: u64,
    index: HashMap<Demand, u32>,
    demands: Vec<Demand>,
    weight: Vec<u64>,
    groups: HashMap<LookupKey, u32>,
    lookups: Vec<CapturedLookup>,
    /// Live replay needs every lookup's time; offline does not keep it.
    timeline: Option<Vec<TimedLookup>>,
    first_start: Option<Timestamp>,
    /// The ndots each `--pod-dns-config` workload's clients ran with (file order), computed
    /// once.
    workload_ndots: Vec<u32>,
    /// Per workload: its earliest lookup's start and demand.
    workload_first: Vec<Option<(Timestamp, u32)>>,
}

impl Collector {
    /// `timeline`: keep each lookup's time and client (live replay), 32 bytes a lookup.
    pub fn new(captured: &Captured, tracker: &TrackerConfig, timeline: bool) -> Self {
        Collector {
            walks: WalkTracker::new(SearchShape::new(&captured.cluster), tracker).for_captures(),
            shape: SearchShape::new(&captured.cluster),
            captured: captured.clone(),
            answers: AnswerTable::new(&captured.cluster.domain),
            events: 0,
            window: tracker.idle.as_micros() as u64,
            retry_wait: tracker
                .idle
                .max(crate::amplify::walk::RETRY_WAIT)
                .as_micros() as u64,
            pending: HashMap::new(),
            pending_len: 0,
            swept: 0,
            index: HashMap::new(),
            demands: Vec::new(),
            weight: Vec::new(),
            groups: HashMap::new(),
            lookups: Vec::new(),
            timeline: timeline.then(Vec::new),
            first_start: None,
            workload_ndots: captured.workload_ndots(),
            workload_first: vec![None; captured.workloads.as_ref().map_or(0, |w| w.list.len())],
        }
    }

    pub fn observe(&mut self, ev: &QueryEvent) {
        self.events += 1;
        self.answers.record(ev);
        self.walks.observe(ev);
        self.take_closed();
        // A lookup's partner starts within the window and closes an idle time after its
        // last query: past that, a lookup waiting alone is one.
        let now = ev.time.0;
        if now.saturating_sub(self.swept) > self.window || self.pending_len > MAX_PENDING {
            self.swept = now;
            // A lookup waiting on a lost query's retry closes `RETRY_WAIT` after it, and once a
            // query was lost answered walks close that much later too (`for_captures`).
            let horizon = 2 * self.window + 2 * self.retry_wait;
            let full = self.pending_len > MAX_PENDING;
            let mut alone = Vec::new();
            self.pending.retain(|_, v| {
                v.retain(|l| {
                    let keep = !full && now.saturating_sub(l.end.0.max(l.start.0)) <= horizon;
                    if !keep {
                        alone.push(l.clone());
                    }
                    keep
                });
                !v.is_empty()
            });
            self.pending_len -= alone.len();
            // The order lookups are reduced in changes nothing reported.
            for l in alone {
                self.reduce(std::slice::from_ref(&l));
            }
        }
    }

    /// Close the open walks and reduce what is left.
    pub fn finish(mut self) -> Replay {
        self.walks.finish();
        self.take_closed();
        let mut rest: Vec<Lookup> = self.pending.drain().flat_map(|(_, v)| v).collect();
        rest.sort_by_key(|l| (l.start.0, l.qtype));
        for l in rest {
            self.reduce(std::slice::from_ref(&l));
        }
        let mut timeline = self.timeline.unwrap_or_default();
        timeline.sort_by_key(|t| t.start);
        Replay {
            demands: self.demands,
            lookups: self.lookups,
            timeline,
            first_start: self.first_start,
            answers: self.answers,
            captured: self.captured,
            events: self.events,
            shortcut_zones: Vec::new(),
            weight: self.weight,
            workload_first: self
                .workload_first
                .into_iter()
                .map(|f| f.map(|(_, d)| d))
                .collect(),
            baseline: Default::default(),
            live_baseline: Default::default(),
            fqdn: Default::default(),
        }
    }

    /// Pair each closed A or AAAA lookup with its partner (same client and base, the other
    /// type, starting within the window: one `getaddrinfo(AF_UNSPEC)`), or hold it until the
    /// partner can no longer come; reduce the rest at once.
    fn take_closed(&mut self) {
        let closed: Vec<Lookup> = self.walks.drain().collect();
        for l in closed {
            if !matches!(l.qtype, QTYPE_A | QTYPE_AAAA) {
                self.reduce(std::slice::from_ref(&l));
                continue;
            }
            let key = (l.client, Box::<str>::from(l.base.as_str()));
            let window = self.window;
            let partner = self.pending.get_mut(&key).and_then(|v| {
                let i = v
                    .iter()
                    .position(|m| m.qtype != l.qtype && m.start.0.abs_diff(l.start.0) <= window)?;
                Some(v.remove(i))
            });
            match partner {
                Some(m) => {
                    self.pending_len -= 1;
                    if self.pending.get(&key).is_some_and(Vec::is_empty) {
                        self.pending.remove(&key);
                    }
                    // The earlier first, as the captured order reads.
                    let pair = if (m.start.0, m.qtype) <= (l.start.0, l.qtype) {
                        [m, l]
                    } else {
                        [l, m]
                    };
                    self.reduce(&pair);
                }
                None => {
                    self.pending.entry(key).or_default().push(l);
                    self.pending_len += 1;
                }
            }
        }
    }

    /// One lookup (or A+AAAA pair) into its demand and its group of alike lookups.
    fn reduce(&mut self, pair: &[Lookup]) {
        let captured = &self.captured;
        let workload = captured.workload_of(pair[0].client);
        let ndots = workload.map_or(captured.ndots, |w| self.workload_ndots[w as usize]);
        let demand = Demand {
            name: app_name(&pair[0], ndots).into(),
            namespace: pair
                .iter()
                .find_map(|l| l.namespace.as_deref().map(Into::into)),
            qtype: if pair.len() == 2 { 0 } else { pair[0].qtype },
            workload,
        };
        let id = match self.index.get(&demand) {
            Some(&id) => id,
            None => {
                self.demands.push(demand.clone());
                self.weight.push(0);
                let id = (self.demands.len() - 1) as u32;
                self.index.insert(demand, id);
                id
            }
        };
        self.weight[id as usize] += 1;
        let start = pair.iter().map(|l| l.start).min().unwrap_or_default();
        if self.first_start.is_none_or(|t| start < t) {
            self.first_start = Some(start);
        }
        if let Some(first) = workload.and_then(|w| self.workload_first.get_mut(w as usize)) {
            if first.is_none_or(|(t, d)| (start, id) < (t, d)) {
                *first = Some((start, id));
            }
        }
        let key = LookupKey {
            demand: id,
            queries: pair.iter().map(|l| l.queries).sum(),
            types: pair.len() as u8,
            nxdomain: pair.iter().map(|l| l.nxdomain).sum(),
            end: captured_end(pair, &self.shape, captured, &self.demands[id as usize]),
            suffix_queries: pair.iter().fold([0; 6], |mut acc, l| {
                for (a, q) in acc.iter_mut().zip(l.suffix_queries) {
                    *a += q;
                }
                acc
            }),
        };
        let group = match self.groups.get(&key) {
            Some(&g) => g,
            None => {
                self.lookups.push(CapturedLookup {
                    demand: key.demand,
                    queries: key.queries,
                    types: key.types,
                    nxdomain: key.nxdomain,
                    end: key.end.clone(),
                    suffix_queries: key.suffix_queries,
                    count: 0,
                    clients: Vec::new(),
                });
                let g = (self.lookups.len() - 1) as u32;
                self.groups.insert(key, g);
                g
            }
        };
        let client = pair[0].client;
        let l = &mut self.lookups[group as usize];
        l.count += 1;
        add_client(&mut l.clients, client);
        if let Some(t) = self.timeline.as_mut() {
            t.push(TimedLookup {
                start,
                client,
                group,
            });
        }
    }
}

/// Keep the [`CHANGE_CLIENTS`] lowest distinct addresses, sorted.
pub(super) fn add_client(clients: &mut Vec<IpAddr>, ip: IpAddr) {
    if let Err(i) = clients.binary_search(&ip) {
        if i < CHANGE_CLIENTS {
            clients.insert(i, ip);
            clients.truncate(CHANGE_CLIENTS);
        }
    }
}

/// The name the application asked (see the module docs).
fn app_name(l: &Lookup, captured_ndots: u32) -> String {
    let bare = l.base.trim_end_matches('.');
    let only_absolute =
        l.suffix_queries[crate::amplify::SuffixSlot::Absolute as usize] == l.queries;
    let dots = bare.matches('.').count() as u32;
    if only_absolute && dots < captured_ndots {
        format!("{bare}.")
    } else {
        bare.to_string()
    }
}

/// The end the capture shows for a lookup (or pair): the name with records, NXDOMAIN, NODATA.
fn captured_end(
    pair: &[Lookup],
    shape: &SearchShape,
    captured: &Captured,
    demand: &Demand,
) -> Option<End> {
    let last_name = |l: &Lookup| -> Option<String> {
        let bare = l.base.trim_end_matches('.');
        Some(match l.last_search_index {
            None => format!("{bare}."),
            Some(i) => {
                let suffix = shape.suffix(i as usize, l.namespace.as_deref())?;
                format!("{bare}.{suffix}.")
            }
        })
    };
    for l in pair {
        if l.outcome == Outcome::Resolved {
            return last_name(l).map(|n| End::Resolved(n.into()));
        }
    }
    // No records for any type: the A lookup's end speaks for the pair (stubs read A first).
    // NXDOMAIN or NODATA ends a lookup only on the stub's last candidate (or a last answer of
    // NODATA for musl, which stops there; not an earlier candidate's, which musl walked past
    // for the other type's NXDOMAIN); on an earlier one the capture is cut short, and the end
    // is unknown.
    let l = pair.iter().find(|l| l.qtype == QTYPE_A).unwrap_or(&pair[0]);
    let setting = captured.setting();
    let (stub, rs) = captured.stub_config(&setting, demand);
    let plan = stub.candidates(&demand.name, &rs);
    let on_last = last_name(l).is_some_and(|n| plan.last() == Some(&n));
    match l.outcome {
        Outcome::NxDomain if on_last => Some(End::Failed("NXDOMAIN")),
        Outcome::NoData if on_last || (stub.is_musl() && l.last_answer == Outcome::NoData) => {
            Some(End::Failed("NODATA"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::synth::{self, SynthConfig};
    use crate::config::ClusterConfig;
    use crate::search::Stub;
    use std::time::Duration;

    /// The synthetic capture's events, `copies` times in a row (each copy after the last,
    /// with a gap longer than the idle time).
    fn collect(events: &[QueryEvent], copies: u64) -> (Replay, usize) {
        let captured = Captured {
            cluster: ClusterConfig::kubernetes("cluster.local"),
            ndots: 5,
            stub: Stub::Glibc,
            workloads: None,
        };
        let tracker = TrackerConfig {
            idle: Duration::from_secs(2),
            max_open_walks: 200_000,
            namespace_series: crate::config::DEFAULT_NAMESPACE_SERIES,
        };
        let span = events.last().unwrap().time.0 - events[0].time.0 + 60_000_000;
        let mut c = Collector::new(&captured, &tracker, false);
        let mut most_pending = 0;
        for k in 0..copies {
            for ev in events {
                let mut ev = ev.clone();
                ev.time.0 += k * span;
                c.observe(&ev);
                most_pending = most_pending.max(c.pending_len);
            }
        }
        (c.finish(), most_pending)
    }

    #[test]
    fn replay_memory_is_bounded_the_same_capture_repeated_keeps_the_same_structures() {
        let mut pcap = Vec::new();
        let cfg = SynthConfig {
            queries: 5_000,
            ..SynthConfig::default()
        };
        synth::write(&cfg, &mut pcap).unwrap();
        let cap = crate::capture::from_reader(
            Box::new(std::io::Cursor::new(pcap)),
            &crate::capture::Options::default(),
        )
        .unwrap();
        let events: Vec<QueryEvent> = cap.flatten().collect();
        assert_eq!(events.len(), 5_000);
        // The first copy teaches the tracker the clients' namespaces; from the second on,
        // every copy reads the same.
        let (two, pending_two) = collect(&events, 2);
        let (five, pending_five) = collect(&events, 5);
        assert!(
            two.application_lookups() > 1000,
            "{}",
            two.application_lookups()
        );
        assert_eq!(
            five.application_lookups() - two.application_lookups(),
            3 * (two.application_lookups() - collect(&events, 1).0.application_lookups()),
            "every copy adds the same lookups"
        );
        // What is kept does not grow with the copies: demands, groups of alike lookups,
        // answers, lookups waiting for their pair, and no timeline offline.
        assert_eq!(five.demands.len(), two.demands.len());
        assert_eq!(five.lookups.len(), two.lookups.len());
        assert_eq!(five.answers.len(), two.answers.len());
        assert_eq!(pending_five, pending_two);
        assert!(five.timeline.is_empty());
    }
}
