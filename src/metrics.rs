//! Metric names, buckets and the recorder (DESIGN §4). Names are constants here and nowhere
//! else; histogram buckets are set in `install`. Request/response/cache series mirror CoreDNS's
//! names and labels so NodeLocal DNSCache dashboards port directly.
//!
//! The hot path resolves a labelled handle once per thread and label set (`cached_counter`),
//! so a query costs an atomic add, not a registry lookup.

use hashbrown::HashMap;
use std::cell::RefCell;
use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const DNS_REQUESTS: &str = "ndots_dns_requests_total";
pub const DNS_RESPONSES: &str = "ndots_dns_responses_total";
pub const DNS_REQUEST_DURATION: &str = "ndots_dns_request_duration_seconds";
pub const CACHE_ENTRIES: &str = "ndots_cache_entries";
pub const CACHE_HITS: &str = "ndots_cache_hits_total";
pub const CACHE_MISSES: &str = "ndots_cache_misses_total";
pub const CACHE_EVICTIONS: &str = "ndots_cache_evictions_total";
pub const CACHE_SERVED_STALE: &str = "ndots_cache_served_stale_total";
pub const CACHE_PREFETCH: &str = "ndots_cache_prefetch_total";
pub const UPSTREAM_REQUESTS: &str = "ndots_upstream_requests_total";
pub const UPSTREAM_REQUEST_DURATION: &str = "ndots_upstream_request_duration_seconds";
pub const UPSTREAM_FAILURES: &str = "ndots_upstream_failures_total";
pub const UPSTREAM_HEALTHY: &str = "ndots_upstream_healthy";
pub const LOOKUP_QUERIES: &str = "ndots_lookup_queries";
pub const LOOKUP_DURATION: &str = "ndots_lookup_duration_seconds";
pub const LOOKUPS: &str = "ndots_lookups_total";
pub const WASTED_QUERIES: &str = "ndots_wasted_queries_total";
pub const SHORTCUT_ANSWERS: &str = "ndots_shortcut_answers_total";
pub const SHADOW_DISAGREEMENTS: &str = "ndots_shadow_disagreements_total";
pub const TRACKER_EVICTIONS: &str = "ndots_tracker_evictions_total";
pub const TRACKER_DROPPED_EVENTS: &str = "ndots_tracker_dropped_events_total";
pub const BUILD_INFO: &str = "ndots_build_info";
pub const CONFIG_RELOADS: &str = "ndots_config_reloads_total";
pub const MALFORMED_QUERIES: &str = "ndots_malformed_queries_total";
/// Not in the DESIGN list: queries refused or dropped because the proxy was at its in-flight
/// limit (DESIGN §3 "bounded memory under any load").
pub const OVERLOAD_DROPS: &str = "ndots_overload_drops_total";
pub const UDP_RECEIVE_DROPS: &str = "ndots_udp_receive_drops_total";

/// Not in the DESIGN list: queries refused by policy (clients outside `allow`).
pub const REFUSED_QUERIES: &str = "ndots_refused_queries_total";

/// Every metric this crate exports, with its type and help text (the docs are checked
/// against this list).
pub const ALL: &[(&str, &str, &str)] = &[
    (DNS_REQUESTS, "counter", "DNS queries received, by listener, upstream zone, transport, address family and query type."),
    (DNS_RESPONSES, "counter", "DNS responses sent, by listener, zone, response code and source (cache, upstream, shortcut, stale)."),
    (DNS_REQUEST_DURATION, "histogram", "Time from receiving a query to sending its answer."),
    (CACHE_ENTRIES, "gauge", "Entries in the cache, by type (success, denial)."),
    (CACHE_HITS, "counter", "Cache hits, by type (success, denial)."),
    (CACHE_MISSES, "counter", "Cache misses."),
    (CACHE_EVICTIONS, "counter", "Entries evicted to stay within capacity, by type."),
    (CACHE_SERVED_STALE, "counter", "Expired answers served because upstreams failed (RFC 8767)."),
    (CACHE_PREFETCH, "counter", "Popular entries refreshed before expiry."),
    (UPSTREAM_REQUESTS, "counter", "Queries sent to upstream servers, by server and transport."),
    (UPSTREAM_REQUEST_DURATION, "histogram", "Upstream round-trip time, by server and response code."),
    (UPSTREAM_FAILURES, "counter", "Upstream attempts that failed, by server and reason."),
    (UPSTREAM_HEALTHY, "gauge", "1 while the server answers, 0 after 3 failures in a row until it answers a query or probe again."),
    (LOOKUP_QUERIES, "histogram", "Queries per lookup (search-path walk), by query type."),
    (LOOKUP_DURATION, "histogram", "Time from the first query of a walk to its final answer, by query type."),
    (LOOKUPS, "counter", "Lookups (walks) ended, by query type and outcome."),
    (WASTED_QUERIES, "counter", "Queries for search-list candidates other than the one that ended the walk, by suffix."),
    (SHORTCUT_ANSWERS, "counter", "Expansions answered locally, by mode and reason (zone, schema)."),
    (SHADOW_DISAGREEMENTS, "counter", "Shadow mode: upstream answers that differ from what the shortcut would have said."),
    (TRACKER_EVICTIONS, "counter", "Open walks evicted to stay within tracker.max_open_walks."),
    (TRACKER_DROPPED_EVENTS, "counter", "Query events the tracker thread could not keep up with and dropped (the queries were still answered; the amplification figures miss them)."),
    (BUILD_INFO, "gauge", "Always 1; the version label says which build runs."),
    (CONFIG_RELOADS, "counter", "Configuration reloads, by result (success, failure)."),
    (MALFORMED_QUERIES, "counter", "Packets that could not be read as a DNS query."),
    (REFUSED_QUERIES, "counter", "Queries refused by policy, by reason (client: outside `allow`)."),
    (OVERLOAD_DROPS, "counter", "Queries answered SERVFAIL or refused because a limit was reached, by limit."),
    (UDP_RECEIVE_DROPS, "counter", "Queries the kernel dropped because a UDP listener's receive queue was full: overload that never reached the proxy (from /proc/net/udp)."),
];

/// DESIGN §4: request duration buckets, 0.00025 s doubling to 8 s: sixteen buckets ending at
/// 8.192 s, the same as CoreDNS's `ExponentialBuckets(0.00025, 2, 16)` so dashboards port.
pub fn duration_buckets() -> Vec<f64> {
    (0..16).map(|i| 0.00025 * f64::from(1u32 << i)).collect()
}

/// DESIGN §4: queries-per-lookup buckets.
pub const LOOKUP_QUERY_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the Prometheus recorder once per process and return its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("duration_seconds".into()),
                    &duration_buckets(),
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(LOOKUP_QUERIES.into()),
                        LOOKUP_QUERY_BUCKETS,
                    )
                })
                .expect("static bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests that embed the proxy twice; the first wins.
            let _ = metrics::set_global_recorder(recorder);
            for (name, _, help) in ALL {
                metrics::describe_counter!(*name, *help);
            }
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

thread_local! {
    static COUNTERS: RefCell<HashMap<u64, Counter>> = RefCell::new(HashMap::new());
    static HISTOGRAMS: RefCell<HashMap<u64, Histogram>> = RefCell::new(HashMap::new());
}

/// A counter handle memoised per thread under `key` (a caller-computed id of the label set).
#[inline]
pub fn cached_counter<F: FnOnce() -> Counter>(key: u64, make: F) -> CounterRef<F> {
    CounterRef {
        key,
        make: Some(make),
    }
}

/// A memoised counter about to be incremented; see `cached_counter`.
pub struct CounterRef<F: FnOnce() -> Counter> {
    key: u64,
    make: Option<F>,
}

impl<F: FnOnce() -> Counter> CounterRef<F> {
    /// Increment in place, without cloning the handle out of the per-thread map.
    #[inline]
    pub fn increment(mut self, n: u64) {
        let make = self.make.take().expect("used once");
        COUNTERS.with(|m| {
            m.borrow_mut()
                .entry(self.key)
                .or_insert_with(make)
                .increment(n)
        })
    }
}

/// A histogram handle memoised per thread under `key`.
#[inline]
pub fn cached_histogram(key: u64, make: impl FnOnce() -> Histogram) -> Histogram {
    HISTOGRAMS.with(|m| m.borrow_mut().entry(key).or_insert_with(make).clone())
}

/// Cheap key for a label set made of small integers and a name tag.
#[inline]
pub fn label_key(tag: u8, parts: &[u64]) -> u64 {
    let mut k = tag as u64;
    for p in parts {
        k = k
            .wrapping_mul(0x100000001b3)
            .wrapping_add(*p)
            .rotate_left(17);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_double_from_quarter_ms_to_8s() {
        let b = duration_buckets();
        assert_eq!(b.first(), Some(&0.00025));
        assert_eq!(b.len(), 16);
        assert!((b.last().unwrap() - 8.192).abs() < 1e-9);
        assert!(b.windows(2).all(|w| (w[1] / w[0] - 2.0).abs() < 1e-9));
    }
}
