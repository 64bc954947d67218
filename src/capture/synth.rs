//! A synthetic capture generator for tests and benchmarks: a Kubernetes pod population doing
//! `ndots:5` walks, written as pcap or CoreDNS `log` lines, deterministic from a seed.
//!
//! Population: namespaces with pods (IPv4 10.244.0.0/16), each pod's resolver either glibc (70%)
//! or musl, the search list `<ns>.svc.cluster.local svc.cluster.local cluster.local` plus a node
//! domain, and a mix of names: short in-namespace services (`web`), cross-namespace (`web.prod`),
//! service FQDNs without the trailing dot (4 dots, still expanded), external names
//! (`api.github.com`), and a few absolute names (trailing dot: no walk).
//!
//! The walk model is deliberately small and private (the full stub models live in `search`):
//! a name with fewer dots than ndots tries each search domain, then itself; otherwise itself first,
//! then the search domains. Each candidate is asked for A and AAAA at once; the walk ends at the
//! first candidate that exists. glibc takes a new source port per candidate, musl one per lookup.
//! Cluster names answer A (one record) and AAAA NODATA; external names answer both; everything
//! else is NXDOMAIN with the zone's SOA.
//!
//! Memory is constant: walks start in time order and packets are written through a small
//! reordering heap bounded by the number of walks in flight.
//!
//! Two shapes (`Shape`): `Walks` is the above, from `pods` pods (192 by default; a few thousand
//! make the walk tracker hold that many clients' walks); `DistinctClients` asks each query from
//! its own client address and port (10.0.0.1 upwards) and never more than one candidate of a
//! walk, so nothing joins: the worst case for the per-client bookkeeping of `ndots analyze`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::event::{AnswerSource, QueryEvent, Timestamp};
use crate::wire;

use super::coredns_log;
use super::pcap::PcapWriter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthFormat {
    Pcap,
    CorednsLog,
}

/// Who asks: pods walking their search lists, or a new client for every query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Walks { pods: u64 },
    DistinctClients,
}

/// Pods in the default population (8 namespaces of 24).
pub const DEFAULT_PODS: u64 = 8 * 24;

#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub format: SynthFormat,
    pub shape: Shape,
    /// Queries to write (the last walk is cut to fit).
    pub queries: u64,
    pub seed: u64,
    /// Lookups started per second (sets the capture's time span).
    pub lookups_per_sec: u64,
    /// First lookup's time.
    pub start: Timestamp,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            format: SynthFormat::Pcap,
            shape: Shape::Walks { pods: DEFAULT_PODS },
            queries: 10_000,
            seed: 1,
            lookups_per_sec: 2_000,
            // 2024-11-22T00:00:00Z
            start: Timestamp(1_732_233_600_000_000),
        }
    }
}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SynthSummary {
    pub queries: u64,
    pub lookups: u64,
    pub nxdomain: u64,
}

/// splitmix64: tiny, fast, and stable across dependency versions (the output of a seed must not
/// change when `rand` does).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const NAMESPACES: &[&str] = &[
    "default",
    "prod",
    "staging",
    "payments",
    "monitoring",
    "kube-system",
    "batch",
    "web",
];
const SERVICES: &[&str] = &[
    "api", "web", "db", "redis", "auth", "search", "queue", "metrics", "cart", "users",
];
const EXTERNAL: &[&str] = &[
    "api.github.com",
    "s3.amazonaws.com",
    "sts.us-east-1.amazonaws.com",
    "www.google.com",
    "registry-1.docker.io",
    "pypi.org",
    "hooks.slack.com",
    "o123456.ingest.sentry.io",
];
const NODE_DOMAIN: &str = "ec2.internal";
const CLUSTER: &str = "cluster.local";
const NDOTS: usize = 5;
const SERVER: ([u8; 4], u16) = ([10, 96, 0, 10], 53);

struct Pod {
    ip: [u8; 4],
    ns: usize,
    musl: bool,
}

/// `pods` pods spread over the namespaces, each namespace's in its own range of 10.244/16
/// (a /24 each while they fit, as with the default 24 per namespace).
fn population(rng: &mut Rng, pods: u64) -> Vec<Pod> {
    let per_ns = pods.div_ceil(NAMESPACES.len() as u64).clamp(1, 8_000);
    let stride = (per_ns + 2).div_ceil(256) * 256;
    let mut out = Vec::new();
    for ns in 0..NAMESPACES.len() {
        for i in 0..per_ns {
            let host = (10u32 << 24 | 244 << 16) + ns as u32 * stride as u32 + 2 + i as u32;
            out.push(Pod {
                ip: host.to_be_bytes(),
                ns,
                musl: rng.chance(30),
            });
        }
    }
    out
}

/// Does `name` (absolute, no trailing dot) exist, and how many A / AAAA records does it have?
fn answers(name: &str) -> Option<(u16, u16)> {
    if EXTERNAL.contains(&name) {
        return Some((2, 1));
    }
    // <svc>.<ns>.svc.cluster.local
    let rest = name.strip_suffix(".svc.cluster.local")?;
    let (svc, ns) = rest.split_once('.')?;
    (SERVICES.contains(&svc) && NAMESPACES.contains(&ns)).then_some((1, 0))
}

fn candidates(name: &str, ns: &str) -> Vec<String> {
    if let Some(abs) = name.strip_suffix('.') {
        return vec![abs.to_string()];
    }
    let search = [
        format!("{ns}.svc.{CLUSTER}"),
        format!("svc.{CLUSTER}"),
        CLUSTER.to_string(),
        NODE_DOMAIN.to_string(),
    ];
    let expanded = search.iter().map(|s| format!("{name}.{s}"));
    if name.matches('.').count() >= NDOTS {
        std::iter::once(name.to_string()).chain(expanded).collect()
    } else {
        expanded.chain(std::iter::once(name.to_string())).collect()
    }
}

fn pick_name(rng: &mut Rng, ns: &str) -> String {
    let svc = SERVICES[rng.below(SERVICES.len() as u64) as usize];
    let other = NAMESPACES[rng.below(NAMESPACES.len() as u64) as usize];
    match rng.below(100) {
        0..=34 => svc.to_string(),
        35..=49 => format!("{svc}.{other}"),
        50..=59 => format!("{svc}.{ns}.svc.{CLUSTER}"),
        60..=64 => format!("{svc}.{ns}.svc.{CLUSTER}."),
        65..=69 => format!("{}.", EXTERNAL[rng.below(EXTERNAL.len() as u64) as usize]),
        70..=74 => format!("nosuch{}.{other}", rng.below(50)),
        _ => EXTERNAL[rng.below(EXTERNAL.len() as u64) as usize].to_string(),
    }
}

/// One packet or log line waiting in the reordering heap.
struct Item {
    time: Timestamp,
    seq: u64,
    kind: ItemKind,
}
enum ItemKind {
    Packet {
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        payload: Vec<u8>,
    },
    Line(String),
}
impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(o.time, o.seq))
    }
}

enum Sink<W: Write> {
    Pcap(PcapWriter<W>),
    Log(W),
}

impl<W: Write> Sink<W> {
    fn write(&mut self, item: Item) -> io::Result<()> {
        match (self, item.kind) {
            (Sink::Pcap(w), ItemKind::Packet { src, dst, payload }) => {
                w.udp4(item.time, src, dst, &payload)
            }
            (Sink::Log(w), ItemKind::Line(l)) => w.write_all(l.as_bytes()),
            _ => Ok(()),
        }
    }
}

/// Build a response to `query`: `an` answer records of the question's type, or NXDOMAIN with an
/// SOA in the authority section (RFC 2308 §3), or NODATA with the SOA.
fn response(query: &[u8], rcode: u8, an: u16, out: &mut Vec<u8>) {
    // Our queries carry no OPT, so `minimal_response` leaves the question last and records can
    // be appended.
    let Ok(view) = wire::parse_query(query) else {
        return;
    };
    wire::minimal_response(query, &view, rcode, false, out);
    out[2] |= (wire::FLAG_AA >> 8) as u8;
    let qtype = view.question.qtype;
    if an > 0 {
        out[6..8].copy_from_slice(&an.to_be_bytes());
        for i in 0..an {
            out.extend_from_slice(&[0xc0, 12]);
            out.extend_from_slice(&qtype.to_be_bytes());
            out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
            out.extend_from_slice(&30u32.to_be_bytes());
            if qtype == wire::TYPE_AAAA {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&[
                    0xfd,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    1 + i as u8,
                ]);
            } else {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&[10, 96, 7, 1 + i as u8]);
            }
        }
    } else {
        // SOA cluster.local (uncompressed: small and obviously correct).
        out[8..10].copy_from_slice(&1u16.to_be_bytes());
        let _ = wire::encode_name(CLUSTER, out);
        out.extend_from_slice(&wire::TYPE_SOA.to_be_bytes());
        out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
        out.extend_from_slice(&5u32.to_be_bytes());
        let mut rdata = Vec::with_capacity(64);
        let _ = wire::encode_name("ns.dns.cluster.local", &mut rdata);
        let _ = wire::encode_name("hostmaster.cluster.local", &mut rdata);
        for v in [1u32, 7200, 1800, 86400, 5] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
}

/// Write a synthetic capture of `cfg.queries` queries to `out`.
pub fn write<W: Write>(cfg: &SynthConfig, out: W) -> io::Result<SynthSummary> {
    let mut rng = Rng(cfg.seed ^ 0x6e64_6f74_7320_6361);
    let pods = population(
        &mut rng,
        match cfg.shape {
            Shape::Walks { pods } => pods,
            Shape::DistinctClients => DEFAULT_PODS,
        },
    );
    let distinct = cfg.shape == Shape::DistinctClients;
    // DistinctClients: the next client address (10.0.0.1 upwards, then wrapping in 10/8).
    let mut next_client = 1u32;
    let mut sink = match cfg.format {
        SynthFormat::Pcap => Sink::Pcap(PcapWriter::new(out)?),
        SynthFormat::CorednsLog => Sink::Log(out),
    };
    let mut heap: BinaryHeap<Reverse<Item>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut summary = SynthSummary::default();
    let mut now = cfg.start.0;
    let gap = 1_000_000 / cfg.lookups_per_sec.max(1);
    let mut qbuf = Vec::with_capacity(512);
    let mut line = String::with_capacity(256);
    while summary.queries < cfg.queries {
        // Lookups start about every `gap` µs (uniform jitter: mean `gap`).
        now += rng.below(2 * gap + 1);
        while heap.peek().is_some_and(|Reverse(i)| i.time.0 < now) {
            let Reverse(i) = heap.pop().expect("peeked");
            sink.write(i)?;
        }
        let pod = &pods[rng.below(pods.len() as u64) as usize];
        let ns = NAMESPACES[pod.ns];
        let name = pick_name(&mut rng, ns);
        summary.lookups += 1;
        let mut t = now;
        let mut port = 32_768 + rng.below(28_000) as u16;
        let mut cands = candidates(&name, ns);
        if distinct {
            // One candidate of the walk, asked for one type, by a client never seen again.
            let pick = rng.below(cands.len() as u64) as usize;
            cands = vec![cands.swap_remove(pick)];
        }
        for cand in cands {
            if summary.queries >= cfg.queries {
                break;
            }
            if !pod.musl {
                port = 32_768 + rng.below(28_000) as u16;
            }
            let ip = if distinct {
                let ip = (10u32 << 24) | (next_client & 0x00ff_ffff);
                next_client = next_client.wrapping_add(1).max(1);
                ip.to_be_bytes()
            } else {
                pod.ip
            };
            let types: &[u16] = if !distinct {
                &[wire::TYPE_A, wire::TYPE_AAAA]
            } else if rng.chance(50) {
                &[wire::TYPE_A]
            } else {
                &[wire::TYPE_AAAA]
            };
            let exists = answers(&cand);
            let external = EXTERNAL.contains(&cand.as_str());
            let mut done_at = t;
            for (k, &qtype) in types.iter().enumerate() {
                if summary.queries >= cfg.queries {
                    break;
                }
                let id = rng.next() as u16;
                let qt = t + 15 * k as u64;
                let latency = if external {
                    2_000 + rng.below(20_000)
                } else {
                    100 + rng.below(900)
                };
                let rt = qt + latency;
                done_at = done_at.max(rt);
                let (rcode, an) = match exists {
                    Some((a, aaaa)) => (
                        wire::RCODE_NOERROR,
                        if qtype == wire::TYPE_A { a } else { aaaa },
                    ),
                    None => (wire::RCODE_NXDOMAIN, 0),
                };
                summary.queries += 1;
                if rcode == wire::RCODE_NXDOMAIN {
                    summary.nxdomain += 1;
                }
                let client = (ip, port);
                match cfg.format {
                    SynthFormat::Pcap => {
                        wire::build_query(id, &cand, qtype, false, &mut qbuf)
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                        let mut resp = Vec::with_capacity(qbuf.len() + 64);
                        response(&qbuf, rcode, an, &mut resp);
                        seq += 1;
                        heap.push(Reverse(Item {
                            time: Timestamp(qt),
                            seq,
                            kind: ItemKind::Packet {
                                src: client,
                                dst: SERVER,
                                payload: qbuf.clone(),
                            },
                        }));
                        seq += 1;
                        heap.push(Reverse(Item {
                            time: Timestamp(rt),
                            seq,
                            kind: ItemKind::Packet {
                                src: SERVER,
                                dst: client,
                                payload: resp,
                            },
                        }));
                    }
                    SynthFormat::CorednsLog => {
                        let e = QueryEvent {
                            time: Timestamp(qt),
                            client: IpAddr::V4(Ipv4Addr::from(ip)),
                            client_port: Some(port),
                            qname: format!("{cand}."),
                            qtype,
                            rcode: Some(rcode as u16),
                            answers: Some(an),
                            latency: Some(Duration::from_micros(latency)),
                            source: Some(AnswerSource::Captured),
                        };
                        line.clear();
                        coredns_log::format_line(&e, id, &mut line);
                        seq += 1;
                        heap.push(Reverse(Item {
                            time: Timestamp(rt),
                            seq,
                            kind: ItemKind::Line(line.clone()),
                        }));
                    }
                }
            }
            t = done_at + 10;
            if exists.is_some() {
                break;
            }
        }
    }
    while let Some(Reverse(i)) = heap.pop() {
        sink.write(i)?;
    }
    match sink {
        Sink::Pcap(w) => w.into_inner().flush()?,
        Sink::Log(mut w) => w.flush()?,
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_follow_ndots() {
        let c = candidates("web", "prod");
        assert_eq!(
            c,
            [
                "web.prod.svc.cluster.local",
                "web.svc.cluster.local",
                "web.cluster.local",
                "web.ec2.internal",
                "web"
            ]
        );
        assert_eq!(candidates("api.github.com.", "prod"), ["api.github.com"]);
        let many = candidates("a.b.c.d.e.f", "x");
        assert_eq!(many[0], "a.b.c.d.e.f");
        assert_eq!(answers("web.prod.svc.cluster.local"), Some((1, 0)));
        assert_eq!(answers("web.svc.cluster.local"), None);
    }

    #[test]
    fn deterministic_and_exact_in_size() {
        let cfg = SynthConfig {
            queries: 500,
            seed: 9,
            ..SynthConfig::default()
        };
        let mut a = Vec::new();
        let sa = write(&cfg, &mut a).unwrap();
        let mut b = Vec::new();
        write(&cfg, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(sa.queries, 500);
        assert!(
            sa.nxdomain > 100,
            "ndots:5 walks make many NXDOMAIN: {sa:?}"
        );
        let mut c = Vec::new();
        write(&SynthConfig { seed: 10, ..cfg }, &mut c).unwrap();
        assert_ne!(a, c);
    }

    /// `--shape distinct-clients`: every query from a client address never seen before, each
    /// answered; `--pods` spreads a bigger population, and the default one is as it was.
    #[test]
    fn distinct_clients_and_bigger_populations() {
        let cfg = SynthConfig {
            queries: 2_000,
            shape: Shape::DistinctClients,
            ..SynthConfig::default()
        };
        let mut bytes = Vec::new();
        assert_eq!(write(&cfg, &mut bytes).unwrap().queries, 2_000);
        let opts = crate::capture::Options::default();
        let evs: Vec<QueryEvent> =
            crate::capture::from_reader(Box::new(std::io::Cursor::new(bytes)), &opts)
                .unwrap()
                .flatten()
                .collect();
        assert_eq!(evs.len(), 2_000);
        let clients: std::collections::HashSet<IpAddr> = evs.iter().map(|e| e.client).collect();
        assert_eq!(clients.len(), 2_000);
        assert!(evs.iter().all(|e| e.rcode.is_some()));

        let mut rng = Rng(1);
        let pods = population(&mut rng, DEFAULT_PODS);
        assert_eq!(pods.len(), 192);
        assert_eq!(
            (pods[0].ip, pods[24].ip),
            ([10, 244, 0, 2], [10, 244, 1, 2])
        );
        let pods = population(&mut rng, 3_000);
        let ips: std::collections::HashSet<[u8; 4]> = pods.iter().map(|p| p.ip).collect();
        assert_eq!((pods.len(), ips.len()), (3_000, 3_000));
    }

    #[test]
    fn responses_parse_with_their_counts() {
        let mut q = Vec::new();
        wire::build_query(1, "web.prod.svc.cluster.local", wire::TYPE_A, false, &mut q).unwrap();
        for (rcode, an) in [(0u8, 2u16), (3, 0), (0, 0)] {
            let mut r = Vec::new();
            response(&q, rcode, an, &mut r);
            let info = wire::parse_response(&r).unwrap();
            assert_eq!((info.rcode, info.header.ancount), (rcode as u16, an));
            if an == 0 {
                assert_eq!(info.negative_ttl, Some(5));
            }
        }
    }
}
