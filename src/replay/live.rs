//! Live replay (`--target HOST:PORT`): send each lookup's walk to a real server and measure.
//!
//! One thread drives many lookups at once: each lookup is a [`Walker`]; its current candidate's
//! queries (an A/AAAA pair at once, as the stubs send them) go out on one of a few connected,
//! non-blocking UDP sockets, and the next candidate is sent when the answers arrive. Replies
//! are matched on socket + ID, then checked against the question we asked (RFC 5452 §9.1);
//! anything else is dropped and counted. No query is allocated: names are encoded into a
//! per-lookup buffer once per candidate, messages are built in one reused buffer, and
//! latencies go into hdrhistograms (microseconds). A captured client's lookups always leave
//! from the same socket; to a loopback target each socket binds its own source address
//! (127.0.0.2, 127.0.0.3, ...), so the target sees several clients as it would from a node.
//!
//! Pacing: lookups start at the captured pace (`--speed` scales it), or queries go out at
//! `--rate` per second (a token bucket), or as fast as the in-flight bound allows. At most
//! `max_inflight` queries are outstanding; a query unanswered after `timeout` is a timeout
//! (what a stub sees), and its lookup moves on as the stub model says.

use std::collections::{BTreeMap, VecDeque};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::search::{Answer, Family, ResolverSettings, Stub, WalkTally, Walker};
use crate::wire;

/// How fast to send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Lookups start at their captured times, divided by `speed`.
    Captured { speed: f64 },
    /// Queries per second.
    Rate(f64),
    /// As fast as the in-flight bound allows.
    Max,
}

#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub target: SocketAddr,
    pub pace: Pace,
    pub max_inflight: usize,
    pub timeout: Duration,
    pub sockets: usize,
}

/// What one live run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveFigures {
    pub sent: u64,
    pub answered: u64,
    pub timeouts: u64,
    /// Replies that matched no query we had outstanding (late, wrong ID or question).
    pub unmatched_replies: u64,
    pub rcodes: BTreeMap<String, u64>,
    /// The whole run, waiting out the last timeouts included.
    pub seconds: f64,
    /// Answered queries over the time from the first query sent to the last answer: the
    /// rate the target kept up (the wait for lost queries to time out at the end is not
    /// sending time).
    pub queries_per_second: f64,
    /// Per-query latency quantiles, milliseconds.
    pub query_ms: Quantiles,
    /// Per-lookup latency (first query sent to the walk's end), milliseconds.
    pub lookup_ms: Quantiles,
    /// Per-query latency histogram: `[[upper bound ms, queries], ...]` on doubling buckets.
    pub query_ms_histogram: Vec<[f64; 2]>,
    pub lookup_ms_histogram: Vec<[f64; 2]>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

fn quantiles(h: &Histogram<u64>) -> Quantiles {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.is_empty() {
        return Quantiles::default();
    }
    Quantiles {
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

/// Doubling buckets from 0.05 ms: `[[upper bound ms, count], ...]`, empty tail trimmed.
fn buckets(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    let mut out = Vec::new();
    let mut lo = 0u64;
    let mut hi = 50u64;
    while lo <= h.max() && !h.is_empty() {
        let n = h.count_between(lo, hi.saturating_sub(1));
        out.push([hi as f64 / 1000.0, n as f64]);
        lo = hi;
        hi *= 2;
    }
    out
}

/// One lookup to replay live.
pub struct Job<'a> {
    /// Microseconds after the first lookup's start (captured pace).
    pub offset_us: u64,
    pub name: &'a str,
    pub stub: Stub,
    pub family: Family,
    /// A query type that replaces A in single-type walks (SRV, TXT, ...); 0 keeps the stub's.
    pub qtype: u16,
    /// The captured client, as a number: its lookups leave from the same socket.
    pub client: u32,
    pub settings: &'a ResolverSettings,
}

/// What one lookup did live.
pub struct JobResult {
    /// The candidate that gave addresses, if any.
    pub result: Option<String>,
    pub tally: WalkTally,
    /// Queries the proxy's shortcut answered locally (not sent).
    pub local: u32,
    pub duration: Option<Duration>,
}

const NIL: u32 = u32::MAX;

struct Running {
    walker: Walker,
    job: u32,
    client: u32,
    qtype: u16,
    started: Option<Instant>,
    /// The current candidate, wire-encoded.
    qname_wire: Vec<u8>,
    /// The queries of the current candidate: (type, answer once known), in send order.
    pending: [(u16, Option<Answer>); 2],
    n_pending: u8,
    fed: u8,
    local: u32,
}

struct Inflight {
    run: u32,
    slot: u8,
    sock: u8,
    id: u16,
    sent: Option<Instant>,
    generation: u32,
    live: bool,
}

/// Replay `jobs` (in start order) against `opts.target`. `local` says which queries a proxy in
/// front would answer itself (shortcut `nxdomain`): they get NXDOMAIN without being sent.
pub fn run(
    jobs: &[Job<'_>],
    opts: &LiveOptions,
    mut local: impl FnMut(&str, u16) -> bool,
) -> std::io::Result<(Vec<JobResult>, LiveFigures)> {
    let sockets: Vec<UdpSocket> = (0..opts.sockets.max(1))
        .map(|i| {
            // To a loopback target each socket gets its own source address (127.0.0.2, ...),
            // so the target sees as many clients as there are sockets, as a node's pods are.
            let bind: SocketAddr = match opts.target {
                SocketAddr::V4(t) if t.ip().is_loopback() => SocketAddr::from((
                    std::net::Ipv4Addr::new(127, 0, ((2 + i as u32) >> 8) as u8, (2 + i) as u8),
                    0,
                )),
                SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("address"),
                SocketAddr::V6(_) => "[::]:0".parse().expect("address"),
            };
            let s = UdpSocket::bind(bind)?;
            s.connect(opts.target)?;
            s.set_nonblocking(true)?;
            let sock = socket2::SockRef::from(&s);
            let _ = sock.set_recv_buffer_size(4 << 20);
            let _ = sock.set_send_buffer_size(4 << 20);
            Ok(s)
        })
        .collect::<std::io::Result<_>>()?;
    let mut ids: Vec<Vec<u32>> = vec![vec![NIL; 65536]; sockets.len()];
    let mut next_id: Vec<u16> = (0..sockets.len())
        .map(|i| (i as u16).wrapping_mul(7919))
        .collect();
    let mut inflight: Vec<Inflight> = Vec::new();
    let mut free_inflight: Vec<u32> = Vec::new();
    let mut runs: Vec<Option<Running>> = Vec::new();
    let mut free_runs: Vec<u32> = Vec::new();
    let mut results: Vec<Option<JobResult>> = (0..jobs.len()).map(|_| None).collect();
    let mut to_send: VecDeque<u32> = VecDeque::new();
    let mut deadlines: VecDeque<(Instant, u32, u32)> = VecDeque::new();
    let mut qhist = Histogram::<u64>::new(3).expect("histogram");
    let mut lhist = Histogram::<u64>::new(3).expect("histogram");
    let mut fig = LiveFigures::default();
    let mut rcodes = [0u64; 16];
    let mut msg = Vec::with_capacity(512);
    let mut rbuf = vec![0u8; 65535];
    let mut outstanding = 0usize;
    let mut next_job = 0usize;
    let mut done = 0usize;
    let mut generation = 0u32;
    let t0 = Instant::now();
    let mut first_send: Option<Instant> = None;
    let mut last_answer = t0;
    let mut tokens = 0.0f64;
    let mut last_refill = t0;
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();

    // Feed the answers we have, in order, to the walker; issue the next candidate when the
    // current one is complete. Returns true when the lookup is over.
    macro_rules! advance {
        ($ri:expr) => {{
            let ri = $ri as usize;
            loop {
                let r = runs[ri].as_mut().expect("running lookup");
                // Feed the contiguous answered prefix.
                let mut feed = [Answer::Timeout; 2];
                let mut k = 0;
                while (r.fed as usize + k) < r.n_pending as usize {
                    match r.pending[r.fed as usize + k].1 {
                        Some(a) => {
                            feed[k] = a;
                            k += 1;
                        }
                        None => break,
                    }
                }
                if k > 0 {
                    r.walker.answer(&feed[..k]);
                    r.fed += k as u8;
                }
                if r.fed < r.n_pending {
                    break false; // still waiting
                }
                let Some((qname, types)) = r.walker.next_queries() else {
                    let r = runs[ri].take().expect("running lookup");
                    free_runs.push(ri as u32);
                    let duration = r.started.map(|s| s.elapsed());
                    if let Some(d) = duration {
                        let _ = lhist.record(d.as_micros().max(1) as u64);
                    }
                    let tally = r.walker.tally();
                    results[r.job as usize] = Some(JobResult {
                        result: r.walker.finish().result,
                        tally,
                        local: r.local,
                        duration,
                    });
                    done += 1;
                    break true;
                };
                r.qname_wire.clear();
                if wire::encode_name(qname, &mut r.qname_wire).is_err() {
                    // Cannot be sent at all: the stub would fail it without a reply.
                    r.n_pending = types.len() as u8;
                    r.fed = 0;
                    for (i, &t) in types.iter().enumerate() {
                        r.pending[i] = (t, Some(Answer::ServFail));
                    }
                    continue;
                }
                let mut all_local = true;
                r.n_pending = types.len() as u8;
                r.fed = 0;
                for (i, &t) in types.iter().enumerate() {
                    let t = if r.qtype != 0 { r.qtype } else { t };
                    if local(qname, t) {
                        r.local += 1;
                        r.pending[i] = (t, Some(Answer::NxDomain));
                        continue;
                    }
                    all_local = false;
                    r.pending[i] = (t, None);
                    let idx = match free_inflight.pop() {
                        Some(i) => i,
                        None => {
                            inflight.push(Inflight {
                                run: 0,
                                slot: 0,
                                sock: 0,
                                id: 0,
                                sent: None,
                                generation: 0,
                                live: false,
                            });
                            (inflight.len() - 1) as u32
                        }
                    };
                    generation = generation.wrapping_add(1);
                    let f = &mut inflight[idx as usize];
                    f.run = ri as u32;
                    f.slot = i as u8;
                    f.sent = None;
                    f.generation = generation;
                    f.live = true;
                    outstanding += 1;
                    to_send.push_back(idx);
                }
                if !all_local {
                    break false;
                }
            }
        }};
    }

    while done < jobs.len() {
        let now = Instant::now();
        // 1. Start lookups that are due, within the in-flight bound.
        while next_job < jobs.len() && outstanding < opts.max_inflight {
            let j = &jobs[next_job];
            if let Pace::Captured { speed } = opts.pace {
                let due = t0 + Duration::from_micros((j.offset_us as f64 / speed.max(1e-9)) as u64);
                if due > now {
                    break;
                }
            }
            let run = Running {
                walker: Walker::new(j.stub, j.name, j.family, j.settings).without_query_log(),
                job: next_job as u32,
                client: j.client,
                qtype: j.qtype,
                started: None,
                qname_wire: Vec::with_capacity(64),
                pending: [(0, None); 2],
                n_pending: 0,
                fed: 0,
                local: 0,
            };
            let ri = match free_runs.pop() {
                Some(i) => {
                    runs[i as usize] = Some(run);
                    i
                }
                None => {
                    runs.push(Some(run));
                    (runs.len() - 1) as u32
                }
            };
            next_job += 1;
            advance!(ri);
        }

        // 2. Send what is queued (rate permitting).
        if let Pace::Rate(qps) = opts.pace {
            tokens = (tokens + now.duration_since(last_refill).as_secs_f64() * qps)
                .min((qps / 100.0).max(1.0));
            last_refill = now;
        }
        while let Some(&idx) = to_send.front() {
            if matches!(opts.pace, Pace::Rate(_)) {
                if tokens < 1.0 {
                    break;
                }
                tokens -= 1.0;
            }
            let f = &inflight[idx as usize];
            let r = runs[f.run as usize].as_ref().expect("running lookup");
            let qtype = r.pending[f.slot as usize].0;
            // One client's queries leave from one socket (one source address).
            let s = r.client as usize % sockets.len();
            // A free ID on this socket (never more than max_inflight are taken).
            let mut id = next_id[s];
            while ids[s][id as usize] != NIL {
                id = id.wrapping_add(1);
            }
            next_id[s] = id.wrapping_add(40503); // odd stride: visits every ID
            msg.clear();
            msg.extend_from_slice(&id.to_be_bytes());
            msg.extend_from_slice(&wire::FLAG_RD.to_be_bytes());
            msg.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
            msg.extend_from_slice(&r.qname_wire);
            msg.extend_from_slice(&qtype.to_be_bytes());
            msg.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
            match sockets[s].send(&msg) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    // An ICMP error from an earlier datagram: the next send goes out.
                    continue;
                }
                Err(e) => return Err(e),
            }
            to_send.pop_front();
            let sent = Instant::now();
            first_send.get_or_insert(sent);
            ids[s][id as usize] = idx;
            let f = &mut inflight[idx as usize];
            f.sock = s as u8;
            f.id = id;
            f.sent = Some(sent);
            let run = f.run;
            deadlines.push_back((sent + opts.timeout, idx, f.generation));
            fig.sent += 1;
            let r = runs[run as usize].as_mut().expect("running lookup");
            r.started.get_or_insert(sent);
        }

        // 3. Wait for replies (or the next due start, timeout or token).
        let mut wait = Duration::from_millis(10);
        if let Some(&(d, _, _)) = deadlines.front() {
            wait = wait.min(d.saturating_duration_since(now));
        }
        if next_job < jobs.len() && outstanding < opts.max_inflight {
            match opts.pace {
                Pace::Captured { speed } => {
                    let due = t0
                        + Duration::from_micros(
                            (jobs[next_job].offset_us as f64 / speed.max(1e-9)) as u64,
                        );
                    wait = wait.min(due.saturating_duration_since(now));
                }
                Pace::Max => wait = Duration::ZERO,
                Pace::Rate(_) => {}
            }
        }
        if !to_send.is_empty() {
            wait = match opts.pace {
                Pace::Rate(qps) => wait.min(Duration::from_secs_f64(1.0 / qps.max(1.0))),
                _ => Duration::ZERO,
            };
        }
        for f in fds.iter_mut() {
            f.revents = 0;
        }
        let ms = if wait.is_zero() {
            0
        } else {
            wait.as_millis().clamp(1, 10) as i32
        };
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };

        // 4. Read every reply that is there.
        for (s, sock) in sockets.iter().enumerate() {
            if fds[s].revents == 0 {
                continue;
            }
            for _ in 0..256 {
                let n = match sock.recv(&mut rbuf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => continue, // ICMP errors from the target: the query times out
                };
                let buf = &rbuf[..n];
                let Ok(h) = wire::Header::parse(buf) else {
                    fig.unmatched_replies += 1;
                    continue;
                };
                let idx = ids[s][h.id as usize];
                if !h.is_response() || idx == NIL {
                    fig.unmatched_replies += 1;
                    continue;
                }
                let f = &inflight[idx as usize];
                let r = runs[f.run as usize].as_ref().expect("running lookup");
                let qtype = r.pending[f.slot as usize].0;
                let matches = wire::parse_question(buf).is_ok_and(|q| {
                    q.qtype == qtype && wire::names_equal(q.name_bytes(buf), &r.qname_wire)
                });
                if !matches {
                    fig.unmatched_replies += 1;
                    continue;
                }
                let answer = match h.rcode() {
                    0 if h.ancount > 0 => Answer::Address,
                    0 => Answer::NoData,
                    3 => Answer::NxDomain,
                    5 => Answer::Refused,
                    _ => Answer::ServFail,
                };
                rcodes[h.rcode() as usize] += 1;
                fig.answered += 1;
                last_answer = Instant::now();
                if let Some(sent) = f.sent {
                    let _ = qhist.record(sent.elapsed().as_micros().max(1) as u64);
                }
                let (run, slot) = (f.run, f.slot);
                ids[s][h.id as usize] = NIL;
                inflight[idx as usize].live = false;
                free_inflight.push(idx);
                outstanding -= 1;
                runs[run as usize].as_mut().expect("running lookup").pending[slot as usize].1 =
                    Some(answer);
                advance!(run);
            }
        }

        // 5. Timeouts.
        let now = Instant::now();
        while let Some(&(d, idx, gen)) = deadlines.front() {
            if d > now {
                break;
            }
            deadlines.pop_front();
            let f = &inflight[idx as usize];
            if !f.live || f.generation != gen {
                continue;
            }
            fig.timeouts += 1;
            let (run, slot, s, id) = (f.run, f.slot, f.sock, f.id);
            ids[s as usize][id as usize] = NIL;
            inflight[idx as usize].live = false;
            free_inflight.push(idx);
            outstanding -= 1;
            runs[run as usize].as_mut().expect("running lookup").pending[slot as usize].1 =
                Some(Answer::Timeout);
            advance!(run);
        }
    }

    fig.seconds = t0.elapsed().as_secs_f64();
    let busy = last_answer
        .saturating_duration_since(first_send.unwrap_or(t0))
        .as_secs_f64();
    fig.queries_per_second = if busy > 0.0 {
        fig.answered as f64 / busy
    } else {
        0.0
    };
    for (rc, &n) in rcodes.iter().enumerate() {
        if n > 0 {
            fig.rcodes
                .insert(crate::event::rcode_name(rc as u16).into_owned(), n);
        }
    }
    fig.query_ms = quantiles(&qhist);
    fig.lookup_ms = quantiles(&lhist);
    fig.query_ms_histogram = buckets(&qhist);
    fig.lookup_ms_histogram = buckets(&lhist);
    let results = results
        .into_iter()
        .map(|r| r.expect("every lookup finished"))
        .collect();
    Ok((results, fig))
}

use std::net::IpAddr;

use super::report::Outcome1;
use super::{end_of, Latency, Replay, Setting, SettingReport};
use crate::config::ShortcutMode;

impl Replay {
    /// Evaluate one setting live: every walk sent to `opts.target`, answers from it. The
    /// shortcut `nxdomain` is applied here (what a proxy in front would answer locally);
    /// `autopath` needs the proxy itself as the target.
    pub fn evaluate_live(
        &self,
        setting: &Setting,
        opts: &LiveOptions,
    ) -> std::io::Result<SettingReport> {
        let policy = self.policy(setting);
        let fqdn = self.fqdn.get_or_init(|| self.fqdn_targets());
        let asked: Vec<String> = self
            .demands
            .iter()
            .enumerate()
            .map(|(id, d)| self.asked(setting, d, fqdn, id))
            .collect();
        let resolvers: Vec<(Stub, ResolverSettings)> = self
            .demands
            .iter()
            .map(|d| self.captured.stub_config(setting, d))
            .collect();
        if self.timeline.is_empty() && !self.lookups.is_empty() {
            return Err(std::io::Error::other(
                "live replay needs the lookups' times: collect with the timeline",
            ));
        }
        let first = self.timeline.first().map(|l| l.start.0).unwrap_or(0);
        let jobs: Vec<Job<'_>> = self
            .timeline
            .iter()
            .map(|t| {
                let demand = self.lookups[t.group as usize].demand as usize;
                let d = &self.demands[demand];
                let (family, qtype) = d.family();
                Job {
                    offset_us: t.start.0.saturating_sub(first),
                    name: &asked[demand],
                    stub: resolvers[demand].0,
                    family,
                    qtype,
                    client: client_number(t.client),
                    settings: &resolvers[demand].1,
                }
            })
            .collect();
        let nx = setting.shortcut == ShortcutMode::Nxdomain;
        let (results, figures) = run(&jobs, opts, |q, t| nx && policy.decide(q, t).is_some())?;
        let outcomes: Vec<Outcome1> = results
            .iter()
            .map(|r| Outcome1 {
                queries: r.tally.queries,
                types: 1 + r.tally.both_types as u8,
                nxdomain: r.tally.nxdomain,
                upstream: r.tally.queries - r.local,
                end: end_of(r.result.as_deref(), &r.tally),
                uncertain: false,
                as_captured: false,
                local: [false; 6],
            })
            .collect();
        let captured = *setting == self.captured.setting();
        if captured {
            let _ = self
                .live_baseline
                .set(outcomes.iter().map(|o| o.end.clone()).collect());
        }
        let mut r = self.tally(setting, &outcomes, true, None);
        if captured {
            r.target_differences = std::mem::take(&mut r.changed_resolutions);
            r.target_difference_list = std::mem::take(&mut r.changes);
        }
        r.latency_ms = Some(Latency {
            p50: figures.query_ms.p50,
            p90: figures.query_ms.p90,
            p99: figures.query_ms.p99,
            max: figures.query_ms.max,
            lookup_p50: figures.lookup_ms.p50,
            lookup_p99: figures.lookup_ms.p99,
        });
        r.timeouts = Some(figures.timeouts);
        r.live = Some(figures);
        Ok(r)
    }
}

/// A captured client address as a number that spreads clients over sockets.
fn client_number(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            u32::from_be_bytes([o[12], o[13], o[14], o[15]])
        }
    }
}
