//! From a captured frame to UDP datagrams and TCP segments: link layers, IPv4/IPv6 (with
//! fragment reassembly), and the tunnels found in real captures (GRE with ERSPAN I/II/III or
//! transparent Ethernet bridging, Teredo, VXLAN).
//!
//! Frames that are not IP, or IP that is not UDP/TCP, are not errors: they are skipped. Headers
//! cut short are skipped too (a snap length does that to unrelated traffic all the time); the
//! DNS layer reports the packets that matter.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::event::Timestamp;

// Link-layer header types (https://www.tcpdump.org/linktypes.html, draft-ietf-opsawg-pcaplinktype).
pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
/// DLT_RAW as some platforms write it into files (12 on most BSDs, 14 on OpenBSD).
const LINKTYPE_RAW_12: u32 = 12;
const LINKTYPE_RAW_14: u32 = 14;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LOOP: u32 = 108;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
const GRE_TEB: u16 = 0x6558;
const GRE_ERSPAN_2: u16 = 0x88be;
const GRE_ERSPAN_3: u16 = 0x22eb;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_GRE: u8 = 47;
const PROTO_IPIP: u8 = 4;
const PROTO_IPV6: u8 = 41;

const TEREDO_PORT: u16 = 3544;
const VXLAN_PORT: u16 = 4789;
const DNS_PORT: u16 = 53;

/// Tunnels inside tunnels: enough for any real capture, and a crafted packet cannot recurse
/// without end.
const MAX_DEPTH: u8 = 6;
/// Fragment sets kept at once, and how long (capture time) an incomplete one is kept.
const MAX_FRAG_SETS: usize = 1024;
const FRAG_TIMEOUT_US: u64 = 30_000_000;
/// RFC 791/8200: a reassembled datagram is at most 65535 bytes of payload.
const MAX_DATAGRAM: usize = 65_535;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp { seq: u32, flags: u8 },
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

/// A transport payload with its addresses.
#[derive(Debug)]
pub struct Segment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub transport: Transport,
    pub payload: &'a [u8],
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

struct FragSet {
    first_seen: Timestamp,
    /// (offset, bytes) as they came; overlaps resolved at assembly (first one wins).
    pieces: Vec<(usize, Vec<u8>)>,
    have: usize,
    total: Option<usize>,
    /// Upper-layer protocol (IPv6: from the fragment header; IPv4: the header's).
    proto: u8,
}

/// Turns frames into transport segments. Holds the fragment table (bounded).
pub struct Decoder {
    frags: HashMap<FragKey, FragSet>,
    pub frag_evicted: u64,
}

/// Why a frame could not be decoded at all.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    UnsupportedLink(u32),
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            frags: HashMap::new(),
            frag_evicted: 0,
        }
    }

    pub fn frame(
        &mut self,
        linktype: u32,
        data: &[u8],
        ts: Timestamp,
        sink: &mut dyn FnMut(Segment<'_>),
    ) -> Result<(), DecodeError> {
        match linktype {
            LINKTYPE_ETHERNET => self.ethernet(data, ts, 0, sink),
            LINKTYPE_RAW | LINKTYPE_RAW_12 | LINKTYPE_RAW_14 | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
                self.ip(data, ts, 0, sink)
            }
            LINKTYPE_NULL | LINKTYPE_LOOP => {
                // BSD loopback: a 4-byte address family, host byte order for NULL and network
                // order for LOOP. Try both orders: AF_INET is 2 everywhere, AF_INET6 is 10, 24,
                // 28 or 30 depending on the OS.
                if data.len() >= 4 {
                    let le = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                    let be = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                    if [le, be]
                        .iter()
                        .any(|af| matches!(af, 2 | 10 | 24 | 28 | 30))
                    {
                        self.ip(&data[4..], ts, 0, sink);
                    }
                }
            }
            LINKTYPE_LINUX_SLL => {
                // 16-byte header, protocol in the last two bytes.
                if data.len() >= 16 {
                    self.ethertype(
                        u16::from_be_bytes([data[14], data[15]]),
                        &data[16..],
                        ts,
                        0,
                        sink,
                    );
                }
            }
            LINKTYPE_LINUX_SLL2 => {
                // 20-byte header, protocol first.
                if data.len() >= 20 {
                    self.ethertype(
                        u16::from_be_bytes([data[0], data[1]]),
                        &data[20..],
                        ts,
                        0,
                        sink,
                    );
                }
            }
            other => return Err(DecodeError::UnsupportedLink(other)),
        }
        Ok(())
    }

    fn ethernet(
        &mut self,
        data: &[u8],
        ts: Timestamp,
        depth: u8,
        sink: &mut dyn FnMut(Segment<'_>),
    ) {
        if data.len() < 14 {
            return;
        }
        self.ethertype(
            u16::from_be_bytes([data[12], data[13]]),
            &data[14..],
            ts,
            depth,
            sink,
        );
    }

    /// The payload after an Ethernet type, through any number of 802.1Q / 802.1ad tags.
    fn ethertype(
        &mut self,
        mut et: u16,
        mut data: &[u8],
        ts: Timestamp,
        depth: u8,
        sink: &mut dyn FnMut(Segment<'_>),
    ) {
        while matches!(et, ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD) {
            if data.len() < 4 {
                return;
            }
            et = u16::from_be_bytes([data[2], data[3]]);
            data = &data[4..];
        }
        if et == ETH_IPV4 || et == ETH_IPV6 {
            self.ip(data, ts, depth, sink);
        }
    }

    fn ip(&mut self, data: &[u8], ts: Timestamp, depth: u8, sink: &mut dyn FnMut(Segment<'_>)) {
        if depth > MAX_DEPTH {
            return;
        }
        match data.first().map(|b| b >> 4) {
            Some(4) => self.ipv4(data, ts, depth, sink),
            Some(6) => self.ipv6(data, ts, depth, sink),
            _ => {}
        }
    }

    fn ipv4(&mut self, data: &[u8], ts: Timestamp, depth: u8, sink: &mut dyn FnMut(Segment<'_>)) {
        if data.len() < 20 {
            return;
        }
        let ihl = (data[0] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([data[2], data[3]]) as usize;
        if ihl < 20 || total < ihl || data.len() < ihl {
            return;
        }
        // Ethernet pads short frames; a snap length cuts long ones: take what the header says,
        // as far as it was captured.
        let end = total.min(data.len());
        let src = IpAddr::V4(Ipv4Addr::new(data[12], data[13], data[14], data[15]));
        let dst = IpAddr::V4(Ipv4Addr::new(data[16], data[17], data[18], data[19]));
        let proto = data[9];
        let frag = u16::from_be_bytes([data[6], data[7]]);
        let more = frag & 0x2000 != 0;
        let offset = (frag & 0x1fff) as usize * 8;
        let payload = &data[ihl..end];
        if more || offset != 0 {
            let id = u16::from_be_bytes([data[4], data[5]]) as u32;
            let key = FragKey {
                src,
                dst,
                id,
                proto,
            };
            if let Some((proto, whole)) = self.fragment(key, proto, offset, more, payload, ts) {
                self.transport(proto, src, dst, &whole, ts, depth, sink);
            }
            return;
        }
        self.transport(proto, src, dst, payload, ts, depth, sink);
    }

    fn ipv6(&mut self, data: &[u8], ts: Timestamp, depth: u8, sink: &mut dyn FnMut(Segment<'_>)) {
        if data.len() < 40 {
            return;
        }
        let plen = u16::from_be_bytes([data[4], data[5]]) as usize;
        let end = (40 + plen).min(data.len());
        let mut src = [0u8; 16];
        src.copy_from_slice(&data[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&data[24..40]);
        let (src, dst) = (
            IpAddr::V6(Ipv6Addr::from(src)),
            IpAddr::V6(Ipv6Addr::from(dst)),
        );
        let mut next = data[6];
        let mut pos = 40;
        // Extension headers (RFC 8200 §4): hop-by-hop, routing, destination options, AH; the
        // fragment header is handled below. Anything else is the upper layer.
        loop {
            match next {
                0 | 43 | 60 | 51 => {
                    if pos + 2 > end {
                        return;
                    }
                    let len = if next == 51 {
                        (data[pos + 1] as usize + 2) * 4 // RFC 4302 §2.2: in 4-octet units
                    } else {
                        (data[pos + 1] as usize + 1) * 8
                    };
                    next = data[pos];
                    pos += len;
                }
                44 => {
                    if pos + 8 > end {
                        return;
                    }
                    let proto = data[pos];
                    let fo = u16::from_be_bytes([data[pos + 2], data[pos + 3]]);
                    let offset = (fo & 0xfff8) as usize;
                    let more = fo & 1 != 0;
                    let id = u32::from_be_bytes([
                        data[pos + 4],
                        data[pos + 5],
                        data[pos + 6],
                        data[pos + 7],
                    ]);
                    let payload = &data[pos + 8..end];
                    if !more && offset == 0 {
                        // An atomic fragment (RFC 6946): no reassembly.
                        self.transport(proto, src, dst, payload, ts, depth, sink);
                        return;
                    }
                    let key = FragKey {
                        src,
                        dst,
                        id,
                        proto: 0,
                    };
                    if let Some((proto, whole)) =
                        self.fragment(key, proto, offset, more, payload, ts)
                    {
                        // Extension headers after the fragment header are in the reassembled
                        // payload; rare for DNS, and skipped by the transport match below.
                        self.transport(proto, src, dst, &whole, ts, depth, sink);
                    }
                    return;
                }
                _ => break,
            }
        }
        if pos > end {
            return;
        }
        self.transport(next, src, dst, &data[pos..end], ts, depth, sink);
    }

    /// Add one fragment; returns the upper-layer protocol and the whole payload once complete.
    fn fragment(
        &mut self,
        key: FragKey,
        proto: u8,
        offset: usize,
        more: bool,
        payload: &[u8],
        ts: Timestamp,
    ) -> Option<(u8, Vec<u8>)> {
        if offset + payload.len() > MAX_DATAGRAM {
            return None;
        }
        if !self.frags.contains_key(&key) && self.frags.len() >= MAX_FRAG_SETS {
            // Drop sets that timed out; if none did, the oldest one.
            let before = self.frags.len();
            self.frags
                .retain(|_, s| ts.0.saturating_sub(s.first_seen.0) <= FRAG_TIMEOUT_US);
            if self.frags.len() == before {
                if let Some(oldest) = self
                    .frags
                    .iter()
                    .min_by_key(|(_, s)| s.first_seen)
                    .map(|(k, _)| *k)
                {
                    self.frags.remove(&oldest);
                }
            }
            self.frag_evicted += (before - self.frags.len()) as u64;
        }
        let set = self.frags.entry(key).or_insert_with(|| FragSet {
            first_seen: ts,
            pieces: Vec::new(),
            have: 0,
            total: None,
            proto,
        });
        if !more {
            set.total = Some(offset + payload.len());
        }
        if set
            .pieces
            .iter()
            .any(|(o, p)| *o == offset && p.len() == payload.len())
        {
            return None; // a duplicate
        }
        set.have += payload.len();
        set.pieces.push((offset, payload.to_vec()));
        let total = set.total?;
        if set.have < total {
            return None;
        }
        // Enough bytes: check coverage without holes, then assemble.
        set.pieces.sort_by_key(|(o, _)| *o);
        let mut covered = 0usize;
        for (o, p) in &set.pieces {
            if *o > covered {
                return None; // a hole; overlapping pieces made `have` too big
            }
            covered = covered.max(o + p.len());
        }
        if covered < total {
            return None;
        }
        let set = self.frags.remove(&key)?;
        let mut whole = vec![0u8; total];
        let mut filled = 0usize;
        for (o, p) in &set.pieces {
            // First data wins over later overlapping data (RFC 5722 says drop overlaps in IPv6;
            // real stacks differ, and counting matters more here than the exact bytes).
            let start = (*o).max(filled);
            let stop = (o + p.len()).min(total);
            if start < stop {
                whole[start..stop].copy_from_slice(&p[start - o..stop - o]);
                filled = stop;
            }
        }
        Some((set.proto, whole))
    }

    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        data: &[u8],
        ts: Timestamp,
        depth: u8,
        sink: &mut dyn FnMut(Segment<'_>),
    ) {
        match proto {
            PROTO_UDP => {
                if data.len() < 8 {
                    return;
                }
                let sport = u16::from_be_bytes([data[0], data[1]]);
                let dport = u16::from_be_bytes([data[2], data[3]]);
                let len = u16::from_be_bytes([data[4], data[5]]) as usize;
                // Length 0 is legal for IPv6 jumbograms only; use what is there.
                let end = if len >= 8 {
                    len.min(data.len())
                } else {
                    data.len()
                };
                let payload = &data[8..end];
                if sport == TEREDO_PORT || dport == TEREDO_PORT {
                    if let Some(inner) = teredo_inner(payload) {
                        self.ip(inner, ts, depth + 1, sink);
                        return;
                    }
                }
                // VXLAN only when it parses as such: a DNS message to or from port 4789 (a
                // client that drew it as its source port) is DNS, not a tunnel.
                if (dport == VXLAN_PORT || sport == VXLAN_PORT)
                    && sport != DNS_PORT
                    && dport != DNS_PORT
                {
                    if let Some(inner) = vxlan_inner(payload) {
                        self.ethernet(inner, ts, depth + 1, sink);
                        return;
                    }
                }
                sink(Segment {
                    src,
                    dst,
                    sport,
                    dport,
                    transport: Transport::Udp,
                    payload,
                });
            }
            PROTO_TCP => {
                if data.len() < 20 {
                    return;
                }
                let off = (data[12] >> 4) as usize * 4;
                if off < 20 || off > data.len() {
                    return;
                }
                sink(Segment {
                    src,
                    dst,
                    sport: u16::from_be_bytes([data[0], data[1]]),
                    dport: u16::from_be_bytes([data[2], data[3]]),
                    transport: Transport::Tcp {
                        seq: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
                        flags: data[13],
                    },
                    payload: &data[off..],
                });
            }
            PROTO_GRE => self.gre(data, ts, depth + 1, sink),
            PROTO_IPIP | PROTO_IPV6 => self.ip(data, ts, depth + 1, sink),
            _ => {}
        }
    }

    /// GRE (RFC 2784, RFC 2890 key and sequence fields) carrying IP, Ethernet, or ERSPAN.
    fn gre(&mut self, data: &[u8], ts: Timestamp, depth: u8, sink: &mut dyn FnMut(Segment<'_>)) {
        if data.len() < 4 {
            return;
        }
        let flags = u16::from_be_bytes([data[0], data[1]]);
        let proto = u16::from_be_bytes([data[2], data[3]]);
        let mut pos = 4;
        let seq_present = flags & 0x1000 != 0;
        for bit in [0x8000u16, 0x2000, 0x1000] {
            if flags & bit != 0 {
                pos += 4;
            }
        }
        if pos > data.len() {
            return;
        }
        let rest = &data[pos..];
        match proto {
            ETH_IPV4 | ETH_IPV6 => self.ip(rest, ts, depth, sink),
            GRE_TEB => self.ethernet(rest, ts, depth, sink),
            // ERSPAN type I has no header and no GRE sequence number; type II has an 8-byte
            // header (and the sequence number).
            GRE_ERSPAN_2 => {
                if seq_present {
                    if rest.len() >= 8 {
                        self.ethernet(&rest[8..], ts, depth, sink);
                    }
                } else {
                    self.ethernet(rest, ts, depth, sink);
                }
            }
            // ERSPAN type III: 12-byte header, plus an 8-byte platform subheader when O is set.
            GRE_ERSPAN_3 if rest.len() >= 12 => {
                let skip = if rest[11] & 0x01 != 0 { 20 } else { 12 };
                if rest.len() >= skip {
                    self.ethernet(&rest[skip..], ts, depth, sink);
                }
            }
            _ => {}
        }
    }
}

/// The usual captured frame, decoded without the general walk: Ethernet (no VLAN tag) or raw
/// IPv4, an unfragmented IPv4 header, UDP on ports that are not a tunnel's (Teredo, VXLAN).
/// `None` for anything else, which [`Decoder::frame`] then decodes; where this gives a segment
/// it is the one `frame` gives (a unit test compares them on every variation).
#[inline]
pub fn udp4_fast(linktype: u32, data: &[u8]) -> Option<Segment<'_>> {
    let ip = match linktype {
        LINKTYPE_ETHERNET if data.len() >= 14 && data[12..14] == [0x08, 0x00] => &data[14..],
        LINKTYPE_RAW | LINKTYPE_RAW_12 | LINKTYPE_RAW_14 | LINKTYPE_IPV4 => data,
        _ => return None,
    };
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != PROTO_UDP {
        return None;
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    // More fragments, or an offset: reassembly, the general way.
    if ihl < 20 || total < ihl || ip.len() < ihl || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0
    {
        return None;
    }
    let udp = &ip[ihl..total.min(ip.len())];
    if udp.len() < 8 {
        return None;
    }
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    if matches!(sport, TEREDO_PORT | VXLAN_PORT) || matches!(dport, TEREDO_PORT | VXLAN_PORT) {
        return None;
    }
    let len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    let end = if len >= 8 {
        len.min(udp.len())
    } else {
        udp.len()
    };
    Some(Segment {
        src: IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
        dst: IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])),
        sport,
        dport,
        transport: Transport::Udp,
        payload: &udp[8..end],
    })
}

/// Teredo (RFC 4380 §5.1.1): optional authentication and origin indication headers, then IPv6.
/// The Ethernet frame inside a VXLAN packet (RFC 7348 §5): flags exactly the I bit, the
/// reserved bytes zero, and an inner frame that carries IP (or a VLAN tag).
fn vxlan_inner(p: &[u8]) -> Option<&[u8]> {
    if p.len() < 8 + 14 || p[0] != 0x08 || p[1..4] != [0, 0, 0] || p[7] != 0 {
        return None;
    }
    let inner = &p[8..];
    let ethertype = u16::from_be_bytes([inner[12], inner[13]]);
    matches!(
        ethertype,
        ETH_IPV4 | ETH_IPV6 | ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD
    )
    .then_some(inner)
}

fn teredo_inner(mut p: &[u8]) -> Option<&[u8]> {
    for _ in 0..2 {
        if p.len() >= 2 && p[0] == 0 && p[1] == 1 {
            if p.len() < 4 {
                return None;
            }
            let skip = 4 + p[2] as usize + p[3] as usize + 9;
            p = p.get(skip..)?;
        } else if p.len() >= 2 && p[0] == 0 && p[1] == 0 {
            p = p.get(8..)?;
        }
    }
    if p.len() >= 40 && p[0] >> 4 == 6 {
        Some(p)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp(payload: &[u8], id: u16, frag: u16) -> Vec<u8> {
        let mut v = vec![
            0x45,
            0,
            0,
            0,
            (id >> 8) as u8,
            id as u8,
            (frag >> 8) as u8,
            frag as u8,
            64,
            17,
            0,
            0,
        ];
        v.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        v.extend_from_slice(payload);
        let total = v.len() as u16;
        v[2..4].copy_from_slice(&total.to_be_bytes());
        v
    }

    fn collect(d: &mut Decoder, linktype: u32, frame: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
        let mut got = Vec::new();
        d.frame(linktype, frame, Timestamp(0), &mut |s| {
            got.push((s.sport, s.dport, s.payload.to_vec()))
        })
        .unwrap();
        got
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    /// Wherever the fast path gives a segment, the general decoder gives that one segment:
    /// every byte of the Ethernet, IPv4 and UDP headers set to values that matter (version,
    /// header length, total length, fragment bits, protocol, tunnel and DNS ports, UDP
    /// length), each link type, and every truncation.
    #[test]
    fn the_fast_udp4_path_gives_what_the_general_decoder_gives() {
        let mut base = vec![0u8; 12];
        base.extend_from_slice(&[0x08, 0x00]);
        base.extend_from_slice(&ipv4_udp(&udp(40000, 53, b"dns message"), 9, 0));
        let values: [u8; 16] = [
            0, 1, 4, 5, 6, 8, 0x11, 0x20, 0x35, 0x40, 0x45, 0x46, 0x4f, 0x65, 0x81, 0xff,
        ];
        let (mut fast, mut checked) = (0, 0);
        for linktype in [
            LINKTYPE_ETHERNET,
            LINKTYPE_RAW,
            LINKTYPE_IPV4,
            LINKTYPE_LINUX_SLL,
        ] {
            let skip = if linktype == LINKTYPE_ETHERNET { 0 } else { 14 };
            let frame = &base[skip..];
            let mut variants = vec![frame.to_vec()];
            for at in 0..frame.len().min(14 + 28 - skip) {
                for v in values {
                    let mut f = frame.to_vec();
                    f[at] = v;
                    variants.push(f);
                }
            }
            for port in [TEREDO_PORT, VXLAN_PORT, 53, 5353] {
                for at in [34, 36] {
                    let mut f = base.clone();
                    f[at..at + 2].copy_from_slice(&port.to_be_bytes());
                    variants.push(f[skip..].to_vec());
                }
            }
            for n in 0..frame.len() {
                variants.push(frame[..n].to_vec());
            }
            for f in &variants {
                checked += 1;
                let Some(seg) = udp4_fast(linktype, f) else {
                    continue;
                };
                fast += 1;
                let mut got = Vec::new();
                Decoder::new()
                    .frame(linktype, f, Timestamp(0), &mut |s| {
                        got.push((
                            s.src,
                            s.dst,
                            s.sport,
                            s.dport,
                            s.transport,
                            s.payload.to_vec(),
                        ))
                    })
                    .unwrap();
                let want = (
                    seg.src,
                    seg.dst,
                    seg.sport,
                    seg.dport,
                    seg.transport,
                    seg.payload.to_vec(),
                );
                assert_eq!(got, vec![want], "link type {linktype}, frame {f:02x?}");
            }
        }
        assert!(
            fast > 100 && fast < checked,
            "{fast} of {checked} took the fast path"
        );
    }

    #[test]
    fn vxlan_is_decoded_only_when_it_parses_as_vxlan() {
        let mut inner = vec![0u8; 12];
        inner.extend_from_slice(&[0x08, 0x00]);
        inner.extend_from_slice(&ipv4_udp(&udp(1000, 53, b"hello"), 1, 0));
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vx.extend_from_slice(&inner);
        let got = collect(
            &mut Decoder::new(),
            LINKTYPE_RAW,
            &ipv4_udp(&udp(50000, VXLAN_PORT, &vx), 1, 0),
        );
        assert_eq!(got, vec![(1000, 53, b"hello".to_vec())]);
        // A DNS message to or from a client that drew port 4789, even one that starts like a
        // VXLAN header, is DNS.
        for (sport, dport) in [(VXLAN_PORT, 53), (53, VXLAN_PORT)] {
            let got = collect(
                &mut Decoder::new(),
                LINKTYPE_RAW,
                &ipv4_udp(&udp(sport, dport, &vx), 1, 0),
            );
            assert_eq!(got, vec![(sport, dport, vx.clone())]);
        }
        // Port 4789 on both sides but reserved bits set: not VXLAN, kept as UDP.
        let mut bad = vx.clone();
        bad[1] = 1;
        let got = collect(
            &mut Decoder::new(),
            LINKTYPE_RAW,
            &ipv4_udp(&udp(VXLAN_PORT, VXLAN_PORT, &bad), 1, 0),
        );
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn ethernet_with_two_vlan_tags() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        f.extend_from_slice(&ipv4_udp(&udp(1000, 53, b"hello"), 1, 0));
        f.extend_from_slice(&[0; 6]); // Ethernet padding is not payload
        let got = collect(&mut Decoder::new(), LINKTYPE_ETHERNET, &f);
        assert_eq!(got, vec![(1000, 53, b"hello".to_vec())]);
    }

    #[test]
    fn ipv4_fragments_reassemble_in_any_order() {
        let data = udp(1000, 53, &[7u8; 30]); // 38 bytes: fragments of 16, 16, 6
        let f1 = ipv4_udp(&data[0..16], 9, 0x2000);
        let f2 = ipv4_udp(&data[16..32], 9, 0x2000 | 2);
        let f3 = ipv4_udp(&data[32..], 9, 4);
        let mut d = Decoder::new();
        assert!(collect(&mut d, LINKTYPE_RAW, &f3).is_empty());
        assert!(collect(&mut d, LINKTYPE_RAW, &f1).is_empty());
        assert!(collect(&mut d, LINKTYPE_RAW, &f1).is_empty()); // duplicate
        let got = collect(&mut d, LINKTYPE_RAW, &f2);
        assert_eq!(got, vec![(1000, 53, vec![7u8; 30])]);
        assert!(d.frags.is_empty());
    }

    #[test]
    fn fragment_table_is_bounded() {
        let mut d = Decoder::new();
        for id in 0..(MAX_FRAG_SETS as u16 + 10) {
            collect(&mut d, LINKTYPE_RAW, &ipv4_udp(&[0; 16], id, 0x2000));
        }
        assert!(d.frags.len() <= MAX_FRAG_SETS);
        assert_eq!(d.frag_evicted, 10);
    }

    #[test]
    fn sll2_and_unknown_links() {
        let mut f = vec![0x08, 0x00];
        f.extend_from_slice(&[0; 18]);
        f.extend_from_slice(&ipv4_udp(&udp(53, 999, b"x"), 1, 0));
        assert_eq!(
            collect(&mut Decoder::new(), LINKTYPE_LINUX_SLL2, &f).len(),
            1
        );
        let r = Decoder::new().frame(9999, &f, Timestamp(0), &mut |_| {});
        assert_eq!(r, Err(DecodeError::UnsupportedLink(9999)));
    }

    #[test]
    fn short_and_odd_frames_do_not_panic() {
        let mut d = Decoder::new();
        for lt in [0, 1, 101, 108, 113, 228, 229, 276] {
            for n in 0..64 {
                let f: Vec<u8> = (0..n).map(|i| (i * 37 + lt as usize) as u8).collect();
                let _ = d.frame(lt, &f, Timestamp(0), &mut |_| {});
                let mut g = f.clone();
                if !g.is_empty() {
                    g[0] = 0x45;
                }
                let _ = d.frame(lt, &g, Timestamp(0), &mut |_| {});
            }
        }
    }
}
