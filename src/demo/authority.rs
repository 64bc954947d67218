//! The demo's upstream: a small authoritative server on 127.0.0.1 (UDP and TCP on one ephemeral
//! port) that plays both kube-dns and the cloud resolver for a fixed [`World`]. It answers
//! A/AAAA for the names that exist, NODATA (with the zone's SOA) for names that exist without
//! records of the asked type and for empty non-terminals, and NXDOMAIN with the closest zone's
//! SOA for everything else (RFC 2308 §3), so the proxy's negative caching and its RFC 8020
//! ancestor check see what a real upstream would send. Every query it receives is counted.
//!
//! Answers are built with hickory-proto: this is off the proxy's hot path, and clarity matters
//! more here than allocations.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::world::World;

/// Queries received, by kind.
#[derive(Debug, Default)]
pub struct Counts {
    /// A and AAAA queries: the load lookups put on the upstream.
    pub address: AtomicU64,
    /// Everything else (the proxy's readiness probe asks for SOA).
    pub other: AtomicU64,
}

/// A running demo upstream.
pub struct Authority {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
}

impl Authority {
    /// Bind UDP and TCP on the same ephemeral port of 127.0.0.1 and serve `world` on `rt`.
    /// `delay` is added before every answer: the round trip to kube-dns on another node or to
    /// the cloud resolver, which loopback does not have.
    pub fn start(
        world: Arc<World>,
        delay: Duration,
        rt: &tokio::runtime::Handle,
    ) -> anyhow::Result<Authority> {
        let (udp, tcp) = bind_pair()?;
        let addr = udp.local_addr()?;
        let counts = Arc::new(Counts::default());
        let _guard = rt.enter();
        let udp = Arc::new(tokio::net::UdpSocket::from_std(udp)?);
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        {
            let (world, counts) = (world.clone(), counts.clone());
            rt.spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                    let query = buf[..n].to_vec();
                    let (udp, world, counts) = (udp.clone(), world.clone(), counts.clone());
                    tokio::spawn(async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        if let Some(reply) = answer(&query, &world, &counts) {
                            let _ = udp.send_to(&reply, from).await;
                        }
                    });
                }
            });
        }
        {
            let counts = counts.clone();
            rt.spawn(async move {
                while let Ok((mut conn, _)) = tcp.accept().await {
                    let (world, counts) = (world.clone(), counts.clone());
                    tokio::spawn(async move {
                        // RFC 7766 §8: two-byte length prefix.
                        loop {
                            let Ok(len) = conn.read_u16().await else {
                                return;
                            };
                            let mut query = vec![0u8; len as usize];
                            if conn.read_exact(&mut query).await.is_err() {
                                return;
                            }
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let Some(reply) = answer(&query, &world, &counts) else {
                                continue;
                            };
                            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&reply);
                            if conn.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        }
        Ok(Authority { addr, counts })
    }

    /// A and AAAA queries received so far.
    pub fn address_queries(&self) -> u64 {
        self.counts.address.load(Ordering::Relaxed)
    }
}

/// A UDP socket and a TCP listener on the same free port of 127.0.0.1.
fn bind_pair() -> anyhow::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            udp.set_nonblocking(true)?;
            tcp.set_nonblocking(true)?;
            return Ok((udp, tcp));
        }
    }
    anyhow::bail!("no free port for UDP and TCP together on 127.0.0.1")
}

/// The reply to one query, or `None` for bytes that are not a query.
fn answer(query: &[u8], world: &World, counts: &Counts) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let question = q.queries.first()?.clone();
    let qtype = question.query_type();
    let counter = match qtype {
        RecordType::A | RecordType::AAAA => &counts.address,
        _ => &counts.other,
    };
    counter.fetch_add(1, Ordering::Relaxed);

    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.authoritative = true;
    m.add_query(question.clone());
    if q.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }

    let qname = question.name().to_ascii().to_ascii_lowercase();
    let owner = question.name().clone();
    let zone = world.zone_of(&qname);
    let soa = || {
        let apex = Name::from_ascii(&zone.apex).expect("static zone names");
        let mname = Name::from_ascii(format!("ns.{}", zone.apex.trim_start_matches('.')))
            .unwrap_or_else(|_| apex.clone());
        let rname = Name::from_ascii(format!("hostmaster.{}", zone.apex.trim_start_matches('.')))
            .unwrap_or_else(|_| apex.clone());
        let rdata = SOA::new(mname, rname, 1, 7200, 1800, 86400, zone.negative_ttl);
        Record::from_rdata(apex, zone.negative_ttl, RData::SOA(rdata))
    };
    match qtype {
        RecordType::A | RecordType::AAAA => {
            let addrs = world.addresses(&qname);
            let records: Vec<Record> = addrs
                .iter()
                .filter_map(|ip| match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                    (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                    _ => None,
                })
                .map(|rd| Record::from_rdata(owner.clone(), zone.ttl, rd))
                .collect();
            if !records.is_empty() {
                m.add_answers(records);
            } else if world.exists(&qname) {
                m.add_authority(soa()); // NODATA (RFC 2308 §2.2)
            } else {
                m.metadata.response_code = ResponseCode::NXDomain;
                m.add_authority(soa());
            }
        }
        RecordType::SOA if world.is_apex(&qname) => {
            m.add_answer(soa());
        }
        _ => {
            if world.exists(&qname) {
                m.add_authority(soa());
            } else {
                m.metadata.response_code = ResponseCode::NXDomain;
                m.add_authority(soa());
            }
        }
    }
    m.to_vec().ok()
}
