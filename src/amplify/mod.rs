//! Amplification tracking (DESIGN §4): the tracker that groups queries into walks and lookups,
//! the mergeable report model, and the live service the proxy feeds.
//!
//! Data flow: `QueryEvent` -> [`WalkTracker::observe`] -> [`Lookup`] -> [`Aggregate`] (or the
//! windowed ring of aggregates in the live [`Tracker`]) -> [`Report`] -> `render`.
//! The same `WalkTracker` runs live and offline, with event time as its clock, so a capture of
//! some traffic and the proxy that served it give the same report.

pub mod advice;
mod at_once;
pub mod by_workload;
pub mod report;
pub mod service;
pub mod walk;

pub use report::{Aggregate, Report, Windowed};
pub use service::{Tracker, WireBatch, EVENT_BATCH};
pub use walk::{BaseName, Lookup, Outcome, SuffixSlot, WalkTracker};

use crate::config::{ClusterConfig, TrackerConfig};
use crate::event::QueryEvent;
use crate::search::SearchShape;

/// Offline analysis: feed events in capture order, then take the report (`ndots analyze`).
pub struct Analyzer {
    walks: WalkTracker,
    agg: Aggregate,
    cluster: ClusterConfig,
}

impl Analyzer {
    pub fn new(cluster: &ClusterConfig, cfg: &TrackerConfig) -> Self {
        Analyzer {
            walks: WalkTracker::new(SearchShape::new(cluster), cfg).for_captures(),
            agg: Aggregate::new(report::TOTAL_TOP_CAP),
            cluster: cluster.clone(),
        }
    }

    pub fn observe(&mut self, ev: &QueryEvent) {
        self.walks.observe(ev);
        for l in self.walks.drain() {
            self.agg.add(&l);
        }
    }

    /// Walks evicted so far to stay within `max_open_walks`.
    pub fn evictions(&self) -> u64 {
        self.walks.evictions()
    }

    /// Close the walks still open and report; `window_seconds` is the span of the events.
    /// The search list counts as assumed: [`Report::set_search`] says otherwise.
    pub fn finish(mut self, source: &str) -> Report {
        self.walks.finish();
        for l in self.walks.drain() {
            self.agg.add(&l);
        }
        let mut r = self.agg.to_report(source, self.agg.span_seconds());
        r.set_search(&self.cluster, advice::SEARCH_ASSUMED);
        r
    }
}

#[cfg(test)]
mod tests;
