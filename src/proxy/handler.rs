//! The request path, in the order every query takes it (DESIGN §3). This is the one place the
//! stages are ordered:
//!
//! 1. read the query (`wire::parse_query`); unreadable -> FORMERR or drop, counted;
//! 2. refuse what a caching forwarder does not serve (opcodes other than QUERY, zone transfers);
//! 3. the cache: a fresh hit is answered from stored bytes on the receiving thread;
//! 4. the shortcut for search-path expansions (`shortcut`): NXDOMAIN synthesized here, or a
//!    plan (autopath, shadow) for step 5. It runs after the cache so hits never pay for it;
//! 5. otherwise the upstream router, on the async runtime, with identical in-flight queries
//!    coalesced into one upstream exchange; on failure a stale answer (RFC 8767) or SERVFAIL.
//!
//! Steps 1–4 run synchronously on the listener's thread and never allocate for a hit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::loops::LoopGuard;
use super::shortcut::{Flights, Plan, Shortcut, Verdict};
use crate::amplify::{Tracker, WireBatch, EVENT_BATCH};
use crate::budget::{OwnedCharge, Part};
use crate::cache::{Answer, AnswerKind, Cache, Key, Lookup, OwnedKey, Served};
use crate::config::{Config, ShortcutMode};
use crate::event::{AnswerSource, QueryEvent, Timestamp};
use crate::metrics as m;
use crate::search::shortcut::Reason;
use crate::upstream::Router;
use crate::wire::{self, QueryProblem, QueryView};

/// Transport a query came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// Where the answer to a query goes once it is ready.
#[derive(Clone)]
pub enum ReplyTo {
    Udp(Arc<std::net::UdpSocket>, SocketAddr),
    Tcp(Arc<super::tcp::TcpOut>),
}

impl ReplyTo {
    fn send(&self, bytes: Vec<u8>) {
        match self {
            ReplyTo::Udp(sock, to) => {
                let _ = sock.send_to(&bytes, to);
            }
            // Queued, never dropped: the connection applies back-pressure (proxy::tcp).
            ReplyTo::Tcp(out) => out.push_owed(bytes),
        }
    }
}

/// Everything the request path needs; swapped whole on reload so a query sees one config.
pub struct Engine {
    pub config: Config,
    pub cache: Arc<Cache>,
    pub router: Router,
    /// Client queries coalesced by cache key: the leader resolves under its query's plan and
    /// answers each waiter (rendered for it, stale or SERVFAIL on failure, the client timer
    /// taking out those due). Apart from `internal_flights` on purpose: see there.
    inflight: Mutex<HashMap<OwnedKey, Vec<Waiter>>>,
    /// Queries waiting on upstreams, leaders and coalesced followers alike (shared across
    /// reloads so the bound holds for the process).
    pending: Arc<AtomicUsize>,
    /// Listener address labels (`server` metric label), CoreDNS style `dns://IP:PORT`.
    pub server_label: Arc<str>,
    /// `None` when `shortcut.mode` is `off`.
    pub shortcut: Option<Shortcut>,
    /// In-flight lookups the proxy makes for itself (autopath, ancestor checks). Not one map
    /// with `inflight`: a client flight's answer follows its plan (autopath's CNAME, an RFC
    /// 8020 NXDOMAIN) where these need the upstream's answer for exactly that name, and their
    /// followers take a bare `Answer` where client waiters are rendered, timed and counted.
    /// One map would join a client query with a candidate lookup of the same key, today two
    /// exchanges, and could hand either the other's kind of answer.
    pub(crate) internal_flights: Flights,
    /// Amplification tracking; every answered query becomes a `QueryEvent` (DESIGN §4).
    tracker: Option<Tracker>,
    /// The proxy's traffic as dnstap (`dnstap.output`); set by `proxy::start`.
    pub tap: Option<crate::tap::Tap>,
    /// Forwarding-loop probes out now (shared by the process's engines).
    loops: Arc<LoopGuard>,
    /// This engine among the process's (a reload makes a new one): the listeners' hit
    /// series are keyed by it, not by the engine's address, which a later engine may reuse.
    id: u64,
}

struct Waiter {
    query: Vec<u8>,
    view: QueryView,
    reply: ReplyTo,
    started: Instant,
    proto: Proto,
    client: SocketAddr,
}

/// A query that needs step 5, with everything the answer needs.
pub struct Job {
    pub query: Vec<u8>,
    pub view: QueryView,
    pub zone: Option<usize>,
    pub plan: Plan,
    /// `None` for a prefetch: the client was already answered from cache.
    pub reply: Option<ReplyTo>,
    pub proto: Proto,
    pub client: SocketAddr,
    /// When the query arrived (for the request-duration histogram).
    pub started: Instant,
}

/// What the synchronous part decided.
pub enum Fast {
    /// `out` holds the answer; send it.
    Answered,
    /// Nothing to send (a response packet, or garbage without a header).
    Drop,
    /// Needs upstream work: hand the query to `resolve`.
    Resolve {
        view: QueryView,
        zone: Option<usize>,
        plan: Plan,
    },
    /// `out` holds a cached answer to send, and the entry should be refreshed: call `resolve`
    /// without a reply target, with `plan`: the same plan as the query that filled the entry
    /// (an autopath answer is refreshed by autopath, never by a plain forward).
    Prefetch {
        view: QueryView,
        zone: Option<usize>,
        plan: Plan,
    },
}

impl Engine {
    pub fn new(
        config: Config,
        cache: Arc<Cache>,
        pending: Arc<AtomicUsize>,
        tracker: Option<Tracker>,
    ) -> anyhow::Result<Engine> {
        let router = Router::new(&config.upstreams)?.with_budget(cache.budget().clone());
        let server_label = Arc::from(
            config
                .listen
                .first()
                .map(|a| format!("dns://{a}"))
                .unwrap_or_default()
                .as_str(),
        );
        let shortcut = Shortcut::new(
            &config.shortcut,
            &config.cluster,
            config.cache.negative_max_ttl,
        );
        Ok(Engine {
            config,
            cache,
            router,
            inflight: Mutex::new(HashMap::new()),
            pending,
            server_label,
            shortcut,
            internal_flights: Flights::default(),
            tracker,
            tap: None,
            loops: Arc::default(),
            id: {
                static NEXT: AtomicU64 = AtomicU64::new(1);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
        })
    }

    /// Share the process's forwarding-loop guard (proxy::loops) with this engine.
    pub fn with_loop_guard(mut self, loops: Arc<LoopGuard>) -> Engine {
        self.loops = loops;
        self
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// A query that needs step 5, admitted within the memory budget's `waiting` share: the
    /// task to spawn, holding its charge until it ends. Refused, it is answered now (stale or
    /// SERVFAIL) and `None` returned: under a dead upstream the queue of waiting queries
    /// cannot grow past the budget, however fast queries come.
    pub fn admit(
        self: &Arc<Self>,
        job: Job,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let bytes = WAITING_OVERHEAD + job.query.len();
        match OwnedCharge::try_new(self.cache.budget(), Part::Waiting, bytes) {
            Some(charge) => {
                let e = self.clone();
                Some(async move {
                    e.resolve(job).await;
                    drop(charge);
                })
            }
            None => {
                metrics::counter!(m::OVERLOAD_DROPS, "limit" => "memory_limit").increment(1);
                match job.reply {
                    Some(reply) => {
                        let w = Waiter {
                            query: job.query,
                            view: job.view,
                            reply,
                            started: job.started,
                            proto: job.proto,
                            client: job.client,
                        };
                        self.fail(&w, job.zone, &mut Vec::new(), StaleReason::Memory);
                    }
                    None => self
                        .cache
                        .prefetch_failed(&Key::of_query(&job.query, &job.view)),
                }
                None
            }
        }
    }

    /// Steps 1–4 of the request path. `out` receives an answer when one is ready now.
    pub fn handle_fast(
        &self,
        packet: &[u8],
        proto: Proto,
        client: SocketAddr,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Fast {
        let view = match wire::parse_query(packet) {
            Ok(v) => v,
            Err(QueryProblem::NotAQuery) => {
                self.count_malformed();
                return Fast::Drop;
            }
            Err(QueryProblem::Malformed(_)) => {
                self.count_malformed();
                return if wire::formerr_header_only(packet, out) {
                    Fast::Answered
                } else {
                    Fast::Drop
                };
            }
            Err(QueryProblem::BadOpt(view, _)) => {
                // No larger than the query: its question, and an OPT for the one it sent.
                self.count_malformed();
                wire::minimal_response(packet, &view, wire::RCODE_FORMERR, false, out);
                return Fast::Answered;
            }
        };
        // Our own forwarding-loop probe come back (proxy::loops): answered at once, so it
        // goes round only once.
        if self.loops.watching() && self.loops.came_back(view.question.name_bytes(packet)) {
            wire::minimal_response(packet, &view, wire::RCODE_SERVFAIL, false, out);
            return Fast::Answered;
        }
        let zone = self.router.route(view.question.name_bytes(packet));
        // RFC 1035 §4.1.1: only standard queries are served; others get NOTIMP. Zone transfers
        // are not a forwarder's business.
        let qtype = view.question.qtype;
        // Not an open resolver: clients outside `allow` are refused (a REFUSED answer is no
        // larger than the query, so it amplifies nothing).
        let allowed = self.config.allow.iter().any(|n| n.contains(client.ip()));
        let refuse = if !allowed {
            m::cached_counter(
                m::label_key(11, &[]),
                || metrics::counter!(m::REFUSED_QUERIES, "reason" => "client"),
            )
            .increment(1);
            Some(wire::RCODE_REFUSED as u16)
        } else if view.header.opcode() != 0 {
            Some(wire::RCODE_NOTIMP as u16)
        } else if qtype == wire::TYPE_AXFR || qtype == wire::TYPE_IXFR {
            Some(wire::RCODE_REFUSED as u16)
        } else if view.edns.is_some_and(|e| e.version > 0) {
            // RFC 6891 §6.1.3: we implement EDNS version 0 only; the answer says so with our
            // version (0) in the OPT.
            Some(wire::RCODE_BADVERS)
        } else {
            None
        };
        if let Some(rcode) = refuse {
            self.count_request(&view, zone, proto, client);
            wire::minimal_response_ext(packet, &view, rcode, false, out);
            let sent = Sent::of(&view, proto, now, packet, out, client);
            // A refused client's queries are not its lookups to track.
            let track = if allowed { Track::Yes } else { Track::No };
            self.answered(zone, rcode, 0, AnswerSource::Local, &sent, track);
            return Fast::Answered;
        }
        // ANY is forwarded like every other type: the upstream applies RFC 8482 itself (a
        // CNAME owner gets its CNAME, a missing name NXDOMAIN), and an answer larger than the
        // client's UDP size goes out truncated, so ANY amplifies no more than any query.
        match self
            .cache
            .lookup(packet, &view, now, max_response(proto, &view), out)
        {
            Lookup::Hit {
                kind,
                prefetch,
                rcode,
                answers,
            } => {
                let sent = Sent::of(&view, proto, now, packet, out, client);
                let latency = sent.started.elapsed();
                if m::coredns_names() || self.config.log.queries {
                    self.count_request(&view, zone, proto, client);
                    self.count_cache_hit(kind);
                    self.count_response(zone, rcode, AnswerSource::Cache, &sent, latency);
                } else {
                    self.count_hit(&sent, zone, rcode, kind, latency);
                }
                self.emit(&sent, rcode, answers, AnswerSource::Cache, latency);
                if prefetch {
                    match self.prefetch_plan(packet, &view) {
                        Some(plan) => return Fast::Prefetch { view, zone, plan },
                        None => self.cache.prefetch_failed(&Key::of_query(packet, &view)),
                    }
                }
                Fast::Answered
            }
            Lookup::Stale | Lookup::Miss => {
                self.count_request(&view, zone, proto, client);
                self.count_cache_miss();
                let plan = match &self.shortcut {
                    None => Plan::Forward,
                    Some(sc) => match sc.decide(packet, &view, out) {
                        Verdict::Plan(plan) => plan,
                        Verdict::Nxdomain(reason) => {
                            self.count_shortcut(sc.mode, reason);
                            let nx = wire::RCODE_NXDOMAIN as u16;
                            let sent = Sent::of(&view, proto, now, packet, out, client);
                            let source = AnswerSource::Shortcut;
                            self.answered(zone, nx, 0, source, &sent, Track::Yes);
                            return Fast::Answered;
                        }
                    },
                };
                Fast::Resolve { view, zone, plan }
            }
        }
    }

    /// The plan a refresh of a cached entry follows: the one a miss would take now. `None` when
    /// a miss would be answered by the nxdomain shortcut (nothing to refresh: the entry expires
    /// and the shortcut answers).
    fn prefetch_plan(&self, packet: &[u8], view: &QueryView) -> Option<Plan> {
        match &self.shortcut {
            None => Some(Plan::Forward),
            Some(sc) => sc.plan(packet, view),
        }
    }

    /// Step 5: resolve upstream, coalescing identical questions.
    pub async fn resolve(self: Arc<Self>, job: Job) {
        let Job {
            query,
            view,
            zone,
            plan,
            reply,
            proto,
            client,
            started,
        } = job;
        let key = Key::of_query(&query, &view);
        let owned = key.to_owned_key();
        if reply.is_none() {
            m::cached_counter(m::label_key(7, &[]), || {
                metrics::counter!(m::CACHE_PREFETCH)
            })
            .increment(1);
        }
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.config.server.max_inflight {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!(m::OVERLOAD_DROPS, "limit" => "max_inflight").increment(1);
            match reply {
                Some(r) => self.fail(
                    &Waiter {
                        query,
                        view,
                        reply: r,
                        started,
                        proto,
                        client,
                    },
                    zone,
                    &mut Vec::new(),
                    StaleReason::Overload,
                ),
                None => self.cache.prefetch_failed(&key),
            }
            return;
        }
        // A query with an EDNS Client Subnet option may get an answer tailored to its network
        // (RFC 7871 §7.3), and one with RD clear asks for what the upstream holds without
        // recursing (a partial CNAME chain, say): either is asked as it is, for this client
        // alone, neither joined to another client's query nor cached. RD is not in the key: a
        // cached answer serves RD=0 too, and a prefetch (no client) asks with RD.
        let prefetch = reply.is_none();
        let tailored = wire::has_ecs_option(&query, view.edns);
        let private = tailored || (!prefetch && view.header.flags & wire::FLAG_RD == 0);
        if !private {
            let mut inflight = self.inflight.lock();
            if let Some(waiters) = inflight.get_mut(&owned) {
                match reply {
                    Some(r) => waiters.push(Waiter {
                        query,
                        view,
                        reply: r,
                        started,
                        proto,
                        client,
                    }),
                    None => {
                        self.pending.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                return;
            }
            inflight.insert(owned.clone(), Vec::new());
        }

        let mut leader = reply.map(|r| Waiter {
            query: query.clone(),
            view,
            reply: r,
            started,
            proto,
            client,
        });
        // A prefetch (no client waiting) refreshes what an autopath answer is built from too.
        let (result, source) = {
            let rd = !private || view.header.flags & wire::FLAG_RD != 0;
            let upstream = self.answer_for(&query, &view, zone, &plan, prefetch, rd);
            // A private query has no flight of its own for followers to join.
            let flight = (!private).then_some(&owned);
            self.with_client_timer(upstream, &query, &view, flight, &mut leader, zone)
                .await
        };
        // RFC 8767: SERVFAIL and REFUSED from every upstream count as failures when a stale
        // answer exists (CoreDNS says SERVFAIL when its own upstreams fail); with nothing
        // stale the upstream's answer is relayed as it is.
        let mut reason = StaleReason::NoAnswer;
        let result = match result {
            Some((_, info))
                if source == AnswerSource::Upstream
                    && (info.rcode == wire::RCODE_SERVFAIL as u16
                        || info.rcode == wire::RCODE_REFUSED as u16)
                    && self.has_stale(&query, &view) =>
            {
                reason = if info.rcode == wire::RCODE_SERVFAIL as u16 {
                    StaleReason::Servfail
                } else {
                    StaleReason::Refused
                };
                None
            }
            r => r,
        };
        let mut stored = false;
        let answer = result.map(|(bytes, info)| {
            let a = Arc::new(Answer::from_response(&bytes, &info, self.cache.config()));
            if !private {
                stored = store_in_cache(&self.cache, &key, &a);
            }
            a
        });
        let waiters = if private {
            Vec::new()
        } else {
            self.inflight.lock().remove(&owned).unwrap_or_default()
        };
        if !stored && (!private || prefetch) {
            // The refresh is over with nothing new stored (an error, or an answer that cannot
            // be cached): a later hit may prefetch again. This also ends a prefetch that
            // joined this flight, which has no way to learn the outcome itself. After the
            // flight is gone, so the prefetch of the next hit makes a flight of its own.
            self.cache.prefetch_failed(&key);
        }
        let mut out = Vec::with_capacity(512);
        // This job and its coalesced waiters (the leader counts as the job, answered or not).
        let n = waiters.len() + 1;
        for w in leader.into_iter().chain(waiters) {
            match &answer {
                Some(a) => {
                    a.render(
                        &w.query,
                        &w.view,
                        Served::Fresh,
                        max_response(w.proto, &w.view),
                        &mut out,
                    );
                    // The event goes before the answer: the client's next query (the walk's next
                    // candidate) can then never reach the tracker ahead of this one.
                    let sent = Sent::of(&w.view, w.proto, w.started, &w.query, &out, w.client);
                    let rcode = a.rcode_for(&w.view);
                    let answers = if rcode == a.rcode { a.answers } else { 0 };
                    self.answered(zone, rcode, answers, source, &sent, Track::Yes);
                    self.flush_events();
                    w.reply.send(std::mem::take(&mut out));
                }
                None => self.fail(&w, zone, &mut out, reason),
            }
        }
        self.pending.fetch_sub(n, Ordering::Relaxed);
    }

    /// The answer to relay: autopath's when the plan says so, else upstream's (in shadow mode
    /// compared with what the shortcut would have said). `None`: no answer (stale or SERVFAIL).
    async fn answer_for(
        &self,
        query: &[u8],
        view: &QueryView,
        zone: Option<usize>,
        plan: &Plan,
        refresh: bool,
        rd: bool,
    ) -> (Option<(Vec<u8>, wire::ResponseInfo)>, AnswerSource) {
        let local = match plan {
            Plan::Autopath {
                candidates,
                reason,
                soa_zone,
            } => {
                // When autopath cannot decide (a candidate failed), the query is not forwarded:
                // the upstream's NXDOMAIN for this expansion, cached beside the other type's
                // synthesized CNAME, would split A and AAAA (coredns#3765), and glibc then
                // stops its walk with EAI_NONAME. A failure is an honest SERVFAIL (or stale),
                // on which glibc walks on and musl reports EAI_AGAIN, as without autopath.
                let autopath = self.autopath(query, view, candidates, soa_zone, refresh);
                let Some(bytes) = autopath.await else {
                    return (None, AnswerSource::Shortcut);
                };
                Some((bytes, *reason))
            }
            Plan::Ancestors(ancestors) => self
                .ancestors_nxdomain(query, view, ancestors)
                .await
                .map(|b| (b, Reason::Zone)),
            Plan::Forward | Plan::Shadow(_) => None,
        };
        if let Some((bytes, reason)) = local {
            if let Ok(info) = wire::parse_response(&bytes) {
                if let Some(sc) = &self.shortcut {
                    self.count_shortcut(sc.mode, reason);
                }
                return (Some((bytes, info)), AnswerSource::Shortcut);
            }
        }
        let result = match zone {
            Some(z) => self.forward(z, query, view, rd).await,
            None => None,
        };
        if let (Plan::Shadow(_), Some(r)) = (plan, &result) {
            // The shortcut would have said NXDOMAIN; upstream says the name exists.
            if r.info.rcode != wire::RCODE_NXDOMAIN as u16 {
                m::cached_counter(m::label_key(9, &[]), || {
                    metrics::counter!(m::SHADOW_DISAGREEMENTS)
                })
                .increment(1);
                if let Ok(name) = wire::name_to_string(query, view.question.name_start) {
                    tracing::info!(
                        name,
                        rcode = r.info.rcode,
                        "shadow: the shortcut would have answered NXDOMAIN for a name that exists"
                    );
                }
            }
        }
        (result.map(|r| (r.bytes, r.info)), AnswerSource::Upstream)
    }

    /// Whether the cache holds an expired answer for this query still within `serve_stale`.
    fn has_stale(&self, query: &[u8], view: &QueryView) -> bool {
        let mut scratch = Vec::new();
        self.cache
            .serve_stale(query, view, Instant::now(), u16::MAX as usize, &mut scratch)
            .is_some()
    }

    /// Await the upstream while running the client response timer (RFC 8767 §5,
    /// `cache.stale_after`): each client of this flight (the leader, whose `reply` is taken,
    /// and coalesced waiters) still unanswered that long after its query arrived gets the stale
    /// answer, if the cache has one. The upstream query goes on and refreshes the cache.
    async fn with_client_timer<F>(
        &self,
        upstream: F,
        query: &[u8],
        view: &QueryView,
        key: Option<&OwnedKey>,
        leader: &mut Option<Waiter>,
        zone: Option<usize>,
    ) -> F::Output
    where
        F: std::future::Future,
    {
        let timer = self.config.cache.stale_after;
        tokio::pin!(upstream);
        if timer.is_zero() || !self.has_stale(query, view) {
            return upstream.await;
        }
        let started = |w: &Waiter| w.started;
        loop {
            // The earliest client still waiting; with none, check again a timer from now for
            // clients that join the flight meanwhile.
            let mut earliest = leader.as_ref().map(started);
            if let Some(ws) = key.and_then(|k| {
                self.inflight
                    .lock()
                    .get(k)
                    .map(|ws| ws.iter().map(started).min())
            }) {
                earliest = ws.into_iter().chain(earliest).min();
            }
            let at = earliest.unwrap_or_else(Instant::now) + timer;
            tokio::select! {
                out = &mut upstream => return out,
                _ = tokio::time::sleep_until(at.into()) => {}
            }
            if !self.has_stale(query, view) {
                return upstream.await;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            let mut inflight = self.inflight.lock();
            if let Some(ws) = key.and_then(|k| inflight.get_mut(k)) {
                let mut i = 0;
                while i < ws.len() {
                    if ws[i].started + timer <= now {
                        due.push(ws.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            drop(inflight);
            // Coalesced waiters leave the flight's count now; the leader is the job itself and
            // is counted out when the upstream query ends.
            self.pending.fetch_sub(due.len(), Ordering::Relaxed);
            if leader.as_ref().is_some_and(|l| l.started + timer <= now) {
                due.extend(leader.take());
            }
            let mut out = Vec::with_capacity(512);
            for w in &due {
                self.fail(w, zone, &mut out, StaleReason::ClientTimer);
            }
        }
    }

    /// The client's query to the zone's upstreams, as `wire::upstream_query` makes it (RD as
    /// `rd`). An upstream that answers FORMERR without an OPT does not speak EDNS: the query is
    /// asked again without its OPT (RFC 6891 §7).
    pub(super) async fn forward(
        &self,
        zone: usize,
        query: &[u8],
        view: &QueryView,
        rd: bool,
    ) -> Option<crate::upstream::Reply> {
        let sent = Instant::now();
        let asked = wire::upstream_query(query, view, rd, true);
        let reply = self.router.exchange(zone, &asked).await.ok()?;
        if let Some(tap) = &self.tap {
            tap.forwarder(reply.from, &asked, &reply.bytes, sent.elapsed());
        }
        if reply.info.rcode == wire::RCODE_FORMERR as u16
            && reply.info.edns.is_none()
            && view.edns.is_some()
        {
            let plain = wire::upstream_query(query, view, rd, false);
            return self.router.exchange(zone, &plain).await.ok();
        }
        Some(reply)
    }

    /// Upstreams failed: a stale answer if the cache has one (RFC 8767), else SERVFAIL.
    fn fail(&self, w: &Waiter, zone: Option<usize>, out: &mut Vec<u8>, reason: StaleReason) {
        let max_len = max_response(w.proto, &w.view);
        if let Some((rcode, _)) =
            self.cache
                .serve_stale(&w.query, &w.view, Instant::now(), max_len, out)
        {
            m::cached_counter(
                m::label_key(8, &[reason as u64]),
                || metrics::counter!(m::CACHE_SERVED_STALE, "reason" => reason.as_str()),
            )
            .increment(1);
            let sent = Sent::of(&w.view, w.proto, w.started, &w.query, out, w.client);
            self.answered(zone, rcode, 1, AnswerSource::Stale, &sent, Track::Yes);
        } else {
            let servfail = wire::RCODE_SERVFAIL as u16;
            wire::minimal_response(&w.query, &w.view, wire::RCODE_SERVFAIL, false, out);
            let sent = Sent::of(&w.view, w.proto, w.started, &w.query, out, w.client);
            // A query shed before it was forwarded got its SERVFAIL from the proxy alone; one
            // whose upstreams were asked and did not answer, from the upstream exchange.
            let source = match reason {
                StaleReason::Overload | StaleReason::Memory => AnswerSource::Local,
                _ => AnswerSource::Upstream,
            };
            self.answered(zone, servfail, 0, source, &sent, Track::Yes);
        }
        self.flush_events();
        w.reply.send(std::mem::take(out));
    }

    /// One answer sent: counted (`count_response`) and, unless `track` says no, handed to the
    /// tracker and dnstap (`emit`), with one clock read for both.
    fn answered(
        &self,
        zone: Option<usize>,
        rcode: u16,
        answers: u16,
        source: AnswerSource,
        sent: &Sent,
        track: Track,
    ) {
        let latency = sent.started.elapsed();
        self.count_response(zone, rcode, source, sent, latency);
        if let Track::Yes = track {
            self.emit(sent, rcode, answers, source, latency);
        }
    }

    /// Hand the tracker (and dnstap, when on) one answered query. Off the packet path as far as
    /// it can be: the wire name copied into this thread's batch, non-blocking channel sends.
    fn emit(&self, sent: &Sent, rcode: u16, answers: u16, source: AnswerSource, latency: Duration) {
        if let Some(tap) = &self.tap {
            tap.client(sent.client, sent.query, sent.answer, latency);
        }
        if self.tracker.is_none() {
            return;
        }
        let event = QueryEvent {
            time: wall_time(sent.started),
            client: sent.client.ip(),
            client_port: Some(sent.client.port()),
            // Made from the wire name on the tracker thread (`WireBatch`).
            qname: String::new(),
            qtype: sent.view.question.qtype,
            rcode: Some(rcode),
            answers: Some(answers),
            latency: Some(latency),
            source: Some(source),
        };
        let full = PENDING_EVENTS.with(|p| {
            let mut p = p.borrow_mut();
            p.push(event, sent.view.question.name_bytes(sent.query));
            p.len() >= EVENT_BATCH
        });
        if full {
            self.flush_events();
        }
    }

    /// Hand this thread's buffered events to the tracker. Listeners call it after a receive
    /// batch and before sending its answers, so a client's next query can never reach the
    /// tracker ahead of the answer that prompted it.
    pub fn flush_events(&self) {
        Self::flush_hits();
        if self.config.log.queries {
            crate::querylog::flush();
        }
        let Some(t) = &self.tracker else { return };
        PENDING_EVENTS.with(|p| t.hand_over(&mut p.borrow_mut()));
    }

    fn count_request(
        &self,
        view: &QueryView,
        zone: Option<usize>,
        proto: Proto,
        client: SocketAddr,
    ) {
        // CoreDNS's family label: 1 for IPv4 clients, 2 for IPv6.
        let family = if client.is_ipv4() { 1u64 } else { 2 };
        let (qtype, type_name) = m::type_label(view.question.qtype);
        let zkey = zone.map_or(0, |z| z as u64 + 1);
        let key = m::label_key(1, &[self.id, zkey, proto as u64, family, qtype]);
        m::cached_counter(key, || {
            self.requests_counter(zone, proto, family, type_name)
        })
        .increment(1);
        if m::coredns_names() {
            m::cached_counter(key ^ CORE, || {
                metrics::counter!(m::COREDNS_REQUESTS,
                    "server" => self.server_label.to_string(),
                    "zone" => self.zone_label(zone),
                    "proto" => proto.as_str(),
                    "family" => if family == 1 { "1" } else { "2" },
                    "type" => type_name)
            })
            .increment(1);
        }
    }

    /// The `zone` label: the upstream zone the name routes to, like the server block a query
    /// lands in under NodeLocal DNSCache's CoreDNS (`cluster.local.`, `.`).
    fn zone_label(&self, zone: Option<usize>) -> String {
        zone.map(|z| self.router.zone(z).label.to_string())
            .unwrap_or_else(|| ".".into())
    }

    /// Count one answer sent: the response by rcode and source, and its duration (every answer,
    /// whatever its source, so the histogram's count equals the responses); with
    /// `metrics.coredns_names` also CoreDNS's responses, duration and sizes.
    fn count_response(
        &self,
        zone: Option<usize>,
        rcode: u16,
        source: AnswerSource,
        sent: &Sent,
        elapsed: Duration,
    ) {
        if self.config.log.queries {
            sent.log(rcode, elapsed);
        }
        let zkey = zone.map_or(0, |z| z as u64 + 1);
        let engine = self.id;
        let key = m::label_key(2, &[engine, zkey, rcode as u64, source as u64]);
        m::cached_counter(key, || self.responses_counter(zone, rcode, source)).increment(1);
        let (qtype, type_name) = m::type_label(sent.view.question.qtype);
        let elapsed = elapsed.as_secs_f64();
        let type_label = || type_name.to_string();
        m::record_fixed(
            m::label_key(3, &[engine, zkey, source as u64, qtype]),
            || self.duration_histogram(zone, source, type_name),
            elapsed,
        );
        if !m::coredns_names() {
            return;
        }
        m::cached_counter(key ^ CORE, || {
            metrics::counter!(m::COREDNS_RESPONSES,
                "server" => self.server_label.to_string(),
                "zone" => self.zone_label(zone),
                "rcode" => crate::event::rcode_name(rcode).into_owned(),
                "plugin" => m::plugin_of(source.as_str()))
        })
        .increment(1);
        m::record_fixed(
            m::label_key(60, &[engine, zkey, qtype]),
            || {
                m::fixed_histogram(
                    m::COREDNS_REQUEST_DURATION,
                    &[
                        ("server", self.server_label.to_string()),
                        ("zone", self.zone_label(zone)),
                        ("type", type_label()),
                    ],
                )
            },
            elapsed,
        );
        let proto = sent.proto;
        let sizes = || {
            [
                ("server", self.server_label.to_string()),
                ("zone", self.zone_label(zone)),
                ("proto", proto.as_str().to_string()),
            ]
        };
        m::record_fixed(
            m::label_key(61, &[engine, zkey, proto as u64]),
            || m::fixed_histogram(m::COREDNS_REQUEST_SIZE, &sizes()),
            sent.query.len() as f64,
        );
        m::record_fixed(
            m::label_key(62, &[engine, zkey, proto as u64]),
            || m::fixed_histogram(m::COREDNS_RESPONSE_SIZE, &sizes()),
            sent.len as f64,
        );
    }

    fn count_shortcut(&self, mode: ShortcutMode, reason: Reason) {
        m::cached_counter(m::label_key(10, &[self.id, mode as u64, reason as u64]), || {
            metrics::counter!(m::SHORTCUT_ANSWERS, "mode" => mode.as_str(), "reason" => reason.as_str())
        })
        .increment(1);
    }

    /// A cache hit's series (request, hit, response, duration) with one memo lookup: the
    /// same series `count_request`, `count_cache_hit` and `count_response` move, for the
    /// path most answers take (without CoreDNS's names or the query log).
    fn count_hit(
        &self,
        sent: &Sent,
        zone: Option<usize>,
        rcode: u16,
        kind: AnswerKind,
        latency: Duration,
    ) {
        let family = if sent.client.is_ipv4() { 1u64 } else { 2 };
        let (qtype, type_name) = m::type_label(sent.view.question.qtype);
        let key = HitKey {
            zone: zone.map_or(0, |z| z as u64 + 1),
            labels: (sent.proto as u64)
                | family << 8
                | qtype << 16
                | u64::from(rcode) << 32
                | (kind as u64) << 48,
        };
        HIT_SERIES.with(|memo| {
            let (engine, memo) = &mut *memo.borrow_mut();
            if *engine != self.id {
                // A reload's new engine: the old one's series go (their sums added first), so
                // a listener keeps the series of one engine, not of every reload since it
                // started; and a key needs no engine in it.
                memo.flush(HitSeries::add_pending);
                *memo = m::SummedSeries::default();
                *engine = self.id;
            }
            let s = memo.touch(key, || HitSeries {
                requests: self.requests_counter(zone, sent.proto, family, type_name),
                hits: Self::cache_hits_counter(kind),
                responses: self.responses_counter(zone, rcode, AnswerSource::Cache),
                duration: m::PendingHistogram::new(self.duration_histogram(
                    zone,
                    AnswerSource::Cache,
                    type_name,
                )),
                pending: 0,
            });
            s.pending += 1;
            s.duration.record(latency.as_secs_f64());
        });
    }

    /// Add this thread's cache hits since the last call to their counters: once a receive
    /// batch, not three shared atomic updates an answer (each of them two, with the exporter's
    /// recency tracking: 3% of the listener's CPU in `perf` at full load). `flush_events` calls
    /// it, so the counts are in before the batch's answers are sent.
    fn flush_hits() {
        HIT_SERIES.with(|memo| memo.borrow_mut().1.flush(HitSeries::add_pending));
    }

    fn requests_counter(
        &self,
        zone: Option<usize>,
        proto: Proto,
        family: u64,
        type_name: &'static str,
    ) -> metrics::Counter {
        metrics::counter!(m::DNS_REQUESTS,
            "server" => self.server_label.to_string(),
            "zone" => self.zone_label(zone),
            "proto" => proto.as_str(),
            "family" => if family == 1 { "1" } else { "2" },
            "type" => type_name)
    }

    fn responses_counter(
        &self,
        zone: Option<usize>,
        rcode: u16,
        source: AnswerSource,
    ) -> metrics::Counter {
        metrics::counter!(m::DNS_RESPONSES,
            "server" => self.server_label.to_string(),
            "zone" => self.zone_label(zone),
            "rcode" => crate::event::rcode_name(rcode).into_owned(),
            "source" => source.as_str())
    }

    fn duration_histogram(
        &self,
        zone: Option<usize>,
        source: AnswerSource,
        type_name: &'static str,
    ) -> Arc<m::FixedHistogram> {
        m::fixed_histogram(
            m::DNS_REQUEST_DURATION,
            &[
                ("server", self.server_label.to_string()),
                ("zone", self.zone_label(zone)),
                ("source", source.as_str().into()),
                ("type", type_name.to_string()),
            ],
        )
    }

    fn cache_hits_counter(kind: AnswerKind) -> metrics::Counter {
        metrics::counter!(m::CACHE_HITS, "type" => kind.as_label())
    }

    fn count_cache_hit(&self, kind: AnswerKind) {
        m::cached_counter(m::label_key(4, &[kind as u64]), || {
            Self::cache_hits_counter(kind)
        })
        .increment(1);
        if m::coredns_names() {
            m::cached_counter(
                m::label_key(63, &[self.id, kind as u64]),
                || metrics::counter!(m::COREDNS_CACHE_HITS, "server" => self.server_label.to_string(), "type" => kind.as_label()),
            )
            .increment(1);
        }
    }

    fn count_cache_miss(&self) {
        m::cached_counter(m::label_key(5, &[]), || metrics::counter!(m::CACHE_MISSES)).increment(1);
        if m::coredns_names() {
            m::cached_counter(
                m::label_key(64, &[self.id]),
                || metrics::counter!(m::COREDNS_CACHE_MISSES, "server" => self.server_label.to_string()),
            )
            .increment(1);
        }
    }

    fn count_malformed(&self) {
        m::cached_counter(m::label_key(6, &[]), || {
            metrics::counter!(m::MALFORMED_QUERIES)
        })
        .increment(1);
    }
}

/// Why a stale answer (RFC 8767) was served: the `reason` label of
/// `ndots_cache_served_stale_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleReason {
    /// No usable reply from any upstream (timeouts, connection errors).
    NoAnswer,
    /// Every upstream answered SERVFAIL.
    Servfail,
    /// Every upstream answered REFUSED.
    Refused,
    /// The client response timer (`cache.stale_after`) ran out first.
    ClientTimer,
    /// `server.max_inflight` was reached.
    Overload,
    /// The memory budget's `waiting` share (`server.memory_limit`) was full.
    Memory,
}

impl StaleReason {
    pub const ALL: [StaleReason; 6] = [
        StaleReason::NoAnswer,
        StaleReason::Servfail,
        StaleReason::Refused,
        StaleReason::ClientTimer,
        StaleReason::Overload,
        StaleReason::Memory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StaleReason::NoAnswer => "no_answer",
            StaleReason::Servfail => "servfail",
            StaleReason::Refused => "refused",
            StaleReason::ClientTimer => "client_timer",
            StaleReason::Overload => "overload",
            StaleReason::Memory => "memory",
        }
    }
}

/// Flips a `ndots_` series' memo key into its CoreDNS twin's.
const CORE: u64 = 0x5a5a_0000_0000_0001;

/// One answer sent, as the metrics and the query log see it.
#[derive(Clone, Copy)]
struct Sent<'a> {
    query: &'a [u8],
    view: &'a QueryView,
    client: SocketAddr,
    proto: Proto,
    started: Instant,
    answer: &'a [u8],
    /// The answer's header flags and size.
    flags: u16,
    len: usize,
}

impl<'a> Sent<'a> {
    fn of(
        view: &'a QueryView,
        proto: Proto,
        started: Instant,
        query: &'a [u8],
        answer: &'a [u8],
        client: SocketAddr,
    ) -> Sent<'a> {
        Sent {
            query,
            answer,
            view,
            client,
            proto,
            started,
            flags: answer
                .get(2..4)
                .map_or(0, |f| u16::from_be_bytes([f[0], f[1]])),
            len: answer.len(),
        }
    }

    /// `log.queries`: the CoreDNS `log` line for this answer.
    fn log(&self, rcode: u16, elapsed: std::time::Duration) {
        let name = wire::question_name_to_string(self.query, &self.view.question);
        crate::querylog::push(&crate::querylog::Entry {
            client: self.client,
            id: self.view.header.id,
            qtype: self.view.question.qtype,
            qclass: self.view.question.qclass,
            name: &name,
            proto: self.proto.as_str(),
            size: self.query.len(),
            dnssec_ok: self.view.dnssec_ok(),
            bufsize: max_response(self.proto, self.view),
            rcode,
            flags: self.flags,
            answer_size: self.len,
            duration: elapsed,
            at: Timestamp::now(),
        });
    }
}

/// Bytes a query waiting on upstreams holds besides its own: the spawned task with its
/// `resolve` future and its first upstream attempt (a test checks both fit), the answer being
/// built. Charged to the memory budget's `waiting` share. The future is sized for its largest
/// path (autopath's two joined candidate lookups, the client timer): 9.4 KB measured after
/// issues 13 and 14 met, 9.5 KB in session 31; in session 32 the upstream attempts moved out
/// of it into boxes of their own (7.3 KB, and 2 KiB for the first attempt,
/// `upstream::ATTEMPT_OVERHEAD`; one sent again is charged apart), so a 256 MiB budget still
/// holds ~5,000 waiting queries.
pub const WAITING_OVERHEAD: usize = 10 * 1024 + 512;

/// Whether an answer goes to the tracker and dnstap (`Engine::answered`).
enum Track {
    Yes,
    No,
}

/// Store an upstream's answer and count every entry it evicted, by kind. Whether it was
/// stored (an uncacheable answer is not).
pub(super) fn store_in_cache(cache: &Cache, key: &Key, answer: &Answer) -> bool {
    let inserted = cache.insert(key, answer, Instant::now());
    for (kind, n) in [
        (AnswerKind::Success, inserted.evicted.success),
        (AnswerKind::Denial, inserted.evicted.denial),
    ] {
        if n > 0 {
            metrics::counter!(m::CACHE_EVICTIONS, "type" => kind.as_label()).increment(n as u64);
        }
    }
    inserted.stored
}

/// The wall-clock time of `at`, from a per-thread pair of clock readings taken at most a
/// second apart: an event's time without a `clock_gettime(CLOCK_REALTIME)` per answer. A
/// wall-clock step shows in event times within a second.
fn wall_time(at: Instant) -> Timestamp {
    /// The readings (monotonic, wall) taken last, and the last instant asked about with its
    /// answer: a receive batch's answers share their start.
    #[derive(Clone, Copy)]
    struct Clock {
        base: Option<(Instant, Timestamp)>,
        last: Option<(Instant, Timestamp)>,
    }
    thread_local! {
        static CLOCK: std::cell::Cell<Clock> = const {
            std::cell::Cell::new(Clock { base: None, last: None })
        };
    }
    let mut clock = CLOCK.get();
    if let Some((last, t)) = clock.last {
        if last == at {
            return t;
        }
    }
    // `at` on either side of the readings (a batch's start time is read before them).
    let offset = |(mono, wall): (Instant, Timestamp)| match at.checked_duration_since(mono) {
        Some(d) => (d, Timestamp(wall.0 + d.as_micros() as u64)),
        None => {
            let d = mono.duration_since(at);
            (d, Timestamp(wall.0.saturating_sub(d.as_micros() as u64)))
        }
    };
    let t = match clock.base.map(offset) {
        Some((distance, t)) if distance < Duration::from_secs(1) => t,
        _ => {
            let pair = (Instant::now(), Timestamp::now());
            clock.base = Some(pair);
            offset(pair).1
        }
    };
    clock.last = Some((at, t));
    CLOCK.set(clock);
    t
}

/// The series one kind of cache hit moves (`Engine::count_hit`).
struct HitSeries {
    requests: metrics::Counter,
    hits: metrics::Counter,
    responses: metrics::Counter,
    duration: m::PendingHistogram,
    /// Hits counted here and not yet added to the three counters (`Engine::flush_hits`).
    pending: u64,
}

impl HitSeries {
    /// Add the pending hits to the three counters and their latencies to the histogram.
    fn add_pending(&mut self) {
        self.requests.increment(self.pending);
        self.hits.increment(self.pending);
        self.responses.increment(self.pending);
        self.pending = 0;
        self.duration.flush();
    }
}

/// A cache hit's label set within one engine: its zone (0 for none, else index + 1) and,
/// packed, the protocol, address family, type label (`metrics::type_label`'s number), RCODE
/// (extended: 12 bits) and answer kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct HitKey {
    zone: u64,
    labels: u64,
}

thread_local! {
    /// A listener thread's cache-hit series, with the id of the engine they belong to.
    static HIT_SERIES: std::cell::RefCell<(u64, m::SummedSeries<HitKey, HitSeries>)> =
        std::cell::RefCell::new((0, m::SummedSeries::default()));
}

thread_local! {
    static PENDING_EVENTS: std::cell::RefCell<WireBatch> =
        std::cell::RefCell::new(WireBatch::with_capacity(EVENT_BATCH));
}

/// The largest answer this client takes: its EDNS size over UDP, 64 KiB over TCP.
fn max_response(proto: Proto, view: &QueryView) -> usize {
    match proto {
        Proto::Udp => view.max_udp_response(),
        Proto::Tcp => u16::MAX as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer's event time is the wall time of its start, whether the start is before the
    /// thread's clock readings (a batch read earlier), after them, or far from them.
    #[test]
    fn wall_time_is_the_wall_time_of_the_instant() {
        let close = |a: Timestamp, b: Timestamp| a.0.abs_diff(b.0) < 200_000;
        let now = Instant::now();
        let wall = Timestamp::now();
        assert!(close(wall_time(now), wall));
        // Read before the per-thread base was taken, then after it (past the memo of the
        // last instant), then 5 s back.
        assert!(close(wall_time(now + Duration::from_nanos(1)), wall));
        assert!(close(wall_time(now), wall));
        let later = Instant::now();
        assert!(close(wall_time(later), Timestamp::now()));
        let earlier = now - Duration::from_secs(5);
        let want = Timestamp(wall.0 - 5_000_000);
        assert!(close(wall_time(earlier), want));
    }
}
