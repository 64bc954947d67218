//! TCP listeners (RFC 7766): two-byte length framing, pipelined queries answered as they
//! complete (out of order is allowed, §6.2.1.1), idle connections closed (§6.2.3), and a
//! bound on connections so a flood of idle clients cannot exhaust the process. Every query
//! read is answered: a client that reads slowly gets back-pressure (we stop reading its
//! queries), bounded in bytes per connection (`TcpOut`, and the kernel's send buffer, set
//! small: `SEND_BUF`), never a dropped answer. A query must arrive whole within the idle
//! timeout of its first byte, and a connection closed with answers the client never took is
//! reset, so the kernel frees them at once (`ClientWriter`).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

use super::handler::{Engine, Fast, Job, Proto, ReplyTo};
use crate::budget::{OwnedCharge, Part};
use crate::metrics as m;

/// Bind a TCP listener with SO_REUSEPORT.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Before listen: accepted connections inherit it, and their window scale is chosen for it.
    s.set_recv_buffer_size(RECV_BUF)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The send buffer asked of the kernel for each client connection (SO_SNDBUF). Linux doubles
/// it for its own bookkeeping: 64 KiB, of which about 40 KB of answers (measured) wait there
/// for a client that does not read. Without it the kernel grows the buffer to
/// `net.ipv4.tcp_wmem`'s maximum (4 MiB; a non-reading client held 2.2 MB of answers in it),
/// outside the budget. A larger write waits for the client to read: back-pressure, as before.
/// About 40 KB a round trip is hundreds of MB/s at the round trips within a node.
const SEND_BUF: usize = 32 * 1024;

/// The receive buffer asked of the kernel for each client connection (SO_RCVBUF, set on the
/// listener so accepted connections start with it). Linux doubles it: 32 KiB, of which the
/// queries a paused connection (back-pressure) leaves unread take at most that. The default
/// (`net.ipv4.tcp_rmem`, 128 KiB) held 128 KiB of a pipelining client's queries per paused
/// connection outside the budget. Hundreds of queries fit in it between two reads.
const RECV_BUF: usize = 16 * 1024;

/// What a client connection holds, for the memory budget: its tasks, the read and frame
/// buffers, a full answer channel of typical answers (64 of ~512 bytes), and the kernel's
/// send and receive buffers (`SEND_BUF`, `RECV_BUF`, each doubled by the kernel).
pub const TCP_CONNECTION_BYTES: usize = 48 * 1024 + 2 * SEND_BUF + 2 * RECV_BUF;

pub async fn serve(
    listener: std::net::TcpListener,
    engine: Arc<ArcSwap<Engine>>,
    stop: Arc<AtomicBool>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("tcp listener: {e}");
            return;
        }
    };
    let limit = Arc::new(Semaphore::new(
        engine.load().config.server.max_tcp_connections,
    ));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => break,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::counter!(m::OVERLOAD_DROPS, "limit" => "max_tcp_connections").increment(1);
            continue; // dropping the stream closes it
        };
        // The connection's buffers, within the memory budget's `tcp` share.
        let Some(charge) = OwnedCharge::try_new(
            engine.load().cache.budget(),
            Part::Tcp,
            TCP_CONNECTION_BYTES,
        ) else {
            metrics::counter!(m::OVERLOAD_DROPS, "limit" => "memory_limit").increment(1);
            continue;
        };
        let engine = engine.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _charge = charge;
            connection(stream, peer, engine, stop).await;
        });
    }
}

/// Bytes of answers queued for one connection above which the reader stops taking queries
/// until the client has read some (back-pressure: a slow reader slows itself, nobody else).
const QUEUE_SOFT_BYTES: usize = 32 * 1024;
/// Queries of one connection waiting on upstreams at once; the reader pauses beyond this.
const MAX_OUTSTANDING: usize = 100;
/// Hard cap on queued answer bytes per connection. Only answers already in flight when the
/// reader paused can push past the soft bound; if they push past this one the connection is
/// closed (counted), so the client sees a close and retries rather than a missing answer.
const QUEUE_HARD_BYTES: usize = 256 * 1024;
/// The reader's buffer: one `read` takes every query a pipelining client has sent so far
/// (it grows to hold one message of up to 64 KiB when a client sends one).
const READ_BUF: usize = 16 * 1024;

/// The answers waiting to be written to one client connection, in bytes and in count.
///
/// Resolver tasks finish in any order (RFC 7766 §6.2.1.1) and push here; one writer task
/// drains it. Nothing is ever dropped while the connection is open: the reader stops reading
/// queries while the queue is over `QUEUE_SOFT_BYTES` or `MAX_OUTSTANDING` answers are owed.
pub struct TcpOut {
    /// Answers already framed (two-byte length, RFC 1035 §4.2.2), back to back: the writer
    /// takes them all with one swap and writes them with one `write`, and neither side
    /// allocates per answer.
    queue: parking_lot::Mutex<Vec<u8>>,
    /// Framed bytes queued or being written.
    bytes: AtomicUsize,
    /// Answers owed: queries handed to resolver tasks and not pushed yet.
    outstanding: AtomicUsize,
    /// Set when the connection is going away (write error, hard cap, client gone).
    closed: AtomicBool,
    /// The reader is done; the writer ends once nothing is owed.
    reader_done: AtomicBool,
    wake_writer: Notify,
    wake_reader: Notify,
}

impl TcpOut {
    fn new() -> TcpOut {
        TcpOut {
            queue: parking_lot::Mutex::new(Vec::new()),
            bytes: AtomicUsize::new(0),
            outstanding: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            reader_done: AtomicBool::new(false),
            wake_writer: Notify::new(),
            wake_reader: Notify::new(),
        }
    }

    /// Queue an answer owed by a resolver task.
    pub fn push_owed(&self, msg: Vec<u8>) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        let mut framed = Vec::with_capacity(msg.len() + 2);
        frame(&mut framed, &msg);
        self.push_framed(&framed);
    }

    /// Queue answers already framed (one or more).
    fn push_framed(&self, framed: &[u8]) {
        if framed.is_empty() {
            return;
        }
        if !self.closed.load(Ordering::Acquire) {
            let n = framed.len();
            if self.bytes.fetch_add(n, Ordering::AcqRel) + n > QUEUE_HARD_BYTES {
                self.bytes.fetch_sub(n, Ordering::AcqRel);
                self.closed.store(true, Ordering::Release);
                metrics::counter!(m::OVERLOAD_DROPS, "limit" => "tcp_client_buffer").increment(1);
                tracing::debug!("closing a TCP client connection over its answer buffer");
            } else {
                self.queue.lock().extend_from_slice(framed);
            }
        }
        self.wake_writer.notify_one();
    }

    /// Should the reader stop taking queries, counting `batch` bytes it has not queued yet?
    fn must_pause(&self, batch: usize) -> bool {
        self.bytes.load(Ordering::Acquire) + batch > QUEUE_SOFT_BYTES
            || self.outstanding.load(Ordering::Acquire) >= MAX_OUTSTANDING
    }
}

/// Append `msg` with its two-byte length (RFC 1035 §4.2.2).
fn frame(to: &mut Vec<u8>, msg: &[u8]) {
    to.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    to.extend_from_slice(msg);
}

/// The write half of a client connection. Dropped with answers still in the kernel's send
/// queue (the client stopped reading, the runtime ended after the drain), it resets the
/// connection (SO_LINGER 0): the kernel frees the queue at once instead of holding it in
/// FIN-WAIT-1, outside the budget, for as long as the client keeps its window shut.
struct ClientWriter {
    wr: OwnedWriteHalf,
    /// Every answer was acknowledged by the client's kernel and our FIN sent: a graceful close.
    graceful: bool,
}

impl Drop for ClientWriter {
    fn drop(&mut self) {
        let s: &TcpStream = self.wr.as_ref();
        if !self.graceful && unsent(s) > 0 {
            let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
}

/// Bytes in the socket's send queue: written and not yet acknowledged by the client (SIOCOUTQ).
fn unsent(s: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) stores one int through the pointer; the fd is open (`s`).
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// Wait until the client's kernel has acknowledged everything written to it (the send queue
/// is empty), for `within` at most: false if it has not by then.
async fn delivered(s: &TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(1);
    while unsent(s) > 0 {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    true
}

async fn writer(out: Arc<TcpOut>, wr: OwnedWriteHalf, write_timeout: Duration) {
    let mut wr = ClientWriter {
        wr,
        graceful: false,
    };
    let mut pending = Vec::with_capacity(4096);
    let mut ok = true;
    loop {
        std::mem::swap(&mut *out.queue.lock(), &mut pending);
        if pending.is_empty() {
            if out.closed.load(Ordering::Acquire)
                || (out.reader_done.load(Ordering::Acquire)
                    && out.outstanding.load(Ordering::Acquire) == 0
                    && out.queue.lock().is_empty())
            {
                break;
            }
            out.wake_writer.notified().await;
            continue;
        }
        // A client that stops reading for as long as an idle connection may live is gone.
        ok = matches!(
            tokio::time::timeout(write_timeout, wr.wr.write_all(&pending)).await,
            Ok(Ok(()))
        );
        out.bytes.fetch_sub(pending.len(), Ordering::AcqRel);
        pending.clear();
        out.wake_reader.notify_one();
        if !ok {
            break;
        }
    }
    out.closed.store(true, Ordering::Release);
    out.queue.lock().clear();
    out.wake_reader.notify_one();
    // RFC 7766 §6.2.3 would have the client close; we close gracefully only once its kernel
    // has acknowledged every answer. Otherwise dropping `wr` resets the connection and frees
    // what it left.
    if ok && delivered(wr.wr.as_ref(), write_timeout).await {
        let _ = wr.wr.shutdown().await;
        wr.graceful = true;
    }
}

/// The next complete message in `buf` (two-byte length first): its range, or `None` when
/// more bytes are needed.
fn next_frame(buf: &[u8]) -> Option<std::ops::Range<usize>> {
    let len = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]) as usize;
    (buf.len() >= 2 + len).then_some(2..2 + len)
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    engine: Arc<ArcSwap<Engine>>,
    stop: Arc<AtomicBool>,
) {
    let _ = stream.set_nodelay(true);
    // Answers the client does not read wait in the kernel up to this bound (charged).
    let _ = SockRef::from(&stream).set_send_buffer_size(SEND_BUF);
    let (mut rd, wr) = stream.into_split();
    let idle = engine.load().config.server.tcp_idle_timeout;
    // Answers from this reader (cache hits) and from resolver tasks go through one writer.
    let out = Arc::new(TcpOut::new());
    let writer = tokio::spawn(writer(out.clone(), wr, idle.max(Duration::from_secs(1))));
    // Queries read and not handled yet are buf[start..end].
    let mut buf = vec![0u8; READ_BUF];
    let (mut start, mut end) = (0usize, 0usize);
    let mut answer = Vec::with_capacity(512);
    // This read's cache hits, framed: queued with one push after the tracker has their events.
    let mut batch = Vec::with_capacity(4096);
    // When the reader first held part of the query now partly read (reset when one is whole).
    let mut partial_since: Option<Instant> = None;
    'conn: while !stop.load(Ordering::Relaxed) {
        let e = engine.load_full();
        while let Some(range) = next_frame(&buf[start..end]) {
            // Back-pressure: read no further query while this client owes us reading.
            if out.must_pause(batch.len()) {
                break;
            }
            let msg = &buf[start + range.start..start + range.end];
            start += range.end;
            partial_since = None;
            let now = Instant::now();
            answer.clear();
            match e.handle_fast(msg, Proto::Tcp, peer, now, &mut answer) {
                Fast::Answered => frame(&mut batch, &answer),
                Fast::Drop => {}
                Fast::Resolve { view, zone, plan } => {
                    out.outstanding.fetch_add(1, Ordering::AcqRel);
                    if let Some(task) = e.admit(Job {
                        query: msg.to_vec(),
                        view,
                        zone,
                        plan,
                        reply: Some(ReplyTo::Tcp(out.clone())),
                        proto: Proto::Tcp,
                        client: peer,
                        started: now,
                    }) {
                        tokio::spawn(task);
                    }
                }
                Fast::Prefetch { view, zone, plan } => {
                    frame(&mut batch, &answer);
                    if let Some(task) = e.admit(Job {
                        query: msg.to_vec(),
                        view,
                        zone,
                        plan,
                        reply: None,
                        proto: Proto::Tcp,
                        client: peer,
                        started: now,
                    }) {
                        tokio::spawn(task);
                    }
                }
            }
        }
        // The tracker gets the events before the client gets the answers (ARCHITECTURE).
        e.flush_events();
        drop(e);
        out.push_framed(&batch);
        batch.clear();
        while out.must_pause(0) {
            if out.closed.load(Ordering::Acquire) {
                break 'conn;
            }
            if tokio::time::timeout(idle, out.wake_reader.notified())
                .await
                .is_err()
            {
                break 'conn;
            }
        }
        if out.closed.load(Ordering::Acquire) {
            break;
        }
        if next_frame(&buf[start..end]).is_some() {
            continue; // paused with complete queries left: handle them before reading more
        }
        // Room for the rest of a partial message: move it to the front, grow for a long one.
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
        if end >= 2 {
            let need = 2 + u16::from_be_bytes([buf[0], buf[1]]) as usize;
            if need > buf.len() {
                buf.resize(need, 0);
            }
        }
        // Idle between queries; a client that sent part of one is held to the same bound from
        // its first byte (RFC 7766 §6.2.3), not from its last: one that trickles a byte at a
        // time would otherwise hold the connection, and a slot of `max_tcp_connections`,
        // forever. Bytes already here when the bound passes are still taken.
        let wait = if end == 0 {
            idle
        } else {
            let since = *partial_since.get_or_insert_with(Instant::now);
            (since + idle.max(Duration::from_secs(1))).saturating_duration_since(Instant::now())
        };
        match tokio::time::timeout(wait, rd.read(&mut buf[end..])).await {
            Ok(Ok(n)) if n > 0 => end += n,
            Err(_) if end > 0 => {
                tracing::debug!(%peer, "closing a TCP client connection: a query came too slowly");
                break;
            }
            _ => break, // idle, closed, or reset
        }
    }
    // Answers still owed are written before the connection closes.
    out.reader_done.store(true, Ordering::Release);
    out.wake_writer.notify_one();
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(out: &TcpOut, msg: &[u8]) {
        let mut framed = Vec::new();
        frame(&mut framed, msg);
        out.push_framed(&framed);
    }

    #[test]
    fn the_reader_pauses_over_the_soft_bound_and_the_hard_cap_closes() {
        let out = TcpOut::new();
        assert!(!out.must_pause(0));
        // A batch of hits not queued yet counts: the reader stops before it overshoots.
        assert!(out.must_pause(QUEUE_SOFT_BYTES + 1));
        // Answers the reader queued itself (cache hits): past 32 KiB it stops reading.
        while out.bytes.load(Ordering::Relaxed) <= QUEUE_SOFT_BYTES {
            push(&out, &[0u8; 1000]);
        }
        assert!(out.must_pause(0));
        assert!(!out.closed.load(Ordering::Relaxed), "paused, not closed");
        // Answers owed by resolver tasks still land while paused...
        out.outstanding.fetch_add(1, Ordering::Relaxed);
        out.push_owed(vec![0u8; 1000]);
        let queued = (QUEUE_SOFT_BYTES / 1002 + 2) * 1002;
        assert_eq!(out.queue.lock().len(), queued);
        assert_eq!(out.bytes.load(Ordering::Relaxed), queued);
        // ...until the hard cap: then the connection closes rather than drop one silently.
        while !out.closed.load(Ordering::Relaxed) {
            push(&out, &[0u8; 60_000]);
        }
        assert!(out.bytes.load(Ordering::Relaxed) <= QUEUE_HARD_BYTES);
    }

    #[test]
    fn the_reader_pauses_with_too_many_answers_owed() {
        let out = TcpOut::new();
        out.outstanding
            .store(MAX_OUTSTANDING - 1, Ordering::Relaxed);
        assert!(!out.must_pause(0));
        out.outstanding.fetch_add(1, Ordering::Relaxed);
        assert!(out.must_pause(0));
        out.push_owed(vec![1, 2, 3]);
        assert!(!out.must_pause(0));
        // Framed with its length, RFC 1035 §4.2.2.
        assert_eq!(&out.queue.lock()[..], &[0, 3, 1, 2, 3]);
    }

    #[test]
    fn frames_are_cut_from_the_stream_whole() {
        assert_eq!(next_frame(&[]), None);
        assert_eq!(next_frame(&[0]), None);
        assert_eq!(next_frame(&[0, 3, 1, 2]), None);
        assert_eq!(next_frame(&[0, 3, 1, 2, 3, 0, 1]), Some(2..5));
        assert_eq!(next_frame(&[0, 0]), Some(2..2));
    }
}
