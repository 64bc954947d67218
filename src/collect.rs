//! `ndots collect`: a Frame Streams receiver for dnstap (DESIGN §9 "dnstap").
//!
//! CoreDNS, unbound, knot-resolver and dnsdist connect over a unix or TCP socket and stream
//! Dnstap messages; each connection is one session (farsightsec/fstrm "Frame Streams protocol"):
//!
//!   bidirectional:   sender READY(types) -> ACCEPT(dnstap) ; START ; data... ; STOP -> FINISH
//!   unidirectional:  START ; data... ; STOP
//!
//! Each connection has its own thread and its own [`Decoder`] (so a query pairs with its response
//! from the same sender), and hands its events to the one [`Tracker`] with
//! [`Tracker::record_batch_wait`]: when the tracker falls behind, the connection stops reading
//! and the sender sees a full socket (back-pressure; senders drop on their side, as they do).
//! A data frame that is not a Dnstap message is counted and skipped; a frame that breaks the
//! framing (an absurd length, a bad control frame) ends that connection only. Nothing here
//! panics on input.

use std::collections::VecDeque;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::amplify::Tracker;
use crate::capture::dnstap::{
    control_frame, parse_control, Decoder, CONTENT_TYPE, CONTROL_ACCEPT, CONTROL_FINISH,
    CONTROL_READY, CONTROL_START, CONTROL_STOP, MAX_CONTROL, MAX_DATA,
};
use crate::capture::{Options, Position};
use crate::metrics as m;

/// Sender connections served at once; more are closed on accept (counted `refused`).
pub const MAX_CONNECTIONS: usize = 1024;
/// Events handed to the tracker at once (sooner when the sender has nothing more buffered).
const BATCH: usize = 512;

/// Where `collect` listens: `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Listen> {
        if let Some(p) = s.strip_prefix("unix:") {
            anyhow::ensure!(!p.is_empty(), "unix: needs a socket path");
            Ok(Listen::Unix(PathBuf::from(p)))
        } else if let Some(a) = s.strip_prefix("tcp:") {
            Ok(Listen::Tcp(crate::config::parse_socket_addr(a, None)?))
        } else {
            anyhow::bail!("{s:?}: expected unix:PATH or tcp:HOST:PORT")
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
            Listen::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// What the receiver has seen, for `/metrics` (set at each scrape) and tests.
#[derive(Default, Debug)]
pub struct Counters {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Sessions by how they ended.
    pub sessions_ok: AtomicU64,
    pub sessions_closed: AtomicU64,
    pub sessions_error: AtomicU64,
    pub sessions_refused: AtomicU64,
    /// Data frames received, and those that were not a readable Dnstap message.
    pub frames: AtomicU64,
    pub malformed: AtomicU64,
    /// Events handed to the tracker.
    pub events: AtomicU64,
}

impl Counters {
    /// Export into the metrics registry (called at scrape time).
    pub fn export(&self) {
        metrics::gauge!(m::COLLECT_CONNECTIONS).set(self.open.load(Ordering::Relaxed) as f64);
        for (result, c) in [
            ("ok", &self.sessions_ok),
            ("closed", &self.sessions_closed),
            ("error", &self.sessions_error),
            ("refused", &self.sessions_refused),
        ] {
            metrics::counter!(m::COLLECT_SESSIONS, "result" => result)
                .absolute(c.load(Ordering::Relaxed));
        }
        metrics::counter!(m::COLLECT_FRAMES).absolute(self.frames.load(Ordering::Relaxed));
        metrics::counter!(m::COLLECT_MALFORMED).absolute(self.malformed.load(Ordering::Relaxed));
    }
}

/// A running receiver. Dropping it stops accepting; open sessions run to their end.
pub struct Collector {
    /// The bound address (the real port when 0 was asked).
    pub local: Listen,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

enum Acceptor {
    Unix(UnixListener),
    Tcp(TcpListener),
}

type Halves = (Box<dyn Read + Send>, Box<dyn Write + Send>);

impl Acceptor {
    fn accept(&self) -> io::Result<Halves> {
        match self {
            Acceptor::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Ok((Box::new(s.try_clone()?), Box::new(s)))
            }
            Acceptor::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                let _ = s.set_nodelay(true);
                Ok((Box::new(s.try_clone()?), Box::new(s)))
            }
        }
    }
}

/// Bind `listen` and serve senders on their own threads, feeding `tracker`. A unix socket path
/// left by an earlier run is replaced.
pub fn start(listen: &Listen, tracker: Tracker, opts: Options) -> io::Result<Collector> {
    let (acceptor, local) = match listen {
        Listen::Unix(p) => {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let l = UnixListener::bind(p)?;
            l.set_nonblocking(true)?;
            (Acceptor::Unix(l), listen.clone())
        }
        Listen::Tcp(a) => {
            let l = TcpListener::bind(a)?;
            l.set_nonblocking(true)?;
            let bound = l.local_addr()?;
            (Acceptor::Tcp(l), Listen::Tcp(bound))
        }
    };
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (c, st) = (counters.clone(), stop.clone());
    std::thread::Builder::new()
        .name("ndots-collect".into())
        .spawn(move || accept_loop(acceptor, tracker, opts, c, st))?;
    Ok(Collector {
        local,
        counters,
        stop,
    })
}

fn accept_loop(
    acceptor: Acceptor,
    tracker: Tracker,
    opts: Options,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let opts = Arc::new(opts);
    while !stop.load(Ordering::Relaxed) {
        let (r, w) = match acceptor.accept() {
            Ok(halves) => halves,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                tracing::warn!("collect: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if counters.open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            counters.open.fetch_sub(1, Ordering::Relaxed);
            counters.sessions_refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let (t, o, c) = (tracker.clone(), opts.clone(), counters.clone());
        let spawned = std::thread::Builder::new()
            .name("ndots-collect-conn".into())
            .spawn(move || {
                let end = Session::new(r, w, &o, &t, &c).run();
                match &end {
                    End::Stopped => c.sessions_ok.fetch_add(1, Ordering::Relaxed),
                    End::Closed => c.sessions_closed.fetch_add(1, Ordering::Relaxed),
                    End::Error(why) => {
                        tracing::info!("collect: a sender's stream ended: {why}");
                        c.sessions_error.fetch_add(1, Ordering::Relaxed)
                    }
                };
                c.open.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            counters.open.fetch_sub(1, Ordering::Relaxed);
            counters.sessions_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// STOP received (and FINISH sent on a bidirectional session).
    Stopped,
    /// The sender closed the connection between frames without STOP.
    Closed,
    /// Framing or handshake error, or I/O error mid-frame.
    Error(String),
}

struct Session<'a> {
    input: BufReader<Box<dyn Read + Send>>,
    output: Box<dyn Write + Send>,
    decoder: Decoder,
    out: VecDeque<Result<crate::event::QueryEvent, crate::capture::Unreadable>>,
    batch: Vec<crate::event::QueryEvent>,
    tracker: &'a Tracker,
    counters: &'a Counters,
    frame_no: u64,
}

impl<'a> Session<'a> {
    fn new(
        r: Box<dyn Read + Send>,
        w: Box<dyn Write + Send>,
        opts: &Options,
        tracker: &'a Tracker,
        counters: &'a Counters,
    ) -> Self {
        Session {
            input: BufReader::with_capacity(256 * 1024, r),
            output: w,
            decoder: Decoder::new(opts),
            out: VecDeque::new(),
            batch: Vec::with_capacity(BATCH),
            tracker,
            counters,
            frame_no: 0,
        }
    }

    fn run(mut self) -> End {
        let end = self.frames();
        // Queries still waiting for their response are reported unanswered.
        self.decoder.finish(&mut self.out);
        self.drain_out();
        self.flush();
        end
    }

    /// Read a u32; `Ok(None)` on a clean end of stream before its first byte.
    fn read_u32(&mut self) -> Result<Option<u32>, String> {
        let mut b = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.input.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err("stream ends inside a frame length".into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(Some(u32::from_be_bytes(b)))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.input
            .read_exact(buf)
            .map_err(|e| format!("stream ends inside a frame: {e}"))
    }

    fn write_control(&mut self, ctype: u32, content_type: Option<&[u8]>) -> Result<(), String> {
        self.output
            .write_all(&control_frame(ctype, content_type))
            .and_then(|()| self.output.flush())
            .map_err(|e| format!("writing a control frame: {e}"))
    }

    fn frames(&mut self) -> End {
        let mut data = Vec::new();
        let mut started = false;
        loop {
            let len = match self.read_u32() {
                Ok(Some(l)) => l as usize,
                Ok(None) => return End::Closed,
                Err(e) => return End::Error(e),
            };
            if len == 0 {
                let (ctype, types) = match self.control() {
                    Ok(c) => c,
                    Err(e) => return End::Error(e),
                };
                match ctype {
                    CONTROL_READY => {
                        // Accept only if dnstap is among the offered types (fstrm: the
                        // receiver answers with the types it supports of those offered).
                        if !types.iter().any(|t| t == CONTENT_TYPE) {
                            return End::Error(
                                "READY does not offer protobuf:dnstap.Dnstap".into(),
                            );
                        }
                        if let Err(e) = self.write_control(CONTROL_ACCEPT, Some(CONTENT_TYPE)) {
                            return End::Error(e);
                        }
                    }
                    CONTROL_START => started = true,
                    CONTROL_STOP => {
                        self.flush();
                        // Only a bidirectional sender waits for FINISH; a unidirectional one
                        // has closed its side, and the write fails harmlessly.
                        let _ = self.write_control(CONTROL_FINISH, None);
                        return End::Stopped;
                    }
                    _ => return End::Error(format!("unexpected control frame type {ctype}")),
                }
                continue;
            }
            if !started {
                return End::Error("data frame before START".into());
            }
            if len > MAX_DATA {
                return End::Error(format!("data frame of {len} bytes is not credible"));
            }
            data.resize(len, 0);
            if let Err(e) = self.read_exact(&mut data) {
                return End::Error(e);
            }
            self.frame_no += 1;
            self.counters.frames.fetch_add(1, Ordering::Relaxed);
            self.decoder
                .frame(&data, Position::Frame(self.frame_no), &mut self.out);
            self.drain_out();
            // Hand over when the batch is full or the sender has nothing more buffered, so
            // events never wait for traffic that may not come.
            if self.batch.len() >= BATCH || self.input.buffer().is_empty() {
                self.flush();
            }
        }
    }

    fn control(&mut self) -> Result<(u32, Vec<Vec<u8>>), String> {
        let len = self
            .read_u32()?
            .ok_or("stream ends inside a control frame")? as usize;
        if !(4..=MAX_CONTROL).contains(&len) {
            return Err(format!("control frame length {len} is not valid"));
        }
        let mut body = vec![0u8; len];
        self.read_exact(&mut body)?;
        parse_control(&body)
    }

    fn drain_out(&mut self) {
        while let Some(item) = self.out.pop_front() {
            match item {
                Ok(ev) => self.batch.push(ev),
                Err(_) => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len() as u64;
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if self.tracker.record_batch_wait(batch) {
            self.counters.events.fetch_add(n, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "unix:/run/dnstap.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/run/dnstap.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:6000".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:6000".parse().unwrap())
        );
        assert!("udp:1.2.3.4:5".parse::<Listen>().is_err());
        assert!("unix:".parse::<Listen>().is_err());
    }
}
