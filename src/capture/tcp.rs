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
    // A direction first seen mid-connection (no SYN captured) is taken to start at a message
    // boundary, which holds for DNS clients that open a connection per burst.
    let next = *f.next_seq.get_or_insert(seq);
    let delta = seq.wrapping_sub(next) as i32;
    if delta > 0 {
        // Ahead of a gap: keep it for when the gap fills, within bounds.
        if f.ahead_bytes + payload.len() > MAX_OUT_OF_ORDER || f.ahead.len() >= 64 {
            // Give up on the missing bytes: restart the stream at the earliest segment we hold.
            *gap = true;
            f.buf.clear();
            f.ahead.push((seq, payload.to_vec()));
            f.ahead.sort_by_key(|(s, _)| s.wrapping_sub(next));
            let (s, first) = f.ahead.remove(0);
            f.ahead_bytes = f.ahead.iter().map(|(_, p)| p.len()).sum();
            f.next_seq = Some(s.wrapping_add(first.len() as u32));
            f.buf.extend_from_slice(&first);
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

/// Hand out every complete length-prefixed message at the front of the buffer.
fn drain(f: &mut Flow, emit: &mut dyn FnMut(&[u8])) {
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

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for m in msgs {
            v.extend_from_slice(&(m.len() as u16).to_be_bytes());
            v.extend_from_slice(m);
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
        let s = framed(&[b"one", b"three"]);
        assert_eq!(
            run(&[(100, TCP_SYN, vec![]), (101, 0, s)]),
            vec![b"one".to_vec(), b"three".to_vec()]
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
        assert_eq!(got, vec![b"hello world".to_vec()]);
    }

    #[test]
    fn retransmission_is_not_counted_twice() {
        let s = framed(&[b"abc"]);
        let got = run(&[(1, 0, s.clone()), (1, 0, s.clone()), (6, 0, s)]);
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
        start.extend(vec![0u8; 60_000]);
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
