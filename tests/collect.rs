//! `ndots collect`, the dnstap receiver (issue 18, DESIGN §9 "dnstap"):
//! - the Frame Streams handshake both ways, many senders at once, malformed frames counted and
//!   skipped, broken sessions ending only themselves (in-process, hand-written senders);
//! - a real sender: unbound streams its CLIENT_* messages over a unix socket to the binary
//!   while glibc and musl clients walk through it in a network namespace, and `/report` equals
//!   `ndots analyze` of a tshark pcap of the same traffic.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;

use common::clients::{build_musl_client, glibc_lookup, musl_lookup, ClientEnv};
use common::netns;
use common::tools::{free_port, http_get, require, Proc};
use ndots::amplify::Tracker;
use ndots::capture::dnstap::{
    control_frame, pb, CONTENT_TYPE, CONTROL_ACCEPT, CONTROL_FINISH, CONTROL_READY, CONTROL_START,
    CONTROL_STOP,
};
use ndots::collect::{self, Listen};
use ndots::config::{ClusterConfig, TrackerConfig};
use ndots::search::Family;

fn cluster() -> ClusterConfig {
    ClusterConfig::kubernetes("cluster.local")
}

/// One dnstap MESSAGE frame body for a CLIENT_QUERY or CLIENT_RESPONSE.
fn dnstap(query: bool, client: [u8; 4], port: u32, dns: Vec<u8>, t_us: u64) -> Vec<u8> {
    use pb::message::Type::*;
    let (sec, nsec) = (t_us / 1_000_000, (t_us % 1_000_000) as u32 * 1000);
    let m = pb::Message {
        r#type: if query { ClientQuery } else { ClientResponse } as i32,
        query_address: Some(client.to_vec()),
        query_port: Some(port),
        query_time_sec: query.then_some(sec),
        query_time_nsec: query.then_some(nsec),
        response_time_sec: (!query).then_some(sec),
        response_time_nsec: (!query).then_some(nsec),
        query_message: query.then(|| dns.clone()),
        response_message: (!query).then_some(dns),
        ..Default::default()
    };
    pb::Dnstap {
        r#type: pb::dnstap::Type::Message as i32,
        message: Some(m),
        ..Default::default()
    }
    .encode_to_vec()
}

fn data_frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// A pod's full walk for `base` (three NXDOMAIN expansions, then the name itself, NOERROR):
/// 8 frames, queries and responses interleaved as a server logs them.
fn walk_frames(client: [u8; 4], id: u16, base: &str, t_us: &mut u64) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for (i, suffix) in [
        "ns1.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
        "",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("{base}.{suffix}");
        let mut q = Vec::new();
        ndots::wire::build_query(id.wrapping_add(i as u16), &name, 1, false, &mut q).unwrap();
        let v = ndots::wire::parse_query(&q).unwrap();
        let mut r = Vec::new();
        let rcode = if suffix.is_empty() { 0 } else { 3 };
        ndots::wire::minimal_response(&q, &v, rcode, false, &mut r);
        frames.push(dnstap(true, client, 40_000, q, *t_us));
        frames.push(dnstap(false, client, 40_000, r, *t_us + 300));
        *t_us += 1000;
    }
    frames
}

fn read_control(s: &mut UnixStream) -> (u32, Vec<u8>) {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).expect("a control frame");
    assert_eq!(&head[..4], &[0, 0, 0, 0], "an escape, not a data frame");
    let len = u32::from_be_bytes(head[4..8].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (u32::from_be_bytes(body[..4].try_into().unwrap()), body)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Eight bidirectional senders at once plus one unidirectional one, each with garbage frames
/// among its walks; two senders that break the protocol end only their own session.
#[test]
fn collect_handshake_many_senders_and_malformed_frames_skipped() {
    ndots::metrics::install();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("dnstap.sock");
    let tracker = Tracker::start_named(
        &cluster(),
        &TrackerConfig {
            idle: Duration::from_secs(2),
            max_open_walks: 100_000,
            namespace_series: ndots::config::DEFAULT_NAMESPACE_SERIES,
        },
        "collect-test",
    );
    let c = collect::start(
        &Listen::Unix(sock.clone()),
        tracker.clone(),
        ndots::capture::Options::default(),
    )
    .unwrap();

    const SENDERS: u8 = 8;
    const WALKS: u16 = 150;
    let t0 = now_us();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut conn = UnixStream::connect(&sock).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                // READY offers another type first, then dnstap's.
                let mut body = CONTROL_READY.to_be_bytes().to_vec();
                for t in [&b"protobuf:other"[..], CONTENT_TYPE] {
                    body.extend_from_slice(&1u32.to_be_bytes());
                    body.extend_from_slice(&(t.len() as u32).to_be_bytes());
                    body.extend_from_slice(t);
                }
                let mut ready = 0u32.to_be_bytes().to_vec();
                ready.extend_from_slice(&(body.len() as u32).to_be_bytes());
                ready.extend_from_slice(&body);
                conn.write_all(&ready).unwrap();
                let (ctype, accept) = read_control(&mut conn);
                assert_eq!(ctype, CONTROL_ACCEPT);
                assert!(accept
                    .windows(CONTENT_TYPE.len())
                    .any(|w| w == CONTENT_TYPE));
                conn.write_all(&control_frame(CONTROL_START, Some(CONTENT_TYPE)))
                    .unwrap();
                let mut t = t0 + s as u64 * 10_000_000;
                let mut out = Vec::new();
                for w in 0..WALKS {
                    for f in
                        walk_frames([10, 0, s, 1], w * 4, &format!("svc{w}.example.com"), &mut t)
                    {
                        out.extend(data_frame(&f));
                    }
                    if w % 50 == 0 {
                        out.extend(data_frame(b"\x08\x01garbage that is no protobuf"));
                    }
                }
                conn.write_all(&out).unwrap();
                conn.write_all(&control_frame(CONTROL_STOP, None)).unwrap();
                let (ctype, _) = read_control(&mut conn);
                assert_eq!(ctype, CONTROL_FINISH);
            })
        })
        .collect();
    // Unidirectional: START, data, STOP, and the sender closes.
    {
        let mut conn = UnixStream::connect(&sock).unwrap();
        let mut out = control_frame(CONTROL_START, Some(CONTENT_TYPE));
        let mut t = t0 + 100_000_000;
        for f in walk_frames([10, 1, 0, 1], 7, "uni.example.com", &mut t) {
            out.extend(data_frame(&f));
        }
        out.extend(control_frame(CONTROL_STOP, None));
        conn.write_all(&out).unwrap();
    }
    // Broken: READY without dnstap's content type (no ACCEPT, closed), and a frame length
    // past any credible size after START.
    {
        let mut conn = UnixStream::connect(&sock).unwrap();
        conn.write_all(&control_frame(CONTROL_READY, Some(b"protobuf:other")))
            .unwrap();
        let mut b = [0u8; 1];
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(conn.read(&mut b).unwrap(), 0, "closed without ACCEPT");
        let mut conn = UnixStream::connect(&sock).unwrap();
        let mut out = control_frame(CONTROL_START, Some(CONTENT_TYPE));
        out.extend_from_slice(&u32::MAX.to_be_bytes());
        conn.write_all(&out).unwrap();
    }
    for s in senders {
        s.join().unwrap();
    }
    let counters = &c.counters;
    let deadline = Instant::now() + Duration::from_secs(20);
    use std::sync::atomic::Ordering::Relaxed;
    while counters.sessions_ok.load(Relaxed) + counters.sessions_error.load(Relaxed) < 11
        || counters.open.load(Relaxed) > 0
    {
        assert!(
            Instant::now() < deadline,
            "sessions did not end: {counters:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(counters.sessions_ok.load(Relaxed), SENDERS as u64 + 1);
    assert_eq!(counters.sessions_error.load(Relaxed), 2);
    let garbage = SENDERS as u64 * WALKS.div_ceil(50) as u64;
    assert_eq!(counters.malformed.load(Relaxed), garbage);
    let walks = SENDERS as u64 * WALKS as u64 + 1;
    assert_eq!(counters.frames.load(Relaxed), walks * 8 + garbage);
    tracker.sync(true);
    let r = tracker.report(None);
    assert_eq!(r.lookups, walks, "{r:?}");
    assert_eq!(r.queries, walks * 4);
    assert_eq!(r.wasted_queries, walks * 3);
    assert_eq!(r.amplification.max, 4);
    assert_eq!(r.dropped_events, 0);
}

fn ndots() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ndots"))
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

const UNBOUND_ZONE: &[(&str, &str)] = &[
    ("web.ns1.svc.cluster.local.", "A 10.96.0.7"),
    ("db.ns2.svc.cluster.local.", "A 10.96.0.8"),
    ("api.example.com.", "A 192.0.2.10"),
    ("api.example.com.", "AAAA 2001:db8::10"),
    ("cdn.example.net.", "A 192.0.2.11"),
];

/// The acceptance test of issue 18's first point.
#[test]
fn unbound_dnstap_report_equals_pcap_analysis() {
    let Some(ns) = netns::enter("unbound_dnstap_report_equals_pcap_analysis") else {
        return;
    };
    if !require("unbound") || !require("tshark") {
        return;
    }
    ns.set_resolv_conf(
        "search ns1.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 127.0.0.1\noptions ndots:5\n",
    );
    let dir = ns.scratch();
    let sock = dir.join("dnstap.sock");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let collector = Proc(
        ndots()
            .args(["collect", "--listen", &format!("unix:{}", sock.display())])
            .args(["--admin", &admin.to_string()])
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(admin, "/healthz").is_none() || !sock.exists() {
        assert!(Instant::now() < deadline, "collect did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // tshark first: its stdout is flushed per packet, so a canary shows it is capturing.
    let pcap = dir.join("unbound.pcap");
    let mut tshark = Proc(
        Command::new("tshark")
            .args(["-i", "lo", "-f", "udp port 53 or udp port 9", "-w", "-"])
            .stdout(std::fs::File::create(&pcap).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let size = || std::fs::metadata(&pcap).map_or(0, |m| m.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    while size() == 0 {
        assert!(Instant::now() < deadline, "tshark wrote no file header");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let header_only = size();
    let canary = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    while size() == header_only {
        assert!(Instant::now() < deadline, "tshark never captured a canary");
        let _ = canary.send_to(b"canary", "127.0.0.1:9");
        std::thread::sleep(Duration::from_millis(50));
    }

    let conf = unbound_conf(dir, &sock);
    let unbound = Proc(
        Command::new("unbound")
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Ready when the dnstap session is up (unbound connects at start, bidirectionally).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = http_get(admin, "/metrics").unwrap().1;
        if metric(&m, "ndots_collect_connections") >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "unbound never connected:\n{m}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let musl = build_musl_client(dir);
    let names = [
        "web",
        "db.ns2",
        "api.example.com",
        "cdn.example.net",
        "nothing.example",
    ];
    let env = ClientEnv::default();
    let mut resolved = 0;
    for name in names {
        for family in [Family::Unspec, Family::Inet] {
            resolved += glibc_lookup(name, family, env).is_some() as u32;
            if let Some(m) = &musl {
                resolved += musl_lookup(m, name, family, env).is_some() as u32;
            }
        }
    }
    assert!(
        resolved >= 8,
        "the clients resolved through unbound ({resolved})"
    );

    // Every DNS message tshark saw arrives at the collector as a dnstap frame.
    std::thread::sleep(Duration::from_millis(500));
    tshark.signal(libc::SIGINT);
    let _ = tshark.0.wait();
    let dns_messages = {
        let out = Command::new("tshark")
            .args(["-r"])
            .arg(&pcap)
            .args(["-Y", "dns", "-T", "fields", "-e", "frame.number"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count() as u64
    };
    assert!(dns_messages > 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = http_get(admin, "/metrics").unwrap().1;
        let frames = metric(&m, "ndots_collect_frames_total");
        if frames >= dns_messages {
            assert_eq!(frames, dns_messages, "one dnstap message per DNS message");
            assert_eq!(metric(&m, "ndots_collect_malformed_frames_total"), 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{frames} frames of {dns_messages} DNS messages reached collect"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Walks close after the tracker's idle window (2 s) with no traffic.
    std::thread::sleep(Duration::from_millis(3000));
    let live: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/report").unwrap().1).unwrap();
    drop(unbound);
    drop(collector);
    let offline =
        common::tools::run_json(ndots().arg("analyze").arg(&pcap).args(["--format", "json"]));
    eprintln!(
        "collect: lookups {} queries {} wasted {} histogram {}\nanalyze: lookups {} queries {} wasted {} histogram {}",
        live["lookups"], live["queries"], live["wasted_queries"], live["amplification"]["histogram"],
        offline["lookups"], offline["queries"], offline["wasted_queries"], offline["amplification"]["histogram"],
    );
    assert!(live["wasted_queries"].as_u64() > Some(0), "{live}");
    for f in [
        "lookups",
        "queries",
        "wasted_queries",
        "by_suffix",
        "by_type",
    ] {
        assert_eq!(
            live[f], offline[f],
            "{f}: collect {live}\nanalyze {offline}"
        );
    }
    assert_eq!(
        live["amplification"]["histogram"],
        offline["amplification"]["histogram"]
    );
}

fn unbound_conf(dir: &Path, sock: &Path) -> std::path::PathBuf {
    use std::fmt::Write as _;
    let mut conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: 53\n  do-daemonize: no\n  chroot: \"\"\n  \
         username: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  \
         logfile: \"\"\n  do-ip6: no\n  module-config: \"iterator\"\n  \
         local-zone: \".\" static\n",
        d = dir.display()
    );
    for (name, rr) in UNBOUND_ZONE {
        let _ = writeln!(conf, "  local-data: \"{name} 300 IN {rr}\"");
    }
    let _ = write!(
        conf,
        "remote-control:\n  control-enable: no\n\
         dnstap:\n  dnstap-enable: yes\n  dnstap-bidirectional: yes\n  \
         dnstap-socket-path: \"{}\"\n  dnstap-send-identity: yes\n  \
         dnstap-log-client-query-messages: yes\n  dnstap-log-client-response-messages: yes\n",
        sock.display()
    );
    let p = dir.join("unbound.conf");
    std::fs::write(&p, conf).unwrap();
    p
}

/// Hostile senders: valid streams with bytes flipped, cut or spliced, and random bytes. Each
/// session ends (a panicking session thread would never count itself closed), and a good
/// sender is still served afterwards.
#[test]
fn collect_survives_mutated_and_random_streams() {
    ndots::metrics::install();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fuzz.sock");
    let tracker = Tracker::start_named(
        &cluster(),
        &TrackerConfig {
            idle: Duration::from_secs(2),
            max_open_walks: 10_000,
            namespace_series: ndots::config::DEFAULT_NAMESPACE_SERIES,
        },
        "fuzz",
    );
    let c = collect::start(
        &Listen::Unix(sock.clone()),
        tracker.clone(),
        ndots::capture::Options::default(),
    )
    .unwrap();
    let mut valid = control_frame(CONTROL_START, Some(CONTENT_TYPE));
    let mut t = now_us();
    for w in 0..20u16 {
        for f in walk_frames([10, 9, 0, 1], w * 4, &format!("f{w}.example.com"), &mut t) {
            valid.extend(data_frame(&f));
        }
    }
    valid.extend(control_frame(CONTROL_STOP, None));
    // xorshift64*: deterministic, so a failure replays.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    const RUNS: u64 = 300;
    for run in 0..RUNS {
        let input: Vec<u8> = match run % 3 {
            0 => {
                let mut v = valid.clone();
                for _ in 0..1 + rnd() % 8 {
                    let i = (rnd() as usize) % v.len();
                    v[i] ^= 1 << (rnd() % 8);
                }
                v
            }
            1 => {
                let cut = (rnd() as usize) % valid.len();
                let from = (rnd() as usize) % valid.len();
                let mut v = valid[..cut].to_vec();
                v.extend_from_slice(&valid[from..]);
                v
            }
            _ => (0..rnd() % 4096).map(|_| rnd() as u8).collect(),
        };
        let mut conn = UnixStream::connect(&sock).unwrap();
        // The receiver may close early: a failed write is fine.
        let _ = conn.write_all(&input);
        let _ = conn.shutdown(std::net::Shutdown::Write);
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut sink = Vec::new();
        let _ = conn.read_to_end(&mut sink);
    }
    use std::sync::atomic::Ordering::Relaxed;
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = || {
        c.counters.sessions_ok.load(Relaxed)
            + c.counters.sessions_closed.load(Relaxed)
            + c.counters.sessions_error.load(Relaxed)
    };
    while ended() < RUNS || c.counters.open.load(Relaxed) > 0 {
        assert!(
            Instant::now() < deadline,
            "sessions did not all end (a panic?): {:?}",
            c.counters
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(c.counters.malformed.load(Relaxed) > 0, "{:?}", c.counters);
    // Still serving: one good unidirectional stream, counted.
    let before = c.counters.sessions_ok.load(Relaxed);
    let mut conn = UnixStream::connect(&sock).unwrap();
    conn.write_all(&valid).unwrap();
    drop(conn);
    while c.counters.sessions_ok.load(Relaxed) == before {
        assert!(Instant::now() < deadline, "the good sender was not served");
        std::thread::sleep(Duration::from_millis(20));
    }
}
