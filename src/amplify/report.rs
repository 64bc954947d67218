//! The report model (DESIGN §4): the JSON object served on `/report`, printed by `analyze` and
//! `report`, and the mergeable aggregate it is computed from.
//!
//! One merge implementation serves three jobs: adding a lookup to a 10 s bucket, summing the
//! buckets of a window, and merging reports from several proxies (`ndots report --from A
//! --from B`): a report is turned back into an [`Aggregate`] ([`Aggregate::from_report`]),
//! aggregates add, and the sum becomes a report again. That is exact for every count and for
//! the amplification histogram (the JSON carries it whole, so quantiles of a merge are the
//! quantiles of the union). Top lists are exact when `top_complete` is true in every input
//! (every name and client seen is listed); otherwise an entry missing from one list counts as
//! zero there.
//!
//! Top names and clients use capped maps (not a sketch): at most `cap` entries; when a new key
//! arrives at the cap, the lighter half (by wasted, then queries) is dropped and the map is
//! marked pruned. Heavy hitters survive pruning; their figures undercount only the lookups seen
//! while they were out. Caps: 256 per 10 s bucket, 4096 for since-start, 100 entries in JSON.

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::walk::{BaseName, Lookup, Outcome, Repeats, SuffixSlot};
/// What a report's `input` counts: the capture readers' own counts.
pub use crate::capture::InputCounts;
use crate::event::{qtype_name, Timestamp};

/// Entries in each top list of a report.
pub const TOP_LIMIT: usize = 100;
/// Cap of the top maps in one 10 s bucket.
pub const BUCKET_TOP_CAP: usize = 256;
/// Cap of the top maps of the since-start aggregate.
pub const TOTAL_TOP_CAP: usize = 4096;

/// The DESIGN §4 report. Fields up to `top_clients` are the contract; the rest are additions
/// (defaulted when absent so reports from other producers still parse).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    pub source: String,
    pub window_seconds: f64,
    pub queries: u64,
    pub lookups: u64,
    pub amplification: Amplification,
    pub wasted_queries: u64,
    pub by_type: BTreeMap<String, TypeFigures>,
    /// Queries by the search suffix they carried (`absolute`: the base itself).
    pub by_suffix: SuffixFigures,
    pub top_names: Vec<NameFigures>,
    pub top_clients: Vec<ClientFigures>,
    /// The same candidate sent again within a walk.
    #[serde(default)]
    pub retries: u64,
    /// Lookups by outcome (`resolved`, `nxdomain`, `nodata`, `servfail`, `refused`, `error`,
    /// `timeout`, `unanswered`, `evicted`).
    #[serde(default)]
    pub outcomes: BTreeMap<String, u64>,
    /// Wasted queries by the suffix they carried.
    #[serde(default)]
    pub wasted_by_suffix: SuffixFigures,
    /// Queries that reached an upstream server (live) or the captured server (offline).
    #[serde(default)]
    pub upstream_queries: u64,
    /// Of those, the wasted ones: the share of upstream load search expansion costs.
    #[serde(default)]
    pub upstream_wasted_queries: u64,
    /// Queries the proxy answered itself by shortcut (`AnswerSource::Shortcut`).
    #[serde(default)]
    pub shortcut_answers: u64,
    /// First query to final answer, over lookups with an answer.
    #[serde(default)]
    pub duration_ms: Option<DurationFigures>,
    /// Events the live tracker could not take because its queue was full (since start).
    #[serde(default)]
    pub dropped_events: u64,
    /// Events of walks the live tracker left out whole because it was behind (since start):
    /// those walks are missing from every figure, the others are counted whole.
    #[serde(default)]
    pub shed_events: u64,
    /// True when the top lists hold every name and client seen, so merging them is exact.
    #[serde(default)]
    pub top_complete: bool,
    /// Event time of the first query and the last activity counted, seconds since the epoch.
    #[serde(default)]
    pub first_seen: Option<f64>,
    #[serde(default)]
    pub last_seen: Option<f64>,
    /// The pods' search list the walks were read with (`*.svc.<domain>` stands for the
    /// namespace), and where it came from (`search_from`: `assumed`, `inferred`, `given`,
    /// `config`).
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_domain: Option<String>,
    /// The clients' ndots as assumed (5, the Kubernetes default, unless a resolv.conf said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ndots: Option<u32>,
    /// The clients' stub resolvers when known (`glibc`, `musl`, ...); empty: unknown.
    #[serde(default)]
    pub stubs: Vec<String>,
    /// The proxy's `shortcut.zones` (never advised again).
    #[serde(default)]
    pub configured_zones: Vec<String>,
    /// What to change, computed by the stub model ([`super::advice`]).
    #[serde(default)]
    pub advice: Vec<super::advice::AdviceItem>,
    /// By the clients' namespace, most wasted first: the fleet report from Prometheus
    /// (`ndots_namespace_*` series; `other` holds namespaces beyond tracker.namespace_series).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespaceFigures>,
    /// What was read to make this report, from captures (`analyze`): absent for the live
    /// tracker, whose losses are `dropped_events` and `shed_events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputCounts>,
}

impl Report {
    /// Set the search list the report was read with, and recompute the advice.
    pub fn set_search(&mut self, cluster: &crate::config::ClusterConfig, from: &str) {
        self.search = cluster
            .search
            .iter()
            .chain(&cluster.node_search)
            .cloned()
            .collect();
        self.cluster_domain = Some(cluster.domain.clone());
        self.search_from = Some(from.to_string());
        self.advise();
    }

    /// Recompute `advice` from the figures and the context fields.
    pub fn advise(&mut self) {
        self.advice = super::advice::compute(self);
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NamespaceFigures {
    pub namespace: String,
    pub lookups: u64,
    pub queries: u64,
    pub wasted_queries: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Amplification {
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
    /// `[queries_per_lookup, lookups]`, ascending, only non-zero rows.
    pub histogram: Vec<[u64; 2]>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct TypeFigures {
    pub queries: u64,
    pub lookups: u64,
    pub wasted_queries: u64,
}

impl TypeFigures {
    fn add(&mut self, o: &TypeFigures) {
        self.queries += o.queries;
        self.lookups += o.lookups;
        self.wasted_queries += o.wasted_queries;
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SuffixFigures {
    pub namespace: u64,
    pub svc: u64,
    pub cluster: u64,
    pub node: u64,
    pub absolute: u64,
    /// Other entries of `cluster.search` (not in DESIGN's list, which has no slot for them).
    #[serde(default)]
    pub other: u64,
}

impl SuffixFigures {
    fn from_slots(v: &[u64; 6]) -> Self {
        SuffixFigures {
            namespace: v[SuffixSlot::Namespace as usize],
            svc: v[SuffixSlot::Svc as usize],
            cluster: v[SuffixSlot::Cluster as usize],
            node: v[SuffixSlot::Node as usize],
            other: v[SuffixSlot::Other as usize],
            absolute: v[SuffixSlot::Absolute as usize],
        }
    }
    fn to_slots(&self) -> [u64; 6] {
        let mut v = [0; 6];
        v[SuffixSlot::Namespace as usize] = self.namespace;
        v[SuffixSlot::Svc as usize] = self.svc;
        v[SuffixSlot::Cluster as usize] = self.cluster;
        v[SuffixSlot::Node as usize] = self.node;
        v[SuffixSlot::Other as usize] = self.other;
        v[SuffixSlot::Absolute as usize] = self.absolute;
        v
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NameFigures {
    /// The base, with a trailing dot.
    pub name: String,
    pub lookups: u64,
    pub queries: u64,
    pub wasted_queries: u64,
    /// Of `lookups`, those that sent at least one search-list candidate
    /// ([`Lookup::searched`]): the only ones a lower ndots can change, and what the ndots
    /// advice weighs the name by. Absent (unknown) in reports of versions before it, and in a
    /// merge with one that lists the name: the advice then weighs by `lookups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub searched_lookups: Option<u64>,
    /// The suffix of the candidate that answered (`absolute` for an external name resolved as
    /// written); absent when no lookup of it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClientFigures {
    pub client: String,
    pub namespace: Option<String>,
    pub lookups: u64,
    pub queries: u64,
    pub wasted_queries: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct DurationFigures {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    /// `[microseconds, lookups]` (values above 25.6 ms are bucketed to 1%).
    pub histogram_us: Vec<[u64; 2]>,
}

/// Figures a top map keeps per key.
trait Weighted: Default {
    fn weight(&self) -> (u64, u64);
    fn absorb(&mut self, other: &Self);
}

/// `NameAcc::searched` of a name some report read back did not count it for.
const SEARCHED_UNKNOWN: u64 = u64::MAX;

#[derive(Clone, Debug, Default, PartialEq)]
struct NameAcc {
    lookups: u64,
    /// Lookups that sent a search-list candidate (`NameFigures::searched_lookups`), or
    /// [`SEARCHED_UNKNOWN`] once a report read back without the figure listed the name: adds
    /// saturate, so it stays unknown (a flag of its own would grow every entry of the top
    /// maps by 8 bytes).
    searched: u64,
    queries: u64,
    wasted: u64,
    resolved_by: Latest<SuffixSlot>,
}

impl Weighted for NameAcc {
    fn weight(&self) -> (u64, u64) {
        (self.wasted, self.queries)
    }
    fn absorb(&mut self, o: &Self) {
        self.lookups += o.lookups;
        self.searched = self.searched.saturating_add(o.searched);
        self.queries += o.queries;
        self.wasted += o.wasted;
        self.resolved_by.absorb(&o.resolved_by);
    }
}

/// A figure of the latest lookup that had one (by its end; of two that ended together, the
/// greater value): the same whatever order lookups are added or merged in (the live tracker
/// publishes the lookups of cached answers asked again by count, after others).
#[derive(Clone, Debug, PartialEq)]
struct Latest<T> {
    value: Option<T>,
    at: Timestamp,
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Latest {
            value: None,
            at: Timestamp(0),
        }
    }
}

impl<T: Ord + Clone> Latest<T> {
    fn offer(&mut self, value: Option<&T>, at: Timestamp) {
        let Some(v) = value else { return };
        match &self.value {
            // The usual case, without a clone (a namespace is an `Arc`).
            Some(held) if held == v => self.at = self.at.max(at),
            Some(held) if (at, v) < (self.at, held) => {}
            _ => {
                self.value = Some(v.clone());
                self.at = at;
            }
        }
    }

    fn absorb(&mut self, o: &Latest<T>) {
        self.offer(o.value.as_ref(), o.at);
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ClientAcc {
    /// Shared with the lookups (the walk tracker interns namespaces): no copy per client.
    namespace: Latest<Arc<str>>,
    lookups: u64,
    queries: u64,
    wasted: u64,
}

impl Weighted for ClientAcc {
    fn weight(&self) -> (u64, u64) {
        (self.wasted, self.queries)
    }
    fn absorb(&mut self, o: &Self) {
        self.lookups += o.lookups;
        self.queries += o.queries;
        self.wasted += o.wasted;
        self.namespace.absorb(&o.namespace);
    }
}

/// A top map's key: ranked by its text, as the report lists it.
trait TopKey: Hash + Eq + Clone + Ord {
    fn text(&self) -> &str;
}

impl TopKey for BaseName {
    fn text(&self) -> &str {
        self.as_str()
    }
}

impl TopKey for ClientKey {
    fn text(&self) -> &str {
        self.as_str()
    }
}

/// The first 16 bytes of `s`, zero-padded, as a big-endian number: where two prefixes differ
/// they order as the strings do (a string that ends first pads with 0, below any byte the
/// other has there; a real 0 byte ties and falls back to the whole string). Comparing one
/// number instead of two strings is most of a prune when every weight ties (a capture of
/// clients seen once each).
fn text_prefix(s: &str) -> u128 {
    let b = s.as_bytes();
    let mut a = [0u8; 16];
    let n = b.len().min(16);
    a[..n].copy_from_slice(&b[..n]);
    u128::from_be_bytes(a)
}

/// A map of at most `cap` keys that keeps the heavy ones (see the module docs).
#[derive(Clone, Debug)]
struct TopMap<K, V> {
    map: HashMap<K, V>,
    cap: usize,
    pruned: bool,
}

impl<K: TopKey, V: Weighted> TopMap<K, V> {
    fn new(cap: usize) -> Self {
        TopMap {
            map: HashMap::new(),
            cap: cap.max(2),
            pruned: false,
        }
    }

    fn entry_ref<Q>(&mut self, k: &Q, make: impl FnOnce() -> K) -> &mut V
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // One probe of the table per call: the second only when it is full and the key new.
        if self.map.len() >= self.cap && !self.map.contains_key(k) {
            self.prune();
        }
        match self.map.entry_ref(k) {
            hashbrown::hash_map::EntryRef::Occupied(e) => e.into_mut(),
            hashbrown::hash_map::EntryRef::Vacant(e) => e.insert_with_key(make(), V::default()),
        }
    }

    fn prune(&mut self) {
        // Only which half survives matters, not its order: a selection is linear where a sort
        // is not, and this runs every `cap / 2` new keys on the tracker thread. The entries
        // stay where they are: the selection runs over references, and the table keeps the
        // ones ranked before the first one dropped (a total order: keys break ties, by their
        // text's `text_prefix` first, which orders as the text does where it differs).
        let keep = self.cap / 2;
        if keep < self.map.len() {
            type Ranked<'k, K> = ((u64, u64), u128, &'k K);
            let mut v: Vec<Ranked<K>> = self
                .map
                .iter()
                .map(|(k, v)| (v.weight(), text_prefix(k.text()), k))
                .collect();
            let rank = |a: &Ranked<K>, b: &Ranked<K>| {
                b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then_with(|| a.2.cmp(b.2))
            };
            let (_, first_dropped, _) = v.select_nth_unstable_by(keep, rank);
            let (w, p, k) = (first_dropped.0, first_dropped.1, first_dropped.2.clone());
            self.map.retain(|key, val| {
                rank(&(val.weight(), text_prefix(key.text()), key), &(w, p, &k)).is_lt()
            });
        }
        self.pruned = true;
    }

    /// Keep the heaviest `cap` keys and hold at most `cap` from now on.
    fn shrink(&mut self, cap: usize) {
        self.cap = cap.max(2);
        if self.map.len() > self.cap {
            let mut v: Vec<(K, V)> = self.map.drain().collect();
            v.select_nth_unstable_by(self.cap, |a, b| {
                b.1.weight().cmp(&a.1.weight()).then_with(|| a.0.cmp(&b.0))
            });
            v.truncate(self.cap);
            self.map.extend(v);
            // `drain` keeps the table's allocation: a closed 10 s bucket would hold a table
            // sized for `TOTAL_TOP_CAP` names for the ring's hour (~700 KiB a bucket, 250 MiB
            // over 360 buckets, found by the issue 14 soak). Give it back.
            self.map.shrink_to_fit();
            self.pruned = true;
        }
    }

    /// Slots allocated in the table (tests: what a kept bucket holds on to).
    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.map.capacity()
    }

    fn absorb(&mut self, other: &TopMap<K, V>) {
        for (k, v) in &other.map {
            self.entry_ref(k, || k.clone()).absorb(v);
        }
        self.pruned |= other.pruned;
    }

    /// The heaviest `limit` entries, ordered by wasted then queries descending, then key.
    fn ranked(&self, limit: usize) -> Vec<(&K, &V)> {
        let mut v: Vec<(&K, &V)> = self.map.iter().collect();
        v.sort_by(|a, b| b.1.weight().cmp(&a.1.weight()).then_with(|| a.0.cmp(b.0)));
        v.truncate(limit);
        v
    }
}

fn new_hist() -> Histogram<u64> {
    // Two significant figures: values up to 255 are exact (queries per lookup always are),
    // larger ones within 1%. The histogram grows on demand: 2 KiB up to 255, 15 KiB for
    // durations up to 2 s, 26 KiB up to `HIST_MAX`.
    Histogram::new(2).expect("2 significant figures is valid")
}

/// The largest value recorded as itself: an hour, in microseconds (a lookup's duration).
const HIST_MAX: u64 = 3_600_000_000;

/// Record `n` of `v` (at most [`HIST_MAX`]), growing the histogram to hold it.
/// `saturating_record` does not grow one: it clamps to the highest value the histogram holds
/// so far, which for a new one is 2, so every lookup longer than 255 µs was recorded as 2 µs.
fn record(h: &mut Histogram<u64>, v: u64, n: u64) {
    if h.record_n(v.min(HIST_MAX), n).is_err() {
        h.saturating_record_n(v, n);
    }
}

/// Mergeable sums over a set of lookups.
#[derive(Clone, Debug)]
pub struct Aggregate {
    queries: u64,
    lookups: u64,
    wasted: u64,
    retries: u64,
    amp: Histogram<u64>,
    amp_max: u64,
    dur_us: Histogram<u64>,
    dur_max_us: u64,
    /// Lookups add by type number and outcome, which costs an array index; the labels are
    /// made when a report is. What came from a report (`from_report`) stays by label.
    types: Vec<(u16, TypeFigures)>,
    named_types: BTreeMap<String, TypeFigures>,
    suffix_queries: [u64; 6],
    suffix_wasted: [u64; 6],
    outcome_counts: [u64; Outcome::ALL.len()],
    named_outcomes: BTreeMap<String, u64>,
    upstream_queries: u64,
    upstream_wasted: u64,
    shortcut_answers: u64,
    names: TopMap<BaseName, NameAcc>,
    clients: TopMap<ClientKey, ClientAcc>,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

impl Aggregate {
    /// An empty aggregate whose top maps hold at most `top_cap` keys each.
    pub fn new(top_cap: usize) -> Self {
        Aggregate {
            queries: 0,
            lookups: 0,
            wasted: 0,
            retries: 0,
            amp: new_hist(),
            amp_max: 0,
            dur_us: new_hist(),
            dur_max_us: 0,
            types: Vec::new(),
            named_types: BTreeMap::new(),
            suffix_queries: [0; 6],
            suffix_wasted: [0; 6],
            outcome_counts: [0; Outcome::ALL.len()],
            named_outcomes: BTreeMap::new(),
            upstream_queries: 0,
            upstream_wasted: 0,
            shortcut_answers: 0,
            names: TopMap::new(top_cap),
            clients: TopMap::new(top_cap),
            first: None,
            last: None,
        }
    }

    pub fn lookups(&self) -> u64 {
        self.lookups
    }

    pub fn queries(&self) -> u64 {
        self.queries
    }

    pub fn add(&mut self, l: &Lookup) {
        self.add_keyed(l, &client_key(l.client));
    }

    /// `add` with the client's key already formatted (`Windowed` adds each lookup twice).
    fn add_keyed(&mut self, l: &Lookup, key: &ClientKey) {
        self.add_counts(l, key, 1, l.end);
        if let Some(d) = l.duration {
            self.add_duration_us(d.as_micros() as u64);
        }
        self.add_span(l.start, l.end);
    }

    /// `add_keyed` of each lookup `repeats` made as `l` (`at_once`): the counts once, times
    /// each.
    fn add_repeated(&mut self, l: &Lookup, key: &ClientKey, repeats: &Repeats, end: Timestamp) {
        self.add_counts(l, key, repeats.held() as u64, end);
        for (start, end, us) in repeats.times() {
            self.add_duration_us(us);
            self.add_span(start, end);
        }
    }

    /// Everything `add_keyed` adds of `n` lookups like `l` but their times; `end` is the
    /// latest one's.
    fn add_counts(&mut self, l: &Lookup, key: &ClientKey, n: u64, end: Timestamp) {
        let q = u64::from(l.queries);
        let w = u64::from(l.wasted);
        self.queries += q * n;
        self.lookups += n;
        self.wasted += w * n;
        self.retries += u64::from(l.retries) * n;
        record(&mut self.amp, q, n);
        self.amp_max = self.amp_max.max(q);
        let t = self.type_figures(l.qtype);
        t.queries += q * n;
        t.lookups += n;
        t.wasted_queries += w * n;
        for i in 0..6 {
            self.suffix_queries[i] += u64::from(l.suffix_queries[i]) * n;
            self.suffix_wasted[i] += u64::from(l.suffix_wasted[i]) * n;
        }
        self.outcome_counts[l.outcome as usize] += n;
        self.upstream_queries += u64::from(l.upstream_queries) * n;
        self.upstream_wasted += u64::from(l.upstream_wasted) * n;
        self.shortcut_answers += u64::from(l.shortcut_answers) * n;

        let e = self.names.entry_ref(l.base.as_str(), || l.base.clone());
        e.lookups += n;
        e.searched = e.searched.saturating_add(n * u64::from(l.searched()));
        e.queries += q * n;
        e.wasted += w * n;
        e.resolved_by.offer(l.resolved_by.as_ref(), end);
        let c = self.clients.entry_ref(key, || key.clone());
        c.lookups += n;
        c.queries += q * n;
        c.wasted += w * n;
        c.namespace.offer(l.namespace.as_ref(), end);
    }

    fn add_duration_us(&mut self, us: u64) {
        record(&mut self.dur_us, us, 1);
        self.dur_max_us = self.dur_max_us.max(us);
    }

    fn add_span(&mut self, start: Timestamp, end: Timestamp) {
        self.first = Some(self.first.map_or(start, |f| f.min(start)));
        self.last = Some(self.last.map_or(end, |e| e.max(end)));
    }

    /// The figures of one query type (a handful of types, so a short list).
    fn type_figures(&mut self, qtype: u16) -> &mut TypeFigures {
        let i = match self.types.iter().position(|(t, _)| *t == qtype) {
            Some(i) => i,
            None => {
                self.types.push((qtype, TypeFigures::default()));
                self.types.len() - 1
            }
        };
        &mut self.types[i].1
    }

    /// Keep only the heaviest `cap` names and clients.
    fn shrink_tops(&mut self, cap: usize) {
        self.names.shrink(cap);
        self.clients.shrink(cap);
    }

    pub fn merge(&mut self, o: &Aggregate) {
        self.queries += o.queries;
        self.lookups += o.lookups;
        self.wasted += o.wasted;
        self.retries += o.retries;
        // Both histograms auto-resize, so adding cannot fail on range.
        let _ = self.amp.add(&o.amp);
        self.amp_max = self.amp_max.max(o.amp_max);
        let _ = self.dur_us.add(&o.dur_us);
        self.dur_max_us = self.dur_max_us.max(o.dur_max_us);
        for (qtype, v) in &o.types {
            self.type_figures(*qtype).add(v);
        }
        for (k, v) in &o.named_types {
            self.named_types.entry(k.clone()).or_default().add(v);
        }
        for i in 0..6 {
            self.suffix_queries[i] += o.suffix_queries[i];
            self.suffix_wasted[i] += o.suffix_wasted[i];
        }
        for (n, m) in self.outcome_counts.iter_mut().zip(o.outcome_counts) {
            *n += m;
        }
        for (k, v) in &o.named_outcomes {
            *self.named_outcomes.entry(k.clone()).or_default() += v;
        }
        self.upstream_queries += o.upstream_queries;
        self.upstream_wasted += o.upstream_wasted;
        self.shortcut_answers += o.shortcut_answers;
        self.names.absorb(&o.names);
        self.clients.absorb(&o.clients);
        self.first = match (self.first, o.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = match (self.last, o.last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Seconds from the first query to the last activity counted.
    pub fn span_seconds(&self) -> f64 {
        match (self.first, self.last) {
            (Some(f), Some(l)) => l.since(f).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// The report over this aggregate.
    pub fn to_report(&self, source: &str, window_seconds: f64) -> Report {
        let q = |h: &Histogram<u64>, p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        let pairs = |h: &Histogram<u64>| -> Vec<[u64; 2]> {
            h.iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect()
        };
        let names = self.names.ranked(TOP_LIMIT);
        let clients = self.clients.ranked(TOP_LIMIT);
        let top_complete = !self.names.pruned
            && !self.clients.pruned
            && self.names.map.len() <= TOP_LIMIT
            && self.clients.map.len() <= TOP_LIMIT;
        Report {
            source: source.to_string(),
            window_seconds,
            queries: self.queries,
            lookups: self.lookups,
            amplification: Amplification {
                mean: if self.lookups == 0 {
                    0.0
                } else {
                    self.queries as f64 / self.lookups as f64
                },
                p50: q(&self.amp, 0.5),
                p90: q(&self.amp, 0.9),
                p99: q(&self.amp, 0.99),
                max: self.amp_max,
                histogram: pairs(&self.amp),
            },
            wasted_queries: self.wasted,
            by_type: {
                let mut m = self.named_types.clone();
                for (qtype, v) in &self.types {
                    m.entry(qtype_name(*qtype).into_owned()).or_default().add(v);
                }
                m
            },
            by_suffix: SuffixFigures::from_slots(&self.suffix_queries),
            top_names: names
                .into_iter()
                .map(|(k, v)| NameFigures {
                    name: k.to_string(),
                    lookups: v.lookups,
                    queries: v.queries,
                    wasted_queries: v.wasted,
                    searched_lookups: (v.searched != SEARCHED_UNKNOWN).then_some(v.searched),
                    resolved_by: v.resolved_by.value.map(|s| s.as_str().to_string()),
                })
                .collect(),
            top_clients: clients
                .into_iter()
                .map(|(k, v)| ClientFigures {
                    client: k.as_str().to_string(),
                    namespace: v.namespace.value.as_deref().map(String::from),
                    lookups: v.lookups,
                    queries: v.queries,
                    wasted_queries: v.wasted,
                })
                .collect(),
            retries: self.retries,
            outcomes: {
                let mut m = self.named_outcomes.clone();
                for (o, n) in Outcome::ALL.iter().zip(self.outcome_counts) {
                    if n > 0 {
                        *m.entry(o.as_str().to_string()).or_default() += n;
                    }
                }
                m
            },
            wasted_by_suffix: SuffixFigures::from_slots(&self.suffix_wasted),
            upstream_queries: self.upstream_queries,
            upstream_wasted_queries: self.upstream_wasted,
            shortcut_answers: self.shortcut_answers,
            duration_ms: (!self.dur_us.is_empty()).then(|| DurationFigures {
                p50: q(&self.dur_us, 0.5) as f64 / 1e3,
                p90: q(&self.dur_us, 0.9) as f64 / 1e3,
                p99: q(&self.dur_us, 0.99) as f64 / 1e3,
                max: self.dur_max_us as f64 / 1e3,
                histogram_us: pairs(&self.dur_us),
            }),
            dropped_events: 0,
            shed_events: 0,
            top_complete,
            first_seen: self.first.map(Timestamp::as_secs_f64),
            last_seen: self.last.map(Timestamp::as_secs_f64),
            search: Vec::new(),
            search_from: None,
            cluster_domain: None,
            ndots: None,
            stubs: Vec::new(),
            configured_zones: Vec::new(),
            advice: Vec::new(),
            namespaces: Vec::new(),
            input: None,
        }
    }

    /// Rebuild an aggregate from a report (for merging reports). Exact for every figure the
    /// report carries; top lists hold what the report lists.
    pub fn from_report(r: &Report) -> Aggregate {
        let cap = TOTAL_TOP_CAP
            .max(r.top_names.len())
            .max(r.top_clients.len());
        let mut a = Aggregate::new(cap);
        a.queries = r.queries;
        a.lookups = r.lookups;
        a.wasted = r.wasted_queries;
        a.retries = r.retries;
        for [v, n] in &r.amplification.histogram {
            record(&mut a.amp, *v, *n);
        }
        a.amp_max = r.amplification.max;
        // A report's per-name and per-client figures are its latest lookups'.
        let seen = r.last_seen.map_or(Timestamp(0), Timestamp::from_secs_f64);
        if let Some(d) = &r.duration_ms {
            for [v, n] in &d.histogram_us {
                record(&mut a.dur_us, *v, *n);
            }
            a.dur_max_us = (d.max * 1e3).round() as u64;
        }
        a.named_types = r.by_type.clone();
        a.suffix_queries = r.by_suffix.to_slots();
        a.suffix_wasted = r.wasted_by_suffix.to_slots();
        a.named_outcomes = r.outcomes.clone();
        a.upstream_queries = r.upstream_queries;
        a.upstream_wasted = r.upstream_wasted_queries;
        a.shortcut_answers = r.shortcut_answers;
        for n in &r.top_names {
            let e = a
                .names
                .entry_ref(n.name.as_str(), || BaseName::from(n.name.as_str()));
            e.lookups += n.lookups;
            e.searched = e
                .searched
                .saturating_add(n.searched_lookups.unwrap_or(SEARCHED_UNKNOWN));
            e.queries += n.queries;
            e.wasted += n.wasted_queries;
            if let Some(s) = n
                .resolved_by
                .as_deref()
                .and_then(SuffixSlot::from_str_label)
            {
                e.resolved_by.offer(Some(&s), seen);
            }
        }
        for c in &r.top_clients {
            let key = ClientKey::new(&c.client);
            let e = a.clients.entry_ref(&key, || key.clone());
            e.lookups += c.lookups;
            e.queries += c.queries;
            e.wasted += c.wasted_queries;
            if let Some(ns) = &c.namespace {
                e.namespace.offer(Some(&Arc::from(ns.as_str())), seen);
            }
        }
        a.names.pruned = !r.top_complete;
        a.clients.pruned = !r.top_complete;
        a.first = r.first_seen.map(Timestamp::from_secs_f64);
        a.last = r.last_seen.map(Timestamp::from_secs_f64);
        a
    }
}

fn client_key(ip: IpAddr) -> ClientKey {
    // An IPv4 client seen over an IPv6 socket is the same pod.
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ipv4_key(v4),
            None => {
                use std::io::Write;
                let mut buf = [0; ClientKey::INLINE];
                let mut w = &mut buf[..];
                // 45 bytes hold the longest IPv6 text form (RFC 4291 §2.2, with an IPv4 tail).
                let _ = write!(w, "{v6}");
                let len = (ClientKey::INLINE - w.len()) as u8;
                ClientKey::Inline { len, buf }
            }
        },
        IpAddr::V4(v4) => ipv4_key(v4),
    }
}

/// A client as the report prints it (its address's text), and the top-client table's key:
/// formatted on the stack for every lookup and kept inline, so a client the table has not
/// seen costs no allocation (a capture of 1M clients seen once each adds 1M). Compared,
/// ordered and hashed as its text, so the table keeps and ranks exactly what `String` keys
/// did.
#[derive(Clone)]
enum ClientKey {
    /// The text is `buf[..len]`, the rest zero.
    Inline {
        len: u8,
        buf: [u8; ClientKey::INLINE],
    },
    /// Text longer than any address: only from a report read back (`from_report`).
    Heap(Box<str>),
}

impl ClientKey {
    /// Room for the longest address text (45 bytes).
    const INLINE: usize = 46;

    fn new(s: &str) -> Self {
        if s.len() <= Self::INLINE {
            let mut buf = [0; Self::INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            ClientKey::Inline {
                len: s.len() as u8,
                buf,
            }
        } else {
            ClientKey::Heap(s.into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            ClientKey::Inline { len, buf } => {
                let b = &buf[..*len as usize];
                debug_assert!(std::str::from_utf8(b).is_ok());
                // SAFETY: `buf[..len]` is a whole `&str` copied in (`new`) or ASCII written by
                // `client_key` (digits, hex letters, dots, colons), so it is UTF-8; not
                // re-validated per lookup.
                unsafe { std::str::from_utf8_unchecked(b) }
            }
            ClientKey::Heap(s) => s,
        }
    }
}

// Equality and hash take an inline key's buffer as it is (fixed size, zero beyond the text):
// a cache hit looks its client up in the live bucket's table, and a comparison of two
// `&str`s there is not inlined. Text is inline exactly when it fits, so an inline key never
// equals a heap one.
impl PartialEq for ClientKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ClientKey::Inline { len: a, buf: x }, ClientKey::Inline { len: b, buf: y }) => {
                a == b && head(x) == head(y) && (*a as usize <= 16 || x[16..] == y[16..])
            }
            (ClientKey::Heap(a), ClientKey::Heap(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for ClientKey {}

/// The first 16 bytes of an inline key's buffer (an IPv4 address's whole text).
#[inline]
fn head(buf: &[u8; ClientKey::INLINE]) -> u128 {
    u128::from_le_bytes(buf[..16].try_into().expect("16 bytes"))
}

impl Hash for ClientKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            // The length is implied by the zeros after the text (a NUL in it only collides).
            ClientKey::Inline { len, buf } => {
                state.write_u128(head(buf));
                if *len as usize > 16 {
                    state.write(&buf[16..*len as usize]);
                }
            }
            ClientKey::Heap(s) => s.hash(state),
        }
    }
}

impl PartialOrd for ClientKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ClientKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Dotted quad without the formatting machinery.
fn ipv4_key(ip: std::net::Ipv4Addr) -> ClientKey {
    let mut buf = [0; ClientKey::INLINE];
    let mut n = 0;
    for (i, o) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    ClientKey::Inline { len: n as u8, buf }
}

impl Report {
    /// Merge reports of the same window from several proxies into one: counts and histograms
    /// add, top lists are re-ranked, `window_seconds` is the longest, `source` lists them all.
    pub fn merge(reports: &[Report]) -> Report {
        let mut agg = Aggregate::new(TOTAL_TOP_CAP);
        let mut window: f64 = 0.0;
        let mut dropped = 0;
        let mut shed = 0;
        let mut complete = true;
        for r in reports {
            agg.merge(&Aggregate::from_report(r));
            window = window.max(r.window_seconds);
            dropped += r.dropped_events;
            shed += r.shed_events;
            complete &= r.top_complete;
        }
        let source = reports
            .iter()
            .map(|r| r.source.as_str())
            .collect::<Vec<_>>()
            .join(" + ");
        let mut out = agg.to_report(&source, window);
        out.dropped_events = dropped;
        out.shed_events = shed;
        // Captures' counts add when every report has them: a sum over some would read as
        // the whole input's (a live report, or an older version's, has none).
        if reports.iter().all(|r| r.input.is_some()) {
            for i in reports.iter().filter_map(|r| r.input.as_ref()) {
                out.input.get_or_insert_with(InputCounts::default).add(i);
            }
        }
        out.top_complete &= complete;
        // The context of the first report that has one; stubs and zones of all.
        if let Some(first) = reports.iter().find(|r| !r.search.is_empty()) {
            out.search.clone_from(&first.search);
            out.search_from.clone_from(&first.search_from);
            out.cluster_domain.clone_from(&first.cluster_domain);
            out.ndots = first.ndots;
        }
        for r in reports {
            for s in &r.stubs {
                if !out.stubs.contains(s) {
                    out.stubs.push(s.clone());
                }
            }
            for z in &r.configured_zones {
                if !out.configured_zones.contains(z) {
                    out.configured_zones.push(z.clone());
                }
            }
        }
        out.advise();
        out
    }
}

/// Per-interval aggregates in a bounded ring, plus the since-start sum, so a report can be
/// given over any window up to the ring's span (default 10 s x 360 = 1 h) or since start.
/// Lookups are placed by the time of their last activity.
///
/// Each lookup is added once, to the live bucket (the ring's last); a bucket is folded into
/// the since-start sum when the next one starts, and only then shrunk to `BUCKET_TOP_CAP`
/// names and clients. Adding every lookup to two aggregates cost a quarter of the tracker
/// thread (callgrind, benches/README.md).
pub struct Windowed {
    bucket_us: u64,
    max_buckets: usize,
    ring: VecDeque<(u64, Aggregate)>,
    /// Every bucket but the live one.
    total: Aggregate,
    started: Timestamp,
    latest: Timestamp,
    /// The last client added and its key as the report prints it.
    last_client: (Option<IpAddr>, ClientKey),
}

impl Windowed {
    pub const BUCKET: Duration = Duration::from_secs(10);
    pub const SPAN: Duration = Duration::from_secs(3600);

    pub fn new(started: Timestamp) -> Self {
        Self::with_buckets(started, Self::BUCKET, Self::SPAN)
    }

    pub fn with_buckets(started: Timestamp, bucket: Duration, span: Duration) -> Self {
        let bucket_us = (bucket.as_micros() as u64).max(1);
        Windowed {
            bucket_us,
            max_buckets: ((span.as_micros() as u64).div_ceil(bucket_us) as usize).max(1),
            ring: VecDeque::new(),
            total: Aggregate::new(TOTAL_TOP_CAP),
            started,
            latest: started,
            last_client: (None, ClientKey::new("")),
        }
    }

    /// The longest window the ring can answer.
    pub fn span(&self) -> Duration {
        Duration::from_micros(self.bucket_us * self.max_buckets as u64)
    }

    /// The latest event time seen.
    pub fn latest(&self) -> Timestamp {
        self.latest
    }

    pub fn add(&mut self, l: &Lookup) {
        self.add_to_bucket(l.client, l.end, |a, key| a.add_keyed(l, key));
    }

    /// `add` of each lookup `repeats` made as `l`, all ending in one bucket (`at_once`).
    pub fn add_repeated(&mut self, l: &Lookup, repeats: &Repeats) {
        let Some(end) = repeats.times().map(|(_, end, _)| end).max() else {
            return;
        };
        debug_assert!(
            repeats
                .times()
                .all(|(_, e, _)| e.0 / self.bucket_us == end.0 / self.bucket_us),
            "repeats of two buckets"
        );
        self.add_to_bucket(l.client, end, |a, key| a.add_repeated(l, key, repeats, end));
    }

    /// Add to the bucket of `end` (a lookup's, the latest of several) with `add`.
    fn add_to_bucket(
        &mut self,
        client: IpAddr,
        end: Timestamp,
        add: impl Fn(&mut Aggregate, &ClientKey),
    ) {
        // A client's lookups come in runs (a getaddrinfo is an A and an AAAA lookup): its
        // address is formatted once per run.
        if self.last_client.0 != Some(client) {
            self.last_client = (Some(client), client_key(client));
        }
        let key = &self.last_client.1;
        self.latest = self.latest.max(end);
        let b = end.0 / self.bucket_us;
        match self.ring.back().map(|(n, _)| *n) {
            Some(n) if b == n => add(&mut self.ring.back_mut().expect("non-empty").1, key),
            Some(n) if b < n => {
                // Late lookup (events arrive slightly out of order): its bucket, if still kept,
                // was folded into the total already, so it goes to both.
                add(&mut self.total, key);
                if let Some((_, a)) = self.ring.iter_mut().rev().find(|(m, _)| *m == b) {
                    add(a, key);
                }
            }
            _ => {
                if let Some((_, live)) = self.ring.back_mut() {
                    self.total.merge(live);
                    live.shrink_tops(BUCKET_TOP_CAP);
                }
                let mut a = Aggregate::new(TOTAL_TOP_CAP);
                add(&mut a, key);
                self.ring.push_back((b, a));
                let oldest_kept = b.saturating_sub(self.max_buckets as u64 - 1);
                while self.ring.front().is_some_and(|(n, _)| *n < oldest_kept) {
                    self.ring.pop_front();
                }
            }
        }
    }

    /// The report over the last `window` before `now` (event time), or since start. A window
    /// longer than the ring is clipped to it; `window_seconds` says what was covered.
    pub fn report(&self, window: Option<Duration>, now: Timestamp, source: &str) -> Report {
        let since_start = now.since(self.started).as_secs_f64();
        match window {
            None => match self.ring.back() {
                Some((_, live)) => {
                    let mut agg = self.total.clone();
                    agg.merge(live);
                    agg.to_report(source, since_start)
                }
                None => self.total.to_report(source, since_start),
            },
            Some(w) => {
                let w = w.min(self.span());
                let from = now.0.saturating_sub(w.as_micros() as u64);
                // Whole buckets: a bucket counts when any of it lies inside the window.
                let first_bucket = from / self.bucket_us;
                let mut agg = Aggregate::new(TOTAL_TOP_CAP);
                for (_, a) in self.ring.iter().filter(|(n, _)| *n >= first_bucket) {
                    agg.merge(a);
                }
                agg.to_report(source, w.as_secs_f64().min(since_start))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amplify::walk::Outcome;

    /// The stack-formatted client key prints what `Display` prints (IPv4-mapped as IPv4).
    #[test]
    fn client_key_prints_the_address_as_display_does() {
        for ip in [
            "10.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fd00::a9fe:140a",
            "::",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(client_key(ip).as_str(), ip.to_string());
        }
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_key(mapped).as_str(), "10.1.2.3");
    }

    /// The top-client table keys by `ClientKey` and prunes on a 16-byte prefix of the text
    /// first: it must keep exactly the keys that ranking by (weight, text as a `String`)
    /// keeps, ties, shared prefixes, NUL bytes and long (heap) texts included.
    #[test]
    fn prune_keeps_exactly_what_ranking_by_the_text_keeps() {
        let texts: Vec<String> = vec![
            "10.0.0.1".into(),
            "10.0.0.10".into(),
            "10.0.0.100".into(),
            "10.0.0.2".into(),
            "fd00:1234:5678:9abc::1".into(),
            "fd00:1234:5678:9abc::10".into(),
            "fd00:1234:5678:9abc:".into(),
            "a\0".into(),
            "a".into(),
            "a\0b".into(),
            "".into(),
            "x".repeat(60),
            format!("{}y", "x".repeat(60)),
            "x".repeat(46),
            "x".repeat(47),
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".into(),
        ];
        for heavy in [0usize, 3, 7] {
            let mut m: TopMap<ClientKey, ClientAcc> = TopMap::new(texts.len());
            let mut want: Vec<((u64, u64), String)> = Vec::new();
            for (i, t) in texts.iter().enumerate() {
                let w = u64::from(i % 5 == heavy % 5);
                let k = ClientKey::new(t);
                assert_eq!(k.as_str(), t);
                let e = m.entry_ref(&k, || k.clone());
                e.wasted = w;
                e.queries = 1;
                want.push(((w, 1), t.clone()));
            }
            m.prune();
            want.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            want.truncate(texts.len() / 2);
            let mut got: Vec<String> = m.map.keys().map(|k| k.as_str().to_string()).collect();
            let mut want: Vec<String> = want.into_iter().map(|(_, t)| t).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "heavy {heavy}");
        }
    }

    fn lookup(base: String, end_us: u64) -> Lookup {
        Lookup {
            client: "10.1.2.3".parse().unwrap(),
            namespace: None,
            base: base.as_str().into(),
            qtype: 1,
            queries: 4,
            wasted: 3,
            retries: 0,
            outcome: Outcome::ServFail,
            last_answer: Outcome::ServFail,
            start: Timestamp(end_us),
            end: Timestamp(end_us),
            duration: None,
            suffix_queries: [1, 1, 1, 0, 0, 1],
            suffix_wasted: [1, 1, 1, 0, 0, 0],
            resolved_by: None,
            upstream_queries: 1,
            upstream_wasted: 0,
            shortcut_answers: 3,
            nxdomain: 3,
            last_search_index: None,
        }
    }

    /// Lookup durations above 255 µs were recorded as 2 µs: `saturating_record` clamps to what
    /// a histogram holds so far instead of growing it. A real glibc lookup that waited out its
    /// 5 s retry read as p99 0.002 ms beside a max of 5,009 ms. The quantiles are now those of
    /// the durations (two significant figures), in a report and in one merged from it.
    #[test]
    fn lookup_durations_over_255_us_were_recorded_as_2_us() {
        let mut a = Aggregate::new(16);
        let durations_us = [120u64, 4_598, 4_700, 1_300, 5_009_715];
        for (i, us) in durations_us.iter().enumerate() {
            let mut l = lookup(format!("n{i}."), 10);
            l.duration = Some(std::time::Duration::from_micros(*us));
            a.add(&l);
        }
        let r = a.to_report("durations", 1.0);
        let d = r.duration_ms.as_ref().unwrap();
        let near =
            |got: f64, want_us: u64| (got * 1e3 - want_us as f64).abs() <= want_us as f64 / 100.0;
        assert!(near(d.p50, 4_598), "p50 {} ms", d.p50);
        assert!(near(d.p99, 5_009_715), "p99 {} ms", d.p99);
        assert_eq!(d.max, 5_009.715);
        let recorded: u64 = d.histogram_us.iter().map(|[_, n]| n).sum();
        assert_eq!(recorded, 5);
        assert!(d
            .histogram_us
            .iter()
            .any(|[v, _]| near(*v as f64 / 1e3, 5_009_715)));
        // Merged from the report (`ndots report --input`): the same figures.
        let again = Aggregate::from_report(&r).to_report("merged", 1.0);
        let d2 = again.duration_ms.unwrap();
        assert_eq!((d2.p50, d2.p99, d2.max), (d.p50, d.p99, d.max));
    }

    /// `searched_lookups` counts the lookups that sent a search-list candidate; a report of
    /// an older version (no field) reads back as unknown, and a merge with it stays unknown
    /// for the names it lists, rather than a sum that undercounts.
    #[test]
    fn searched_lookups_add_in_merges_and_stay_unknown_for_older_reports() {
        let base = "api.github.com.".to_string();
        let walked = lookup(base.clone(), 1);
        let mut as_written = lookup(base.clone(), 2);
        as_written.suffix_queries = [0, 0, 0, 0, 0, 1];
        assert!(walked.searched() && !as_written.searched());
        let mut a = Aggregate::new(16);
        a.add(&walked);
        a.add(&as_written);
        a.add(&as_written);
        let r = a.to_report("new", 1.0);
        let figures = |r: &Report| {
            let n = r.top_names.iter().find(|n| n.name == base).unwrap();
            (n.lookups, n.searched_lookups)
        };
        assert_eq!(figures(&r), (3, Some(1)));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["top_names"][0]["searched_lookups"], 1);
        let back: Report = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(figures(&back), (3, Some(1)));
        assert_eq!(figures(&Report::merge(&[r.clone(), back])), (6, Some(2)));

        let mut old = json;
        old["top_names"][0]
            .as_object_mut()
            .unwrap()
            .remove("searched_lookups");
        let old: Report = serde_json::from_value(old).unwrap();
        assert_eq!(figures(&old), (3, None));
        let merged = Report::merge(&[r, old]);
        assert_eq!(figures(&merged), (6, None));
        let json = serde_json::to_value(&merged).unwrap();
        assert!(json["top_names"][0].get("searched_lookups").is_none());
    }

    /// Issue 14 soak: a closed bucket keeps `BUCKET_TOP_CAP` names and no more memory than
    /// that needs, or the hour's ring of buckets grows the proxy by hundreds of MiB.
    #[test]
    fn closed_buckets_give_back_the_memory_of_the_names_they_drop() {
        let t0 = 1_700_000_000_000_000u64;
        let mut w = Windowed::new(Timestamp(t0));
        let buckets = 5u64;
        for b in 0..buckets {
            for i in 0..TOTAL_TOP_CAP as u64 * 2 {
                let end = t0 + b * Windowed::BUCKET.as_micros() as u64 + i;
                w.add(&lookup(
                    format!("tenant-{b}-{i}.s3.eu-west-1.amazonaws.com."),
                    end,
                ));
            }
        }
        assert_eq!(w.ring.len(), buckets as usize);
        for (_, closed) in w.ring.iter().take(buckets as usize - 1) {
            assert!(closed.names.map.len() <= BUCKET_TOP_CAP);
            assert!(
                closed.names.allocated() <= 2 * BUCKET_TOP_CAP,
                "a closed bucket holds a table for {} names",
                closed.names.allocated()
            );
        }
    }
}
