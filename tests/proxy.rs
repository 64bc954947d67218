//! The caching forwarder over real UDP and TCP sockets, against a scripted authoritative
//! upstream (tests/common/upstream.rs). Each test starts its own proxy on an ephemeral port.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::upstream::{Rec, Upstream};
use ndots::config::{Config, FileConfig, Overrides};
use ndots::wire::{self, build_query, parse_response, ResponseInfo};

type Harness = common::proxy::TestProxy;

fn start_proxy(yaml_extra: &str, upstreams: &[(&str, SocketAddr)]) -> Harness {
    Harness::start(yaml_extra, upstreams)
}

fn ask_udp(
    addr: SocketAddr,
    id: u16,
    name: &str,
    qtype: u16,
    edns: bool,
) -> (Vec<u8>, ResponseInfo) {
    let mut q = Vec::new();
    build_query(id, name, qtype, edns, &mut q).unwrap();
    ask_udp_raw(addr, &q).expect("an answer")
}

fn ask_udp_raw(addr: SocketAddr, q: &[u8]) -> Option<(Vec<u8>, ResponseInfo)> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(q, addr).unwrap();
    let mut buf = [0u8; 65535];
    let n = s.recv(&mut buf).ok()?;
    let bytes = buf[..n].to_vec();
    let info = parse_response(&bytes).expect("a readable answer");
    Some((bytes, info))
}

fn ask_tcp(addr: SocketAddr, id: u16, name: &str, qtype: u16) -> (Vec<u8>, ResponseInfo) {
    let mut q = Vec::new();
    build_query(id, name, qtype, true, &mut q).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut bytes = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut bytes).unwrap();
    let info = parse_response(&bytes).unwrap();
    (bytes, info)
}

fn upstream_with_web() -> Upstream {
    let up = Upstream::start();
    up.add(
        "web.prod.svc.cluster.local.",
        wire::TYPE_A,
        Rec::A(Ipv4Addr::new(10, 0, 0, 7), 300),
    );
    up
}

#[test]
fn miss_then_hit_reaches_upstream_once() {
    let up = upstream_with_web();
    let h = start_proxy("", &[(".", up.addr)]);
    let (_, a) = ask_udp(
        h.addr,
        100,
        "web.prod.svc.cluster.local.",
        wire::TYPE_A,
        false,
    );
    let (_, b) = ask_udp(
        h.addr,
        200,
        "web.prod.svc.cluster.local.",
        wire::TYPE_A,
        false,
    );
    assert_eq!(a.rcode, 0);
    assert_eq!(a.header.ancount, 1);
    assert_eq!(b.header.ancount, 1);
    assert_eq!(a.header.id, 100);
    assert_eq!(b.header.id, 200, "the client's ID is restored on a hit");
    assert_eq!(
        up.count("web.prod.svc.cluster.local.", wire::TYPE_A),
        1,
        "second answer came from cache"
    );
}

#[test]
fn negative_answers_are_cached_for_the_soa_ttl_capped() {
    let up = upstream_with_web();
    // The upstream's SOA says 60 s; negative_max_ttl caps it at 30.
    let h = start_proxy("cache: {negative_max_ttl: 30}", &[(".", up.addr)]);
    let (_, a) = ask_udp(h.addr, 1, "missing.example.org.", wire::TYPE_A, false);
    let (_, b) = ask_udp(h.addr, 2, "missing.example.org.", wire::TYPE_A, false);
    assert_eq!(a.rcode, wire::RCODE_NXDOMAIN as u16);
    assert_eq!(b.rcode, wire::RCODE_NXDOMAIN as u16);
    assert_eq!(
        a.negative_ttl,
        Some(30),
        "RFC 2308: min(SOA TTL, MINIMUM), capped"
    );
    assert!(b.negative_ttl.unwrap() <= 30);
    assert_eq!(up.count("missing.example.org.", wire::TYPE_A), 1);
}

#[test]
fn ttl_decrements_on_hits() {
    let up = upstream_with_web();
    let h = start_proxy("", &[(".", up.addr)]);
    let (_, a) = ask_udp(
        h.addr,
        1,
        "web.prod.svc.cluster.local.",
        wire::TYPE_A,
        false,
    );
    std::thread::sleep(Duration::from_millis(2100));
    let (_, b) = ask_udp(
        h.addr,
        2,
        "web.prod.svc.cluster.local.",
        wire::TYPE_A,
        false,
    );
    assert_eq!(a.min_answer_ttl, Some(300));
    let t = b.min_answer_ttl.unwrap();
    assert!((297..=298).contains(&t), "TTL after ~2 s is {t}");
}

#[test]
fn question_case_is_restored_0x20() {
    let up = upstream_with_web();
    let h = start_proxy("", &[(".", up.addr)]);
    ask_udp(
        h.addr,
        1,
        "web.prod.svc.cluster.local.",
        wire::TYPE_A,
        false,
    );
    let (bytes, info) = ask_udp(
        h.addr,
        2,
        "wEb.PrOd.SvC.cluster.LOCAL.",
        wire::TYPE_A,
        false,
    );
    assert_eq!(info.header.ancount, 1);
    let q = info.question.unwrap();
    let mut expect = Vec::new();
    wire::encode_name("wEb.PrOd.SvC.cluster.LOCAL.", &mut expect).unwrap();
    assert_eq!(q.name_bytes(&bytes), &expect[..]);
}

#[test]
fn truncated_upstream_answer_is_retried_over_tcp() {
    let up = Upstream::start();
    up.add("big.test.", 16, Rec::BigTxt(3000, 300));
    let h = start_proxy("", &[(".", up.addr)]);
    // Over UDP the 3 KB answer does not fit the client's 1232 bytes: TC.
    let (_, udp) = ask_udp(h.addr, 1, "big.test.", 16, true);
    assert!(udp.header.tc(), "client gets TC over UDP");
    let seen = up.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s.tcp),
        "the proxy retried over TCP: {seen:?}"
    );
    // The client retries over TCP and gets the whole answer, from the cache. Only TXT queries
    // count: the proxy's own SOA health and HINFO loop probes may reach the upstream meanwhile
    // (a CI run saw one land between the two reads).
    let before = up.total_of_type(16);
    let (bytes, tcp) = ask_tcp(h.addr, 2, "big.test.", 16);
    assert!(!tcp.header.tc());
    assert_eq!(tcp.header.ancount, 1);
    assert!(bytes.len() > 3000);
    assert_eq!(up.total_of_type(16), before, "TCP answer came from cache");
}

#[test]
fn failover_when_the_first_upstream_is_down() {
    // A bound socket that never answers: the first server times out.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up = upstream_with_web();
    let h = start_proxy("", &[(".", dead.local_addr().unwrap()), (".", up.addr)]);
    let (_, a) = ask_udp(
        h.addr,
        1,
        "web.prod.svc.cluster.local.",
        wire::TYPE_A,
        false,
    );
    assert_eq!(a.header.ancount, 1);
    assert_eq!(up.count("web.prod.svc.cluster.local.", wire::TYPE_A), 1);
}

#[test]
fn serve_stale_when_all_upstreams_are_down() {
    let up = Upstream::start();
    up.add(
        "short.test.",
        wire::TYPE_A,
        Rec::A(Ipv4Addr::new(192, 0, 2, 1), 1),
    );
    let h = start_proxy("", &[(".", up.addr)]);
    let (_, a) = ask_udp(h.addr, 1, "short.test.", wire::TYPE_A, false);
    assert_eq!(a.min_answer_ttl, Some(1));
    up.silent.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500));
    let (_, b) = ask_udp(h.addr, 2, "short.test.", wire::TYPE_A, false);
    assert_eq!(b.rcode, 0);
    assert_eq!(b.header.ancount, 1, "stale answer served");
    assert_eq!(
        b.min_answer_ttl,
        Some(ndots::cache::STALE_TTL),
        "RFC 8767 stale TTL"
    );
    // A name never cached gets SERVFAIL, not a hang.
    let (_, c) = ask_udp(h.addr, 3, "never.test.", wire::TYPE_A, false);
    assert_eq!(c.rcode, wire::RCODE_SERVFAIL as u16);
}

#[test]
fn concurrent_identical_queries_are_coalesced() {
    let up = upstream_with_web();
    up.delay_ms.store(150, Ordering::Relaxed);
    let h = start_proxy("", &[(".", up.addr)]);
    let addr = h.addr;
    let n = 40;
    let threads: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || {
                ask_udp(
                    addr,
                    i as u16,
                    "web.prod.svc.cluster.local.",
                    wire::TYPE_A,
                    false,
                )
            })
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(answers
        .iter()
        .enumerate()
        .all(|(i, (_, a))| a.header.ancount == 1 && a.header.id == i as u16));
    assert_eq!(
        up.count("web.prod.svc.cluster.local.", wire::TYPE_A),
        1,
        "{n} identical queries, one upstream query"
    );
}

#[test]
fn malformed_packets_do_not_stop_the_proxy() {
    let up = upstream_with_web();
    let h = start_proxy("", &[(".", up.addr)]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut good = Vec::new();
    build_query(9, "web.prod.svc.cluster.local.", 1, false, &mut good).unwrap();
    let mut loop_ptr = good[..12].to_vec();
    loop_ptr.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 2, 3],
        good[..14].to_vec(),
        loop_ptr.clone(),
        vec![0xff; 600],
        {
            let mut r = good.clone();
            r[2] |= 0x80;
            r
        },
        {
            let mut r = good.clone();
            r[5] = 2;
            r
        },
        {
            let mut r = good.clone();
            r[12] = 0x7f;
            r
        },
    ];
    let mut formerr = 0;
    for g in &garbage {
        s.send_to(g, h.addr).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok(n) = s.recv(&mut buf) {
            let hd = wire::Header::parse(&buf[..n]).unwrap();
            assert_eq!(hd.rcode(), wire::RCODE_FORMERR);
            formerr += 1;
        }
    }
    // Queries with a readable header get FORMERR: the cut question, the pointer loop, two
    // questions, the label overflow. The rest (no header, or a response) are dropped.
    assert_eq!(formerr, 4, "packets with a query header get FORMERR");
    let (_, a) = ask_udp(h.addr, 10, "web.prod.svc.cluster.local.", 1, false);
    assert_eq!(a.header.ancount, 1, "the next good query is answered");
    let text = h.proxy.as_ref().unwrap().metrics_text();
    let line = text
        .lines()
        .find(|l| l.starts_with("ndots_malformed_queries_total"))
        .expect("metric present");
    let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(v >= garbage.len() as f64, "{line}");
}

#[test]
fn routes_zones_to_their_servers() {
    let cluster = upstream_with_web();
    let outside = Upstream::start();
    outside.add(
        "api.github.com.",
        1,
        Rec::A(Ipv4Addr::new(140, 82, 112, 6), 60),
    );
    let h = start_proxy("", &[("cluster.local", cluster.addr), (".", outside.addr)]);
    ask_udp(h.addr, 1, "web.prod.svc.cluster.local.", 1, false);
    ask_udp(h.addr, 2, "api.github.com.", 1, false);
    // (Each upstream also gets the readiness probe for its zone's SOA.)
    assert_eq!(cluster.count("web.prod.svc.cluster.local.", 1), 1);
    assert_eq!(cluster.count("api.github.com.", 1), 0);
    assert_eq!(outside.count("api.github.com.", 1), 1);
    assert_eq!(outside.count("web.prod.svc.cluster.local.", 1), 0);
}

#[test]
fn force_tcp_upstream() {
    let up = upstream_with_web();
    let file = FileConfig::parse(&format!(
        "listen: [\"127.0.0.1:0\"]\nupstreams:\n  - zone: .\n    servers: [\"{}\"]\n    protocol: tcp\n",
        up.addr
    ))
    .unwrap();
    let mut cfg = Config::from_file_config(file, &Overrides::default()).unwrap();
    cfg.admin = None;
    let h = Harness::with_config(cfg);
    let (_, a) = ask_udp(h.addr, 1, "web.prod.svc.cluster.local.", 1, false);
    assert_eq!(a.header.ancount, 1);
    let seen = up.seen.lock().unwrap().clone();
    assert!(!seen.is_empty() && seen.iter().all(|s| s.tcp), "{seen:?}");
    let _ = &h.rt;
}

#[test]
fn answers_within_the_client_udp_size() {
    let up = Upstream::start();
    up.add("mid.test.", 16, Rec::BigTxt(700, 300));
    let h = start_proxy("", &[(".", up.addr)]);
    // With EDNS (1232) the 700-byte answer fits; without EDNS (512) it is truncated.
    let (b1, a) = ask_udp(h.addr, 1, "mid.test.", 16, true);
    assert!(!a.header.tc());
    assert!(b1.len() > 700 && a.edns.is_some());
    let (b2, b) = ask_udp(h.addr, 2, "mid.test.", 16, false);
    assert!(b.header.tc());
    assert!(b2.len() <= 512);
    assert!(b.edns.is_none(), "no OPT to a client that sent none");
}

#[test]
fn popular_entries_are_prefetched_before_they_expire() {
    let up = Upstream::start();
    up.add(
        "popular.test.",
        wire::TYPE_A,
        Rec::A(Ipv4Addr::new(192, 0, 2, 9), 10),
    );
    let h = start_proxy("", &[(".", up.addr)]);
    ask_udp(h.addr, 1, "popular.test.", 1, false);
    ask_udp(h.addr, 2, "popular.test.", 1, false);
    ask_udp(h.addr, 3, "popular.test.", 1, false);
    assert_eq!(up.count("popular.test.", 1), 1);
    // In the last 10% of the TTL a hit is still answered from cache and triggers a refresh.
    std::thread::sleep(Duration::from_millis(9200));
    let (_, a) = ask_udp(h.addr, 4, "popular.test.", 1, false);
    assert_eq!(a.min_answer_ttl, Some(1), "answered from cache");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while up.count("popular.test.", 1) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no prefetch reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // After the old entry's expiry the refreshed one answers, with no new upstream query.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, b) = ask_udp(h.addr, 5, "popular.test.", 1, false);
    assert!(
        b.min_answer_ttl.unwrap() >= 8,
        "refreshed entry: {:?}",
        b.min_answer_ttl
    );
    assert_eq!(up.count("popular.test.", 1), 2);
}

/// Found in review: a prefetch whose answer could not be cached (here a zero TTL) left the
/// entry marked as prefetching, so no later hit refreshed it before it expired.
#[test]
fn an_uncacheable_prefetch_answer_stopped_later_prefetches() {
    let up = Upstream::start();
    up.add(
        "flaky-ttl.test.",
        wire::TYPE_A,
        Rec::A(Ipv4Addr::new(192, 0, 2, 9), 10),
    );
    let h = start_proxy("", &[(".", up.addr)]);
    for id in 1..=3 {
        ask_udp(h.addr, id, "flaky-ttl.test.", 1, false);
    }
    assert_eq!(up.count("flaky-ttl.test.", 1), 1);
    up.replace(
        "flaky-ttl.test.",
        wire::TYPE_A,
        Rec::A(Ipv4Addr::new(192, 0, 2, 9), 0),
    );
    // In the last 10% of the TTL: each hit is answered from cache; the first refreshes and
    // gets a zero TTL back, which is not cached, so the next hit refreshes again.
    std::thread::sleep(Duration::from_millis(9200));
    let until = |want: usize| {
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while up.count("flaky-ttl.test.", 1) < want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        up.count("flaky-ttl.test.", 1)
    };
    let (_, a) = ask_udp(h.addr, 4, "flaky-ttl.test.", 1, false);
    assert_eq!(a.min_answer_ttl, Some(1), "answered from cache");
    assert_eq!(until(2), 2, "the first prefetch");
    // The flag clears once the proxy has the refresh's answer, a moment after the upstream
    // saw the query: hits until one prefetches again, each from cache (a miss of the expired
    // entry would reach the upstream too).
    let deadline = std::time::Instant::now() + Duration::from_millis(400);
    let mut id = 5;
    while up.count("flaky-ttl.test.", 1) < 3 && std::time::Instant::now() < deadline {
        let (_, b) = ask_udp(h.addr, id, "flaky-ttl.test.", 1, false);
        assert_eq!(
            b.min_answer_ttl,
            Some(1),
            "a hit, not a miss of the expired entry"
        );
        id += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        until(3),
        3,
        "a hit after the uncacheable refresh prefetches again"
    );
}

fn shortcut_upstream() -> Upstream {
    let up = upstream_with_web();
    up.add(
        "api.github.com.",
        wire::TYPE_A,
        Rec::A(Ipv4Addr::new(140, 82, 112, 6), 60),
    );
    up
}

#[test]
fn nxdomain_shortcut_answers_expansions_locally_with_an_soa() {
    let up = shortcut_upstream();
    let h = start_proxy(
        "shortcut: {mode: nxdomain, zones: [github.com]}\ncluster: {node_search: [ec2.internal]}",
        &[(".", up.addr)],
    );
    for name in [
        "api.github.com.default.svc.cluster.local.",
        // (api.github.com.svc.cluster.local. is not here: it reads as pod `api` of service
        // `github` in a namespace `com`, which the schema allows, so it is always forwarded.)
        "api.github.com.cluster.local.",
        "api.github.com.ec2.internal.",
        // Not in a configured zone, but the Kubernetes schema rules it out.
        "www.example.org.default.svc.cluster.local.",
    ] {
        let (bytes, r) = ask_udp(h.addr, 1, name, wire::TYPE_A, true);
        assert_eq!(r.rcode, wire::RCODE_NXDOMAIN as u16, "{name}");
        assert_eq!(
            r.negative_ttl,
            Some(30),
            "{name}: SOA with the negative TTL"
        );
        assert!(r.edns.is_some());
        assert!(bytes.len() < 200);
        assert_eq!(
            up.count(name, wire::TYPE_A),
            0,
            "{name} never reached upstream"
        );
    }
    // The real name and in-cluster names are forwarded untouched.
    let (_, r) = ask_udp(h.addr, 2, "api.github.com.", wire::TYPE_A, false);
    assert_eq!(r.header.ancount, 1);
    let (_, r) = ask_udp(
        h.addr,
        3,
        "web.prod.svc.cluster.local.",
        wire::TYPE_A,
        false,
    );
    assert_eq!(r.header.ancount, 1);
    assert_eq!(up.count("web.prod.svc.cluster.local.", 1), 1);
    let text = h.proxy.as_ref().unwrap().metrics_text();
    assert!(
        text.contains("ndots_shortcut_answers_total{mode=\"nxdomain\",reason=\"zone\"}"),
        "{text}"
    );
    assert!(text.contains("ndots_shortcut_answers_total{mode=\"nxdomain\",reason=\"schema\"}"));
}

#[test]
fn autopath_answers_with_a_cname_and_a_aaaa_agree() {
    let up = shortcut_upstream();
    let h = start_proxy(
        "shortcut: {mode: autopath, zones: [github.com]}",
        &[(".", up.addr)],
    );
    let q = "api.github.com.default.svc.cluster.local.";
    let (bytes, a) = ask_udp(h.addr, 1, q, wire::TYPE_A, true);
    assert_eq!(a.rcode, 0);
    let m = hickory_proto::op::Message::from_vec(&bytes).unwrap();
    assert_eq!(m.answers.len(), 2, "{m:?}");
    assert_eq!(m.answers[0].name.to_ascii(), q);
    assert!(
        matches!(&m.answers[0].data, hickory_proto::rr::RData::CNAME(c) if c.0.to_ascii() == "api.github.com.")
    );
    assert!(
        matches!(&m.answers[1].data, hickory_proto::rr::RData::A(ip) if ip.0 == Ipv4Addr::new(140, 82, 112, 6))
    );
    // AAAA for the same name: api.github.com. has no AAAA, the name exists: NOERROR, never
    // NXDOMAIN (A and AAAA agree on existence), and NODATA without the CNAME, so a client
    // asking AAAA alone walks on as it would past the target's own NODATA.
    let (bytes, aaaa) = ask_udp(h.addr, 2, q, wire::TYPE_AAAA, true);
    assert_eq!(aaaa.rcode, 0);
    let m = hickory_proto::op::Message::from_vec(&bytes).unwrap();
    assert!(m.answers.is_empty(), "{m:?}");
    assert_eq!(m.authorities.len(), 1, "NODATA with an SOA: {m:?}");
    // The expansions themselves never reached upstream; the real name did, once per type.
    assert_eq!(up.count(q, 1), 0);
    assert_eq!(up.count("api.github.com.", 1), 1);
    // A base that does not exist: NXDOMAIN.
    let (_, nx) = ask_udp(
        h.addr,
        3,
        "nope.github.com.default.svc.cluster.local.",
        wire::TYPE_A,
        true,
    );
    assert_eq!(nx.rcode, wire::RCODE_NXDOMAIN as u16);
}

#[test]
fn shadow_forwards_and_counts_disagreements() {
    let up = shortcut_upstream();
    // A zone listed by mistake: web.prod.svc.cluster.local. exists, but schema-allowed names are
    // never shortcut, so list a zone whose expansion exists upstream instead.
    up.add(
        "api.github.com.ec2.internal.",
        wire::TYPE_A,
        Rec::A(Ipv4Addr::new(10, 1, 1, 1), 60),
    );
    let h = start_proxy(
        "shortcut: {mode: shadow, zones: [github.com]}\ncluster: {node_search: [ec2.internal]}",
        &[(".", up.addr)],
    );
    let (_, r) = ask_udp(
        h.addr,
        1,
        "api.github.com.ec2.internal.",
        wire::TYPE_A,
        false,
    );
    assert_eq!(r.header.ancount, 1, "shadow changes no answer");
    let (_, r) = ask_udp(
        h.addr,
        2,
        "api.github.com.cluster.local.",
        wire::TYPE_A,
        false,
    );
    assert_eq!(r.rcode, wire::RCODE_NXDOMAIN as u16);
    assert_eq!(up.count("api.github.com.ec2.internal.", 1), 1);
    assert_eq!(up.count("api.github.com.cluster.local.", 1), 1);
    let text = h.proxy.as_ref().unwrap().metrics_text();
    let line = text
        .lines()
        .find(|l| l.starts_with("ndots_shadow_disagreements_total"))
        .expect("counted");
    assert!(line.ends_with(" 1"), "{line}");
}

#[test]
fn rfc8020_ancestor_check_keeps_names_of_a_real_namespace() {
    let up = shortcut_upstream();
    // Namespace `com` exists here, with service `github` and its pod `api`.
    up.add(
        "api.github.com.svc.cluster.local.",
        wire::TYPE_A,
        Rec::A(Ipv4Addr::new(10, 2, 0, 1), 30),
    );
    let h = start_proxy(
        "shortcut: {mode: nxdomain, zones: [github.com, example.com]}",
        &[(".", up.addr)],
    );
    let (_, r) = ask_udp(
        h.addr,
        1,
        "api.github.com.svc.cluster.local.",
        wire::TYPE_A,
        false,
    );
    assert_eq!(
        r.header.ancount, 1,
        "the real pod's address, not a shortcut"
    );
    // `www.example.com.svc.cluster.local.` reads as pod `www` of service `example` in `com`.
    up.add(
        "www.example.com.",
        wire::TYPE_A,
        Rec::A(Ipv4Addr::new(192, 0, 2, 80), 30),
    );
    let (_, r) = ask_udp(
        h.addr,
        2,
        "www.example.com.svc.cluster.local.",
        wire::TYPE_A,
        false,
    );
    assert_eq!(r.rcode, wire::RCODE_NXDOMAIN as u16);
    // Namespace `com` exists (names below it do), service `example` does not: the second
    // ancestor is NXDOMAIN, so nothing under it can exist (RFC 8020).
    assert_eq!(up.count("www.example.com.svc.cluster.local.", 1), 0);
    assert_eq!(up.count("example.com.svc.cluster.local.", 1), 1);
    assert_eq!(
        up.count("com.svc.cluster.local.", 1),
        1,
        "one ancestor query serves every name below"
    );
}

#[test]
fn clients_outside_allow_are_refused_and_counted() {
    let up = upstream_with_web();
    let h = start_proxy("allow: [\"10.0.0.0/8\"]", &[(".", up.addr)]);
    let (bytes, r) = ask_udp(
        h.addr,
        1,
        "web.prod.svc.cluster.local.",
        wire::TYPE_A,
        false,
    );
    assert_eq!(r.rcode, wire::RCODE_REFUSED as u16);
    assert!(
        bytes.len() <= 12 + 32,
        "a refusal is no larger than the query"
    );
    assert_eq!(up.count("web.prod.svc.cluster.local.", 1), 0);
    let text = h.proxy.as_ref().unwrap().metrics_text();
    assert!(
        text.contains("ndots_refused_queries_total{reason=\"client\"}"),
        "{text}"
    );
}

/// ANY was answered locally with HINFO, even for names that do not exist (RFC 8482 §4.2 says
/// NXDOMAIN) and CNAME owners (the CNAME). It is forwarded now; the upstream applies RFC 8482.
#[test]
fn any_for_a_missing_name_is_nxdomain_not_hinfo() {
    let up = upstream_with_web();
    let h = start_proxy("", &[(".", up.addr)]);
    let (_, r) = ask_udp(h.addr, 1, "missing.example.org.", wire::TYPE_ANY, true);
    assert_eq!(r.rcode, wire::RCODE_NXDOMAIN as u16);
    assert_eq!(r.header.ancount, 0);
    assert_eq!(up.total_of_type(wire::TYPE_ANY), 1, "ANY goes upstream");
}

/// The TCP reader takes every query a client has sent with one read and cuts the stream into
/// messages itself (issue 20): a stream split anywhere, the length prefix included, and hits
/// and misses in one read, each get their answer with their ID.
#[test]
fn tcp_queries_split_anywhere_in_the_stream_are_each_answered() {
    let up = upstream_with_web();
    up.add(
        "other.test.",
        wire::TYPE_A,
        Rec::A(Ipv4Addr::new(10, 0, 0, 8), 300),
    );
    let h = start_proxy("", &[(".", up.addr)]);
    ask_tcp(h.addr, 1, "web.prod.svc.cluster.local.", wire::TYPE_A); // cached from now on
    let mut stream = Vec::new();
    const N: u16 = 60;
    for id in 0..N {
        // every fifth a miss (coalesced upstream), the rest cache hits
        let name = if id % 5 == 0 {
            "other.test."
        } else {
            "web.prod.svc.cluster.local."
        };
        let mut q = Vec::new();
        build_query(id, name, wire::TYPE_A, false, &mut q).unwrap();
        stream.extend_from_slice(&(q.len() as u16).to_be_bytes());
        stream.extend_from_slice(&q);
    }
    let mut s = TcpStream::connect(h.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The first half in pieces of 1 to 7 bytes, each its own segment; the rest at once.
    let (pieces, rest) = stream.split_at(stream.len() / 2);
    let mut at = 0;
    for size in (1..=7).cycle() {
        if at >= pieces.len() {
            break;
        }
        let end = (at + size).min(pieces.len());
        s.write_all(&pieces[at..end]).unwrap();
        at = end;
        std::thread::sleep(Duration::from_millis(2));
    }
    s.write_all(rest).unwrap();
    let mut seen = vec![false; N as usize];
    for _ in 0..N {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).expect("an answer for every query");
        let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut m).unwrap();
        let info = parse_response(&m).unwrap();
        assert_eq!((info.rcode, info.header.ancount), (0, 1));
        let id = info.header.id as usize;
        assert!(
            !std::mem::replace(&mut seen[id], true),
            "answered twice: {id}"
        );
    }
    assert!(seen.iter().all(|x| *x));
}
