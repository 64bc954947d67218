//! Request-path conformance (issue 13): every answer through the proxy equals the upstream's.
//!
//! The oracle is independent of ndots' own wire code: a real authoritative server (nsd) serves a
//! zone signed with `ldns-signzone`, queries are built and answers read with hickory-proto, and
//! each query goes to nsd directly and through the proxy, first from upstream, then from cache,
//! then (through a proxy whose TTL cap is one second) after expiry. Field by field: rcode
//! (extended), QR/AA/TC/RD/RA/AD/CD, the question bytes (0x20 case), answer, authority and
//! additional RRsets, TTLs never above the authoritative ones (and bounded by the SOA in
//! negative answers, RFC 2308 §5), the OPT (present when asked, version 0, DO, extended rcode).
//!
//! What nsd cannot produce (BADVERS from upstream, FORMERR to EDNS, top-bit TTLs, ECS-scoped
//! answers, garbage) comes from a scripted upstream that builds its answers with hickory-proto.
//! The rules the proxy applies on top of the upstream's answer, and why:
//! - RA is set (the proxy is the client's recursive server); AA is kept on the relay of a fresh
//!   upstream answer and cleared on answers from cache, as CoreDNS's cache does;
//! - our OPT replaces the upstream's (our UDP size; no options), with the upstream's extended
//!   rcode and version 0;
//! - TTLs are capped by `cache.max_ttl` and, for negative answers, by the SOA's minimum.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

// ---------------------------------------------------------------------------------------------
// nsd with a signed zone

const ZONE: &str = "example.test";

/// The zone: every shape the proxy must relay unchanged. SOA TTL 3600, MINIMUM 60, so a
/// negative answer lives 60 s while the CNAMEs above it have 3600.
fn zone_text() -> String {
    let big = |n: usize| {
        (0..n)
            .map(|i| format!("\"{}\"", format!("{i:02}").repeat(100)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "$ORIGIN {ZONE}.
$TTL 300
@        3600 IN SOA ns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 60
@             IN NS  ns
ns            IN A   192.0.2.53
www           IN A   192.0.2.1
www           IN A   192.0.2.2
www           IN AAAA 2001:db8::1
www           IN MX  10 mail
mail          IN A   192.0.2.25
alias    3600 IN CNAME www
chain1   3600 IN CNAME chain2
chain2   3600 IN CNAME www
out      3600 IN CNAME target.other.test.
dangling 3600 IN CNAME missing
*.wild        IN A   192.0.2.7
ttl0        0 IN A   192.0.2.9
txt           IN TXT \"hello\"
big600        IN TXT {}
big2000       IN TXT {}
mid           IN TXT {} \"{}\"
_http._tcp    IN SRV 0 5 80 www
a.ent         IN A   192.0.2.10
{}
",
        big(3),
        big(10),
        // About 930 bytes of data: its answer fits 1,000 bytes, not with the NS and glue.
        big(4),
        "m".repeat(125),
        // Ten mail exchangers with addresses: 858 bytes with the additional section, which a
        // 512-byte client gets without (RFC 2181 §9), not truncated.
        (1..=10)
            .map(|i| format!(
                "mx IN MX {i} m{i}\nm{i} IN A 192.0.2.{}\nm{i} IN AAAA 2001:db8::{i}",
                100 + i
            ))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

const OTHER_ZONE: &str = "$ORIGIN other.test.
$TTL 300
@      IN SOA ns.other.test. hostmaster.other.test. 1 7200 1800 86400 120
@      IN NS  ns
ns     IN A   198.51.100.53
target IN A   198.51.100.1
";

struct Nsd {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Nsd {
    /// nsd on 127.0.0.1 with `example.test` signed (NSEC, ECDSA P-256) and `other.test` plain.
    fn start() -> Option<Nsd> {
        if !common::tools::require("nsd") || !common::tools::require("ldns-signzone") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("example.test.zone"), zone_text()).unwrap();
        std::fs::write(d.join("other.test.zone"), OTHER_ZONE).unwrap();
        let ksk = run(d, "ldns-keygen", &["-a", "ECDSAP256SHA256", "-k", ZONE]);
        let zsk = run(d, "ldns-keygen", &["-a", "ECDSAP256SHA256", ZONE]);
        run(
            d,
            "ldns-signzone",
            &["-o", ZONE, "example.test.zone", &zsk, &ksk],
        );
        let port = common::tools::free_port();
        let p = |f: &str| d.join(f).display().to_string();
        let conf = format!(
            "server:
    ip-address: 127.0.0.1
    port: {port}
    server-count: 1
    username: \"\"
    chroot: \"\"
    zonesdir: \"{dir}\"
    zonelistfile: \"{zl}\"
    database: \"\"
    xfrdfile: \"{xfrd}\"
    xfrdir: \"{dir}\"
    pidfile: \"{pid}\"
    logfile: \"{log}\"
    do-ip6: no
    rrl-ratelimit: 0
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: \"{ZONE}\"
    zonefile: \"example.test.zone.signed\"
zone:
    name: \"other.test\"
    zonefile: \"other.test.zone\"
",
            dir = d.display(),
            zl = p("zone.list"),
            xfrd = p("xfrd.state"),
            pid = p("nsd.pid"),
            log = p("nsd.log"),
        );
        std::fs::write(d.join("nsd.conf"), conf).unwrap();
        let child = Command::new("nsd")
            .args(["-d", "-c", &p("nsd.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nsd starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let nsd = Nsd {
            child,
            addr,
            _dir: dir,
        };
        let probe = Case::new("www", RecordType::A).build(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while udp(addr, &probe, Duration::from_millis(200)).is_none() {
            assert!(
                Instant::now() < deadline,
                "nsd did not answer: {}",
                std::fs::read_to_string(nsd._dir.path().join("nsd.log")).unwrap_or_default()
            );
        }
        Some(nsd)
    }
}

// ---------------------------------------------------------------------------------------------
// Queries, built with hickory-proto

#[derive(Clone, Debug)]
struct Case {
    /// Relative to the zone unless it ends with a dot; written as sent (0x20 case kept).
    name: String,
    qtype: RecordType,
    /// EDNS with this UDP size, or none.
    edns: Option<u16>,
    dnssec_ok: bool,
    version: u8,
    cd: bool,
    rd: bool,
    tcp: bool,
}

impl Case {
    fn new(name: &str, qtype: RecordType) -> Case {
        Case {
            name: name.into(),
            qtype,
            edns: Some(1232),
            dnssec_ok: false,
            version: 0,
            cd: false,
            rd: true,
            tcp: false,
        }
    }
    fn plain(mut self) -> Case {
        self.edns = None;
        self
    }
    fn dnssec(mut self) -> Case {
        self.dnssec_ok = true;
        self
    }
    fn cd(mut self) -> Case {
        self.cd = true;
        self
    }
    fn no_rd(mut self) -> Case {
        self.rd = false;
        self
    }
    fn tcp(mut self) -> Case {
        self.tcp = true;
        self
    }
    fn udp_size(mut self, size: u16) -> Case {
        self.edns = Some(size);
        self
    }
    fn version(mut self, v: u8) -> Case {
        self.version = v;
        self
    }

    fn fqdn(&self) -> String {
        if self.name.ends_with('.') {
            self.name.clone()
        } else if self.name.is_empty() {
            format!("{ZONE}.")
        } else {
            format!("{}.{ZONE}.", self.name)
        }
    }

    fn label(&self) -> String {
        format!(
            "{} {:?}{}{}{}{}{}{}",
            self.fqdn(),
            self.qtype,
            match self.edns {
                Some(s) => format!(" edns{s}"),
                None => " no-edns".into(),
            },
            if self.dnssec_ok { " DO" } else { "" },
            if self.version > 0 { " v1" } else { "" },
            if self.cd { " CD" } else { "" },
            if self.rd { "" } else { " RD=0" },
            if self.tcp { " tcp" } else { "" }
        )
    }

    fn build(&self, id: u16) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = self.rd;
        m.metadata.checking_disabled = self.cd;
        let name = Name::from_ascii(self.fqdn()).unwrap();
        m.add_query(Query::query(name, self.qtype));
        if let Some(size) = self.edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            e.set_dnssec_ok(self.dnssec_ok);
            e.set_version(self.version);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }
}

fn udp(addr: SocketAddr, q: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.send_to(q, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    let n = s.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn tcp(addr: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(q);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// `ask`, and the answer parsed (with hickory-proto); panics when there is none.
fn ask_msg(addr: SocketAddr, case: &Case, id: u16) -> Message {
    let bytes = ask(addr, case, id).expect("an answer");
    Message::from_vec(&bytes).expect("a readable answer")
}

fn ask(addr: SocketAddr, case: &Case, id: u16) -> Option<Vec<u8>> {
    let q = case.build(id);
    if case.tcp {
        tcp(addr, &q)
    } else {
        udp(addr, &q, Duration::from_secs(3))
    }
}

// ---------------------------------------------------------------------------------------------
// Field-by-field comparison

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The proxy relayed a fresh upstream answer.
    Upstream,
    /// The proxy answered from its cache.
    Cache,
}

/// A record for set comparison: owner (lowercase), type, class, RDATA (decoded, so name
/// compression does not matter).
type RrKey = (String, RecordType, DNSClass, String);

fn rr_key(r: &Record) -> RrKey {
    (
        r.name.to_ascii().to_ascii_lowercase(),
        r.record_type(),
        r.dns_class,
        format!("{:?}", r.data),
    )
}

fn section(records: &[Record]) -> Vec<RrKey> {
    let mut v: Vec<RrKey> = records.iter().map(rr_key).collect();
    v.sort();
    v
}

/// The question section as sent: 12 bytes of header, then name, type and class.
fn question_bytes(msg: &[u8]) -> &[u8] {
    let mut i = 12;
    while i < msg.len() && msg[i] != 0 {
        i += 1 + msg[i] as usize;
    }
    &msg[12..(i + 5).min(msg.len())]
}

/// Every way `proxied` differs from what it must be, given the query and nsd's answer.
/// How far below the authoritative TTL a cached one may be: the cache's caps and the seconds the
/// entry may have aged.
#[derive(Clone, Copy)]
struct Aged {
    max_ttl: u32,
    negative_max_ttl: u32,
    seconds: u32,
}

fn compare(
    case: &Case,
    query: &[u8],
    direct: &[u8],
    proxied: &[u8],
    phase: Phase,
    aged: Aged,
) -> Vec<String> {
    let mut bad = Vec::new();
    let d = Message::from_vec(direct).expect("nsd's answer parses");
    let p = match Message::from_vec(proxied) {
        Ok(p) => p,
        Err(e) => return vec![format!("the proxy's answer does not parse: {e}")],
    };
    let q = Message::from_vec(query).unwrap();
    let (dh, ph) = (&d.metadata, &p.metadata);
    let mut check = |ok: bool, what: String| {
        if !ok {
            bad.push(what);
        }
    };
    check(
        ph.id == q.metadata.id,
        format!("id {} != {}", ph.id, q.metadata.id),
    );
    check(ph.message_type == MessageType::Response, "QR clear".into());
    check(ph.op_code == dh.op_code, format!("opcode {:?}", ph.op_code));
    check(
        ph.response_code == dh.response_code,
        format!("rcode {:?}, nsd {:?}", ph.response_code, dh.response_code),
    );
    check(
        ph.truncation == dh.truncation,
        format!("TC {}, nsd {}", ph.truncation, dh.truncation),
    );
    check(
        ph.recursion_desired == case.rd,
        format!("RD {} not echoed", ph.recursion_desired),
    );
    check(ph.recursion_available, "RA clear".into());
    check(
        ph.checking_disabled == dh.checking_disabled,
        format!(
            "CD {}, nsd {} (query {})",
            ph.checking_disabled, dh.checking_disabled, case.cd
        ),
    );
    check(
        ph.authentic_data == dh.authentic_data,
        format!("AD {}, nsd {}", ph.authentic_data, dh.authentic_data),
    );
    let data_rcode = matches!(
        dh.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    );
    match phase {
        Phase::Upstream if data_rcode && !dh.truncation => check(
            ph.authoritative == dh.authoritative,
            format!(
                "AA {} on the relay, nsd {}",
                ph.authoritative, dh.authoritative
            ),
        ),
        Phase::Cache => check(!ph.authoritative, "AA set on an answer from cache".into()),
        _ => {}
    }
    check(
        question_bytes(proxied) == question_bytes(query),
        "question bytes (0x20 case) not the client's".into(),
    );
    // OPT: present exactly when the query had one; our version is 0; DO echoed; the extended
    // rcode travels in it (hickory merged it into response_code above).
    match (&q.edns, &p.edns) {
        (Some(qe), Some(pe)) => {
            check(pe.version() == 0, format!("OPT version {}", pe.version()));
            check(
                pe.flags().dnssec_ok == qe.flags().dnssec_ok,
                format!("DO {} in the answer's OPT", pe.flags().dnssec_ok),
            );
        }
        (None, None) => {}
        (Some(_), None) => check(false, "no OPT in the answer to an EDNS query".into()),
        (None, Some(_)) => check(false, "an OPT in the answer to a query without one".into()),
    }
    if dh.truncation || ph.truncation {
        // A truncated answer carries what fits; the client asks again over TCP.
        return bad;
    }
    for (what, ds, ps) in [
        ("answer", &d.answers, &p.answers),
        ("authority", &d.authorities, &p.authorities),
        ("additional", &d.additionals, &p.additionals),
    ] {
        let (dk, pk) = (section(ds), section(ps));
        check(
            dk == pk,
            format!("{what} section differs:\n  nsd   {dk:?}\n  proxy {pk:?}"),
        );
    }
    // TTLs: never above the authoritative ones.
    let mut auth_ttl: HashMap<RrKey, u32> = HashMap::new();
    for r in d.answers.iter().chain(&d.authorities).chain(&d.additionals) {
        let e = auth_ttl.entry(rr_key(r)).or_insert(u32::MAX);
        *e = (*e).min(r.ttl);
    }
    // And not far below them: every record lives as long as the cache entry (the smallest TTL
    // of the answer, or the negative TTL), capped, counted down by its age, and no less.
    let negative_ttl = d.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(s) => Some(r.ttl.min(s.minimum)),
        _ => None,
    });
    let entry = d
        .answers
        .iter()
        .map(|r| r.ttl)
        .chain(negative_ttl)
        .min()
        .unwrap_or(u32::MAX);
    let cap = entry.min(if negative_ttl.is_some() {
        aged.negative_max_ttl
    } else {
        aged.max_ttl
    });
    for r in p.answers.iter().chain(&p.authorities).chain(&p.additionals) {
        if let Some(&t) = auth_ttl.get(&rr_key(r)) {
            check(
                r.ttl <= t,
                format!("TTL {} above nsd's {t} for {:?}", r.ttl, rr_key(r)),
            );
            let floor = t.min(cap).saturating_sub(aged.seconds);
            check(
                r.ttl >= floor,
                format!(
                    "TTL {} below {floor} (nsd {t}, aged up to {} s) for {:?}",
                    r.ttl,
                    aged.seconds,
                    rr_key(r)
                ),
            );
        }
    }
    // RFC 2308 §5: a negative answer (SOA in the authority), CNAMEs included, is held no longer
    // than min(SOA TTL, MINIMUM).
    if let (Some(neg), Phase::Cache) = (negative_ttl, phase) {
        for r in p.answers.iter().chain(&p.authorities) {
            check(
                r.ttl <= neg,
                format!(
                    "negative answer from cache: TTL {} above the SOA's {neg} for {:?}",
                    r.ttl,
                    rr_key(r)
                ),
            );
        }
    }
    bad
}

/// The case table: every shape of the zone, over the flags and transports that change answers.
fn cases() -> Vec<Case> {
    use RecordType::*;
    let mut v = Vec::new();
    let shapes: &[(&str, RecordType)] = &[
        ("www", A),
        ("www", AAAA),
        ("www", MX),
        ("www", TXT),   // NODATA beside data
        ("missing", A), // NXDOMAIN
        ("alias", A),   // in-zone CNAME
        ("alias", AAAA),
        ("alias", TXT),   // CNAME, then NODATA: SOA minimum below the CNAME's TTL
        ("chain1", A),    // two CNAMEs
        ("out", A),       // CNAME out of zone
        ("dangling", A),  // CNAME to a name that does not exist
        ("x.wild", A),    // wildcard
        ("x.wild", AAAA), // wildcard NODATA
        ("ttl0", A),      // TTL 0
        ("txt", TXT),
        ("_http._tcp", SRV),
        ("ent", A), // empty non-terminal
        ("", SOA),
        ("", NS),
        ("", DNSKEY),
        ("www", ANY),     // ANY for data
        ("alias", ANY),   // ANY for a CNAME owner (RFC 8482 §4.2: the CNAME)
        ("missing", ANY), // ANY for a name that does not exist
        ("big600", TXT),  // above 512
        ("big2000", TXT), // above 1232
    ];
    for &(name, t) in shapes {
        v.push(Case::new(name, t));
        v.push(Case::new(name, t).plain());
        v.push(Case::new(name, t).dnssec());
    }
    v.extend([
        Case::new("WwW", RecordType::A), // 0x20 mixed case
        Case::new("AlIaS", RecordType::TXT).dnssec(),
        Case::new("www", RecordType::A).dnssec().cd(), // CD set
        Case::new("missing", RecordType::A).dnssec().cd(),
        Case::new("www", RecordType::A).no_rd(),
        Case::new("www", RecordType::A).version(1), // BADVERS
        Case::new("missing", RecordType::A).version(1),
        Case::new("big2000", RecordType::TXT).tcp(), // TC, then TCP
        Case::new("big2000", RecordType::TXT).dnssec().tcp(),
        Case::new("big600", RecordType::TXT).udp_size(4096),
        Case::new("www", RecordType::AAAA).tcp(),
        Case::new("missing", RecordType::A).tcp(),
    ]);
    v
}

type Proxy = common::proxy::TestProxy;

fn proxy(yaml_extra: &str, upstream: SocketAddr) -> Proxy {
    Proxy::start(yaml_extra, &[(".", upstream)])
}

/// Every case through the proxy, against nsd: from upstream, from cache, and after expiry.
#[test]
fn every_answer_through_the_proxy_equals_nsds() {
    let Some(nsd) = Nsd::start() else { return };
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    // The shortcut is off: nothing under example.test is a search expansion anyway, and this
    // suite is about relaying.
    let warm = proxy("shortcut: {mode: off}\n", nsd.addr);
    let expiring = proxy(
        "shortcut: {mode: off}\ncache: {max_ttl: 1, negative_max_ttl: 1, serve_stale: 0, prefetch: false}\n",
        nsd.addr,
    );
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut id = 100u16;
    let mut next_id = || {
        id = id.wrapping_add(7);
        id
    };
    // Which answers come from cache follows from the cache key (name, type, DO, CD): the first
    // case of a key in a round goes upstream, later ones hit. TTL 0 is never cached, and a
    // version we do not implement is answered before the cache.
    let started = Instant::now();
    let mut round = |target: SocketAddr,
                     first: Phase,
                     (max_ttl, negative_max_ttl): (u32, u32),
                     tag: &str,
                     failures: &mut Vec<String>| {
        let mut keys = std::collections::HashSet::new();
        for case in &cases {
            let key = (
                case.fqdn().to_ascii_lowercase(),
                case.qtype,
                case.dnssec_ok,
                case.cd,
            );
            let phase = if case.name == "ttl0" || case.version > 0 {
                Phase::Upstream
            } else if keys.insert(key) {
                first
            } else {
                Phase::Cache
            };
            let qid = next_id();
            let query = case.build(qid);
            let direct =
                ask(nsd.addr, case, qid).unwrap_or_else(|| panic!("nsd: {}", case.label()));
            let Some(proxied) = ask(target, case, qid) else {
                failures.push(format!("{tag} {}: no answer", case.label()));
                continue;
            };
            compared += 1;
            let aged = Aged {
                max_ttl,
                negative_max_ttl,
                seconds: started.elapsed().as_secs() as u32 + 1,
            };
            for f in compare(case, &query, &direct, &proxied, phase, aged) {
                failures.push(format!("{tag} {}: {f}", case.label()));
            }
        }
    };
    let (defaults, one_second) = ((3600, 30), (1, 1));
    round(
        warm.addr,
        Phase::Upstream,
        defaults,
        "from upstream",
        &mut failures,
    );
    round(
        warm.addr,
        Phase::Cache,
        defaults,
        "from cache",
        &mut failures,
    );
    let tag = "first (1 s cap)";
    round(
        expiring.addr,
        Phase::Upstream,
        one_second,
        tag,
        &mut failures,
    );
    std::thread::sleep(Duration::from_millis(2100));
    let tag = "after expiry";
    round(
        expiring.addr,
        Phase::Upstream,
        one_second,
        tag,
        &mut failures,
    );
    // A client that pipelines (a forwarder, dnsperf): every UDP case twice in a row from one
    // socket, all sent before any answer is read, so the proxy's batches hold several replies
    // to one client, and with `server.udp_segmentation` equal ones leave as one segmented send
    // (`proxy::udp`). Each answer must still be its own datagram, equal to nsd's, and come
    // once. The proxy is warmed first: all but ttl0 and the unknown version come from cache.
    // First on the defaults (no segmented send), then reloaded with segmentation on.
    let listen: SocketAddr = format!("127.0.0.1:{}", common::tools::free_port())
        .parse()
        .unwrap();
    let pipelining_config = |segmentation: bool| {
        let mut cfg = Proxy::config(listen, "shortcut: {mode: off}\n", &[(".", nsd.addr)]);
        assert!(!cfg.server.udp_segmentation, "off by default");
        cfg.server.udp_segmentation = segmentation;
        cfg
    };
    let pipelining = Proxy::with_config(pipelining_config(false));
    let mut direct_answers = Vec::new();
    for case in cases.iter().filter(|c| !c.tcp) {
        let direct = ask(nsd.addr, case, next_id()).expect("nsd answers");
        ask(pipelining.addr, case, next_id()).expect("the proxy answers");
        direct_answers.push((case, direct));
    }
    let segmented = || {
        common::tools::metric_sum(
            &ndots::metrics::install().render(),
            "ndots_udp_segmented_sends_total{outcome=\"sent\"}",
        )
    };
    let mut pipelined_round = |tag: &str| -> f64 {
        let segmented_before = segmented();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        socket.connect(listen).unwrap();
        let mut sent = HashMap::new();
        let mut queries = Vec::new();
        for (case, direct) in &direct_answers {
            for _ in 0..2 {
                let qid = next_id();
                let query = case.build(qid);
                queries.push(query.clone());
                sent.insert(qid, (*case, query, direct.clone()));
            }
        }
        let asked = sent.len();
        // All in one `sendmmsg`: the kernel queues them at the proxy's socket within one
        // call, so its receive batches hold many of them.
        let mut done = 0;
        while done < queries.len() {
            let n = common::dns::send_batch(&socket, &queries[done..]);
            assert!(n > 0, "sendmmsg: {}", std::io::Error::last_os_error());
            done += n;
        }
        let mut buf = vec![0u8; 65535];
        while !sent.is_empty() {
            let Ok(n) = socket.recv(&mut buf) else {
                break;
            };
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            // Removed once answered: a second answer with the same id is a duplicate.
            let Some((case, query, mut direct)) = sent.remove(&id) else {
                failures.push(format!(
                    "{tag}: an answer with id {id}, not asked or a duplicate"
                ));
                continue;
            };
            // nsd answered a query with its own id: compare as if it had ours.
            direct[..2].copy_from_slice(&id.to_be_bytes());
            let phase = if case.name == "ttl0" || case.version > 0 {
                Phase::Upstream
            } else {
                Phase::Cache
            };
            let aged = Aged {
                max_ttl: defaults.0,
                negative_max_ttl: defaults.1,
                seconds: started.elapsed().as_secs() as u32 + 1,
            };
            compared += 1;
            for f in compare(case, &query, &direct, &buf[..n], phase, aged) {
                failures.push(format!("{tag} {}: {f}", case.label()));
            }
        }
        if !sent.is_empty() {
            failures.push(format!("{tag}: {} of {asked} unanswered", sent.len()));
        }
        let segmented_sends = segmented() - segmented_before;
        println!("{tag}: {asked} answers, {segmented_sends} segmented sends");
        segmented_sends
    };
    // No other test of this file turns segmentation on: the process-wide counter is ours.
    let sends = pipelined_round("pipelined, segmentation off");
    assert_eq!(
        sends, 0.0,
        "segmented sends with server.udp_segmentation off"
    );
    pipelining
        .proxy
        .as_ref()
        .unwrap()
        .reload(pipelining_config(true))
        .unwrap();
    // Not a proof for each pair (a batch may split a pair), but some pairs must have left as
    // one send, or the round tested the old path only.
    let sends = pipelined_round("pipelined, segmentation on");
    assert!(
        sends > 0.0,
        "no segmented send after the reload turned it on"
    );
    println!(
        "{compared} answers compared with nsd's, {} cases",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// A scripted upstream for what nsd cannot produce

type Script = Box<dyn Fn(&Message) -> Option<Vec<u8>> + Send + Sync>;

/// A UDP upstream that answers each query with what `script` builds (or nothing), and counts
/// the queries it got.
struct Scripted {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
    queries: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Scripted {
    fn start(script: Script) -> Scripted {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let queries: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let (s, qs) = (seen.clone(), queries.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let qtype = q.queries.first().map(|q| q.query_type());
                if qtype == Some(RecordType::SOA) || qtype == Some(RecordType::HINFO) {
                    // The proxy's readiness probe (SOA) and forwarding-loop probe (HINFO).
                    let mut r = reply(&q, ResponseCode::NoError);
                    r.metadata.authoritative = true;
                    let _ = sock.send_to(&r.to_vec().unwrap(), from);
                    continue;
                }
                s.fetch_add(1, Ordering::SeqCst);
                qs.lock().unwrap().push(buf[..n].to_vec());
                if let Some(bytes) = script(&q) {
                    let _ = sock.send_to(&bytes, from);
                }
            }
        });
        Scripted {
            addr,
            seen,
            queries,
        }
    }
    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

/// A response to `q` with its question and ID, RA set.
fn reply(q: &Message, rcode: ResponseCode) -> Message {
    let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.response_code = rcode;
    r.add_queries(q.queries.clone());
    r
}

fn qname(q: &Message) -> Name {
    q.queries[0].name().clone()
}

fn a_record(name: Name, ttl: u32) -> Record {
    Record::from_rdata(name, ttl, RData::A("192.0.2.1".parse().unwrap()))
}

fn soa_record(zone: &str, ttl: u32, minimum: u32) -> Record {
    let z = Name::from_ascii(zone).unwrap();
    let soa = SOA::new(
        Name::from_ascii(format!("ns.{zone}")).unwrap(),
        Name::from_ascii(format!("hostmaster.{zone}")).unwrap(),
        1,
        7200,
        1800,
        86400,
        minimum,
    );
    Record::from_rdata(z, ttl, RData::SOA(soa))
}

fn with_edns(mut r: Message, q: &Message) -> Message {
    if q.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        r.set_edns(e);
    }
    r
}

/// An upstream that answers every query with `rcode` and an OPT (so an extended rcode travels).
fn rcode_upstream(rcode: ResponseCode) -> Scripted {
    Scripted::start(Box::new(move |q| {
        let mut r = reply(q, rcode);
        let mut e = Edns::new();
        e.set_max_payload(1232);
        r.set_edns(e);
        Some(r.to_vec().unwrap())
    }))
}

/// One query through a fresh proxy in front of `script`; the parsed answer.
fn through(proxy_yaml: &str, up: &Scripted, case: &Case) -> Message {
    let p = proxy(proxy_yaml, up.addr);
    let bytes = ask(p.addr, case, 4242).expect("an answer");
    Message::from_vec(&bytes).expect("a readable answer")
}

/// BADVERS was lost twice: a version-1 query got NOERROR with data (from cache or forwarded),
/// and an upstream's BADVERS reached the client as NOERROR because the client's OPT was rebuilt
/// with extended-rcode 0 (RFC 6891 §6.1.3).
#[test]
fn badvers_reaches_the_client_with_its_extended_rcode() {
    let up = rcode_upstream(ResponseCode::BADVERS);
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    // The upstream's BADVERS, relayed.
    let m = ask_msg(p.addr, &Case::new("www", RecordType::A), 1);
    // 16 is BADVERS in an OPT (hickory names it BADSIG, its TSIG meaning).
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0));
    // Our own, for a version we do not implement: never forwarded.
    let before = up.seen();
    let m = ask_msg(p.addr, &Case::new("www", RecordType::A).version(1), 2);
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert!(m.answers.is_empty());
    assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0));
    assert_eq!(up.seen(), before, "a version-1 query is answered locally");
}

/// An upstream that does not speak EDNS answers FORMERR without an OPT (RFC 6891 §7): the
/// proxy asks again without its OPT, and the client (which sent EDNS) gets the data with our OPT.
#[test]
fn formerr_to_edns_is_retried_without_the_opt() {
    let up = Scripted::start(Box::new(|q| {
        let r = if q.edns.is_some() {
            reply(q, ResponseCode::FormErr)
        } else {
            let mut r = reply(q, ResponseCode::NoError);
            r.add_answer(a_record(qname(q), 300));
            r
        };
        Some(r.to_vec().unwrap())
    }));
    let m = through(
        "shortcut: {mode: off}\n",
        &up,
        &Case::new("www", RecordType::A),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert!(m.edns.is_some(), "the client's EDNS is answered with ours");
    let qs = up.queries.lock().unwrap();
    assert_eq!(qs.len(), 2);
    assert!(Message::from_vec(&qs[1]).unwrap().edns.is_none());
}

/// A TTL with its top bit set was masked to 31 bits (0x80000010 -> 16) instead of read as zero
/// (RFC 2181 §8): it is relayed as 0 and not cached.
#[test]
fn ttl_with_the_top_bit_set_is_zero() {
    let up = Scripted::start(Box::new(|q| {
        let mut r = reply(q, ResponseCode::NoError);
        r.add_answer(a_record(qname(q), 0x8000_0010));
        Some(with_edns(r, q).to_vec().unwrap())
    }));
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    for id in [1, 2] {
        let m = ask_msg(p.addr, &Case::new("www", RecordType::A), id);
        assert_eq!(m.answers[0].ttl, 0, "relayed as zero");
    }
    assert_eq!(up.seen(), 2, "a zero TTL is not cached");
}

/// A CNAME followed by NODATA was cached for the CNAME's TTL (3600 s) instead of the SOA's
/// negative TTL (RFC 2308 §5).
#[test]
fn cname_then_nodata_is_cached_for_the_negative_ttl() {
    let up = Scripted::start(Box::new(|q| {
        let mut r = reply(q, ResponseCode::NoError);
        let target = Name::from_ascii("target.example.test.").unwrap();
        r.add_answer(Record::from_rdata(
            qname(q),
            3600,
            RData::CNAME(CNAME(target)),
        ));
        r.add_authority(soa_record("example.test.", 3600, 5));
        Some(with_edns(r, q).to_vec().unwrap())
    }));
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    let case = Case::new("alias", RecordType::TXT);
    let _ = ask(p.addr, &case, 1).unwrap();
    let m = ask_msg(p.addr, &case, 2);
    assert_eq!(up.seen(), 1, "the second answer came from cache");
    for r in m.answers.iter().chain(&m.authorities) {
        assert!(r.ttl <= 5, "TTL {} above the SOA minimum: {r:?}", r.ttl);
    }
}

/// AA was kept on cached answers; the fresh relay keeps the upstream's AA, the cache clears it
/// (DESIGN §9, as CoreDNS's cache does).
#[test]
fn aa_is_cleared_on_answers_from_cache() {
    let up = Scripted::start(Box::new(|q| {
        let mut r = reply(q, ResponseCode::NoError);
        r.metadata.authoritative = true;
        r.add_answer(a_record(qname(q), 300));
        Some(with_edns(r, q).to_vec().unwrap())
    }));
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    let case = Case::new("www", RecordType::A);
    let fresh = ask_msg(p.addr, &case, 1);
    let cached = ask_msg(p.addr, &case, 2);
    assert!(fresh.metadata.authoritative);
    assert!(!cached.metadata.authoritative);
    assert_eq!(up.seen(), 1);
}

/// An answer tailored with EDNS Client Subnet (scope > 0) was cached and served to every
/// client: it is relayed to the one that asked, never shared (RFC 7871 §7.3).
#[test]
fn ecs_scoped_answers_are_not_shared() {
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    let up = Scripted::start(Box::new(|q| {
        let mut r = reply(q, ResponseCode::NoError);
        r.add_answer(a_record(qname(q), 300));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        let subnet = ClientSubnet::new("198.51.100.0".parse().unwrap(), 24, 24);
        e.options_mut().insert(EdnsOption::Subnet(subnet));
        r.set_edns(e);
        Some(r.to_vec().unwrap())
    }));
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    let case = Case::new("www", RecordType::A);
    for id in [1, 2] {
        let m = ask_msg(p.addr, &case, id);
        assert_eq!(m.answers.len(), 1);
    }
    assert_eq!(up.seen(), 2, "each client's query went upstream");
}

/// REFUSED, SERVFAIL and garbage from the upstream: relayed as REFUSED and SERVFAIL, garbage
/// as SERVFAIL; none of it cached.
#[test]
fn upstream_errors_and_garbage_are_relayed_or_servfail() {
    for (what, rcode, want) in [
        (
            "refused",
            Some(ResponseCode::Refused),
            ResponseCode::Refused,
        ),
        (
            "servfail",
            Some(ResponseCode::ServFail),
            ResponseCode::ServFail,
        ),
        ("garbage", None, ResponseCode::ServFail),
    ] {
        let up = Scripted::start(Box::new(move |q| match rcode {
            Some(rc) => Some(with_edns(reply(q, rc), q).to_vec().unwrap()),
            // The right ID, then nonsense: a header that claims records it does not have.
            None => {
                let mut b = q.metadata.id.to_be_bytes().to_vec();
                b.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 9, 0, 0, 0, 0, 0xff, 0xff]);
                Some(b)
            }
        }));
        let p = proxy("shortcut: {mode: off}\n", up.addr);
        let case = Case::new("www", RecordType::A);
        for id in [1, 2] {
            let m = ask_msg(p.addr, &case, id);
            assert_eq!(m.metadata.response_code, want, "{what}");
            assert!(m.answers.is_empty(), "{what}");
        }
        assert!(up.seen() >= 2, "{what}: not cached");
    }
}

/// The RFC 8020 ancestor check trusted an NXDOMAIN at the end of a CNAME chain: an ExternalName
/// Service `github.com.svc.cluster.local` (namespace `com`) whose target does not exist made the
/// proxy answer NXDOMAIN for `api.github.com.svc.cluster.local`, a name the upstream serves.
#[test]
fn nxdomain_after_a_cname_does_not_rule_out_the_ancestor() {
    let up = Scripted::start(Box::new(|q| {
        let name = qname(q).to_ascii().to_ascii_lowercase();
        let r = match name.as_str() {
            "github.com.svc.cluster.local." => {
                let mut r = reply(q, ResponseCode::NXDomain);
                let gone = Name::from_ascii("gone.example.org.").unwrap();
                r.add_answer(Record::from_rdata(qname(q), 30, RData::CNAME(CNAME(gone))));
                r.add_authority(soa_record("example.org.", 30, 30));
                r
            }
            "api.github.com.svc.cluster.local." => {
                let mut r = reply(q, ResponseCode::NoError);
                r.add_answer(a_record(qname(q), 30));
                r
            }
            _ => {
                // Everything else exists without data (the namespace `com` among it).
                let mut r = reply(q, ResponseCode::NoError);
                r.add_authority(soa_record("cluster.local.", 30, 30));
                r
            }
        };
        Some(with_edns(r, q).to_vec().unwrap())
    }));
    let m = through(
        "shortcut: {mode: nxdomain, zones: [github.com]}\n",
        &up,
        &Case::new("api.github.com.svc.cluster.local.", RecordType::A),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
}

/// The schema shortcut answered NXDOMAIN for names CoreDNS serves beyond the Kubernetes DNS
/// specification: `ns.dns.cluster.local` (its SOA's MNAME) and operators' own records, which
/// `shortcut.exempt` now names.
#[test]
fn schema_shortcut_forwards_ns_dns_and_exempt_names() {
    let up = Scripted::start(Box::new(|q| {
        let mut r = reply(q, ResponseCode::NoError);
        r.add_answer(a_record(qname(q), 30));
        Some(with_edns(r, q).to_vec().unwrap())
    }));
    let exempt = "shortcut: {mode: nxdomain, exempt: [registry.cluster.local]}\n";
    for (name, yaml, answered) in [
        ("ns.dns.cluster.local.", exempt, true),
        ("registry.cluster.local.", exempt, true),
        ("v2.registry.cluster.local.", exempt, true),
        // Without the exemption the schema rules it out: the switch does something.
        (
            "registry.cluster.local.",
            "shortcut: {mode: nxdomain}\n",
            false,
        ),
    ] {
        let m = through(yaml, &up, &Case::new(name, RecordType::A));
        let want = if answered {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        assert_eq!(m.metadata.response_code, want, "{name} with {yaml}");
    }
}

/// The answers an autopath test upstream gives: `com.svc.cluster.local` does not exist (so the
/// only candidate for `api.github.com.default.svc.cluster.local` is `api.github.com.`), and
/// `api.github.com.` answers per type as `by_type` says (`None`: NODATA with an SOA).
fn autopath_upstream(by_type: fn(RecordType, &Message) -> Option<Message>) -> Scripted {
    Scripted::start(Box::new(move |q| {
        let name = qname(q).to_ascii().to_ascii_lowercase();
        let t = q.queries[0].query_type();
        let r = if name == "api.github.com." {
            by_type(t, q).unwrap_or_else(|| {
                let mut r = reply(q, ResponseCode::NoError);
                r.add_authority(soa_record("github.com.", 60, 60));
                r
            })
        } else {
            let mut r = reply(q, ResponseCode::NXDomain);
            r.add_authority(soa_record("cluster.local.", 60, 60));
            r
        };
        Some(with_edns(r, q).to_vec().unwrap())
    }))
}

/// `api.github.com.` has an A record and nothing else.
fn a_only(t: RecordType, q: &Message) -> Option<Message> {
    (t == RecordType::A).then(|| {
        let mut r = reply(q, ResponseCode::NoError);
        r.add_answer(a_record(qname(q), 60));
        r
    })
}

const AUTOPATH: &str = "shortcut: {mode: autopath, zones: [github.com]}\n";
const EXPANSION: &str = "api.github.com.default.svc.cluster.local.";

/// Autopath answered a type other than A and AAAA (TXT, MX, HTTPS) with NXDOMAIN when the
/// candidate had no record of it, while A got `CNAME`: one name, two existences (RFC 8020 lets a
/// cache deny every type after an NXDOMAIN). Every type now follows the A/AAAA judgement: `Q`
/// exists for every type. Only a type the target has records of gets the CNAME (see
/// `autopath_cname_to_a_target_without_the_asked_type_ended_single_type_walks`); the others
/// get NODATA with the cluster domain's SOA.
#[test]
fn autopath_answers_every_type_of_one_name_alike() {
    let up = autopath_upstream(a_only);
    let p = proxy(AUTOPATH, up.addr);
    for t in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::HTTPS,
    ] {
        let m = ask_msg(p.addr, &Case::new(EXPANSION, t), 7);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{t:?}");
        if t == RecordType::A {
            let types: Vec<_> = m.answers.iter().map(|r| r.record_type()).collect();
            assert_eq!(types, [RecordType::CNAME, RecordType::A], "{m:?}");
        } else {
            assert!(m.answers.is_empty(), "{t:?}: NODATA, no CNAME: {m:?}");
            let soa = m
                .authorities
                .first()
                .map(|r| (r.record_type(), r.name.to_ascii()));
            assert_eq!(
                soa,
                Some((RecordType::SOA, "cluster.local.".into())),
                "{t:?}: {m:?}"
            );
        }
    }
}

/// Autopath answered `Q CNAME target` + NODATA when the target had no record of the asked type
/// (TXT here, AAAA in tests/pod_through_proxy.rs). glibc's `res_search` counts the CNAME as an
/// answer (ANCOUNT > 0) and ended its walk there, with no TXT, while without the proxy it walks
/// past the target's NODATA to the name that has the record. A target that has the type still
/// gets the CNAME and its records.
#[test]
fn autopath_cname_to_a_target_without_the_asked_type_ended_single_type_walks() {
    fn a_and_mx(t: RecordType, q: &Message) -> Option<Message> {
        let mut r = reply(q, ResponseCode::NoError);
        match t {
            RecordType::A => r.add_answer(a_record(qname(q), 60)),
            RecordType::MX => {
                let mx = hickory_proto::rr::rdata::MX::new(
                    10,
                    Name::from_ascii("mx.github.com.").unwrap(),
                );
                r.add_answer(Record::from_rdata(qname(q), 60, RData::MX(mx)))
            }
            _ => return None,
        };
        Some(r)
    }
    let up = autopath_upstream(a_and_mx);
    let p = proxy(AUTOPATH, up.addr);
    let txt = ask_msg(p.addr, &Case::new(EXPANSION, RecordType::TXT), 7);
    assert_eq!(txt.metadata.response_code, ResponseCode::NoError);
    assert!(txt.answers.is_empty(), "NODATA, no CNAME: {txt:?}");
    assert_eq!(txt.authorities.len(), 1, "{txt:?}");
    let mx = ask_msg(p.addr, &Case::new(EXPANSION, RecordType::MX), 8);
    let types: Vec<_> = mx.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::CNAME, RecordType::MX], "{mx:?}");
}

/// Autopath's answer for `Q` outlived the NXDOMAINs of the candidates it walked past: `Q A`
/// was cached for the target's TTL (300 s), `Q AAAA` for its own shorter one. When a candidate
/// walked past came to exist (a new Service), the entry that expired first was built on it and
/// the other still on the old target, and glibc, musl and Go merge the two into one address
/// list (a probe: the old target's IPv4 with the new Service's IPv6 for ~265 s). Every answer
/// is now held no longer than the shortest negative TTL it was built on, so both types move to
/// the new candidate together.
#[test]
fn autopath_a_and_aaaa_moved_to_a_new_candidate_apart() {
    use std::sync::atomic::AtomicBool;
    let created = Arc::new(AtomicBool::new(false));
    let now = created.clone();
    let service = "api.github.com.svc.cluster.local.";
    let up = Scripted::start(Box::new(move |q| {
        let name = qname(q).to_ascii().to_ascii_lowercase();
        let t = q.queries[0].query_type();
        let exists = now.load(Ordering::SeqCst);
        let mut r = if name == "api.github.com." || (exists && name == service) {
            let mut r = reply(q, ResponseCode::NoError);
            if t == RecordType::A {
                r.add_answer(a_record(qname(q), 300));
            }
            r
        } else if exists
            && ["com.svc.cluster.local.", "github.com.svc.cluster.local."].contains(&&*name)
        {
            // The new Service and its namespace above the pod: empty non-terminals.
            reply(q, ResponseCode::NoError)
        } else {
            reply(q, ResponseCode::NXDomain)
        };
        if r.answers.is_empty() {
            // Negative answers live one second (the SOA's TTL and MINIMUM).
            r.add_authority(soa_record("cluster.local.", 1, 1));
        }
        Some(with_edns(r, q).to_vec().unwrap())
    }));
    let p = proxy(AUTOPATH, up.addr);
    let target = |t: RecordType, id: u16| -> Option<String> {
        let m = ask_msg(p.addr, &Case::new(EXPANSION, t), id);
        m.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) => Some(c.0.to_ascii().to_ascii_lowercase()),
            _ => None,
        })
    };
    assert_eq!(target(RecordType::A, 1).as_deref(), Some("api.github.com."));
    created.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2100));
    // The service has A only: A gets the CNAME to it, AAAA NODATA (the same walk's end).
    assert_eq!(
        target(RecordType::A, 2).as_deref(),
        Some(service),
        "Q A still built on the NXDOMAIN that expired"
    );
    assert_eq!(target(RecordType::AAAA, 3), None);
}

/// The shortcut made up answers for DNSSEC-aware clients (DO or CD set): under a signed search
/// domain its NXDOMAIN had no NSEC and no RRSIG, and a validator downstream (unbound) turned it
/// into SERVFAIL, on which musl ends its walk; autopath's lookups dropped the RRSIGs and the
/// client's CD. Such queries are now forwarded in every mode, and their answers equal nsd's.
#[test]
fn a_dnssec_client_got_an_unsigned_nxdomain_made_up_by_the_shortcut() {
    let Some(nsd) = Nsd::start() else { return };
    let name = format!("api.github.com.{ZONE}.");
    for mode in ["nxdomain", "autopath"] {
        let yaml = format!(
            "cluster: {{node_search: [{ZONE}]}}\nshortcut: {{mode: {mode}, zones: [github.com]}}\n"
        );
        let p = proxy(&yaml, nsd.addr);
        let a = Case::new(&name, RecordType::A);
        for case in [a.clone().dnssec(), a.clone().cd(), a.clone().dnssec().cd()] {
            let query = case.build(21);
            let direct = ask(nsd.addr, &case, 21).expect("nsd answers");
            let proxied = ask(p.addr, &case, 21).expect("the proxy answers");
            let aged = Aged {
                max_ttl: 3600,
                negative_max_ttl: 30,
                seconds: 1,
            };
            let bad = compare(&case, &query, &direct, &proxied, Phase::Upstream, aged);
            assert!(bad.is_empty(), "{mode} {}: {bad:?}", case.label());
            let m = Message::from_vec(&proxied).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
            if case.dnssec_ok {
                let proof = m
                    .authorities
                    .iter()
                    .filter(|r| matches!(r.record_type(), RecordType::NSEC | RecordType::RRSIG));
                assert!(proof.count() >= 2, "{mode} {}: {m:?}", case.label());
            }
        }
        if mode == "nxdomain" {
            // A guard: without DO or CD the shortcut answers, with its own SOA (MINIMUM 30, the
            // negative TTL cap; nsd's says 60).
            let m = ask_msg(p.addr, &a, 22);
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
            let minimum = m.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(soa.minimum),
                _ => None,
            });
            assert_eq!(minimum, Some(30), "made by the shortcut: {m:?}");
        }
    }
}

/// When the candidate's A was an upstream SERVFAIL and its AAAA had data, `Q A` was SERVFAIL
/// carrying `Q CNAME candidate`. An error for either type is a plain SERVFAIL for every type.
#[test]
fn autopath_upstream_error_is_servfail_without_a_cname() {
    let up = autopath_upstream(|t, q| match t {
        RecordType::A => Some(reply(q, ResponseCode::ServFail)),
        RecordType::AAAA => {
            let mut r = reply(q, ResponseCode::NoError);
            let ip = "2001:db8::1".parse().unwrap();
            r.add_answer(Record::from_rdata(qname(q), 60, RData::AAAA(ip)));
            Some(r)
        }
        _ => None,
    });
    let p = proxy(AUTOPATH, up.addr);
    for t in [RecordType::A, RecordType::AAAA] {
        let m = ask_msg(p.addr, &Case::new(EXPANSION, t), 7);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail, "{t:?}");
        assert!(m.answers.is_empty(), "{t:?}: {m:?}");
    }
}

/// A reload that switched the shortcut kept the cache: `Q A` cached as the upstream's NXDOMAIN
/// under mode off sat beside `Q AAAA` = autopath's CNAME, and glibc failed the lookup.
#[test]
fn reload_to_another_shortcut_starts_a_new_cache() {
    let up = autopath_upstream(a_only);
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    let a = Case::new(EXPANSION, RecordType::A);
    let m = ask_msg(p.addr, &a, 1);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "forwarded"
    );
    let cfg = Proxy::config(p.addr, AUTOPATH, &[(".", up.addr)]);
    p.proxy.as_ref().unwrap().reload(cfg).unwrap();
    // Autopath's answers, not the NXDOMAIN cached before: the CNAME for A, NODATA for AAAA
    // (the target has no AAAA).
    for t in [RecordType::A, RecordType::AAAA] {
        let m = ask_msg(p.addr, &Case::new(EXPANSION, t), 2);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{t:?} after the reload: {m:?}"
        );
        let cname = m.answers.first().map(|r| r.record_type()) == Some(RecordType::CNAME);
        assert_eq!(cname, t == RecordType::A, "{t:?} after the reload: {m:?}");
    }
}

/// Concurrent queries for one name from clients of different subnets were coalesced into one
/// upstream exchange, and its ECS-tailored answer went to both (RFC 7871 §7.3).
#[test]
fn ecs_queries_of_different_clients_are_not_joined() {
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
    // The answer is the client's own subnet address, after a pause that lets queries meet.
    let up = Scripted::start(Box::new(|q| {
        std::thread::sleep(Duration::from_millis(300));
        let subnet = match q.edns.as_ref()?.option(EdnsCode::Subnet)? {
            EdnsOption::Subnet(s) => s.addr(),
            _ => return None,
        };
        let mut r = reply(q, ResponseCode::NoError);
        let std::net::IpAddr::V4(v4) = subnet else {
            return None;
        };
        r.add_answer(Record::from_rdata(qname(q), 60, RData::A(v4.into())));
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(subnet, 24, 24)));
        r.set_edns(e);
        Some(r.to_vec().unwrap())
    }));
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    let addr = p.addr;
    let threads: Vec<_> = ["198.51.100.0", "203.0.113.0"]
        .into_iter()
        .map(|subnet| {
            std::thread::spawn(move || {
                let mut m = Message::new(9, MessageType::Query, OpCode::Query);
                m.metadata.recursion_desired = true;
                m.add_query(Query::query(
                    Name::from_ascii("www.example.test.").unwrap(),
                    RecordType::A,
                ));
                let mut e = Edns::new();
                e.set_max_payload(1232);
                let cs = ClientSubnet::new(subnet.parse().unwrap(), 24, 0);
                e.options_mut().insert(EdnsOption::Subnet(cs));
                m.set_edns(e);
                let bytes = udp(addr, &m.to_vec().unwrap(), Duration::from_secs(3)).unwrap();
                let a = Message::from_vec(&bytes).unwrap();
                (subnet, format!("{:?}", a.answers[0].data))
            })
        })
        .collect();
    for t in threads {
        let (subnet, got) = t.join().unwrap();
        assert!(got.contains(subnet), "{subnet} got {got}");
    }
    // Two exchanges; an answer slower than the upstream's usual round trip (300 ms here,
    // against 1 ms for the health probe) may also have been asked again (docs/faults.md).
    assert!(up.seen() >= 2, "{} upstream queries", up.seen());
}

// ---------------------------------------------------------------------------------------------
// What goes upstream (session 26's hostile probe)

/// A query for `name`/`qtype` with `id`, RD and AD as given, and (when `opt` is given) the raw
/// OPT record `opt` appended as its one additional record: options hickory cannot write.
fn raw_query(
    id: u16,
    name: &str,
    qtype: RecordType,
    rd: bool,
    ad: bool,
    opt: Option<&[u8]>,
) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = rd;
    m.metadata.authentic_data = ad;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let mut bytes = m.to_vec().unwrap();
    if let Some(opt) = opt {
        bytes.extend_from_slice(opt);
        bytes[11] = 1;
    }
    bytes
}

/// An OPT record: root owner, `udp` size, DO as given, and `options` as (code, data).
fn raw_opt(udp: u16, dnssec_ok: bool, options: &[(u16, &[u8])]) -> Vec<u8> {
    let mut rdata = Vec::new();
    for (code, data) in options {
        rdata.extend_from_slice(&code.to_be_bytes());
        rdata.extend_from_slice(&(data.len() as u16).to_be_bytes());
        rdata.extend_from_slice(data);
    }
    let mut o = vec![0, 0, 41];
    o.extend_from_slice(&udp.to_be_bytes());
    o.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
    o.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    o.extend_from_slice(&rdata);
    o
}

/// An upstream with one A record for every name, answering like a validating resolver: AD
/// only when the query asked with AD or DO (RFC 6840 §5.8).
fn validating_upstream() -> Scripted {
    Scripted::start(Box::new(|q| {
        let mut r = reply(q, ResponseCode::NoError);
        r.add_answer(a_record(qname(q), 300));
        let dnssec_ok = q.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        r.metadata.authentic_data = q.metadata.authentic_data || dnssec_ok;
        Some(with_edns(r, q).to_vec().unwrap())
    }))
}

/// The client's whole OPT went upstream as it came: its UDP size (65535, an invitation to
/// fragments on the upstream path), its DNS cookie (a server cookie meant for the proxy; an
/// upstream that checks cookies answered BADCOOKIE), padding, NSID and unknown options. The
/// proxy is a hop of its own (RFC 6891 §6.1.1): upstream gets our size and DO, and of the
/// client's options only Client Subnet.
#[test]
fn the_clients_opt_went_upstream_as_it_came() {
    let up = validating_upstream();
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    let cookie: &[u8] = &[
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
    ];
    let opt = raw_opt(
        65535,
        true,
        &[(10, cookie), (12, &[0; 40]), (3, &[]), (65001, b"private")],
    );
    let q = raw_query(
        5,
        "www.example.test.",
        RecordType::A,
        true,
        false,
        Some(&opt),
    );
    let a = Message::from_vec(&udp(p.addr, &q, Duration::from_secs(3)).unwrap()).unwrap();
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    // With Client Subnet, which goes on as it came.
    let ecs: &[u8] = &[0, 1, 24, 0, 198, 51, 100];
    let opt = raw_opt(4096, false, &[(10, &cookie[..8]), (8, ecs)]);
    let q = raw_query(
        6,
        "ecs.example.test.",
        RecordType::A,
        true,
        false,
        Some(&opt),
    );
    assert!(udp(p.addr, &q, Duration::from_secs(3)).is_some());

    let qs = up.queries.lock().unwrap().clone();
    assert_eq!(qs.len(), 2);
    let first = Message::from_vec(&qs[0]).unwrap();
    let e = first.edns.as_ref().expect("an OPT upstream");
    assert_eq!(e.max_payload(), 1232, "our UDP size, not the client's");
    assert!(e.flags().dnssec_ok, "the client's DO");
    assert_eq!(e.version(), 0);
    assert!(
        e.options().options.is_empty(),
        "no client options: {:?}",
        e.options()
    );
    let second = Message::from_vec(&qs[1]).unwrap();
    let codes: Vec<u16> = second
        .edns
        .as_ref()
        .unwrap()
        .options()
        .options
        .iter()
        .map(|(c, _)| u16::from(*c))
        .collect();
    assert_eq!(codes, vec![8], "Client Subnet alone");
    // ECS kept byte for byte: the query's OPT RDATA is the option itself.
    let raw = &qs[1];
    assert!(raw
        .windows(ecs.len() + 4)
        .any(|w| w[..4] == [0, 8, 0, ecs.len() as u8] && w[4..] == *ecs));
}

/// The AD bit a client got depended on who filled the cache: a plain query (AD and DO clear)
/// went upstream as it was, its answer (AD clear: nobody asked) was cached, and clients asking
/// with AD got AD clear from cache while the upstream had validated the data (RFC 6840 §5.7).
#[test]
fn the_ad_bit_depended_on_which_client_filled_the_cache() {
    let up = validating_upstream();
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    let name = "www.example.test.";
    for (id, ad, want) in [
        (1, false, false),
        (2, true, true),
        (3, false, false),
        (4, true, true),
    ] {
        let q = raw_query(id, name, RecordType::A, true, ad, None);
        let a = Message::from_vec(&udp(p.addr, &q, Duration::from_secs(3)).unwrap()).unwrap();
        assert_eq!(a.metadata.authentic_data, want, "query {id} with AD {ad}");
        assert_eq!(a.answers.len(), 1);
    }
    assert_eq!(up.seen(), 1, "one upstream query, the rest from cache");
    let sent = Message::from_vec(&up.queries.lock().unwrap()[0]).unwrap();
    assert!(sent.metadata.authentic_data, "asked upstream with AD");
}

/// A query with RD clear was forwarded with RD clear and its answer cached for everyone: an
/// upstream that answers such a query from what it holds (a CNAME without its target, as a
/// snoopable resolver does) left recursive clients with a CNAME and no address.
#[test]
fn an_rd0_answer_was_cached_for_recursive_clients() {
    let up = Scripted::start(Box::new(|q| {
        let mut r = reply(q, ResponseCode::NoError);
        let target = Name::from_ascii("target.example.test.").unwrap();
        r.add_answer(Record::from_rdata(
            qname(q),
            300,
            RData::CNAME(CNAME(target.clone())),
        ));
        if q.metadata.recursion_desired {
            r.add_answer(a_record(target, 300));
        }
        Some(with_edns(r, q).to_vec().unwrap())
    }));
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    let case = Case::new("alias", RecordType::A);
    let snoop = ask_msg(p.addr, &case.clone().no_rd(), 1);
    assert_eq!(
        snoop.answers.len(),
        1,
        "RD=0 is asked as it came: {snoop:?}"
    );
    assert!(!snoop.metadata.recursion_desired, "RD echoed");
    for id in [2, 3] {
        let m = ask_msg(p.addr, &case, id);
        assert_eq!(
            m.answers.len(),
            2,
            "query {id}: CNAME and its address: {m:?}"
        );
    }
    assert_eq!(
        up.seen(),
        2,
        "the RD=0 answer was not cached; the recursive one was"
    );
    let sent: Vec<bool> = up
        .queries
        .lock()
        .unwrap()
        .iter()
        .map(|b| Message::from_vec(b).unwrap().metadata.recursion_desired)
        .collect();
    assert_eq!(sent, vec![false, true]);
    // A cached answer serves RD=0 too: what the proxy holds is what RD=0 asks for.
    let m = ask_msg(p.addr, &case.no_rd(), 4);
    assert_eq!(m.answers.len(), 2);
    assert_eq!(up.seen(), 2);
}

/// An upstream's extended RCODE reached a client without EDNS as its four low bits: BADCOOKIE
/// (23) read as YXRRSET (7). Such a client gets SERVFAIL (and since
/// `transaction_extended_rcodes_reached_edns_clients`, so does an EDNS client).
#[test]
fn an_extended_rcode_reached_a_client_without_edns_as_another_rcode() {
    let up = rcode_upstream(ResponseCode::BADCOOKIE);
    let p = proxy("shortcut: {mode: off}\n", up.addr);
    let m = ask_msg(p.addr, &Case::new("www", RecordType::A).plain(), 1);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.edns.is_none());
}

/// The value of the `ndots_upstream_failures_total` series of server `to` and `reason`.
fn failures(p: &Proxy, to: SocketAddr, reason: &str) -> f64 {
    let text = p.proxy.as_ref().unwrap().metrics_text();
    let (to, reason) = (format!("to=\"{to}\""), format!("reason=\"{reason}\""));
    common::tools::metric_sum(
        &text
            .lines()
            .filter(|l| l.contains(&to) && l.contains(&reason))
            .collect::<Vec<_>>()
            .join("\n"),
        "ndots_upstream_failures_total{",
    )
}

/// An upstream that answers every query with A 192.0.2.1 and an OPT.
fn good_upstream() -> Scripted {
    Scripted::start(Box::new(|q| {
        let mut r = reply(q, ResponseCode::NoError);
        r.add_answer(a_record(qname(q), 300));
        Some(with_edns(r, q).to_vec().unwrap())
    }))
}

/// Upstream extended RCODEs about the exchange between the proxy and the server (BADKEY 17 ..
/// BADCOOKIE 23, RFC 8945, RFC 7873) and unassigned ones reached EDNS clients as they came:
/// `dig` printed `status: BADCOOKIE` for a cookie the proxy, not the client, had (not) sent.
/// The server failed the query: the next server is asked, and with none the client gets
/// SERVFAIL, as from unbound. Counted as `reason="extended_rcode"`.
#[test]
fn transaction_extended_rcodes_reached_edns_clients() {
    for rcode in [17u16, 18, 19, 20, 21, 22, 23, 24, 4095] {
        let bad = rcode_upstream(<ResponseCode as From<u16>>::from(rcode));
        let p = proxy("shortcut: {mode: off}\n", bad.addr);
        for (id, case) in [
            (1, Case::new("www", RecordType::A)),
            (2, Case::new("www", RecordType::A).dnssec()),
            (3, Case::new("www", RecordType::A).plain()),
        ] {
            let m = ask_msg(p.addr, &case, id);
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::ServFail,
                "upstream rcode {rcode}, {}",
                case.label()
            );
            assert!(m.answers.is_empty());
            assert_eq!(m.edns.is_some(), case.edns.is_some());
        }
        assert_eq!(bad.seen(), 3, "rcode {rcode}: never cached");
        assert_eq!(failures(&p, bad.addr, "extended_rcode"), 3.0, "{rcode}");
    }
    // A second server that answers: the client gets its answer.
    let bad = rcode_upstream(ResponseCode::BADCOOKIE);
    let good = good_upstream();
    let p = Proxy::start(
        "shortcut: {mode: off}\n",
        &[(".", bad.addr), (".", good.addr)],
    );
    let m = ask_msg(p.addr, &Case::new("www", RecordType::A), 1);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!((bad.seen(), good.seen()), (1, 1));
}

/// A reply whose OPCODE differed from the query's (STATUS for QUERY) was relayed: `dig` said
/// `Opcode mismatch`, dropped it and waited out its timeout, as glibc would (5 s a try). RFC
/// 1035 §4.1.1: the opcode is copied into the response; a reply with another one is the
/// server's failure: the next server is asked, else SERVFAIL (unbound: SERVFAIL at once).
#[test]
fn a_reply_with_another_opcode_was_relayed() {
    let status = || {
        Scripted::start(Box::new(|q| {
            let mut r = reply(q, ResponseCode::NoError);
            r.metadata.op_code = OpCode::Status;
            r.add_answer(Record::from_rdata(
                qname(q),
                300,
                RData::A("203.0.113.66".parse().unwrap()),
            ));
            Some(with_edns(r, q).to_vec().unwrap())
        }))
    };
    let bad = status();
    let p = proxy("shortcut: {mode: off}\n", bad.addr);
    for (id, case) in [
        (1, Case::new("www", RecordType::A)),
        (2, Case::new("www", RecordType::A).plain()),
    ] {
        let bytes = ask(p.addr, &case, id).expect("an answer");
        assert_eq!((bytes[2] >> 3) & 0x0f, 0, "opcode QUERY: {bytes:02x?}");
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.op_code, OpCode::Query);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(m.answers.is_empty(), "{m:?}");
    }
    assert_eq!(failures(&p, bad.addr, "opcode_mismatch"), 2.0);
    drop(p);
    // With a second server, its answer.
    let bad = status();
    let good = good_upstream();
    let p = Proxy::start(
        "shortcut: {mode: off}\n",
        &[(".", bad.addr), (".", good.addr)],
    );
    let m = ask_msg(p.addr, &Case::new("www", RecordType::A), 1);
    assert_eq!(m.metadata.op_code, OpCode::Query);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(
        m.answers[0].data,
        RData::A("192.0.2.1".parse().unwrap()),
        "the second server's answer"
    );
    assert_eq!((bad.seen(), good.seen()), (1, 1));
}

/// The schema shortcut split the text of a name, escapes and all: `a\.b` is one label, and
/// `a\.b.default.svc.cluster.local` (a service in namespace default) got a synthesized NXDOMAIN.
#[test]
fn an_escaped_dot_in_a_label_was_split_by_the_schema() {
    let up = Scripted::start(Box::new(|q| {
        let mut r = reply(q, ResponseCode::NoError);
        r.add_answer(a_record(qname(q), 30));
        Some(with_edns(r, q).to_vec().unwrap())
    }));
    let p = proxy("shortcut: {mode: nxdomain}\n", up.addr);
    let labels: Vec<&[u8]> = vec![b"a.b", b"default", b"svc", b"cluster", b"local"];
    let name = Name::from_labels(labels).unwrap();
    let mut m = Message::new(3, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, RecordType::A));
    let a = Message::from_vec(&udp(p.addr, &m.to_vec().unwrap(), Duration::from_secs(3)).unwrap())
        .unwrap();
    assert_eq!(a.metadata.response_code, ResponseCode::NoError, "{a:?}");
    assert_eq!(up.seen(), 1, "forwarded");
}

/// TC was set when only a positive answer's NS records did not fit the client's buffer: nsd
/// leaves them out (RFC 2181 §9: TC only when required data does not fit), and the client was
/// sent to TCP for nothing. At every buffer size from 900 to 1,100 bytes, from cache, the
/// proxy's TC is nsd's, its answer section nsd's, and its authority and additional records
/// are among nsd's full answer's.
#[test]
fn tc_was_set_when_only_the_ns_records_did_not_fit() {
    let Some(nsd) = Nsd::start() else { return };
    let p = proxy("shortcut: {mode: off}\n", nsd.addr);
    let mut failures = Vec::new();
    for dnssec in [false, true] {
        let base = Case::new("mid", RecordType::TXT);
        let base = if dnssec { base.dnssec() } else { base };
        let full = ask_msg(nsd.addr, &base.clone().udp_size(4096), 1);
        assert!(
            full.authorities
                .iter()
                .any(|r| r.record_type() == RecordType::NS),
            "nsd gives the NS records: {full:?}"
        );
        let _ = ask(p.addr, &base.clone().udp_size(4096), 2).expect("cached");
        let (all_auth, all_add) = (section(&full.authorities), section(&full.additionals));
        for size in (900..=1100).step_by(2) {
            let case = base.clone().udp_size(size);
            let d = ask_msg(nsd.addr, &case, 3);
            let m = ask_msg(p.addr, &case, 3);
            let tag = format!("{} at {size}", case.label());
            if m.metadata.truncation != d.metadata.truncation {
                failures.push(format!(
                    "{tag}: TC {}, nsd {}",
                    m.metadata.truncation, d.metadata.truncation
                ));
                continue;
            }
            if d.metadata.truncation {
                continue;
            }
            if section(&m.answers) != section(&d.answers) {
                failures.push(format!("{tag}: answer section differs"));
            }
            for (what, got, all) in [
                ("authority", &m.authorities, &all_auth),
                ("additional", &m.additionals, &all_add),
            ] {
                if !section(got).iter().all(|r| all.contains(r)) {
                    failures.push(format!("{tag}: {what} not among nsd's"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An upstream reply with bytes after its last record was kept whole: the proxy's OPT went
/// after the junk, so every EDNS client got an answer it could not read, cached for the
/// record's TTL. The message ends with its last record (RFC 1035 §4.1); the rest is dropped,
/// as unbound does, with or without an OPT from the upstream.
#[test]
fn trailing_bytes_after_the_last_record_broke_edns_answers() {
    const JUNK: &[u8] = b"\x01\x02\x03\x04garbage";
    for upstream_opt in [false, true] {
        let up = Scripted::start(Box::new(move |q| {
            let mut r = reply(q, ResponseCode::NoError);
            r.add_answer(a_record(qname(q), 300));
            let r = if upstream_opt { with_edns(r, q) } else { r };
            let mut bytes = r.to_vec().unwrap();
            bytes.extend_from_slice(JUNK);
            Some(bytes)
        }));
        let p = proxy("shortcut: {mode: off}\n", up.addr);
        let tag = format!("upstream OPT: {upstream_opt}");
        // Fresh, then from cache, to an EDNS client; then to one without EDNS.
        for (id, case) in [
            (1, Case::new("www", RecordType::A)),
            (2, Case::new("www", RecordType::A)),
            (3, Case::new("www", RecordType::A).plain()),
        ] {
            let bytes = ask(p.addr, &case, id).expect("an answer");
            assert!(
                !bytes.windows(JUNK.len()).any(|w| w == JUNK),
                "{tag}, {}: the junk was relayed: {bytes:02x?}",
                case.label()
            );
            let m = Message::from_vec(&bytes)
                .unwrap_or_else(|e| panic!("{tag}, {}: unreadable: {e}", case.label()));
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{tag}");
            assert_eq!(m.answers.len(), 1, "{tag}");
            assert_eq!(m.edns.is_some(), case.edns.is_some(), "{tag}");
            // What the client got is exactly the message hickory reads: nothing after it.
            assert_eq!(
                m.to_vec().unwrap().len(),
                bytes.len(),
                "{tag}: {bytes:02x?}"
            );
        }
        assert_eq!(
            up.seen(),
            1,
            "{tag}: the answer was cached, without the junk"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Queries that break the rules of a query

/// What an answer to a bad query says: its rcode (extended), how many questions it echoes,
/// whether it has an OPT.
fn error_shape(msg: &[u8]) -> (u16, usize, bool) {
    let m = Message::from_vec(msg).expect("a readable error answer");
    (
        u16::from(m.metadata.response_code),
        m.queries.len(),
        m.edns.is_some(),
    )
}

/// `www.example.test. A`, RD, with `extra` appended to the section given by `counts`
/// (ANCOUNT, NSCOUNT, ARCOUNT).
fn query_with(extra: &[u8], counts: (u16, u16, u16)) -> Vec<u8> {
    let mut q = raw_query(77, "www.example.test.", RecordType::A, true, false, None);
    q.extend_from_slice(extra);
    q[6..8].copy_from_slice(&counts.0.to_be_bytes());
    q[8..10].copy_from_slice(&counts.1.to_be_bytes());
    q[10..12].copy_from_slice(&counts.2.to_be_bytes());
    q
}

/// The proxy answered queries a server must reject as if they were well formed: an OPT owned
/// by another name than the root (RFC 6891 §6.1.2) or in the answer or authority section
/// (§6.1.1: it belongs in the additional section); and two OPTs (§6.1.1: FORMERR) got a
/// FORMERR without the OPT §7 requires when the OPT is the problem. nsd, the oracle, says
/// FORMERR to each; the proxy also echoes the question and, as §7 says, an OPT (nsd sends
/// neither: the rcode is what is compared).
#[test]
fn queries_breaking_the_opt_rules_were_answered_as_if_well_formed() {
    let Some(nsd) = Nsd::start() else { return };
    let p = proxy("shortcut: {mode: off}\n", nsd.addr);
    let opt = raw_opt(1232, false, &[]);
    let mut owned_opt = vec![3, b'w', b'w', b'w'];
    owned_opt.extend_from_slice(&opt);
    let two_opts = [opt.clone(), opt.clone()].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("OPT owned by www.", query_with(&owned_opt, (0, 0, 1))),
        ("OPT in the answer section", query_with(&opt, (1, 0, 0))),
        ("OPT in the authority section", query_with(&opt, (0, 1, 0))),
        ("two OPTs", query_with(&two_opts, (0, 0, 2))),
    ];
    let mut failures = Vec::new();
    for (label, q) in &cases {
        for over_tcp in [false, true] {
            let ask = |addr| {
                if over_tcp {
                    tcp(addr, q)
                } else {
                    udp(addr, q, Duration::from_secs(2))
                }
            };
            let direct = error_shape(&ask(nsd.addr).expect("nsd answers"));
            let proxied = ask(p.addr).as_deref().map(error_shape);
            eprintln!("{label} (tcp: {over_tcp}): nsd {direct:?}, proxy {proxied:?}");
            if proxied.map(|p| p.0) != Some(direct.0)
                || proxied.map(|p| (p.1, p.2)) != Some((1, true))
            {
                failures.push(format!(
                    "{label} (tcp: {over_tcp}): nsd {direct:?}, proxy {proxied:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
