//! A scripted DNS server for tests with real clients: answers each name as the test says and
//! records every query it receives, in arrival order.
//!
//! Answers follow `ndots::search::Answer`: `Address` (A 192.0.2.10 / AAAA 2001:db8::10 for
//! those types, NODATA for others), `NoData`, `NxDomain`, `ServFail`, `Refused`, `Timeout` (no
//! reply). [`ScriptedDns::drop_once`] loses the first query of a name and type (a packet lost
//! once: the stub's retry is answered). Every reply sets RA and AA: glibc treats a NOERROR reply without answers, AA, RA
//! and additional records as a server failure (resolvers.md §1, res_send.c), and Go as lame.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ndots::search::Answer;

type Table = HashMap<(String, Option<u16>), Answer>;

pub struct ScriptedDns {
    pub addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    log: Arc<Mutex<Vec<(String, u16)>>>,
    drop_once: Arc<Mutex<HashSet<(String, u16)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ScriptedDns {
    /// Bind UDP `addr` and serve on a thread until dropped.
    pub fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let table: Arc<Mutex<Table>> = Arc::default();
        let log: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let drop_once: Arc<Mutex<HashSet<(String, u16)>>> = Arc::default();
        let (t, l, s, d) = (table.clone(), log.clone(), stop.clone(), drop_once.clone());
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Some(q) = parse_query(&buf[..n]) else {
                    continue;
                };
                l.lock().unwrap().push((q.qname.clone(), q.qtype));
                if d.lock().unwrap().remove(&(q.qname.clone(), q.qtype)) {
                    continue;
                }
                let answer = {
                    let t = t.lock().unwrap();
                    t.get(&(q.qname.clone(), Some(q.qtype)))
                        .or_else(|| t.get(&(q.qname.clone(), None)))
                        .copied()
                        .unwrap_or(Answer::NxDomain)
                };
                if let Some(reply) = build_reply(&buf[..n], &q, answer) {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        Ok(ScriptedDns {
            addr,
            table,
            log,
            drop_once,
            stop,
            handle: Some(handle),
        })
    }

    /// Replace the answer table. Keys: lowercase absolute name, and a type or `None` for all.
    pub fn set_answers(&self, answers: impl IntoIterator<Item = (String, Option<u16>, Answer)>) {
        let mut t = self.table.lock().unwrap();
        t.clear();
        for (n, ty, a) in answers {
            t.insert((n, ty), a);
        }
    }

    /// Send no reply to the next query of `name` (lowercase, absolute) and `qtype`; later
    /// ones are answered from the table.
    pub fn drop_once(&self, name: &str, qtype: u16) {
        self.drop_once
            .lock()
            .unwrap()
            .insert((name.to_string(), qtype));
    }

    /// The queries received since the last call, in arrival order (retries included).
    pub fn take_log(&self) -> Vec<(String, u16)> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for ScriptedDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub struct ParsedQuery {
    /// Lowercase, absolute.
    pub qname: String,
    pub qtype: u16,
    /// Offset just past the question.
    pub question_end: usize,
}

/// Parse the header and first question of a query (RFC 1035 §4.1); `None` if it is not one.
pub fn parse_query(m: &[u8]) -> Option<ParsedQuery> {
    if m.len() < 12 || m[2] & 0x80 != 0 || u16::from_be_bytes([m[4], m[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut name = String::new();
    loop {
        let len = *m.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // no compression in questions
        }
        let label = m.get(i..i + len)?;
        for &b in label {
            name.push(b.to_ascii_lowercase() as char);
        }
        name.push('.');
        i += len;
    }
    if name.is_empty() {
        name.push('.');
    }
    let qtype = u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]);
    Some(ParsedQuery {
        qname: name,
        qtype,
        question_end: i + 4,
    })
}

/// The reply for `answer`, or `None` for a timeout.
pub fn build_reply(query: &[u8], q: &ParsedQuery, answer: Answer) -> Option<Vec<u8>> {
    let rcode: u8 = match answer {
        Answer::Address | Answer::NoData => 0,
        Answer::NxDomain => 3,
        Answer::ServFail => 2,
        Answer::Refused => 5,
        Answer::Timeout => return None,
    };
    let rdata: Option<Vec<u8>> = match (answer, q.qtype) {
        (Answer::Address, 1) => Some(vec![192, 0, 2, 10]),
        (Answer::Address, 28) => Some(
            "2001:db8::10"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
                .to_vec(),
        ),
        _ => None,
    };
    let mut r = Vec::with_capacity(q.question_end + 32);
    r.extend_from_slice(&query[0..2]); // ID
                                       // QR, opcode and RD copied, AA; RA and rcode.
    r.push(0x80 | (query[2] & 0x79) | 0x04);
    r.push(0x80 | rcode);
    r.extend_from_slice(&[0, 1, 0, rdata.is_some() as u8, 0, 0, 0, 0]);
    r.extend_from_slice(&query[12..q.question_end]);
    if let Some(rd) = rdata {
        r.extend_from_slice(&[0xc0, 0x0c]);
        r.extend_from_slice(&q.qtype.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
        r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        r.extend_from_slice(&rd);
    }
    Some(r)
}
