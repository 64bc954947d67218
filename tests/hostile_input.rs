//! Hostile input (issue 8): mutation fuzzing of the wire parser, the cache-hit patcher and the
//! request path, deterministic and bounded so it runs in CI; then a real stream of malformed
//! packets against a running proxy, and hostile TCP messages (zero-length, 65,535 bytes, a
//! length with nothing after it) and odd queries (opcodes, classes, AXFR) over TCP. Nothing may
//! panic, and the proxy keeps answering.
//!
//! `NDOTS_FUZZ_ITERS` raises the iteration count for longer local runs.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::upstream::{Rec, Upstream};
use ndots::cache::{Answer, Cache, Key, Served};
use ndots::config::{Config, FileConfig, Overrides};
use ndots::proxy::handler::{Engine, Fast, Proto};
use ndots::wire;

/// xorshift64*: a fixed seed makes every run try the same inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn iterations() -> usize {
    std::env::var("NDOTS_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// Seeds: well-formed messages of the kinds the proxy sees.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (name, qtype, edns) in [
        ("web.prod.svc.cluster.local.", 1u16, false),
        ("api.github.com.default.svc.cluster.local.", 28, true),
        ("_http._tcp.web.prod.svc.cluster.local.", 33, true),
        (".", 2, false),
    ] {
        let mut q = Vec::new();
        wire::build_query(7, name, qtype, edns, &mut q).unwrap();
        out.push(q.clone());
        // A response: answer with a compressed owner, an SOA in authority, OPT.
        let v = wire::parse_query(&q).unwrap();
        let mut r = q[..v.question.end()].to_vec();
        r[2] |= 0x80;
        r[3] = 0x80;
        r[6..12].copy_from_slice(&[0, 1, 0, 1, 0, 0]);
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 10, 0, 0, 1]);
        r.extend_from_slice(&[
            0xc0, 12, 0, 6, 0, 1, 0, 0, 0, 30, 0, 28, 1, b'a', 0xc0, 12, 1, b'b', 0xc0, 12,
        ]);
        r.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]);
        if edns {
            wire::push_opt(&mut r, true);
            r[10..12].copy_from_slice(&1u16.to_be_bytes());
        }
        assert!(wire::parse_response(&r).is_ok(), "seed response must parse");
        out.push(r);
    }
    out
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            2 => m.truncate(rng.below(m.len() + 1)),
            3 => {
                let i = rng.below(m.len() + 1);
                m.insert(i, rng.next() as u8);
            }
            4 if m.len() > 12 => {
                // Compression pointers aimed anywhere, loops included.
                let i = 12 + rng.below(m.len() - 12);
                m[i] = 0xc0 | (rng.next() as u8 & 0x3f);
                if i + 1 < m.len() {
                    m[i + 1] = rng.next() as u8;
                }
            }
            5 if m.len() >= 12 => {
                // Counts out of step with the sections.
                let i = 4 + 2 * rng.below(4);
                m[i + 1] = rng.next() as u8;
            }
            _ => {
                let n = rng.below(64);
                m.extend((0..n).map(|_| rng.next() as u8));
            }
        }
    }
    m
}

fn engine() -> Engine {
    let file = FileConfig::parse(
        "listen: [\"127.0.0.1:0\"]\nshortcut: {mode: nxdomain, zones: [github.com]}",
    )
    .unwrap();
    let o = Overrides {
        upstreams: vec![(".".into(), "127.0.0.1:9".parse().unwrap())],
        ..Default::default()
    };
    let cfg = Config::from_file_config(file, &o).unwrap();
    let cache = Arc::new(Cache::new(cfg.cache.clone()));
    Engine::new(cfg, cache, Arc::new(AtomicUsize::new(0)), None).unwrap()
}

#[test]
fn mutated_messages_never_panic_the_parser_patcher_or_request_path() {
    let seeds = seeds();
    let e = engine();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut out = Vec::new();
    let (mut answered, mut cached) = (0usize, 0usize);
    let n = iterations();
    let start = Instant::now();
    for i in 0..n {
        let pick = rng.below(seeds.len());
        let m = mutate(&mut rng, &seeds[pick]);
        let _ = wire::parse_query(&m);
        // A response that parses must be storable and renderable for any query.
        if let Ok(info) = wire::parse_response(&m) {
            let a = Answer::from_response(&m, &info, e.cache.config());
            let q = &seeds[2 * rng.below(seeds.len() / 2)];
            let v = wire::parse_query(q).unwrap();
            a.render(
                q,
                &v,
                match i % 3 {
                    0 => Served::Stale,
                    1 => Served::Fresh,
                    _ => Served::Cached(rng.below(100) as u32),
                },
                512 + rng.below(2000),
                &mut out,
            );
            assert!(wire::Header::parse(&out).is_ok());
            if let Ok(qv) = wire::parse_query(&m) {
                let key = Key::of_query(&m, &qv);
                e.cache.insert(&key, &a, Instant::now());
                cached += 1;
            }
        }
        match e.handle_fast(&m, Proto::Udp, client, Instant::now(), &mut out) {
            Fast::Answered => {
                answered += 1;
                let h = wire::Header::parse(&out).expect("every answer has a header");
                assert!(h.is_response());
            }
            Fast::Drop | Fast::Resolve { .. } | Fast::Prefetch { .. } => {}
        }
    }
    eprintln!(
        "{n} mutated messages in {:?}: {answered} answered on the fast path, {cached} stored",
        start.elapsed()
    );
    assert!(answered > n / 10, "mutations reached the answering paths");
}

#[test]
fn a_stream_of_malformed_packets_leaves_the_proxy_answering() {
    let up = Upstream::start();
    up.add(
        "web.prod.svc.cluster.local.",
        1,
        Rec::A(Ipv4Addr::new(10, 0, 0, 7), 300),
    );
    let file = FileConfig::parse("listen: [\"127.0.0.1:0\"]\nserver: {workers: 2}").unwrap();
    let o = Overrides {
        upstreams: vec![(".".into(), up.addr)],
        ..Default::default()
    };
    let mut cfg = Config::from_file_config(file, &o).unwrap();
    cfg.admin = None;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let proxy = ndots::proxy::start(cfg, rt.handle()).unwrap();
    let addr = proxy.dns_addrs[0];
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let seeds = seeds();
    let mut rng = Rng(42);
    let sent = 20_000;
    for _ in 0..sent {
        let pick = rng.below(seeds.len());
        let m = mutate(&mut rng, &seeds[pick]);
        let _ = s.send_to(&m, addr);
    }
    // Also the extremes: empty, one byte, a 65,507-byte datagram.
    for m in [vec![], vec![0u8], vec![0xffu8; 65_507]] {
        let _ = s.send_to(&m, addr);
    }
    let mut q = Vec::new();
    wire::build_query(99, "web.prod.svc.cluster.local.", 1, false, &mut q).unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    let answer = (0..5).find_map(|_| {
        c.send_to(&q, addr).unwrap();
        let n = c.recv(&mut buf).ok()?;
        wire::parse_response(&buf[..n])
            .ok()
            .filter(|r| r.header.id == 99)
    });
    assert_eq!(answer.expect("the proxy still answers").header.ancount, 1);
    let text = proxy.metrics_text();
    let malformed: f64 = text
        .lines()
        .find(|l| l.starts_with("ndots_malformed_queries_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    eprintln!("{sent} mutated packets sent; ndots_malformed_queries_total = {malformed}");
    assert!(malformed > 1000.0);
    proxy.shutdown(Duration::from_millis(200));
}

/// Over TCP (RFC 7766): a zero-length message, a 65,535-byte one of garbage, a length prefix
/// with nothing after it, and queries with other opcodes and unknown classes. Each gets an
/// answer or a closed connection, never a hang, and the proxy answers the next good query.
#[test]
fn hostile_tcp_messages_and_odd_queries_leave_the_proxy_answering() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let up = Upstream::start();
    up.add(
        "web.prod.svc.cluster.local.",
        1,
        Rec::A(Ipv4Addr::new(10, 0, 0, 7), 300),
    );
    let file =
        FileConfig::parse("listen: [\"127.0.0.1:0\"]\nserver: {workers: 1, tcp_idle_timeout: 2s}")
            .unwrap();
    let o = Overrides {
        upstreams: vec![(".".into(), up.addr)],
        ..Default::default()
    };
    let mut cfg = Config::from_file_config(file, &o).unwrap();
    cfg.admin = None;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let proxy = ndots::proxy::start(cfg, rt.handle()).unwrap();
    let addr = proxy.dns_addrs[0];

    // One framed exchange on a fresh connection: the answer, or None when the proxy closed.
    let exchange = |payload: &[u8], length: u16| -> Option<Vec<u8>> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut framed = length.to_be_bytes().to_vec();
        framed.extend_from_slice(payload);
        let _ = s.write_all(&framed);
        let mut len = [0u8; 2];
        match s.read_exact(&mut len) {
            Ok(()) => {
                let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                s.read_exact(&mut msg).ok()?;
                Some(msg)
            }
            Err(e) => {
                assert!(
                    e.kind() != std::io::ErrorKind::WouldBlock
                        && e.kind() != std::io::ErrorKind::TimedOut,
                    "the proxy neither answered nor closed within 5 s"
                );
                None
            }
        }
    };
    let mut good = Vec::new();
    wire::build_query(7, "web.prod.svc.cluster.local.", 1, false, &mut good).unwrap();
    let good_answer = |why: &str| {
        let a = exchange(&good, good.len() as u16).unwrap_or_else(|| panic!("after {why}"));
        let info = wire::parse_response(&a).unwrap();
        assert_eq!((info.header.id, info.header.ancount), (7, 1), "after {why}");
    };

    // Zero-length message; the largest message, all garbage; a length with no bytes after it
    // (the idle timeout closes it).
    assert!(
        exchange(&[], 0).is_none(),
        "a zero-length message is not a query"
    );
    good_answer("a zero-length message");
    assert!(exchange(&vec![0xff; 65_535], 65_535).is_none());
    good_answer("a 65,535-byte message");
    assert!(exchange(&[], 512).is_none());
    good_answer("a length prefix with no message");

    // Other opcodes (RFC 1035 §4.1.1: NOTIMP), an unknown class and a zone transfer: each gets
    // an answer with the client's ID.
    let mut odd = Vec::new();
    for (opcode, qclass, qtype, rcode) in [
        (4u8, 1u16, 6u16, wire::RCODE_NOTIMP), // NOTIFY
        (5, 1, 6, wire::RCODE_NOTIMP),         // UPDATE
        (15, 1, 1, wire::RCODE_NOTIMP),        // unassigned
        (0, 1, wire::TYPE_AXFR, wire::RCODE_REFUSED),
    ] {
        let mut q = Vec::new();
        wire::build_query(0x4242, "example.org.", qtype, false, &mut q).unwrap();
        q[2] = (q[2] & 0x87) | (opcode << 3);
        let end = q.len();
        q[end - 2..].copy_from_slice(&qclass.to_be_bytes());
        odd.push((q, rcode));
    }
    for (q, rcode) in &odd {
        let a = exchange(q, q.len() as u16).expect("an answer");
        let h = wire::Header::parse(&a).unwrap();
        assert!(h.is_response());
        assert_eq!((h.id, h.rcode()), (0x4242, *rcode), "{q:?}");
    }
    // An unknown class (254 is QCLASS NONE, 0xfe00 unassigned) still gets an answer.
    for qclass in [254u16, 0xfe00] {
        let mut q = Vec::new();
        wire::build_query(0x4343, "example.org.", 1, false, &mut q).unwrap();
        let end = q.len();
        q[end - 2..].copy_from_slice(&qclass.to_be_bytes());
        let a = exchange(&q, q.len() as u16).expect("an answer");
        assert_eq!(wire::Header::parse(&a).unwrap().id, 0x4343);
    }
    good_answer("odd opcodes and classes");
    proxy.shutdown(Duration::from_millis(200));
}
