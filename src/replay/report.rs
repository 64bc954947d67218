//! Per-setting figures: outcomes summed over the captured lookups, changes against the
//! captured ends, and the report types (DESIGN §5 JSON).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::Serialize;

use super::collect::add_client;
use super::{live, CapturedLookup, Demand, End, Recommendation, Replay, Setting, LIST_CAP};

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
    /// Clients whose lookups changed (a few: the lowest addresses, whatever order lookups
    /// closed in), to find them in `capture dump`.
    pub clients: Vec<String>,
}

/// Clients listed per change.
pub(super) const CHANGE_CLIENTS: usize = 3;

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
    /// What was read from the captures, as in the analyze report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<crate::amplify::report::InputCounts>,
}

/// A demand walked under one setting.
pub(super) struct Outcome1 {
    pub(super) queries: u32,
    /// Per-type lookups that sent a query (at least 1).
    pub(super) types: u8,
    pub(super) nxdomain: u32,
    pub(super) upstream: u32,
    pub(super) end: End,
    /// The walk needed an answer nobody knows.
    pub(super) uncertain: bool,
    pub(super) as_captured: bool,
    /// With `as_captured` and the `nxdomain` shortcut: which suffix slots the proxy answers.
    pub(super) local: [bool; 6],
}

impl Outcome1 {
    /// A placeholder: the lookup's captured figures are used.
    pub(super) fn as_captured(local: [bool; 6]) -> Outcome1 {
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

impl Replay {
    /// Sum outcomes (per demand, or per lookup when `per_lookup`) over the captured lookups.
    /// `baseline`: the captured setting's modelled outcome per demand (`None` when `setting`
    /// is the captured one, or live, where the captured end is the reference).
    pub(super) fn tally(
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
        // Offline: each group of alike lookups once, weighted by its count. Live: each lookup
        // in time, with its own outcome at the target.
        let rows: Box<dyn Iterator<Item = (usize, &CapturedLookup, u64, &[IpAddr])>> = if per_lookup
        {
            Box::new(self.timeline.iter().enumerate().map(|(i, t)| {
                (
                    i,
                    &self.lookups[t.group as usize],
                    1,
                    std::slice::from_ref(&t.client),
                )
            }))
        } else {
            Box::new(
                self.lookups
                    .iter()
                    .map(|l| (l.demand as usize, l, l.count, l.clients.as_slice())),
            )
        };
        for (i, l, n, clients) in rows {
            let o = &outcomes[i];
            let (q, nx, up, types) = if o.as_captured {
                r.as_captured_lookups += l.types as u64 * n;
                let up: u32 = (0..6)
                    .filter(|&i| !o.local[i])
                    .map(|i| l.suffix_queries[i])
                    .sum();
                (l.queries, l.nxdomain, up, l.types)
            } else {
                (o.queries, o.nxdomain, o.upstream, o.types)
            };
            r.lookups += types as u64 * n;
            r.queries += q as u64 * n;
            r.nxdomain += nx as u64 * n;
            r.upstream_queries += up as u64 * n;
            let d = &self.demands[l.demand as usize];
            let wf = d
                .workload
                .and_then(|w| per_workload.get_mut(w as usize))
                .map(|slot| slot.get_or_insert_with(|| self.workload_figures(setting, d)));
            if let Some(wf) = wf {
                wf.lookups += types as u64 * n;
                wf.queries += q as u64 * n;
                wf.nxdomain += nx as u64 * n;
                wf.upstream_queries += up as u64 * n;
            }
            // Per type, as the tracker counts: a pair's queries split evenly (A and AAAA go
            // out together, so they differ by at most one).
            let types = types.max(1) as u64;
            let q = q as u64;
            for k in 0..types {
                *hist
                    .entry(q / types + u64::from(k < q % types))
                    .or_default() += n;
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
                r.uncertain_lookups += n;
                continue;
            };
            if o.uncertain {
                r.uncertain_lookups += n;
            }
            if before != o.end {
                let wf = self.demands[l.demand as usize]
                    .workload
                    .and_then(|w| per_workload.get_mut(w as usize)?.as_mut());
                if let (Some(wf), false) = (wf, o.uncertain) {
                    wf.changed_resolutions += n;
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
                e.0 += n;
                for &c in clients {
                    add_client(&mut e.1, c);
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

    /// A workload's empty figures under `setting`, named from the demand of its earliest
    /// lookup (`d`, one of its demands, when that is not known).
    fn workload_figures(&self, setting: &Setting, d: &Demand) -> WorkloadFigures {
        let d = d
            .workload
            .and_then(|w| *self.workload_first.get(w as usize)?)
            .map_or(d, |id| &self.demands[id as usize]);
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
