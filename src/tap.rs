//! The proxy's own traffic as dnstap (DESIGN §9 "dnstap"): `dnstap.output` and
//! `dnstap.messages`.
//!
//! The packet path only copies the query and answer bytes into a record and does a `try_send`
//! on a bounded queue ([`QUEUE`] records); a full queue drops the record and counts it
//! (`ndots_dnstap_messages_total{result="dropped"}`). One writer thread encodes the Dnstap
//! protobufs and writes Frame Streams (farsightsec/fstrm):
//! - `file:PATH`: START, data frames, STOP at shutdown (what `dnstap-ldns -r` and
//!   `ndots analyze` read); flushed whenever the queue is empty.
//! - `unix:PATH`, `tcp:HOST:PORT`: the bidirectional handshake (READY -> ACCEPT, START ...
//!   STOP -> FINISH). A receiver that is down, refuses or stalls costs only this thread: records
//!   are dropped and counted meanwhile, and the connection is tried again every second.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;

use crate::capture::dnstap::{
    control_frame, pb, CONTENT_TYPE, CONTROL_ACCEPT, CONTROL_READY, CONTROL_START, CONTROL_STOP,
};
use crate::metrics as m;

/// Records (a query and its answer: two dnstap messages) waiting for the writer.
pub const QUEUE: usize = 16_384;
/// How long a socket receiver may take to read a batch or answer the handshake before the
/// connection is dropped and retried.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_secs(1);

/// Where dnstap goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TapOutput {
    Unix(PathBuf),
    Tcp(SocketAddr),
    File(PathBuf),
}

impl std::str::FromStr for TapOutput {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<TapOutput> {
        let nonempty = |p: &str| {
            anyhow::ensure!(!p.is_empty(), "{s:?}: the path is empty");
            Ok(PathBuf::from(p))
        };
        if let Some(p) = s.strip_prefix("unix:") {
            Ok(TapOutput::Unix(nonempty(p)?))
        } else if let Some(p) = s.strip_prefix("file:") {
            Ok(TapOutput::File(nonempty(p)?))
        } else if let Some(a) = s.strip_prefix("tcp:") {
            Ok(TapOutput::Tcp(crate::config::parse_socket_addr(a, None)?))
        } else {
            anyhow::bail!("{s:?}: expected unix:PATH, tcp:HOST:PORT or file:PATH")
        }
    }
}

/// The validated `dnstap` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    pub output: TapOutput,
    /// CLIENT_QUERY / CLIENT_RESPONSE: what the pods asked and were answered.
    pub client: bool,
    /// FORWARDER_QUERY / FORWARDER_RESPONSE: what the proxy asked its upstreams.
    pub forwarder: bool,
}

struct Record {
    forwarder: bool,
    /// The client (client messages) or the upstream server (forwarder messages).
    peer: SocketAddr,
    query: Vec<u8>,
    response: Vec<u8>,
    query_time: SystemTime,
    response_time: SystemTime,
}

enum Msg {
    Record(Record),
    /// Write STOP (and wait for FINISH on a socket), then answer.
    Close(SyncSender<()>),
}

/// Shared by the handles and the writer thread.
#[derive(Default)]
struct Counts {
    written: AtomicU64,
    dropped: AtomicU64,
    /// Records sent and not yet taken by the writer.
    queued: AtomicUsize,
}

struct Inner {
    tx: SyncSender<Msg>,
    counts: Arc<Counts>,
    client: bool,
    forwarder: bool,
}

/// Handle to the dnstap writer; cheap to clone. Kept across reloads by the proxy.
#[derive(Clone)]
pub struct Tap {
    inner: Arc<Inner>,
}

impl Tap {
    /// Start the writer. A file is created (truncated) here, so a bad path is an error at
    /// start; a socket that is not there yet is only retried.
    pub fn start(cfg: &TapConfig) -> io::Result<Tap> {
        let sink = match &cfg.output {
            TapOutput::File(p) => {
                Sink::File(Some(BufWriter::with_capacity(256 * 1024, File::create(p)?)))
            }
            other => Sink::Socket {
                target: other.clone(),
                conn: None,
                next_try: Instant::now(),
            },
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let inner = Arc::new(Inner {
            tx,
            counts: counts.clone(),
            client: cfg.client,
            forwarder: cfg.forwarder,
        });
        metrics::counter!(m::DNSTAP_MESSAGES, "result" => "written").increment(0);
        metrics::counter!(m::DNSTAP_MESSAGES, "result" => "dropped").increment(0);
        std::thread::Builder::new()
            .name("ndots-dnstap".into())
            .spawn(move || writer(rx, sink, &counts))?;
        Ok(Tap { inner })
    }

    /// A client's query and the answer it was sent, `latency` after the query arrived.
    #[inline]
    pub fn client(&self, client: SocketAddr, query: &[u8], response: &[u8], latency: Duration) {
        if self.inner.client {
            self.send(false, client, query, response, latency);
        }
    }

    /// A query the proxy sent to an upstream server and its reply.
    #[inline]
    pub fn forwarder(&self, server: SocketAddr, query: &[u8], response: &[u8], latency: Duration) {
        if self.inner.forwarder {
            self.send(true, server, query, response, latency);
        }
    }

    fn send(&self, forwarder: bool, peer: SocketAddr, q: &[u8], r: &[u8], latency: Duration) {
        let now = SystemTime::now();
        let rec = Record {
            forwarder,
            peer,
            query: q.to_vec(),
            response: r.to_vec(),
            query_time: now.checked_sub(latency).unwrap_or(now),
            response_time: now,
        };
        let c = &self.inner.counts;
        c.queued.fetch_add(1, Ordering::Relaxed);
        if self.inner.tx.try_send(Msg::Record(rec)).is_err() {
            c.queued.fetch_sub(1, Ordering::Relaxed);
            c.dropped.fetch_add(2, Ordering::Relaxed);
        }
    }

    /// Messages dropped (queue full, or no receiver connected).
    pub fn dropped(&self) -> u64 {
        self.inner.counts.dropped.load(Ordering::Relaxed)
    }

    /// Messages written to the output.
    pub fn written(&self) -> u64 {
        self.inner.counts.written.load(Ordering::Relaxed)
    }

    /// Write what is queued and end the stream (STOP; FINISH awaited on a socket), waiting at
    /// most a few seconds. Records handed over afterwards start a new stream.
    pub fn close(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.inner.tx.send(Msg::Close(tx)).is_ok() {
            let _ = rx.recv_timeout(IO_TIMEOUT * 3);
        }
    }
}

type Conn = (BufWriter<Box<dyn Write + Send>>, Box<dyn Read + Send>);

enum Sink {
    /// `None` after a write error: nothing more is written (counted as dropped).
    File(Option<BufWriter<File>>),
    Socket {
        target: TapOutput,
        conn: Option<Conn>,
        next_try: Instant,
    },
}

impl Sink {
    /// The writer to put frames on now, connecting (with the handshake) when due.
    fn writer(&mut self, started: &mut bool) -> Option<&mut dyn Write> {
        match self {
            Sink::File(f) => {
                let w = f.as_mut()?;
                if !*started {
                    w.write_all(&control_frame(CONTROL_START, Some(CONTENT_TYPE)))
                        .ok()?;
                    *started = true;
                }
                Some(w)
            }
            Sink::Socket {
                target,
                conn,
                next_try,
            } => {
                if conn.is_none() {
                    if Instant::now() < *next_try {
                        return None;
                    }
                    *next_try = Instant::now() + RETRY;
                    match connect(target) {
                        Ok(c) => *conn = Some(c),
                        Err(e) => {
                            tracing::debug!("dnstap: {target:?}: {e}");
                            return None;
                        }
                    }
                }
                conn.as_mut().map(|(w, _)| w as &mut dyn Write)
            }
        }
    }

    fn failed(&mut self) {
        match self {
            Sink::File(f) => *f = None,
            Sink::Socket { conn, .. } => *conn = None,
        }
    }

    fn flush(&mut self) {
        let ok = match self {
            Sink::File(Some(f)) => f.flush().is_ok(),
            Sink::Socket {
                conn: Some((w, _)), ..
            } => w.flush().is_ok(),
            _ => true,
        };
        if !ok {
            self.failed();
        }
    }

    /// STOP, and on a socket wait for FINISH, then close it.
    fn stop(&mut self, started: &mut bool) {
        match self {
            Sink::File(Some(f)) => {
                if *started {
                    let _ = f.write_all(&control_frame(CONTROL_STOP, None));
                }
                let _ = f.flush();
                *started = false;
            }
            Sink::Socket { conn, .. } => {
                if let Some((mut w, mut r)) = conn.take() {
                    let _ = w.write_all(&control_frame(CONTROL_STOP, None));
                    let _ = w.flush();
                    let mut finish = [0u8; 12];
                    let _ = r.read_exact(&mut finish);
                }
            }
            Sink::File(None) => {}
        }
    }
}

/// Connect and do the bidirectional handshake: READY -> ACCEPT, then START.
fn connect(target: &TapOutput) -> io::Result<Conn> {
    let (r, w): (Box<dyn Read + Send>, Box<dyn Write + Send>) = match target {
        TapOutput::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            (Box::new(s.try_clone()?), Box::new(s))
        }
        TapOutput::Tcp(a) => {
            let s = TcpStream::connect_timeout(a, IO_TIMEOUT)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            (Box::new(s.try_clone()?), Box::new(s))
        }
        TapOutput::File(_) => unreachable!("files are not connected"),
    };
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    let mut r = r;
    w.write_all(&control_frame(CONTROL_READY, Some(CONTENT_TYPE)))?;
    w.flush()?;
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if head[..4] != [0, 0, 0, 0] || !(4..=crate::capture::dnstap::MAX_CONTROL).contains(&len) {
        return Err(io::Error::other(
            "the receiver's answer is not a control frame",
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let (ctype, types) = crate::capture::dnstap::parse_control(&body).map_err(io::Error::other)?;
    if ctype != CONTROL_ACCEPT || !types.iter().any(|t| t == CONTENT_TYPE) {
        return Err(io::Error::other("the receiver did not accept dnstap"));
    }
    w.write_all(&control_frame(CONTROL_START, Some(CONTENT_TYPE)))?;
    Ok((w, r))
}

fn writer(rx: Receiver<Msg>, mut sink: Sink, counts: &Counts) {
    let mut since_flush = 0u32;
    let identity = hostname();
    let version = format!("ndots {}", crate::VERSION).into_bytes();
    let mut started = false;
    let mut frame = Vec::with_capacity(1024);
    // Added to, not set: several proxies in one process (tests) share the registry.
    let (mut published_w, mut published_d) = (0u64, 0u64);
    let mut publish = || {
        let w = counts.written.load(Ordering::Relaxed);
        let d = counts.dropped.load(Ordering::Relaxed);
        metrics::counter!(m::DNSTAP_MESSAGES, "result" => "written").increment(w - published_w);
        metrics::counter!(m::DNSTAP_MESSAGES, "result" => "dropped").increment(d - published_d);
        (published_w, published_d) = (w, d);
    };
    loop {
        let msg = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => {
                publish();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            Msg::Record(rec) => {
                counts.queued.fetch_sub(1, Ordering::Relaxed);
                let ok = match sink.writer(&mut started) {
                    Some(w) => [false, true].iter().all(|&resp| {
                        frame.clear();
                        encode(&rec, resp, &identity, &version, &mut frame);
                        w.write_all(&frame).is_ok()
                    }),
                    None => false,
                };
                if ok {
                    counts.written.fetch_add(2, Ordering::Relaxed);
                } else {
                    sink.failed();
                    counts.dropped.fetch_add(2, Ordering::Relaxed);
                }
            }
            Msg::Close(ack) => {
                sink.stop(&mut started);
                publish();
                let _ = ack.send(());
                continue;
            }
        }
        // Flush when nothing more is queued (a quiet proxy's file is always whole), and every
        // 4096 records under steady load.
        since_flush += 1;
        if since_flush >= 4096 || counts.queued.load(Ordering::Relaxed) == 0 {
            since_flush = 0;
            sink.flush();
            publish();
        }
    }
    sink.stop(&mut started);
    publish();
}

/// One Dnstap message as a data frame (length + protobuf) into `out`.
fn encode(rec: &Record, response: bool, identity: &[u8], version: &[u8], out: &mut Vec<u8>) {
    use pb::message::Type;
    let ts = |t: SystemTime| {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        (d.as_secs(), d.subsec_nanos())
    };
    let (qs, qn) = ts(rec.query_time);
    let (rs, rn) = ts(rec.response_time);
    let family = match rec.peer.ip() {
        IpAddr::V4(_) => pb::SocketFamily::Inet,
        IpAddr::V6(_) => pb::SocketFamily::Inet6,
    };
    let addr = match rec.peer.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mtype = match (rec.forwarder, response) {
        (false, false) => Type::ClientQuery,
        (false, true) => Type::ClientResponse,
        (true, false) => Type::ForwarderQuery,
        (true, true) => Type::ForwarderResponse,
    };
    // dnstap.proto: query_address is the initiator (the client; for forwarder messages the
    // proxy itself, left out), response_address the responder (the upstream server).
    let mut msg = pb::Message {
        r#type: mtype as i32,
        socket_family: Some(family as i32),
        query_time_sec: Some(qs),
        query_time_nsec: Some(qn),
        ..Default::default()
    };
    if rec.forwarder {
        msg.response_address = Some(addr);
        msg.response_port = Some(u32::from(rec.peer.port()));
    } else {
        msg.query_address = Some(addr);
        msg.query_port = Some(u32::from(rec.peer.port()));
    }
    if response {
        msg.response_time_sec = Some(rs);
        msg.response_time_nsec = Some(rn);
        msg.response_message = Some(rec.response.clone());
    } else {
        msg.query_message = Some(rec.query.clone());
    }
    let d = pb::Dnstap {
        identity: Some(identity.to_vec()),
        version: Some(version.to_vec()),
        r#type: pb::dnstap::Type::Message as i32,
        message: Some(msg),
        ..Default::default()
    };
    let len = d.encoded_len();
    out.extend_from_slice(&(len as u32).to_be_bytes());
    d.encode(out).expect("a Vec grows");
}

fn hostname() -> Vec<u8> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if rc == 0 && end > 0 {
        buf[..end].to_vec()
    } else {
        b"ndots".to_vec()
    }
}
