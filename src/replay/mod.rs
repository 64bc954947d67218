//! `ndots replay` (DESIGN §5): re-expand each captured lookup under other ndots, search list,
//! stub and shortcut settings, and compare them: queries, NXDOMAINs, upstream load, and the
//! lookups that would resolve differently.
//!
//! Data flow, a file per stage: capture events -> [`Collector`] (`collect`: the walk tracker
//! rebuilds lookups; `answers`: the table of what the capture says about every
//! `(qname, qtype)`) -> [`Replay`] (lookups reduced to *demands*: the name the application
//! asked, its namespace and address family) -> per [`Setting`], each demand walked through the
//! stub model ([`crate::search::Walker`]) with answers from the table (`offline`) or from a
//! live server ([`live`]) -> [`SettingReport`] (`report`) -> [`recommend`] -> [`ReplayReport`].
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
//!   candidate that exists, costing one upstream query per candidate it tries, and SERVFAIL
//!   when a candidate fails, as the proxy does. The model judges a candidate by the asked
//!   type alone, where the proxy judges it by A and AAAA together (docs/shortcut.md), and the
//!   proxy's RFC 8020 ancestor checks are not modelled. For a lookup replayed as captured, the
//!   `nxdomain` decision is taken per suffix kind (the first node domain stands for all).
//! - **Live** (`--target`): every setting's walks are sent, answers come from the target, so
//!   nothing is unknown; `before` stays what the capture shows. The `nxdomain` shortcut is
//!   applied in front of the target (ruled-out names are answered NXDOMAIN, not sent);
//!   `autopath` is offline only (measure it with the proxy in autopath mode as the target).
//! - **Memory** follows the capture's working set, not its length: one answer per distinct
//!   `(qname, qtype)`, one record per demand, and lookups reduced as they close into groups
//!   of alike ones (same demand, figures and end) with a count and a few clients. Only live
//!   replay keeps each lookup's time and client (32 bytes a lookup), to send it on time.
//!   Each setting walks each distinct demand once.
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

mod answers;
mod collect;
pub mod live;
mod offline;
mod recommend;
mod report;

pub use answers::{AnswerTable, Knowledge};
pub use collect::Collector;
pub use recommend::{recommend, Recommendation};
pub use report::{Change, Latency, ReplayReport, SettingReport, WorkloadFigures};

use std::net::IpAddr;

use crate::amplify::Outcome;
use crate::config::{ClusterConfig, ShortcutMode};
use crate::event::Timestamp;
use crate::search::shortcut::ShortcutPolicy;
use crate::search::workloads::Workloads;
use crate::search::{Answer, Family, ResolverSettings, SearchShape, Stub, WalkTally, QTYPE_AAAA};

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

/// Captured lookups alike (an A+AAAA pair counts as one): the same demand, figures and end,
/// counted rather than kept one by one, so memory follows the capture's variety, not its
/// length.
#[derive(Clone, Debug)]
pub struct CapturedLookup {
    pub demand: u32,
    pub queries: u32,
    /// Per-type lookups in it (2 for an A+AAAA pair): DESIGN §1 counts lookups per type.
    pub types: u8,
    pub nxdomain: u32,
    /// `None`: the capture shows no definite end.
    pub end: Option<End>,
    /// Queries by the suffix they carried ([`crate::amplify::SuffixSlot`] order): what the
    /// `nxdomain` shortcut would have answered of the captured walk.
    pub suffix_queries: [u32; 6],
    /// How many captured lookups these figures stand for.
    pub count: u64,
    /// A few of their clients (the lowest addresses, so the choice does not depend on the
    /// order lookups closed in), to find them in `capture dump`.
    pub clients: Vec<IpAddr>,
}

/// The figures that make captured lookups alike (a [`CapturedLookup`] without its count).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LookupKey {
    demand: u32,
    queries: u32,
    types: u8,
    nxdomain: u32,
    end: Option<End>,
    suffix_queries: [u32; 6],
}

/// One captured lookup in time (live replay sends each at its captured time): 32 bytes a
/// lookup, kept only for `--target`.
#[derive(Clone, Copy, Debug)]
pub struct TimedLookup {
    pub start: Timestamp,
    pub client: IpAddr,
    /// Index into [`Replay::lookups`].
    pub group: u32,
}

/// Lookups reduced to demands, ready to replay under any setting.
pub struct Replay {
    pub demands: Vec<Demand>,
    /// The captured lookups, alike ones counted together.
    pub lookups: Vec<CapturedLookup>,
    /// Live only (else empty): every lookup with its time and client, by start time.
    pub timeline: Vec<TimedLookup>,
    /// The earliest lookup's start.
    pub first_start: Option<Timestamp>,
    pub answers: AnswerTable,
    pub captured: Captured,
    pub events: u64,
    /// Zones the `nxdomain`/`autopath` shortcut rules out (`--shortcut-zone`); the Kubernetes
    /// schema rule is always on, as in the proxy's default.
    pub shortcut_zones: Vec<String>,
    /// Lookups per demand.
    weight: Vec<u64>,
    /// Per `--pod-dns-config` workload (file order): the demand of its earliest lookup, whose
    /// namespace gives the search list its figures show.
    workload_first: Vec<Option<u32>>,
    /// Computed once: the captured setting's modelled end per demand, the FQDN targets.
    baseline: std::cell::OnceCell<Vec<(End, bool)>>,
    /// Live: how each lookup ended at the target under the captured setting. The other
    /// settings are compared with it, not with the capture, so a target that answers
    /// differently from the captured server does not show as changes.
    live_baseline: std::cell::OnceCell<Vec<End>>,
    fqdn: std::cell::OnceCell<Vec<bool>>,
}

impl Replay {
    /// Whether the capture has real timestamps. Readers give lines without a time times that
    /// count up from 0 (CoreDNS >= 1.6.3 without kubectl's prefix, dnsperf files), so a capture
    /// whose lookups start before 2000 has none, and its "captured pace" means nothing.
    pub fn has_timestamps(&self) -> bool {
        const Y2000_US: u64 = 946_684_800_000_000;
        self.first_start.is_some_and(|t| t.0 >= Y2000_US)
    }

    /// Lookups the applications made (an A+AAAA pair counts once).
    pub fn application_lookups(&self) -> u64 {
        self.lookups.iter().map(|l| l.count).sum()
    }

    /// Repeat the captured lookups `n` times in all, each copy after the last (live load
    /// generation from a small capture).
    pub fn repeat(&mut self, n: u32) {
        let n = n.max(1) as u64;
        for l in &mut self.lookups {
            l.count *= n;
        }
        for w in &mut self.weight {
            *w *= n;
        }
        let (Some(first), Some(last)) = (self.timeline.first(), self.timeline.last()) else {
            return;
        };
        let period = last.start.0 - first.start.0 + 1_000_000;
        let one = self.timeline.clone();
        for k in 1..n {
            self.timeline.extend(one.iter().map(|l| TimedLookup {
                start: Timestamp(l.start.0 + k * period),
                ..*l
            }));
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
}

/// How a walk ended: the name that gave addresses, else what its last answer tells the
/// application by the rule the tracker's outcomes follow (`Outcome::of_walk`), so that the
/// captured setting replays as captured.
fn end_of(result: Option<&str>, tally: &WalkTally) -> End {
    if let Some(n) = result {
        return End::Resolved(n.into());
    }
    let Some(last) = tally.last else {
        return End::Failed("no query");
    };
    let last = match last {
        Answer::Address => Outcome::Resolved,
        Answer::NoData => Outcome::NoData,
        Answer::NxDomain => Outcome::NxDomain,
        Answer::ServFail => Outcome::ServFail,
        Answer::Refused => Outcome::Refused,
        Answer::Timeout => Outcome::Timeout,
    };
    End::Failed(match Outcome::of_walk(last, tally.nodata, tally.servfail) {
        Outcome::Resolved => "NOERROR",
        Outcome::NxDomain => "NXDOMAIN",
        Outcome::NoData => "NODATA",
        Outcome::ServFail => "SERVFAIL",
        Outcome::Refused => "REFUSED",
        Outcome::Timeout => "TIMEOUT",
        // Not made from a stub's answer.
        Outcome::Error => "ERROR",
        Outcome::Unanswered => "UNANSWERED",
        Outcome::Evicted => "EVICTED",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrackerConfig;
    use crate::event::AnswerSource;
    use crate::event::QueryEvent;
    use std::time::Duration;

    fn cluster() -> ClusterConfig {
        ClusterConfig::kubernetes("cluster.local")
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
        replay_as(&captured(), events)
    }

    fn replay_as(captured: &Captured, events: &[(&str, &str, u16, u16, u16)]) -> Replay {
        let mut c = Collector::new(captured, &tracker(), false);
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
        c.finish()
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

    /// The model forwarded an autopath query whose candidate failed (SERVFAIL), and counted
    /// the forward upstream; the proxy answers such a query SERVFAIL itself (docs/shortcut.md).
    #[test]
    fn autopath_model_forwarded_a_query_whose_candidate_failed() {
        let mut walk = GITHUB.to_vec();
        walk[1].3 = 2; // api.github.com.svc.cluster.local: SERVFAIL, glibc walks on
        let r = replay(&walk);
        let ap = r.evaluate(&setting(5, ShortcutMode::Autopath));
        // Q gets SERVFAIL and glibc walks on: svc (forwarded: the schema allows it, and it
        // fails again), then cluster.local, which autopath answers with api.github.com.
        // Upstream: svc and api.github.com only, not the expansion.
        assert_eq!((ap.queries, ap.upstream_queries), (3, 2));
        assert_eq!(ap.changed_resolutions, 0, "{:?}", ap.changes);
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
    fn walk_reported_nxdomain_when_an_earlier_candidate_was_nodata() {
        // The name exists in the namespace without an A record; every later name is NXDOMAIN.
        // glibc ends with NO_DATA: the capture's end and the model's agree on NODATA, so the
        // captured setting replays without a change.
        let r = replay(&[
            ("10.0.0.8", "mydb.default.svc.cluster.local.", 1, 0, 0),
            ("10.0.0.8", "mydb.svc.cluster.local.", 1, 3, 0),
            ("10.0.0.8", "mydb.cluster.local.", 1, 3, 0),
            ("10.0.0.8", "mydb.", 1, 3, 0),
        ]);
        assert_eq!(r.lookups.len(), 1);
        assert_eq!(r.lookups[0].end, Some(End::Failed("NODATA")));
        // The model's end for the captured setting, from the stub's walk over the answers.
        let modelled = r.evaluate_outcomes(&r.captured.setting());
        assert_eq!(modelled[0], (End::Failed("NODATA"), false));
    }

    #[test]
    fn a_musl_walk_cut_short_after_walking_past_nodata_has_no_certain_end() {
        // musl walks past A NODATA when AAAA is NXDOMAIN; the capture then ends after the svc
        // candidate. The A lookup is named nodata, but musl did not stop there: the end is
        // unknown, not NODATA.
        let musl = Captured {
            stub: Stub::Musl,
            ..captured()
        };
        let r = replay_as(
            &musl,
            &[
                ("10.0.0.10", "mydb.default.svc.cluster.local.", 1, 0, 0),
                ("10.0.0.10", "mydb.default.svc.cluster.local.", 28, 3, 0),
                ("10.0.0.10", "mydb.svc.cluster.local.", 1, 3, 0),
                ("10.0.0.10", "mydb.svc.cluster.local.", 28, 3, 0),
            ],
        );
        assert_eq!(r.lookups.len(), 1);
        assert_eq!(r.lookups[0].end, None);
        // Where musl stopped on NODATA, the end is certain.
        let r = replay_as(
            &musl,
            &[
                ("10.0.0.10", "mydb.default.svc.cluster.local.", 1, 0, 0),
                ("10.0.0.10", "mydb.default.svc.cluster.local.", 28, 0, 0),
            ],
        );
        assert_eq!(r.lookups[0].end, Some(End::Failed("NODATA")));
    }

    #[test]
    fn replay_invented_a_change_when_only_aaaa_was_nodata_on_the_way() {
        // CoreDNS answers AAAA NOERROR for cluster names (a `template` against AAAA storms):
        // `mydb.prod`'s AAAA is NODATA at the svc candidate while A is NXDOMAIN everywhere.
        // The capture reads A's lookup (NXDOMAIN); the model must too, or a setting that only
        // reorders the names (ndots:1 asks `mydb.prod.` first) shows a change that is not one.
        let mut events = Vec::new();
        for name in [
            "mydb.prod.default.svc.cluster.local.",
            "mydb.prod.svc.cluster.local.",
            "mydb.prod.cluster.local.",
            "mydb.prod.",
        ] {
            let aaaa_nodata = name == "mydb.prod.svc.cluster.local.";
            events.push(("10.0.0.9", name, 1, 3, 0));
            events.push(("10.0.0.9", name, 28, if aaaa_nodata { 0 } else { 3 }, 0));
        }
        let r = replay(&events);
        assert_eq!(r.lookups[0].end, Some(End::Failed("NXDOMAIN")));
        let one = r.evaluate(&setting(1, ShortcutMode::Off));
        assert_eq!(one.unknown_answers, 0);
        assert_eq!(one.changed_resolutions, 0, "{:?}", one.changes);
        // The same for AAAA SERVFAIL at the candidate that ndots:1 asks last: the model's end
        // is read from A's last answer, as the capture's.
        for e in events.iter_mut() {
            if e.1 == "mydb.prod.cluster.local." && e.2 == 28 {
                e.3 = 2;
            } else if e.2 == 28 {
                e.3 = 3;
            }
        }
        let r = replay(&events);
        assert_eq!(r.lookups[0].end, Some(End::Failed("NXDOMAIN")));
        let one = r.evaluate(&setting(1, ShortcutMode::Off));
        assert_eq!(one.unknown_answers, 0);
        assert_eq!(one.changed_resolutions, 0, "{:?}", one.changes);
    }

    #[test]
    fn a_walk_cut_short_has_no_certain_end_and_unknown_answers_give_possible_changes() {
        // The capture ends after the first candidate: NXDOMAIN there is not how the lookup
        // ended, so nothing can be called a certain change.
        let r = replay(&[("10.0.0.5", "web.default.svc.cluster.local.", 1, 3, 0)]);
        assert_eq!((r.lookups.len(), r.lookups[0].end.as_ref()), (1, None));
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
