//! The proxy's own traffic as dnstap (issue 18, DESIGN §9 "dnstap"):
//! - `file:` output read by `dnstap-ldns` (the reference reader) and by `ndots analyze`, whose
//!   report equals the proxy's own `/report` for the same traffic;
//! - a `unix:` output read live by `ndots collect`'s receiver (the handshake from both ends);
//! - a dead receiver (no socket; a socket that accepts and never reads) never slows answers:
//!   the same queries are timed with dnstap off and with each dead output.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tools::require;
use common::upstream::{Rec, Upstream};

fn proxy(up: &Upstream, rt: &tokio::runtime::Runtime, dnstap: &str) -> ndots::proxy::Running {
    let cfg = common::proxy::config(&format!(
        "shortcut: {{mode: off}}\nupstreams: [{{zone: \".\", servers: [\"{}\"]}}]\n{dnstap}",
        up.addr
    ));
    ndots::proxy::start(cfg, rt.handle()).unwrap()
}

/// Full walks as glibc sends them (one candidate after the other, A then AAAA) from two
/// clients; returns the number of lookups.
fn walks(dns: SocketAddr) -> u64 {
    let mut lookups = 0;
    for _client in 0..2 {
        let s = common::dns::client(Duration::from_secs(2));
        for base in ["api.example.com", "www.example.com", "web"] {
            for qtype in [1u16, 28] {
                common::dns::glibc_walk(dns, &s, base, qtype);
                lookups += 1;
            }
        }
    }
    lookups
}

fn upstream() -> Upstream {
    let up = Upstream::start();
    up.add(
        "api.example.com.",
        1,
        Rec::A("192.0.2.10".parse().unwrap(), 60),
    );
    up.add(
        "web.default.svc.cluster.local.",
        1,
        Rec::A("10.96.0.7".parse().unwrap(), 30),
    );
    up
}

#[test]
fn dnstap_file_is_read_by_dnstap_ldns_and_analyze_equals_the_proxys_report() {
    if !require("dnstap-ldns") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.dnstap");
    let up = upstream();
    let rt = common::proxy::runtime();
    let p = proxy(
        &up,
        &rt,
        &format!(
            "dnstap: {{output: \"file:{}\", messages: [client, forwarder]}}\n",
            file.display()
        ),
    );
    let lookups = walks(p.dns_addrs[0]);
    p.tracker().sync(true);
    let live = p.tracker().report(None);
    let tap = p.tap().unwrap().clone();
    p.shutdown(Duration::from_millis(100));
    assert_eq!(live.lookups, lookups);
    assert_eq!(tap.dropped(), 0);

    // The reference reader: one CQ and one CR per query the clients sent, and an FQ/FR pair
    // per upstream exchange.
    let out = Command::new("dnstap-ldns")
        .arg("-r")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dnstap-ldns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |m: &str| {
        text.lines()
            .filter(|l| l.contains(&format!(" {m} ")))
            .count() as u64
    };
    eprintln!("{}", text.lines().take(4).collect::<Vec<_>>().join("\n"));
    assert_eq!(count("CQ"), live.queries, "{text}");
    assert_eq!(count("CR"), live.queries);
    assert!(count("FQ") > 0 && count("FQ") == count("FR"), "{text}");
    assert_eq!(tap.written(), 2 * live.queries + count("FQ") + count("FR"));

    // ndots analyze reads the same file (client messages) to the same figures.
    let offline = common::tools::run_json(
        Command::new(env!("CARGO_BIN_EXE_ndots"))
            .arg("analyze")
            .arg(&file)
            .args(["--format", "json"]),
    );
    let live = serde_json::to_value(&live).unwrap();
    for f in [
        "lookups",
        "queries",
        "wasted_queries",
        "by_suffix",
        "by_type",
    ] {
        assert_eq!(live[f], offline[f], "{f}: live {live}\nanalyze {offline}");
    }
    assert_eq!(
        live["amplification"]["histogram"],
        offline["amplification"]["histogram"]
    );
    assert!(live["wasted_queries"].as_u64() > Some(0));
}

#[test]
fn dnstap_unix_socket_output_reaches_collect() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("collect.sock");
    socket_output_reaches_collect(ndots::collect::Listen::Unix(sock));
}

#[test]
fn dnstap_tcp_output_reaches_collect() {
    socket_output_reaches_collect(ndots::collect::Listen::Tcp("127.0.0.1:0".parse().unwrap()));
}

/// The proxy's socket output into collect's receiver: the handshake from both ends, every
/// message of the traffic, STOP/FINISH at shutdown, the same figures on both sides.
fn socket_output_reaches_collect(listen: ndots::collect::Listen) {
    let cluster = ndots::config::ClusterConfig::kubernetes("cluster.local");
    let tracker = ndots::amplify::Tracker::start_named(
        &cluster,
        &ndots::config::TrackerConfig {
            idle: Duration::from_secs(2),
            max_open_walks: 1000,
            namespace_series: ndots::config::DEFAULT_NAMESPACE_SERIES,
        },
        "collect",
    );
    let c = ndots::collect::start(&listen, tracker.clone(), ndots::capture::Options::default())
        .unwrap();
    let up = upstream();
    let rt = common::proxy::runtime();
    // collect's `Listen` prints as the proxy's `dnstap.output` is written (the bound port).
    let p = proxy(&up, &rt, &format!("dnstap: {{output: \"{}\"}}\n", c.local));
    // The writer connects at its first record; wait for the session before counting.
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut q = Vec::new();
    ndots::wire::build_query(1, "probe.example.", 1, false, &mut q).unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    while c.counters.open.load(Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the proxy never connected");
        probe.send_to(&q, p.dns_addrs[0]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let before = c.counters.frames.load(Relaxed);
    p.tracker().sync(true);
    let before_live = p.tracker().report(None).queries;
    walks(p.dns_addrs[0]);
    p.tracker().sync(true);
    let live = p.tracker().report(None);
    let tap = p.tap().unwrap().clone();
    p.shutdown(Duration::from_millis(100));
    // Shutdown ends the session with STOP / FINISH.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.counters.sessions_ok.load(Relaxed) < 1 {
        assert!(
            Instant::now() < deadline,
            "no STOP/FINISH: {:?}",
            c.counters
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let frames = c.counters.frames.load(Relaxed) - before;
    assert_eq!(frames, 2 * (live.queries - before_live), "{:?}", c.counters);
    assert_eq!(c.counters.malformed.load(Relaxed), 0);
    assert!(tap.written() >= frames);
    tracker.sync(true);
    let collected = tracker.report(None);
    assert_eq!(collected.queries, live.queries);
    assert_eq!(collected.lookups, live.lookups);
    assert_eq!(collected.wasted_queries, live.wasted_queries);
}

/// Answer times for `n` queries of cached names, one after the other: (median, p99, total).
fn time_queries(dns: SocketAddr, n: usize) -> (Duration, Duration, Duration) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut q = Vec::new();
    ndots::wire::build_query(9, "api.example.com.", 1, false, &mut q).unwrap();
    let mut b = [0u8; 1500];
    s.send_to(&q, dns).unwrap();
    s.recv(&mut b).expect("the first answer");
    let mut times = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        s.send_to(&q, dns).unwrap();
        s.recv(&mut b).expect("every query is answered");
        times.push(t.elapsed());
    }
    let total = start.elapsed();
    times.sort();
    (times[n / 2], times[n * 99 / 100], total)
}

/// A dnstap receiver that is not there, or accepts and never reads: answers come as fast as
/// without dnstap, and the messages are counted dropped.
#[test]
fn dead_dnstap_socket_never_slows_answers() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.sock");
    let stalled = dir.path().join("stalled.sock");
    // Accepts (from the backlog) and never reads nor answers the handshake.
    let listener = UnixListener::bind(&stalled).unwrap();
    let _hold = std::thread::spawn(move || {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept() {
            conns.push(c);
        }
    });
    let up = upstream();
    let rt = common::proxy::runtime();
    const N: usize = 20_000;
    let mut rows = Vec::new();
    for (what, dnstap) in [
        ("off", String::new()),
        (
            "absent socket",
            format!("dnstap: {{output: \"unix:{}\"}}\n", absent.display()),
        ),
        (
            "stalled socket",
            format!("dnstap: {{output: \"unix:{}\"}}\n", stalled.display()),
        ),
        ("off again", String::new()),
    ] {
        let p = proxy(&up, &rt, &dnstap);
        let (p50, p99, total) = time_queries(p.dns_addrs[0], N);
        let dropped = p.tap().map(|t| t.dropped());
        eprintln!(
            "dnstap {what:<15} {N} queries in {total:?}: p50 {p50:?} p99 {p99:?}; dropped {dropped:?}"
        );
        if let Some(t) = p.tap() {
            assert_eq!(t.written(), 0, "{what}: nothing can be written");
            assert!(t.dropped() > 0, "{what}: the messages are counted dropped");
        }
        rows.push((what, p50, total));
        p.shutdown(Duration::from_millis(100));
    }
    // Loose on purpose (two shared cores): a blocked writer would cost seconds per query
    // (the 2 s I/O timeout), not a fraction.
    let base = rows[0].2.max(rows[3].2);
    for (what, _, total) in &rows[1..3] {
        assert!(
            *total < base * 3 + Duration::from_secs(1),
            "dnstap {what}: {total:?} against {base:?} without"
        );
    }
}
