//! dnstap (dnstap.info): Frame Streams files and single raw protobuf messages.
//!
//! Frame Streams (farsightsec/fstrm, "Frame Streams protocol"): a data frame is a 32-bit
//! big-endian length and that many bytes; a control frame is announced by a zero length, then its
//! own length and type (ACCEPT 1, START 2, STOP 3, READY 4, FINISH 5) and fields (CONTENT_TYPE 1).
//! Files written by a unidirectional writer are START, data..., STOP; a bidirectional stream
//! saved to a file adds READY/ACCEPT/FINISH. Every control frame is read and checked; a
//! content type other than `protobuf:dnstap.Dnstap` ends the stream.
//!
//! Which messages become events (`Options::dnstap_messages`): by default only CLIENT_QUERY and
//! CLIENT_RESPONSE, the pods' view. A server that logs both its client side and its upstream side
//! (BIND, Unbound, CoreDNS with forwarders) writes each lookup two or more times; counting the
//! RESOLVER/FORWARDER/STUB/AUTH copies too would inflate the amplification report. The other
//! types are still counted in `Stats::queries` / `Stats::responses` and in `Stats::skipped`.
//! `DnstapMessages::All` makes every type an event (the initiator of the query is the client).
//!
//! Pairing is as for pcap (client, port, ID, question). A response that carries its query's time
//! (`query_time_*`, as BIND and CoreDNS set it) gives the latency even when the query message was
//! not logged.

use std::collections::VecDeque;
use std::io::{BufRead, ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use prost::Message as _;

use crate::event::{QueryEvent, Timestamp};

use super::pair::{Out, Pairer};
use super::{DnstapMessages, InputCounts, Options, Position, Reader, Unreadable};

#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/dnstap.rs"));
}

/// The content type a dnstap Frame Streams file announces.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";
/// fstrm's limit for control frames.
pub(crate) const MAX_CONTROL: usize = 512;
/// A data frame holds one Dnstap message: two DNS messages (≤ 64 KiB each) plus addresses.
pub(crate) const MAX_DATA: usize = 1 << 20;
/// A raw (unframed) message file is read whole, up to this.
const MAX_RAW: usize = 16 << 20;

pub const CONTROL_ACCEPT: u32 = 1;
pub const CONTROL_START: u32 = 2;
pub const CONTROL_STOP: u32 = 3;
pub const CONTROL_READY: u32 = 4;
pub const CONTROL_FINISH: u32 = 5;

pub struct DnstapReader<R> {
    input: R,
    started: bool,
    raw: bool,
    ended: bool,
    offset: u64,
    frame_no: u64,
    decoder: Decoder,
    out: Out,
}

impl<R: BufRead + Send> DnstapReader<R> {
    pub fn new(input: R, opts: &Options) -> Self {
        DnstapReader {
            input,
            started: false,
            raw: false,
            ended: false,
            offset: 0,
            frame_no: 0,
            decoder: Decoder::new(opts),
            out: VecDeque::new(),
        }
    }

    fn read_u32(&mut self) -> Result<Option<u32>, String> {
        let mut b = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.input.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        self.offset += got as u64;
        match got {
            0 => Ok(None),
            4 => Ok(Some(u32::from_be_bytes(b))),
            _ => Err("stream ends inside a frame length".into()),
        }
    }

    fn read_bytes(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut v = Vec::with_capacity(n.min(MAX_DATA));
        let got = (&mut self.input)
            .take(n as u64)
            .read_to_end(&mut v)
            .map_err(|e| e.to_string())?;
        self.offset += got as u64;
        if got < n {
            return Err(format!("stream ends inside a frame ({got} of {n} bytes)"));
        }
        Ok(v)
    }

    fn stop(&mut self, pos: Position, reason: String) {
        self.out.push_back(Err(Unreadable::new(pos, reason)));
        self.ended = true;
    }

    fn step(&mut self) {
        if !self.started {
            self.started = true;
            // A raw protobuf message does not start with the zero escape of a control frame.
            let head = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) => return self.stop(Position::Byte(0), e.to_string()),
            };
            if head.is_empty() {
                self.ended = true;
                return;
            }
            if head.len() >= 4 && head[..4] != [0, 0, 0, 0] {
                self.raw = true;
            }
        }
        if self.raw {
            return self.raw_message();
        }
        let at = self.offset;
        let len = match self.read_u32() {
            Ok(Some(l)) => l as usize,
            Ok(None) => {
                self.ended = true;
                return;
            }
            Err(e) => return self.stop(Position::Byte(at), e),
        };
        if len == 0 {
            return self.control(at);
        }
        self.frame_no += 1;
        let pos = Position::Frame(self.frame_no);
        if len > MAX_DATA {
            return self.stop(
                pos,
                format!("data frame of {len} bytes is not credible (byte {at})"),
            );
        }
        match self.read_bytes(len) {
            Ok(data) => self.dnstap(&data, pos),
            Err(e) => self.stop(pos, e),
        }
    }

    fn control(&mut self, at: u64) {
        let pos = Position::Byte(at);
        let len = match self.read_u32() {
            Ok(Some(l)) => l as usize,
            Ok(None) => return self.stop(pos, "stream ends inside a control frame".into()),
            Err(e) => return self.stop(pos, e),
        };
        if !(4..=MAX_CONTROL).contains(&len) {
            return self.stop(pos, format!("control frame length {len} is not valid"));
        }
        let body = match self.read_bytes(len) {
            Ok(b) => b,
            Err(e) => return self.stop(pos, e),
        };
        // After STOP or FINISH the stream may go on with a new START (writers reopening).
        if let Err(e) = parse_control(&body) {
            self.stop(pos, e);
        }
    }

    fn raw_message(&mut self) {
        self.ended = true;
        let mut data = Vec::new();
        if let Err(e) = (&mut self.input)
            .take(MAX_RAW as u64 + 1)
            .read_to_end(&mut data)
        {
            return self.stop(Position::Byte(0), e.to_string());
        }
        if data.len() > MAX_RAW {
            return self.stop(
                Position::Byte(0),
                "raw dnstap message larger than 16 MiB".into(),
            );
        }
        self.frame_no = 1;
        self.dnstap(&data, Position::Frame(1));
    }

    fn dnstap(&mut self, data: &[u8], pos: Position) {
        self.decoder.frame(data, pos, &mut self.out);
    }
}

/// Dnstap protobuf messages to events: selection (`Options::dnstap_messages`), query/response
/// pairing and the counts. Shared by the file reader and the live receiver (`crate::collect`),
/// which has one per sender connection.
pub(crate) struct Decoder {
    which: DnstapMessages,
    pairer: Pairer,
    pub queries: u64,
    pub responses: u64,
    pub skipped: u64,
}

impl Decoder {
    pub fn new(opts: &Options) -> Self {
        Decoder {
            which: opts.dnstap_messages,
            pairer: Pairer::new(opts.answer_wait, opts.max_pending),
            queries: 0,
            responses: 0,
            skipped: 0,
        }
    }

    /// End of input: queries still waiting become unanswered events.
    pub fn finish(&mut self, out: &mut Out) {
        self.pairer.finish(out);
    }

    pub fn counters(&self, s: &mut InputCounts) {
        s.queries += self.queries;
        s.responses += self.responses;
        s.unanswered += self.pairer.unanswered;
        s.unmatched_responses += self.pairer.unmatched;
        s.skipped += self.pairer.skipped;
        s.duplicates += self.pairer.duplicates;
        s.truncated += self.pairer.truncated;
        s.evicted += self.pairer.evicted;
        s.skipped += self.skipped;
    }

    /// One data frame: a Dnstap protobuf. Events and unreadable frames go to `out`.
    pub fn frame(&mut self, data: &[u8], pos: Position, out: &mut Out) {
        let d = match pb::Dnstap::decode(data) {
            Ok(d) => d,
            Err(e) => {
                return out.push_back(Err(Unreadable::new(pos, format!("dnstap protobuf: {e}"))))
            }
        };
        if d.r#type != pb::dnstap::Type::Message as i32 {
            return out.push_back(Err(Unreadable::new(
                pos,
                format!("dnstap type {} is not MESSAGE", d.r#type),
            )));
        }
        let Some(m) = d.message else {
            return out.push_back(Err(Unreadable::new(
                pos,
                "dnstap MESSAGE without a message",
            )));
        };
        let Ok(mtype) = pb::message::Type::try_from(m.r#type) else {
            return out.push_back(Err(Unreadable::new(
                pos,
                format!("unknown dnstap message type {}", m.r#type),
            )));
        };
        // Odd types are queries, even types responses (dnstap.proto numbering).
        let is_query = m.r#type % 2 == 1;
        if is_query {
            self.queries += 1;
        } else {
            self.responses += 1;
        }
        let client_side = matches!(
            mtype,
            pb::message::Type::ClientQuery | pb::message::Type::ClientResponse
        );
        if self.which == DnstapMessages::Client && !client_side {
            self.skipped += 1;
            return;
        }
        let addr = |b: &Option<Vec<u8>>| -> IpAddr {
            match b.as_deref() {
                Some(&[a, b, c, d]) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
                Some(v) if v.len() == 16 => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(v);
                    IpAddr::V6(Ipv6Addr::from(o))
                }
                _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            }
        };
        let client = (
            addr(&m.query_address),
            m.query_port.unwrap_or(0).min(65_535) as u16,
        );
        let time = |sec: Option<u64>, nsec: Option<u32>| -> Option<Timestamp> {
            let sec = sec?;
            Some(Timestamp(
                sec.saturating_mul(1_000_000)
                    .saturating_add(nsec.unwrap_or(0) as u64 / 1000),
            ))
        };
        let qtime = time(m.query_time_sec, m.query_time_nsec);
        let rtime = time(m.response_time_sec, m.response_time_nsec);
        let (msg, t) = if is_query {
            (&m.query_message, qtime)
        } else {
            (&m.response_message, rtime.or(qtime))
        };
        let Some(msg) = msg else {
            return out.push_back(Err(Unreadable::new(
                pos,
                "dnstap message carries no DNS message",
            )));
        };
        let Some(t) = t else {
            return out.push_back(Err(Unreadable::new(pos, "dnstap message carries no time")));
        };
        let hint = if is_query { None } else { qtime };
        self.pairer.message(t, client, client, msg, hint, pos, out);
    }
}

fn is_control_type(ctype: u32) -> bool {
    matches!(
        ctype,
        CONTROL_ACCEPT | CONTROL_START | CONTROL_STOP | CONTROL_READY | CONTROL_FINISH
    )
}

/// Whether `head` starts as a Frame Streams file does: the zero escape, then a control frame's
/// length and a known type. Not any run of NULs: a log truncated in place starts so.
pub(crate) fn starts_frame_stream(head: &[u8]) -> bool {
    let be32 = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    be32(0) == Some(0)
        && be32(4).is_some_and(|len| (4..=MAX_CONTROL as u32).contains(&len))
        && be32(8).is_some_and(is_control_type)
}

/// A control frame's type and its CONTENT_TYPE fields, checked: a known type, fields inside the
/// frame, no trailing bytes, and a START that names a content type names dnstap's.
pub(crate) fn parse_control(body: &[u8]) -> Result<(u32, Vec<Vec<u8>>), String> {
    if body.len() < 4 {
        return Err(format!("control frame length {} is not valid", body.len()));
    }
    let ctype = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    if !is_control_type(ctype) {
        return Err(format!("unknown control frame type {ctype}"));
    }
    // Fields: type, length, value. START carries at most one content type; READY/ACCEPT may
    // list several. Any of them must be dnstap's for the data frames to be dnstap.
    let mut p = 4;
    let mut types = Vec::new();
    while p + 8 <= body.len() {
        let ft = u32::from_be_bytes([body[p], body[p + 1], body[p + 2], body[p + 3]]);
        let fl = u32::from_be_bytes([body[p + 4], body[p + 5], body[p + 6], body[p + 7]]) as usize;
        p += 8;
        if fl > body.len() - p {
            return Err("control field runs past its frame".into());
        }
        if ft == 1 {
            types.push(body[p..p + fl].to_vec());
        }
        p += fl;
    }
    if p != body.len() {
        return Err("control frame has trailing bytes".into());
    }
    if ctype == CONTROL_START && !types.is_empty() && !types.iter().any(|t| t == CONTENT_TYPE) {
        let t = String::from_utf8_lossy(&types[0]).into_owned();
        return Err(format!(
            "content type {t:?} is not {:?}",
            String::from_utf8_lossy(CONTENT_TYPE)
        ));
    }
    Ok((ctype, types))
}

/// A whole control frame (escape, length, type, optional CONTENT_TYPE field), as fstrm writes it.
pub fn control_frame(ctype: u32, content_type: Option<&[u8]>) -> Vec<u8> {
    let mut body = ctype.to_be_bytes().to_vec();
    if let Some(t) = content_type {
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&(t.len() as u32).to_be_bytes());
        body.extend_from_slice(t);
    }
    let mut v = 0u32.to_be_bytes().to_vec();
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(&body);
    v
}

impl<R: BufRead + Send> Reader for DnstapReader<R> {
    fn next_item(&mut self) -> Option<Result<QueryEvent, Unreadable>> {
        loop {
            if let Some(x) = self.out.pop_front() {
                return Some(x);
            }
            if self.ended {
                self.decoder.finish(&mut self.out);
                return self.out.pop_front();
            }
            self.step();
        }
    }

    fn counters(&self, s: &mut InputCounts) {
        self.decoder.counters(s);
    }
}

/// Frame Streams writer for tests and tools: START with the dnstap content type, data frames, STOP.
pub fn frame_stream(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    let mut start = Vec::new();
    start.extend_from_slice(&CONTROL_START.to_be_bytes());
    start.extend_from_slice(&1u32.to_be_bytes());
    start.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
    start.extend_from_slice(CONTENT_TYPE);
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&(start.len() as u32).to_be_bytes());
    v.extend_from_slice(&start);
    for m in messages {
        v.extend_from_slice(&(m.len() as u32).to_be_bytes());
        v.extend_from_slice(m);
    }
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&4u32.to_be_bytes());
    v.extend_from_slice(&CONTROL_STOP.to_be_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    fn msg(mtype: pb::message::Type, dns: Vec<u8>, sec: u64) -> Vec<u8> {
        let is_query = (mtype as i32) % 2 == 1;
        let m = pb::Message {
            r#type: mtype as i32,
            query_address: Some(vec![10, 0, 0, 7]),
            query_port: Some(40_000),
            query_time_sec: Some(sec),
            query_time_nsec: Some(0),
            response_time_sec: (!is_query).then_some(sec),
            response_time_nsec: (!is_query).then_some(5_000),
            query_message: is_query.then(|| dns.clone()),
            response_message: (!is_query).then_some(dns),
            ..Default::default()
        };
        pb::Dnstap {
            r#type: pb::dnstap::Type::Message as i32,
            message: Some(m),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn dns_pair(id: u16) -> (Vec<u8>, Vec<u8>) {
        let mut q = Vec::new();
        wire::build_query(id, "www.example.", wire::TYPE_A, false, &mut q).unwrap();
        let v = wire::parse_query(&q).unwrap();
        let mut r = Vec::new();
        wire::minimal_response(&q, &v, wire::RCODE_NXDOMAIN, false, &mut r);
        (q, r)
    }

    fn read(
        bytes: Vec<u8>,
        which: DnstapMessages,
    ) -> (Vec<Result<QueryEvent, Unreadable>>, InputCounts) {
        let opts = Options {
            dnstap_messages: which,
            ..Options::default()
        };
        let mut r = DnstapReader::new(std::io::Cursor::new(bytes), &opts);
        let v: Vec<_> = std::iter::from_fn(|| r.next_item()).collect();
        let mut s = InputCounts::default();
        r.counters(&mut s);
        (v, s)
    }

    #[test]
    fn client_messages_pair_and_others_are_counted() {
        use pb::message::Type::*;
        let (q, r) = dns_pair(5);
        let (fq, fr) = dns_pair(6);
        let file = frame_stream(&[
            msg(ClientQuery, q, 100),
            msg(ForwarderQuery, fq, 100),
            msg(ForwarderResponse, fr, 100),
            msg(ClientResponse, r, 100),
        ]);
        let (v, s) = read(file.clone(), DnstapMessages::Client);
        assert_eq!(v.len(), 1);
        let e = v[0].as_ref().unwrap();
        assert_eq!(
            (e.rcode, e.latency),
            (Some(3), Some(std::time::Duration::from_micros(5)))
        );
        assert_eq!((s.queries, s.responses, s.skipped), (2, 2, 2));
        let (v, _) = read(file, DnstapMessages::All);
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn cut_stream_and_bad_frames_are_reported() {
        use pb::message::Type::*;
        let (q, _) = dns_pair(5);
        let mut file = frame_stream(&[
            b"\x08garbage".to_vec(),
            msg(ClientQuery, q.clone(), 1),
            msg(ClientQuery, q, 2),
        ]);
        file.truncate(file.len() - 20);
        let (v, s) = read(file, DnstapMessages::Client);
        let errs: Vec<_> = v
            .iter()
            .filter_map(|x| x.as_ref().err())
            .map(|u| u.position)
            .collect();
        assert_eq!(errs, vec![Position::Frame(1), Position::Frame(3)]);
        assert_eq!(s.queries, 1);
        assert_eq!(v.iter().filter(|x| x.is_ok()).count(), 1);
    }

    fn control(ctype: u32, content_type: Option<&[u8]>) -> Vec<u8> {
        control_frame(ctype, content_type)
    }

    /// A bidirectional Frame Streams session saved whole: READY and ACCEPT (each with content
    /// types), START, data, STOP, FINISH.
    #[test]
    fn bidirectional_control_frames() {
        use pb::message::Type::*;
        let (q, r) = dns_pair(9);
        let mut file = control(CONTROL_READY, Some(b"protobuf:other"));
        file.extend(control(CONTROL_READY, Some(CONTENT_TYPE)));
        file.extend(control(CONTROL_ACCEPT, Some(CONTENT_TYPE)));
        file.extend(control(CONTROL_START, Some(CONTENT_TYPE)));
        for m in [msg(ClientQuery, q, 3), msg(ClientResponse, r, 3)] {
            file.extend_from_slice(&(m.len() as u32).to_be_bytes());
            file.extend(m);
        }
        file.extend(control(CONTROL_STOP, None));
        file.extend(control(CONTROL_FINISH, None));
        let (v, s) = read(file, DnstapMessages::Client);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].is_ok());
        assert_eq!((s.queries, s.responses), (1, 1));
        // An unknown control type ends the stream with its byte offset.
        let (v, _) = read(control(9, None), DnstapMessages::Client);
        assert_eq!(v[0].as_ref().unwrap_err().position, Position::Byte(0));
    }

    #[test]
    fn raw_message_and_wrong_content_type() {
        use pb::message::Type::*;
        let (_, r) = dns_pair(5);
        let (v, s) = read(msg(ClientResponse, r, 7), DnstapMessages::Client);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].as_ref().unwrap().time, Timestamp(7_000_000));
        assert_eq!(s.responses, 1);
        let mut other = frame_stream(&[]);
        other[12 + 8..12 + 8 + 8].copy_from_slice(b"protobuX");
        let (v, _) = read(other, DnstapMessages::Client);
        assert!(v[0].as_ref().unwrap_err().reason.contains("content type"));
    }
}
