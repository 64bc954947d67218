//! Another process on our ports. Every listener sets SO_REUSEPORT (so a DaemonSet surge pod
//! can bind while its predecessor drains), which also lets a second proxy start silently on
//! the same ports: queries, kubelet probes and Prometheus scrapes are then split between the
//! two. This module sees it and says so, and runs the explicit hand-over.
//!
//! Detection: every `CHECK` (5 s) the kernel's socket tables (`/proc/net/{udp,udp6,tcp,tcp6}`, this
//! network namespace, so a hostNetwork pod sees the other pod's sockets) are read for sockets
//! bound to one of our listen addresses that are not ours (by inode). The count goes to
//! `ndots_foreign_listeners{listener}`; a change is logged.
//!
//! Hand-over (rolling update with `maxSurge`): a process that finds another one already on its
//! admin port when it starts is the newcomer. Once it is ready (upstreams answer, no loop) it
//! announces itself with `POST /handover` on the shared admin address, retrying on fresh
//! connections until the kernel's SO_REUSEPORT choice lands on the other process. That
//! process (only for a request from this host, and only when it is not a newcomer itself)
//! answers, reports not ready, and drains as on SIGTERM: its DNS sockets leave the
//! SO_REUSEPORT group once their queues are read, its admin listener closes, so probes and
//! scrapes reach only the new process. It then waits for its own SIGTERM (exiting would make
//! the kubelet restart it, and the restarted one would take over back).
//! Once its announcement was taken (or the previous process is gone) the newcomer is the
//! incumbent: the next update's newcomer finds it ready to hand over in turn.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::metrics as m;

/// How often the socket tables are read (on a busy node /proc/net/tcp is long: not too often).
pub const CHECK: Duration = Duration::from_secs(5);
/// How often a newcomer looks again while it waits to be ready to announce itself.
pub const ANNOUNCE_POLL: Duration = Duration::from_millis(500);

/// One of our listening sockets groups: an address, its transport, and our sockets' inodes.
#[derive(Clone, Debug)]
pub struct Listener {
    /// `dns udp 127.0.0.1:1053`, `admin 127.0.0.1:9255`: the metric label.
    pub label: String,
    pub addr: SocketAddr,
    pub tcp: bool,
    pub ours: Vec<u64>,
}

impl Listener {
    /// Sockets bound to this address that are not ours (TCP: listening ones).
    pub fn foreign(&self) -> usize {
        let tables: &[&str] = match (self.tcp, self.addr.is_ipv4()) {
            (false, true) => &["/proc/net/udp"],
            (false, false) => &["/proc/net/udp6"],
            (true, true) => &["/proc/net/tcp"],
            (true, false) => &["/proc/net/tcp6"],
        };
        tables
            .iter()
            .filter_map(|t| std::fs::read_to_string(t).ok())
            .map(|text| foreign_in_table(&text, self.addr, self.tcp, &self.ours))
            .sum()
    }
}

/// The inode of a socket (its identity in /proc/net tables).
pub fn inode(fd: &impl std::os::fd::AsRawFd) -> Option<u64> {
    // SAFETY: fstat writes into the zeroed struct we own; the fd is valid while `fd` lives.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0).then_some(st.st_ino)
}

/// `sl local rem st ... inode`: count lines bound to `addr` (TCP: state 0A, LISTEN) whose
/// inode is not in `ours`.
fn foreign_in_table(text: &str, addr: SocketAddr, tcp: bool, ours: &[u64]) -> usize {
    text.lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                return false;
            };
            let Ok(inode) = inode.parse::<u64>() else {
                return false;
            };
            (!tcp || *st == "0A")
                && inode != 0
                && !ours.contains(&inode)
                && parse_local(local) == Some(addr)
        })
        .count()
}

/// `0100007F:0035` (IPv4) or 32 hex digits `:PORT` (IPv6): each 32-bit word as the kernel
/// holds it, printed as a native-endian number.
fn parse_local(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for chunk in ip.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Read the tables once: set the gauge, log changes, and return the admin listener's foreign
/// count (the hand-over's concern).
pub fn check(listeners: &[Listener], last: &mut Vec<usize>) -> usize {
    last.resize(listeners.len(), 0);
    let mut admin = 0;
    for (l, seen) in listeners.iter().zip(last.iter_mut()) {
        let n = l.foreign();
        metrics::gauge!(m::FOREIGN_LISTENERS, "listener" => l.label.clone()).set(n as f64);
        if n > 0 && *seen == 0 {
            tracing::warn!(
                listener = %l.label,
                sockets = n,
                "another process is listening on this address too (SO_REUSEPORT): queries, \
                 probes and scrapes are split between the two until one stops"
            );
        } else if n == 0 && *seen > 0 {
            tracing::info!(listener = %l.label, "no other process listens on this address any more");
        }
        *seen = n;
        if l.label.starts_with("admin") {
            admin = n;
        }
    }
    admin
}

/// The newcomer's announcement: `POST /handover` to `admin` until a process other than
/// `instance` answers. Returns that process's answer (status, instance), or `None` when every
/// try landed on ourselves or failed.
pub async fn announce(admin: SocketAddr, instance: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), admin.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), admin.port())
        }
        _ => admin,
    };
    // SO_REUSEPORT picks a listener by a hash of the connection's addresses: each fresh
    // connection (a new source port) is a new draw.
    for _ in 0..64 {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(target).await.ok()?;
            let req = format!(
                "POST /handover HTTP/1.1\r\nHost: ndots\r\nX-Ndots-Instance: {instance}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut resp = Vec::new();
            s.read_to_end(&mut resp).await.ok()?;
            let text = String::from_utf8_lossy(&resp);
            let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
            let from = header(&text, "x-ndots-instance")?;
            Some((status, from))
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Some((status, from))) if from != instance => return Some((status, from)),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    None
}

/// A header's value from an HTTP head (name lowercase).
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_socket_tables() {
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:041D 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1111 2 0000000000000000 0\n\
  2: 0100007F:041D 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2222 2 0000000000000000 0\n\
  3: 0200007F:041D 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3333 2 0000000000000000 0\n\
  4: garbage\n";
        let addr: SocketAddr = "127.0.0.1:1053".parse().unwrap();
        assert_eq!(foreign_in_table(udp, addr, false, &[1111]), 1);
        assert_eq!(foreign_in_table(udp, addr, false, &[1111, 2222]), 0);
        // TCP counts listening sockets only (state 0A).
        let tcp = "  sl  local_address rem_address   st ...\n\
  0: 0100007F:041D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0\n\
  1: 0100007F:041D 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 6 1 0 100 0 0 10 0\n";
        assert_eq!(foreign_in_table(tcp, addr, true, &[]), 1);
        let v6 = parse_local("00000000000000000000000001000000:0035").unwrap();
        assert_eq!(v6, "[::1]:53".parse().unwrap());
    }

    #[test]
    fn finds_a_header_case_insensitively() {
        let head = "HTTP/1.1 200 OK\r\nX-Ndots-Instance: abc\r\n\r\nbody: no";
        assert_eq!(header(head, "x-ndots-instance").as_deref(), Some("abc"));
        assert_eq!(header(head, "body"), None);
    }
}
