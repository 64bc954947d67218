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
use crate::metrics as m;

const BATCH: usize = 32;
/// Larger than any sane query; a datagram that fills it is cut and read as malformed.
const RECV_BUF: usize = 4096;
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Bind a UDP socket with SO_REUSEPORT (and a large receive buffer to ride out bursts). Not
/// SO_REUSEADDR: for UDP it has no TIME_WAIT to skip, and lets any two sockets that set it share
/// an address, whoever owns them (another server's port was taken without an error).
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    bind_sharing(addr, Share::FromBind)
}

/// `bind` for port 0: a port no socket holds. The socket binds without SO_REUSEPORT and sets
/// it after, so the other workers (and a hand-over's newcomer) still join it. Bound with it,
/// Linux may give it a port another SO_REUSEPORT socket of the same user holds
/// (`udp_lib_get_port` does not count a port it could share as taken), and would split the
/// clients between the two servers (in a namespace of three ports, one held so, 6 binds of 12
/// were given that one).
pub fn bind_any_port(addr: SocketAddr) -> io::Result<UdpSocket> {
    bind_sharing(addr, Share::AfterBind)
}

/// When a listener socket takes SO_REUSEPORT.
enum Share {
    FromBind,
    AfterBind,
}

fn bind_sharing(addr: SocketAddr, share: Share) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if let Share::FromBind = share {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    if let Share::AfterBind = share {
        s.set_reuse_port(true)?;
    }
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
    let mut gso = Segmentation::probe(fd);

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
            let segment = engine_now.config.server.udp_segmentation && gso.usable(now);
            send_batch(fd, &outs[..out_count], &out_to, segment, &mut gso);
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

/// `UDP_SEGMENT` (linux/udp.h, Linux 4.18+): the socket option and control message of UDP
/// generic segmentation offload. The libc crate names it for musl and Android only.
const UDP_SEGMENT: libc::c_int = 103;
/// Largest reply sent as a segment: a segment above the path MTU fails the whole send
/// (`EINVAL`; `EMSGSIZE` on kernels with 2025's "udp: gso: do not drop small packets when PMTU
/// reduces"), and 1,232 bytes fit the IPv6 minimum MTU of 1,280 (the size DNS Flag Day 2020
/// settled on), so overlay networks with a smaller MTU than 1,500 are covered too.
const GSO_MAX_SEGMENT: usize = 1232;

/// Replies to one client socket can leave in one `sendmsg` with UDP segmentation offload
/// (GSO): the kernel carries them through its stack once and cuts them into the same
/// datagrams at the receiving socket or the device (taps, netfilter and tc on the way see one
/// packet). A client that pipelines queries on one socket (dnsperf, a forwarder such as
/// CoreDNS; of glibc's and musl's A and AAAA pair, the equal NXDOMAIN or NODATA answers) then
/// costs one pass through the IP stack per batch instead of one per answer. Only with
/// `server.udp_segmentation`; never where the kernel does not know the option (before 4.18,
/// where a control message of an unknown level is ignored and the replies would leave as one
/// datagram), and not on this worker for [`SEGMENTATION_PAUSE`] after a send the kernel
/// refused with it where a plain send went (an IPsec path, a smaller MTU). It is tried again
/// after that: a path that changed back (a route, an MTU) gets it again, and one that still
/// refuses costs one refused send (its replies sent one by one, counted `refused`) a pause.
pub(super) struct Segmentation {
    /// The kernel knows `UDP_SEGMENT` on this socket.
    supported: bool,
    /// Paused after a refusal, until then.
    paused_until: Option<Instant>,
    sent: metrics::Counter,
    refused: metrics::Counter,
}

/// How long a worker sends one reply a send after the kernel refused a segmented send that it
/// took one by one.
const SEGMENTATION_PAUSE: Duration = Duration::from_secs(60);

impl Segmentation {
    /// Probe the kernel on this socket: setting `UDP_SEGMENT` to 0 (no default segment size)
    /// fails where segmentation is unknown.
    pub(super) fn probe(fd: i32) -> Segmentation {
        let zero: libc::c_int = 0;
        // SAFETY: a plain int option on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_UDP,
                UDP_SEGMENT,
                (&zero as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        let counter = |outcome| metrics::counter!(m::UDP_SEGMENTED_SENDS, "outcome" => outcome);
        Segmentation {
            supported: rc == 0,
            paused_until: None,
            sent: counter("sent"),
            refused: counter("refused"),
        }
    }

    /// Whether a batch sent `now` may be segmented: supported, and not paused (a pause that
    /// has run out ends here).
    fn usable(&mut self, now: Instant) -> bool {
        match self.paused_until {
            _ if !self.supported => false,
            Some(until) if now < until => false,
            Some(_) => {
                self.paused_until = None;
                tracing::info!("UDP answers to one client may leave as one segmented send again (server.udp_segmentation)");
                true
            }
            None => true,
        }
    }

    fn pause(&mut self, why: &io::Error) {
        if self.paused_until.is_none() {
            self.paused_until = Some(Instant::now() + SEGMENTATION_PAUSE);
            tracing::warn!(
                "UDP answers are sent one a send for {} s: the kernel refused a segmented send that it took one by one ({why})",
                SEGMENTATION_PAUSE.as_secs()
            );
        }
    }
}

/// One `sendmsg` of a batch: `count` replies (from `first` in the plan's order) to one
/// client, and the segment size when there are several (each but the last has exactly that
/// size).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Message {
    first: usize,
    count: usize,
    segment: usize,
}

/// How a batch of replies leaves: the replies in message order, and the messages.
struct Plan {
    order: [u8; BATCH],
    msgs: [Message; BATCH],
    msg_count: usize,
}

impl Plan {
    /// Group the replies of a batch (`lens[i]` bytes to `to[i]`): with `segment` on, a reply
    /// joins the message of the earliest reply to the same client while it is as long as that
    /// one; a shorter one ends the message (only a last segment may be shorter) and a longer
    /// one starts the next, so each client's replies keep their order.
    fn new(lens: &[usize], to: &[SockAddr], segment: bool) -> Plan {
        let n = lens.len();
        let mut plan = Plan {
            order: [0; BATCH],
            msgs: [Message::default(); BATCH],
            msg_count: 0,
        };
        // A number per client to compare first (a full comparison confirms a match): a batch
        // to many clients makes n²/2 comparisons.
        let mut keys = [0u64; BATCH];
        if segment {
            for (key, addr) in keys.iter_mut().zip(to) {
                *key = client_key(addr);
            }
        }
        let mut taken = [false; BATCH];
        let mut placed = 0;
        for i in 0..n {
            if taken[i] {
                continue;
            }
            taken[i] = true;
            let mut m = Message {
                first: placed,
                count: 1,
                segment: lens[i],
            };
            plan.order[placed] = i as u8;
            placed += 1;
            if segment && lens[i] <= GSO_MAX_SEGMENT {
                for j in i + 1..n {
                    if taken[j] || keys[j] != keys[i] || to[j] != to[i] {
                        continue;
                    }
                    if lens[j] > m.segment {
                        break;
                    }
                    taken[j] = true;
                    plan.order[placed] = j as u8;
                    placed += 1;
                    m.count += 1;
                    if lens[j] < m.segment {
                        break;
                    }
                }
            }
            plan.msgs[plan.msg_count] = m;
            plan.msg_count += 1;
        }
        plan
    }

    fn messages(&self) -> &[Message] {
        &self.msgs[..self.msg_count]
    }

    /// The replies (indices into the batch) of message `m`.
    fn replies(&self, m: &Message) -> &[u8] {
        &self.order[m.first..m.first + m.count]
    }
}

/// Port and address folded into a number: equal for one client, rarely for two.
fn client_key(addr: &SockAddr) -> u64 {
    match addr.as_socket() {
        Some(SocketAddr::V4(a)) => (u32::from(*a.ip()) as u64) << 16 | a.port() as u64,
        Some(SocketAddr::V6(a)) => {
            let ip = u128::from(*a.ip());
            (ip as u64 ^ (ip >> 64) as u64).rotate_left(16) ^ a.port() as u64
        }
        None => 0,
    }
}

/// Send replies with one `sendmmsg`, falling back to single sends for what it did not take.
/// Replies to the same client of the same size go as one segmented message (`Segmentation`,
/// `Plan`). Returns how many messages the batch took.
fn send_batch(
    fd: i32,
    outs: &[Vec<u8>],
    to: &[SockAddr],
    segment: bool,
    gso: &mut Segmentation,
) -> usize {
    let n = outs.len();
    let mut lens = [0usize; BATCH];
    for (len, out) in lens.iter_mut().zip(outs) {
        *len = out.len();
    }
    let plan = Plan::new(&lens[..n], to, segment);
    let msgs = plan.messages();
    let msg_count = msgs.len();
    let order = &plan.order;

    let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
    for (slot, &i) in iovs.iter_mut().zip(&order[..n]) {
        let out = &outs[i as usize];
        slot.write(libc::iovec {
            iov_base: out.as_ptr() as *mut _,
            iov_len: out.len(),
        });
    }
    // One control message per segmented message: cmsghdr and a u16, 8-byte aligned.
    let mut controls = [[0u64; 4]; BATCH];
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let control_len = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    // SAFETY: zeroed mmsghdr values are valid; each is filled below before use.
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (k, m) in msgs.iter().enumerate() {
        let dest = &to[plan.replies(m)[0] as usize];
        let h = &mut hdrs[k].msg_hdr;
        h.msg_iov = iovs[m.first].as_mut_ptr();
        h.msg_iovlen = m.count as _;
        h.msg_name = dest.as_ptr() as *mut _;
        h.msg_namelen = dest.len();
        if m.count > 1 {
            h.msg_control = controls[k].as_mut_ptr().cast();
            h.msg_controllen = control_len as _;
            // SAFETY: the control buffer is 32 bytes, 8-byte aligned, and holds CMSG_SPACE(2).
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::IPPROTO_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), m.segment as u16);
            }
        }
    }
    let mut sent = 0usize;
    while sent < msg_count {
        // SAFETY: headers point at `iovs`, `controls`, `outs` and `to`, alive for this call.
        let took =
            unsafe { libc::sendmmsg(fd, hdrs[sent..].as_mut_ptr(), (msg_count - sent) as u32, 0) };
        if took > 0 {
            let segmented = msgs[sent..sent + took as usize]
                .iter()
                .filter(|m| m.count > 1)
                .count();
            if segmented > 0 {
                gso.sent.increment(segmented as u64);
            }
            sent += took as usize;
            continue;
        }
        let m = msgs[sent];
        if m.count > 1 {
            // Whatever the kernel's reason, its answers go one by one. If the first of them
            // goes where the segmented send did not, with a reason that says the kernel or the
            // path cannot segment (a smaller MTU, IPsec), segmentation pauses; a reason that is
            // the client's (an unroutable address) leaves it on.
            let err = io::Error::last_os_error();
            let segmenting_failed = matches!(
                err.raw_os_error(),
                Some(libc::EINVAL | libc::EIO | libc::EMSGSIZE | libc::EOPNOTSUPP)
            );
            gso.refused.increment(1);
            let dest = &to[plan.replies(&m)[0] as usize];
            for (k, &i) in plan.replies(&m).iter().enumerate() {
                let out = &outs[i as usize];
                // SAFETY: a plain sendto from a buffer and an address we own.
                let rc = unsafe {
                    libc::sendto(
                        fd,
                        out.as_ptr().cast(),
                        out.len(),
                        0,
                        dest.as_ptr().cast(),
                        dest.len(),
                    )
                };
                if k == 0 && rc >= 0 && segmenting_failed {
                    gso.pause(&err);
                }
            }
        }
        // A full send buffer or an unreachable client: skip that message, as a UDP server
        // must; the client retries.
        sent += 1;
    }
    msg_count
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

    fn addrs(to: &[&str]) -> Vec<SockAddr> {
        to.iter()
            .map(|a| SockAddr::from(a.parse::<SocketAddr>().unwrap()))
            .collect()
    }

    /// (replies of each message, segment size) of a plan.
    fn groups(plan: &Plan) -> Vec<(Vec<u8>, usize)> {
        plan.messages()
            .iter()
            .map(|m| (plan.replies(m).to_vec(), m.segment))
            .collect()
    }

    #[test]
    fn replies_to_one_client_are_grouped_in_order_equal_sizes_first() {
        let a = "127.0.0.1:1000";
        let b = "127.0.0.1:2000";
        let to = addrs(&[a, b, a, a, b, a, a, a, b]);
        let lens = [90, 90, 90, 60, 90, 90, 100, 90, 90];
        let plan = Plan::new(&lens, &to, true);
        assert_eq!(
            groups(&plan),
            vec![
                // 60 is shorter: the last segment of the message.
                (vec![0, 2, 3], 90),
                (vec![1, 4, 8], 90),
                // 100 is longer than 90: it starts the next message, which the 90 after it ends.
                (vec![5], 90),
                (vec![6, 7], 100),
            ]
        );
        // Off, or too large to be a segment: one reply a message, in batch order.
        let one_each = |plan: &Plan| groups(plan).iter().all(|(r, _)| r.len() == 1);
        assert!(one_each(&Plan::new(&lens, &to, false)));
        let big = [GSO_MAX_SEGMENT + 1; 3];
        assert!(one_each(&Plan::new(&big, &addrs(&[a, a, a]), true)));
    }

    /// Send a batch of 12 replies to two clients on `local` (127.0.0.1 or ::1) with
    /// segmentation on; each client must receive the very datagrams planned for it, one for
    /// each reply, in order (the oracle is the receiving socket). With `no_checksum` the
    /// server socket has SO_NO_CHECK, which the kernel refuses to segment (`EINVAL`).
    /// Returns the messages the batch took and the worker's segmentation after it; `None` when
    /// the kernel knows no UDP_SEGMENT (before 4.18).
    fn replies_through_the_kernel(local: &str, no_checksum: bool) -> Option<(usize, Segmentation)> {
        let server = UdpSocket::bind(format!("{local}:0")).unwrap();
        let mut gso = Segmentation::probe(server.as_raw_fd());
        if !gso.supported {
            let reason = "this kernel refuses UDP_SEGMENT (Linux 4.18+)";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {reason}"
            );
            eprintln!("\n*** SKIPPED: {reason} ***\n");
            return None;
        }
        if no_checksum {
            let one: libc::c_int = 1;
            // SAFETY: a plain int option on a socket we own.
            let rc = unsafe {
                libc::setsockopt(
                    server.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_NO_CHECK,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            assert_eq!(rc, 0);
        }
        let clients: Vec<UdpSocket> = (0..2)
            .map(|_| {
                let c = UdpSocket::bind(format!("{local}:0")).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                c
            })
            .collect();
        let pattern = [0usize, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0];
        let lens = [200, 200, 200, 200, 150, 200, 200, 1232, 1232, 1232, 99, 512];
        let outs: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|b| (i * 31 + b) as u8).collect())
            .collect();
        let to: Vec<SockAddr> = pattern
            .iter()
            .map(|&c| SockAddr::from(clients[c].local_addr().unwrap()))
            .collect();
        let messages = send_batch(server.as_raw_fd(), &outs, &to, true, &mut gso);
        for (c, client) in clients.iter().enumerate() {
            let mut buf = [0u8; 4096];
            for (i, out) in outs.iter().enumerate().filter(|(i, _)| pattern[*i] == c) {
                let n = client.recv(&mut buf).expect("each reply a datagram");
                assert_eq!(&buf[..n], &out[..], "reply {i} to client {c}");
            }
            client.set_nonblocking(true).unwrap();
            assert!(client.recv(&mut buf).is_err(), "nothing more to client {c}");
        }
        Some((messages, gso))
    }

    #[test]
    fn segmented_replies_arrive_as_the_datagrams_they_were() {
        for local in ["127.0.0.1", "::1"] {
            let Some((messages, mut gso)) = replies_through_the_kernel(local, false) else {
                return;
            };
            assert_eq!(messages, 3, "{local}: 12 replies in 3 segmented messages");
            assert!(gso.usable(Instant::now()), "{local}");
        }
    }

    /// A segmented send the kernel refuses (here: a socket without UDP checksums) is sent one
    /// reply a send, and the worker pauses segmenting; it tries again once the pause is over.
    #[test]
    fn a_refused_segmented_send_went_out_one_reply_at_a_time() {
        let Some((messages, mut gso)) = replies_through_the_kernel("127.0.0.1", true) else {
            return;
        };
        assert_eq!(messages, 3);
        let now = Instant::now();
        assert!(
            !gso.usable(now),
            "segmentation paused after the kernel refused it"
        );
        assert!(!gso.usable(now + SEGMENTATION_PAUSE / 2));
        assert!(
            gso.usable(now + SEGMENTATION_PAUSE),
            "tried again after the pause"
        );
        assert!(
            gso.usable(now + SEGMENTATION_PAUSE / 2),
            "the pause is over"
        );
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
