//! pcap and pcapng files to `QueryEvent`s.
//!
//! Containers: classic pcap in both byte orders with micro- or nanosecond timestamps
//! (draft-ietf-opsawg-pcap), and pcapng (draft-ietf-opsawg-pcapng): Section Header, Interface
//! Description (link type, `if_tsresol`, `if_tsoffset` per interface), Enhanced, Simple and the
//! obsolete Packet blocks; other blocks are skipped by their length. A file may hold several
//! sections, each with its own byte order and interfaces.
//!
//! DNS is what goes to or comes from `Options::port` over UDP or TCP. Packets are numbered from 1
//! as tshark numbers frames, and that number is the position of an unreadable packet.
//!
//! A damaged record header cannot be skipped (the next record's start is unknown): it is
//! reported and the file ends there.

use std::collections::VecDeque;
use std::io::BufRead;

use crate::event::{QueryEvent, Timestamp};

use super::link::{Decoder, Transport};
use super::pair::{Out, Pairer};
use super::tcp::{FlowKey, Reassembler};
use super::{InputCounts, Options, Position, Reader, Unreadable};

/// Largest packet accepted: the largest snap length libpcap uses (262 144) with room to spare.
const MAX_PACKET: usize = 1 << 20;
/// Largest pcapng block accepted (Enhanced Packet Blocks carry one packet; other blocks, such as
/// name resolution, can be larger but not sensibly beyond this).
const MAX_BLOCK: usize = 16 << 20;

#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second as 10^n (`false`) or 2^n (`true`).
    tsresol: (bool, u8),
    tsoffset: i64,
}

enum Container {
    Unknown,
    Pcap {
        big_endian: bool,
        nanos: bool,
        linktype: u32,
    },
    Pcapng {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

pub struct PcapReader<R> {
    input: R,
    container: Container,
    offset: u64,
    packet_no: u64,
    last_ts: Timestamp,
    buf: Vec<u8>,
    net: Dissect,
    ended: bool,
}

/// Everything after the container: link layers, TCP, pairing, and the events ready to go.
struct Dissect {
    decoder: Decoder,
    tcp: Reassembler,
    pairer: Pairer,
    out: Out,
    port: u16,
    skipped: u64,
}

impl<R: BufRead + Send> PcapReader<R> {
    pub fn new(input: R, opts: &Options) -> Self {
        PcapReader {
            input,
            container: Container::Unknown,
            offset: 0,
            packet_no: 0,
            last_ts: Timestamp(0),
            buf: Vec::with_capacity(65_536),
            net: Dissect {
                decoder: Decoder::new(),
                tcp: Reassembler::for_server_port(opts.port),
                pairer: Pairer::new(opts.answer_wait, opts.max_pending).dropping_copies(),
                out: VecDeque::new(),
                port: opts.port,
                skipped: 0,
            },
            ended: false,
        }
    }

    /// Read exactly `n` bytes into `self.buf`. `Ok(false)` at a clean end of file (no byte read).
    fn fill(&mut self, n: usize) -> Result<bool, String> {
        // Straight into a buffer of the right size: `read_to_end` would probe for more after
        // every record, which costs a read call per packet.
        self.buf.resize(n, 0);
        let mut got = 0;
        while got < n {
            match self.input.read(&mut self.buf[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        self.buf.truncate(got);
        self.offset += got as u64;
        if got == 0 {
            return Ok(false);
        }
        if got < n {
            return Err(format!("file ends inside a record ({got} of {n} bytes)"));
        }
        Ok(true)
    }

    /// Read exactly `n` bytes that must be there.
    fn need(&mut self, n: usize) -> Result<(), String> {
        match self.fill(n) {
            Ok(true) => Ok(()),
            Ok(false) if n == 0 => Ok(()),
            Ok(false) => Err("file ends inside a record".into()),
            Err(e) => Err(e),
        }
    }

    fn stop(&mut self, pos: Position, reason: String) {
        self.net.out.push_back(Err(Unreadable::new(pos, reason)));
        self.ended = true;
    }

    /// Read the next record and turn it into events in `self.net.out`; sets `ended` at the end.
    fn step(&mut self) {
        match self.container {
            Container::Unknown => self.file_header(),
            Container::Pcap { .. } => self.pcap_record(),
            Container::Pcapng { .. } => self.pcapng_block(),
        }
    }

    fn file_header(&mut self) {
        match self.fill(4) {
            Ok(true) => {}
            Ok(false) => return self.stop(Position::Byte(0), "empty file".into()),
            Err(e) => return self.stop(Position::Byte(0), e),
        }
        let magic = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
        if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
            // The first block is a Section Header Block; read its remaining fields as a block.
            self.container = Container::Pcapng {
                big_endian: false,
                interfaces: Vec::new(),
            };
            self.section_header_after_type();
            return;
        }
        let (big_endian, nanos) = match magic {
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
            _ => return self.stop(Position::Byte(0), "not a pcap or pcapng file".into()),
        };
        if let Err(e) = self.need(20) {
            return self.stop(Position::Byte(4), format!("pcap header: {e}"));
        }
        // version(2+2) thiszone(4) sigfigs(4) snaplen(4) linktype(4); the top bits of the link
        // type field carry FCS information (draft §5), the low 16 bits are the link type.
        let linktype = u32_at(&self.buf, 16, big_endian) & 0xffff;
        self.container = Container::Pcap {
            big_endian,
            nanos,
            linktype,
        };
    }

    fn pcap_record(&mut self) {
        let Container::Pcap {
            big_endian,
            nanos,
            linktype,
        } = self.container
        else {
            return;
        };
        let at = self.offset;
        // Fast path: header and packet both in the read buffer are dissected where they lie,
        // with no copy (the usual case; the buffer is 256 KiB). A read error here is the
        // record's: the input ends after one (`Input`), so it is counted now or never.
        let avail = match self.input.fill_buf() {
            Ok(avail) => avail,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => &[][..],
            Err(e) => {
                return self.stop(
                    Position::Byte(at),
                    format!("packet {}: {e}", self.packet_no + 1),
                )
            }
        };
        if avail.len() >= 16 {
            let caplen = u32_at(avail, 8, big_endian) as usize;
            if caplen <= MAX_PACKET && avail.len() >= 16 + caplen {
                self.packet_no += 1;
                let sec = u32_at(avail, 0, big_endian) as u64;
                let frac = u32_at(avail, 4, big_endian) as u64;
                let ts = Timestamp(sec * 1_000_000 + if nanos { frac / 1000 } else { frac });
                self.last_ts = ts;
                let pos = Position::Packet(self.packet_no);
                self.net.packet(linktype, &avail[16..16 + caplen], ts, pos);
                self.input.consume(16 + caplen);
                self.offset += (16 + caplen) as u64;
                return;
            }
        }
        match self.fill(16) {
            Ok(true) => {}
            Ok(false) => {
                self.ended = true;
                return;
            }
            Err(e) => {
                return self.stop(
                    Position::Byte(at),
                    format!("packet {}: {e}", self.packet_no + 1),
                )
            }
        }
        self.packet_no += 1;
        let sec = u32_at(&self.buf, 0, big_endian) as u64;
        let frac = u32_at(&self.buf, 4, big_endian) as u64;
        let caplen = u32_at(&self.buf, 8, big_endian) as usize;
        let ts = Timestamp(sec * 1_000_000 + if nanos { frac / 1000 } else { frac });
        if caplen > MAX_PACKET {
            return self.stop(
                Position::Packet(self.packet_no),
                format!("captured length {caplen} is not credible (byte {at}); the rest of the file cannot be read"),
            );
        }
        if let Err(e) = self.need(caplen) {
            return self.stop(
                Position::Packet(self.packet_no),
                format!("truncated packet: {e}"),
            );
        }
        self.packet(linktype, ts);
    }

    fn section_header_after_type(&mut self) {
        let at = self.offset - 4;
        // Block total length (4), byte-order magic (4): the magic decides how to read the length.
        if let Err(e) = self.need(8) {
            return self.stop(Position::Byte(at), format!("section header: {e}"));
        }
        let big_endian = match [self.buf[4], self.buf[5], self.buf[6], self.buf[7]] {
            [0x1a, 0x2b, 0x3c, 0x4d] => true,
            [0x4d, 0x3c, 0x2b, 0x1a] => false,
            _ => {
                return self.stop(
                    Position::Byte(at),
                    "section header: bad byte-order magic".into(),
                )
            }
        };
        let len = u32_at(&self.buf, 0, big_endian) as usize;
        if !(28..=MAX_BLOCK).contains(&len) || len % 4 != 0 {
            return self.stop(
                Position::Byte(at),
                format!("section header: bad block length {len}"),
            );
        }
        if let Err(e) = self.need(len - 12) {
            return self.stop(Position::Byte(at), format!("section header: {e}"));
        }
        // A new section starts a new set of interfaces (draft §4.1).
        self.container = Container::Pcapng {
            big_endian,
            interfaces: Vec::new(),
        };
    }

    fn pcapng_block(&mut self) {
        let Container::Pcapng { big_endian, .. } = self.container else {
            return;
        };
        let at = self.offset;
        match self.fill(4) {
            Ok(true) => {}
            Ok(false) => {
                self.ended = true;
                return;
            }
            Err(e) => return self.stop(Position::Byte(at), format!("block header: {e}")),
        }
        let btype = u32_at(&self.buf, 0, big_endian);
        if btype == 0x0a0d_0d0a {
            return self.section_header_after_type();
        }
        if let Err(e) = self.need(4) {
            return self.stop(Position::Byte(at), format!("block header: {e}"));
        }
        let len = u32_at(&self.buf, 0, big_endian) as usize;
        if !(12..=MAX_BLOCK).contains(&len) || len % 4 != 0 {
            return self.stop(
                Position::Byte(at),
                format!("block length {len} is not valid; the rest of the file cannot be read"),
            );
        }
        if let Err(e) = self.need(len - 8) {
            return self.stop(Position::Byte(at), format!("block: {e}"));
        }
        // body = buf[..len-12], then the repeated length.
        let body_len = len - 12;
        match btype {
            // Interface Description Block (§4.2).
            1 => {
                if body_len < 8 {
                    return self.net.out.push_back(Err(Unreadable::new(
                        Position::Byte(at),
                        "short interface block",
                    )));
                }
                let linktype = u16_at(&self.buf, 0, big_endian) as u32;
                let mut iface = Interface {
                    linktype,
                    tsresol: (false, 6),
                    tsoffset: 0,
                };
                // Options (§3.5): code, length, value padded to 32 bits.
                let mut p = 8;
                while p + 4 <= body_len {
                    let code = u16_at(&self.buf, p, big_endian);
                    let olen = u16_at(&self.buf, p + 2, big_endian) as usize;
                    let v = p + 4;
                    if code == 0 || v + olen > body_len {
                        break;
                    }
                    match (code, olen) {
                        (9, 1) => {
                            let r = self.buf[v];
                            iface.tsresol = (r & 0x80 != 0, r & 0x7f);
                        }
                        (14, 8) => iface.tsoffset = u64_at(&self.buf, v, big_endian) as i64,
                        _ => {}
                    }
                    p = v + olen.div_ceil(4) * 4;
                }
                if let Container::Pcapng { interfaces, .. } = &mut self.container {
                    // Bounded by the block count of the file; cap it anyway.
                    if interfaces.len() < 65_536 {
                        interfaces.push(iface);
                    }
                }
            }
            // Enhanced Packet Block (§4.3) and the obsolete Packet Block (Appendix A).
            6 | 2 => {
                self.packet_no += 1;
                if body_len < 20 {
                    return self.unreadable_packet("short packet block");
                }
                let (iface_id, hi, lo, caplen) = if btype == 6 {
                    (
                        u32_at(&self.buf, 0, big_endian) as usize,
                        u32_at(&self.buf, 4, big_endian),
                        u32_at(&self.buf, 8, big_endian),
                        u32_at(&self.buf, 12, big_endian) as usize,
                    )
                } else {
                    (
                        u16_at(&self.buf, 0, big_endian) as usize,
                        u32_at(&self.buf, 4, big_endian),
                        u32_at(&self.buf, 8, big_endian),
                        u32_at(&self.buf, 12, big_endian) as usize,
                    )
                };
                if 20 + caplen > body_len {
                    return self.unreadable_packet("captured length runs past the block");
                }
                let Some(iface) = self.interface(iface_id) else {
                    return self
                        .unreadable_packet(&format!("interface {iface_id} was not described"));
                };
                let ts = pcapng_time(((hi as u64) << 32) | lo as u64, iface);
                self.buf.copy_within(20..20 + caplen, 0);
                self.buf.truncate(caplen);
                self.packet(iface.linktype, ts);
            }
            // Simple Packet Block (§4.4): interface 0, no timestamp (we reuse the last one).
            3 => {
                self.packet_no += 1;
                if body_len < 4 {
                    return self.unreadable_packet("short simple packet block");
                }
                let orig = u32_at(&self.buf, 0, big_endian) as usize;
                let caplen = orig.min(body_len - 4);
                let Some(iface) = self.interface(0) else {
                    return self.unreadable_packet("interface 0 was not described");
                };
                self.buf.copy_within(4..4 + caplen, 0);
                self.buf.truncate(caplen);
                let ts = self.last_ts;
                self.packet(iface.linktype, ts);
            }
            _ => {}
        }
    }

    fn interface(&self, id: usize) -> Option<Interface> {
        match &self.container {
            Container::Pcapng { interfaces, .. } => interfaces.get(id).copied(),
            _ => None,
        }
    }

    fn unreadable_packet(&mut self, reason: &str) {
        self.net.out.push_back(Err(Unreadable::new(
            Position::Packet(self.packet_no),
            reason.to_string(),
        )));
    }

    /// One captured frame in `self.buf`.
    fn packet(&mut self, linktype: u32, ts: Timestamp) {
        self.last_ts = ts;
        let pos = Position::Packet(self.packet_no);
        self.net.packet(linktype, &self.buf, ts, pos);
    }
}

impl Dissect {
    fn packet(&mut self, linktype: u32, data: &[u8], ts: Timestamp, pos: Position) {
        let port = self.port;
        let Self {
            decoder,
            tcp,
            pairer,
            out,
            skipped,
            ..
        } = self;
        // Most frames are Ethernet/IPv4/UDP: no walk through the layers, no call per layer.
        if let Some(seg) = super::link::udp4_fast(linktype, data) {
            if seg.sport != port && seg.dport != port {
                *skipped += 1;
                pairer.expire(ts, out);
                return;
            }
            let q = (seg.src, seg.sport);
            let r = (seg.dst, seg.dport);
            for msg in udp_messages(seg.payload) {
                pairer.message(ts, q, r, msg, None, pos, out);
            }
            return;
        }
        let mut dns = false;
        let r = decoder.frame(linktype, data, ts, &mut |seg| {
            if seg.sport != port && seg.dport != port {
                return;
            }
            dns = true;
            let q = (seg.src, seg.sport);
            let r = (seg.dst, seg.dport);
            match seg.transport {
                Transport::Udp => {
                    for msg in udp_messages(seg.payload) {
                        pairer.message(ts, q, r, msg, None, pos, out);
                    }
                }
                Transport::Tcp { seq, flags } => {
                    let key = FlowKey {
                        src: seg.src,
                        sport: seg.sport,
                        dst: seg.dst,
                        dport: seg.dport,
                    };
                    tcp.segment(key, seq, flags, seg.payload, ts, &mut |msg| {
                        pairer.message(ts, q, r, msg, None, pos, out)
                    });
                }
            }
        });
        if let Err(super::link::DecodeError::UnsupportedLink(lt)) = r {
            out.push_back(Err(Unreadable::new(
                pos,
                format!("link type {lt} is not supported"),
            )));
            return;
        }
        if !dns {
            *skipped += 1;
            // Time moves on even without DNS: expire queries waiting too long.
            pairer.expire(ts, out);
        }
    }
}

/// The DNS messages of one captured UDP payload. A capture on a veth or on `any` sees a UDP
/// segmentation offload send (UDP_SEGMENT: ndots' own `server.udp_segmentation`, QUIC stacks)
/// before the kernel cuts it: one datagram holding several messages, each but the last exactly
/// as long as the first, which the receiving socket gets as separate datagrams. Such a payload
/// is split when the first message ends before the payload does and every piece of its length
/// is a whole message; any other payload is one message, as it was.
/// Only responses are looked at (the walk to a message's end costs analyze several percent
/// of its speed when done for queries too, and no stub resolver segments its queries).
fn udp_messages(payload: &[u8]) -> std::slice::Chunks<'_, u8> {
    let whole = payload.len().max(1);
    let response = payload.len() > 2 && payload[2] & 0x80 != 0;
    if !response {
        return payload.chunks(whole);
    }
    let piece = match crate::wire::message_end(payload) {
        Ok(end) if end > 0 && end < payload.len() => {
            let whole_messages = payload
                .chunks(end)
                .all(|m| crate::wire::message_end(m) == Ok(m.len()));
            if whole_messages {
                end
            } else {
                whole
            }
        }
        _ => whole,
    };
    payload.chunks(piece)
}

impl<R: BufRead + Send> Reader for PcapReader<R> {
    fn next_item(&mut self) -> Option<Result<QueryEvent, Unreadable>> {
        loop {
            if let Some(x) = self.net.out.pop_front() {
                return Some(x);
            }
            if self.ended {
                // What TCP streams still hold (past a gap, or cut short), then every query
                // still waiting.
                let pos = Position::Packet(self.packet_no);
                let Dissect {
                    tcp, pairer, out, ..
                } = &mut self.net;
                tcp.finish(&mut |k, ts, msg| {
                    pairer.message(ts, (k.src, k.sport), (k.dst, k.dport), msg, None, pos, out)
                });
                pairer.finish(out);
                return self.net.out.pop_front();
            }
            self.step();
        }
    }

    fn counters(&self, s: &mut InputCounts) {
        s.queries += self.net.pairer.queries;
        s.responses += self.net.pairer.responses;
        s.unanswered += self.net.pairer.unanswered;
        s.unmatched_responses += self.net.pairer.unmatched;
        s.skipped += self.net.pairer.skipped;
        s.duplicates += self.net.pairer.duplicates;
        s.truncated += self.net.pairer.truncated;
        s.stream_gaps += self.net.tcp.gaps;
        s.evicted += self.net.pairer.evicted + self.net.tcp.evicted + self.net.decoder.frag_evicted;
        s.skipped += self.net.skipped;
    }
}

fn pcapng_time(units: u64, iface: Interface) -> Timestamp {
    let (base2, exp) = iface.tsresol;
    let us: u128 = if base2 {
        if exp >= 64 {
            0
        } else {
            ((units as u128) * 1_000_000) >> exp
        }
    } else if exp <= 6 {
        (units as u128) * 10u128.pow(6 - exp as u32)
    } else if exp <= 38 {
        (units as u128) / 10u128.pow(exp as u32 - 6)
    } else {
        0
    };
    let us = us as i128 + iface.tsoffset as i128 * 1_000_000;
    Timestamp(us.clamp(0, u64::MAX as i128) as u64)
}

fn u16_at(b: &[u8], at: usize, be: bool) -> u16 {
    let x = [b[at], b[at + 1]];
    if be {
        u16::from_be_bytes(x)
    } else {
        u16::from_le_bytes(x)
    }
}
fn u32_at(b: &[u8], at: usize, be: bool) -> u32 {
    let x = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if be {
        u32::from_be_bytes(x)
    } else {
        u32::from_le_bytes(x)
    }
}
fn u64_at(b: &[u8], at: usize, be: bool) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    if be {
        u64::from_be_bytes(x)
    } else {
        u64::from_le_bytes(x)
    }
}

/// Writes a classic pcap file (microseconds, little-endian, Ethernet): used by `synth` and tests.
pub struct PcapWriter<W: std::io::Write> {
    out: W,
}

impl<W: std::io::Write> PcapWriter<W> {
    pub fn new(mut out: W) -> std::io::Result<Self> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65_535u32.to_le_bytes());
        h.extend_from_slice(&super::link::LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    /// One UDP/IPv4 datagram in an Ethernet frame.
    pub fn udp4(
        &mut self,
        ts: Timestamp,
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        payload: &[u8],
    ) -> std::io::Result<()> {
        let ip_len = 20 + 8 + payload.len();
        let frame_len = 14 + ip_len;
        let mut rec = Vec::with_capacity(16 + frame_len);
        rec.extend_from_slice(&((ts.0 / 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&((ts.0 % 1_000_000) as u32).to_le_bytes());
        rec.extend_from_slice(&(frame_len as u32).to_le_bytes());
        rec.extend_from_slice(&(frame_len as u32).to_le_bytes());
        rec.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
        rec.extend_from_slice(&[
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
        ]);
        rec.extend_from_slice(&src.0);
        rec.extend_from_slice(&dst.0);
        rec.extend_from_slice(&src.1.to_be_bytes());
        rec.extend_from_slice(&dst.1.to_be_bytes());
        rec.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        rec.extend_from_slice(&[0, 0]); // checksum optional over IPv4 (RFC 768)
        rec.extend_from_slice(payload);
        self.out.write_all(&rec)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use std::io::Cursor;

    fn q(id: u16, name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        wire::build_query(id, name, wire::TYPE_A, false, &mut v).unwrap();
        v
    }

    fn sample() -> Vec<u8> {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let c = ([10, 0, 0, 7], 40000);
        let s = ([10, 96, 0, 10], 53);
        let query = q(1, "web.prod.svc.cluster.local.");
        let view = wire::parse_query(&query).unwrap();
        let mut resp = Vec::new();
        wire::minimal_response(&query, &view, 3, false, &mut resp);
        w.udp4(Timestamp(1_000_000), c, s, &query).unwrap();
        w.udp4(Timestamp(1_000_250), s, c, &resp).unwrap();
        w.udp4(Timestamp(1_000_300), c, s, &q(2, "lost.")).unwrap();
        w.into_inner()
    }

    fn read(bytes: Vec<u8>) -> (Vec<Result<QueryEvent, Unreadable>>, InputCounts) {
        let mut r = PcapReader::new(Cursor::new(bytes), &Options::default());
        let mut v = Vec::new();
        while let Some(x) = r.next_item() {
            v.push(x);
        }
        let mut s = InputCounts::default();
        r.counters(&mut s);
        (v, s)
    }

    /// 9 of 1,000,000 queries vanished from a capture: those whose client drew UDP port 4789
    /// and whose DNS ID made the message look like a VXLAN header were taken for VXLAN.
    #[test]
    fn a_query_from_udp_port_4789_is_an_event_not_vxlan() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let c = ([10, 0, 0, 7], 4789);
        let s = ([10, 96, 0, 10], 53);
        let mut t = 1_000_000;
        // IDs whose first byte is 0x08 (the VXLAN I flag), and a few others.
        let ids: Vec<u16> = (0x0800..0x0810).chain([1, 0x0fff, 0x8808]).collect();
        for &id in &ids {
            let query = q(id, "web.prod.svc.cluster.local.");
            let view = wire::parse_query(&query).unwrap();
            let mut resp = Vec::new();
            wire::minimal_response(&query, &view, 3, false, &mut resp);
            w.udp4(Timestamp(t), c, s, &query).unwrap();
            w.udp4(Timestamp(t + 100), s, c, &resp).unwrap();
            t += 1000;
        }
        let (v, st) = read(w.into_inner());
        let events: Vec<&QueryEvent> = v.iter().filter_map(|x| x.as_ref().ok()).collect();
        assert_eq!(events.len(), ids.len(), "{v:?}");
        assert!(events.iter().all(|e| e.rcode == Some(3)));
        assert_eq!((st.queries, st.responses, st.unanswered), (19, 19, 0));
    }

    /// A capture on a veth of a proxy with `server.udp_segmentation` on: two answers to one
    /// client in one datagram (the kernel cuts it at the client's socket). Read as one
    /// message, the second query went unanswered.
    #[test]
    fn two_answers_in_one_segmented_datagram_answered_one_query() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let c = ([10, 0, 0, 7], 40000);
        let s = ([10, 96, 0, 10], 53);
        let mut merged = Vec::new();
        // Equal lengths, then a shorter last one (the only one that may be shorter).
        for (id, name) in [(1, "aaa.example."), (2, "bbb.example."), (3, "c.example.")] {
            let query = q(id, name);
            w.udp4(Timestamp(1_000_000 + id as u64), c, s, &query)
                .unwrap();
            let view = wire::parse_query(&query).unwrap();
            let mut resp = Vec::new();
            wire::minimal_response(&query, &view, 3, false, &mut resp);
            merged.extend_from_slice(&resp);
        }
        w.udp4(Timestamp(1_000_100), s, c, &merged).unwrap();
        // A datagram with trailing bytes that are no whole message stays one message.
        let query = q(4, "ddd.example.");
        let view = wire::parse_query(&query).unwrap();
        let mut resp = Vec::new();
        wire::minimal_response(&query, &view, 0, false, &mut resp);
        resp.extend_from_slice(&[0; 7]);
        w.udp4(Timestamp(1_000_200), c, s, &query).unwrap();
        w.udp4(Timestamp(1_000_300), s, c, &resp).unwrap();
        let (v, st) = read(w.into_inner());
        let rcodes: Vec<_> = v.iter().map(|e| e.as_ref().unwrap().rcode).collect();
        assert_eq!(rcodes, [Some(3), Some(3), Some(3), Some(0)], "{v:?}");
        assert_eq!((st.queries, st.responses, st.unanswered), (4, 4, 0));
    }

    #[test]
    fn reads_and_pairs_what_it_wrote() {
        let (v, s) = read(sample());
        assert_eq!(v.len(), 2);
        let e = v[0].as_ref().unwrap();
        assert_eq!(e.qname, "web.prod.svc.cluster.local.");
        assert_eq!(e.rcode, Some(3));
        assert_eq!(e.latency, Some(std::time::Duration::from_micros(250)));
        assert_eq!(e.client.to_string(), "10.0.0.7");
        assert_eq!(v[1].as_ref().unwrap().rcode, None);
        assert_eq!((s.queries, s.responses, s.unanswered), (2, 1, 1));
    }

    #[test]
    fn truncated_file_reports_the_cut_packet() {
        let mut b = sample();
        b.truncate(b.len() - 5);
        let (v, s) = read(b);
        let errs: Vec<_> = v.iter().filter_map(|x| x.as_ref().err()).collect();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].position, Position::Packet(3));
        assert_eq!(s.queries, 1);
    }

    #[test]
    fn nanosecond_big_endian_file() {
        // Rewrite the sample as big-endian nanosecond pcap.
        let le = sample();
        let mut be = vec![
            0xa1, 0xb2, 0x3c, 0x4d, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0,
            1,
        ];
        let mut p = 24;
        while p < le.len() {
            let word = |i: usize| {
                u32::from_le_bytes([le[p + i], le[p + i + 1], le[p + i + 2], le[p + i + 3]])
            };
            let (sec, us, cap, orig) = (word(0), word(4), word(8), word(12));
            for v in [sec, us * 1000, cap, orig] {
                be.extend_from_slice(&v.to_be_bytes());
            }
            be.extend_from_slice(&le[p + 16..p + 16 + cap as usize]);
            p += 16 + cap as usize;
        }
        let (v, _) = read(be);
        assert_eq!(
            v[0].as_ref().unwrap().latency,
            Some(std::time::Duration::from_micros(250))
        );
        assert_eq!(v[0].as_ref().unwrap().time, Timestamp(1_000_000));
    }

    /// Found by proptest: a pcapng file cut right after a block type read past the buffer.
    #[test]
    fn pcapng_cut_after_block_type_is_unreadable_not_a_panic() {
        for bytes in [vec![0x0a, 0x0d, 0x0d, 0x0a], vec![0xd4, 0xc3, 0xb2, 0xa1]] {
            let (v, _) = read(bytes);
            assert_eq!(v.len(), 1);
            assert!(v[0].is_err());
        }
    }

    #[test]
    fn pcapng_time_resolutions() {
        let i = |base2, exp| Interface {
            linktype: 1,
            tsresol: (base2, exp),
            tsoffset: 0,
        };
        assert_eq!(pcapng_time(5, i(false, 6)), Timestamp(5));
        assert_eq!(pcapng_time(5_000, i(false, 9)), Timestamp(5));
        assert_eq!(pcapng_time(3, i(false, 3)), Timestamp(3000));
        assert_eq!(pcapng_time(1 << 20, i(true, 20)), Timestamp(1_000_000));
        assert_eq!(pcapng_time(u64::MAX, i(false, 0)), Timestamp(u64::MAX));
        assert_eq!(
            pcapng_time(
                1,
                Interface {
                    tsoffset: 2,
                    ..i(false, 6)
                }
            ),
            Timestamp(2_000_001)
        );
    }
}
