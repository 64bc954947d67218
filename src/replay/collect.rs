//! Collection: capture events through the walk tracker into lookups, the answer table, and
//! the lookups reduced to demands (A+AAAA pairs joined, the name the application asked).

use std::collections::HashMap;

use super::{AnswerTable, Captured, CapturedLookup, Demand, End, Replay};
use crate::amplify::{Lookup, Outcome, WalkTracker};
use crate::config::{ClusterConfig, TrackerConfig};
use crate::event::QueryEvent;
use crate::search::{SearchShape, QTYPE_A, QTYPE_AAAA};

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
            answers: AnswerTable::new(&cluster.domain),
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
            let demand = Demand {
                name: app_name(&pair[0], captured).into(),
                namespace: pair
                    .iter()
                    .find_map(|l| l.namespace.as_deref().map(Into::into)),
                qtype: if pair.len() == 2 { 0 } else { pair[0].qtype },
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
}

/// The name the application asked (see the module docs).
fn app_name(l: &Lookup, captured: &Captured) -> String {
    let bare = l.base.trim_end_matches('.');
    let only_absolute =
        l.suffix_queries[crate::amplify::SuffixSlot::Absolute as usize] == l.queries;
    let dots = bare.matches('.').count() as u32;
    if only_absolute && dots < captured.ndots {
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
    let plan = setting.stub.candidates(
        &demand.name,
        &Replay::resolver(&setting, demand.namespace.as_deref()),
    );
    let on_last = last_name(l).is_some_and(|n| plan.last() == Some(&n));
    match l.outcome {
        Outcome::NxDomain if on_last => Some(End::Failed("NXDOMAIN")),
        Outcome::NoData if on_last || captured.stub.is_musl() => Some(End::Failed("NODATA")),
        _ => None,
    }
}
