//! UDP listeners: one SO_REUSEPORT socket per worker thread, so the kernel spreads clients
//! across cores and a second process can bind the same address during an update.
//!
//! A worker receives in batches (`recvmmsg`), answers cache hits on its own thread into a batch
//! of replies (`sendmmsg`), and hands misses to the async runtime. The socket has a short
//! receive timeout so the worker notices a shutdown without a packet arriving.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::handler::{Engine, Fast, Job, Proto, ReplyTo};

const BATCH: usize = 32;
/// Larger than any sane query; a datagram that fills it is cut and read as malformed.
const RECV_BUF: usize = 4096;
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Bind a UDP socket with SO_REUSEPORT (and a large receive buffer to ride out bursts).
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(POLL_INTERVAL))?;
    Ok(s.into())
}

/// The socket's inode number: how `/proc/net/udp` names it.
pub fn inode(socket: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: fstat writes into the zeroed struct we own; the fd is valid while `socket` lives.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(socket.as_raw_fd(), &mut st) } == 0).then_some(st.st_ino)
}

/// Datagrams the kernel dropped for our UDP listeners because their receive queue was full:
/// the one place overload of the UDP listeners shows, since a dropped query never reaches us.
/// Read from the `drops` column of `/proc/net/udp` and `/proc/net/udp6` (this network
/// namespace's sockets) at scrape time only.
///
/// Each socket's count is kept as the highest seen. The kernel writes those tables a page per
/// read, and walks its socket table again from the start for each page: a socket opened or
/// closed meanwhile shifts the rest, and a line can be missed. On a node's network namespace,
/// where sockets come and go all the time, a missed listener lowered the sum, and the counter
/// exported from it went down (a counter reset to Prometheus, its whole value again as a rate).
#[derive(Debug)]
pub struct KernelDrops {
    inodes: Vec<u64>,
    highest: parking_lot::Mutex<Vec<u64>>,
}

impl KernelDrops {
    /// For the listeners `inodes` (their drop counts only grow while they live).
    pub fn new(inodes: Vec<u64>) -> KernelDrops {
        let highest = parking_lot::Mutex::new(vec![0; inodes.len()]);
        KernelDrops { inodes, highest }
    }

    /// The sum over our listeners of the highest count seen for each.
    pub fn total(&self) -> u64 {
        let mut seen = vec![None; self.inodes.len()];
        for table in ["/proc/net/udp", "/proc/net/udp6"] {
            if let Ok(text) = std::fs::read_to_string(table) {
                drops_in_table(&text, &self.inodes, &mut seen);
            }
        }
        self.remember(&seen)
    }

    /// Raise each socket's highest count to what a read found (`None`: not in that read).
    fn remember(&self, seen: &[Option<u64>]) -> u64 {
        let mut highest = self.highest.lock();
        for (h, s) in highest.iter_mut().zip(seen) {
            *h = (*h).max(s.unwrap_or(0));
        }
        highest.iter().sum()
    }
}

/// `sl local rem st tx:rx tr:tm retrnsmt uid timeout inode ref pointer drops`, one socket a
/// line: the drops of each of `inodes` found, into `seen` (same order).
fn drops_in_table(text: &str, inodes: &[u64], seen: &mut [Option<u64>]) {
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(inode) = fields.get(9).and_then(|f| f.parse::<u64>().ok()) else {
            continue;
        };
        let Some(i) = inodes.iter().position(|&x| x == inode) else {
            continue;
        };
        if let Some(drops) = fields.get(12).and_then(|f| f.parse::<u64>().ok()) {
            seen[i] = Some(drops);
        }
    }
}

/// Serve one socket until `stop` is set, then drain it (see `Drain`).
pub fn run_worker(
    socket: Arc<UdpSocket>,
    engine: Arc<ArcSwap<Engine>>,
    rt: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
) {
    let fd = socket.as_raw_fd();
    let mut bufs = vec![[0u8; RECV_BUF]; BATCH];
    let mut addrs: Vec<MaybeUninit<libc::sockaddr_storage>> = vec![MaybeUninit::zeroed(); BATCH];
    let mut iovs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut hdrs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
    for buf in bufs.iter_mut() {
        iovs.push(libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: RECV_BUF,
        });
    }
    for (iov, addr) in iovs.iter_mut().zip(addrs.iter_mut()) {
        // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_name = addr.as_mut_ptr().cast();
        h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        hdrs.push(h);
    }
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut out_to: Vec<SockAddr> = Vec::with_capacity(BATCH);
    let mut drain = Drain::Serving;

    loop {
        if let Drain::Serving = drain {
            if stop.load(Ordering::Relaxed) {
                drain = Drain::WaitingForTasks(
                    Instant::now() + engine.load().config.server.shutdown_grace,
                );
            }
        }
        let flags = match drain {
            Drain::Serving => libc::MSG_WAITFORONE,
            Drain::WaitingForTasks(deadline) => {
                // Only this thread holds the socket once no spawned query holds a reply handle.
                if Arc::strong_count(&socket) == 1 || Instant::now() >= deadline {
                    leave_reuseport_group(&socket);
                    drain = Drain::Emptying;
                    libc::MSG_DONTWAIT
                } else {
                    libc::MSG_WAITFORONE
                }
            }
            Drain::Emptying => libc::MSG_DONTWAIT,
        };
        for h in hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by this frame, sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            if let Drain::Emptying = drain {
                // The queue is empty, no new datagram can be queued here, and nothing else
                // holds the socket: closing it loses nothing.
                return;
            }
            continue; // timeout (EAGAIN) or EINTR: check `stop` and wait again
        }
        let engine_now = engine.load();
        let now = Instant::now();
        out_to.clear();
        let mut out_count = 0;
        for i in 0..n as usize {
            let len = hdrs[i].msg_len as usize;
            // SAFETY: zero-initialised at start and written by the kernel; any bytes are a valid
            // sockaddr_storage.
            let Some(client_sa) = socket_addr(unsafe { addrs[i].assume_init_ref() }) else {
                continue;
            };
            let truncated = hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let packet = if truncated {
                &bufs[i][..12.min(len)]
            } else {
                &bufs[i][..len]
            };
            let out = &mut outs[out_count];
            let (answered, work) =
                match engine_now.handle_fast(packet, Proto::Udp, client_sa, now, out) {
                    Fast::Answered => (true, None),
                    Fast::Drop => (false, None),
                    Fast::Resolve { view, zone, plan } => {
                        let reply = ReplyTo::Udp(socket.clone(), client_sa);
                        (false, Some((view, zone, plan, Some(reply))))
                    }
                    Fast::Prefetch { view, zone, plan } => (true, Some((view, zone, plan, None))),
                };
            if answered {
                out_to.push(SockAddr::from(client_sa));
                out_count += 1;
            }
            if let Some((view, zone, plan, reply)) = work {
                // Admitted within the memory budget, or answered now (stale or SERVFAIL).
                let Some(task) = engine_now.admit(Job {
                    query: packet.to_vec(),
                    view,
                    zone,
                    plan,
                    reply,
                    proto: Proto::Udp,
                    client: client_sa,
                    started: now,
                }) else {
                    continue;
                };
                match drain {
                    Drain::Serving => {
                        rt.spawn(task);
                    }
                    // While draining, misses are resolved on this thread so no new task holds
                    // the socket open past the drain.
                    _ => rt.block_on(task),
                }
            }
        }
        engine_now.flush_events();
        if out_count > 0 {
            send_batch(fd, &outs[..out_count], &out_to);
        }
    }
}

/// Shutdown of one UDP socket without losing queries the kernel already gave it. With
/// SO_REUSEPORT a socket keeps receiving its share until it is closed, and closing it drops
/// whatever is queued; so after `stop` the worker keeps serving (misses inline) until no
/// spawned query holds the socket, then leaves the group (`leave_reuseport_group`), reads
/// what is queued without waiting, and closes.
enum Drain {
    Serving,
    WaitingForTasks(Instant),
    Emptying,
}

/// Send replies with one `sendmmsg`, falling back to single sends for what it did not take.
fn send_batch(fd: i32, outs: &[Vec<u8>], to: &[SockAddr]) {
    let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    // SAFETY: zeroed mmsghdr values are valid; each is filled below before use.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..outs.len() {
        iovs[i].write(libc::iovec {
            iov_base: outs[i].as_ptr() as *mut _,
            iov_len: outs[i].len(),
        });
        hdrs[i].msg_hdr.msg_iov = iovs[i].as_mut_ptr();
        hdrs[i].msg_hdr.msg_iovlen = 1;
        hdrs[i].msg_hdr.msg_name = to[i].as_ptr() as *mut _;
        hdrs[i].msg_hdr.msg_namelen = to[i].len();
    }
    let mut sent = 0usize;
    while sent < outs.len() {
        // SAFETY: headers point at `outs` and `to`, alive for this call.
        let n =
            unsafe { libc::sendmmsg(fd, hdrs[sent..].as_mut_ptr(), (outs.len() - sent) as u32, 0) };
        if n <= 0 {
            // A full send buffer or an unreachable client: skip that one reply, as a UDP
            // server must; the client retries.
            sent += 1;
        } else {
            sent += n as usize;
        }
    }
}

/// Read an IPv4 or IPv6 socket address the kernel filled in.
fn socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Stop new datagrams from being queued to this socket while keeping those already queued.
/// Connecting a UDP socket takes it out of SO_REUSEPORT selection: the kernel then only
/// delivers datagrams from the connected peer to it, and the other sockets of the group (the
/// new process's) get all new queries. The peer is the socket's own address on the discard
/// port, from which nothing is ever sent. Replies still go out with explicit addresses.
fn leave_reuseport_group(socket: &UdpSocket) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let ip = match local.ip() {
        ip if ip.is_unspecified() && local.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    if let Err(e) = socket.connect(SocketAddr::new(ip, 9)) {
        tracing::warn!("draining {local}: could not leave the SO_REUSEPORT group: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            1: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 111 2 0000000000000000 40\n\
            2: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 222 2 0000000000000000 2\n\
            3: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 333 2 0000000000000000 999\n\
            garbage line\n";

    #[test]
    fn drops_are_summed_for_our_inodes_only() {
        let mut seen = [None; 2];
        drops_in_table(TABLE, &[111, 222], &mut seen);
        assert_eq!(seen, [Some(40), Some(2)]);
        let mut seen = [None];
        drops_in_table(TABLE, &[444], &mut seen);
        assert_eq!(seen, [None]);
        assert_eq!(
            KernelDrops::new(vec![111, 222]).remember(&[Some(40), Some(2)]),
            42
        );
    }

    /// A read of /proc/net/udp that missed a listener (sockets opened and closed while the
    /// kernel wrote it page by page) lowered the sum, and the exported counter went down.
    #[test]
    fn a_listener_missed_by_one_read_lowered_the_drops_counter() {
        let drops = KernelDrops::new(vec![111, 222]);
        assert_eq!(drops.remember(&[Some(40), Some(2)]), 42);
        assert_eq!(drops.remember(&[None, Some(3)]), 43, "111 not in this read");
        assert_eq!(drops.remember(&[Some(41), Some(3)]), 44);
    }

    #[test]
    fn a_bound_socket_is_found_in_proc_net_udp() {
        let s = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let ino = inode(&s).unwrap();
        // A read can miss a line while other tests open and close sockets (see
        // `KernelDrops`): found in one of a few reads.
        let found = (0..5).any(|_| {
            let table = std::fs::read_to_string("/proc/net/udp").unwrap();
            let mut seen = [None];
            drops_in_table(&table, &[ino], &mut seen);
            seen == [Some(0)]
        });
        assert!(found, "inode {ino} with 0 drops in /proc/net/udp");
        assert_eq!(KernelDrops::new(vec![ino]).total(), 0);
    }
}
