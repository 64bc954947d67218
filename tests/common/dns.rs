//! DNS over real sockets for the proxy's integration tests: one query over UDP, the glibc walk
//! of a name under ndots:5, RFC 1035 §4.2.2 framing for TCP, an A answer for a scripted
//! upstream.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ndots::wire;

/// A client socket on 127.0.0.1 that waits `timeout` for an answer.
pub fn client(timeout: Duration) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

/// One `name` A query with ID 77 over UDP from a fresh socket (10 s for the answer): the
/// parsed answer, its bytes and how long it took.
pub fn ask(addr: SocketAddr, name: &str) -> (wire::ResponseInfo, Vec<u8>, Duration) {
    let mut q = Vec::new();
    wire::build_query(77, name, wire::TYPE_A, false, &mut q).unwrap();
    let c = client(Duration::from_secs(10));
    let t = Instant::now();
    c.send_to(&q, addr).unwrap();
    let mut buf = [0u8; 1500];
    let n = c.recv(&mut buf).expect("an answer");
    (
        wire::parse_response(&buf[..n]).unwrap(),
        buf[..n].to_vec(),
        t.elapsed(),
    )
}

/// Ask `to` for `name` `qtype` over UDP from `from`; the answer's rcode.
pub fn ask_rcode(to: SocketAddr, from: &UdpSocket, name: &str, qtype: u16) -> u16 {
    let mut q = Vec::new();
    // Any ID: the socket is the test's own and asks one question at a time.
    let id = (Instant::now().elapsed().subsec_nanos() ^ std::process::id()) as u16;
    wire::build_query(id, name, qtype, false, &mut q).unwrap();
    from.send_to(&q, to).unwrap();
    let mut buf = [0u8; 4096];
    let n = from.recv(&mut buf).expect("an answer");
    wire::parse_response(&buf[..n]).unwrap().rcode
}

/// The walk glibc sends for `base` under ndots:5 in namespace `default` (one query type),
/// candidate after candidate until an answer with rcode NOERROR.
pub fn glibc_walk(to: SocketAddr, from: &UdpSocket, base: &str, qtype: u16) {
    for suffix in [
        "default.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
        "",
    ] {
        let name = if suffix.is_empty() {
            format!("{base}.")
        } else {
            format!("{base}.{suffix}")
        };
        if ask_rcode(to, from, &name, qtype) == 0 {
            return;
        }
    }
}

/// `msg` with its two-byte length in front (RFC 1035 §4.2.2).
pub fn framed(msg: &[u8]) -> Vec<u8> {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}

/// A framed `name` A query with `id`.
pub fn framed_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    wire::build_query(id, name, wire::TYPE_A, false, &mut q).unwrap();
    framed(&q)
}

/// Read one framed message; `None` on timeout or close.
pub fn read_framed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut m).ok()?;
    Some(m)
}

/// An A answer (TTL 60) to `query` with `ip`, using `id` and the query's question (and its
/// OPT, if any).
pub fn a_answer(query: &[u8], id: u16, ip: Ipv4Addr) -> Vec<u8> {
    let q = wire::parse_query(query).unwrap();
    let mut out = Vec::new();
    wire::minimal_response(query, &q, 0, false, &mut out);
    wire::set_id(&mut out, id);
    let opt = out.split_off(q.question.end());
    out[6..8].copy_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&opt);
    out
}

/// The address in the first answer record (after a one-question question section).
pub fn first_a(msg: &[u8]) -> Option<Ipv4Addr> {
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let l = *msg.get(i)? as usize;
            if l & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += 1 + l;
            if l == 0 {
                return Some(i);
            }
        }
    };
    let i = skip_name(12)? + 4;
    let i = skip_name(i)?;
    let rtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    let rdata = msg.get(i + 10..i + 14)?;
    (rtype == wire::TYPE_A).then(|| Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]))
}

/// Send `packets` with one `sendmmsg` on a connected socket: how many the kernel took (0 on an
/// error). All of them reach the peer's socket within the one call.
pub fn send_batch(sock: &UdpSocket, packets: &[Vec<u8>]) -> usize {
    use std::os::fd::AsRawFd;
    let mut iov: Vec<libc::iovec> = packets
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: a zeroed mmsghdr is valid; it points at one iovec of `iov`.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: the headers point at `iov` and `packets`, alive for the call.
    let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
    n.max(0) as usize
}
