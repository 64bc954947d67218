//! Offline evaluation: each demand walked through the stub model with answers from the
//! capture's table, the proxy's shortcut modelled in front.

use std::collections::BTreeMap;

use super::report::Outcome1;
use super::{end_of, Demand, End, Knowledge, Replay, Setting, SettingReport, LIST_CAP};
use crate::config::ShortcutMode;
use crate::search::shortcut::ShortcutPolicy;
use crate::search::{Answer, SearchShape, Walker};

impl Replay {
    /// Walk demand `d` under `setting` with `answer` deciding each query (offline: the table).
    pub(super) fn walk_demand(
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
        let tally = walker.tally();
        let walk = walker.finish();
        let mut end = end_of(walk.result.as_deref(), &tally);
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
    pub(super) fn evaluate_outcomes(&self, setting: &Setting) -> Vec<(End, bool)> {
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
            // A candidate that failed: the proxy answers SERVFAIL for the query, never
            // forwarding it (its NXDOMAIN would split A from AAAA; docs/shortcut.md).
            _ => return (Answer::ServFail, None),
        }
    }
    (Answer::NxDomain, None)
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

/// Query types the walk sent (1 or 2), at least 1.
fn types_sent(w: &crate::search::Walk) -> u8 {
    let first = w.queries.first().map(|q| q.qtype);
    1 + w.queries.iter().any(|q| Some(q.qtype) != first) as u8
}
