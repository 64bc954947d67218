//! Upstream routing and transport (DESIGN §3).
//!
//! A query goes to the zone with the longest matching suffix; within a zone, servers are tried
//! in order, healthy ones first, each attempt bounded by the zone's timeout. Over UDP an attempt
//! still unanswered after the server's usual round trip is sent again to the same server, from
//! another of its sockets, while the first keeps waiting, and the first acceptable answer is used
//! (`Router::exchange`). Sockets are pooled
//! and long-lived: a few connected UDP sockets per server (the kernel then drops datagrams from
//! any other source address) and a few pipelined TCP connections (RFC 7766 §6.2.1.1), each
//! with a bounded number of queries in flight. A TCP connection whose reply times out is
//! closed and replaced; failed connects back off exponentially; health probes use a connection
//! of their own. Every query
//! gets a fresh random ID, and a reply is accepted only when its ID *and* question match what
//! was sent (RFC 5452 §9.1); anything else is counted and ignored.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

use crate::budget::{MemoryBudget, OwnedCharge, Part};
use crate::config::{Protocol, UpstreamZone};
use crate::metrics as m;
use crate::wire::{self, WireError};

/// Connected UDP sockets per server: more source ports make spoofed replies harder to land
/// (RFC 5452 §4.5) and spread the kernel's per-socket locking.
const UDP_SOCKETS_PER_SERVER: usize = 4;
/// Queries one UDP socket sends before a fresh one (a new random source port) takes its place
/// in the pool. A forged reply must guess the ID and the port of a query in flight (RFC 5452
/// §4.5); ports that never change for the life of the process can be learnt (from
/// `/proc/net/udp` on the node, or by side channels such as SAD DNS's ICMP probing), leaving
/// the 16-bit ID. The old socket keeps reading until its last query is answered.
const UDP_QUERIES_PER_SOCKET: u32 = 512;
/// Attempts in a row on one UDP socket that end unanswered, while the server answers on its
/// other sockets, after which the socket is replaced (`Dispatch::note_unanswered`): behind a
/// Service IP its flow is mapped to one endpoint (kube-proxy, conntrack), and one whose node is
/// gone takes every datagram of the flow. A random loss of 30% ends four in a row once in 123
/// attempts: a new socket sooner than its 512 queries, no harm.
const SILENT_SOCKET_AFTER: u32 = 4;
/// At most one socket of a server is replaced for silence this often: a burst of losses
/// cannot churn sockets (each held open by its queries in flight for up to the timeout).
const SILENT_SOCKET_EVERY: Duration = Duration::from_millis(100);
/// Consecutive failures after which a server is tried after the healthy ones.
const UNHEALTHY_AFTER: u32 = 3;
/// How long an unhealthy server stays at the back of the line before it is trusted again.
const UNHEALTHY_FOR: Duration = Duration::from_secs(5);
/// TCP connections kept open per server; queries are spread over them.
const TCP_CONNS_PER_SERVER: usize = 4;
/// Queries in flight on one TCP connection (RFC 7766 §6.2.1.1 pipelining), bounded so a
/// connection that stalls holds at most this many queries hostage.
const TCP_PIPELINE: usize = 64;
/// Connections one query may try on one server while each closes after answering others
/// (`exchange_tcp`): 256 queries at once to a server that answers one per connection need 64
/// rounds of 4 connections; past this many a query fails over instead.
const TCP_ATTEMPTS: usize = 64;
/// How long a query whose TCP connection failed waits for the connection's reader to finish
/// before judging whether the server answered on it (`TcpConn::answered_before_closing`).
const READ_ALL_WAIT: Duration = Duration::from_millis(100);
/// A server that accepted a reply over TCP this recently is answering: a connection of its that
/// closes before any reply does not back connects off (`Server::closed_under`).
const STILL_ANSWERING: Duration = Duration::from_secs(1);
/// Backoff between failed TCP connects to one server: doubles from MIN up to MAX, and ends at
/// the first connect (or health probe) that succeeds.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Attempts of one exchange waiting at once: one and two sent again (`Router::exchange`).
const ATTEMPTS_AT_ONCE: usize = 3;
/// How long after a server answered SERVFAIL or REFUSED it gets no resends: a server at a
/// concurrency cap (CoreDNS `max_concurrent` answers REFUSED past it) or failing upstream of
/// itself is shedding load, and the queries it is slow on are the very ones a resend repeats
/// (a review: 23% of other clients' queries REFUSED at a cap of 60, none without resends).
const RESEND_HOLD: Duration = Duration::from_secs(5);
/// Attempts one exchange may send again (to the same server): a lost datagram is asked again.
const REASKS: usize = 2;
/// The shortest wait before an attempt is sent again, whatever the server's round trips: a
/// forwarder's upstream answers cached names in a millisecond and recurses for others in tens
/// or hundreds, so a tighter bound would double the upstream's work for every slow name.
const RESEND_MIN_WAIT: Duration = Duration::from_millis(200);
/// The wait before an attempt is sent again to a server with no round trip measured yet
/// (unbound starts an unknown server at 376 ms).
const RESEND_FIRST_WAIT: Duration = Duration::from_millis(400);
/// Bytes an upstream attempt holds while it waits, besides its copy of the query: its boxed
/// future (1,064 bytes; a test checks it fits), the pending entry with the question's name,
/// and its channel. The first attempt of an exchange is in the query's charge
/// (`WAITING_OVERHEAD`); one sent again is charged to the memory budget's `waiting` share,
/// and not sent if it does not fit (the others keep waiting).
pub const ATTEMPT_OVERHEAD: usize = 2048;
/// Largest DNS message (RFC 1035 §4.2.2 two-byte length).
const MAX_MESSAGE: usize = 65535;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {0} timed out")]
    Timeout(SocketAddr),
    #[error("upstream {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("upstream {0} sent an unreadable reply: {1}")]
    Malformed(SocketAddr, WireError),
    #[error("upstream {0} closed the connection")]
    Closed(SocketAddr),
    /// The reply's OPCODE is not the query's, which a server copies (RFC 1035 §4.1.1).
    #[error("upstream {0} answered with another opcode")]
    OpcodeMismatch(SocketAddr),
    /// TC set on a reply over TCP, where nothing limits its size (RFC 7766 §8): the data is
    /// partial and not to be used (RFC 2181 §9).
    #[error("upstream {0} sent a truncated reply over TCP")]
    TruncatedOverTcp(SocketAddr),
    /// An extended RCODE about the proxy's own exchange with the server, not the name.
    #[error("upstream {0} answered extended rcode {1}")]
    ExtendedRcode(SocketAddr, u16),
    #[error("upstream {0}: TCP reconnect backing off after failed connects")]
    Backoff(SocketAddr),
    /// Every TCP query slot to the server stayed taken for the whole timeout: not sent. The
    /// server is answering (slots free as its replies come), so its health is not touched.
    #[error("upstream {0}: every TCP query slot taken for the whole timeout")]
    Busy(SocketAddr),
    /// Still unanswered when another attempt of the same exchange was answered (sent again
    /// after its server's usual round trip, or to another server): abandoned, its pending
    /// entry removed.
    #[error("upstream {0}: another attempt answered first")]
    Overtaken(SocketAddr),
    #[error("no upstream answered")]
    AllFailed,
}

impl UpstreamError {
    fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Io(..) => "io",
            UpstreamError::Malformed(..) => "malformed",
            UpstreamError::Closed(_) => "closed",
            UpstreamError::OpcodeMismatch(_) => "opcode_mismatch",
            UpstreamError::TruncatedOverTcp(_) => "truncated",
            UpstreamError::ExtendedRcode(..) => "extended_rcode",
            UpstreamError::Backoff(_) => "backoff",
            UpstreamError::Busy(_) => "busy",
            UpstreamError::Overtaken(_) => "overtaken",
            UpstreamError::AllFailed => "all_failed",
        }
    }
}

/// A reply accepted from an upstream.
pub struct Reply {
    pub bytes: Vec<u8>,
    pub from: SocketAddr,
    pub info: wire::ResponseInfo,
}

/// The routing table: zones sorted longest first.
pub struct Router {
    zones: Vec<Zone>,
    /// The root zone is the only zone (a plain `--upstream`): every name routes to it, with
    /// no suffix to compare on the cache-hit path.
    root_only: bool,
    /// Charged for each attempt sent again (`ATTEMPT_OVERHEAD`), in its `waiting` share: the
    /// proxy's budget (`with_budget`), else one no test or tool reaches.
    budget: Arc<MemoryBudget>,
}

pub struct Zone {
    /// Lowercase wire form of the zone name.
    wire_name: Vec<u8>,
    /// `cluster.local.`; the `zone` metric label.
    pub label: Arc<str>,
    servers: Vec<Arc<Server>>,
    protocol: Protocol,
    timeout: Duration,
    /// The servers answer alike (`UpstreamZone::equivalent`): a resend goes to the next one.
    equivalent: bool,
    resends: ResendBudget,
}

impl Zone {
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }
}

/// How many attempts a zone may send again in a second: `RESENDS_FLOOR`, and one for every
/// `RESENDS_PER` queries sent that second. Without a bound, an upstream slowed by load (every
/// reply later than the wait) would get each query up to three times, and more load (a retry
/// storm); with it, at most 10 a second and a fifth more (measured: 1.203 datagrams a query at
/// 1,000 queries a second, all slower than the wait). Lost datagrams, a few in a hundred, are
/// all asked again. Envoy's retry budgets and Finagle's bound retries the same way.
#[derive(Default)]
struct ResendBudget {
    /// The second (`clock_ms() / 1000`) the counts are for.
    second: AtomicU64,
    firsts: AtomicU32,
    resends: AtomicU32,
}

const RESENDS_FLOOR: u32 = 10;
const RESENDS_PER: u32 = 5;

impl ResendBudget {
    /// A new second starts the counts again. Racy by a few counts at the turn of a second,
    /// which is all a budget needs.
    fn roll(&self) {
        let now = clock_ms() / 1000;
        let was = self.second.load(Ordering::Relaxed);
        if was != now
            && self
                .second
                .compare_exchange(was, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.firsts.store(0, Ordering::Relaxed);
            self.resends.store(0, Ordering::Relaxed);
        }
    }

    fn first_sent(&self) {
        self.roll();
        self.firsts.fetch_add(1, Ordering::Relaxed);
    }

    /// Take one resend if the second has one left. One compare-and-swap: a count taken and
    /// given back could be given back after a new second had reset it, and wrap.
    fn take(&self) -> bool {
        self.roll();
        let allowed = RESENDS_FLOOR + self.firsts.load(Ordering::Relaxed) / RESENDS_PER;
        self.resends
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < allowed).then_some(n + 1)
            })
            .is_ok()
    }
}

impl Router {
    pub fn new(zones: &[UpstreamZone]) -> anyhow::Result<Router> {
        let mut out = Vec::new();
        for z in zones {
            let mut wire_name = Vec::new();
            wire::encode_name(&z.zone, &mut wire_name)
                .map_err(|e| anyhow::anyhow!("zone {}: {e}", z.zone))?;
            out.push(Zone {
                wire_name,
                label: Arc::from(z.zone.as_str()),
                servers: z
                    .servers
                    .iter()
                    .map(|a| Arc::new(Server::new(*a)))
                    .collect(),
                protocol: z.protocol,
                timeout: z.timeout,
                equivalent: z.equivalent,
                resends: ResendBudget::default(),
            });
        }
        out.sort_by_key(|z| std::cmp::Reverse(z.wire_name.len()));
        let root_only = matches!(&out[..], [z] if z.wire_name == [0]);
        Ok(Router {
            zones: out,
            root_only,
            budget: Arc::new(MemoryBudget::unbounded()),
        })
    }

    /// Charge attempts sent again to `budget` (the proxy's, kept across reloads).
    pub fn with_budget(mut self, budget: Arc<MemoryBudget>) -> Router {
        self.budget = budget;
        self
    }

    /// The zone a query name (wire form, any case) routes to: the longest suffix on a label
    /// boundary. `None` when no zone covers it (no root zone configured).
    pub fn route(&self, qname: &[u8]) -> Option<usize> {
        if self.root_only {
            return Some(0); // every name ends in the root
        }
        let mut off = 0;
        loop {
            let rest = &qname[off..];
            if let Some(i) = self
                .zones
                .iter()
                .position(|z| wire::names_equal(&z.wire_name, rest))
            {
                return Some(i);
            }
            let len = *rest.first()? as usize;
            if len == 0 {
                return None;
            }
            off += 1 + len;
            if off >= qname.len() {
                return None;
            }
        }
    }

    pub fn zone(&self, i: usize) -> &Zone {
        &self.zones[i]
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// Send `query` (a client's message; its ID is replaced per attempt) to the zone's servers
    /// until one gives an acceptable reply.
    ///
    /// Servers are asked in order, healthy ones first; the next is asked only when one fails
    /// (a timeout, an error, SERVFAIL or REFUSED) with none of its attempts left waiting: the servers of a zone are for
    /// failover, and need not be equivalent (an internal resolver first, a public one second:
    /// racing them gave the public one's NXDOMAIN for internal names). In a UDP zone an
    /// attempt still unanswered after its server's usual round trip (`Server::resend_wait`)
    /// is also sent again to the same server, from another of its sockets, while it keeps
    /// waiting (a datagram lost, or a kube-proxy path to a dead endpoint behind a Service IP);
    /// the first acceptable answer is used and the attempts still waiting are abandoned
    /// (`overtaken`). In a zone of equivalent servers the resend goes to the next server
    /// instead (`next_equivalent`), and a server overtaken by another's answer has failed.
    /// At most `ATTEMPTS_AT_ONCE` wait at once, `REASKS` are sent per query,
    /// within the zone's resend budget, each within the zone's timeout, and the exchange
    /// within the timeout times the server count (a TCP retry of a truncated answer aside).
    /// TCP zones ask once per server: TCP retransmits a lost segment itself.
    pub async fn exchange(&self, zone: usize, query: &[u8]) -> Result<Reply, UpstreamError> {
        let z = &self.zones[zone];
        let q = wire::parse_question(query)
            .map_err(|e| UpstreamError::Malformed(z.servers[0].addr, e))?;
        if m::coredns_names() && z.servers.iter().all(|s| s.is_down()) {
            // CoreDNS `forward`: every upstream failing, one is tried anyway.
            metrics::counter!(m::COREDNS_FORWARD_HEALTHCHECK_BROKEN).increment(1);
        }
        let mut order: Vec<&Arc<Server>> = z.servers.iter().collect();
        // Stable sort: healthy servers first, each group in configured order.
        order.sort_by_key(|s| !s.is_healthy());
        if z.protocol == Protocol::Tcp {
            // A healthy server with every TCP query slot taken goes after the healthy ones
            // with room, rather than a wait there behind hundreds of queries; still before
            // the unhealthy ones, and tried (waited for) in its turn. Not a failure: it is
            // answering as fast as it can. Decided before any wait, so the request's future
            // holds no more state.
            order.sort_by_key(|s| (!s.is_healthy(), s.tcp_slots.available_permits() == 0));
        }
        let recursive = query.get(2).is_some_and(|f| f & 0x01 != 0);
        let resending = z.protocol == Protocol::Udp;
        let deadline = tokio::time::Instant::now() + z.timeout * order.len() as u32;
        let shared = Shared::default();
        let mut asked = vec![Asked::No; order.len()];
        // When each server's time is up: its resends end with its first attempt, so the next
        // server still gets its whole timeout.
        let mut until = vec![deadline; order.len()];
        let mut waiting: [Option<Waiting<'_>>; ATTEMPTS_AT_ONCE] = Default::default();
        let mut resends = 0u32;
        // The server of the attempt sent last: an equivalent zone's resend goes to the next.
        let mut latest = 0;
        let mut resend_timer = std::pin::pin!(tokio::time::sleep_until(deadline));
        let mut resend_armed = false;
        let mut last_err = UpstreamError::AllFailed;
        let mut fallback: Option<Reply> = None;
        let mut next = Some((0, false));
        z.resends.first_sent();
        loop {
            if let Some((i, resend)) = next.take() {
                let charge = if waiting.iter().all(Option::is_none) {
                    // One attempt at a time is in the query's own charge (`WAITING_OVERHEAD`):
                    // the first, and a failover after the others ended.
                    None
                } else {
                    let bytes = ATTEMPT_OVERHEAD + query.len();
                    match OwnedCharge::try_new_quietly(&self.budget, Part::Waiting, bytes) {
                        Some(c) => Some(c),
                        None => continue, // no room: the attempts already sent keep waiting
                    }
                };
                let Some(slot) = waiting.iter_mut().find(|w| w.is_none()) else {
                    continue;
                };
                // Sequential TCP attempts keep their whole timeout each, as before (one may
                // first wait that long for a slot).
                let now = tokio::time::Instant::now();
                let timeout = if !resending {
                    z.timeout
                } else if resend && asked[i] != Asked::No {
                    until[i] - now
                } else {
                    z.timeout.min(deadline - now)
                };
                if timeout.is_zero() || (resend && !z.resends.take()) {
                    continue;
                }
                let server = order[i];
                // Which of the query's attempts at a server this is: 0 the first (or a
                // failover), then each resend.
                let nth = if resend { resends as usize + 1 } else { 0 };
                *slot = Some(Waiting {
                    reply: Box::pin(server.attempt(z.protocol, query, &q, timeout, nth, &shared)),
                    server: i,
                    polled: false,
                    since: now,
                    _charge: charge,
                });
                if asked[i] == Asked::No {
                    asked[i] = Asked::Yes;
                    until[i] = now + timeout;
                }
                resends += resend as u32;
                latest = i;
                resend_armed = false;
                if resending && resends < REASKS as u32 {
                    let wait = server.resend_wait(z.timeout) * (1 << resends);
                    let at = tokio::time::Instant::now() + wait;
                    if at < until[i] {
                        resend_timer.as_mut().reset(at);
                        resend_armed = true;
                    }
                }
            }
            if waiting.iter().all(Option::is_none) {
                break;
            }
            let done = std::future::poll_fn(|cx| {
                for (k, w) in waiting.iter_mut().enumerate() {
                    if let Some(w) = w {
                        w.polled = true;
                        if let std::task::Poll::Ready(r) =
                            std::future::Future::poll(w.reply.as_mut(), cx)
                        {
                            return std::task::Poll::Ready(Some((k, r)));
                        }
                    }
                }
                if resend_armed && std::future::Future::poll(resend_timer.as_mut(), cx).is_ready() {
                    return std::task::Poll::Ready(None);
                }
                std::task::Poll::Pending
            })
            .await;
            let Some((k, result)) = done else {
                // Unanswered for the server's usual round trip: ask it again, alongside.
                resend_armed = false;
                if !shared.truncated.load(Ordering::Relaxed) {
                    next = if z.equivalent {
                        next_equivalent(&order, latest, &asked, &until)
                            .or_else(|| reask_target(&order, &waiting))
                    } else {
                        reask_target(&order, &waiting)
                    }
                    .map(|i| (i, true));
                }
                continue;
            };
            let i = waiting[k].take().expect("polled").server;
            let server = order[i];
            match result {
                Ok(reply) => {
                    let rcode = reply.info.rcode;
                    let shed =
                        rcode == wire::RCODE_SERVFAIL as u16 || rcode == wire::RCODE_REFUSED as u16;
                    // Shedding load, unless RD was clear: many resolvers refuse those by policy
                    // (unbound without `allow_snoop`), which says nothing of the server's load.
                    if shed && recursive {
                        server
                            .last_shed_ms
                            .store(clock_ms().max(1), Ordering::Relaxed);
                    }
                    // SERVFAIL and REFUSED may be one server's trouble: try the next, and keep
                    // this reply in case every server says the same. Not for a query with RD
                    // clear: many resolvers refuse those by policy (unbound without
                    // `allow_snoop`), which says nothing of the server's health.
                    if shed && recursive {
                        note_failure_once(server, &mut asked[i]);
                        fallback.get_or_insert(reply);
                        // Its other attempts keep waiting: over another source port, behind a
                        // Service IP, each may reach another endpoint (one at its concurrency
                        // cap refuses; another answers). Dropping them gave a resend's REFUSED
                        // to every query whose first attempt was about to answer.
                    } else {
                        server.note_success();
                        for w in waiting.iter_mut() {
                            if let Some(j) = w.as_ref().map(|w| w.server) {
                                // Of equivalent servers, one another overtook is behind: a
                                // dead first server goes down after three such queries. Only
                                // when its attempt was sent, waited its resend wait (not one
                                // about to answer a slow name), and was not on its TCP retry
                                // of a truncated answer (it answered).
                                let behind = w.as_ref().is_some_and(|w| {
                                    w.polled && w.since.elapsed() >= order[j].resend_wait(z.timeout)
                                });
                                if z.equivalent
                                    && j != i
                                    && behind
                                    && !shared.truncated.load(Ordering::Relaxed)
                                {
                                    note_failure_once(order[j], &mut asked[j]);
                                }
                                abandon(w.take(), order[j]);
                            }
                        }
                        return Ok(reply);
                    }
                }
                Err(e) => {
                    // Not the server's health: every slot taken (it answers as fast as it can),
                    // or TC over TCP, which a server sets on an answer over 64 KiB (a headless
                    // Service with thousands of endpoints): a property of the name.
                    if !matches!(
                        e,
                        UpstreamError::Busy(_) | UpstreamError::TruncatedOverTcp(_)
                    ) {
                        note_failure_once(server, &mut asked[i]);
                    }
                    server.count_failure(&e);
                    last_err = e;
                }
            }
            // Failed: the next server not yet asked, at once, once this one has no attempt
            // left waiting (failover, never a race).
            if waiting.iter().flatten().all(|w| w.server != i) {
                next = asked
                    .iter()
                    .position(|a| *a == Asked::No)
                    .map(|j| (j, false));
            }
        }
        fallback.ok_or(last_err)
    }
}

/// How a TCP connection that failed under a query had fared (`Server::closed_under`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// It had answered a query of ours: the server closes after an answer, or a few.
    AfterAnswering,
    /// It answered nothing, while the server answers on other connections.
    Unanswered,
    /// It answered nothing, and neither does the server elsewhere.
    ServerSilent,
}

/// What the attempts of one exchange tell it.
#[derive(Default)]
struct Shared {
    /// The local port of each UDP attempt, by its place among the query's attempts: a resend
    /// goes out from a socket none of them used.
    ports: [std::sync::atomic::AtomicU16; 1 + REASKS],
    /// A UDP reply came truncated and its attempt went on over TCP: the server is answering,
    /// and asking again over UDP would only be truncated again.
    truncated: std::sync::atomic::AtomicBool,
}

/// Where a server stands in one exchange.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Asked {
    No,
    Yes,
    /// A failure noted against its health: once per exchange, however many of its attempts
    /// failed (three lost datagrams of one query are one failed query).
    Failed,
}

fn note_failure_once(server: &Server, asked: &mut Asked) {
    if *asked != Asked::Failed {
        server.note_failure();
        *asked = Asked::Failed;
    }
}

/// An attempt still waiting when another answered: counted as a request that got no answer
/// used (`overtaken`; not against its server's health, which answered or is being asked), if
/// it was sent (polled once: its request is counted there).
fn abandon(w: Option<Waiting<'_>>, server: &Server) {
    if w.is_some_and(|w| w.polled) {
        server.count_failure(&UpstreamError::Overtaken(server.addr));
    }
}

/// The server an attempt unanswered for its usual round trip is asked again: the one whose
/// attempt waits (the first in order, if a failover left two), unless it is failing (three
/// failures in a row: a dead zone costs no more datagrams than one per server) or shedding
/// load (SERVFAIL or REFUSED lately, `RESEND_HOLD`).
fn reask_target(order: &[&Arc<Server>], waiting: &[Option<Waiting<'_>>]) -> Option<usize> {
    (0..order.len())
        .filter(|&i| waiting.iter().flatten().any(|w| w.server == i))
        .find(|&i| !order[i].is_down() && !order[i].shedding())
}

/// The server an attempt unanswered for its usual round trip is asked again in a zone of
/// equivalent servers: the next after `latest` in order that is neither failing nor shedding
/// load, else `latest` itself (a zone of one server, or all the others failing); none: the
/// rule of other zones (`reask_target`).
fn next_equivalent(
    order: &[&Arc<Server>],
    latest: usize,
    asked: &[Asked],
    until: &[tokio::time::Instant],
) -> Option<usize> {
    let n = order.len();
    let now = tokio::time::Instant::now();
    // Not one that already failed this query (an ICMP error, say: its resend would fail the
    // same way), nor one whose time for it is up.
    (1..=n).map(|k| (latest + k) % n).find(|&i| {
        !order[i].is_down()
            && !order[i].shedding()
            && asked[i] != Asked::Failed
            && (asked[i] == Asked::No || until[i] > now)
    })
}

/// An attempt of `Router::exchange` waiting for its reply. Dropped when another attempt is
/// answered first (its pending entry kept for the late reply, `Registration`).
struct Waiting<'a> {
    reply: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Reply, UpstreamError>> + Send + 'a>,
    >,
    /// Its server: an index into the exchange's order.
    server: usize,
    /// Polled at least once: its query was sent (and counted in `requests`).
    polled: bool,
    /// When it was made, just before its first poll sent it.
    since: tokio::time::Instant,
    /// The memory budget's charge for an attempt sent alongside another (`ATTEMPT_OVERHEAD`).
    _charge: Option<OwnedCharge>,
}

impl Router {
    /// Send `query` to one server of a zone, without failover and without touching its
    /// health (the forwarding-loop probe). Returns the server's address; the reply, if any, is
    /// not needed.
    pub async fn exchange_with(&self, zone: usize, server: usize, query: &[u8]) -> SocketAddr {
        let z = &self.zones[zone];
        let s = &z.servers[server];
        if let Ok(q) = wire::parse_question(query) {
            let result = match z.protocol {
                Protocol::Tcp => s.probe_tcp(query, &q, z.timeout).await,
                Protocol::Udp => {
                    let port = std::sync::atomic::AtomicU16::new(0);
                    s.exchange_udp(query, &q, z.timeout, &[], &port).await
                }
            };
            if let Err(e) = &result {
                s.count_failure(e);
            }
        }
        s.addr
    }

    /// `/readyz`: ready once some upstream has answered, and while every zone has at least one
    /// server that is not failing. A node whose cluster DNS is unreachable should say so, even
    /// though cached names keep answering (serve-stale).
    pub fn readiness(&self) -> Result<(), String> {
        for z in &self.zones {
            if z.servers.iter().all(|s| s.is_down()) {
                let addrs: Vec<&str> = z.servers.iter().map(|s| s.label.as_str()).collect();
                return Err(format!(
                    "every upstream of zone {} is failing ({})",
                    z.label,
                    addrs.join(", ")
                ));
            }
        }
        if !self.any_answered() {
            return Err("no upstream has answered yet".into());
        }
        Ok(())
    }

    /// Each server with its state, for the `ndots_upstream_healthy` gauge.
    pub fn servers(&self) -> impl Iterator<Item = (&str, bool)> {
        self.zones
            .iter()
            .flat_map(|z| z.servers.iter().map(|s| (s.label.as_str(), !s.is_down())))
    }

    /// Ask every server that has never answered, or is failing, for its zone's SOA: a server
    /// comes back as soon as it answers again, not only when a client's query happens to be
    /// routed to it (CoreDNS `forward` checks health the same way). All probes run at once,
    /// each bounded by its zone's timeout.
    pub async fn probe_unhealthy(&self) {
        let mut probes = tokio::task::JoinSet::new();
        for z in &self.zones {
            let mut query = Vec::new();
            let id = rand::rng().random();
            if wire::build_query(id, &z.label, wire::TYPE_SOA, true, &mut query).is_err() {
                continue;
            }
            let Ok(q) = wire::parse_question(&query) else {
                continue;
            };
            for server in &z.servers {
                if server.ever_answered.load(Ordering::Relaxed) && !server.is_down() {
                    continue;
                }
                let (server, query, protocol, timeout) =
                    (server.clone(), query.clone(), z.protocol, z.timeout);
                probes.spawn(async move {
                    let result = match protocol {
                        Protocol::Tcp => server.probe_tcp(&query, &q, timeout).await,
                        Protocol::Udp => {
                            let port = std::sync::atomic::AtomicU16::new(0);
                            server.exchange_udp(&query, &q, timeout, &[], &port).await
                        }
                    };
                    // A probe is a request like any other (`count_request`): its failure
                    // is counted too, or failures would lag requests for a dead server.
                    if let Err(e) = &result {
                        server.count_failure(e);
                    }
                    match result {
                        Ok(r)
                            if r.info.rcode != wire::RCODE_SERVFAIL as u16
                                && r.info.rcode != wire::RCODE_REFUSED as u16 =>
                        {
                            server.note_success()
                        }
                        _ => {
                            server.note_failure();
                            if m::coredns_names() {
                                metrics::counter!(m::COREDNS_FORWARD_HEALTHCHECK_FAILURES, "to" => server.label.clone())
                                    .increment(1);
                            }
                        }
                    }
                });
            }
        }
        while probes.join_next().await.is_some() {}
    }

    /// True when at least one server answered since start.
    pub fn any_answered(&self) -> bool {
        self.zones.iter().any(|z| {
            z.servers
                .iter()
                .any(|s| s.ever_answered.load(Ordering::Relaxed))
        })
    }
}

/// Process-wide start for the health clock.
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

pub struct Server {
    pub addr: SocketAddr,
    /// This server's number, never reused in the process: the key of its metric handles in
    /// each thread's memo (`m::cached_counter`). Not its address in memory: a reload frees the
    /// old servers, and a new one (another `to` label) may be allocated at the same address
    /// and would be handed the old one's handles.
    id: u64,
    label: String,
    udp: Mutex<Vec<Arc<UdpConn>>>,
    next_udp: AtomicUsize,
    /// Pooled TCP connections, at most `TCP_CONNS_PER_SERVER`.
    tcp: tokio::sync::Mutex<Vec<Arc<TcpConn>>>,
    /// Query slots over all of this server's TCP connections.
    tcp_slots: tokio::sync::Semaphore,
    /// Failed TCP connects in a row, and when the next connect may be tried (backoff).
    connect_failures: AtomicU32,
    next_connect_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    last_failure_ms: AtomicU64,
    ever_answered: std::sync::atomic::AtomicBool,
    /// When a reply over TCP was last accepted (`clock_ms`): `Server::closed_under`.
    last_tcp_answer_ms: AtomicU64,
    /// When it last answered SERVFAIL or REFUSED (`clock_ms`; 0: never): `RESEND_HOLD`.
    last_shed_ms: AtomicU64,
    /// What its UDP sockets share: round trips (a late reply to an abandoned attempt is a
    /// sample too) and when one last took a reply.
    paths: Arc<UdpPaths>,
}

/// What the UDP sockets of one server share: each is a path of its own (its source port; behind
/// a Service IP, its own endpoint), the server's figures are over them all.
struct UdpPaths {
    rtt: RoundTrip,
    /// When one of them last took a reply (`clock_ms`).
    last_reply_ms: AtomicU64,
    /// When one was last replaced for silence (`clock_ms`, 0: never; `SILENT_SOCKET_EVERY`).
    last_silenced_ms: AtomicU64,
}

impl UdpPaths {
    fn new() -> UdpPaths {
        UdpPaths {
            rtt: RoundTrip::new(),
            last_reply_ms: AtomicU64::new(0),
            last_silenced_ms: AtomicU64::new(0),
        }
    }
}

/// A server's smoothed round trip and its mean deviation, in microseconds (RFC 6298 §2;
/// `u32::MAX`: none measured yet). Each attempt has its own ID, so every sample is
/// unambiguous (Karn's problem does not arise). Updated without a lock: a lost update only
/// delays the estimate by a sample.
struct RoundTrip {
    srtt_us: AtomicU32,
    rttvar_us: AtomicU32,
}

impl RoundTrip {
    fn new() -> RoundTrip {
        RoundTrip {
            srtt_us: AtomicU32::new(u32::MAX),
            rttvar_us: AtomicU32::new(0),
        }
    }

    /// One round trip into the estimate (RFC 6298 §2.2, §2.3: gains 1/8, 1/4).
    fn sample(&self, rtt: Duration) {
        let r = rtt.as_micros().min(u32::MAX as u128 - 1) as u32;
        let srtt = self.srtt_us.load(Ordering::Relaxed);
        if srtt == u32::MAX {
            self.srtt_us.store(r, Ordering::Relaxed);
            self.rttvar_us.store(r / 2, Ordering::Relaxed);
            return;
        }
        let var = self.rttvar_us.load(Ordering::Relaxed);
        self.rttvar_us
            .store(var - var / 4 + srtt.abs_diff(r) / 4, Ordering::Relaxed);
        self.srtt_us
            .store(srtt - srtt / 8 + r / 8, Ordering::Relaxed);
    }

    /// The retransmission timeout, smoothed round trip plus four deviations; None before a
    /// sample.
    fn rto(&self) -> Option<Duration> {
        let srtt = self.srtt_us.load(Ordering::Relaxed);
        let var = self.rttvar_us.load(Ordering::Relaxed) as u64;
        (srtt != u32::MAX).then(|| Duration::from_micros(srtt as u64 + 4 * var))
    }
}

impl Server {
    fn new(addr: SocketAddr) -> Server {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Server {
            addr,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            label: addr.to_string(),
            udp: Mutex::new(Vec::new()),
            next_udp: AtomicUsize::new(0),
            tcp: tokio::sync::Mutex::new(Vec::new()),
            tcp_slots: tokio::sync::Semaphore::new(TCP_CONNS_PER_SERVER * TCP_PIPELINE),
            connect_failures: AtomicU32::new(0),
            next_connect_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            last_failure_ms: AtomicU64::new(0),
            ever_answered: false.into(),
            last_tcp_answer_ms: AtomicU64::new(0),
            last_shed_ms: AtomicU64::new(0),
            paths: Arc::new(UdpPaths::new()),
        }
    }

    /// Whether it answered SERVFAIL or REFUSED to a recursive query within `RESEND_HOLD`: no
    /// resends then.
    fn shedding(&self) -> bool {
        let at = self.last_shed_ms.load(Ordering::Relaxed);
        at != 0 && clock_ms().saturating_sub(at) < RESEND_HOLD.as_millis() as u64
    }

    /// How long an attempt at this server waits before it is sent again (`Router::exchange`):
    /// its retransmission timeout, smoothed round trip plus four deviations (RFC 6298 §2),
    /// at least `RESEND_MIN_WAIT`, at most half the zone's timeout.
    fn resend_wait(&self, timeout: Duration) -> Duration {
        let rto = self
            .paths
            .rtt
            .rto()
            .map_or(RESEND_FIRST_WAIT, |r| r.max(RESEND_MIN_WAIT));
        rto.min(timeout / 2)
    }

    /// The `nth` attempt of a query at this server (0: its first): over UDP (on a socket the
    /// query's earlier attempts did not use), a truncated reply asked again over TCP (RFC 7766
    /// §5, RFC 1035 §4.2.1); or over TCP.
    async fn attempt(
        &self,
        protocol: Protocol,
        query: &[u8],
        q: &wire::Question,
        timeout: Duration,
        nth: usize,
        shared: &Shared,
    ) -> Result<Reply, UpstreamError> {
        match protocol {
            Protocol::Tcp => self.exchange_tcp(query, q, timeout).await,
            Protocol::Udp => match self
                .exchange_udp(query, q, timeout, &shared.ports[..nth], &shared.ports[nth])
                .await
            {
                Ok(r) if r.info.header.tc() => {
                    shared.truncated.store(true, Ordering::Relaxed);
                    self.exchange_tcp(query, q, timeout).await
                }
                other => other,
            },
        }
    }

    fn id(&self) -> u64 {
        self.id
    }

    fn is_healthy(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) < UNHEALTHY_AFTER
            || clock_ms().saturating_sub(self.last_failure_ms.load(Ordering::Relaxed))
                > UNHEALTHY_FOR.as_millis() as u64
    }

    /// Failing now: the last `UNHEALTHY_AFTER` attempts failed. Unlike `is_healthy`, this does
    /// not forgive after `UNHEALTHY_FOR`; only an answer clears it.
    fn is_down(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) >= UNHEALTHY_AFTER
    }

    fn note_failure(&self) {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        self.last_failure_ms.store(clock_ms(), Ordering::Relaxed);
    }

    fn note_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// The server's port was unreachable (ICMP, reported on `conn`): the queries waiting on
    /// that socket fail now and fail over (`Dispatch::fail_all`).
    fn port_unreachable(&self, conn: &Arc<UdpConn>) {
        conn.dispatch.fail_all();
    }

    /// One failed attempt, in `ndots_upstream_failures_total` by its reason.
    fn count_failure(&self, e: &UpstreamError) {
        m::cached_counter(m::label_key(40, &[self.id(), e.reason().as_ptr() as u64]), || {
            metrics::counter!(m::UPSTREAM_FAILURES, "to" => self.label.clone(), "reason" => e.reason())
        })
        .increment(1);
    }

    fn count_request(&self, proto: &'static str) {
        // Keyed by the label's text, not its length: "udp" and "tcp" are both 3 bytes long, and
        // a thread that counted one handed its handle to the other (a UDP zone's TC retries
        // over TCP counted as `proto="udp"`).
        m::cached_counter(m::label_key(41, &[self.id(), proto.as_ptr() as u64]), || {
            metrics::counter!(m::UPSTREAM_REQUESTS, "to" => self.label.clone(), "proto" => proto)
        })
        .increment(1);
        if m::coredns_names() {
            m::cached_counter(
                m::label_key(65, &[self.id()]),
                || metrics::counter!(m::COREDNS_FORWARD_REQUESTS, "to" => self.label.clone()),
            )
            .increment(1);
        }
    }

    fn observe(&self, started: Instant, rcode: u16) {
        let elapsed = started.elapsed().as_secs_f64();
        let rcode_label = || crate::event::rcode_name(rcode).into_owned();
        m::record_cached(
            m::label_key(42, &[self.id(), rcode as u64]),
            || metrics::histogram!(m::UPSTREAM_REQUEST_DURATION, "to" => self.label.clone(), "rcode" => rcode_label()),
            elapsed,
        );
        if m::coredns_names() {
            m::record_cached(
                m::label_key(66, &[self.id(), rcode as u64]),
                || metrics::histogram!(m::COREDNS_FORWARD_DURATION, "to" => self.label.clone(), "rcode" => rcode_label()),
                elapsed,
            );
            m::cached_counter(m::label_key(67, &[self.id(), rcode as u64]), || {
                metrics::counter!(m::COREDNS_FORWARD_RESPONSES, "to" => self.label.clone(), "rcode" => rcode_label())
            })
            .increment(1);
        }
    }

    /// A pooled socket, round-robin, other than those on the local ports in `avoid` (the
    /// pool has more sockets than a query has attempts).
    async fn udp_conn(
        &self,
        avoid: &[std::sync::atomic::AtomicU16],
    ) -> Result<Arc<UdpConn>, UpstreamError> {
        {
            let mut pool = self.udp.lock();
            if pool.len() >= UDP_SOCKETS_PER_SERVER {
                let mut i = self.next_udp.fetch_add(1, Ordering::Relaxed) % pool.len();
                let used = |port: u16| avoid.iter().any(|p| p.load(Ordering::Relaxed) == port);
                for _ in 0..pool.len() {
                    if !used(pool[i].port) {
                        break;
                    }
                    i = (i + 1) % pool.len();
                }
                if pool[i].sent.fetch_add(1, Ordering::Relaxed) < UDP_QUERIES_PER_SOCKET
                    && !pool[i].dispatch.retired.load(Ordering::Relaxed)
                {
                    return Ok(pool[i].clone());
                }
                // Retired: in-flight queries hold it until their replies come. Marked, so the
                // losses of its last queries do not retire it again for silence (counted).
                pool[i].dispatch.retired.store(true, Ordering::Relaxed);
                pool.swap_remove(i);
            }
        }
        let conn = UdpConn::connect(self.addr, self.id(), self.paths.clone())
            .await
            .map_err(|e| UpstreamError::Io(self.addr, e))?;
        let mut pool = self.udp.lock();
        if pool.len() < UDP_SOCKETS_PER_SERVER {
            pool.push(conn.clone());
        } else {
            // Opened while another filled the pool: used once, never pooled.
            conn.dispatch.retired.store(true, Ordering::Relaxed);
        }
        Ok(conn)
    }

    /// One query over UDP, on a pooled socket other than those on the local ports in `avoid`
    /// (the query's earlier attempts', when it is asked again: behind a Service IP, kube-proxy
    /// maps another source port to an endpoint of its own choosing, perhaps not the one that
    /// did not answer; round-robin alone gave a resend its first attempt's socket 23% of the
    /// time, and avoiding only the last attempt's gave the second resend the first's socket).
    /// The port used goes into `used`. Not a socket of its own: one per resend took 300-470
    /// file descriptors and thousands of conntrack entries under a lossy upstream.
    async fn exchange_udp(
        &self,
        query: &[u8],
        q: &wire::Question,
        timeout: Duration,
        avoid: &[std::sync::atomic::AtomicU16],
        used: &std::sync::atomic::AtomicU16,
    ) -> Result<Reply, UpstreamError> {
        let conn = self.udp_conn(avoid).await?;
        used.store(conn.port, Ordering::Relaxed);
        self.count_request("udp");
        let started = Instant::now();
        let (registration, rx) = conn.dispatch.register(query, q, true);
        let mut msg = query.to_vec();
        wire::set_id(&mut msg, registration.id);
        if let Err(e) = conn.socket.send(&msg).await {
            registration.cancel();
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                // The port-unreachable error the reader waits for, taken by this send (the
                // kernel reports it once, to whichever call comes first).
                self.port_unreachable(&conn);
                return Err(UpstreamError::Closed(self.addr));
            }
            return Err(UpstreamError::Io(self.addr, e));
        }
        let bytes = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => return Err(UpstreamError::Closed(self.addr)),
            Err(_) => {
                registration.cancel();
                return Err(UpstreamError::Timeout(self.addr));
            }
        };
        self.finish(bytes, query, started, false)
    }

    /// One query over TCP. A connection whose reply does not come within the timeout is closed
    /// and taken out of the pool, so the next query opens a fresh one: a server that vanished
    /// without a RST (a deleted pod) costs one timeout, not every query until the kernel gives
    /// up on the socket.
    async fn exchange_tcp(
        &self,
        query: &[u8],
        q: &wire::Question,
        timeout: Duration,
    ) -> Result<Reply, UpstreamError> {
        // Bounded pipelining: at most TCP_CONNS_PER_SERVER x TCP_PIPELINE queries in flight to
        // one server; beyond that a query waits for a slot, first come first served, for at
        // most the timeout (then it fails unsent: `Busy`).
        let _slot = tokio::time::timeout(timeout, self.tcp_slots.acquire())
            .await
            .map_err(|_| UpstreamError::Busy(self.addr))?
            .map_err(|_| UpstreamError::Closed(self.addr))?;
        // The server's timeout runs from here: a query sent with what its wait left of it
        // timed out after the server had done the work (256 of 600 answered, 574 sent).
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        // A query whose connection closed under it is sent again on another: once whatever
        // the connection did (a pooled one may have been closed by the server while idle, RFC
        // 7766 §6.2.3, and we only learn it when writing), and again while the closed one had
        // answered a query of ours: a server that closes after each answer, or every few
        // (nsd's `tcp-query-count`), is answering, and never read the queries pipelined behind
        // the answered one. Bounded by the timeout and by `TCP_ATTEMPTS`. Then on connections of
        // its own (`alone_twice`), when its second closed before answering anything while the
        // server answers over TCP on others: a server resetting a connection with unread
        // queries in it may discard the answer it had written (6 of 256 queries failed so in
        // a probe), or the answer was not read within `READ_ALL_WAIT` on a loaded machine.
        // Alone, a query the server cannot take (one that kills its connection) kills only
        // that one: retried on pooled connections, other queries answered on them first made
        // its deaths read as answered, and it killed up to 14 (a review: 103 other queries
        // SERVFAIL at 50 such queries a second among 1,500).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let lease = self.tcp_conn(deadline).await?;
            if attempt == 1 {
                // Once per query, however many connections it takes: most of the writes
                // into a connection the server then closes are never read (a server that read
                // one before closing unanswered did read it twice; it is still counted once).
                self.count_request("tcp");
            }
            match lease.conn.exchange(query, q, deadline).await {
                Ok(bytes) => {
                    self.connect_failures.store(0, Ordering::Relaxed);
                    self.next_connect_ms.store(0, Ordering::Relaxed);
                    return self.finish(bytes, query, started, true);
                }
                Err(TcpFail::Timeout) => {
                    // Counted once per connection: every query pipelined on a stalled
                    // connection times out, and it was counted once for each of them.
                    if Box::pin(self.drop_tcp(&lease.conn)).await {
                        m::cached_counter(
                            m::label_key(44, &[self.id()]),
                            || metrics::counter!(m::UPSTREAM_TCP_REPLACED, "to" => self.label.clone()),
                        )
                        .increment(1);
                    }
                    return Err(UpstreamError::Timeout(self.addr));
                }
                Err(fail) => {
                    // Boxed: a rare path, kept out of every waiting query's future (whose size
                    // the memory budget charges, `WAITING_OVERHEAD`).
                    let closed = Box::pin(self.closed_under(&lease.conn)).await;
                    let again = attempt == 1
                        || (closed == Closed::AfterAnswering && attempt < TCP_ATTEMPTS);
                    if tokio::time::Instant::now() < deadline {
                        if again {
                            continue;
                        }
                        if closed == Closed::Unanswered {
                            drop(lease);
                            return Box::pin(self.alone_twice(query, q, deadline, started)).await;
                        }
                    }
                    return Err(match fail {
                        TcpFail::Write(e) => UpstreamError::Io(self.addr, e),
                        _ => UpstreamError::Closed(self.addr),
                    });
                }
            }
        }
    }

    /// A connection failed under a query: take it out of the pool, and tell whether it had
    /// answered a query of ours, or the server answers on others. One that had not, of a server
    /// not answering, backs new connects off (once per connection: up to 64 queries may ride
    /// one that resets).
    ///
    /// Not while the server answers on its other connections (within `STILL_ANSWERING`): then
    /// the connection was closed over a query of its own (one the server cannot take), and
    /// backing off would fail every query that needs a new connection meanwhile (a probe:
    /// 10 such queries among 1,500 at 500/s gave 404 others SERVFAIL, `reason="backoff"`).
    async fn closed_under(&self, conn: &Arc<TcpConn>) -> Closed {
        self.drop_tcp(conn).await;
        let answered = conn.answered_before_closing(READ_ALL_WAIT).await;
        // Over TCP: a server answering over UDP (truncated, even) may have no TCP service.
        let answering = clock_ms().saturating_sub(self.last_tcp_answer_ms.load(Ordering::Relaxed))
            < STILL_ANSWERING.as_millis() as u64;
        if !answered && !answering && !conn.backed_off.swap(true, Ordering::Relaxed) {
            self.back_off_connects();
        }
        match (answered, answering) {
            (true, _) => Closed::AfterAnswering,
            (false, true) => Closed::Unanswered,
            (false, false) => Closed::ServerSilent,
        }
    }

    /// A health probe over TCP, always on a connection of its own: a probe sent down the
    /// pooled connection that stalled would only stall with it. An answered probe ends any
    /// reconnect backoff; its connection is then closed (dropped here).
    async fn probe_tcp(
        &self,
        query: &[u8],
        q: &wire::Question,
        timeout: Duration,
    ) -> Result<Reply, UpstreamError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.tcp_alone(query, q, deadline, true, Instant::now())
            .await
    }

    /// A query whose pooled connections closed unanswered (`exchange_tcp`), on a connection
    /// of its own, and on a second if that one closes too. The attempt forgiven whatever it
    /// was is the first: a query written into a connection just as the server closed it after
    /// an answer to another was never read, yet used it up, so its first real loss sent it
    /// alone and its second failed it (SERVFAIL in 3 of 200 runs of a test whose server answers
    /// one query a connection). Forgiving the first close that did not answer instead put a
    /// query of death back in the pool once more, where it killed the connections of other
    /// queries: 33-70% more of them (a review's probe). Alone, it kills only its own.
    async fn alone_twice(
        &self,
        query: &[u8],
        q: &wire::Question,
        deadline: tokio::time::Instant,
        started: Instant,
    ) -> Result<Reply, UpstreamError> {
        match self.tcp_alone(query, q, deadline, false, started).await {
            Err(UpstreamError::Closed(_) | UpstreamError::Io(..))
                if tokio::time::Instant::now() < deadline =>
            {
                self.tcp_alone(query, q, deadline, false, started).await
            }
            other => other,
        }
    }

    /// `query` on a connection of its own, closed when it is answered; a request counted if
    /// `count` (once connected: a query sent again alone by `exchange_tcp` is counted
    /// already), its round trip from `started`.
    async fn tcp_alone(
        &self,
        query: &[u8],
        q: &wire::Question,
        deadline: tokio::time::Instant,
        count: bool,
        started: Instant,
    ) -> Result<Reply, UpstreamError> {
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(self.addr))
            .await
            .map_err(|_| UpstreamError::Timeout(self.addr))?
            .map_err(|e| UpstreamError::Io(self.addr, e))?;
        let _ = stream.set_nodelay(true);
        let conn = TcpConn::start(stream, self.addr, self.id());
        if count {
            self.count_request("tcp");
        }
        let bytes = match conn.exchange(query, q, deadline).await {
            Ok(b) => b,
            Err(TcpFail::Timeout) => return Err(UpstreamError::Timeout(self.addr)),
            Err(TcpFail::Write(e)) => return Err(UpstreamError::Io(self.addr, e)),
            Err(TcpFail::Closed) => return Err(UpstreamError::Closed(self.addr)),
        };
        self.connect_failures.store(0, Ordering::Relaxed);
        self.next_connect_ms.store(0, Ordering::Relaxed);
        self.finish(bytes, query, started, true)
    }

    /// The reply to `query` that came after `started`, over TCP if `tcp`: accepted, or the
    /// attempt failed (counted by the caller, and the next server tried, as unbound does).
    fn finish(
        &self,
        bytes: Vec<u8>,
        query: &[u8],
        started: Instant,
        tcp: bool,
    ) -> Result<Reply, UpstreamError> {
        let info =
            wire::parse_response(&bytes).map_err(|e| UpstreamError::Malformed(self.addr, e))?;
        // RFC 1035 §4.1.1: the OPCODE is copied from the query. A reply with another one
        // (STATUS for QUERY) does not answer it, and a stub that checks (dig, glibc) would drop
        // it and wait out its own timeout. ID and question matched: a broken server, not a
        // late reply, so this attempt fails now rather than at the timeout.
        let asked = wire::Header::parse(query).map(|h| h.opcode());
        if asked.is_ok_and(|op| op != info.header.opcode()) {
            return Err(UpstreamError::OpcodeMismatch(self.addr));
        }
        // Over TCP a reply is never cut for size (RFC 7766 §8): TC there means data left out,
        // which is not to be used (RFC 2181 §9), nor retried, since TCP is the retry.
        if tcp && info.header.tc() {
            return Err(UpstreamError::TruncatedOverTcp(self.addr));
        }
        // Extended RCODEs (RFC 6891 §6.1.3) above BADVERS are about the transaction between
        // the proxy and this server, not about the name: TSIG/TKEY (17 BADKEY .. 22 BADTRUNC,
        // RFC 8945, RFC 2930), 23 BADCOOKIE (RFC 7873 §5.3: our cookie, which the client
        // never sent), and codes not yet assigned. Relayed, they would tell the client of an
        // exchange it had no part in. The server failed this query: the next one is tried,
        // and the client gets SERVFAIL (or a stale answer) if none answers, as from unbound.
        // BADVERS (16) is relayed: it says which EDNS version the server speaks.
        if info.rcode > wire::RCODE_BADVERS {
            return Err(UpstreamError::ExtendedRcode(self.addr, info.rcode));
        }
        self.ever_answered.store(true, Ordering::Relaxed);
        if tcp {
            self.last_tcp_answer_ms.store(clock_ms(), Ordering::Relaxed);
        }
        if !tcp {
            // A TCP reply's time may include a connect (and the probe's always does).
            self.paths.rtt.sample(started.elapsed());
        }
        self.observe(started, info.rcode);
        Ok(Reply {
            bytes,
            from: self.addr,
            info,
        })
    }

    /// A connection with room for one more query: the first pooled one below
    /// `TCP_PIPELINE` (fill one connection before opening the next, RFC 7766 §6.2.1), else a
    /// new one while the pool has room. A new connection after failed connects waits out an
    /// exponential backoff; meanwhile the query fails at once and goes to the next server.
    async fn tcp_conn(&self, deadline: tokio::time::Instant) -> Result<TcpLease, UpstreamError> {
        let mut pool = self.tcp.lock().await;
        pool.retain(|c| !c.dead.load(Ordering::Relaxed) && !c.torn.load(Ordering::Relaxed));
        let room = pool
            .iter()
            .find(|c| c.inflight.load(Ordering::Relaxed) < TCP_PIPELINE)
            .cloned();
        let conn = match room {
            Some(c) => c,
            None if pool.len() >= TCP_CONNS_PER_SERVER => pool
                .iter()
                .min_by_key(|c| c.inflight.load(Ordering::Relaxed))
                .cloned()
                .expect("a full pool is not empty"),
            None => {
                if clock_ms() < self.next_connect_ms.load(Ordering::Relaxed) {
                    return Err(UpstreamError::Backoff(self.addr));
                }
                // Boxed: the connect is rare (connections are pooled) and its future is most
                // of this one, which every waiting query's future holds (`WAITING_OVERHEAD`).
                let connect = Box::pin(TcpStream::connect(self.addr));
                let connected = match tokio::time::timeout_at(deadline, connect).await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(UpstreamError::Io(self.addr, e)),
                    Err(_) => Err(UpstreamError::Timeout(self.addr)),
                };
                let stream = match connected {
                    Ok(s) => s,
                    Err(e) => {
                        self.back_off_connects();
                        return Err(e);
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = TcpConn::start(stream, self.addr, self.id());
                pool.push(conn.clone());
                conn
            }
        };
        // Counted under the pool lock, so two queries never both take a connection's last slot.
        conn.inflight.fetch_add(1, Ordering::Relaxed);
        Ok(TcpLease { conn })
    }

    /// Take a failed connection out of the pool. Queries already waiting on it keep it alive
    /// until they finish; then it closes.
    /// A connection failed before it carried a reply (the connect itself, or a server that
    /// accepts and resets): new connects wait, doubling from `RECONNECT_MIN` to
    /// `RECONNECT_MAX`, until a reply comes (`connect_failures` is cleared by a reply, not by
    /// a connect, or a server that resets every connection would be reconnected at once).
    fn back_off_connects(&self) {
        let n = self
            .connect_failures
            .fetch_add(1, Ordering::Relaxed)
            .min(16);
        let wait = (RECONNECT_MIN.as_millis() as u64)
            .saturating_mul(1 << n)
            .min(RECONNECT_MAX.as_millis() as u64);
        self.next_connect_ms
            .store(clock_ms() + wait, Ordering::Relaxed);
    }

    /// Take `conn` out of the pool; true for the call that found it still alive.
    async fn drop_tcp(&self, conn: &Arc<TcpConn>) -> bool {
        let was_dead = conn.dead.swap(true, Ordering::Relaxed);
        let mut pool = self.tcp.lock().await;
        pool.retain(|c| !Arc::ptr_eq(c, conn));
        !was_dead
    }
}

/// One query's hold on a pooled connection, counted in its `inflight`.
struct TcpLease {
    conn: Arc<TcpConn>,
}

impl Drop for TcpLease {
    fn drop(&mut self) {
        self.conn.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How one query on a TCP connection failed.
enum TcpFail {
    Write(std::io::Error),
    /// The connection closed before the reply came.
    Closed,
    Timeout,
}

/// Queries waiting for replies on one socket or connection, by ID.
struct Dispatch {
    pending: Mutex<HashMap<u16, Pending>>,
    /// Registrations made here, each entry numbered by it: a `Registration` removes only its
    /// own entry, never the one of a later query that drew the same ID after the reply freed
    /// it (a finished attempt failed another query on its socket, at 15k queries a second).
    registered: AtomicU64,
    addr: SocketAddr,
    /// The server's `Server::id`: rejected replies are counted under it.
    server: u64,
    /// Take this UDP socket out of the pool (`udp_conn` opens a fresh one): its server's port
    /// was reported unreachable (`fail_all`), or its queries go unanswered while the server
    /// answers on other sockets (`note_unanswered`).
    retired: std::sync::atomic::AtomicBool,
    /// A UDP socket's server's paths: a late reply to an abandoned attempt is a round-trip
    /// sample, or the estimate would see only the replies that won and never grow for a server
    /// that is slow for some names (whose every query would then be sent twice).
    paths: Option<Arc<UdpPaths>>,
    /// Attempts here that ended unanswered (timed out, or abandoned for another attempt's
    /// answer) since the last reply, and when the first of them ended (`clock_ms`).
    unanswered: AtomicU32,
    silent_since_ms: AtomicU64,
}

struct Pending {
    /// The question as sent; the reply must carry the same (case-insensitively: some servers
    /// do not echo 0x20 case).
    name: Box<[u8]>,
    qtype: u16,
    qclass: u16,
    tx: oneshot::Sender<Vec<u8>>,
    /// Its number among the socket's registrations (`Dispatch::registered`).
    serial: u64,
    /// When it was registered, just before its send.
    at: Instant,
}

impl Dispatch {
    fn new(addr: SocketAddr, server: u64, paths: Option<Arc<UdpPaths>>) -> Dispatch {
        Dispatch {
            paths,
            unanswered: AtomicU32::new(0),
            silent_since_ms: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            registered: AtomicU64::new(0),
            addr,
            server,
            retired: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// An attempt here ended without its reply. Past `SILENT_SOCKET_AFTER` in a row, with the
    /// server answering on another socket since the first of them, the fault is this socket's
    /// path, not the server: it is retired. (A server gone quiet on every socket keeps them:
    /// a new socket would not help, and its health says it is failing.) Called with the
    /// `pending` lock held, as `note_reply` is: the streak and its start move together.
    fn note_unanswered(&self) {
        let Some(paths) = &self.paths else {
            return;
        };
        let now = clock_ms().max(1);
        if self.unanswered.fetch_add(1, Ordering::Relaxed) == 0 {
            self.silent_since_ms.store(now, Ordering::Relaxed);
            return;
        }
        if self.unanswered.load(Ordering::Relaxed) < SILENT_SOCKET_AFTER
            || self.retired.load(Ordering::Relaxed)
            || paths.last_reply_ms.load(Ordering::Relaxed)
                < self.silent_since_ms.load(Ordering::Relaxed)
        {
            return;
        }
        let last = paths.last_silenced_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < SILENT_SOCKET_EVERY.as_millis() as u64 {
            return;
        }
        if paths
            .last_silenced_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.retired.store(true, Ordering::Relaxed);
            // Keyed by the server's id (as in `deliver`): the Dispatch's address is reused.
            m::cached_counter(
                m::label_key(68, &[self.server]),
                || metrics::counter!(m::UPSTREAM_UDP_REPLACED, "to" => self.addr.to_string()),
            )
            .increment(1);
        }
    }

    /// A reply here answered a query (on time or late): the socket's path works. Called with
    /// the `pending` lock held.
    fn note_reply(&self) {
        if let Some(paths) = &self.paths {
            self.unanswered.store(0, Ordering::Relaxed);
            paths
                .last_reply_ms
                .store(clock_ms().max(1), Ordering::Relaxed);
        }
    }

    /// A fresh random ID for `query`, and the channel its reply comes on. The entry goes when
    /// the reply comes, or with the `Registration` (`Registration::cancel`, and on drop unless
    /// `keep_if_abandoned`).
    fn register(
        &self,
        query: &[u8],
        q: &wire::Question,
        keep_if_abandoned: bool,
    ) -> (Registration<'_>, oneshot::Receiver<Vec<u8>>) {
        let (tx, rx) = oneshot::channel();
        let serial = self.registered.fetch_add(1, Ordering::Relaxed);
        let mut rng = rand::rng();
        let mut pending = self.pending.lock();
        let id = loop {
            let id: u16 = rng.random();
            if !pending.contains_key(&id) {
                break id;
            }
        };
        pending.insert(
            id,
            Pending {
                name: q.name_bytes(query).into(),
                qtype: q.qtype,
                qclass: q.qclass,
                tx,
                serial,
                at: Instant::now(),
            },
        );
        let registration = Registration {
            dispatch: self,
            id,
            serial,
            keep_if_abandoned,
        };
        (registration, rx)
    }

    /// The server's port was reported unreachable: every waiting query fails at once (its
    /// receiver sees the sender dropped: `Closed`), and the socket is retired (`udp_conn`
    /// replaces it by a fresh one, a new source port: a forged ICMP message fails only what
    /// waits on the socket it names, once).
    fn fail_all(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.pending.lock().clear();
    }

    /// Hand a reply to the query it answers, if it answers one (true).
    fn deliver(&self, bytes: Vec<u8>) -> bool {
        let reject = |reason: &'static str| {
            // Keyed by the server's id, not this Dispatch's address: a socket's Dispatch is
            // freed when the socket is retired (every 512 queries), and another server's
            // next one, allocated at that address, was handed this server's `to` label.
            m::cached_counter(m::label_key(43, &[self.server, reason.as_ptr() as u64]), || {
                metrics::counter!(m::UPSTREAM_FAILURES, "to" => self.addr.to_string(), "reason" => reason)
            })
            .increment(1);
            false
        };
        let Ok(h) = wire::Header::parse(&bytes) else {
            return reject("malformed");
        };
        if !h.is_response() {
            return reject("malformed");
        }
        let mut pending = self.pending.lock();
        let Some(p) = pending.get(&h.id) else {
            drop(pending);
            // Late (after a timeout) or forged: either way not ours any more.
            return reject("unexpected_id");
        };
        let matches = match wire::parse_question(&bytes) {
            Ok(q) => {
                wire::names_equal(q.name_bytes(&bytes), &p.name)
                    && q.qtype == p.qtype
                    && q.qclass == p.qclass
            }
            Err(_) => false,
        };
        if !matches {
            drop(pending);
            // RFC 5452 §9.1: a reply for another question is ignored; the real one may follow.
            return reject("question_mismatch");
        }
        let p = pending.remove(&h.id).expect("present");
        self.note_reply();
        drop(pending);
        // A receiver gone is an attempt abandoned for another's answer (its entry kept for
        // this): its late reply answers what was asked, and is no rejection to count (the
        // attempt was counted `overtaken`). Counted `unexpected_id`, it made the spoofing
        // signal fire on every slow name.
        if p.tx.send(bytes).is_err() {
            if let Some(paths) = &self.paths {
                paths.rtt.sample(p.at.elapsed());
            }
        }
        true
    }
}

/// A query's entry in a `Dispatch`.
struct Registration<'a> {
    dispatch: &'a Dispatch,
    id: u16,
    serial: u64,
    /// Dropped before its reply came (the attempt abandoned for another's answer), the entry
    /// stays to take the late reply quietly: over UDP, where a socket's 512 queries bound
    /// such entries. Over TCP it goes: a pooled connection may live for days.
    keep_if_abandoned: bool,
}

impl Registration<'_> {
    /// The attempt gave up (its timeout, a failed send): a reply now is late, and rejected.
    fn cancel(mut self) {
        self.keep_if_abandoned = false;
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut pending = self.dispatch.pending.lock();
        // Only its own entry: its reply may have freed the ID for another query since. Gone,
        // it was answered (or failed with the socket, `fail_all`).
        if pending
            .get(&self.id)
            .is_none_or(|p| p.serial != self.serial)
        {
            return;
        }
        if !self.keep_if_abandoned {
            pending.remove(&self.id);
        }
        self.dispatch.note_unanswered();
    }
}

struct UdpConn {
    socket: Arc<UdpSocket>,
    dispatch: Arc<Dispatch>,
    reader: tokio::task::JoinHandle<()>,
    /// Queries sent through it (`UDP_QUERIES_PER_SOCKET`).
    sent: std::sync::atomic::AtomicU32,
    /// Its local port.
    port: u16,
}

impl Drop for UdpConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl UdpConn {
    async fn connect(
        addr: SocketAddr,
        server: u64,
        paths: Arc<UdpPaths>,
    ) -> std::io::Result<Arc<UdpConn>> {
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let socket = Arc::new(UdpSocket::bind(bind).await?);
        // Connected: the kernel delivers only datagrams from `addr` (source check for free).
        socket.connect(addr).await?;
        let port = socket.local_addr()?.port();
        let dispatch = Arc::new(Dispatch::new(addr, server, Some(paths)));
        let reader = {
            let socket = socket.clone();
            let dispatch = dispatch.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_MESSAGE];
                loop {
                    match socket.recv(&mut buf).await {
                        Ok(n) => {
                            dispatch.deliver(buf[..n].to_vec());
                        }
                        // ICMP port unreachable surfaces as ECONNREFUSED on a connected socket:
                        // nothing listens on the server's port, so no query waiting on this
                        // socket will be answered. They fail now and fail over, instead of each
                        // waiting out the zone's timeout.
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            dispatch.fail_all()
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            })
        };
        Ok(Arc::new(UdpConn {
            socket,
            dispatch,
            reader,
            sent: std::sync::atomic::AtomicU32::new(1),
            port,
        }))
    }
}

struct TcpConn {
    writer: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    dispatch: Arc<Dispatch>,
    dead: Arc<std::sync::atomic::AtomicBool>,
    /// A reply to one of our queries came on it: a connection that fails before one backs
    /// connects off (once: `backed_off`), and one that closes after one is retried.
    answered: Arc<std::sync::atomic::AtomicBool>,
    backed_off: std::sync::atomic::AtomicBool,
    /// A query's write stopped part-way (`Torn`): nothing more may be written on it.
    torn: std::sync::atomic::AtomicBool,
    /// Queries holding a lease on this connection (bounded by `TCP_PIPELINE`).
    inflight: AtomicUsize,
    /// The reader has read everything the server sent (`read_all`).
    read_all: Arc<tokio::sync::watch::Sender<bool>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for TcpConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl TcpConn {
    fn start(stream: TcpStream, addr: SocketAddr, server: u64) -> Arc<TcpConn> {
        let (mut rd, wr) = stream.into_split();
        let dispatch = Arc::new(Dispatch::new(addr, server, None));
        let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let read_all = Arc::new(tokio::sync::watch::Sender::new(false));
        let reader = {
            let dispatch = dispatch.clone();
            let dead = dead.clone();
            let answered = answered.clone();
            let read_all = read_all.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                loop {
                    if rd.read_exact(&mut len).await.is_err() {
                        break;
                    }
                    let n = u16::from_be_bytes(len) as usize;
                    let mut msg = vec![0u8; n];
                    if rd.read_exact(&mut msg).await.is_err() {
                        break;
                    }
                    if dispatch.deliver(msg) {
                        answered.store(true, Ordering::Relaxed);
                    }
                }
                dead.store(true, Ordering::Relaxed);
                read_all.send_replace(true);
                // Dropping the senders wakes every waiter with an error.
                dispatch.pending.lock().clear();
            })
        };
        Arc::new(TcpConn {
            writer: tokio::sync::Mutex::new(wr),
            dispatch,
            dead,
            answered,
            backed_off: std::sync::atomic::AtomicBool::new(false),
            torn: std::sync::atomic::AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            read_all,
            reader,
        })
    }

    /// Whether a reply to one of our queries came on this connection, once its reader has
    /// read what the server sent before closing (at most `wait` for that). A write that fails
    /// on the server's reset returns before the reader has taken the answer queued ahead of
    /// the reset, and the connection would read as one that never answered.
    async fn answered_before_closing(&self, wait: Duration) -> bool {
        let mut done = self.read_all.subscribe();
        let _ = tokio::time::timeout(wait, done.wait_for(|&d| d)).await;
        self.answered.load(Ordering::Relaxed)
    }

    /// Send one query (with a fresh ID, RFC 7766 §8 framing) and wait for its reply until
    /// `deadline`.
    async fn exchange(
        &self,
        query: &[u8],
        q: &wire::Question,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, TcpFail> {
        let (registration, rx) = self.dispatch.register(query, q, false);
        if *self.read_all.borrow() {
            // The reader is gone (the server closed after its last answer) and cleared the
            // waiting queries before this one was registered: no reply can come, and a write
            // into a half-closed connection may still succeed, so the query would wait out its
            // whole timeout. The reader sets `read_all` before it clears under the same lock.
            return Err(TcpFail::Closed);
        }
        let mut msg = Vec::with_capacity(query.len() + 2);
        msg.extend_from_slice(&(query.len() as u16).to_be_bytes());
        msg.extend_from_slice(query);
        wire::set_id(&mut msg[2..], registration.id);
        let write = async {
            let mut w = self.writer.lock().await;
            if self.torn.load(Ordering::Relaxed) {
                return Ok(false);
            }
            // A write stopped part-way (its deadline, or the attempt abandoned for another's
            // answer) leaves the stream out of step with its length framing: no query may be
            // written after it. The queries already written still get their replies.
            let torn = Torn(&self.torn);
            let written = w.write_all(&msg).await;
            std::mem::forget(torn);
            written.map(|()| true)
        };
        match tokio::time::timeout_at(deadline, write).await {
            Ok(Ok(true)) => {}
            // Torn by a query written before this one: as if the server had closed it.
            Ok(Ok(false)) => return Err(TcpFail::Closed),
            Ok(Err(e)) => return Err(TcpFail::Write(e)),
            Err(_) => return Err(TcpFail::Timeout),
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(_)) => Err(TcpFail::Closed),
            Err(_) => Err(TcpFail::Timeout),
        }
    }
}

/// Marks a TCP connection torn when dropped: armed around a write that must finish whole.
struct Torn<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Torn<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str) -> UpstreamZone {
        UpstreamZone {
            zone: name.into(),
            servers: vec!["127.0.0.1:53".parse().unwrap()],
            protocol: Protocol::Udp,
            timeout: Duration::from_secs(1),
            equivalent: false,
        }
    }

    fn wire_name(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        wire::encode_name(s, &mut v).unwrap();
        v
    }

    /// The value of the series of `name` whose labels include every one of `labels`.
    fn series(text: &str, name: &str, labels: &[&str]) -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| labels.iter().all(|want| l.contains(want)))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    /// A reply for an ID nobody waits for (`unexpected_id`).
    const STRAY_REPLY: [u8; 12] = [0xab, 0xcd, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0];

    /// Rejected replies were counted under a memo key made of the Dispatch's address. A UDP
    /// socket's Dispatch is freed when the socket is retired, and another server's next one,
    /// allocated at that address, was handed the first server's counter: a probe saw 500-1,000
    /// rejections of one server charged to the other. Here the second Dispatch takes the
    /// first's place in memory, for certain.
    #[test]
    fn rejected_replies_were_charged_to_the_server_whose_dispatch_was_freed_there() {
        let handle = m::install();
        let (a, b) = (
            Server::new("192.0.2.201:5301".parse().unwrap()),
            Server::new("192.0.2.202:5302".parse().unwrap()),
        );
        let mut slot = Box::new(Dispatch::new(a.addr, a.id(), None));
        let at = &*slot as *const Dispatch;
        slot.deliver(STRAY_REPLY.to_vec());
        *slot = Dispatch::new(b.addr, b.id(), None);
        assert_eq!(&*slot as *const Dispatch, at, "the same address");
        for _ in 0..2 {
            slot.deliver(STRAY_REPLY.to_vec());
        }
        let text = handle.render();
        let rejected = |to: &str| {
            series(
                &text,
                m::UPSTREAM_FAILURES,
                &[&format!("to=\"{to}\""), "reason=\"unexpected_id\""],
            )
        };
        assert_eq!(rejected("192.0.2.201:5301"), 1.0, "{text}");
        assert_eq!(rejected("192.0.2.202:5302"), 2.0, "{text}");
    }

    /// The same for a server: a reload frees the old servers and makes new ones, which may
    /// take an old one's address with another `to` label.
    #[test]
    fn a_servers_counters_went_to_the_freed_server_at_its_address() {
        let handle = m::install();
        let mut slot = Box::new(Server::new("192.0.2.203:53".parse().unwrap()));
        slot.count_failure(&UpstreamError::Timeout(slot.addr));
        *slot = Server::new("192.0.2.204:53".parse().unwrap());
        slot.count_failure(&UpstreamError::Timeout(slot.addr));
        let text = handle.render();
        for to in ["192.0.2.203:53", "192.0.2.204:53"] {
            let labels = [&format!("to=\"{to}\"")[..], "reason=\"timeout\""];
            assert_eq!(series(&text, m::UPSTREAM_FAILURES, &labels), 1.0, "{text}");
        }
    }

    /// `ndots_upstream_requests_total` keyed its handles by the length of the `proto` label,
    /// and "udp" and "tcp" have the same: on a thread that had counted a UDP query, the TCP
    /// retry of a truncated reply was counted as `proto="udp"`.
    #[test]
    fn tcp_requests_were_counted_as_udp_on_a_thread_that_counted_udp_first() {
        let handle = m::install();
        let s = Server::new("192.0.2.205:53".parse().unwrap());
        s.count_request("udp");
        s.count_request("tcp");
        s.count_request("tcp");
        let text = handle.render();
        let requests = |proto: &str| {
            series(
                &text,
                m::UPSTREAM_REQUESTS,
                &["to=\"192.0.2.205:53\"", &format!("proto=\"{proto}\"")],
            )
        };
        assert_eq!(requests("udp"), 1.0, "{text}");
        assert_eq!(requests("tcp"), 2.0, "{text}");
    }

    /// The charge for an attempt sent again covers what it holds, or the bound is a fiction.
    #[test]
    fn an_attempt_fits_its_charge() {
        let s = Server::new("127.0.0.1:53".parse().unwrap());
        let query = query_for("a.example.");
        let q = wire::parse_question(&query).unwrap();
        let shared = Shared::default();
        let fut = s.attempt(
            Protocol::Udp,
            &query,
            &q,
            Duration::from_secs(1),
            0,
            &shared,
        );
        // The longest name, the pending entry with its channel, the box and the slot.
        let held = std::mem::size_of_val(&fut) + 255 + 256;
        assert!(
            held <= ATTEMPT_OVERHEAD,
            "an attempt holds {held} bytes: raise ATTEMPT_OVERHEAD"
        );
    }

    /// An upstream slowed by load answers every query later than the wait before a resend:
    /// unbounded, each query would reach it up to three times, adding load where there is
    /// too much already. A second allows `RESENDS_FLOOR` and one per `RESENDS_PER` queries.
    #[test]
    fn a_slowed_upstream_got_every_query_three_times() {
        let budget = ResendBudget::default();
        for _ in 0..100 {
            budget.first_sent();
        }
        let granted = (0..300).filter(|_| budget.take()).count();
        // At the turn of a second the counts start again.
        assert_eq!(granted, 30, "resends for 100 queries");
        budget.second.store(u64::MAX, Ordering::Relaxed); // another second
        assert_eq!((0..300).filter(|_| budget.take()).count(), 10);
    }

    /// A router for the root zone over UDP to `servers`.
    fn udp_root_zone(servers: Vec<SocketAddr>, timeout: Duration) -> Router {
        Router::new(&[UpstreamZone {
            zone: ".".into(),
            servers,
            protocol: Protocol::Udp,
            timeout,
            equivalent: false,
        }])
        .unwrap()
    }

    fn query_for(name: &str) -> Vec<u8> {
        let mut query = Vec::new();
        wire::build_query(0x1234, name, wire::TYPE_A, true, &mut query).unwrap();
        query
    }

    /// A fake UDP upstream on its own thread: `serve` gets its socket, each datagram read
    /// with QR set (the reply it may send, or change first) and where it came from.
    fn fake_udp(
        mut serve: impl FnMut(&Arc<std::net::UdpSocket>, Vec<u8>, SocketAddr) + Send + 'static,
    ) -> SocketAddr {
        let s = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let addr = s.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80; // QR
                serve(&s, reply, from);
            }
        });
        addr
    }

    /// A UDP server that answers every query with its question and no records (NOERROR).
    fn echo_server() -> SocketAddr {
        fake_udp(|s, reply, from| {
            let _ = s.send_to(&reply, from);
        })
    }

    /// A failover is one attempt at a time, in the query's own charge: with the `waiting`
    /// share full, a query whose first server failed still went on to the next (only an
    /// attempt sent alongside another needs room of its own).
    #[tokio::test]
    async fn a_full_waiting_share_stopped_the_failover_to_the_next_server() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed); // port unreachable: the attempt fails at once
        let budget = Arc::new(MemoryBudget::new(crate::budget::MIN_LIMIT));
        assert!(budget.try_charge(Part::Waiting, budget.share(Part::Waiting)));
        let router = udp_root_zone(vec![closed_addr, echo_server()], Duration::from_secs(2))
            .with_budget(budget.clone());
        let reply = router.exchange(0, &query_for("a.example.")).await.unwrap();
        assert_eq!(reply.from, router.zones[0].servers[1].addr);
        assert_eq!(budget.refused(Part::Waiting), 0, "no refusal counted");
    }

    /// A dead first server, not yet known to be failing, cost each query its whole timeout
    /// before the next server was asked (with 3 s up and 3 s down, 34% of queries took over a
    /// second in a probe). In a zone of equivalent servers an attempt unanswered for its
    /// round trip goes to the next server, and the first server, overtaken three times, is
    /// marked failing: later queries start at the next one.
    #[tokio::test]
    async fn a_dead_first_server_cost_each_query_its_timeout_though_an_equivalent_one_answered() {
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap(); // reads nothing
        let zone = |equivalent| UpstreamZone {
            zone: ".".into(),
            servers: vec![dead.local_addr().unwrap(), echo_server()],
            protocol: Protocol::Udp,
            timeout: Duration::from_secs(3),
            equivalent,
        };
        let router = Router::new(&[zone(true)]).unwrap();
        for i in 0..4 {
            let started = tokio::time::Instant::now();
            let reply = router
                .exchange(0, &query_for(&format!("n{i}.example.")))
                .await
                .unwrap();
            assert_eq!(reply.from, router.zones[0].servers[1].addr, "n{i}");
            // Answered at the first server's resend wait (400 ms: no round trip measured),
            // well before its 3 s timeout.
            assert!(started.elapsed() < Duration::from_secs(3), "n{i}");
        }
        let first = &router.zones[0].servers[0];
        assert!(first.is_down(), "overtaken three times: failing");
        // Not equivalent: the first server's whole timeout, then the next (failover).
        let router = Router::new(&[zone(false)]).unwrap();
        let started = tokio::time::Instant::now();
        let reply = router.exchange(0, &query_for("m.example.")).await.unwrap();
        assert_eq!(reply.from, router.zones[0].servers[1].addr);
        assert!(started.elapsed() >= Duration::from_secs(3));
    }

    /// In a zone of equivalent servers, the server a resend had just gone to was charged a
    /// failure when the first answered a few milliseconds later (a slow name): three such
    /// names marked a healthy second server down.
    #[tokio::test]
    async fn a_resend_target_was_marked_failing_when_the_first_server_answered_just_after() {
        let first = fake_udp(|s, reply, from| {
            let slow = wire::parse_question(&reply)
                .is_ok_and(|q| q.name_bytes(&reply).starts_with(b"\x05slow"));
            let s = s.clone();
            std::thread::spawn(move || {
                if slow {
                    // Past the resend wait (200 ms, the floor), before a second one.
                    std::thread::sleep(Duration::from_millis(260));
                }
                let _ = s.send_to(&reply, from);
            });
        });
        let second = std::net::UdpSocket::bind("127.0.0.1:0").unwrap(); // reads nothing
        let router = Router::new(&[UpstreamZone {
            zone: ".".into(),
            servers: vec![first, second.local_addr().unwrap()],
            protocol: Protocol::Udp,
            timeout: Duration::from_secs(2),
            equivalent: true,
        }])
        .unwrap();
        for i in 0..3 {
            // Fast names bring the first server's round trip back down to the floor after
            // each slow one raised it.
            for k in 0..40 {
                let q = query_for(&format!("fast{i}-{k}.example."));
                router.exchange(0, &q).await.unwrap();
            }
            let q = query_for(&format!("slow{i}.example."));
            let reply = router.exchange(0, &q).await.unwrap();
            assert_eq!(reply.from, first);
        }
        let second = &router.zones[0].servers[1];
        assert!(!second.is_down(), "overtaken moments after it was asked");
    }

    fn answer_to(query: &[u8], id: u16) -> Vec<u8> {
        let mut reply = query.to_vec();
        wire::set_id(&mut reply, id);
        reply[2] |= 0x80; // QR
        reply
    }

    /// A finished attempt removed its entry by ID when it dropped its registration. Its
    /// reply had freed that ID already, and another query on the socket could have drawn it:
    /// that query's entry went, and it failed at once as `closed` (SERVFAIL with one
    /// upstream; 5 to 21 in 20 s at 15k queries a second against nsd).
    #[tokio::test]
    async fn a_finished_attempt_cancelled_the_query_that_drew_its_id() {
        let d = Dispatch::new("127.0.0.1:53".parse().unwrap(), 1, None);
        let (qx, qy) = (query_for("x.example."), query_for("y.example."));
        let (x, y) = (
            wire::parse_question(&qx).unwrap(),
            wire::parse_question(&qy).unwrap(),
        );
        for keep in [false, true] {
            let (reg_x, rx_x) = d.register(&qx, &x, keep);
            let id = reg_x.id;
            assert!(d.deliver(answer_to(&qx, id)));
            assert!(rx_x.await.is_ok());
            // Before X's attempt drops its registration, Y draws the ID X's reply freed.
            let (reg_y, rx_y) = loop {
                let (r, rx) = d.register(&qy, &y, keep);
                if r.id == id {
                    break (r, rx);
                }
                r.cancel();
            };
            drop(reg_x);
            assert_eq!(d.pending.lock().len(), 1, "Y still waits");
            assert!(d.deliver(answer_to(&qy, id)), "Y's reply is Y's");
            assert!(rx_y.await.is_ok());
            drop(reg_y);
        }
    }

    /// A UDP attempt abandoned for another's answer keeps its entry: its late reply answers
    /// what was asked, and is not a rejection. Counted `unexpected_id` (the spoofing signal),
    /// it came at 2,000 per 10k queries to a server slower than the wait. Given up on its
    /// timeout, the entry goes, and a reply after that is rejected as before; over TCP the
    /// entry always goes.
    #[test]
    fn a_late_reply_to_an_abandoned_attempt_was_counted_as_spoofing() {
        let d = Dispatch::new("127.0.0.1:53".parse().unwrap(), 1, None);
        let q = query_for("x.example.");
        let x = wire::parse_question(&q).unwrap();
        let (abandoned, rx) = d.register(&q, &x, true);
        let id = abandoned.id;
        drop((abandoned, rx));
        assert!(d.deliver(answer_to(&q, id)), "taken quietly");
        assert!(d.pending.lock().is_empty());
        let (timed_out, _rx) = d.register(&q, &x, true);
        let id = timed_out.id;
        timed_out.cancel();
        assert!(
            !d.deliver(answer_to(&q, id)),
            "late after a timeout: rejected"
        );
        let (over_tcp, rx) = d.register(&q, &x, false);
        drop((over_tcp, rx));
        assert!(d.pending.lock().is_empty());
    }

    /// The round-trip estimate saw only the replies that won: a slow reply's attempt was
    /// abandoned for its resend, so a server slow for some names never raised its wait, and
    /// every such name was sent twice or three times (+83% for them in a review). A late reply
    /// to an abandoned attempt is now a sample.
    #[test]
    fn a_slow_reply_overtaken_by_its_resend_never_reached_the_round_trip() {
        let paths = Arc::new(UdpPaths::new());
        let d = Dispatch::new("127.0.0.1:53".parse().unwrap(), 1, Some(paths.clone()));
        let q = query_for("slow.example.");
        let x = wire::parse_question(&q).unwrap();
        let (abandoned, rx) = d.register(&q, &x, true);
        let id = abandoned.id;
        drop((abandoned, rx));
        std::thread::sleep(Duration::from_millis(50));
        assert!(d.deliver(answer_to(&q, id)));
        let rto = paths.rtt.rto().expect("sampled");
        assert!(rto >= Duration::from_millis(50), "{rto:?}");
    }

    /// A resend's SERVFAIL or REFUSED abandoned the first attempt to the same server, which
    /// was about to answer: behind a Service IP each source port may reach another endpoint,
    /// and one at CoreDNS's `max_concurrent` refuses while another answers (200 of 200
    /// REFUSED in a review, NOERROR before resends).
    #[tokio::test]
    async fn a_resends_refusal_threw_away_the_first_attempts_answer() {
        let s = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let addr = s.local_addr().unwrap();
        let server = s.clone();
        std::thread::spawn(move || {
            let mut asked = std::collections::HashSet::new();
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = server.recv_from(&mut buf) {
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80;
                let Ok(q) = wire::parse_question(&reply) else {
                    continue;
                };
                if asked.insert(q.name_bytes(&reply).to_vec()) {
                    // The first: answered late, by a thread of its own.
                    let s = server.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(700));
                        let _ = s.send_to(&reply, from);
                    });
                } else {
                    reply[3] = (reply[3] & 0xf0) | wire::RCODE_REFUSED;
                    let _ = server.send_to(&reply, from);
                }
            }
        });
        let router = udp_root_zone(vec![addr], Duration::from_secs(2));
        let reply = router.exchange(0, &query_for("a.example.")).await.unwrap();
        assert_eq!(reply.info.rcode, wire::RCODE_NOERROR as u16);
    }

    /// Resends of the names an upstream is slow on took room under its concurrency cap
    /// (CoreDNS `max_concurrent` answers REFUSED past it): 23% of other clients' queries
    /// REFUSED in a review at a cap of 60, none without resends. A server that answered
    /// SERVFAIL or REFUSED gets no resends for `RESEND_HOLD`.
    #[tokio::test]
    async fn resends_pushed_an_upstream_past_its_concurrency_cap() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        let datagrams = Arc::new(AtomicUsize::new(0));
        let seen = datagrams.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80;
                let Ok(q) = wire::parse_question(&reply) else {
                    continue;
                };
                if q.name_bytes(&reply).starts_with(b"\x03cap") {
                    reply[3] = (reply[3] & 0xf0) | wire::RCODE_REFUSED;
                    let _ = s.send_to(&reply, from);
                } else {
                    seen.fetch_add(1, Ordering::Relaxed); // never answered
                }
            }
        });
        let router = udp_root_zone(vec![addr], Duration::from_secs(1));
        let refused = router
            .exchange(0, &query_for("cap.example."))
            .await
            .unwrap();
        assert_eq!(refused.info.rcode, wire::RCODE_REFUSED as u16);
        assert!(router
            .exchange(0, &query_for("slow.example."))
            .await
            .is_err());
        assert_eq!(datagrams.load(Ordering::Relaxed), 1, "not asked again");
    }

    /// A non-recursive query refused by policy (unbound without `allow_snoop` refuses RD=0)
    /// marked the server as shedding load: for 5 s no query to it was sent again, and a lost
    /// datagram cost its client the timeout and SERVFAIL.
    #[tokio::test]
    async fn a_policy_refusal_of_a_non_recursive_query_stopped_resends() {
        let mut lost_one = false;
        let addr = fake_udp(move |s, mut reply, from| {
            if reply[2] & 0x01 == 0 {
                reply[3] = (reply[3] & 0xf0) | wire::RCODE_REFUSED; // RD=0: policy
            } else if !lost_one {
                lost_one = true; // the recursive query's first datagram
                return;
            }
            let _ = s.send_to(&reply, from);
        });
        let router = udp_root_zone(vec![addr], Duration::from_secs(2));
        let mut norec = query_for("snoop.example.");
        norec[2] &= !0x01;
        let refused = router.exchange(0, &norec).await.unwrap();
        assert_eq!(refused.info.rcode, wire::RCODE_REFUSED as u16);
        let answer = router.exchange(0, &query_for("lost.example.")).await;
        assert_eq!(
            answer.map(|r| r.info.rcode).ok(),
            Some(wire::RCODE_NOERROR as u16),
            "the lost datagram asked again"
        );
    }

    /// Four queries at once to a server that answers each name's `answer_at`th datagram
    /// only: the source ports each name was asked from, in order.
    async fn ports_of_four_lossy_queries(
        answer_at: usize,
        timeout: Duration,
    ) -> HashMap<Vec<u8>, Vec<u16>> {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        let ports: Arc<Mutex<HashMap<Vec<u8>, Vec<u16>>>> = Arc::default();
        let seen = ports.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let Ok(q) = wire::parse_question(&buf[..n]) else {
                    continue;
                };
                let mut seen = seen.lock();
                let asks = seen.entry(q.name_bytes(&buf[..n]).to_vec()).or_default();
                asks.push(from.port());
                if asks.len() == answer_at {
                    let mut reply = buf[..n].to_vec();
                    reply[2] |= 0x80;
                    let _ = s.send_to(&reply, from);
                }
            }
        });
        let router = udp_root_zone(vec![addr], timeout);
        // Four at once: each first attempt takes one of the four pooled sockets.
        let names = ["a.example.", "b.example.", "c.example.", "d.example."];
        let queries: Vec<Vec<u8>> = names.iter().map(|n| query_for(n)).collect();
        let (a, b, c, d) = tokio::join!(
            router.exchange(0, &queries[0]),
            router.exchange(0, &queries[1]),
            router.exchange(0, &queries[2]),
            router.exchange(0, &queries[3]),
        );
        for r in [a, b, c, d] {
            r.unwrap();
        }
        let ports = ports.lock().clone();
        assert_eq!(ports.len(), 4);
        ports
    }

    /// A query asked again went out on the pooled socket round-robin gave it, often the very
    /// one the first went on (23% of resends): behind a Service IP, kube-proxy maps the same
    /// source port to the same, perhaps dead, endpoint. It now avoids the latest attempt's.
    #[tokio::test]
    async fn a_resend_went_out_from_the_socket_that_lost_the_first() {
        // Each name's first datagram is lost, its second answered.
        let ports = ports_of_four_lossy_queries(2, Duration::from_secs(2)).await;
        for asks in ports.values() {
            assert_eq!(asks.len(), 2);
            assert_ne!(
                asks[0], asks[1],
                "asked again from the same port: {ports:?}"
            );
        }
    }

    /// A socket whose queries vanish while its server answers on the others is retired; one
    /// of a server silent on every socket is kept (a new one would fare no better).
    #[test]
    fn a_socket_of_a_server_answering_elsewhere_is_retired_after_four_losses() {
        let paths = Arc::new(UdpPaths::new());
        let addr = "127.0.0.1:53".parse().unwrap();
        let (lossy, good) = (
            Dispatch::new(addr, 1, Some(paths.clone())),
            Dispatch::new(addr, 1, Some(paths.clone())),
        );
        let lose = |d: &Dispatch, name: &str| {
            let q = query_for(name);
            let x = wire::parse_question(&q).unwrap();
            let (r, _rx) = d.register(&q, &x, true);
            drop(r); // abandoned unanswered
        };
        let answer = |d: &Dispatch, name: &str| {
            let q = query_for(name);
            let x = wire::parse_question(&q).unwrap();
            let (r, _rx) = d.register(&q, &x, true);
            assert!(d.deliver(answer_to(&q, r.id)));
        };
        // Silent everywhere: kept, however many are lost.
        for i in 0..8 {
            lose(&lossy, &format!("dead{i}.example."));
        }
        assert!(
            !lossy.retired.load(Ordering::Relaxed),
            "a dead server's socket"
        );
        // Answered once: the streak starts again.
        answer(&lossy, "back.example.");
        for i in 0..3 {
            lose(&lossy, &format!("a{i}.example."));
            answer(&good, &format!("b{i}.example."));
        }
        assert!(!lossy.retired.load(Ordering::Relaxed), "three lost");
        lose(&lossy, "a3.example.");
        assert!(
            lossy.retired.load(Ordering::Relaxed),
            "four lost while the other answered"
        );
        assert!(!good.retired.load(Ordering::Relaxed));
    }

    /// The second resend avoided only the first resend's socket, and went out from the first
    /// attempt's again: behind a Service IP, the flow to the endpoint that lost it.
    #[tokio::test]
    async fn a_second_resend_went_out_from_the_first_attempts_socket() {
        // Each name's first two datagrams are lost, its third answered.
        let ports = ports_of_four_lossy_queries(3, Duration::from_secs(4)).await;
        for asks in ports.values() {
            let distinct: std::collections::HashSet<&u16> = asks.iter().collect();
            assert_eq!(
                distinct.len(),
                3,
                "a port asked twice for one name: {ports:?}"
            );
        }
    }

    #[tokio::test]
    async fn routes_by_longest_suffix_on_label_boundaries() {
        let r = Router::new(&[
            zone("."),
            zone("cluster.local."),
            zone("svc.cluster.local."),
            zone("example.com."),
        ])
        .unwrap();
        let label = |n: &str| r.route(&wire_name(n)).map(|i| r.zone(i).label.to_string());
        assert_eq!(
            label("web.prod.svc.Cluster.LOCAL.").as_deref(),
            Some("svc.cluster.local.")
        );
        assert_eq!(
            label("x.pod.cluster.local.").as_deref(),
            Some("cluster.local.")
        );
        assert_eq!(label("notcluster.local.").as_deref(), Some("."));
        assert_eq!(label("api.github.com.").as_deref(), Some("."));
        assert_eq!(label("example.com.").as_deref(), Some("example.com."));
        let no_root = Router::new(&[zone("cluster.local.")]).unwrap();
        assert_eq!(no_root.route(&wire_name("api.github.com.")), None);
    }
}
