//! Metric names, buckets and the recorder (DESIGN §4, §9). Names are constants here and nowhere
//! else; histogram buckets are set in `install`. Every series in `ALL` exists from the start
//! (`preregister`: counters at 0 for their known label values), so `rate()` sees the first
//! increment and "must stay 0" can be checked. With `metrics.coredns_names` the same figures
//! are also exported under CoreDNS's names and labels (`COREDNS`), for NodeLocal DNSCache
//! dashboards and the coredns-mixin alerts as they are.
//!
//! The hot path resolves a labelled handle once per thread and label set (`cached_counter`),
//! so a query costs an atomic add, not a registry lookup.

use hashbrown::HashMap;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
pub const UPSTREAM_TCP_REPLACED: &str = "ndots_upstream_tcp_replaced_total";
pub const UPSTREAM_UDP_REPLACED: &str = "ndots_upstream_udp_replaced_total";
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
pub const UDP_SEGMENTED_SENDS: &str = "ndots_udp_segmented_sends_total";
pub const FORWARDING_LOOP: &str = "ndots_forwarding_loop";
pub const FOREIGN_LISTENERS: &str = "ndots_foreign_listeners";

/// `ndots collect` (DESIGN §9 "dnstap"): the Frame Streams receiver.
pub const COLLECT_CONNECTIONS: &str = "ndots_collect_connections";
pub const COLLECT_SESSIONS: &str = "ndots_collect_sessions_total";
pub const COLLECT_FRAMES: &str = "ndots_collect_frames_total";
pub const COLLECT_MALFORMED: &str = "ndots_collect_malformed_frames_total";

/// Fleet figures (`ndots report --prometheus`): what the report has and the DESIGN §4 series
/// do not carry.
pub const SEARCH_QUERIES: &str = "ndots_search_queries_total";
pub const WASTED_QUERIES_BY_TYPE: &str = "ndots_wasted_queries_by_type_total";
pub const NAMESPACE_LOOKUPS: &str = "ndots_namespace_lookups_total";
pub const NAMESPACE_QUERIES: &str = "ndots_namespace_queries_total";
pub const NAMESPACE_WASTED: &str = "ndots_namespace_wasted_queries_total";

/// The proxy's dnstap output (`dnstap.output`).
pub const DNSTAP_MESSAGES: &str = "ndots_dnstap_messages_total";
/// DESIGN §9 "Faults": the memory budget (`server.memory_limit`, `crate::budget`).
pub const MEMORY_LIMIT: &str = "ndots_memory_limit_bytes";
pub const MEMORY_SHARE: &str = "ndots_memory_share_bytes";
pub const MEMORY_USED: &str = "ndots_memory_used_bytes";
pub const MEMORY_REFUSALS: &str = "ndots_memory_refusals_total";
/// Events of walks the tracker shed whole because it could not keep up (issue 14).
pub const TRACKER_SHED_EVENTS: &str = "ndots_tracker_shed_events_total";

/// Not in the DESIGN list: queries refused by policy (clients outside `allow`).
pub const REFUSED_QUERIES: &str = "ndots_refused_queries_total";
/// Not in the DESIGN list: node-local setup something else removed and the proxy put back
/// (issue 17): a firewall daemon or another cache fighting over the node shows here.
pub const NODE_LOCAL_RESTORES: &str = "ndots_node_local_restores_total";

// The process, under the names every Prometheus client library uses (read from /proc at each
// scrape).
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
pub const PROCESS_THREADS: &str = "process_threads";

// CoreDNS's names (plugin/metrics, plugin/cache, plugin/forward), exported only with
// `metrics.coredns_names: true`.
pub const COREDNS_REQUESTS: &str = "coredns_dns_requests_total";
pub const COREDNS_RESPONSES: &str = "coredns_dns_responses_total";
pub const COREDNS_REQUEST_DURATION: &str = "coredns_dns_request_duration_seconds";
pub const COREDNS_REQUEST_SIZE: &str = "coredns_dns_request_size_bytes";
pub const COREDNS_RESPONSE_SIZE: &str = "coredns_dns_response_size_bytes";
pub const COREDNS_CACHE_ENTRIES: &str = "coredns_cache_entries";
pub const COREDNS_CACHE_HITS: &str = "coredns_cache_hits_total";
pub const COREDNS_CACHE_MISSES: &str = "coredns_cache_misses_total";
pub const COREDNS_FORWARD_REQUESTS: &str = "coredns_forward_requests_total";
pub const COREDNS_FORWARD_RESPONSES: &str = "coredns_forward_responses_total";
pub const COREDNS_FORWARD_DURATION: &str = "coredns_forward_request_duration_seconds";
pub const COREDNS_FORWARD_HEALTHCHECK_FAILURES: &str = "coredns_forward_healthcheck_failures_total";
pub const COREDNS_FORWARD_HEALTHCHECK_BROKEN: &str = "coredns_forward_healthcheck_broken_total";

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
const QTYPE: (&str, &str) = (
    "type",
    "query type: `A`, `AAAA`, ... (the types CoreDNS monitors; any other is `other`)",
);
const NAMESPACE: (&str, &str) = ("namespace", "the namespace from the `<ns>.svc` search suffix; the first `tracker.namespace_series` (default 50) seen have their own, later ones `other`, unknown ones `unknown`");
const TO: (&str, &str) = ("to", "the upstream server, `IP:PORT`");
const SOURCE: (&str, &str) = (
    "source",
    "`cache`, `upstream` (with the SERVFAIL for upstreams that did not answer), `shortcut`, `stale` or `local` (REFUSED, NOTIMP, BADVERS made by the proxy, and the SERVFAIL for a query shed by `max_inflight` or `memory_limit`)",
);
const PROTO: (&str, &str) = ("proto", "`udp` or `tcp`");
const RCODE: (&str, &str) = (
    "rcode",
    "response code: `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...",
);
const MEMORY_PART: (&str, &str) = (
    "part",
    "`cache`, `waiting` (queries waiting on upstreams), `tcp` (client connections), `tracker_queue`, `tracker_walks` (open walks and the table of lookups of cached answers asked again)",
);

/// Every metric this crate exports, with its type, labels and help text.
pub const ALL: &[MetricInfo] = &[
    metric(DNS_REQUESTS, "counter", &[SERVER, ZONE, ("proto", "`udp` or `tcp`"), ("family", "`1` (IPv4) or `2` (IPv6) client"), QTYPE], "DNS queries received, by listener, upstream zone, transport, address family and query type."),
    metric(DNS_RESPONSES, "counter", &[SERVER, ZONE, RCODE, SOURCE], "DNS responses sent, by listener, zone, response code and source."),
    metric(DNS_REQUEST_DURATION, "histogram", &[SERVER, ZONE, SOURCE, QTYPE], "Time from receiving a query to sending its answer, for every answer whatever its source (buckets 0.00025 s doubling to 8.192 s): its count equals the responses sent."),
    metric(CACHE_ENTRIES, "gauge", &[CACHE_TYPE], "Entries in the cache, by type (set at each scrape)."),
    metric(CACHE_HITS, "counter", &[CACHE_TYPE], "Cache hits, by type."),
    metric(CACHE_MISSES, "counter", &[], "Cache misses."),
    metric(CACHE_EVICTIONS, "counter", &[CACHE_TYPE], "Entries evicted to stay within cache.capacity, by type."),
    metric(CACHE_SERVED_STALE, "counter", &[("reason", "`no_answer` (timeouts, connection errors), `servfail` or `refused` (every upstream said so), `client_timer` (no upstream answer within cache.stale_after), `overload` (server.max_inflight), `memory` (the waiting share of server.memory_limit)")], "Expired answers served instead of waiting or failing (RFC 8767, cache.serve_stale), by reason."),
    metric(CACHE_PREFETCH, "counter", &[], "Popular entries refreshed before expiry (cache.prefetch)."),
    metric(UPSTREAM_REQUESTS, "counter", &[TO, ("proto", "`udp` or `tcp`")], "Queries sent to upstream servers, by server and transport; an attempt sent again over UDP (unanswered for the server's usual round trip) is counted again; a query sent again on another TCP connection of the same server (the server closed the one it was on) is counted once."),
    metric(UPSTREAM_REQUEST_DURATION, "histogram", &[TO, ("rcode", "the upstream's response code")], "Upstream round-trip time of the replies used, by server and response code (an attempt overtaken by its own resend is not in it: a server's slow tail shows in `ndots_upstream_failures_total{reason=\"overtaken\"}`)."),
    metric(UPSTREAM_FAILURES, "counter", &[TO, ("reason", "`timeout`, `io`, `malformed`, `closed` (the connection closed; over UDP, the server's port unreachable), `backoff` (TCP reconnect backing off after failed connects), `busy` (every TCP query slot to the server taken for the whole timeout: not sent, the server's health untouched), `overtaken` (still unanswered when another attempt of the same query, sent again to the same server after its usual round trip, was answered: abandoned, not against the server's health; its late reply is taken quietly, not counted as `unexpected_id`), `all_failed`; replies that answered the query but are not used, the attempt failed: `opcode_mismatch` (RFC 1035 §4.1.1), `truncated` (TC over TCP), `extended_rcode` (an extended RCODE above BADVERS: TSIG, TKEY, cookie, unassigned); replies rejected (RFC 5452): `unexpected_id`, `question_mismatch`, counted per reply (a rejected reply may come before the accepted one, or after its query timed out: not a share of requests)")], "Upstream attempts that failed (health probes included), and upstream replies rejected, by server and reason."),
    metric(UPSTREAM_TCP_REPLACED, "counter", &[TO], "Upstream TCP connections closed because a reply on them timed out; the next query opens a fresh one."),
    metric(UPSTREAM_UDP_REPLACED, "counter", &[TO], "Upstream UDP sockets replaced because 4 queries in a row went unanswered on them while the server answered on its other sockets (behind a Service IP, a source port whose flow kube-proxy mapped to an endpoint that is gone); the next query opens a fresh one (a new source port, a new flow). Growing while the server stays healthy: an endpoint behind it is down."),
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
    metric(MALFORMED_QUERIES, "counter", &[], "Packets that could not be read as a DNS query (answered FORMERR or dropped), and queries whose OPT breaks RFC 6891 (several, owned by a name other than the root, outside the additional section: answered FORMERR)."),
    metric(REFUSED_QUERIES, "counter", &[("reason", "`client`: the client is outside `allow`")], "Queries refused by policy, by reason."),
    metric(OVERLOAD_DROPS, "counter", &[("limit", "`max_inflight`, `max_tcp_connections` or `memory_limit` (server section); `tcp_client_buffer` (a TCP client's unread answers passed 256 KiB: connection closed); `admin_connections` (64 admin connections at once)")], "Queries answered SERVFAIL or connections refused or closed because a limit was reached, by limit."),
    metric(COLLECT_CONNECTIONS, "gauge", &[], "ndots collect: dnstap sender connections open (set at each scrape)."),
    metric(COLLECT_SESSIONS, "counter", &[("result", "`ok` (STOP received), `closed` (closed without STOP), `error` (framing or handshake error), `refused` (over the connection limit)")], "ndots collect: Frame Streams sessions ended, by how (set at each scrape)."),
    metric(COLLECT_FRAMES, "counter", &[], "ndots collect: dnstap data frames received (set at each scrape)."),
    metric(COLLECT_MALFORMED, "counter", &[], "ndots collect: data frames that were not a readable dnstap message, counted and skipped (set at each scrape)."),
    metric(SEARCH_QUERIES, "counter", &[("suffix", "the search suffix the query carried: `namespace`, `svc`, `cluster`, `node`, `other`, `absolute`")], "Queries of ended lookups by the search suffix they carried (the report's by_suffix)."),
    metric(WASTED_QUERIES_BY_TYPE, "counter", &[QTYPE], "Wasted queries of ended lookups, by query type (the report's by_type wasted_queries)."),
    metric(NAMESPACE_LOOKUPS, "counter", &[NAMESPACE], "Lookups ended, by the client's namespace (bounded: tracker.namespace_series)."),
    metric(NAMESPACE_QUERIES, "counter", &[NAMESPACE], "Queries of ended lookups, by the client's namespace (bounded: tracker.namespace_series)."),
    metric(NAMESPACE_WASTED, "counter", &[NAMESPACE], "Wasted queries of ended lookups, by the client's namespace (bounded: tracker.namespace_series)."),
    metric(DNSTAP_MESSAGES, "counter", &[("result", "`written`, or `dropped` (the queue was full or no receiver was connected; answers never wait for dnstap)")], "dnstap messages of the proxy's own traffic (dnstap.output), by result."),
    metric(MEMORY_LIMIT, "gauge", &[], "server.memory_limit in bytes: the budget shared by the parts below (set at each scrape)."),
    metric(MEMORY_SHARE, "gauge", &[MEMORY_PART], "The bytes each part may hold: its share of server.memory_limit (set at each scrape)."),
    metric(MEMORY_USED, "gauge", &[MEMORY_PART], "Bytes charged to each part of the memory budget now (estimates of what it holds, set at each scrape)."),
    metric(MEMORY_REFUSALS, "counter", &[("reason", "the part that was full: `cache` (answer not stored), `waiting` (query answered stale or SERVFAIL at once), `tcp` (connection closed), `tracker_queue` (events dropped), `tracker_walks` (oldest walk evicted)")], "Things refused because their part of the memory budget was full, by part (set at each scrape)."),
    metric(TRACKER_SHED_EVENTS, "counter", &[], "Query events of walks the tracker left out whole because it was behind: those walks are missing from the amplification figures, the others are counted whole (also `shed_events` in /report; set at each scrape)."),
    metric(FORWARDING_LOOP, "gauge", &[], "1 while a forwarding loop stands: a probe query sent upstream came back to this proxy (checked at start, on reload, and every 30 s while looping); /readyz is 503 meanwhile."),
    metric(FOREIGN_LISTENERS, "gauge", &[("listener", "`dns udp ADDR`, `dns tcp ADDR` or `admin ADDR`")], "Sockets of other processes bound to one of our listen addresses (SO_REUSEPORT lets them in silently): another proxy splits queries, probes and scrapes with this one (read from /proc/net every 5 s)."),
    metric(UDP_RECEIVE_DROPS, "counter", &[], "Queries the kernel dropped because a UDP listener's receive queue was full: overload that never reached the proxy (from /proc/net/udp, set at each scrape)."),
    metric(UDP_SEGMENTED_SENDS, "counter", &[("outcome", "`sent` (the kernel took it), `refused` (sent one answer a send instead; the worker sends one by one for a minute when a single send succeeded where the segmented one failed, then tries again)")], "Sends that carried several answers to one client as one UDP segmentation offload (GSO) message (server.udp_segmentation), by outcome."),
    metric(NODE_LOCAL_RESTORES, "counter", &[("what", "`link`, `address`, `notrack` (the NOTRACK table) or `firewall` (the ACCEPT rules)")], "Node-local setup found removed and put back by the 2 s check, by what (node_local)."),
    metric(PROCESS_CPU, "counter", &[], "User and system CPU time of the process, in seconds (from /proc, set at each scrape)."),
    metric(PROCESS_RESIDENT_MEMORY, "gauge", &[], "Resident memory of the process, in bytes."),
    metric(PROCESS_VIRTUAL_MEMORY, "gauge", &[], "Virtual memory of the process, in bytes."),
    metric(PROCESS_OPEN_FDS, "gauge", &[], "Open file descriptors."),
    metric(PROCESS_MAX_FDS, "gauge", &[], "The open file descriptor limit (RLIMIT_NOFILE)."),
    metric(PROCESS_START_TIME, "gauge", &[], "When the process started, in seconds since the Unix epoch."),
    metric(PROCESS_THREADS, "gauge", &[], "Threads of the process."),
];

const PLUGIN: (&str, &str) = (
    "plugin",
    "who wrote the answer: `cache` (cache hits and stale answers), `forward` (upstream answers and SERVFAIL when upstreams fail), `ndots` (shortcut and local answers)",
);

/// CoreDNS's metrics for the same figures, exported only with `metrics.coredns_names: true`
/// (DESIGN §9), so NodeLocal DNSCache dashboards and the coredns-mixin alerts work unchanged.
pub const COREDNS: &[MetricInfo] = &[
    metric(COREDNS_REQUESTS, "counter", &[SERVER, ZONE, PROTO, ("family", "`1` (IPv4) or `2` (IPv6) client"), QTYPE], "`ndots_dns_requests_total` under CoreDNS's name."),
    metric(COREDNS_RESPONSES, "counter", &[SERVER, ZONE, RCODE, PLUGIN], "`ndots_dns_responses_total` with CoreDNS's `plugin` label instead of `source`."),
    metric(COREDNS_REQUEST_DURATION, "histogram", &[SERVER, ZONE, QTYPE], "`ndots_dns_request_duration_seconds` without `source` (CoreDNS's buckets, the same)."),
    metric(COREDNS_REQUEST_SIZE, "histogram", &[SERVER, ZONE, PROTO], "Size of each answered query in bytes (buckets 0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000, as CoreDNS)."),
    metric(COREDNS_RESPONSE_SIZE, "histogram", &[SERVER, ZONE, PROTO], "Size of each answer sent in bytes (the same buckets)."),
    metric(COREDNS_CACHE_ENTRIES, "gauge", &[SERVER, CACHE_TYPE], "`ndots_cache_entries` with the `server` label."),
    metric(COREDNS_CACHE_HITS, "counter", &[SERVER, CACHE_TYPE], "`ndots_cache_hits_total` with the `server` label."),
    metric(COREDNS_CACHE_MISSES, "counter", &[SERVER], "`ndots_cache_misses_total` with the `server` label."),
    metric(COREDNS_FORWARD_REQUESTS, "counter", &[TO], "Queries sent upstream, by server (`ndots_upstream_requests_total` without `proto`)."),
    metric(COREDNS_FORWARD_RESPONSES, "counter", &[TO, RCODE], "Upstream replies, by server and response code."),
    metric(COREDNS_FORWARD_DURATION, "histogram", &[TO, RCODE], "`ndots_upstream_request_duration_seconds` under the name the coredns-mixin and NodeLocal DNSCache dashboards query."),
    metric(COREDNS_FORWARD_HEALTHCHECK_FAILURES, "counter", &[TO], "Health probes (SOA queries to failing servers) that failed, by server."),
    metric(COREDNS_FORWARD_HEALTHCHECK_BROKEN, "counter", &[], "Queries that found every server of their zone failing."),
];

/// DESIGN §4: request duration buckets, 0.00025 s doubling to 8 s: sixteen buckets ending at
/// 8.192 s, the same as CoreDNS's `ExponentialBuckets(0.00025, 2, 16)` so dashboards port.
pub fn duration_buckets() -> Vec<f64> {
    DURATION_BUCKETS.to_vec()
}

const DURATION_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024,
    2.048, 4.096, 8.192,
];

/// CoreDNS's request and response size buckets (plugin/metrics/vars).
pub const SIZE_BUCKETS: &[f64] = &[
    0.0, 100.0, 200.0, 300.0, 400.0, 511.0, 1023.0, 2047.0, 4095.0, 8291.0, 16e3, 32e3, 48e3, 64e3,
];

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
                    b.set_buckets_for_metric(Matcher::Suffix("size_bytes".into()), SIZE_BUCKETS)
                })
                .expect("static bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests that embed the proxy twice; the first wins.
            let _ = metrics::set_global_recorder(recorder);
            for m in ALL.iter().chain(COREDNS) {
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

/// `metrics.coredns_names`: also count under CoreDNS's names. Process-wide (one recorder per
/// process), set at start and on reload.
static COREDNS_NAMES: AtomicBool = AtomicBool::new(false);

pub fn set_coredns_names(on: bool) {
    COREDNS_NAMES.store(on, Ordering::Relaxed);
}

#[inline]
pub fn coredns_names() -> bool {
    COREDNS_NAMES.load(Ordering::Relaxed)
}

/// What the proxy knows at start about the label values its series will carry.
pub struct Known<'a> {
    /// The `server` label, `dns://IP:PORT`.
    pub server: &'a str,
    /// Upstream zone labels (`cluster.local.`, `.`).
    pub zones: &'a [&'a str],
    /// Upstream servers (`IP:PORT`) with whether their zone speaks TCP only.
    pub upstreams: &'a [(&'a str, bool)],
    /// Whether a listener is IPv6 (clients of family 2 possible).
    pub ipv6: bool,
}

/// Create every series of `ALL` (and of `COREDNS` when on) for its known label values, at 0, so
/// a scrape before the first event already has them (DESIGN §9). Label names and order are the
/// ones the counting sites use: a series is its name and label list.
pub fn preregister(k: &Known<'_>) {
    use crate::amplify::{Outcome, SuffixSlot};
    let families: &[&str] = if k.ipv6 { &["1", "2"] } else { &["1"] };
    let coredns = coredns_names();
    for &zone in k.zones {
        let z = || zone.to_string();
        let s = || k.server.to_string();
        for proto in ["udp", "tcp"] {
            for &family in families {
                for qtype in ["A", "AAAA"] {
                    metrics::counter!(DNS_REQUESTS, "server" => s(), "zone" => z(), "proto" => proto, "family" => family, "type" => qtype).increment(0);
                    if coredns {
                        metrics::counter!(COREDNS_REQUESTS, "server" => s(), "zone" => z(), "proto" => proto, "family" => family, "type" => qtype).increment(0);
                    }
                }
            }
            if coredns {
                let labels = [("server", s()), ("zone", z()), ("proto", proto.to_string())];
                fixed_histogram(COREDNS_REQUEST_SIZE, &labels);
                fixed_histogram(COREDNS_RESPONSE_SIZE, &labels);
            }
        }
        for (rcode, source) in [
            ("NOERROR", "cache"),
            ("NXDOMAIN", "cache"),
            ("NOERROR", "upstream"),
            ("NXDOMAIN", "upstream"),
            ("SERVFAIL", "upstream"),
            ("NOERROR", "stale"),
            ("NXDOMAIN", "shortcut"),
            ("REFUSED", "local"),
        ] {
            metrics::counter!(DNS_RESPONSES, "server" => s(), "zone" => z(), "rcode" => rcode, "source" => source).increment(0);
            if coredns {
                let plugin = plugin_of(source);
                metrics::counter!(COREDNS_RESPONSES, "server" => s(), "zone" => z(), "rcode" => rcode, "plugin" => plugin).increment(0);
            }
        }
        for source in ["cache", "upstream"] {
            fixed_histogram(
                DNS_REQUEST_DURATION,
                &[
                    ("server", s()),
                    ("zone", z()),
                    ("source", source.into()),
                    ("type", "A".into()),
                ],
            );
        }
        if coredns {
            fixed_histogram(
                COREDNS_REQUEST_DURATION,
                &[("server", s()), ("zone", z()), ("type", "A".into())],
            );
        }
    }
    for kind in ["success", "denial"] {
        metrics::counter!(CACHE_HITS, "type" => kind).increment(0);
        metrics::counter!(CACHE_EVICTIONS, "type" => kind).increment(0);
        metrics::gauge!(CACHE_ENTRIES, "type" => kind).increment(0.0);
        if coredns {
            metrics::counter!(COREDNS_CACHE_HITS, "server" => k.server.to_string(), "type" => kind)
                .increment(0);
            metrics::gauge!(COREDNS_CACHE_ENTRIES, "server" => k.server.to_string(), "type" => kind).increment(0.0);
        }
    }
    metrics::counter!(CACHE_MISSES).increment(0);
    if coredns {
        metrics::counter!(COREDNS_CACHE_MISSES, "server" => k.server.to_string()).increment(0);
        metrics::counter!(COREDNS_FORWARD_HEALTHCHECK_BROKEN).increment(0);
    }
    for reason in crate::proxy::handler::StaleReason::ALL {
        metrics::counter!(CACHE_SERVED_STALE, "reason" => reason.as_str()).increment(0);
    }
    metrics::gauge!(FORWARDING_LOOP).set(0.0);
    for name in [
        CACHE_PREFETCH,
        SHADOW_DISAGREEMENTS,
        TRACKER_EVICTIONS,
        TRACKER_DROPPED_EVENTS,
        MALFORMED_QUERIES,
        UDP_RECEIVE_DROPS,
    ] {
        metrics::counter!(name).increment(0);
    }
    for outcome in ["sent", "refused"] {
        metrics::counter!(UDP_SEGMENTED_SENDS, "outcome" => outcome).increment(0);
    }
    for &(to, tcp_only) in k.upstreams {
        let t = || to.to_string();
        let protos: &[&str] = if tcp_only { &["tcp"] } else { &["udp", "tcp"] };
        for &proto in protos {
            metrics::counter!(UPSTREAM_REQUESTS, "to" => t(), "proto" => proto).increment(0);
        }
        let _ = metrics::histogram!(UPSTREAM_REQUEST_DURATION, "to" => t(), "rcode" => "NOERROR");
        for reason in ["timeout", "io", "malformed", "closed"] {
            metrics::counter!(UPSTREAM_FAILURES, "to" => t(), "reason" => reason).increment(0);
        }
        if tcp_only {
            metrics::counter!(UPSTREAM_FAILURES, "to" => t(), "reason" => "backoff").increment(0);
        }
        metrics::counter!(UPSTREAM_TCP_REPLACED, "to" => t()).increment(0);
        if !tcp_only {
            metrics::counter!(UPSTREAM_UDP_REPLACED, "to" => t()).increment(0);
        }
        metrics::gauge!(UPSTREAM_HEALTHY, "to" => t()).increment(0.0);
        if coredns {
            metrics::counter!(COREDNS_FORWARD_REQUESTS, "to" => t()).increment(0);
            for rcode in ["NOERROR", "NXDOMAIN", "SERVFAIL"] {
                metrics::counter!(COREDNS_FORWARD_RESPONSES, "to" => t(), "rcode" => rcode)
                    .increment(0);
            }
            let _ =
                metrics::histogram!(COREDNS_FORWARD_DURATION, "to" => t(), "rcode" => "NOERROR");
            metrics::counter!(COREDNS_FORWARD_HEALTHCHECK_FAILURES, "to" => t()).increment(0);
        }
    }
    for qtype in ["A", "AAAA"] {
        let _ = fixed_histogram(LOOKUP_QUERIES, &[("type", qtype.to_string())]);
        let _ = fixed_histogram(LOOKUP_DURATION, &[("type", qtype.to_string())]);
        for o in Outcome::ALL {
            metrics::counter!(LOOKUPS, "type" => qtype, "outcome" => o.as_str()).increment(0);
        }
    }
    for s in SuffixSlot::ALL {
        metrics::counter!(WASTED_QUERIES, "suffix" => s.as_str()).increment(0);
    }
    for mode in ["nxdomain", "autopath"] {
        for reason in ["zone", "schema"] {
            metrics::counter!(SHORTCUT_ANSWERS, "mode" => mode, "reason" => reason).increment(0);
        }
    }
    for result in ["success", "failure"] {
        metrics::counter!(CONFIG_RELOADS, "result" => result).increment(0);
    }
    metrics::counter!(REFUSED_QUERIES, "reason" => "client").increment(0);
    for limit in [
        "max_inflight",
        "max_tcp_connections",
        "tcp_client_buffer",
        "admin_connections",
        "memory_limit",
    ] {
        metrics::counter!(OVERLOAD_DROPS, "limit" => limit).increment(0);
    }
    for s in SuffixSlot::ALL {
        metrics::counter!(SEARCH_QUERIES, "suffix" => s.as_str()).increment(0);
    }
    for qtype in ["A", "AAAA"] {
        metrics::counter!(WASTED_QUERIES_BY_TYPE, "type" => qtype).increment(0);
    }
    // Namespaces are learnt from traffic; the two catch-all values are known from the start.
    for ns in ["other", "unknown"] {
        for name in [NAMESPACE_LOOKUPS, NAMESPACE_QUERIES, NAMESPACE_WASTED] {
            metrics::counter!(name, "namespace" => ns).increment(0);
        }
    }
    for result in ["written", "dropped"] {
        metrics::counter!(DNSTAP_MESSAGES, "result" => result).increment(0);
    }
    for what in ["link", "address", "notrack", "firewall"] {
        metrics::counter!(NODE_LOCAL_RESTORES, "what" => what).increment(0);
    }
}

/// Series only `ndots collect` exports (its receiver's); the proxy has no receiver.
pub const COLLECT_ONLY: &[&str] = &[
    COLLECT_CONNECTIONS,
    COLLECT_SESSIONS,
    COLLECT_FRAMES,
    COLLECT_MALFORMED,
];

/// The `type` label and the code memo keys use for it: CoreDNS's monitored query types by name
/// (plugin/metrics/vars), every other type `other` (code 0), so a client sending arbitrary
/// types cannot create series without bound.
pub fn type_label(qtype: u16) -> (u64, &'static str) {
    let name = match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        50 => "NSEC3",
        64 => "SVCB",
        65 => "HTTPS",
        251 => "IXFR",
        252 => "AXFR",
        255 => "ANY",
        _ => return (0, "other"),
    };
    (u64::from(qtype), name)
}

/// CoreDNS's `plugin` label for an answer's source (`AnswerSource::as_str`).
pub fn plugin_of(source: &str) -> &'static str {
    match source {
        "cache" | "stale" => "cache",
        "upstream" => "forward",
        _ => "ndots",
    }
}

/// The `process_*` series, from /proc/self (Linux), in the text exposition format: appended to
/// each scrape (`render_extra`). Written here rather than through the recorder because
/// its counters are integers and CPU seconds are not. A field that cannot be read is left out.
fn render_process(out: &mut String) {
    use std::fmt::Write;
    let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as f64,
        _ => 4096.0,
    };
    let mut values: Vec<(&str, f64)> = Vec::new();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces: index 0
        // is field 3 (state) of proc(5).
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_ascii_whitespace().collect())
            .unwrap_or_default();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        if let (Some(u), Some(s)) = (num(11), num(12)) {
            values.push((PROCESS_CPU, (u + s) / ticks));
        }
        if let Some(r) = num(21) {
            values.push((PROCESS_RESIDENT_MEMORY, r * page));
        }
        if let Some(v) = num(20) {
            values.push((PROCESS_VIRTUAL_MEMORY, v));
        }
        if let Some(t) = num(17) {
            values.push((PROCESS_THREADS, t));
        }
        if let (Some(start), Some(boot)) = (num(19), boot_time()) {
            values.push((PROCESS_START_TIME, boot + start / ticks));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        values.push((PROCESS_OPEN_FDS, dir.count() as f64));
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        values.push((PROCESS_MAX_FDS, lim.rlim_cur as f64));
    }
    for (name, v) in values {
        if let Some(m) = ALL.iter().find(|m| m.name == name) {
            let _ = writeln!(
                out,
                "# HELP {name} {}\n# TYPE {name} {}\n{name} {v}",
                m.help, m.kind
            );
        }
    }
}

/// A histogram with fixed buckets and atomic counts, for the series every answer or lookup
/// records (request duration, CoreDNS's duration and sizes, queries and duration per lookup):
/// recording is two atomic adds, with no allocation on the cache-hit path and nothing kept
/// past a receive batch (the exporter's histograms keep each sample until the next drain).
/// Cache hits counted under ndots's own metric names and the tracker's lookups go through a
/// [`PendingHistogram`], which adds a batch's records at once. Rendered by `render_extra`.
pub struct FixedHistogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), the last for values above every bound (`+Inf`).
    counts: Box<[AtomicU64]>,
    /// The sum in units of `1 / scale` (nanoseconds for seconds, bytes for bytes).
    sum: AtomicU64,
    scale: f64,
}

impl FixedHistogram {
    fn new(bounds: &'static [f64], scale: f64) -> FixedHistogram {
        FixedHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    #[inline]
    pub fn record(&self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum
            .fetch_add((value * self.scale) as u64, Ordering::Relaxed);
    }
}

/// One thread's records of a [`FixedHistogram`] not yet added to it: a record is two plain
/// adds, and `flush` adds them to the shared counts when the summed counters of the same
/// series are added (`SummedSeries`): a listener's cache hits once a receive batch, before its
/// answers are sent; the tracker's lookups at each publish, under the lock the report reads.
/// It saves two atomic adds (~20 cycles each) per record on the cache-hit path. Dropped, it
/// flushes, so nothing recorded is lost.
pub struct PendingHistogram {
    hist: std::sync::Arc<FixedHistogram>,
    counts: Box<[u64]>,
    sum: u64,
    recorded: bool,
}

impl PendingHistogram {
    pub fn new(hist: std::sync::Arc<FixedHistogram>) -> PendingHistogram {
        let counts = vec![0; hist.counts.len()].into_boxed_slice();
        PendingHistogram {
            hist,
            counts,
            sum: 0,
            recorded: false,
        }
    }

    /// `FixedHistogram::record`, held here until `flush`.
    #[inline]
    pub fn record(&mut self, value: f64) {
        self.record_n(value, 1);
    }

    /// What is held: the count per bucket and the sum (tests).
    #[cfg(test)]
    pub fn held(&self) -> (Vec<u64>, u64) {
        (self.counts.to_vec(), self.sum)
    }

    /// `record` of `value` `n` times.
    #[inline]
    pub fn record_n(&mut self, value: f64, n: u64) {
        let i = self.hist.bounds.partition_point(|b| *b < value);
        self.counts[i] += n;
        // Wrapping, as the shared sum's `fetch_add` does: a capture's absurd duration must
        // not panic an overflow-checked build.
        self.sum = self
            .sum
            .wrapping_add(((value * self.hist.scale) as u64).wrapping_mul(n));
        self.recorded = true;
    }

    /// Add what was recorded since the last flush to the histogram.
    pub fn flush(&mut self) {
        if !std::mem::take(&mut self.recorded) {
            return;
        }
        for (shared, n) in self.hist.counts.iter().zip(self.counts.iter_mut()) {
            if *n > 0 {
                shared.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        self.hist
            .sum
            .fetch_add(std::mem::take(&mut self.sum), Ordering::Relaxed);
    }
}

impl Drop for PendingHistogram {
    fn drop(&mut self) {
        self.flush();
    }
}

struct FixedSeries {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    hist: std::sync::Arc<FixedHistogram>,
}

static FIXED: parking_lot::Mutex<Vec<FixedSeries>> = parking_lot::Mutex::new(Vec::new());

/// The fixed histogram for `name` and `labels` (in their order), created at 0 if new.
pub fn fixed_histogram(
    name: &'static str,
    labels: &[(&'static str, String)],
) -> std::sync::Arc<FixedHistogram> {
    let mut all = FIXED.lock();
    if let Some(s) = all.iter().find(|s| s.name == name && s.labels == labels) {
        return s.hist.clone();
    }
    let (bounds, scale): (&'static [f64], f64) = if name == LOOKUP_QUERIES {
        (LOOKUP_QUERY_BUCKETS, 1.0)
    } else if name.ends_with("_seconds") {
        (DURATION_BUCKETS, 1e9)
    } else {
        (SIZE_BUCKETS, 1.0)
    };
    let hist = std::sync::Arc::new(FixedHistogram::new(bounds, scale));
    all.push(FixedSeries {
        name,
        labels: labels.to_vec(),
        hist: hist.clone(),
    });
    hist
}

/// Record `value` in the fixed histogram memoised per thread under `key`.
#[inline]
pub fn record_fixed(key: u64, make: impl FnOnce() -> std::sync::Arc<FixedHistogram>, value: f64) {
    FIXED_MEMO.with(|m| {
        let mut m = m.borrow_mut();
        bound_memo(&mut m, key);
        m.entry(key).or_insert_with(make).record(value)
    })
}

/// The series the recorder does not hold, appended to a scrape: the fixed histograms and
/// `process_*`.
pub fn render_extra(out: &mut String) {
    use std::fmt::Write;
    {
        let all = FIXED.lock();
        for info in ALL.iter().chain(COREDNS) {
            let mut series = all.iter().filter(|s| s.name == info.name).peekable();
            if series.peek().is_none() {
                continue;
            }
            let name = info.name;
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", info.help);
            for s in series {
                let mut labels = String::new();
                for (k, v) in &s.labels {
                    let v = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    let _ = write!(labels, "{k}=\"{v}\",");
                }
                let h = &s.hist;
                let mut cumulative = 0u64;
                for (i, c) in h.counts.iter().enumerate() {
                    cumulative += c.load(Ordering::Relaxed);
                    match h.bounds.get(i) {
                        Some(b) => {
                            let _ =
                                writeln!(out, "{name}_bucket{{{labels}le=\"{b}\"}} {cumulative}");
                        }
                        None => {
                            let _ =
                                writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
                        }
                    }
                }
                let labels = labels.trim_end_matches(',');
                let sum = h.sum.load(Ordering::Relaxed) as f64 / h.scale;
                let _ = writeln!(
                    out,
                    "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {cumulative}"
                );
            }
        }
    }
    render_process(out);
}

/// Boot time in seconds since the epoch (`btime` in /proc/stat).
fn boot_time() -> Option<f64> {
    static BOOT: OnceLock<Option<f64>> = OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    })
}

thread_local! {
    static FIXED_MEMO: RefCell<HashMap<u64, std::sync::Arc<FixedHistogram>>> =
        RefCell::new(HashMap::new());
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
            let mut m = m.borrow_mut();
            bound_memo(&mut m, self.key);
            m.entry(self.key).or_insert_with(make).increment(n)
        })
    }
}

/// Record `value` in the histogram memoised per thread under `key`, without cloning the handle.
#[inline]
pub fn record_cached(key: u64, make: impl FnOnce() -> Histogram, value: f64) {
    HISTOGRAMS.with(|m| {
        let mut m = m.borrow_mut();
        bound_memo(&mut m, key);
        m.entry(key).or_insert_with(make).record(value)
    })
}

/// Handles a thread keeps memoised, per memo: keys carry the engine's id, and each reload
/// makes a new engine, so without a bound the memos would grow by a set of series a reload.
const MEMO_CAP: usize = 4096;

/// Start `memo` over when `key` is new and the memo is full: its handles are made again from
/// the registry, which hands back the same series.
fn bound_memo<V>(memo: &mut HashMap<u64, V>, key: u64) {
    if memo.len() >= MEMO_CAP && !memo.contains_key(&key) {
        memo.clear();
    }
}

/// Series a hot path adds to many times between flushes, by label key: each series' handles
/// are made at its first use, the caller sums into the series, and `flush` hands over once
/// each series touched since the last flush to add its sums to the counters. A counter update
/// is two atomic operations (the exporter's recency tracking): summing makes it one a flush,
/// not one an answer or lookup. Runs of one series (one name asked over and over) find it
/// without the map.
pub struct SummedSeries<K, S> {
    index: hashbrown::HashMap<K, usize>,
    /// Each series and whether it was touched since the last flush.
    series: Vec<(S, bool)>,
    touched: Vec<usize>,
    last: Option<(K, usize)>,
}

impl<K, S> Default for SummedSeries<K, S> {
    fn default() -> Self {
        SummedSeries {
            index: hashbrown::HashMap::default(),
            series: Vec::new(),
            touched: Vec::new(),
            last: None,
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, S> SummedSeries<K, S> {
    /// The series of `key` (made by `make` if new), marked for the next flush.
    #[inline]
    pub fn touch(&mut self, key: K, make: impl FnOnce() -> S) -> &mut S {
        let i = match &self.last {
            Some((k, i)) if *k == key => *i,
            _ => {
                let series = &mut self.series;
                let i = *self.index.entry(key.clone()).or_insert_with(|| {
                    series.push((make(), false));
                    series.len() - 1
                });
                self.last = Some((key, i));
                i
            }
        };
        let (s, touched) = &mut self.series[i];
        if !*touched {
            *touched = true;
            self.touched.push(i);
        }
        s
    }

    /// Each series touched since the last flush, once, to add its sums.
    pub fn flush(&mut self, mut add: impl FnMut(&mut S)) {
        for i in self.touched.drain(..) {
            let (s, touched) = &mut self.series[i];
            *touched = false;
            add(s);
        }
    }
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

    /// A thread's memoised handles stay within `MEMO_CAP` however many keys come (each
    /// reload's engine brings keys of its own), and a key used again after the memo started
    /// over gets its handle again.
    #[test]
    fn memoised_handles_grew_with_every_reloaded_engine() {
        for key in 0..(MEMO_CAP as u64 + 100) {
            cached_counter(key, || metrics::counter!("ndots_test_memo_total")).increment(1);
            assert!(COUNTERS.with(|m| m.borrow().len()) <= MEMO_CAP);
        }
        cached_counter(0, || metrics::counter!("ndots_test_memo_total")).increment(1);
        assert!(COUNTERS.with(|m| m.borrow().contains_key(&0)));
    }

    /// Sums reach `flush` once per series touched since the last flush, whatever the order
    /// of keys (the last-key shortcut must not hand back another key's series).
    #[test]
    fn summed_series_flush_each_touched_series_once_with_its_own_sums() {
        let mut memo: SummedSeries<u32, (u32, u64)> = SummedSeries::default();
        let mut made = 0;
        for key in [7, 7, 3, 7, 3, 3, 9] {
            let s = memo.touch(key, || {
                made += 1;
                (key, 0)
            });
            assert_eq!(s.0, key);
            s.1 += 1;
        }
        assert_eq!(made, 3);
        let mut flushed = Vec::new();
        memo.flush(|s| {
            flushed.push(*s);
            s.1 = 0;
        });
        flushed.sort();
        assert_eq!(flushed, [(3, 3), (7, 3), (9, 1)]);
        let mut again = 0;
        memo.flush(|_| again += 1);
        assert_eq!(again, 0, "nothing touched since the last flush");
        memo.touch(3, || unreachable!("made once")).1 += 5;
        memo.flush(|s| flushed.push(*s));
        assert_eq!(flushed.last(), Some(&(3, 5)));
    }

    #[test]
    fn fixed_histogram_counts_at_or_below_each_bound_and_renders_cumulatively() {
        let labels = [("server", "dns://x\"y".to_string())];
        let h = fixed_histogram(COREDNS_RESPONSE_SIZE, &labels);
        for v in [0.0, 100.0, 101.0, 64e3, 70e3] {
            h.record(v);
        }
        let mut out = String::new();
        render_extra(&mut out);
        let line = |le: &str| {
            let want = format!(
                "coredns_dns_response_size_bytes_bucket{{server=\"dns://x\\\"y\",le=\"{le}\"}} "
            );
            out.lines()
                .find_map(|l| l.strip_prefix(want.as_str()))
                .unwrap_or_else(|| panic!("no {want} in\n{out}"))
                .to_string()
        };
        assert_eq!(line("0"), "1");
        assert_eq!(line("100"), "2", "le is inclusive");
        assert_eq!(line("200"), "3");
        assert_eq!(line("64000"), "4");
        assert_eq!(line("+Inf"), "5");
        assert!(out.contains("coredns_dns_response_size_bytes_count{server=\"dns://x\\\"y\"} 5\n"));
        assert!(
            out.contains("coredns_dns_response_size_bytes_sum{server=\"dns://x\\\"y\"} 134201\n")
        );
        assert!(out.contains("# TYPE coredns_dns_response_size_bytes histogram\n"));
    }

    #[test]
    fn a_pending_histogram_adds_what_it_held_at_flush_and_when_dropped() {
        let counts = |h: &FixedHistogram| -> (Vec<u64>, u64) {
            let c = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            (c, h.sum.load(Ordering::Relaxed))
        };
        let direct = FixedHistogram::new(DURATION_BUCKETS, 1e9);
        let held = std::sync::Arc::new(FixedHistogram::new(DURATION_BUCKETS, 1e9));
        let mut pending = PendingHistogram::new(held.clone());
        let values = [0.0, 0.00025, 0.0003, 0.001, 0.5, 9.0, 0.0003];
        for v in values {
            direct.record(v);
            pending.record(v);
        }
        let (zero, _) = counts(&FixedHistogram::new(DURATION_BUCKETS, 1e9));
        assert_eq!(counts(&held), (zero, 0), "nothing is added before a flush");
        pending.flush();
        assert_eq!(counts(&held), counts(&direct));
        direct.record(0.002);
        pending.record(0.002);
        for _ in 0..5 {
            direct.record(0.0007);
        }
        pending.record_n(0.0007, 5);
        drop(pending);
        assert_eq!(
            counts(&held),
            counts(&direct),
            "a drop flushes; record_n is n records"
        );
    }

    #[test]
    fn buckets_double_from_quarter_ms_to_8s() {
        let b = duration_buckets();
        assert_eq!(b.first(), Some(&0.00025));
        assert_eq!(b.len(), 16);
        assert!((b.last().unwrap() - 8.192).abs() < 1e-9);
        assert!(b.windows(2).all(|w| (w[1] / w[0] - 2.0).abs() < 1e-9));
    }
}
