//! `ndots analyze --pod-dns-config FILE`: the advice per workload. The report's figures stay
//! those of every client; besides, each workload's clients (and the clients no workload lists)
//! are analysed apart, so each workload is advised from its own lookups with its own pod DNS
//! config, and the cluster-wide ndots item covers only the clients no workload lists (a
//! workload whose dnsConfig sets ndots is never advised a change from ndots:5 it does not run).

use super::advice::{self, AdviceItem};
use super::{Analyzer, Report};
use crate::config::{ClusterConfig, TrackerConfig};
use crate::event::QueryEvent;
use crate::search::workloads::Workloads;

pub struct ByWorkload {
    workloads: Workloads,
    /// The file's name as given, for the `ndots simulate` command in the caveats.
    file: String,
    each: Vec<Analyzer>,
    rest: Analyzer,
    cluster: ClusterConfig,
}

impl ByWorkload {
    pub fn new(
        workloads: Workloads,
        file: &str,
        cluster: &ClusterConfig,
        cfg: &TrackerConfig,
    ) -> Self {
        ByWorkload {
            each: workloads
                .list
                .iter()
                .map(|_| Analyzer::new(cluster, cfg))
                .collect(),
            rest: Analyzer::new(cluster, cfg),
            workloads,
            file: file.to_string(),
            cluster: cluster.clone(),
        }
    }

    pub fn observe(&mut self, ev: &QueryEvent) {
        match self.workloads.find(ev.client) {
            Some(i) => self.each[i].observe(ev),
            None => self.rest.observe(ev),
        }
    }

    /// `report`'s advice with the ndots items replaced: the cluster-wide one computed from
    /// the clients no workload lists, then one per workload (in file order).
    pub fn advice(self, report: &Report, search_from: &str) -> Vec<AdviceItem> {
        let context = |mut r: Report| {
            r.stubs = report.stubs.clone();
            r.ndots = report.ndots;
            r.configured_zones = report.configured_zones.clone();
            r.set_search(&self.cluster, search_from);
            r
        };
        let mut items: Vec<AdviceItem> = report
            .advice
            .iter()
            .filter(|a| !matches!(a, AdviceItem::Ndots(_)))
            .cloned()
            .collect();
        let rest = context(self.rest.finish(&report.source));
        items.extend(
            rest.advice
                .into_iter()
                .filter(|a| matches!(a, AdviceItem::Ndots(_))),
        );
        for (w, a) in self.workloads.list.iter().zip(self.each) {
            let r = context(a.finish(&report.source));
            items.extend(
                advice::workload_ndots_advice(&r, w, &self.cluster, &self.file)
                    .into_iter()
                    .map(AdviceItem::Ndots),
            );
        }
        // The order `compute` gives: FQDN names, ndots, shortcut zones.
        items.sort_by_key(|a| match a {
            AdviceItem::Fqdn { .. } => 0,
            AdviceItem::Ndots(_) => 1,
            AdviceItem::ShortcutZones { .. } => 2,
        });
        items
    }
}
