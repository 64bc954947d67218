//! A scripted authoritative upstream on real UDP and TCP sockets, for the proxy's integration
//! tests: it serves a small zone table, records every query it receives, and can be told to
//! stop answering (to test failover and serve-stale).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ndots::wire;

#[derive(Clone, Debug)]
pub enum Rec {
    A(Ipv4Addr, u32),
    Aaaa(std::net::Ipv6Addr, u32),
    /// A TXT record of this many bytes, to force truncation over UDP.
    BigTxt(usize, u32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub qname: String,
    pub qtype: u16,
    pub tcp: bool,
}

/// (name, type) -> records.
type Zone = HashMap<(String, u16), Vec<Rec>>;

pub struct Upstream {
    pub addr: SocketAddr,
    records: Arc<Mutex<Zone>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub silent: Arc<AtomicBool>,
    /// Negative answers carry an SOA with this TTL/MINIMUM.
    pub soa_ttl: u32,
    pub delay_ms: Arc<AtomicUsize>,
    /// Answer only every other UDP query (a lossy path): the rest are seen but get nothing.
    pub drop_every_other: Arc<AtomicBool>,
    /// The first UDP query of type A for each name is seen but gets nothing (one datagram
    /// lost per name; health probes, of type SOA, are answered).
    pub drop_first_a: Arc<AtomicBool>,
    /// (name, type) pairs that are seen but never answered: a failure for one type only.
    pub silent_for: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Upstream {
    /// Start on 127.0.0.1 with a random port (UDP and TCP on the same port).
    pub fn start() -> Upstream {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let up = Upstream {
            addr,
            records: Arc::default(),
            seen: Arc::default(),
            silent: Arc::default(),
            soa_ttl: 60,
            delay_ms: Arc::default(),
            drop_every_other: Arc::default(),
            drop_first_a: Arc::default(),
            silent_for: Arc::default(),
        };
        let (records, seen, silent, delay) = (
            up.records.clone(),
            up.seen.clone(),
            up.silent.clone(),
            up.delay_ms.clone(),
        );
        let silent_for = up.silent_for.clone();
        let soa_ttl = up.soa_ttl;
        let lossy = up.drop_every_other.clone();
        let drop_first_a = up.drop_first_a.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut received = 0u64;
            let mut asked_a = std::collections::HashSet::new();
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    return;
                };
                let d = delay.load(Ordering::Relaxed);
                if d > 0 {
                    std::thread::sleep(Duration::from_millis(d as u64));
                }
                received += 1;
                let resp = answer(&buf[..n], &records, &seen, &silent, soa_ttl, false);
                if lossy.load(Ordering::Relaxed) && received % 2 == 0 {
                    continue;
                }
                if drop_first_a.load(Ordering::Relaxed) {
                    if let Ok(q) = wire::parse_query(&buf[..n]) {
                        let name =
                            buf[q.question.name_start..q.question.name_end].to_ascii_lowercase();
                        if q.question.qtype == wire::TYPE_A && asked_a.insert(name) {
                            continue;
                        }
                    }
                }
                if is_muted(&buf[..n], &silent_for.lock().unwrap()) {
                    continue;
                }
                if let Some(resp) = resp {
                    let _ = udp.send_to(&resp, from);
                }
            }
        });
        let (records, seen, silent) = (up.records.clone(), up.seen.clone(), up.silent.clone());
        std::thread::spawn(move || {
            for stream in tcp.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (records, seen, silent) = (records.clone(), seen.clone(), silent.clone());
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    loop {
                        let mut len = [0u8; 2];
                        if stream.read_exact(&mut len).is_err() {
                            return;
                        }
                        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                        if stream.read_exact(&mut msg).is_err() {
                            return;
                        }
                        if let Some(resp) = answer(&msg, &records, &seen, &silent, soa_ttl, true) {
                            let mut framed = (resp.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&resp);
                            if stream.write_all(&framed).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        up
    }

    pub fn add(&self, name: &str, qtype: u16, rec: Rec) {
        self.records
            .lock()
            .unwrap()
            .entry((name.to_ascii_lowercase(), qtype))
            .or_default()
            .push(rec);
    }

    /// Serve `rec` alone for (name, type) from now on.
    pub fn replace(&self, name: &str, qtype: u16, rec: Rec) {
        self.records
            .lock()
            .unwrap()
            .insert((name.to_ascii_lowercase(), qtype), vec![rec]);
    }

    pub fn count(&self, qname: &str, qtype: u16) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.qname == qname && s.qtype == qtype)
            .count()
    }

    pub fn total_of_type(&self, qtype: u16) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.qtype == qtype)
            .count()
    }

    pub fn total(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// Whether the query's (name, type) is one `silent_for` lists.
fn is_muted(msg: &[u8], muted: &[(String, u16)]) -> bool {
    let Ok(q) = wire::parse_query(msg) else {
        return false;
    };
    let Ok(name) = wire::name_to_string(msg, q.question.name_start) else {
        return false;
    };
    muted
        .iter()
        .any(|(n, t)| n.eq_ignore_ascii_case(&name) && *t == q.question.qtype)
}

fn answer(
    msg: &[u8],
    records: &Mutex<Zone>,
    seen: &Mutex<Vec<Seen>>,
    silent: &AtomicBool,
    soa_ttl: u32,
    tcp: bool,
) -> Option<Vec<u8>> {
    let q = wire::parse_query(msg).ok()?;
    let qname = wire::name_to_string(msg, q.question.name_start).ok()?;
    seen.lock().unwrap().push(Seen {
        qname: qname.clone(),
        qtype: q.question.qtype,
        tcp,
    });
    if silent.load(Ordering::Relaxed) {
        return None;
    }
    let recs = records.lock().unwrap();
    let name_exists = recs
        .keys()
        .any(|(n, _)| *n == qname || n.ends_with(&format!(".{qname}")));
    let mut out = msg[..q.question.end()].to_vec();
    let rr = recs
        .get(&(qname.clone(), q.question.qtype))
        .cloned()
        .unwrap_or_default();
    drop(recs);
    let rcode = if rr.is_empty() && !name_exists {
        wire::RCODE_NXDOMAIN
    } else {
        wire::RCODE_NOERROR
    };
    let flags = wire::FLAG_QR
        | wire::FLAG_AA
        | wire::FLAG_RA
        | (u16::from_be_bytes([msg[2], msg[3]]) & wire::FLAG_RD)
        | rcode as u16;
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[6..12].fill(0);
    let mut ancount = 0u16;
    for r in &rr {
        out.extend_from_slice(&[0xc0, 12]);
        match r {
            Rec::A(ip, ttl) => {
                out.extend_from_slice(&wire::TYPE_A.to_be_bytes());
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            Rec::Aaaa(ip, ttl) => {
                out.extend_from_slice(&wire::TYPE_AAAA.to_be_bytes());
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            Rec::BigTxt(n, ttl) => {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                let mut rdata = Vec::new();
                let mut left = *n;
                while left > 0 {
                    let k = left.min(255);
                    rdata.push(k as u8);
                    rdata.extend(std::iter::repeat_n(b'x', k));
                    left -= k;
                }
                out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                out.extend_from_slice(&rdata);
            }
        }
        ancount += 1;
    }
    out[6..8].copy_from_slice(&ancount.to_be_bytes());
    if ancount == 0 {
        // RFC 2308 §3: negative answers carry the zone's SOA in the authority section.
        out.extend_from_slice(&[0xc0, 12]);
        out.extend_from_slice(&wire::TYPE_SOA.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&soa_ttl.to_be_bytes());
        let mut rdata = Vec::new();
        wire::encode_name("ns.test.", &mut rdata).unwrap();
        wire::encode_name("hostmaster.test.", &mut rdata).unwrap();
        for v in [1u32, 3600, 600, 86400, soa_ttl] {
            rdata.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
        out[8..10].copy_from_slice(&1u16.to_be_bytes());
    }
    if let Some(e) = q.edns {
        wire::push_opt(&mut out, e.dnssec_ok());
        out[10..12].copy_from_slice(&1u16.to_be_bytes());
    }
    let limit = q.max_udp_response();
    if !tcp && out.len() > limit {
        let mut tc = Vec::new();
        wire::minimal_response(msg, &q, rcode, true, &mut tc);
        tc[2] |= 0x04; // AA
        return Some(tc);
    }
    Some(out)
}
