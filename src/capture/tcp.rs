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
    /// mid-connection. Bytes are dropped until they look like a message's start.
    resync: bool,
}

#[derive(Default)]
pub struct Reassembler {
    flows: HashMap<FlowKey, Flow>,
    pub evicted: u64,
    /// Gaps given up on (bytes never seen): the stream restarts at the next segment.
    pub gaps: u64,
    buffered: usize,
}

fn held(f: &Flow) -> usize {
    f.buf.len() + f.ahead_bytes
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
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
        if flags & TCP_SYN != 0 {
            // A new connection: the first data byte is ISN + 1 (RFC 9293 §3.4.1).
            let f = self.flow(key, ts);
            let before = held(f);
            *f = Flow {
                next_seq: Some(seq.wrapping_add(1)),
                last_seen: ts.0,
                ..Flow::default()
            };
            self.buffered -= before;
            return;
        }
        if !payload.is_empty() {
            let f = self.flow(key, ts);
            let before = held(f);
            let mut gap = false;
            add(f, seq, payload, &mut gap);
            drain(f, emit);
            let after = held(f);
            self.buffered = self.buffered - before + after;
            if gap {
                self.gaps += 1;
            }
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
            // The connection is over: segments still waiting past a gap will not be joined
            // by the missing bytes, so the messages in them are read now.
            if let Some(f) = self.flows.get_mut(&key) {
                let before = held(f);
                while !f.ahead.is_empty() {
                    restart_past_gap(f);
                    self.gaps += 1;
                    drain(f, emit);
                }
                self.buffered = self.buffered - before + held(f);
            }
            self.remove(&key);
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
        seq
    });
    let delta = seq.wrapping_sub(next) as i32;
    if delta > 0 {
        // Ahead of a gap: keep it for when the gap fills, within bounds.
        if f.ahead_bytes + payload.len() > MAX_OUT_OF_ORDER || f.ahead.len() >= 64 {
            // Give up on the missing bytes.
            *gap = true;
            f.ahead_bytes += payload.len();
            f.ahead.push((seq, payload.to_vec()));
            restart_past_gap(f);
        } else {
            f.ahead_bytes += payload.len();
            f.ahead.push((seq, payload.to_vec()));
            return;
        }
    } else {
        // In order, or overlapping what we have (a retransmission): take only new bytes.
        let skip = (-(delta as i64)) as usize;
        if skip >= payload.len() {
            return;
        }
        f.buf.extend_from_slice(&payload[skip..]);
        f.next_seq = Some(next.wrapping_add((payload.len() - skip) as u32));
    }
    // Segments that were waiting and now follow on.
    loop {
        let next = f.next_seq.expect("set above");
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
            f.buf.extend_from_slice(&p[skip..]);
            f.next_seq = Some(next.wrapping_add((p.len() - skip) as u32));
        }
    }
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
    // Segments that follow on from it.
    loop {
        let next = f.next_seq.expect("set above");
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
            f.buf.extend_from_slice(&p[skip..]);
            f.next_seq = Some(next.wrapping_add((p.len() - skip) as u32));
        }
    }
}

/// Whether `b` (length prefix first) can be the start of a DNS message: a length that holds
/// a header, one question (RFC 9619) whose name starts with a label, opcode QUERY. `None`:
/// too few bytes to tell.
fn looks_like_message_start(b: &[u8]) -> Option<bool> {
    if b.len() < 2 + 12 {
        return None;
    }
    let len = u16::from_be_bytes([b[0], b[1]]) as usize;
    let opcode = (b[4] >> 3) & 0xf;
    // The question's name: a label of 63 bytes at most, or the root.
    let label = b.get(14).is_none_or(|&l| l <= 63);
    Some(len >= 12 + 5 && opcode == 0 && b[6] == 0 && b[7] == 1 && label)
}

/// Hand out every complete length-prefixed message at the front of the buffer.
fn drain(f: &mut Flow, emit: &mut dyn FnMut(&[u8])) {
    if f.resync {
        // The first place that can start a message (the cut message's rest is dropped).
        let mut at = 0;
        loop {
            match looks_like_message_start(&f.buf[at..]) {
                None => {
                    f.buf.drain(..at);
                    return;
                }
                Some(true) => break,
                Some(false) => at += 1,
            }
        }
        f.buf.drain(..at);
        f.resync = false;
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

    /// A query's header (one question), then `label` as the name's one label.
    fn msg(label: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, label.len() as u8];
        m.extend_from_slice(label);
        m.push(0);
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
        let mut r = Reassembler::new();
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
        let mut r = Reassembler::new();
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
        let mut r = Reassembler::new();
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
        let mut r = Reassembler::new();
        // Each flow holds the start of a 65 535-byte message that never completes.
        let mut start = vec![0xff, 0xff];
        start.extend(msg(&[]));
        start.extend(vec![0u8; 60_000 - 14]);
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
