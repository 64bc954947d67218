//! DNS over TCP: per-direction stream reassembly and the two-byte length framing of
//! RFC 1035 §4.2.2 (several messages per segment and messages split across segments are both
//! normal, RFC 7766 §8).
//!
//! Bounded: at most `MAX_FLOWS` directions tracked (idle ones, then the least recently used,
//! dropped first); a direction buffers at most one message (≤ 65 537 bytes) plus
//! `MAX_OUT_OF_ORDER` bytes of segments that arrived ahead of a gap; and all flows together hold
//! at most `MAX_BUFFERED` bytes.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::event::Timestamp;

use super::link::{TCP_FIN, TCP_RST, TCP_SYN};

const MAX_FLOWS: usize = 16_384;
const FLOW_IDLE_US: u64 = 120_000_000;
const MAX_OUT_OF_ORDER: usize = 256 * 1024;
/// Bytes held over all flows (partial messages and segments past gaps). Each bound above alone
/// would still allow gigabytes across 16 Ki flows; past this one the least recently used flows
/// are dropped.
const MAX_BUFFERED: usize = 64 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

#[derive(Default)]
struct Flow {
    next_seq: Option<u32>,
    buf: Vec<u8>,
    /// Segments past a gap: (seq, bytes).
    ahead: Vec<(u32, Vec<u8>)>,
    ahead_bytes: usize,
    last_seen: u64,
    /// The buffer may not start at a message: after a gap, or a direction first seen
    /// mid-connection. Bytes are dropped up to a segment's start that holds a message's.
    resync: bool,
    /// While `resync`: where in `buf` captured segments start (the places a message can).
    starts: Vec<usize>,
    /// While `resync`: its loss is counted already (a gap given up on).
    resync_counted: bool,
    /// The QR bit this direction's messages carry, when known (from the server's port).
    qr: Option<bool>,
    /// The sequence number of the SYN that opened it, when captured.
    syn: Option<u32>,
}

#[derive(Default)]
pub struct Reassembler {
    flows: HashMap<FlowKey, Flow>,
    pub evicted: u64,
    /// Gaps given up on (bytes never seen): the stream restarts at the next segment.
    pub gaps: u64,
    buffered: usize,
    /// The DNS server's port, when known: a direction from it carries responses (QR set),
    /// one to it queries, which a restart after a gap checks.
    server_port: Option<u16>,
}

fn held(f: &Flow) -> usize {
    f.buf.len() + f.ahead_bytes
}

impl Reassembler {
    /// A reassembler for DNS served on `port`.
    pub fn for_server_port(port: u16) -> Self {
        Reassembler {
            server_port: Some(port),
            ..Self::default()
        }
    }

    /// Feed one segment; `emit` gets each complete DNS message of this direction.
    pub fn segment(
        &mut self,
        key: FlowKey,
        seq: u32,
        flags: u8,
        payload: &[u8],
        ts: Timestamp,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let mut seq = seq;
        if flags & TCP_SYN != 0 {
            // A new connection: the first data byte is ISN + 1 (RFC 9293 §3.4.1). The same
            // SYN again (retransmitted) goes on with the connection it opened.
            let f = self.flow(key, ts);
            if f.syn != Some(seq) {
                let before = held(f);
                *f = Flow {
                    next_seq: Some(seq.wrapping_add(1)),
                    syn: Some(seq),
                    last_seen: ts.0,
                    ..Flow::default()
                };
                self.buffered -= before;
            }
            if payload.is_empty() {
                return;
            }
            // TCP Fast Open (RFC 7413 §3): the SYN carries data, from ISN + 1. A server that
            // does not take it has the client send it again after the handshake, at the same
            // sequence number: read once.
            seq = seq.wrapping_add(1);
        }
        if !payload.is_empty() {
            let server_port = self.server_port;
            let f = self.flow(key, ts);
            let before = held(f);
            let mut gap = false;
            f.qr = server_port.map(|p| key.sport == p);
            add(f, seq, payload, &mut gap);
            let lost = drain(f, emit);
            let after = held(f);
            self.buffered = self.buffered - before + after;
            self.gaps += u64::from(gap) + lost;
            while self.buffered > MAX_BUFFERED {
                let Some(k) = self
                    .flows
                    .iter()
                    .min_by_key(|(_, f)| f.last_seen)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                self.remove(&k);
                self.evicted += 1;
            }
        }
        if flags & (TCP_FIN | TCP_RST) != 0 {
            if let Some(f) = self.flows.remove(&key) {
                self.buffered -= held(&f);
                self.gaps += close(f, emit);
            }
        }
    }

    /// The end of the capture: every flow is closed as by a FIN, `emit` getting its key and
    /// the time it was last seen with each message read from what it held.
    pub fn finish(&mut self, emit: &mut dyn FnMut(FlowKey, Timestamp, &[u8])) {
        let mut flows: Vec<(FlowKey, Flow)> = self.flows.drain().collect();
        // In the order they were last seen, so the events come out in capture order.
        flows.sort_by_key(|(_, f)| f.last_seen);
        self.buffered = 0;
        for (k, f) in flows {
            let at = Timestamp(f.last_seen);
            self.gaps += close(f, &mut |m| emit(k, at, m));
        }
    }

    fn remove(&mut self, key: &FlowKey) {
        if let Some(f) = self.flows.remove(key) {
            self.buffered -= held(&f);
        }
    }

    fn flow(&mut self, key: FlowKey, ts: Timestamp) -> &mut Flow {
        if !self.flows.contains_key(&key) && self.flows.len() >= MAX_FLOWS {
            let idle: Vec<FlowKey> = self
                .flows
                .iter()
                .filter(|(_, f)| ts.0.saturating_sub(f.last_seen) > FLOW_IDLE_US)
                .map(|(k, _)| *k)
                .collect();
            for k in &idle {
                self.remove(k);
            }
            self.evicted += idle.len() as u64;
            if idle.is_empty() {
                if let Some(k) = self
                    .flows
                    .iter()
                    .min_by_key(|(_, f)| f.last_seen)
                    .map(|(k, _)| *k)
                {
                    self.remove(&k);
                    self.evicted += 1;
                }
            }
        }
        let f = self.flows.entry(key).or_default();
        f.last_seen = ts.0;
        f
    }
}

fn add(f: &mut Flow, seq: u32, payload: &[u8], gap: &mut bool) {
    // A direction first seen mid-connection (no SYN captured) may start inside a message.
    let next = *f.next_seq.get_or_insert_with(|| {
        f.resync = true;
        f.resync_counted = false;
        seq
    });
    let delta = seq.wrapping_sub(next) as i32;
    if delta > 0 {
        // Ahead of a gap: kept for when the gap fills, within bounds; past them the missing
        // bytes are given up on.
        f.ahead_bytes += payload.len();
        f.ahead.push((seq, payload.to_vec()));
        if f.ahead_bytes > MAX_OUT_OF_ORDER || f.ahead.len() > 64 {
            *gap = true;
            restart_past_gap(f);
        }
        return;
    }
    // In order, or overlapping what we have (a retransmission): take only new bytes.
    let skip = (-(delta as i64)) as usize;
    if skip >= payload.len() {
        return;
    }
    if f.resync && skip == 0 {
        f.starts.push(f.buf.len());
    }
    f.buf.extend_from_slice(&payload[skip..]);
    f.next_seq = Some(next.wrapping_add((payload.len() - skip) as u32));
    // Segments that were waiting and now follow on.
    follow_on(f);
}

/// Give up on the bytes missing before the earliest segment held: the stream restarts there,
/// with what follows it on, and the message it cut is lost.
fn restart_past_gap(f: &mut Flow) {
    let Some(next) = f.next_seq else { return };
    let Some(i) = (0..f.ahead.len()).min_by_key(|&i| f.ahead[i].0.wrapping_sub(next)) else {
        return;
    };
    let (s, first) = f.ahead.swap_remove(i);
    f.ahead_bytes -= first.len();
    f.buf.clear();
    f.buf.extend_from_slice(&first);
    f.next_seq = Some(s.wrapping_add(first.len() as u32));
    f.resync = true;
    f.resync_counted = true;
    f.starts.clear();
    f.starts.push(0);
    follow_on(f);
}

/// Move the held segments that now follow on into the buffer.
fn follow_on(f: &mut Flow) {
    loop {
        let next = f.next_seq.expect("set before");
        let Some(i) = f
            .ahead
            .iter()
            .position(|(s, _)| (s.wrapping_sub(next) as i32) <= 0)
        else {
            break;
        };
        let (s, p) = f.ahead.swap_remove(i);
        f.ahead_bytes -= p.len();
        let skip = next.wrapping_sub(s) as usize;
        if skip < p.len() {
            if f.resync && skip == 0 {
                f.starts.push(f.buf.len());
            }
            f.buf.extend_from_slice(&p[skip..]);
            f.next_seq = Some(next.wrapping_add((p.len() - skip) as u32));
        }
    }
}

/// A flow's end (FIN, RST, the end of the capture): segments still held past a gap are read
/// (the missing bytes will not come), and what is left of a message cut short is lost. Returns
/// the gaps this found.
fn close(mut f: Flow, emit: &mut dyn FnMut(&[u8])) -> u64 {
    let mut gaps = 0;
    while !f.ahead.is_empty() {
        restart_past_gap(&mut f);
        gaps += 1 + drain(&mut f, emit);
    }
    let counted = f.resync && f.resync_counted;
    if !f.buf.is_empty() && !counted {
        // A message's start without its end (a snap length, a lost last segment).
        gaps += 1;
    }
    gaps
}

/// Whether `b` (length prefix first) starts a DNS message: a header with opcode QUERY, the
/// QR bit of the direction (`qr`, when known) and one question (RFC 9619), whose name (uncompressed: the first in a message) and type and
/// class fit in the length, the class IN, CH or ANY. `None`: too few bytes to tell.
fn starts_a_message(b: &[u8], qr: Option<bool>) -> Option<bool> {
    if b.len() < 2 + 12 {
        return None;
    }
    let len = u16::from_be_bytes([b[0], b[1]]) as usize;
    let opcode = (b[4] >> 3) & 0xf;
    if len < 12 + 5 || opcode != 0 || b[6..8] != [0, 1] {
        return Some(false);
    }
    if qr.is_some_and(|qr| qr != (b[4] & 0x80 != 0)) {
        // A query in the server's direction, or an answer in the client's: message-shaped
        // bytes inside another message (a TXT string may hold any).
        return Some(false);
    }
    let end = 2 + len;
    let mut at = 2 + 12;
    loop {
        if at >= end {
            return Some(false);
        }
        let l = *b.get(at)? as usize;
        if l > 63 || at - 14 + 1 + l > 255 {
            return Some(false);
        }
        at += 1 + l;
        if l == 0 {
            break;
        }
    }
    if at + 4 > end {
        return Some(false);
    }
    let class = b.get(at + 2..at + 4)?;
    Some(matches!(class, [0, 1] | [0, 3] | [0, 255]))
}

/// Drop `n` bytes from the front of a resyncing buffer; 1 when that is a loss not counted
/// yet (a direction first seen mid-connection, inside a message).
fn drop_front(f: &mut Flow, n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    f.buf.drain(..n);
    for s in &mut f.starts {
        *s -= n;
    }
    u64::from(!std::mem::replace(&mut f.resync_counted, true))
}

/// Hand out every complete length-prefixed message at the front of the buffer. Returns the
/// losses found that were not counted yet (0 or 1).
fn drain(f: &mut Flow, emit: &mut dyn FnMut(&[u8])) -> u64 {
    let mut lost = 0;
    if f.resync {
        // The first segment start that holds a message's start; the bytes before it (the
        // rest of a message cut by the gap) are dropped.
        loop {
            let Some(&at) = f.starts.first() else {
                let n = f.buf.len();
                return drop_front(f, n);
            };
            match starts_a_message(&f.buf[at..], f.qr) {
                None => return drop_front(f, at),
                Some(true) => {
                    lost = drop_front(f, at);
                    f.resync = false;
                    f.starts.clear();
                    break;
                }
                Some(false) => {
                    f.starts.remove(0);
                }
            }
        }
    }
    let mut pos = 0;
    while f.buf.len() - pos >= 2 {
        let len = u16::from_be_bytes([f.buf[pos], f.buf[pos + 1]]) as usize;
        if f.buf.len() - pos < 2 + len {
            break;
        }
        emit(&f.buf[pos + 2..pos + 2 + len]);
        pos += 2 + len;
    }
    if pos > 0 {
        f.buf.drain(..pos);
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key() -> FlowKey {
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        FlowKey {
            src: a,
            sport: 4000,
            dst: a,
            dport: 53,
        }
    }

    /// A query: its header (one question), then `label` as the name's one label, type A,
    /// class IN.
    fn msg(label: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, label.len() as u8];
        m.extend_from_slice(label);
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    fn framed(bodies: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for b in bodies {
            let m = msg(b);
            v.extend_from_slice(&(m.len() as u16).to_be_bytes());
            v.extend_from_slice(&m);
        }
        v
    }

    fn run(segments: &[(u32, u8, Vec<u8>)]) -> Vec<Vec<u8>> {
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        for (seq, flags, p) in segments {
            r.segment(key(), *seq, *flags, p, Timestamp(0), &mut |m| {
                got.push(m.to_vec())
            });
        }
        got
    }

    #[test]
    fn several_messages_in_one_segment() {
        let s = framed(&[b"one...", b"three"]);
        assert_eq!(
            run(&[(100, TCP_SYN, vec![]), (101, 0, s)]),
            vec![msg(b"one..."), msg(b"three")]
        );
    }

    /// A query sent in the SYN (TCP Fast Open) was dropped with the SYN, and its answer read
    /// as a response without its query.
    #[test]
    fn a_query_in_a_fast_open_syn_was_not_read() {
        let q = framed(&[b"fast open"]);
        assert_eq!(run(&[(100, TCP_SYN, q.clone())]), vec![msg(b"fast open")]);
        // The SYN sent again with its data, then the data after the handshake (a server that
        // did not take it): one query.
        let again = run(&[
            (100, TCP_SYN, q.clone()),
            (100, TCP_SYN, q.clone()),
            (101, 0, q.clone()),
        ]);
        assert_eq!(again, vec![msg(b"fast open")]);
        // A new connection on the same ports (another SYN) starts over.
        let two = run(&[
            (100, TCP_SYN, q.clone()),
            (900, TCP_SYN, vec![]),
            (901, 0, q),
        ]);
        assert_eq!(two, vec![msg(b"fast open"), msg(b"fast open")]);
    }

    #[test]
    fn message_split_across_segments_and_reordered() {
        let s = framed(&[b"hello world"]);
        let (a, b, c) = (s[..1].to_vec(), s[1..5].to_vec(), s[5..].to_vec());
        let got = run(&[
            (100, TCP_SYN, vec![]),
            (101, 0, a.clone()),
            (106, 0, c),
            (102, 0, b),
            (101, 0, a),
        ]);
        assert_eq!(got, vec![msg(b"hello world")]);
    }

    /// A gap given up on may restart the stream inside a message: its bytes are dropped up
    /// to the next segment that starts one, and the messages from there on are read (they
    /// were lost with the whole stream before).
    #[test]
    fn a_restart_inside_a_message_finds_the_next_one() {
        let one = framed(&[b"first message"]);
        let two = framed(&[b"second message"]);
        let three = framed(&[b"third"]);
        let start = 101u32;
        let two_at = start + one.len() as u32;
        let three_at = two_at + two.len() as u32;
        let mut r = Reassembler::default();
        let mut got = Vec::new();
        let mut emit = |m: &[u8]| got.push(m.to_vec());
        r.segment(key(), 100, TCP_SYN, &[], Timestamp(0), &mut emit);
        r.segment(key(), start, 0, &one, Timestamp(1), &mut emit);
        // The first 5 bytes of `two` never captured; its rest, then `three`, then the end.
        r.segment(key(), two_at + 5, 0, &two[5..], Timestamp(2), &mut emit);
        r.segment(key(), three_at, 0, &three, Timestamp(3), &mut emit);
        r.segment(
            key(),
            three_at + three.len() as u32,
            TCP_FIN,
            &[],
            Timestamp(4),
            &mut emit,
        );
        assert_eq!(got, vec![msg(b"first message"), msg(b"third")]);
        assert_eq!(r.gaps, 1);
        assert_eq!(r.buffered, 0);
    }

    #[test]
    fn retransmission_is_not_counted_twice() {
        let s = framed(&[b"abcde"]);
        let next = 1 + s.len() as u32;
        let got = run(&[(1, 0, s.clone()), (1, 0, s.clone()), (next, 0, s)]);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn flows_are_bounded() {
        let mut r = Reassembler::default();
        for i in 0..(MAX_FLOWS as u32 + 5) {
            let mut k = key();
            k.sport = (i % 60000) as u16;
            k.src = IpAddr::V4(Ipv4Addr::from(i));
            r.segment(k, 0, 0, &[0, 9, 1], Timestamp(i as u64), &mut |_| {});
        }
        assert!(r.flows.len() <= MAX_FLOWS);
        assert_eq!(r.evicted, 5);
        assert_eq!(r.buffered, r.flows.values().map(held).sum::<usize>());
    }

    #[test]
    fn bytes_held_over_all_flows_are_bounded() {
        let mut r = Reassembler::default();
        // Each flow holds the start of a 65 535-byte message that never completes.
        let mut start = vec![0xff, 0xff];
        start.extend(msg(b"x"));
        start.extend(vec![0u8; 60_000 - 19]);
        for i in 0..2_000u32 {
            let mut k = key();
            k.src = IpAddr::V4(Ipv4Addr::from(i));
            r.segment(k, 0, 0, &start, Timestamp(i as u64), &mut |_| {});
            assert!(r.buffered <= MAX_BUFFERED);
        }
        assert!(r.evicted > 0);
        assert_eq!(r.buffered, r.flows.values().map(held).sum::<usize>());
        // Closing a flow releases its bytes.
        let mut k = key();
        k.src = IpAddr::V4(Ipv4Addr::from(1_999u32));
        let before = r.buffered;
        r.segment(k, 60_002, TCP_FIN, &[], Timestamp(9), &mut |_| {});
        assert_eq!(r.buffered, before - 60_002);
    }
}
