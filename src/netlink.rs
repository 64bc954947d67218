//! A small, raw netlink client (RFC 3549): enough to create a link, bring it up, add addresses
//! (rtnetlink) and load an nftables table in one transaction (nfnetlink). The final image has
//! no `ip` or `nft`, so the proxy says these things to the kernel itself.
//!
//! Wire layout, all in host byte order unless a field says otherwise:
//!
//! ```text
//! nlmsghdr   len:u32 type:u16 flags:u16 seq:u32 pid:u32          (16 bytes)
//! payload    a fixed family header (ifinfomsg, ifaddrmsg, nfgenmsg) ...
//! attributes len:u16 type:u16 value, each padded to 4 bytes (NLA_ALIGNTO); a nested attribute's
//!            value is itself a list of attributes
//! ```
//!
//! Every request carries NLM_F_ACK, so the kernel answers each with an NLMSG_ERROR whose error
//! is 0 (done) or a negative errno. nftables values are big-endian (the kernel's `__be32`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
/// NLM_F_ROOT | NLM_F_MATCH: every object (filtered by the request's attributes).
pub const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const HEADER_LEN: usize = 16;

/// One netlink message under construction: the header, a family header, then attributes.
pub struct Message {
    buf: Vec<u8>,
    /// Start offsets of nests not yet closed.
    open: Vec<usize>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Message {
    /// A request of `kind` with `flags` (NLM_F_REQUEST and NLM_F_ACK are added) and the family
    /// header bytes `fixed`. The length and sequence number are filled in by [`Socket::send`].
    pub fn new(kind: u16, flags: u16, fixed: &[u8]) -> Message {
        let mut buf = vec![0u8; HEADER_LEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(fixed);
        buf.resize(align4(buf.len()), 0);
        Message {
            buf,
            open: Vec::new(),
        }
    }

    /// A dump request: the kernel answers with a series of messages and NLMSG_DONE, no ACK.
    pub fn dump(kind: u16, fixed: &[u8]) -> Message {
        let mut m = Message::new(kind, 0, fixed);
        m.buf[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        m
    }

    /// A batch delimiter (nfnetlink): no ACK is asked for it.
    pub fn batch_marker(kind: u16, fixed: &[u8]) -> Message {
        let mut m = Message::new(kind, 0, fixed);
        m.buf[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        m
    }

    pub fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// A NUL-terminated string attribute.
    pub fn attr_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    pub fn attr_be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Open a nested attribute; close it with [`Message::end_nest`].
    pub fn nest(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end_nest(&mut self) -> &mut Self {
        let start = self.open.pop().expect("end_nest without nest");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        assert!(self.open.is_empty(), "unclosed nested attribute");
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }

    fn wants_ack(&self) -> bool {
        u16::from_ne_bytes([self.buf[6], self.buf[7]]) & NLM_F_ACK != 0
    }
}

/// A netlink socket of one protocol (NETLINK_ROUTE, NETLINK_NETFILTER).
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open(protocol: i32) -> io::Result<Socket> {
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // An answer that never comes must not hang the proxy's start.
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: tv outlives the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, seq: 1 })
    }

    /// Send `messages` in one datagram (an nfnetlink batch needs that) and wait for the answer
    /// to each that asked for one. Returns one result per acknowledged message, in order: Ok,
    /// or the errno the kernel gave for it. Once a datagram carries an error, messages not yet
    /// answered are given ECANCELED: an nfnetlink batch with an error is aborted whole.
    pub fn send(&mut self, messages: Vec<Message>) -> io::Result<Vec<Result<(), i32>>> {
        let mut datagram = Vec::new();
        let mut pending = Vec::new();
        for m in messages {
            let seq = self.seq;
            self.seq = self.seq.wrapping_add(1);
            if m.wants_ack() {
                pending.push(seq);
            }
            datagram.extend_from_slice(&m.finish(seq));
        }
        // SAFETY: a zeroed sockaddr_nl addresses the kernel (pid 0).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                datagram.as_ptr() as *const libc::c_void,
                datagram.len(),
                0,
                &kernel as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut results: Vec<Option<Result<(), i32>>> = vec![None; pending.len()];
        let mut buf = vec![0u8; 65536];
        while results.iter().any(Option::is_none) {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for (seq, error) in acks(&buf[..n as usize]) {
                if let Some(i) = pending.iter().position(|&s| s == seq) {
                    results[i] = Some(if error == 0 { Ok(()) } else { Err(-error) });
                }
            }
            if results.iter().any(|r| matches!(r, Some(Err(_)))) {
                break;
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(libc::ECANCELED)))
            .collect())
    }
}

impl Socket {
    /// Send one dump request and collect the payload (after the 16-byte header) of every
    /// message of the answer until NLMSG_DONE. `Err(errno)` when the kernel refused the dump
    /// (ENOENT: the table or chain asked for does not exist).
    pub fn dump(&mut self, request: Message) -> io::Result<Result<Vec<Vec<u8>>, i32>> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let datagram = request.finish(seq);
        // SAFETY: as in `send`.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address are valid for the given lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                datagram.as_ptr() as *const libc::c_void,
                datagram.len(),
                0,
                &kernel as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut data = &buf[..n as usize];
            while data.len() >= HEADER_LEN {
                let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
                if len < HEADER_LEN || len > data.len() {
                    break;
                }
                let kind = u16::from_ne_bytes([data[4], data[5]]);
                let this_seq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
                if this_seq == seq {
                    match kind {
                        NLMSG_DONE => return Ok(Ok(out)),
                        NLMSG_ERROR if len >= HEADER_LEN + 4 => {
                            let e = i32::from_ne_bytes(data[16..20].try_into().unwrap());
                            return Ok(if e == 0 { Ok(out) } else { Err(-e) });
                        }
                        _ => out.push(data[HEADER_LEN..len].to_vec()),
                    }
                }
                data = &data[align4(len).min(data.len())..];
            }
        }
    }
}

/// The attributes of a message payload or of a nested attribute's value: `(type without the
/// flag bits, value)`. A truncated attribute ends the walk.
pub fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & !(NLA_F_NESTED | 0x4000);
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        data = &data[align4(len).min(data.len())..];
    }
    out
}

/// The `(seq, error)` of every NLMSG_ERROR in a datagram from the kernel; other messages are
/// skipped. A truncated message ends the walk.
fn acks(mut data: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while data.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
        if len < HEADER_LEN || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        let seq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
        if kind == NLMSG_ERROR && len >= HEADER_LEN + 4 {
            let error = i32::from_ne_bytes(data[16..20].try_into().unwrap());
            out.push((seq, error));
        }
        data = &data[align4(len).min(data.len())..];
    }
    out
}

/// The text of an errno, for error messages.
pub fn errno_text(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nests_measured() {
        let mut m = Message::new(16, NLM_F_CREATE, &[0u8; 16]);
        m.attr_str(3, "nodelocaldns"); // 4 + 13 bytes, padded to 20
        m.nest(18).attr(1, b"dummy").end_nest(); // 4 + (4 + 5 padded to 12) = 16
        let bytes = m.finish(7);
        assert_eq!(bytes.len(), 16 + 16 + 20 + 16);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 68);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        let flags = u16::from_ne_bytes([bytes[6], bytes[7]]);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        // The name attribute: length 17 (unpadded), type 3, NUL-terminated.
        assert_eq!(u16::from_ne_bytes([bytes[32], bytes[33]]), 17);
        assert_eq!(&bytes[36..49], b"nodelocaldns\0");
        // The nest's length covers its padded child; its type carries NLA_F_NESTED.
        assert_eq!(u16::from_ne_bytes([bytes[52], bytes[53]]), 16);
        assert_eq!(
            u16::from_ne_bytes([bytes[54], bytes[55]]),
            18 | NLA_F_NESTED
        );
    }

    #[test]
    fn acks_are_read_from_a_datagram() {
        let mut d = Vec::new();
        for (seq, err) in [(5u32, 0i32), (6, -17)] {
            d.extend_from_slice(&36u32.to_ne_bytes());
            d.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            d.extend_from_slice(&0u16.to_ne_bytes());
            d.extend_from_slice(&seq.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(&err.to_ne_bytes());
            d.extend_from_slice(&[0u8; 16]); // the echoed request header
        }
        d.extend_from_slice(&[1, 2, 3]); // a truncated tail is ignored
        assert_eq!(acks(&d), vec![(5, 0), (6, -17)]);
    }

    #[test]
    fn attributes_are_walked_and_truncation_stops_the_walk() {
        let mut m = Message::new(16, 0, &[]);
        m.attr_str(3, "filter").nest(4).attr_be32(1, 7).end_nest();
        let bytes = m.finish(1);
        let a = attrs(&bytes[HEADER_LEN..]);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], (3, &b"filter\0"[..]));
        assert_eq!(a[1].0, 4, "the nested flag is masked off");
        assert_eq!(attrs(a[1].1), vec![(1, &7u32.to_be_bytes()[..])]);
        // A length past the end, or below the header, stops without panicking.
        assert!(attrs(&[200, 0, 1, 0, 1, 2]).is_empty());
        assert!(attrs(&[2, 0, 1, 0]).is_empty());
    }
}
