//! `ndots replay` (DESIGN §5): re-expand each captured lookup under other ndots, search list,
//! stub and shortcut settings, and compare them: queries, NXDOMAINs, upstream load, and the
//! lookups that would resolve differently.
//!
//! Data flow: capture events -> [`Collector`] (the walk tracker rebuilds lookups; an answer
//! table keeps what the capture says about every `(qname, qtype)`) -> [`Replay`] (lookups
//! reduced to *demands*: the name the application asked, its namespace and address family) ->
//! per [`Setting`], each demand walked through the stub model ([`crate::search::Walker`]) with
//! answers from the table (offline) or from a live server ([`live`]) -> [`ReplayReport`].
//!
//! Decisions the issue left open:
//! - **What the application asked.** A lookup's base is the name meant. A walk that holds only
//!   the absolute name although the captured setting would have expanded it first (fewer dots
//!   than `--captured-ndots`) was asked with a trailing dot, or by a client outside the pods'
//!   search list: it is replayed as that absolute name under every setting.
//! - **A and AAAA.** The tracker's lookups are per type. An A and an AAAA lookup of the same
//!   base from one client starting within the idle window are one `getaddrinfo(AF_UNSPEC)`,
//!   replayed as a pair (the stubs decide on the pair's answers together).
//! - **The captured setting stands as observed.** When a setting gives a lookup the same
//!   candidate list as the captured setting (`--captured-ndots`, `--captured-stub`, the
//!   captured search list) and no shortcut, the captured walk's figures are used as they are
//!   (retries and truncated walks included): the model cannot know better than what happened.
//!   So the captured setting's row equals what `ndots analyze` reports for the same capture.
//! - **Answers the capture does not hold.** Known: the last definite answer (NOERROR with or
//!   without records, NXDOMAIN) seen for that `(qname, qtype)`, else the last failure. Inferred,
//!   counted apart from known ones: NXDOMAIN for every type once one type was NXDOMAIN (a name
//!   that does not exist has no records of any type, RFC 8020), and NXDOMAIN for a name under
//!   the cluster domain that the Kubernetes DNS schema rules out. Anything else is *unknown*:
//!   the walk assumes NXDOMAIN (what most expansions get) and goes on, the candidate is counted
//!   in `unknown_answers` and listed, and a lookup whose result then differs from the captured
//!   one is a *possible* change (`possible_changes`), never a certain one. `--target` settles
//!   them.
//! - **Changes.** `before` is what the capture shows the lookup ended at (the name that
//!   answered with records, or NXDOMAIN/NODATA). When the capture shows no definite end (no
//!   response, SERVFAIL, cut off), the captured setting's own modelled walk stands in, if it
//!   needed no unknown answer; else the lookup cannot be compared and counts as uncertain.
//! - **Upstream queries** are what reaches the cluster DNS with the proxy in front in the
//!   setting's shortcut mode. Within one lookup each name and type counts once (the proxy's
//!   cache outlives a walk); across lookups nothing is cached (an upper bound: a cache only
//!   lowers every setting's figure). `off` forwards everything; `nxdomain` answers the
//!   expansions the shortcut policy rules out (zones given by `--shortcut-zone`, and the
//!   Kubernetes schema); `autopath` answers a ruled-out expansion with the first later
//!   candidate that exists, costing one upstream query per candidate it tries. The proxy's
//!   RFC 8020 ancestor checks are not modelled. For a lookup replayed as captured, the
//!   `nxdomain` decision is taken per suffix kind (the first node domain stands for all).
//! - **Live** (`--target`): every setting's walks are sent, answers come from the target, so
//!   nothing is unknown; `before` stays what the capture shows. The `nxdomain` shortcut is
//!   applied in front of the target (ruled-out names are answered NXDOMAIN, not sent);
//!   `autopath` is offline only (measure it with the proxy in autopath mode as the target).
//! - **Memory**: one answer per distinct `(qname, qtype)` and one small record per lookup;
//!   each setting walks each distinct demand once.
//! - **Per-workload pod DNS config** (`--pod-dns-config`, [`crate::search::workloads`]): a
//!   client a workload lists is replayed with the resolv.conf its pod spec gives it, as its
//!   stub reads it, in the captured setting and in every other: a setting's ndots replaces
//!   kubelet's `ndots:5` only for pods whose ndots is not their own (no ndots in their
//!   dnsConfig, a ClusterFirst policy), a workload's `stub` replaces the setting's, and its
//!   search list is its own (`--search` settings speak for the other clients). The one place
//!   this is chosen is [`Captured::stub_config`]. Each setting's figures are also given per
//!   workload (`workloads`).
//! - **FQDN rewrite** (`--fqdn`): the names whose lookups ended at the absolute name (the
//!   external names) are written with a trailing dot, under the captured ndots; every other
//!   name is left as it is. That is the change a team makes in application config.

pub mod live;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::Serialize;

use crate::amplify::{Lookup, Outcome, WalkTracker};
use crate::config::{ClusterConfig, ShortcutMode, TrackerConfig};
use crate::event::{QueryEvent, Timestamp};
use crate::search::shortcut::ShortcutPolicy;
use crate::search::workloads::Workloads;
use crate::search::{
    schema, Answer, Family, ResolverSettings, SearchShape, Stub, Walker, QTYPE_A, QTYPE_AAAA,
};

/// Names listed per setting in `changes` and `unknown_names` at most.
pub const LIST_CAP: usize = 50;

/// One configuration to compare.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    pub ndots: u32,
    /// The pod search list shape (`*.svc.<domain>` stands for the namespace).
    pub cluster: ClusterConfig,
    pub stub: Stub,
    /// `Off`, `Nxdomain` or `Autopath` (what a proxy in front would answer).
    pub shortcut: ShortcutMode,
    /// Names that ended at the absolute name are asked with a trailing dot.
    pub fqdn: bool,
}

impl Setting {
    /// The search list as resolv.conf would read it, `*` kept as written.
    pub fn search_words(&self) -> Vec<String> {
        self.cluster
            .search
            .iter()
            .chain(&self.cluster.node_search)
            .cloned()
            .collect()
    }

    /// A short label: `ndots:2 glibc shortcut:nxdomain`.
    pub fn label(&self, captured: &ClusterConfig) -> String {
        let mut s = if self.fqdn {
            format!("fqdn ndots:{}", self.ndots)
        } else {
            format!("ndots:{}", self.ndots)
        };
        s.push(' ');
        s.push_str(self.stub.as_str());
        if self.shortcut != ShortcutMode::Off {
            s.push_str(" shortcut:");
            s.push_str(self.shortcut.as_str());
        }
        if self.cluster != *captured {
            s.push_str(" search:");
            s.push_str(&self.search_words().join(","));
        }
        s
    }
}

/// How a `(qname, qtype)` is answered, and how sure we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Knowledge {
    Captured(Answer),
    Inferred(Answer),
    Unknown,
}

/// What the capture says about each `(qname, qtype)`.
#[derive(Default)]
pub struct AnswerTable {
    answers: HashMap<(Box<str>, u16), Answer>,
    nxdomain: hashbrown::HashSet<Box<str>>,
    domain: String,
}

impl AnswerTable {
    fn record(&mut self, ev: &QueryEvent) {
        let Some(rcode) = ev.rcode else { return };
        let a = match (rcode, ev.answers) {
            (0, Some(0)) => Answer::NoData,
            (0, _) => Answer::Address,
            (3, _) => Answer::NxDomain,
            (5, _) => Answer::Refused,
            _ => Answer::ServFail,
        };
        let definite = matches!(a, Answer::Address | Answer::NoData | Answer::NxDomain);
        if a == Answer::NxDomain && !self.nxdomain.contains(ev.qname.as_str()) {
            self.nxdomain.insert(ev.qname.as_str().into());
        }
        match self.answers.get_mut(&(ev.qname.as_str().into(), ev.qtype)) {
            Some(prev) => {
                let prev_definite =
                    matches!(prev, Answer::Address | Answer::NoData | Answer::NxDomain);
                if definite || !prev_definite {
                    *prev = a;
                }
            }
            None => {
                self.answers.insert((ev.qname.as_str().into(), ev.qtype), a);
            }
        }
    }

    /// What is known about `qname` (absolute, lowercase) for `qtype`.
    pub fn get(&self, qname: &str, qtype: u16) -> Knowledge {
        if let Some(a) = self.answers.get(&(qname.into(), qtype)) {
            return Knowledge::Captured(*a);
        }
        if self.nxdomain.contains(qname) {
            return Knowledge::Inferred(Answer::NxDomain);
        }
        if !self.domain.is_empty() && !schema::allows(qname, &self.domain) {
            return Knowledge::Inferred(Answer::NxDomain);
        }
        Knowledge::Unknown
    }

    /// Distinct `(qname, qtype)` pairs with an answer.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

/// Reads a capture's events: rebuilds lookups with the walk tracker and keeps the answers.
pub struct Collector {
    walks: WalkTracker,
    lookups: Vec<Lookup>,
    answers: AnswerTable,
    events: u64,
}

impl Collector {
    pub fn new(cluster: &ClusterConfig, tracker: &TrackerConfig) -> Self {
        Collector {
            walks: WalkTracker::new(SearchShape::new(cluster), tracker),
            lookups: Vec::new(),
            answers: AnswerTable {
                domain: cluster.domain.clone(),
                ..AnswerTable::default()
            },
            events: 0,
        }
    }

    pub fn observe(&mut self, ev: &QueryEvent) {
        self.events += 1;
        self.answers.record(ev);
        self.walks.observe(ev);
        self.lookups.extend(self.walks.drain());
    }

    /// Close the open walks and reduce the lookups to demands.
    pub fn finish(mut self, captured: &Captured, tracker: &TrackerConfig) -> Replay {
        self.walks.finish();
        self.lookups.extend(self.walks.drain());
        Replay::new(self.lookups, self.answers, captured, tracker, self.events)
    }
}

/// The setting the capture's clients ran with (as far as the capture says).
#[derive(Clone, Debug)]
pub struct Captured {
    pub cluster: ClusterConfig,
    pub ndots: u32,
    pub stub: Stub,
    /// `--pod-dns-config`: clients with their own pod DNS config.
    pub workloads: Option<std::sync::Arc<Workloads>>,
}

impl Captured {
    pub fn setting(&self) -> Setting {
        Setting {
            ndots: self.ndots,
            cluster: self.cluster.clone(),
            stub: self.stub,
            shortcut: ShortcutMode::Off,
            fqdn: false,
        }
    }

    /// The stub and resolver settings `setting` gives demand `d`: its workload's own pod DNS
    /// config when it has one (see the module docs), else the setting's cluster-wide one.
    pub fn stub_config(&self, setting: &Setting, d: &Demand) -> (Stub, ResolverSettings) {
        let w = d
            .workload
            .and_then(|i| self.workloads.as_ref()?.list.get(i as usize));
        let Some(w) = w else {
            let mut s = ResolverSettings::defaults(setting.stub);
            s.set_ndots(setting.ndots, setting.stub);
            s.search = SearchShape::new(&setting.cluster).search_list(d.namespace.as_deref());
            return (setting.stub, s);
        };
        let stub = w.stub_or(setting.stub);
        let rs = w.settings(
            stub,
            d.namespace.as_deref(),
            &self.cluster,
            Some(setting.ndots),
        );
        (stub, rs)
    }

    /// The workload that lists `client`, if any.
    fn workload_of(&self, client: IpAddr) -> Option<u32> {
        self.workloads.as_ref()?.find(client).map(|i| i as u32)
    }

    /// The ndots each workload's clients ran with in the capture (file order).
    fn workload_ndots(&self) -> Vec<u32> {
        let n = self.workloads.as_ref().map_or(0, |w| w.list.len());
        (0..n as u32)
            .map(|i| {
                let d = Demand {
                    name: "x".into(),
                    namespace: None,
                    qtype: 0,
                    workload: Some(i),
                };
                self.stub_config(&self.setting(), &d).1.ndots
            })
            .collect()
    }
}

/// What the application asked once: replayed identically for every lookup that shares it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Demand {
    /// As passed to getaddrinfo: no trailing dot, unless the capture shows it was absolute.
    pub name: Box<str>,
    pub namespace: Option<Box<str>>,
    /// `QTYPE_A`/`QTYPE_AAAA` alone, `0` for an A+AAAA pair, or another query type.
    pub qtype: u16,
    /// The `--pod-dns-config` workload of the client (index in its list).
    pub workload: Option<u32>,
}

impl Demand {
    fn family(&self) -> (Family, u16) {
        match self.qtype {
            0 => (Family::Unspec, 0),
            QTYPE_AAAA => (Family::Inet6, QTYPE_AAAA),
            t => (Family::Inet, t),
        }
    }
}

/// How a lookup ended, as compared across settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum End {
    /// Records from this name.
    Resolved(Box<str>),
    /// No records: NXDOMAIN, NODATA or a failure, in words.
    Failed(&'static str),
}

impl End {
    pub fn describe(&self) -> String {
        match self {
            End::Resolved(n) => n.to_string(),
            End::Failed(w) => (*w).to_string(),
        }
    }
}

/// One captured lookup (an A+AAAA pair counts as one).
#[derive(Clone, Debug)]
pub struct CapturedLookup {
    pub demand: u32,
    pub client: IpAddr,
    pub start: Timestamp,
    pub queries: u32,
    /// Per-type lookups in it (2 for an A+AAAA pair): DESIGN §1 counts lookups per type.
    pub types: u8,
    pub nxdomain: u32,
    /// `None`: the capture shows no definite end.
    pub end: Option<End>,
    /// Queries by the suffix they carried ([`crate::amplify::SuffixSlot`] order): what the
    /// `nxdomain` shortcut would have answered of the captured walk.
    pub suffix_queries: [u32; 6],
}

/// Lookups reduced to demands, ready to replay under any setting.
pub struct Replay {
    pub demands: Vec<Demand>,
    pub lookups: Vec<CapturedLookup>,
    pub answers: AnswerTable,
    pub captured: Captured,
    pub events: u64,
    /// Zones the `nxdomain`/`autopath` shortcut rules out (`--shortcut-zone`); the Kubernetes
    /// schema rule is always on, as in the proxy's default.
    pub shortcut_zones: Vec<String>,
    /// Lookups per demand.
    weight: Vec<u64>,
    /// Computed once: the captured setting's modelled end per demand, the FQDN targets.
    baseline: std::cell::OnceCell<Vec<(End, bool)>>,
    /// Live: how each lookup ended at the target under the captured setting. The other
    /// settings are compared with it, not with the capture, so a target that answers
    /// differently from the captured server does not show as changes.
    live_baseline: std::cell::OnceCell<Vec<End>>,
    fqdn: std::cell::OnceCell<Vec<bool>>,
}

/// Per-setting figures (DESIGN §5 JSON, plus fields).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SettingReport {
    pub label: String,
    pub ndots: u32,
    pub stub: String,
    pub shortcut: String,
    pub search: Vec<String>,
    pub fqdn: bool,
    pub lookups: u64,
    pub queries: u64,
    pub queries_per_lookup: f64,
    pub nxdomain: u64,
    pub upstream_queries: u64,
    pub changed_resolutions: u64,
    pub unknown_answers: u64,
    pub changes: Vec<Change>,
    pub latency_ms: Option<Latency>,
    /// Live: queries the target left unanswered (DESIGN §9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<u64>,
    /// Distinct `(name, type)` whose answer was inferred (RFC 8020, Kubernetes schema).
    pub inferred_answers: u64,
    /// Lookups whose result would differ if every unknown answer were NXDOMAIN: uncertain.
    pub possible_changes: u64,
    /// Lookups whose walk needed an unknown answer, or whose captured end is unknown.
    pub uncertain_lookups: u64,
    /// Live, captured setting: lookups the target ended elsewhere than the capture shows (the
    /// target is not the captured server); the other settings are compared with the target.
    #[serde(skip_serializing_if = "is_zero")]
    pub target_differences: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub target_difference_list: Vec<Change>,
    /// The candidate names whose answers the capture does not hold (`--target` settles them).
    pub unknown_names: Vec<String>,
    pub possible_change_list: Vec<Change>,
    /// Lookups whose figures are the captured walk's as observed (same candidates).
    pub as_captured_lookups: u64,
    /// Queries per lookup: `[[queries, lookups], ...]`.
    pub histogram: Vec<[u64; 2]>,
    /// Live only: per-query measurements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<live::LiveFigures>,
    /// `--pod-dns-config`: the same figures for each workload's clients, in file order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadFigures>,
}

/// One workload's share of a setting's figures, and what it ran with under that setting.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkloadFigures {
    pub workload: String,
    pub stub: String,
    /// The ndots its clients walk with under this setting (its own when its pod sets one).
    pub ndots: u32,
    /// Its search list (the first namespace seen of its clients), `.` for a root entry.
    pub search: Vec<String>,
    pub lookups: u64,
    pub queries: u64,
    pub nxdomain: u64,
    pub upstream_queries: u64,
    pub changed_resolutions: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// The name the application asked (as written: no trailing dot unless it had one).
    pub name: String,
    pub before: String,
    pub after: String,
    pub lookups: u64,
    /// Clients whose lookups changed (the first few), to find them in `capture dump`.
    pub clients: Vec<String>,
}

/// Clients listed per change.
const CHANGE_CLIENTS: usize = 3;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    /// Per lookup (first query to the walk's end).
    pub lookup_p50: f64,
    pub lookup_p99: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Recommendation {
    pub ndots: u32,
    pub saves_percent: f64,
    pub changed_resolutions: u64,
    pub label: String,
    pub stub: String,
    pub shortcut: String,
    pub fqdn: bool,
    pub unknown_answers: u64,
    pub why: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub source: String,
    pub mode: String,
    /// Lookups per query type (DESIGN §1), as `ndots analyze` counts them.
    pub lookups: u64,
    /// The same with each A+AAAA pair counted once: what applications asked.
    pub application_lookups: u64,
    pub events: u64,
    pub captured: SettingReport,
    pub settings: Vec<SettingReport>,
    pub recommendation: Recommendation,
    /// Live: the pace the walks were sent at, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pace: Option<String>,
}

/// A demand walked under one setting.
struct Outcome1 {
    queries: u32,
    /// Per-type lookups that sent a query (at least 1).
    types: u8,
    nxdomain: u32,
    upstream: u32,
    end: End,
    /// The walk needed an answer nobody knows.
    uncertain: bool,
    as_captured: bool,
    /// With `as_captured` and the `nxdomain` shortcut: which suffix slots the proxy answers.
    local: [bool; 6],
}

impl Replay {
    fn new(
        mut raw: Vec<Lookup>,
        answers: AnswerTable,
        captured: &Captured,
        tracker: &TrackerConfig,
        events: u64,
    ) -> Replay {
        let shape = SearchShape::new(&captured.cluster);
        // Pair A and AAAA lookups of one base from one client that start together.
        raw.sort_by(|a, b| {
            (a.client, &a.base, a.start.0, a.qtype).cmp(&(b.client, &b.base, b.start.0, b.qtype))
        });
        let window = tracker.idle.as_micros() as u64;
        let workload_ndots = captured.workload_ndots();
        let mut index: HashMap<Demand, u32> = HashMap::new();
        let mut demands = Vec::new();
        let mut weight = Vec::new();
        let mut lookups = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let l = &raw[i];
            let partner = raw.get(i + 1).filter(|m| {
                m.client == l.client
                    && m.base == l.base
                    && m.start.0.saturating_sub(l.start.0) <= window
                    && matches!(
                        (l.qtype, m.qtype),
                        (QTYPE_A, QTYPE_AAAA) | (QTYPE_AAAA, QTYPE_A)
                    )
            });
            let pair: &[Lookup] = match partner {
                Some(_) => &raw[i..i + 2],
                None => &raw[i..i + 1],
            };
            i += pair.len();
            let workload = captured.workload_of(pair[0].client);
            let ndots = workload.map_or(captured.ndots, |w| workload_ndots[w as usize]);
            let demand = Demand {
                name: app_name(&pair[0], ndots).into(),
                namespace: pair
                    .iter()
                    .find_map(|l| l.namespace.as_deref().map(Into::into)),
                qtype: if pair.len() == 2 { 0 } else { pair[0].qtype },
                workload,
            };
            let id = *index.entry(demand.clone()).or_insert_with(|| {
                demands.push(demand);
                weight.push(0);
                (demands.len() - 1) as u32
            });
            weight[id as usize] += 1;
            lookups.push(CapturedLookup {
                demand: id,
                client: pair[0].client,
                start: pair.iter().map(|l| l.start).min().unwrap_or_default(),
                queries: pair.iter().map(|l| l.queries).sum(),
                types: pair.len() as u8,
                nxdomain: pair.iter().map(|l| l.nxdomain).sum(),
                end: captured_end(pair, &shape, captured, &demands[id as usize]),
                suffix_queries: pair.iter().fold([0; 6], |mut acc, l| {
                    for (a, q) in acc.iter_mut().zip(l.suffix_queries) {
                        *a += q;
                    }
                    acc
                }),
            });
        }
        lookups.sort_by_key(|l| l.start);
        Replay {
            demands,
            lookups,
            answers,
            captured: captured.clone(),
            events,
            shortcut_zones: Vec::new(),
            weight,
            baseline: Default::default(),
            live_baseline: Default::default(),
            fqdn: Default::default(),
        }
    }

    /// Whether the capture has real timestamps. Readers give lines without a time times that
    /// count up from 0 (CoreDNS >= 1.6.3 without kubectl's prefix, dnsperf files), so a capture
    /// whose lookups start before 2000 has none, and its "captured pace" means nothing.
    pub fn has_timestamps(&self) -> bool {
        const Y2000_US: u64 = 946_684_800_000_000;
        self.lookups.first().is_some_and(|l| l.start.0 >= Y2000_US)
    }

    /// Repeat the captured lookups `n` times in all, each copy after the last (live load
    /// generation from a small capture).
    pub fn repeat(&mut self, n: u32) {
        let (Some(first), Some(last)) = (self.lookups.first(), self.lookups.last()) else {
            return;
        };
        let period = last.start.0 - first.start.0 + 1_000_000;
        let one = self.lookups.clone();
        for k in 1..n as u64 {
            self.lookups.extend(one.iter().map(|l| CapturedLookup {
                start: Timestamp(l.start.0 + k * period),
                ..l.clone()
            }));
        }
        for w in &mut self.weight {
            *w *= n as u64;
        }
    }

    /// The name `setting` asks for `d`, and its resolver settings.
    fn asked(&self, setting: &Setting, d: &Demand, fqdn_names: &[bool], id: usize) -> String {
        if setting.fqdn && fqdn_names[id] && !d.name.ends_with('.') {
            format!("{}.", d.name)
        } else {
            d.name.to_string()
        }
    }

    /// Whether each demand's captured lookups ended at the absolute name (the FQDN rewrite
    /// targets).
    fn fqdn_targets(&self) -> Vec<bool> {
        let mut ext = vec![false; self.demands.len()];
        for l in &self.lookups {
            if let Some(End::Resolved(n)) = &l.end {
                let d = &self.demands[l.demand as usize];
                if n.trim_end_matches('.') == d.name.trim_end_matches('.') {
                    ext[l.demand as usize] = true;
                }
            }
        }
        ext
    }

    /// Walk demand `d` under `setting` with `answer` deciding each query (offline: the table).
    fn walk_demand(
        &self,
        setting: &Setting,
        policy: &ShortcutPolicy,
        d: &Demand,
        asked: &str,
        mut answer: impl FnMut(&str, u16) -> Answer,
    ) -> (crate::search::Walk, u32, End) {
        let (family, qtype) = d.family();
        let (stub, rs) = self.captured.stub_config(setting, d);
        let mut walker = Walker::new(stub, asked, family, &rs);
        // The proxy's cache holds an answer longer than a walk lasts: within one lookup each
        // name and type goes upstream once.
        let mut sent: Vec<(String, u16)> = Vec::new();
        let mut upstream = |q: &str, t: u16| {
            if !sent.iter().any(|(n, u)| n == q && *u == t) {
                sent.push((q.to_string(), t));
            }
        };
        let mut buf = Vec::with_capacity(2);
        // Autopath answers `Q CNAME target`: the lookup resolves at the target.
        let mut via: Vec<(String, String)> = Vec::new();
        while let Some((qname, types)) = walker.next_queries() {
            buf.clear();
            for &t in types {
                let t = if qtype != 0 { qtype } else { t };
                let (a, target) = shortcut_answer(
                    setting.shortcut,
                    policy,
                    qname,
                    t,
                    &mut answer,
                    &mut upstream,
                );
                if let Some(target) = target {
                    via.push((qname.to_string(), target));
                }
                buf.push(a);
            }
            walker.answer(&buf);
        }
        let walk = walker.finish();
        let mut end = walk_end(&walk);
        if let End::Resolved(n) = &end {
            if let Some((_, t)) = via.iter().find(|(q, _)| **q == **n) {
                end = End::Resolved(t.as_str().into());
            }
        }
        (walk, sent.len() as u32, end)
    }

    /// Evaluate one setting offline: answers from the capture.
    pub fn evaluate(&self, setting: &Setting) -> SettingReport {
        let policy = self.policy(setting);
        let captured_setting = self.captured.setting();
        let fqdn = self.fqdn.get_or_init(|| self.fqdn_targets());
        let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
        let mut inferred: hashbrown::HashSet<(String, u16)> = hashbrown::HashSet::new();
        let mut per_demand = Vec::with_capacity(self.demands.len());
        for (id, d) in self.demands.iter().enumerate() {
            let asked = self.asked(setting, d, fqdn, id);
            // The nxdomain shortcut answers only names that do not exist: the client's walk
            // is the captured one; only the upstream share changes.
            let same_plan = matches!(setting.shortcut, ShortcutMode::Off | ShortcutMode::Nxdomain)
                && self.candidates(setting, d, &asked)
                    == self.candidates(&captured_setting, d, &d.name);
            if same_plan {
                let local = if setting.shortcut == ShortcutMode::Nxdomain {
                    local_slots(&policy, setting, d)
                } else {
                    [false; 6]
                };
                per_demand.push(Outcome1::as_captured(local));
                continue;
            }
            let mut uncertain = false;
            let (walk, upstream, end) = self.walk_demand(setting, &policy, d, &asked, |q, t| {
                match self.answers.get(q, t) {
                    Knowledge::Captured(a) => a,
                    Knowledge::Inferred(a) => {
                        inferred.insert((q.to_string(), t));
                        a
                    }
                    Knowledge::Unknown => {
                        uncertain = true;
                        *unknown
                            .entry(format!("{q} {}", crate::event::qtype_name(t)))
                            .or_default() += self.weight[id];
                        Answer::NxDomain
                    }
                }
            });
            per_demand.push(Outcome1 {
                queries: walk.queries.len() as u32,
                types: types_sent(&walk),
                nxdomain: walk
                    .queries
                    .iter()
                    .filter(|q| q.answer == Answer::NxDomain)
                    .count() as u32,
                upstream,
                end,
                uncertain,
                as_captured: false,
                local: [false; 6],
            });
        }
        let baseline = (*setting != captured_setting).then(|| {
            self.baseline
                .get_or_init(|| self.evaluate_outcomes(&captured_setting))
                .as_slice()
        });
        let mut r = self.tally(setting, &per_demand, false, baseline);
        r.unknown_answers = unknown.len() as u64;
        let mut names: Vec<(String, u64)> = unknown.into_iter().collect();
        names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        r.unknown_names = names.into_iter().take(LIST_CAP).map(|(n, _)| n).collect();
        r.inferred_answers = inferred.len() as u64;
        r
    }

    /// The captured setting's modelled outcome per demand (the stand-in `before`).
    fn evaluate_outcomes(&self, setting: &Setting) -> Vec<(End, bool)> {
        let policy = ShortcutPolicy::from_parts(SearchShape::new(&setting.cluster), &[""; 0], true);
        self.demands
            .iter()
            .map(|d| {
                let mut uncertain = false;
                let (_, _, end) = self.walk_demand(setting, &policy, d, &d.name, |q, t| match self
                    .answers
                    .get(q, t)
                {
                    Knowledge::Captured(a) | Knowledge::Inferred(a) => a,
                    Knowledge::Unknown => {
                        uncertain = true;
                        Answer::NxDomain
                    }
                });
                (end, uncertain)
            })
            .collect()
    }

    /// The stub and the names it would try for `d` under `setting`.
    fn candidates(&self, setting: &Setting, d: &Demand, asked: &str) -> (Stub, Vec<String>) {
        let (stub, rs) = self.captured.stub_config(setting, d);
        (stub, stub.candidates(asked, &rs))
    }

    fn policy(&self, setting: &Setting) -> ShortcutPolicy {
        ShortcutPolicy::from_parts(
            SearchShape::new(&setting.cluster),
            &self.shortcut_zones,
            true,
        )
    }

    /// Evaluate one setting live: every walk sent to `opts.target`, answers from it. The
    /// shortcut `nxdomain` is applied here (what a proxy in front would answer locally);
    /// `autopath` needs the proxy itself as the target.
    pub fn evaluate_live(
        &self,
        setting: &Setting,
        opts: &live::LiveOptions,
    ) -> std::io::Result<SettingReport> {
        let policy = self.policy(setting);
        let fqdn = self.fqdn.get_or_init(|| self.fqdn_targets());
        let asked: Vec<String> = self
            .demands
            .iter()
            .enumerate()
            .map(|(id, d)| self.asked(setting, d, fqdn, id))
            .collect();
        let resolvers: Vec<(Stub, ResolverSettings)> = self
            .demands
            .iter()
            .map(|d| self.captured.stub_config(setting, d))
            .collect();
        let first = self.lookups.first().map(|l| l.start.0).unwrap_or(0);
        let jobs: Vec<live::Job<'_>> = self
            .lookups
            .iter()
            .map(|l| {
                let d = &self.demands[l.demand as usize];
                let (family, qtype) = d.family();
                live::Job {
                    offset_us: l.start.0.saturating_sub(first),
                    name: &asked[l.demand as usize],
                    stub: resolvers[l.demand as usize].0,
                    family,
                    qtype,
                    client: client_number(l.client),
                    settings: &resolvers[l.demand as usize].1,
                }
            })
            .collect();
        let nx = setting.shortcut == ShortcutMode::Nxdomain;
        let (results, figures) =
            live::run(&jobs, opts, |q, t| nx && policy.decide(q, t).is_some())?;
        let outcomes: Vec<Outcome1> = results
            .iter()
            .map(|r| Outcome1 {
                queries: r.tally.queries,
                types: 1 + r.tally.both_types as u8,
                nxdomain: r.tally.nxdomain,
                upstream: r.tally.queries - r.local,
                end: end_of(r.result.as_deref(), r.tally.last),
                uncertain: false,
                as_captured: false,
                local: [false; 6],
            })
            .collect();
        let captured = *setting == self.captured.setting();
        if captured {
            let _ = self
                .live_baseline
                .set(outcomes.iter().map(|o| o.end.clone()).collect());
        }
        let mut r = self.tally(setting, &outcomes, true, None);
        if captured {
            r.target_differences = std::mem::take(&mut r.changed_resolutions);
            r.target_difference_list = std::mem::take(&mut r.changes);
        }
        r.latency_ms = Some(Latency {
            p50: figures.query_ms.p50,
            p90: figures.query_ms.p90,
            p99: figures.query_ms.p99,
            max: figures.query_ms.max,
            lookup_p50: figures.lookup_ms.p50,
            lookup_p99: figures.lookup_ms.p99,
        });
        r.timeouts = Some(figures.timeouts);
        r.live = Some(figures);
        Ok(r)
    }

    /// Sum outcomes (per demand, or per lookup when `per_lookup`) over the captured lookups.
    /// `baseline`: the captured setting's modelled outcome per demand (`None` when `setting`
    /// is the captured one, or live, where the captured end is the reference).
    fn tally(
        &self,
        setting: &Setting,
        outcomes: &[Outcome1],
        per_lookup: bool,
        baseline: Option<&[(End, bool)]>,
    ) -> SettingReport {
        let mut r = SettingReport {
            label: setting.label(&self.captured.cluster),
            ndots: setting.ndots,
            stub: setting.stub.as_str().into(),
            shortcut: setting.shortcut.as_str().into(),
            search: setting.search_words(),
            fqdn: setting.fqdn,
            ..SettingReport::default()
        };
        let mut hist: BTreeMap<u64, u64> = BTreeMap::new();
        let mut per_workload: Vec<Option<WorkloadFigures>> = match &self.captured.workloads {
            Some(w) => vec![None; w.list.len()],
            None => Vec::new(),
        };
        // Keyed by the name asked, not the demand: two demands of one name (another
        // namespace, a pair and a single type) are one line.
        type Changes<'a> = HashMap<(&'a str, End, End), (u64, Vec<IpAddr>)>;
        let mut changes: Changes = HashMap::new();
        let mut possible: Changes = HashMap::new();
        for (i, l) in self.lookups.iter().enumerate() {
            let o = &outcomes[if per_lookup { i } else { l.demand as usize }];
            let (q, nx, up, types) = if o.as_captured {
                r.as_captured_lookups += l.types as u64;
                let up: u32 = (0..6)
                    .filter(|&i| !o.local[i])
                    .map(|i| l.suffix_queries[i])
                    .sum();
                (l.queries, l.nxdomain, up, l.types)
            } else {
                (o.queries, o.nxdomain, o.upstream, o.types)
            };
            r.lookups += types as u64;
            r.queries += q as u64;
            r.nxdomain += nx as u64;
            r.upstream_queries += up as u64;
            let d = &self.demands[l.demand as usize];
            let wf = d
                .workload
                .and_then(|w| per_workload.get_mut(w as usize))
                .map(|slot| slot.get_or_insert_with(|| self.workload_figures(setting, d)));
            if let Some(wf) = wf {
                wf.lookups += types as u64;
                wf.queries += q as u64;
                wf.nxdomain += nx as u64;
                wf.upstream_queries += up as u64;
            }
            // Per type, as the tracker counts: a pair's queries split evenly (A and AAAA go
            // out together, so they differ by at most one).
            let types = types.max(1) as u64;
            let q = q as u64;
            for k in 0..types {
                *hist
                    .entry(q / types + u64::from(k < q % types))
                    .or_default() += 1;
            }
            if o.as_captured {
                continue;
            }
            let live_base = self
                .live_baseline
                .get()
                .filter(|_| per_lookup && *setting != self.captured.setting());
            let before = match (&l.end, baseline) {
                _ if live_base.is_some() => live_base.map(|b| b[i].clone()),
                (Some(e), _) => Some(e.clone()),
                (None, Some(b)) if !b[l.demand as usize].1 => Some(b[l.demand as usize].0.clone()),
                (None, None) if *setting == self.captured.setting() => {
                    Some(o.end.clone()).filter(|_| !o.uncertain)
                }
                _ => None,
            };
            let Some(before) = before else {
                r.uncertain_lookups += 1;
                continue;
            };
            if o.uncertain {
                r.uncertain_lookups += 1;
            }
            if before != o.end {
                let wf = self.demands[l.demand as usize]
                    .workload
                    .and_then(|w| per_workload.get_mut(w as usize)?.as_mut());
                if let (Some(wf), false) = (wf, o.uncertain) {
                    wf.changed_resolutions += 1;
                }
                let key = (
                    &*self.demands[l.demand as usize].name,
                    before,
                    o.end.clone(),
                );
                let e = if o.uncertain {
                    possible.entry(key).or_default()
                } else {
                    changes.entry(key).or_default()
                };
                e.0 += 1;
                if e.1.len() < CHANGE_CLIENTS && !e.1.contains(&l.client) {
                    e.1.push(l.client);
                }
            }
        }
        r.queries_per_lookup = if r.lookups == 0 {
            0.0
        } else {
            r.queries as f64 / r.lookups as f64
        };
        r.histogram = hist.into_iter().map(|(k, v)| [k, v]).collect();
        r.workloads = per_workload.into_iter().flatten().collect();
        let list = |m: Changes| -> (u64, Vec<Change>) {
            let total = m.values().map(|v| v.0).sum();
            let mut v: Vec<Change> = m
                .into_iter()
                .map(|((name, b, a), (n, clients))| Change {
                    name: name.to_string(),
                    before: b.describe(),
                    after: a.describe(),
                    lookups: n,
                    clients: clients.iter().map(IpAddr::to_string).collect(),
                })
                .collect();
            v.sort_by(|a, b| b.lookups.cmp(&a.lookups).then_with(|| a.name.cmp(&b.name)));
            v.truncate(LIST_CAP);
            (total, v)
        };
        (r.changed_resolutions, r.changes) = list(changes);
        (r.possible_changes, r.possible_change_list) = list(possible);
        r
    }
}

impl Replay {
    /// A workload's empty figures under `setting`, named from its first demand `d`.
    fn workload_figures(&self, setting: &Setting, d: &Demand) -> WorkloadFigures {
        let (stub, rs) = self.captured.stub_config(setting, d);
        let name = d
            .workload
            .and_then(|w| {
                Some(
                    self.captured
                        .workloads
                        .as_ref()?
                        .list
                        .get(w as usize)?
                        .name
                        .clone(),
                )
            })
            .unwrap_or_default();
        WorkloadFigures {
            workload: name,
            stub: stub.as_str().into(),
            ndots: rs.ndots,
            search: rs
                .search
                .iter()
                .map(|e| if e.is_empty() { ".".into() } else { e.clone() })
                .collect(),
            ..WorkloadFigures::default()
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the proxy in front answers for `qname`/`qtype` in `mode`; `upstream` is told every
/// query it sends upstream for that.
fn shortcut_answer(
    mode: ShortcutMode,
    policy: &ShortcutPolicy,
    qname: &str,
    qtype: u16,
    answer: &mut impl FnMut(&str, u16) -> Answer,
    upstream: &mut impl FnMut(&str, u16),
) -> (Answer, Option<String>) {
    let decided = match mode {
        ShortcutMode::Nxdomain | ShortcutMode::Autopath => policy.decide(qname, qtype),
        _ => None,
    };
    let Some(exp) = decided else {
        upstream(qname, qtype);
        return (answer(qname, qtype), None);
    };
    if mode == ShortcutMode::Nxdomain {
        return (Answer::NxDomain, None);
    }
    // Autopath: the first later candidate that exists answers (CNAME + its records).
    for c in policy.autopath_candidates(&exp) {
        upstream(&c, qtype);
        match answer(&c, qtype) {
            Answer::NxDomain => continue,
            a @ (Answer::Address | Answer::NoData) => return (a, Some(c)),
            // A candidate that failed: the proxy forwards the query as it is.
            _ => {
                upstream(qname, qtype);
                return (answer(qname, qtype), None);
            }
        }
    }
    (Answer::NxDomain, None)
}

impl Outcome1 {
    /// A placeholder: the lookup's captured figures are used.
    fn as_captured(local: [bool; 6]) -> Outcome1 {
        Outcome1 {
            local,
            queries: 0,
            types: 0,
            nxdomain: 0,
            upstream: 0,
            end: End::Failed("as captured"),
            uncertain: false,
            as_captured: true,
        }
    }
}

/// For each suffix slot (namespace, svc, cluster, node, other, absolute), whether the
/// shortcut policy answers `d`'s candidate with that suffix locally. A slot stands for its
/// first entry in the shape (node domains share one decision in practice: zone rules look at
/// the base).
fn local_slots(policy: &ShortcutPolicy, setting: &Setting, d: &Demand) -> [bool; 6] {
    use crate::search::SuffixKind;
    let shape = SearchShape::new(&setting.cluster);
    let bare = d.name.trim_end_matches('.');
    let mut out = [false; 6];
    let mut decided = [false; 6];
    for i in 0..shape.len() {
        let slot = match shape.kind(i) {
            SuffixKind::Namespace => 0,
            SuffixKind::Svc => 1,
            SuffixKind::Cluster => 2,
            SuffixKind::Node => 3,
            SuffixKind::Other => 4,
        };
        if decided[slot] {
            continue; // the slot's first entry speaks for it
        }
        if let Some(suffix) = shape.suffix(i, d.namespace.as_deref()) {
            decided[slot] = true;
            out[slot] = policy.decide(&format!("{bare}.{suffix}."), 0).is_some();
        }
    }
    out[5] = policy.decide(&format!("{bare}."), 0).is_some();
    out
}

/// A captured client address as a number that spreads clients over sockets.
fn client_number(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            u32::from_be_bytes([o[12], o[13], o[14], o[15]])
        }
    }
}

/// Query types the walk sent (1 or 2), at least 1.
fn types_sent(w: &crate::search::Walk) -> u8 {
    let first = w.queries.first().map(|q| q.qtype);
    1 + w.queries.iter().any(|q| Some(q.qtype) != first) as u8
}

fn walk_end(w: &crate::search::Walk) -> End {
    end_of(w.result.as_deref(), w.queries.last().map(|q| q.answer))
}

/// How a walk ended: the name that gave addresses, else the last answer.
fn end_of(result: Option<&str>, last: Option<Answer>) -> End {
    if let Some(n) = result {
        return End::Resolved(n.into());
    }
    End::Failed(match last {
        Some(Answer::NxDomain) => "NXDOMAIN",
        Some(Answer::NoData) => "NODATA",
        Some(Answer::ServFail) => "SERVFAIL",
        Some(Answer::Refused) => "REFUSED",
        Some(Answer::Timeout) => "TIMEOUT",
        Some(Answer::Address) => "NOERROR",
        None => "no query",
    })
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
    // NXDOMAIN or NODATA ends a lookup only on the stub's last candidate (or NODATA for musl,
    // which stops there); on an earlier one the capture is cut short, and the end is unknown.
    let l = pair.iter().find(|l| l.qtype == QTYPE_A).unwrap_or(&pair[0]);
    let setting = captured.setting();
    let (stub, rs) = captured.stub_config(&setting, demand);
    let plan = stub.candidates(&demand.name, &rs);
    let on_last = last_name(l).is_some_and(|n| plan.last() == Some(&n));
    match l.outcome {
        Outcome::NxDomain if on_last => Some(End::Failed("NXDOMAIN")),
        Outcome::NoData if on_last || stub.is_musl() => Some(End::Failed("NODATA")),
        _ => None,
    }
}

/// Pick the setting with the least upstream load (then the fewest queries, then the highest
/// ndots: the smallest change) among those without changed resolutions, nor possible ones,
/// unless `allow_changes`, and with the captured stub. The captured setting is always
/// eligible: it changes nothing.
pub fn recommend(
    captured: &SettingReport,
    settings: &[SettingReport],
    allow_changes: bool,
) -> Recommendation {
    // The stub is the image's libc, not a setting: other stubs are compared, not recommended.
    let same_stub = |s: &&SettingReport| s.stub == captured.stub;
    let eligible = |s: &&SettingReport| {
        allow_changes || (s.changed_resolutions == 0 && s.possible_changes == 0)
    };
    let best = std::iter::once(captured)
        .chain(settings.iter().filter(same_stub).filter(eligible))
        .min_by(|a, b| {
            a.upstream_queries
                .cmp(&b.upstream_queries)
                .then(a.queries.cmp(&b.queries))
                .then(b.ndots.cmp(&a.ndots))
        })
        .unwrap_or(captured);
    let saves_percent = if captured.upstream_queries == 0 {
        0.0
    } else {
        (captured.upstream_queries as f64 - best.upstream_queries as f64) * 100.0
            / captured.upstream_queries as f64
    };
    let excluded: Vec<&str> = settings
        .iter()
        .filter(same_stub)
        .filter(|s| !eligible(s))
        .map(|s| s.label.as_str())
        .collect();
    let mut why = if std::ptr::eq(best, captured) {
        "no setting asked lowers the load without changing a resolution".to_string()
    } else {
        format!(
            "{} cuts upstream queries from {} to {} ({:.1}%)",
            best.label, captured.upstream_queries, best.upstream_queries, saves_percent
        )
    };
    if !excluded.is_empty() {
        why.push_str(&format!(
            "; left out because some lookups would resolve differently (or might: unknown \
             answers): {}",
            excluded.join(", ")
        ));
    }
    if captured.changed_resolutions > 0 || captured.target_differences > 0 {
        why.push_str(&format!(
            "; the target ends {} lookups of the captured setting elsewhere than the capture \
             shows: it does not answer as the captured server did, so each setting is compared \
             with the target's own answers",
            captured.changed_resolutions + captured.target_differences
        ));
    }
    if best.unknown_answers > 0 {
        why.push_str(&format!(
            "; {} answers were not in the capture and assumed NXDOMAIN: run with --target to \
             settle them",
            best.unknown_answers
        ));
    }
    Recommendation {
        ndots: best.ndots,
        saves_percent,
        changed_resolutions: best.changed_resolutions,
        label: best.label.clone(),
        stub: best.stub.clone(),
        shortcut: best.shortcut.clone(),
        fqdn: best.fqdn,
        unknown_answers: best.unknown_answers,
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AnswerSource;
    use std::time::Duration;

    fn cluster() -> ClusterConfig {
        ClusterConfig {
            domain: "cluster.local".into(),
            search: vec![
                "*.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            node_search: vec![],
        }
    }

    fn tracker() -> TrackerConfig {
        TrackerConfig {
            idle: Duration::from_secs(2),
            max_open_walks: 1000,
            namespace_series: crate::config::DEFAULT_NAMESPACE_SERIES,
        }
    }

    fn captured() -> Captured {
        Captured {
            cluster: cluster(),
            ndots: 5,
            stub: Stub::Glibc,
            workloads: None,
        }
    }

    /// Events `(client, qname, qtype, rcode, answers)`, 1 ms apart.
    fn replay(events: &[(&str, &str, u16, u16, u16)]) -> Replay {
        let mut c = Collector::new(&cluster(), &tracker());
        for (i, (client, name, qtype, rcode, answers)) in events.iter().enumerate() {
            c.observe(&QueryEvent {
                time: Timestamp(1_700_000_000_000_000 + i as u64 * 1000),
                client: client.parse().unwrap(),
                client_port: None,
                qname: name.to_string(),
                qtype: *qtype,
                rcode: Some(*rcode),
                answers: Some(*answers),
                latency: None,
                source: Some(AnswerSource::Captured),
            });
        }
        c.finish(&captured(), &tracker())
    }

    fn setting(ndots: u32, shortcut: ShortcutMode) -> Setting {
        Setting {
            ndots,
            cluster: cluster(),
            stub: Stub::Glibc,
            shortcut,
            fqdn: false,
        }
    }

    /// The glibc ndots:5 walk of api.github.com from namespace `default`, A only.
    const GITHUB: &[(&str, &str, u16, u16, u16)] = &[
        (
            "10.0.0.5",
            "api.github.com.default.svc.cluster.local.",
            1,
            3,
            0,
        ),
        ("10.0.0.5", "api.github.com.svc.cluster.local.", 1, 3, 0),
        ("10.0.0.5", "api.github.com.cluster.local.", 1, 3, 0),
        ("10.0.0.5", "api.github.com.", 1, 0, 1),
    ];

    #[test]
    fn nxdomain_for_one_type_and_schema_ruled_out_names_are_inferred_not_captured() {
        let r = replay(&[("10.0.0.5", "gone.example.", 1, 3, 0)]);
        assert_eq!(
            r.answers.get("gone.example.", 1),
            Knowledge::Captured(Answer::NxDomain)
        );
        assert_eq!(
            r.answers.get("gone.example.", 28),
            Knowledge::Inferred(Answer::NxDomain)
        );
        // Too deep for any Kubernetes name: cannot exist.
        assert_eq!(
            r.answers.get("a.b.c.d.e.default.svc.cluster.local.", 1),
            Knowledge::Inferred(Answer::NxDomain)
        );
        // A Service name may exist: unknown.
        assert_eq!(
            r.answers.get("web.default.svc.cluster.local.", 1),
            Knowledge::Unknown
        );
        assert_eq!(r.answers.get("other.example.", 1), Knowledge::Unknown);
    }

    #[test]
    fn lower_ndots_sends_the_external_name_first_and_the_capture_knows_its_answer() {
        let r = replay(GITHUB);
        assert_eq!(r.demands[0].name.as_ref(), "api.github.com");
        let five = r.evaluate(&setting(5, ShortcutMode::Off));
        assert_eq!((five.queries, five.as_captured_lookups), (4, 1));
        let two = r.evaluate(&setting(2, ShortcutMode::Off));
        assert_eq!((two.queries, two.nxdomain, two.unknown_answers), (1, 0, 0));
        assert_eq!(two.changed_resolutions, 0);
        // nxdomain shortcut: the client's walk is the same, upstream loses the expansions
        // the schema rules out (api.github.com.svc.cluster.local reads as a pod name).
        let nx = r.evaluate(&setting(5, ShortcutMode::Nxdomain));
        assert_eq!((nx.queries, nx.upstream_queries), (4, 2));
    }

    #[test]
    fn autopath_ends_the_walk_at_the_first_expansion_and_resolves_at_its_target() {
        let r = replay(GITHUB);
        let ap = r.evaluate(&setting(5, ShortcutMode::Autopath));
        // One client query; upstream: svc (allowed by the schema, so tried), then the name.
        assert_eq!((ap.queries, ap.upstream_queries), (1, 2));
        assert_eq!(ap.changed_resolutions, 0, "{:?}", ap.changes);
        assert_eq!(ap.unknown_answers, 0);
    }

    #[test]
    fn a_name_asked_absolute_stays_absolute_under_every_setting() {
        let r = replay(&[("10.0.0.7", "www.example.org.", 1, 0, 1)]);
        assert_eq!(r.demands[0].name.as_ref(), "www.example.org.");
        for n in 1..=5 {
            let s = r.evaluate(&setting(n, ShortcutMode::Off));
            assert_eq!((s.queries, s.unknown_answers), (1, 0), "ndots:{n}");
        }
    }

    #[test]
    fn a_walk_cut_short_has_no_certain_end_and_unknown_answers_give_possible_changes() {
        // The capture ends after the first candidate: NXDOMAIN there is not how the lookup
        // ended, so nothing can be called a certain change.
        let r = replay(&[("10.0.0.5", "web.default.svc.cluster.local.", 1, 3, 0)]);
        assert_eq!(r.lookups[0].end, None);
        // musl's walk is modelled (another stub): it needs answers the capture lacks.
        let musl = r.evaluate(&Setting {
            stub: Stub::Musl,
            ..setting(5, ShortcutMode::Off)
        });
        assert_eq!(musl.changed_resolutions, 0);
        assert_eq!(musl.uncertain_lookups, 1);
        assert!(musl.unknown_answers > 0);
        assert!(musl
            .unknown_names
            .contains(&"web.svc.cluster.local. A".to_string()));
    }

    #[test]
    fn the_recommendation_skips_settings_with_changes_unless_allowed() {
        let base = SettingReport {
            label: "ndots:5 glibc".into(),
            ndots: 5,
            upstream_queries: 100,
            queries: 100,
            ..SettingReport::default()
        };
        let changed = SettingReport {
            label: "ndots:1 glibc".into(),
            ndots: 1,
            upstream_queries: 10,
            queries: 10,
            changed_resolutions: 1,
            ..SettingReport::default()
        };
        let two = SettingReport {
            label: "ndots:2 glibc".into(),
            ndots: 2,
            upstream_queries: 40,
            queries: 40,
            ..SettingReport::default()
        };
        let r = recommend(&base, &[changed.clone(), two.clone()], false);
        assert_eq!((r.ndots, r.saves_percent), (2, 60.0));
        assert_eq!(recommend(&base, &[changed.clone(), two], true).ndots, 1);
        let possible = SettingReport {
            possible_changes: 1,
            changed_resolutions: 0,
            ..changed
        };
        assert_eq!(recommend(&base, &[possible], false).ndots, 5);
        // Another stub is compared, never recommended (it is the image's libc).
        let musl = SettingReport {
            label: "ndots:1 musl".into(),
            stub: "musl".into(),
            ndots: 1,
            upstream_queries: 5,
            ..SettingReport::default()
        };
        let glibc = |s: SettingReport| SettingReport {
            stub: "glibc".into(),
            ..s
        };
        let base = glibc(base);
        assert_eq!(recommend(&base, &[musl], false).label, "ndots:5 glibc");
    }
}
