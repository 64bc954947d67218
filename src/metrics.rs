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
/// Not in the DESIGN list: node-local setup something else removed and the proxy put back
/// (issue 17): a firewall daemon or another cache fighting over the node shows here.
pub const NODE_LOCAL_RESTORES: &str = "ndots_node_local_restores_total";

/// What a metric measures, for the exposition's HELP line and the generated reference
/// (docs/reference/metrics.md, checked against this list by `tests/docs.rs`).
#[derive(Clone, Copy, Debug)]
pub struct MetricInfo {
    pub name: &'static str,
    /// Prometheus type: counter, gauge or histogram.
    pub kind: &'static str,
    /// Label names, each with what its values are.
    pub labels: &'static [(&'static str, &'static str)],
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: &'static str,
    labels: &'static [(&'static str, &'static str)],
    help: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        labels,
        help,
    }
}

const SERVER: (&str, &str) = ("server", "the first listen address, `dns://IP:PORT`");
const ZONE: (&str, &str) = (
    "zone",
    "the upstream zone the name routes to (`.` for the rest)",
);
const CACHE_TYPE: (&str, &str) = (
    "type",
    "`success` (positive answers) or `denial` (NXDOMAIN, NODATA)",
);
const QTYPE: (&str, &str) = ("type", "query type: `A`, `AAAA`, ...");
const TO: (&str, &str) = ("to", "the upstream server, `IP:PORT`");

/// Every metric this crate exports, with its type, labels and help text.
pub const ALL: &[MetricInfo] = &[
    metric(DNS_REQUESTS, "counter", &[SERVER, ZONE, ("proto", "`udp` or `tcp`"), ("family", "`1` (IPv4) or `2` (IPv6) client"), QTYPE], "DNS queries received, by listener, upstream zone, transport, address family and query type."),
    metric(DNS_RESPONSES, "counter", &[SERVER, ZONE, ("rcode", "response code: `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ..."), ("source", "`cache`, `upstream`, `shortcut`, `stale` or `local` (refusals, FORMERR)")], "DNS responses sent, by listener, zone, response code and source."),
    metric(DNS_REQUEST_DURATION, "histogram", &[SERVER, ZONE], "Time from receiving a query to sending its answer (buckets 0.00025 s doubling to 8.192 s)."),
    metric(CACHE_ENTRIES, "gauge", &[CACHE_TYPE], "Entries in the cache, by type (set at each scrape)."),
    metric(CACHE_HITS, "counter", &[CACHE_TYPE], "Cache hits, by type."),
    metric(CACHE_MISSES, "counter", &[], "Cache misses."),
    metric(CACHE_EVICTIONS, "counter", &[CACHE_TYPE], "Entries evicted to stay within cache.capacity, by type."),
    metric(CACHE_SERVED_STALE, "counter", &[], "Expired answers served because upstreams failed (RFC 8767, cache.serve_stale)."),
    metric(CACHE_PREFETCH, "counter", &[], "Popular entries refreshed before expiry (cache.prefetch)."),
    metric(UPSTREAM_REQUESTS, "counter", &[TO, ("proto", "`udp` or `tcp`")], "Queries sent to upstream servers, by server and transport."),
    metric(UPSTREAM_REQUEST_DURATION, "histogram", &[TO, ("rcode", "the upstream's response code")], "Upstream round-trip time, by server and response code."),
    metric(UPSTREAM_FAILURES, "counter", &[TO, ("reason", "`timeout`, `io`, `malformed`, `closed`, `all_failed`; replies rejected (RFC 5452): `unexpected_id`, `question_mismatch`")], "Upstream attempts that failed, by server and reason."),
    metric(UPSTREAM_HEALTHY, "gauge", &[TO], "1 while the server answers, 0 after 3 failures in a row until it answers a query or a health probe again (set at each scrape)."),
    metric(LOOKUP_QUERIES, "histogram", &[QTYPE], "Queries per lookup (search-path walk), by query type (buckets 1,2,3,4,5,6,8,10,12,16)."),
    metric(LOOKUP_DURATION, "histogram", &[QTYPE], "Time from the first query of a walk to its final answer, by query type."),
    metric(LOOKUPS, "counter", &[QTYPE, ("outcome", "`resolved`, `nxdomain`, `nodata`, `servfail`, `refused`, `error`, `timeout`, `unanswered`, `evicted`")], "Lookups (walks) ended, by query type and outcome."),
    metric(WASTED_QUERIES, "counter", &[("suffix", "the search suffix the wasted query carried: `namespace`, `svc`, `cluster`, `node`, `other`, `absolute`")], "Queries for search-list candidates other than the one that ended the walk, by suffix."),
    metric(SHORTCUT_ANSWERS, "counter", &[("mode", "`nxdomain` or `autopath`"), ("reason", "`zone` (shortcut.zones) or `schema` (Kubernetes schema)")], "Expansions answered locally, by mode and reason."),
    metric(SHADOW_DISAGREEMENTS, "counter", &[], "Shadow mode: upstream answers that differ from what the shortcut would have said."),
    metric(TRACKER_EVICTIONS, "counter", &[], "Open walks evicted to stay within tracker.max_open_walks."),
    metric(TRACKER_DROPPED_EVENTS, "counter", &[], "Query events the tracker thread could not keep up with and dropped: the queries were answered, the amplification figures miss them (set at each scrape)."),
    metric(BUILD_INFO, "gauge", &[("version", "the crate version"), ("commit", "the git commit it was built from, or `unknown`")], "Always 1; the labels say which build runs."),
    metric(CONFIG_RELOADS, "counter", &[("result", "`success` or `failure` (the old configuration keeps serving)")], "Configuration reloads (SIGHUP or a changed file), by result."),
    metric(MALFORMED_QUERIES, "counter", &[], "Packets that could not be read as a DNS query (answered FORMERR or dropped)."),
    metric(REFUSED_QUERIES, "counter", &[("reason", "`client`: the client is outside `allow`")], "Queries refused by policy, by reason."),
    metric(OVERLOAD_DROPS, "counter", &[("limit", "`max_inflight` or `max_tcp_connections` (server section)")], "Queries answered SERVFAIL or connections refused because a limit was reached, by limit."),
    metric(UDP_RECEIVE_DROPS, "counter", &[], "Queries the kernel dropped because a UDP listener's receive queue was full: overload that never reached the proxy (from /proc/net/udp, set at each scrape)."),
    metric(NODE_LOCAL_RESTORES, "counter", &[("what", "`link`, `address`, `notrack` (the NOTRACK table) or `firewall` (the ACCEPT rules)")], "Node-local setup found removed and put back by the 2 s check, by what (node_local)."),
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
            for m in ALL {
                match m.kind {
                    "gauge" => metrics::describe_gauge!(m.name, m.help),
                    "histogram" => metrics::describe_histogram!(m.name, m.help),
                    _ => metrics::describe_counter!(m.name, m.help),
                }
            }
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("NDOTS_GIT_COMMIT")).set(1.0);
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
