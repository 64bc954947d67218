//! `metrics.coredns_names: true` (DESIGN §9): the queries of the public NodeLocal DNSCache
//! dashboard and the coredns-mixin alert rules, written here as published (not vendored), are
//! evaluated by a real Prometheus scraping a running proxy, and return series with the values
//! the traffic sent should give.
//!
//! Sources (read through the code search, reproduced expression by expression):
//! - povilasv/nodelocaldns-mixin `dashboards/nodelocaldns.libsonnet` (the NodeLocalDNS
//!   dashboard), with its `corednsSelector` `k8s_app="node-local-dns",name!="node-local-dns-metrics"`
//!   and `instanceLabel` `pod` (`$instance` = all);
//! - povilasv/coredns-mixin `alerts/coredns.libsonnet` and `alerts/forward.libsonnet`, with the
//!   default `corednsSelector` `job="kube-dns"`.
//!
//! The same Prometheus then evaluates every query of ndots' own dashboard
//! (deploy/dashboards/ndots.json): each is valid and returns a series.
//!
//! Not reproducible by design, and left out: `coredns_panic_count_total` and `go_goroutines`
//! (Go runtime), `coredns_nodecache_setup_errors_total` (NodeLocal DNSCache's iptables setup);
//! the dashboard's `$instance` variable queries `coredns_dns_request_count_total`, CoreDNS's
//! pre-1.7 name, which CoreDNS itself no longer exports.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::prometheus;
use common::scripted_dns::ScriptedDns;
use common::tools::{free_port, require, Proc};
use common::upstream::{Rec, Upstream};
use ndots::search::Answer;
use ndots::wire;

const DASH: &str = r#"k8s_app="node-local-dns",name!="node-local-dns-metrics",pod=~".*""#;
const MIXIN: &str = r#"job="kube-dns""#;

/// The instant vector `expr` evaluates to: (labels, value) per series.
fn query(prom: SocketAddr, expr: &str) -> Vec<(serde_json::Value, f64)> {
    prometheus::query(prom, expr).unwrap_or_else(|| panic!("prometheus did not evaluate {expr}"))
}

/// The value of the single series `expr` returns.
fn one(prom: SocketAddr, expr: &str) -> f64 {
    let r = query(prom, expr);
    assert_eq!(r.len(), 1, "one series from {expr}: {r:?}");
    r[0].1
}

/// value by the label `by`.
fn by(prom: SocketAddr, expr: &str, label: &str) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = query(prom, expr)
        .into_iter()
        .map(|(m, v)| (m[label].as_str().unwrap_or("").to_string(), v))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn ask(to: SocketAddr, from: &UdpSocket, name: &str) -> u16 {
    common::dns::ask_rcode(to, from, name, wire::TYPE_A)
}

#[test]
fn nodelocaldns_dashboard_and_coredns_mixin_alerts_read_the_proxy() {
    if !require("prometheus") {
        return;
    }
    let up = Upstream::start();
    up.add(
        "web.default.svc.cluster.local.",
        1,
        Rec::A(Ipv4Addr::new(10, 96, 0, 7), 300),
    );
    // A zone whose only server answers SERVFAIL to everything (its health probes too).
    let flaky = ScriptedDns::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let flaky_names: Vec<String> = (0..5).map(|i| format!("s{i}.flaky.example.")).collect();
    flaky.set_answers(
        flaky_names
            .iter()
            .cloned()
            .chain(["flaky.example.".to_string()])
            .map(|n| (n, None, Answer::ServFail)),
    );

    let dir = tempfile::tempdir().unwrap();
    let (dns, admin) = (free_port(), free_port());
    let dns: SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let cfg = dir.path().join("ndots.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: [\"{dns}\"]\nadmin: \"{admin}\"\nserver: {{workers: 1}}\n\
             upstreams:\n  - {{zone: flaky.example, servers: [\"{}\"], timeout: 300ms}}\n  \
             - {{zone: \".\", servers: [\"{}\"]}}\n\
             shortcut: {{mode: off}}\ncache: {{prefetch: false}}\n\
             metrics: {{coredns_names: true}}\n",
            flaky.addr, up.addr
        ),
    )
    .unwrap();
    let _proxy = Proc(
        Command::new(env!("CARGO_BIN_EXE_ndots"))
            .args(["proxy", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The labels a NodeLocal DNSCache pod's scrape carries in a kube-prometheus setup.
    let (_prom, prom) = prometheus::start(
        dir.path(),
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  \
             - job_name: kube-dns\n    static_configs:\n      - targets: [\"{admin}\"]\n        \
             labels: {{k8s_app: node-local-dns, pod: node-local-dns-x7k2p}}\n"
        ),
    );
    // Two scrapes before any query: the series exist at 0, so rate() sees every increment.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrapes = prometheus::query(prom, "count_over_time(coredns_dns_requests_total[1m])")
            .and_then(|r| r.first().map(|s| s.1));
        if scrapes.is_some_and(|n| n >= 2.0) {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus never scraped twice");
        std::thread::sleep(Duration::from_millis(200));
    }

    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // 10 lookups of one name: 1 miss, 9 hits; 5 NXDOMAIN from upstream; 5 SERVFAIL.
    for _ in 0..10 {
        assert_eq!(ask(dns, &c, "web.default.svc.cluster.local."), 0);
    }
    for i in 0..5 {
        assert_eq!(ask(dns, &c, &format!("nx{i}.example.")), 3);
    }
    for n in &flaky_names {
        assert_eq!(ask(dns, &c, n), 2);
    }
    // Let a few scrapes see the counts (and the health probes of the SERVFAIL server).
    let deadline = Instant::now() + Duration::from_secs(30);
    while one(prom, &format!("sum(coredns_dns_responses_total{{{DASH}}})")) < 20.0 {
        assert!(
            Instant::now() < deadline,
            "prometheus never saw 20 responses"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(3));

    // --- The NodeLocalDNS dashboard, panel by panel.
    assert_eq!(
        one(
            prom,
            r#"sum(up{k8s_app="node-local-dns",name!="node-local-dns-metrics"})"#
        ),
        1.0
    );
    // RPC Rate.
    let rcodes = by(
        prom,
        &format!("sum(rate(coredns_dns_responses_total{{{DASH}}}[5m])) by (rcode)"),
        "rcode",
    );
    let rate_of = |v: &[(String, f64)], k: &str| v.iter().find(|(l, _)| l == k).map(|x| x.1);
    let (noerror, nx, sf) = (
        rate_of(&rcodes, "NOERROR").unwrap(),
        rate_of(&rcodes, "NXDOMAIN").unwrap(),
        rate_of(&rcodes, "SERVFAIL").unwrap(),
    );
    assert!(noerror > 0.0 && nx > 0.0 && sf > 0.0, "{rcodes:?}");
    // Same window, same scrapes: the rates stand as the counts do (10 : 5 : 5).
    assert!((noerror / nx - 2.0).abs() < 0.2, "{rcodes:?}");
    let fwd = by(
        prom,
        &format!("sum(rate(coredns_forward_responses_total{{{DASH}}}[5m])) by (rcode)"),
        "rcode",
    );
    for rc in ["NOERROR", "NXDOMAIN", "SERVFAIL"] {
        assert!(
            rate_of(&fwd, rc).is_some_and(|r| r > 0.0),
            "forward {rc}: {fwd:?}"
        );
    }
    // Request duration 99th quantile, per server and zone, and per upstream.
    let p99 = query(
        prom,
        &format!("histogram_quantile(0.99, sum(rate(coredns_dns_request_duration_seconds_bucket{{{DASH}}}[5m])) by (server, zone, le))"),
    );
    let zones: Vec<&str> = p99
        .iter()
        .map(|(m, _)| m["zone"].as_str().unwrap())
        .collect();
    assert!(
        zones.contains(&".") && zones.contains(&"flaky.example."),
        "{p99:?}"
    );
    assert!(
        p99.iter()
            .all(|(m, v)| m["server"] == format!("dns://{dns}") && *v > 0.0 && *v < 8.2),
        "{p99:?}"
    );
    let fwd_p99 = by(
        prom,
        &format!("histogram_quantile(0.99, sum(rate(coredns_forward_request_duration_seconds_bucket{{{DASH}}}[5m])) by (to, le))"),
        "to",
    );
    assert!(
        fwd_p99
            .iter()
            .any(|(to, v)| *to == up.addr.to_string() && *v > 0.0),
        "{fwd_p99:?}"
    );
    // Requests by qtype, by zone; forward requests by upstream.
    let types = by(
        prom,
        &format!("sum(rate(coredns_dns_requests_total{{{DASH}}}[5m])) by (type)"),
        "type",
    );
    assert!(rate_of(&types, "A").is_some_and(|r| r > 0.0), "{types:?}");
    assert_eq!(rate_of(&types, "AAAA"), Some(0.0), "{types:?}");
    let zones = by(
        prom,
        &format!("sum(rate(coredns_dns_requests_total{{{DASH}}}[5m])) by (zone)"),
        "zone",
    );
    let (root, flaky_rate) = (
        rate_of(&zones, ".").unwrap(),
        rate_of(&zones, "flaky.example.").unwrap(),
    );
    assert!((root / flaky_rate - 3.0).abs() < 0.3, "15 : 5 {zones:?}");
    let to = by(
        prom,
        &format!("sum(rate(coredns_forward_requests_total{{{DASH}}}[5m])) by (to)"),
        "to",
    );
    assert!(
        rate_of(&to, &up.addr.to_string()).is_some_and(|r| r > 0.0),
        "{to:?}"
    );
    assert!(
        rate_of(&to, &flaky.addr.to_string()).is_some_and(|r| r > 0.0),
        "{to:?}"
    );
    // Request and response size, 50th and 99th percentiles by server, zone, proto.
    for (metric, q) in [
        ("coredns_dns_request_size_bytes", "0.99"),
        ("coredns_dns_request_size_bytes", "0.50"),
        ("coredns_dns_response_size_bytes", "0.99"),
        ("coredns_dns_response_size_bytes", "0.50"),
    ] {
        let r = query(
            prom,
            &format!("histogram_quantile({q}, sum(rate({metric}_bucket{{{DASH}}}[5m])) by (server, zone, proto, le))"),
        );
        let udp: Vec<f64> = r
            .iter()
            .filter(|(m, _)| m["proto"] == "udp" && m["zone"] == ".")
            .map(|(_, v)| *v)
            .collect();
        // Queries of 29-47 bytes, answers of 45-113: the first buckets (100, 200).
        assert_eq!(udp.len(), 1, "{metric} {q}: {r:?}");
        assert!(udp[0] > 0.0 && udp[0] <= 200.0, "{metric} {q}: {r:?}");
    }
    // Cached: hits / (misses + hits), exact (counters, not rates): 9 of 20.
    let cached = one(
        prom,
        &format!("sum(coredns_cache_hits_total{{{DASH}}}) / (sum(coredns_cache_misses_total{{{DASH}}}) + sum(coredns_cache_hits_total{{{DASH}}}))"),
    );
    assert!((cached - 9.0 / 20.0).abs() < 1e-9, "cached {cached}");
    let hits = by(
        prom,
        &format!("sum(rate(coredns_cache_hits_total{{{DASH}}}[5m])) by (type)"),
        "type",
    );
    assert!(
        rate_of(&hits, "success").is_some_and(|r| r > 0.0),
        "{hits:?}"
    );
    assert!(
        one(
            prom,
            &format!("sum(rate(coredns_cache_misses_total{{{DASH}}}[5m]))")
        ) > 0.0
    );
    // Cache entries by type: the one name, the five NXDOMAINs.
    let entries = by(
        prom,
        &format!("sum(coredns_cache_entries{{{DASH}}}) by (type)"),
        "type",
    );
    assert_eq!(rate_of(&entries, "success"), Some(1.0), "{entries:?}");
    assert_eq!(rate_of(&entries, "denial"), Some(5.0), "{entries:?}");
    // Memory and CPU.
    assert!(one(prom, &format!("process_resident_memory_bytes{{{DASH}}}")) > 1e6);
    assert_eq!(
        query(
            prom,
            &format!("rate(process_cpu_seconds_total{{{DASH}}}[5m])")
        )
        .len(),
        1
    );

    // --- coredns-mixin alerts, expressions as published.
    // CoreDNSDown: the target is up.
    assert!(query(prom, &format!("absent(up{{{MIXIN}}} == 1)")).is_empty());
    // CoreDNSLatencyHigh: fast answers, no alert; the quantile itself per server and zone.
    let latency = format!("histogram_quantile(0.99, sum(rate(coredns_dns_request_duration_seconds_bucket{{{MIXIN}}}[5m])) without (instance,pod))");
    assert!(query(prom, &format!("{latency} > 4")).is_empty());
    let l = query(prom, &latency);
    assert!(
        l.iter()
            .any(|(m, v)| m["zone"] == "." && m["server"] == format!("dns://{dns}") && *v < 4.0),
        "{l:?}"
    );
    // CoreDNSErrorsHigh (critical > 0.03): 5 SERVFAIL of 20 responses.
    let errors = format!(
        "sum without (pod, instance, server, zone, view, rcode, plugin) (rate(coredns_dns_responses_total{{{MIXIN},rcode=\"SERVFAIL\"}}[5m])) / sum without (pod, instance, server, zone, view, rcode, plugin) (rate(coredns_dns_responses_total{{{MIXIN}}}[5m])) > 0.03"
    );
    let ratio = one(prom, &errors);
    assert!((ratio - 0.25).abs() < 0.03, "SERVFAIL ratio {ratio}");
    // CoreDNSForwardLatencyHigh: no alert; the quantile per upstream exists.
    let fwd_latency = format!("histogram_quantile(0.99, sum(rate(coredns_forward_request_duration_seconds_bucket{{{MIXIN}}}[5m])) by(to, le))");
    assert!(query(prom, &format!("{fwd_latency} > 4")).is_empty());
    assert!(query(prom, &fwd_latency).len() >= 2);
    // CoreDNSForwardErrorsHigh: the flaky server's SERVFAILs (and its probes' are not
    // forward responses) against all forward responses.
    let fwd_errors = format!("sum(rate(coredns_forward_responses_total{{{MIXIN},rcode=\"SERVFAIL\"}}[5m])) / sum(rate(coredns_forward_responses_total{{{MIXIN}}}[5m])) > 0.03");
    let r = one(prom, &fwd_errors);
    assert!(r > 0.03 && r < 1.0, "forward SERVFAIL ratio {r}");
    // CoreDNSForwardHealthcheckFailureCount: the flaky server fails its probes, the good one
    // is never probed after answering.
    let hc = by(
        prom,
        &format!(
            "sum(rate(coredns_forward_healthcheck_failures_total{{{MIXIN}}}[5m])) by (to) > 0"
        ),
        "to",
    );
    assert_eq!(
        hc.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [flaky.addr.to_string().as_str()],
        "{hc:?}"
    );
    // CoreDNSForwardHealthcheckBrokenCount: after three failures every server of the zone was
    // down, and the last queries found it so.
    assert!(
        one(
            prom,
            &format!("sum(rate(coredns_forward_healthcheck_broken_total{{{MIXIN}}}[5m])) > 0")
        ) > 0.0
    );

    // --- ndots' own dashboard: every query is valid PromQL and returns a series (every metric
    // exists from the start, so even the panels of events that never happened show 0).
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/dashboards/ndots.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    for e in exprs {
        let q = e
            .replace("$__rate_interval", "1m")
            .replace("$__range", "5m")
            .replace("$cluster", ".*")
            .replace("$job", ".*")
            .replace("$node", ".*")
            .replace("$instance", ".*");
        assert!(
            !query(prom, &q).is_empty(),
            "no series for the panel query {e}"
        );
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
