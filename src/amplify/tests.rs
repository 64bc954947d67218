//! Walk grouping and report tests with hand-built event sequences (and, for musl, the walk the
//! stub model sends).

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::amplify::walk::Due;
use crate::event::{AnswerSource, Timestamp};
use crate::search::{Answer, Family, ResolverSettings, Stub, QTYPE_A, QTYPE_AAAA};

const NX: Option<u16> = Some(3);
const OK: Option<u16> = Some(0);

fn cluster() -> ClusterConfig {
    ClusterConfig {
        domain: "cluster.local".into(),
        search: vec![
            "*.svc.cluster.local".into(),
            "svc.cluster.local".into(),
            "cluster.local".into(),
        ],
        node_search: vec!["ec2.internal".into()],
    }
}

fn cfg(idle_ms: u64, max_open: usize) -> TrackerConfig {
    TrackerConfig {
        idle: Duration::from_millis(idle_ms),
        max_open_walks: max_open,
        namespace_series: crate::config::DEFAULT_NAMESPACE_SERIES,
    }
}

fn tracker(max_open: usize) -> WalkTracker {
    WalkTracker::new(SearchShape::new(&cluster()), &cfg(2000, max_open))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A query at `ms` milliseconds, answered 1 ms later with `rcode` and `answers` records.
fn ev(
    ms: u64,
    client: &str,
    qname: &str,
    qtype: u16,
    rcode: Option<u16>,
    answers: u16,
) -> QueryEvent {
    QueryEvent {
        time: Timestamp(1_700_000_000_000_000 + ms * 1000),
        client: ip(client),
        client_port: Some(40000),
        qname: qname.into(),
        qtype,
        rcode,
        answers: rcode.map(|_| answers),
        latency: rcode.map(|_| Duration::from_millis(1)),
        source: rcode.map(|_| AnswerSource::Upstream),
    }
}

/// A query at `ms` a capture with responses saw go unanswered (`NoAnswer`).
fn lost(ms: u64, client: &str, qname: &str, qtype: u16) -> QueryEvent {
    QueryEvent {
        source: Some(AnswerSource::NoAnswer),
        ..ev(ms, client, qname, qtype, None, 0)
    }
}

fn run(t: &mut WalkTracker, events: &[QueryEvent]) -> Vec<Lookup> {
    for e in events {
        t.observe(e);
    }
    t.finish();
    t.drain().collect()
}

const GITHUB_WALK: [&str; 5] = [
    "api.github.com.default.svc.cluster.local.",
    "api.github.com.svc.cluster.local.",
    "api.github.com.cluster.local.",
    "api.github.com.ec2.internal.",
    "api.github.com.",
];

/// glibc under ndots:5 sends each candidate as an A+AAAA pair and waits for both.
fn glibc_github(client: &str, t0: u64) -> Vec<QueryEvent> {
    let mut v = Vec::new();
    for (i, q) in GITHUB_WALK.iter().enumerate() {
        let last = i == GITHUB_WALK.len() - 1;
        let (rc, n) = if last { (OK, 1) } else { (NX, 0) };
        v.push(ev(t0 + 2 * i as u64, client, q, QTYPE_A, rc, n));
        v.push(ev(t0 + 2 * i as u64, client, q, QTYPE_AAAA, rc, n));
    }
    v
}

#[test]
fn glibc_api_github_com_with_four_search_domains_is_five_queries_four_wasted_per_type() {
    let mut t = tracker(100);
    let lookups = run(&mut t, &glibc_github("10.0.0.5", 0));
    assert_eq!(lookups.len(), 2, "{lookups:#?}");
    for l in &lookups {
        assert_eq!(l.base, "api.github.com.");
        assert_eq!(l.queries, 5);
        assert_eq!(l.wasted, 4);
        assert_eq!(l.retries, 0);
        assert_eq!(l.outcome, Outcome::Resolved);
        assert_eq!(l.resolved_by, Some(SuffixSlot::Absolute));
        assert_eq!(l.namespace.as_deref(), Some("default"));
        assert_eq!(l.suffix_queries, [1, 1, 1, 1, 0, 1]);
        assert_eq!(l.suffix_wasted, [1, 1, 1, 1, 0, 0]);
        assert_eq!(l.upstream_wasted, 4);
        // First query at t0, last answer 1 ms after the query sent at t0 + 8 ms.
        assert_eq!(l.duration, Some(Duration::from_millis(9)));
    }
    let types: Vec<u16> = lookups.iter().map(|l| l.qtype).collect();
    assert!(types.contains(&QTYPE_A) && types.contains(&QTYPE_AAAA));
    assert_eq!(t.open_walks(), 0);
}

#[test]
fn the_walk_ends_on_the_positive_answer_without_waiting_for_idle() {
    let mut t = tracker(100);
    for e in glibc_github("10.0.0.5", 0) {
        t.observe(&e);
    }
    // Nothing finished by hand: both walks closed on the absolute name's answer.
    assert_eq!(t.open_walks(), 0);
    assert_eq!(t.drain().count(), 2);
}

/// Turn a stub model walk into events, 1 ms apart, answered as the walk says.
fn events_of(walk: &crate::search::Walk, client: &str, t0: u64) -> Vec<QueryEvent> {
    walk.queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let (rc, n) = match q.answer {
                Answer::Address => (OK, 1),
                Answer::NoData => (OK, 0),
                Answer::NxDomain => (NX, 0),
                Answer::ServFail => (Some(2), 0),
                Answer::Refused => (Some(5), 0),
                Answer::Timeout => (None, 0),
            };
            ev(t0 + i as u64, client, &q.qname, q.qtype, rc, n)
        })
        .collect()
}

#[test]
fn musl_walk_from_the_stub_model_groups_per_type() {
    let stub = Stub::Musl;
    let mut s = ResolverSettings::defaults(stub);
    s.set_ndots(5, stub);
    s.set_search("default.svc.cluster.local svc.cluster.local cluster.local ec2.internal");
    let walk = stub.walk("api.github.com", Family::Unspec, &s, |q, _| {
        if q == "api.github.com." {
            Answer::Address
        } else {
            Answer::NxDomain
        }
    });
    let mut t = tracker(100);
    let lookups = run(&mut t, &events_of(&walk, "10.0.0.9", 0));
    for qtype in [QTYPE_A, QTYPE_AAAA] {
        let sent: Vec<&str> = walk
            .queries
            .iter()
            .filter(|q| q.qtype == qtype)
            .map(|q| q.qname.as_str())
            .collect();
        let last = *sent.last().unwrap();
        let l = lookups.iter().find(|l| l.qtype == qtype).unwrap();
        assert_eq!(l.queries as usize, sent.len());
        assert_eq!(
            l.wasted as usize,
            sent.iter().filter(|q| **q != last).count()
        );
        assert_eq!(l.outcome, Outcome::Resolved);
    }
    assert_eq!(lookups.len(), 2);
}

#[test]
fn web_prod_ends_in_the_middle_on_a_positive_answer() {
    let mut t = tracker(100);
    let c = "10.0.0.7";
    let lookups = run(
        &mut t,
        &[
            ev(0, c, "web.prod.default.svc.cluster.local.", QTYPE_A, NX, 0),
            ev(1, c, "web.prod.svc.cluster.local.", QTYPE_A, OK, 1),
        ],
    );
    assert_eq!(lookups.len(), 1);
    let l = &lookups[0];
    assert_eq!(l.base, "web.prod.");
    assert_eq!((l.queries, l.wasted), (2, 1));
    assert_eq!(l.resolved_by, Some(SuffixSlot::Svc));
    assert_eq!(l.namespace.as_deref(), Some("default"));
    assert_eq!(l.suffix_wasted[SuffixSlot::Namespace as usize], 1);
}

#[test]
fn interleaved_walks_of_two_names_and_two_types_from_one_client() {
    let c = "10.0.0.8";
    let mut events = Vec::new();
    // Two threads of one pod look up two names at once, each A and AAAA.
    let a = glibc_github(c, 0);
    let b: Vec<QueryEvent> = [
        ("redis.default.svc.cluster.local.", NX, 0),
        ("redis.svc.cluster.local.", NX, 0),
        ("redis.cluster.local.", NX, 0),
        ("redis.ec2.internal.", NX, 0),
        ("redis.", NX, 0),
    ]
    .iter()
    .enumerate()
    .flat_map(|(i, (q, rc, n))| {
        [
            ev(2 * i as u64 + 1, c, q, QTYPE_AAAA, *rc, *n),
            ev(2 * i as u64 + 1, c, q, QTYPE_A, *rc, *n),
        ]
    })
    .collect();
    for (x, y) in a.iter().zip(b.iter()) {
        events.push(x.clone());
        events.push(y.clone());
    }
    events.extend(a[b.len()..].iter().cloned());
    let mut t = tracker(100);
    let lookups = run(&mut t, &events);
    assert_eq!(lookups.len(), 4, "{lookups:#?}");
    for l in &lookups {
        assert_eq!((l.queries, l.wasted), (5, 4), "{l:#?}");
    }
    let redis: Vec<&Lookup> = lookups.iter().filter(|l| l.base == "redis.").collect();
    assert_eq!(redis.len(), 2);
    assert!(redis.iter().all(|l| l.outcome == Outcome::NxDomain));
}

#[test]
fn retries_count_and_a_retried_failed_candidate_is_wasted() {
    let c = "10.0.0.10";
    let q0 = "db.default.svc.cluster.local.";
    let lookups = run(
        &mut tracker(100),
        &[
            ev(0, c, q0, QTYPE_A, None, 0),
            ev(500, c, q0, QTYPE_A, NX, 0),
            ev(501, c, "db.svc.cluster.local.", QTYPE_A, Some(2), 0),
            ev(900, c, "db.svc.cluster.local.", QTYPE_A, OK, 1),
        ],
    );
    assert_eq!(lookups.len(), 1);
    let l = &lookups[0];
    assert_eq!(l.queries, 4);
    assert_eq!(l.retries, 2);
    // The two queries for the namespace candidate are wasted; both for the svc one are not.
    assert_eq!(l.wasted, 2);
    assert_eq!(l.outcome, Outcome::Resolved);
}

/// One AAAA walk over GITHUB_WALK's five names, each answered as `rcodes` says (`(rcode,
/// records)`; `None` leaves that candidate out).
fn aaaa_walk(c: &str, answers: [(Option<u16>, u16); 5]) -> Vec<QueryEvent> {
    GITHUB_WALK
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(i, (q, (rc, n)))| ev(i as u64, c, q, QTYPE_AAAA, rc, n))
        .collect()
}

#[test]
fn walk_reported_nxdomain_when_an_earlier_candidate_was_nodata() {
    // glibc with AF_INET6 (and c-ares) walk on after NODATA; when every later name is
    // NXDOMAIN the application gets NO_DATA / ENODATA: the name exists, without AAAA. The
    // report's `nxdomain` says "exists nowhere", which was false here.
    let c = "10.0.0.11";
    let lookups = run(
        &mut tracker(100),
        &aaaa_walk(c, [(OK, 0), (NX, 0), (NX, 0), (NX, 0), (NX, 0)]),
    );
    assert_eq!(lookups.len(), 1, "{lookups:#?}");
    assert_eq!(lookups[0].queries, 5);
    assert_eq!(lookups[0].outcome, Outcome::NoData);
    // NODATA outranks a SERVFAIL met on the way (res_query.c tests got_nodata first).
    let lookups = run(
        &mut tracker(100),
        &aaaa_walk(c, [(Some(2), 0), (OK, 0), (NX, 0), (NX, 0), (NX, 0)]),
    );
    assert_eq!(lookups[0].outcome, Outcome::NoData);
    // A walk whose last answer is SERVFAIL is named by it (c-ares and musl stop there).
    let lookups = run(
        &mut tracker(100),
        &aaaa_walk(c, [(OK, 0), (Some(2), 0), (None, 0), (None, 0), (None, 0)])[..2],
    );
    assert_eq!(lookups[0].outcome, Outcome::ServFail);
}

#[test]
fn walk_reported_nxdomain_when_an_earlier_candidate_was_servfail() {
    let c = "10.0.0.12";
    let lookups = run(
        &mut tracker(100),
        &aaaa_walk(c, [(NX, 0), (Some(2), 0), (NX, 0), (NX, 0), (NX, 0)]),
    );
    assert_eq!(lookups.len(), 1, "{lookups:#?}");
    assert_eq!(lookups[0].outcome, Outcome::ServFail);
    // Every name NXDOMAIN: the name exists nowhere.
    let lookups = run(
        &mut tracker(100),
        &aaaa_walk(c, [(NX, 0), (NX, 0), (NX, 0), (NX, 0), (NX, 0)]),
    );
    assert_eq!(lookups[0].outcome, Outcome::NxDomain);
    // A walk stopped by REFUSED ends with REFUSED whatever came before.
    let lookups = run(
        &mut tracker(100),
        &aaaa_walk(c, [(OK, 0), (Some(5), 0), (None, 0), (None, 0), (None, 0)])[..2],
    );
    assert_eq!(lookups[0].outcome, Outcome::Refused);
}

#[test]
fn an_unanswered_retry_keeps_the_servfail_before_it() {
    // Go walks on after errors: the namespace candidate SERVFAILs, its retry goes unanswered,
    // every later name is NXDOMAIN. The candidate ended SERVFAIL, as replay's answer table has
    // it; FORMERR on the way counts alike.
    let c = "10.0.0.14";
    let q0 = GITHUB_WALK[0];
    let mut events = vec![ev(0, c, q0, QTYPE_AAAA, Some(2), 0)];
    events.extend(aaaa_walk(
        c,
        [(None, 0), (NX, 0), (NX, 0), (NX, 0), (NX, 0)],
    ));
    let lookups = run(&mut tracker(100), &events);
    assert_eq!(lookups.len(), 1, "{lookups:#?}");
    assert_eq!(lookups[0].outcome, Outcome::ServFail);
    let lookups = run(
        &mut tracker(100),
        &aaaa_walk(c, [(NX, 0), (Some(1), 0), (NX, 0), (NX, 0), (NX, 0)]),
    );
    assert_eq!(lookups[0].outcome, Outcome::ServFail);
}

#[test]
fn a_servfail_retried_to_nxdomain_does_not_make_the_walk_servfail() {
    // A retry's answer replaces the try before it: the candidate ended NXDOMAIN.
    let c = "10.0.0.13";
    let q0 = GITHUB_WALK[0];
    let mut events = vec![ev(0, c, q0, QTYPE_AAAA, Some(2), 0)];
    events.extend(aaaa_walk(c, [(NX, 0), (NX, 0), (NX, 0), (NX, 0), (NX, 0)]));
    let lookups = run(&mut tracker(100), &events);
    assert_eq!(lookups.len(), 1, "{lookups:#?}");
    assert_eq!((lookups[0].queries, lookups[0].retries), (6, 1));
    assert_eq!(lookups[0].outcome, Outcome::NxDomain);
}

#[test]
fn the_same_name_again_after_nodata_is_a_new_lookup_not_a_retry() {
    // glibc: A answers at the first candidate, AAAA gets NODATA there and the stub stops; the
    // application looks the service up again 100 ms later.
    let c = "10.0.0.16";
    let q = "redis.default.svc.cluster.local.";
    let mut t = tracker(100);
    for e in [
        ev(0, c, q, QTYPE_A, OK, 1),
        ev(0, c, q, QTYPE_AAAA, OK, 0),
        ev(100, c, q, QTYPE_A, OK, 1),
        ev(100, c, q, QTYPE_AAAA, OK, 0),
    ] {
        t.observe(&e);
    }
    // Each AAAA walk closed with its A answer (same client and port), not left for the idle
    // window.
    assert_eq!(t.open_walks(), 0);
    t.finish();
    let lookups: Vec<Lookup> = t.drain().collect();
    assert_eq!(lookups.len(), 4);
    assert!(lookups
        .iter()
        .all(|l| l.queries == 1 && l.retries == 0 && l.wasted == 0));
    let aaaa: Vec<&Lookup> = lookups.iter().filter(|l| l.qtype == QTYPE_AAAA).collect();
    assert!(aaaa.iter().all(|l| l.outcome == Outcome::NoData));
}

#[test]
fn a_client_retrying_forever_gets_bounded_walks() {
    let mut t = tracker(100);
    let n = 2 * walk::MAX_WALK_QUERIES as u64 + 10;
    for i in 0..n {
        t.observe(&ev(
            i * 100,
            "10.0.0.17",
            "stuck.default.svc.cluster.local.",
            QTYPE_A,
            Some(2),
            0,
        ));
    }
    t.finish();
    let lookups: Vec<Lookup> = t.drain().collect();
    assert_eq!(lookups.len(), 3);
    assert!(lookups.iter().all(|l| l.queries <= walk::MAX_WALK_QUERIES));
    assert_eq!(lookups.iter().map(|l| u64::from(l.queries)).sum::<u64>(), n);
    assert!(lookups.iter().all(|l| l.outcome == Outcome::ServFail));
}

#[test]
fn an_idle_gap_splits_a_walk() {
    let c = "10.0.0.11";
    let lookups = run(
        &mut tracker(100),
        &[
            ev(0, c, "x.default.svc.cluster.local.", QTYPE_A, NX, 0),
            ev(1, c, "x.svc.cluster.local.", QTYPE_A, NX, 0),
            // 2 s idle window: 3 s later the next candidate starts a new walk.
            ev(3002, c, "x.cluster.local.", QTYPE_A, NX, 0),
            ev(3003, c, "x.ec2.internal.", QTYPE_A, NX, 0),
        ],
    );
    let mut q: Vec<(u32, &str)> = lookups
        .iter()
        .map(|l| (l.queries, l.base.as_str()))
        .collect();
    q.sort();
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].0 + q[1].0, 4);
    assert!(lookups.iter().all(|l| l.outcome == Outcome::NxDomain));
    // The first walk was closed by the second walk's event time, not by finish().
    let first = lookups.iter().min_by_key(|l| l.start).unwrap();
    assert_eq!(first.queries, 2);
}

#[test]
fn flush_closes_idle_walks_by_event_time() {
    let mut t = tracker(100);
    t.observe(&ev(
        0,
        "10.0.0.12",
        "y.default.svc.cluster.local.",
        QTYPE_A,
        NX,
        0,
    ));
    t.flush(Timestamp(1_700_000_000_000_000 + 1_000_000));
    assert_eq!(t.open_walks(), 1);
    t.flush(Timestamp(1_700_000_000_000_000 + 2_100_000));
    assert_eq!(t.open_walks(), 0);
    assert_eq!(t.drain().next().unwrap().outcome, Outcome::NxDomain);
}

/// A query a capture saw go unanswered (`NoAnswer`) keeps its walk open for the stub's retry
/// ([`walk::RETRY_WAIT`], 6 s), past the 2 s idle window; an answered walk that went quiet after
/// it still closes at 2 s (the two wait on lists of their own, so one does not hold the other
/// up); and the oldest of either is the one evicted.
#[test]
fn a_walk_waiting_on_a_lost_query_stays_open_for_the_retry_and_holds_no_other_up() {
    let lost = |ms, client: &str, qname: &str| lost(ms, client, qname, QTYPE_AAAA);
    let at = |ms: u64| Timestamp(1_700_000_000_000_000 + ms * 1000);
    let (waiting, quiet) = ("10.0.0.21", "10.0.0.22");
    let mut t = tracker(100);
    t.observe(&lost(0, waiting, "api.github.com."));
    t.observe(&ev(
        10,
        quiet,
        "q.default.svc.cluster.local.",
        QTYPE_A,
        NX,
        0,
    ));
    t.flush(at(2_100));
    assert_eq!(t.open_walks(), 1, "the answered walk closed at 2 s");
    let first: Vec<Lookup> = t.drain().collect();
    assert_eq!(first[0].client, ip(quiet));
    t.flush(at(5_000));
    assert_eq!(
        t.open_walks(),
        1,
        "the lost query's walk waits for its retry"
    );
    // The retry at 5 s, answered: one lookup, one retry, 5 s long.
    t.observe(&ev(5_000, waiting, "api.github.com.", QTYPE_AAAA, OK, 1));
    let l: Vec<Lookup> = t.drain().collect();
    assert_eq!(
        (l.len(), l[0].queries, l[0].retries, l[0].outcome),
        (1, 2, 1, Outcome::Resolved)
    );
    assert_eq!(l[0].duration, Some(Duration::from_millis(5_001)));
    // No retry: closed once the wait is over, nothing answered.
    t.observe(&lost(10_000, waiting, "api.github.com."));
    t.flush(at(15_900));
    assert_eq!(t.open_walks(), 1);
    t.flush(at(16_100));
    assert_eq!(t.open_walks(), 0);
    assert_eq!(t.drain().next().unwrap().outcome, Outcome::Unanswered);
    // Eviction takes the least recently active walk of either list.
    let nx = |ms, client: &str, name: &str| ev(ms, client, name, QTYPE_A, NX, 0);
    let mut t = tracker(2);
    t.observe(&nx(0, quiet, "q.default.svc.cluster.local."));
    t.observe(&lost(1, waiting, "api.github.com."));
    t.observe(&nx(2, "10.0.0.23", "r.default.svc.cluster.local."));
    let evicted: Vec<Lookup> = t.drain().collect();
    assert_eq!(
        (evicted.len(), evicted[0].client, evicted[0].outcome),
        (1, ip(quiet), Outcome::Evicted)
    );
    let mut t = tracker(2);
    t.observe(&lost(0, waiting, "api.github.com."));
    t.observe(&nx(1, quiet, "q.default.svc.cluster.local."));
    t.observe(&nx(2, "10.0.0.23", "r.default.svc.cluster.local."));
    let evicted: Vec<Lookup> = t.drain().collect();
    assert_eq!(evicted[0].client, ip(waiting));
}

/// Review of session 28: a lost query's event reaches the tracker late (when its retry comes,
/// or when the reader stops waiting for an answer, 30 s on), so it was listed behind fresher
/// walks and stayed open past its window, and a later query joined it: a 32 s "lookup" with a
/// retry out of two lookups. A walk past its window at the latest time seen is closed at once,
/// and none is joined by a query after its window, whatever its place in the lists.
#[test]
fn a_late_lost_query_kept_its_walk_open_for_a_lookup_half_a_minute_later() {
    let lost = |ms, client: &str| lost(ms, client, "api.github.com.", QTYPE_AAAA);
    let (x, y) = ("10.0.0.31", "10.0.0.32");
    let mut t = tracker(100);
    t.observe(&lost(27_000, y));
    // X's query of 0 s, read as lost 30 s on.
    t.observe(&lost(0, x));
    t.observe(&ev(32_000, x, "api.github.com.", QTYPE_AAAA, OK, 1));
    t.finish();
    let mut of_x: Vec<Lookup> = t.drain().filter(|l| l.client == ip(x)).collect();
    of_x.sort_by_key(|l| l.start);
    assert_eq!(
        of_x.iter()
            .map(|l| (l.queries, l.retries, l.outcome))
            .collect::<Vec<_>>(),
        [(1, 0, Outcome::Unanswered), (1, 0, Outcome::Resolved)]
    );
    // Late within its window it waits, listed behind a walk that waits longer; a query after
    // its window starts a lookup of its own even so.
    let mut t = tracker(100);
    t.observe(&lost(5_000, y));
    t.observe(&lost(1_000, x));
    t.observe(&ev(8_000, x, "api.github.com.", QTYPE_AAAA, OK, 1));
    t.finish();
    let of_x: Vec<Lookup> = t.drain().filter(|l| l.client == ip(x)).collect();
    assert_eq!(of_x.len(), 2, "{of_x:?}");
    assert!(of_x.iter().all(|l| l.retries == 0));
}

/// A lost query's event comes when its retry does, 5 s on (glibc, same ID). In a busy capture
/// the tracker's time had moved past the walk's idle window meanwhile: the candidates before it
/// closed as a lookup of their own (NXDOMAIN), and the lost query with its retry made a second.
/// Reading captures, from the first lost query on, answered walks are kept for that lateness.
#[test]
fn a_lost_query_in_a_busy_capture_came_after_its_walk_had_closed() {
    let lost = |ms, client: &str, qname: &str| lost(ms, client, qname, QTYPE_AAAA);
    let (pod, other) = ("10.0.0.41", "10.0.0.42");
    let run = |t: WalkTracker| {
        let mut t = t;
        // An earlier loss in the capture (another client's).
        t.observe(&lost(0, other, "earlier.example."));
        let t0 = 20_000;
        for (i, name) in GITHUB_WALK[..4].iter().enumerate() {
            t.observe(&ev(t0 - 4 + i as u64, pod, name, QTYPE_AAAA, NX, 0));
        }
        // Other clients' traffic moves the tracker's time on.
        for k in 1..=4u64 {
            t.observe(&ev(
                t0 + k * 1_000,
                other,
                "kafka.default.svc.cluster.local.",
                QTYPE_A,
                OK,
                1,
            ));
        }
        t.observe(&lost(t0, pod, "api.github.com."));
        t.observe(&ev(t0 + 5_000, pod, "api.github.com.", QTYPE_AAAA, OK, 1));
        t.finish();
        let mut of_pod: Vec<Lookup> = t.drain().filter(|l| l.client == ip(pod)).collect();
        of_pod.sort_by_key(|l| l.start);
        of_pod
            .iter()
            .map(|l| (l.queries, l.retries, l.outcome))
            .collect::<Vec<_>>()
    };
    let shape = || SearchShape::new(&cluster());
    assert_eq!(
        run(WalkTracker::new(shape(), &cfg(2000, 100)).for_captures()),
        [(6, 1, Outcome::Resolved)]
    );
    // Live (no lag): split, as it was.
    assert_eq!(
        run(WalkTracker::new(shape(), &cfg(2000, 100))),
        [(4, 0, Outcome::NxDomain), (2, 1, Outcome::Resolved)]
    );
}

/// Review of session 28: once a capture has lost a query, answered walks stay 6 s past their
/// idle window for a late event, and when room was needed those were evicted: their lookups
/// read `evicted` (200,000 of 400,000 NXDOMAIN lookups after one lost query). A walk kept only
/// for that is closed with its own outcome, and only walks within their window are evicted.
#[test]
fn walks_kept_for_a_late_lost_query_were_evicted_instead_of_closed() {
    // Room for the walks within their window: the lost query's and three answered ones.
    let mut t = WalkTracker::new(SearchShape::new(&cluster()), &cfg(2000, 4)).for_captures();
    t.observe(&lost(0, "10.0.0.50", "lost.example.", QTYPE_A));
    for i in 0..10u64 {
        let c = format!("10.0.1.{i}");
        t.observe(&ev(
            1_000 * i,
            &c,
            "z.default.svc.cluster.local.",
            QTYPE_A,
            NX,
            0,
        ));
    }
    t.finish();
    let l: Vec<Lookup> = t.drain().collect();
    assert_eq!(t.evictions(), 0);
    assert!(
        l.iter().all(|l| l.outcome != Outcome::Evicted),
        "{:?}",
        l.iter().map(|l| l.outcome).collect::<Vec<_>>()
    );
}

/// A tracker as `analyze` makes one: the default idle window, room for 100 walks.
fn capture_tracker() -> WalkTracker {
    WalkTracker::new(SearchShape::new(&cluster()), &cfg(2000, 100)).for_captures()
}

/// Every lookup once the capture ends, as (type, queries, retries, outcome), sorted.
fn by_type(mut t: WalkTracker) -> Vec<(u16, u32, u32, Outcome)> {
    t.finish();
    let mut l: Vec<_> = t
        .drain()
        .map(|l| (l.qtype, l.queries, l.retries, l.outcome))
        .collect();
    l.sort();
    l
}

/// glibc lost a first candidate's AAAA and, 5 s on, sent the pair again in single-request mode:
/// the A query already answered NXDOMAIN, then the AAAA. The A sent again read as a new lookup
/// (after NXDOMAIN a stub moves on), and the A walk before it closed as an NXDOMAIN lookup.
/// From the socket the other type's walk waits on, it is that walk's retry; from another
/// socket, or with no walk waiting, it is still a new lookup.
#[test]
fn a_pair_sent_again_after_a_lost_query_read_as_a_new_lookup() {
    let pod = "10.0.0.71";
    let run = |resend_port: u16, lose: bool| {
        let mut t = capture_tracker();
        t.observe(&ev(0, pod, GITHUB_WALK[0], QTYPE_A, NX, 0));
        if lose {
            t.observe(&lost(0, pod, GITHUB_WALK[0], QTYPE_AAAA));
        } else {
            t.observe(&ev(0, pod, GITHUB_WALK[0], QTYPE_AAAA, NX, 0));
        }
        let mut again = ev(5_000, pod, GITHUB_WALK[0], QTYPE_A, NX, 0);
        again.client_port = Some(resend_port);
        t.observe(&again);
        for (i, name) in GITHUB_WALK[1..].iter().enumerate() {
            let ms = 5_001 + i as u64;
            let (rcode, answers) = if i == 3 { (OK, 1) } else { (NX, 0) };
            t.observe(&ev(ms, pod, name, QTYPE_A, rcode, answers));
            if i == 0 && lose {
                t.observe(&ev(ms, pod, GITHUB_WALK[0], QTYPE_AAAA, NX, 0));
            }
            t.observe(&ev(ms, pod, name, QTYPE_AAAA, rcode, answers));
        }
        by_type(t)
    };
    assert_eq!(
        run(40000, true),
        [
            (QTYPE_A, 6, 1, Outcome::Resolved),
            (QTYPE_AAAA, 6, 1, Outcome::Resolved)
        ]
    );
    assert_eq!(
        run(40001, true),
        [
            (QTYPE_A, 1, 0, Outcome::NxDomain),
            (QTYPE_A, 5, 0, Outcome::Resolved),
            (QTYPE_AAAA, 6, 1, Outcome::Resolved)
        ]
    );
    let mut a_lookups = run(40000, false);
    a_lookups.retain(|l| l.0 == QTYPE_A);
    assert_eq!(
        a_lookups,
        [
            (QTYPE_A, 1, 0, Outcome::NxDomain),
            (QTYPE_A, 5, 0, Outcome::Resolved)
        ]
    );
}

/// Review of session 28: a lost query's event past its window (it comes late, here at the end
/// of a 30 s answer wait) for a client with no walk to join took an open-walk slot before it
/// was closed, and at the cap that evicted a walk still in progress.
#[test]
fn a_late_lost_query_with_no_walk_to_join_evicted_a_walk_in_progress() {
    let mut t = tracker(2);
    for (i, c) in ["10.0.0.61", "10.0.0.62"].into_iter().enumerate() {
        t.observe(&ev(
            30_000 + i as u64,
            c,
            "z.default.svc.cluster.local.",
            QTYPE_A,
            NX,
            0,
        ));
    }
    t.observe(&lost(0, "10.0.0.63", "api.github.com.", QTYPE_AAAA));
    assert_eq!((t.open_walks(), t.evictions()), (2, 0));
    let l: Vec<Lookup> = t.drain().collect();
    assert_eq!(
        l.iter()
            .map(|l| (l.client, l.queries, l.outcome))
            .collect::<Vec<_>>(),
        [(ip("10.0.0.63"), 1, Outcome::Unanswered)]
    );
}

#[test]
fn open_walks_are_bounded_and_evictions_counted() {
    let max = 3;
    let mut t = tracker(max);
    let n = 10;
    for i in 0..n {
        t.observe(&ev(
            i,
            &format!("10.1.0.{i}"),
            "z.default.svc.cluster.local.",
            QTYPE_A,
            NX,
            0,
        ));
        assert!(t.open_walks() <= max);
    }
    assert_eq!(t.evictions(), n - max as u64);
    let evicted: Vec<Lookup> = t.drain().collect();
    assert_eq!(evicted.len() as u64, n - max as u64);
    assert!(evicted.iter().all(|l| l.outcome == Outcome::Evicted));
    // Least recent first: the first clients were evicted.
    assert_eq!(evicted[0].client, ip("10.1.0.0"));
}

/// A query answered positively at once is a whole lookup: it never needs an open-walk slot, so
/// a flood of cached answers cannot evict the walks still in progress (it did while every such
/// query was stored and closed again).
#[test]
fn one_query_lookups_evicted_open_walks() {
    let mut t = tracker(2);
    for (i, c) in ["10.1.0.1", "10.1.0.2"].into_iter().enumerate() {
        t.observe(&ev(
            i as u64,
            c,
            "z.default.svc.cluster.local.",
            QTYPE_A,
            NX,
            0,
        ));
    }
    for i in 0..50 {
        t.observe(&ev(10 + i, "10.1.0.3", "example.org.", QTYPE_A, OK, 1));
    }
    assert_eq!((t.open_walks(), t.evictions()), (2, 0));
    let done: Vec<Lookup> = t.drain().collect();
    assert_eq!(done.len(), 50);
    assert!(done
        .iter()
        .all(|l| l.outcome == Outcome::Resolved && l.queries == 1));
    // The walks in progress go on: their next candidate continues them.
    t.observe(&ev(100, "10.1.0.1", "z.svc.cluster.local.", QTYPE_A, OK, 1));
    let l: Vec<Lookup> = t.drain().collect();
    assert_eq!((l.len(), l[0].queries, l[0].wasted), (1, 2, 1));
}

/// Lookups of one name share one copy of it, whatever case each query used.
#[test]
fn lookups_of_one_name_share_its_text() {
    let mut t = tracker(100);
    t.observe(&ev(0, "10.1.0.1", "Example.ORG.", QTYPE_A, OK, 1));
    t.observe(&ev(1, "10.1.0.2", "example.org.", QTYPE_AAAA, OK, 1));
    let l: Vec<Lookup> = t.drain().collect();
    assert_eq!(
        (l[0].base.as_str(), l[1].base.as_str()),
        ("example.org.", "example.org.")
    );
    assert!(std::ptr::eq(l[0].base.as_str(), l[1].base.as_str()));
}

#[test]
fn a_name_under_no_search_suffix_is_a_one_query_lookup() {
    let lookups = run(
        &mut tracker(100),
        &[ev(0, "10.0.0.13", "example.org.", QTYPE_A, OK, 2)],
    );
    assert_eq!(lookups.len(), 1);
    let l = &lookups[0];
    assert_eq!((l.queries, l.wasted), (1, 0));
    assert_eq!(l.suffix_queries[SuffixSlot::Absolute as usize], 1);
}

#[test]
fn dnsperf_style_inputs_group_by_candidate_sequence() {
    // No answers, no real timing: the same instant for every line.
    let mut events = Vec::new();
    for _ in 0..2 {
        for q in GITHUB_WALK {
            events.push(ev(0, "127.0.0.1", q, QTYPE_A, None, 0));
        }
    }
    let lookups = run(&mut tracker(100), &events);
    assert_eq!(lookups.len(), 2, "{lookups:#?}");
    for l in &lookups {
        assert_eq!((l.queries, l.wasted), (5, 4));
        assert_eq!(l.outcome, Outcome::Unanswered);
    }
}

#[test]
fn a_confirmed_namespace_disambiguates_readings() {
    let c = "10.0.0.14";
    let q = "web.prod.svc.cluster.local.";
    // Unknown namespace: the longest suffix, `web` in namespace `prod`.
    let l = run(&mut tracker(100), &[ev(0, c, q, QTYPE_A, OK, 1)]);
    assert_eq!(l[0].base, "web.");
    assert_eq!(l[0].namespace.as_deref(), Some("prod"));

    // The client's own search list showed it lives in `default`: `web.prod` under svc.
    let mut t = tracker(100);
    let all = run(
        &mut t,
        &[
            ev(0, c, "a.default.svc.cluster.local.", QTYPE_A, NX, 0),
            ev(1, c, "a.svc.cluster.local.", QTYPE_A, OK, 1),
            ev(10, c, q, QTYPE_A, OK, 1),
        ],
    );
    assert_eq!(all.len(), 2);
    let last = all.iter().max_by_key(|l| l.start).unwrap();
    assert_eq!(last.base, "web.prod.");
    assert_eq!(last.namespace.as_deref(), Some("default"));
}

#[test]
fn a_name_with_more_readings_than_the_memo_keeps_finds_the_plausible_one_past_them() {
    // Five readings of `n.l1.l2.l3.l4.l5`: four namespace readings (`l1` .. `l4`), then `l5`
    // plain. The memo keeps four; the client lives in `zz`, so only the fifth is plausible.
    let cluster = ClusterConfig {
        domain: "cluster.local".into(),
        search: ["*.l2.l3.l4.l5", "*.l3.l4.l5", "*.l4.l5", "*.l5", "l5"]
            .map(String::from)
            .to_vec(),
        node_search: vec![],
    };
    let mut t = WalkTracker::new(SearchShape::new(&cluster), &cfg(2000, 100));
    let c = "10.0.0.16";
    let q = "n.l1.l2.l3.l4.l5.";
    let all = run(
        &mut t,
        &[
            ev(0, c, "a.zz.l2.l3.l4.l5.", QTYPE_A, NX, 0),
            ev(1, c, "a.zz.l3.l4.l5.", QTYPE_A, OK, 1),
            // Twice: a fresh reading, then the memo's.
            ev(10, c, q, QTYPE_A, OK, 1),
            ev(20, c, q, QTYPE_A, OK, 1),
        ],
    );
    assert_eq!(all.len(), 3, "{all:#?}");
    for l in all.iter().filter(|l| l.start.0 > all[0].start.0) {
        assert_eq!(l.base, "n.l1.l2.l3.l4.");
        assert_eq!(l.namespace.as_deref(), Some("zz"));
        assert_eq!(l.last_search_index, Some(4));
    }
}

#[test]
fn the_reading_memo_gives_the_lookups_a_fresh_reading_gives() {
    // Names in turn, fewer than the memo holds and then more, each also asked in other case
    // (0x20), some longer than it keeps, from clients of two namespaces: the lookups must be
    // those of a tracker that reads every name afresh, whatever the memo kept or evicted.
    let mut events = Vec::new();
    let clients = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"];
    events.extend(mixed_events(&clients, 0));
    let mut t = 100_000;
    for (round, names) in [3000u64, 3000, 9000, 3000].into_iter().enumerate() {
        for i in 0..names {
            let c = clients[(i % 4) as usize];
            let ns = if i % 4 < 2 { "default" } else { "prod" };
            let name = match i % 5 {
                // Longer than the memo keeps: read afresh every time.
                _ if i % 97 == 0 => format!(
                    "{}.{}-{i}.{ns}.svc.cluster.local.",
                    "x".repeat(63),
                    "y".repeat(60)
                ),
                0 | 1 => format!("svc-{}.{ns}.svc.cluster.local.", i / 2),
                2 => format!("svc-{i}.other.svc.cluster.local."),
                3 => format!("host-{i}.ec2.internal."),
                _ => format!("api-{}.example.com.{ns}.svc.cluster.local.", i % 300),
            };
            let name = if (i + round as u64) % 3 == 0 {
                name.to_uppercase()
            } else {
                name
            };
            let (rc, n) = if (i + round as u64) % 7 == 0 {
                (NX, 0)
            } else {
                (OK, 1)
            };
            events.push(ev(t, c, &name, QTYPE_A, rc, n));
            t += 1;
        }
    }
    let fresh = run(&mut tracker(1000).with_memo_sets(0), &events);
    let kept = run(&mut tracker(1000), &events);
    let crowded = run(&mut tracker(1000).with_memo_sets(1), &events);
    assert_eq!(kept.len(), fresh.len());
    assert!(kept == fresh, "the memo changed a lookup");
    assert!(crowded == fresh, "a crowded memo changed a lookup");
}

#[test]
fn an_absolute_name_sent_first_may_be_followed_by_the_search_list() {
    // glibc with a name of >= ndots dots: as-is first, then the search list.
    let c = "10.0.0.15";
    let n = "a.b.c.d.e.f";
    let lookups = run(
        &mut tracker(100),
        &[
            ev(0, c, &format!("{n}."), QTYPE_A, NX, 0),
            ev(
                1,
                c,
                &format!("{n}.default.svc.cluster.local."),
                QTYPE_A,
                NX,
                0,
            ),
            ev(2, c, &format!("{n}.svc.cluster.local."), QTYPE_A, OK, 1),
        ],
    );
    assert_eq!(lookups.len(), 1, "{lookups:#?}");
    assert_eq!((lookups[0].queries, lookups[0].wasted), (3, 2));
    assert_eq!(lookups[0].suffix_wasted[SuffixSlot::Absolute as usize], 1);
}

/// A varied stream: several clients in two namespaces, glibc walks, short names, retries.
fn mixed_events(clients: &[&str], t0: u64) -> Vec<QueryEvent> {
    let mut v = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let t = t0 + 5000 * i as u64;
        v.extend(glibc_github(c, t));
        v.push(ev(
            t + 20,
            c,
            "web.prod.default.svc.cluster.local.",
            QTYPE_A,
            NX,
            0,
        ));
        v.push(ev(t + 21, c, "web.prod.svc.cluster.local.", QTYPE_A, OK, 1));
        v.push(ev(t + 30, c, "example.org.", QTYPE_AAAA, OK, 1));
        if i % 2 == 0 {
            v.push(ev(
                t + 40,
                c,
                "nope.default.svc.cluster.local.",
                QTYPE_A,
                None,
                0,
            ));
            v.push(ev(
                t + 41,
                c,
                "nope.default.svc.cluster.local.",
                QTYPE_A,
                NX,
                0,
            ));
        }
    }
    v
}

fn analyze(events: &[QueryEvent]) -> Report {
    let mut a = Analyzer::new(&cluster(), &cfg(2000, 1000));
    for e in events {
        a.observe(e);
    }
    a.finish("test")
}

#[test]
fn report_figures_add_up() {
    let r = analyze(&mixed_events(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], 0));
    let hist_lookups: u64 = r.amplification.histogram.iter().map(|p| p[1]).sum();
    let hist_queries: u64 = r.amplification.histogram.iter().map(|p| p[0] * p[1]).sum();
    assert_eq!(hist_lookups, r.lookups);
    assert_eq!(hist_queries, r.queries);
    assert_eq!(
        r.by_type.values().map(|t| t.queries).sum::<u64>(),
        r.queries
    );
    let s = &r.by_suffix;
    assert_eq!(
        s.namespace + s.svc + s.cluster + s.node + s.other + s.absolute,
        r.queries
    );
    let w = &r.wasted_by_suffix;
    assert_eq!(
        w.namespace + w.svc + w.cluster + w.node + w.other + w.absolute,
        r.wasted_queries
    );
    assert_eq!(r.outcomes.values().sum::<u64>(), r.lookups);
    assert_eq!(r.top_names[0].name, "api.github.com.");
    // Ordered by wasted, then queries, descending.
    for l in [
        &r.top_names
            .iter()
            .map(|n| (n.wasted_queries, n.queries))
            .collect::<Vec<_>>(),
        &r.top_clients
            .iter()
            .map(|n| (n.wasted_queries, n.queries))
            .collect::<Vec<_>>(),
    ] {
        assert!(l.windows(2).all(|w| w[0] >= w[1]), "{l:?}");
    }
    assert!(r
        .top_clients
        .iter()
        .all(|c| c.namespace.as_deref() == Some("default")));
    assert_eq!(r.amplification.max, 5);
    assert!(r.amplification.p50 >= 1 && r.amplification.p99 <= r.amplification.max);
}

#[test]
fn report_json_has_the_design_fields() {
    let r = analyze(&mixed_events(&["10.0.0.1"], 0));
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    for k in [
        "source",
        "window_seconds",
        "queries",
        "lookups",
        "amplification",
        "wasted_queries",
        "by_type",
        "by_suffix",
        "top_names",
        "top_clients",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    for k in ["mean", "p50", "p90", "p99", "max", "histogram"] {
        assert!(
            v["amplification"].get(k).is_some(),
            "missing amplification.{k}"
        );
    }
    assert!(v["amplification"]["histogram"][0].as_array().unwrap().len() == 2);
    for k in ["namespace", "svc", "cluster", "node", "absolute"] {
        assert!(v["by_suffix"][k].is_u64(), "missing by_suffix.{k}");
    }
    for k in ["queries", "lookups", "wasted_queries"] {
        assert!(v["by_type"]["A"][k].is_u64(), "missing by_type.A.{k}");
    }
    for k in ["name", "lookups", "queries", "wasted_queries"] {
        assert!(v["top_names"][0].get(k).is_some(), "missing top_names.{k}");
    }
    for k in [
        "client",
        "namespace",
        "lookups",
        "queries",
        "wasted_queries",
    ] {
        assert!(
            v["top_clients"][0].get(k).is_some(),
            "missing top_clients.{k}"
        );
    }
    assert!(v["top_names"][0]["name"].as_str().unwrap().ends_with('.'));
    // And it reads back unchanged.
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}

/// The figures that do not depend on how the events were split.
fn timeless(mut r: Report) -> Report {
    r.source = String::new();
    r.window_seconds = 0.0;
    r.first_seen = None;
    r.last_seen = None;
    r
}

#[test]
fn merging_two_reports_equals_the_report_over_the_union() {
    let a_ev = mixed_events(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], 0);
    // The second proxy sees other clients and partly the same ones.
    let b_ev = mixed_events(&["10.0.0.3", "10.0.0.4"], 100_000);
    let a = analyze(&a_ev);
    let b = analyze(&b_ev);
    let mut union = a_ev.clone();
    union.extend(b_ev.iter().cloned());
    let whole = analyze(&union);
    let merged = Report::merge(&[a.clone(), b.clone()]);
    assert!(merged.top_complete);
    assert_eq!(timeless(merged.clone()), timeless(whole.clone()));
    assert_eq!(merged.first_seen, whole.first_seen);
    assert_eq!(merged.last_seen, whole.last_seen);
    assert_eq!(merged.source, "test + test");
    // And through JSON, as `ndots report` does it.
    let a2: Report = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    let b2: Report = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
    assert_eq!(timeless(Report::merge(&[a2, b2])), timeless(whole));
}

#[test]
fn windowed_reports_count_only_recent_buckets() {
    let t0 = Timestamp(1_700_000_000_000_000);
    let mut w = Windowed::new(t0);
    let mut t = tracker(100);
    // One walk every minute for ten minutes.
    for m in 0..10u64 {
        for e in glibc_github("10.0.0.5", m * 60_000) {
            t.observe(&e);
        }
    }
    for l in t.drain() {
        w.add(&l);
    }
    let now = Timestamp(t0.0 + 9 * 60_000_000 + 30_000_000);
    let all = w.report(None, now, "x");
    assert_eq!(all.lookups, 20);
    let last5 = w.report(Some(Duration::from_secs(300)), now, "x");
    // Walks at minutes 5..9 (the one at 4:00 ends before 4:30).
    assert_eq!(last5.lookups, 10);
    assert_eq!(last5.window_seconds, 300.0);
    let huge = w.report(Some(Duration::from_secs(86400)), now, "x");
    assert_eq!(huge.lookups, 20);
    assert_eq!(
        huge.window_seconds,
        w.span().as_secs_f64().min(now.since(t0).as_secs_f64())
    );
}

#[test]
fn top_maps_stay_bounded_and_keep_heavy_hitters() {
    let mut agg = Aggregate::new(8);
    let mut t = tracker(10_000);
    for e in glibc_github("10.9.9.9", 0) {
        t.observe(&e);
    }
    for i in 0..100u64 {
        t.observe(&ev(
            10 + i,
            "10.9.9.9",
            &format!("n{i}.example."),
            QTYPE_A,
            OK,
            1,
        ));
    }
    for l in t.drain() {
        agg.add(&l);
    }
    let r = agg.to_report("x", 0.0);
    assert!(r.top_names.len() <= 8);
    assert!(!r.top_complete);
    assert_eq!(r.top_names[0].name, "api.github.com.");
    assert_eq!(r.top_names[0].wasted_queries, 8);
    assert_eq!(r.lookups, 102);
}

#[test]
fn the_live_tracker_reports_recorded_events() {
    let tr = Tracker::start_named(&cluster(), &cfg(2000, 1000), "node-a");
    let now_ms = Timestamp::now().0 / 1000 - 1_700_000_000_000;
    for e in glibc_github("10.0.0.5", now_ms) {
        tr.record(e);
    }
    tr.record(ev(
        now_ms + 50,
        "10.0.0.6",
        "q.default.svc.cluster.local.",
        QTYPE_A,
        NX,
        0,
    ));
    tr.sync(false);
    let r = tr.report(Some(Duration::from_secs(300)));
    assert_eq!((r.lookups, r.queries, r.wasted_queries), (2, 10, 8));
    assert_eq!(r.source, "node-a");
    tr.sync(true);
    let v: serde_json::Value = serde_json::from_str(&tr.report_json(None)).unwrap();
    assert_eq!(v["lookups"], 3);
    assert_eq!(tr.dropped(), 0);
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The flood of the issue, on the tracker alone: 1,000,000 distinct names from 100,000
/// clients through the walk tracker and the windowed aggregates, with the default bound of
/// 200,000 open walks. Prints the RSS growth; `--ignored` because it takes a while in debug.
#[test]
#[ignore]
fn flood_of_distinct_names_stays_bounded() {
    let max_open = 200_000;
    let mut t = WalkTracker::new(SearchShape::new(&cluster()), &cfg(2000, max_open));
    let t0 = Timestamp(1_700_000_000_000_000);
    let mut w = Windowed::new(t0);
    let before = rss_kib();
    let mut peak = 0;
    for i in 0..1_000_000u64 {
        let c = i % 100_000;
        let client = IpAddr::from([10, (c >> 16) as u8, (c >> 8) as u8, c as u8]);
        let e = QueryEvent {
            time: Timestamp(t0.0 + i * 10), // 100,000 queries per second
            client,
            client_port: None,
            qname: format!("n{i}.example.com.default.svc.cluster.local."),
            qtype: QTYPE_A,
            rcode: NX,
            answers: Some(0),
            latency: Some(Duration::from_micros(200)),
            source: Some(AnswerSource::Upstream),
        };
        t.observe(&e);
        for l in t.drain() {
            w.add(&l);
        }
        assert!(t.open_walks() <= max_open);
        if i % 100_000 == 0 {
            peak = peak.max(rss_kib());
        }
    }
    peak = peak.max(rss_kib());
    let r = w.report(None, Timestamp(t0.0 + 10_000_000), "flood");
    eprintln!(
        "flood: open walks {} (bound {max_open}), evictions {}, lookups reported {}, \
         RSS growth {} KiB (peak {} KiB over a start of {before} KiB)",
        t.open_walks(),
        t.evictions(),
        r.lookups,
        peak.saturating_sub(before),
        peak
    );
    assert!(r.top_names.len() <= report::TOP_LIMIT);
}

#[test]
fn the_since_start_report_is_exact_while_closed_buckets_are_shrunk() {
    let t0 = Timestamp(1_700_000_000_000_000);
    let mut w = Windowed::new(t0);
    let mut t = tracker(100_000);
    // Three 10 s buckets of 300 distinct names each: more than a closed bucket keeps.
    for b in 0..3u64 {
        for i in 0..300u64 {
            let name = format!("n{b}-{i}.example.");
            t.observe(&ev(b * 10_000 + i, "10.0.0.7", &name, QTYPE_A, OK, 1));
        }
    }
    t.finish();
    let mut lookups: Vec<Lookup> = t.drain().collect();
    lookups.sort_by_key(|l| l.end);
    // One lookup of the first bucket arrives after the others (late, out of order).
    let late = lookups.remove(0);
    lookups.push(late);
    let mut whole = Aggregate::new(report::TOTAL_TOP_CAP);
    for l in &lookups {
        w.add(l);
        whole.add(l);
    }
    let now = Timestamp(lookups.iter().map(|l| l.end).max().unwrap().0 + 1);
    let since_start = w.report(None, now, "x");
    assert_eq!(since_start.lookups, 900);
    assert_eq!(timeless(since_start), timeless(whole.to_report("x", 0.0)));
    // A window over the whole ring sees every lookup too, its top list from shrunk buckets.
    let windowed = w.report(Some(Duration::from_secs(60)), now, "x");
    assert_eq!(windowed.lookups, 900);
    assert_eq!(windowed.queries, 900);
}

#[test]
fn a_lookup_tells_its_nxdomain_count_and_the_candidate_it_ended_at() {
    let mut t = tracker(100);
    let events: Vec<QueryEvent> = GITHUB_WALK
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let last = i == GITHUB_WALK.len() - 1;
            ev(
                i as u64,
                "10.0.0.5",
                n,
                QTYPE_A,
                if last { OK } else { NX },
                last as u16,
            )
        })
        .chain([
            ev(
                100,
                "10.0.0.6",
                "web.prod.default.svc.cluster.local.",
                QTYPE_A,
                NX,
                0,
            ),
            ev(
                101,
                "10.0.0.6",
                "web.prod.svc.cluster.local.",
                QTYPE_A,
                OK,
                1,
            ),
        ])
        .collect();
    let mut lookups = run(&mut t, &events);
    lookups.sort_by_key(|l| l.client);
    assert_eq!(
        (lookups[0].nxdomain, lookups[0].last_search_index),
        (4, None)
    );
    // `web.prod` + the shape's second entry (svc.cluster.local).
    assert_eq!(lookups[1].base, "web.prod.");
    assert_eq!(
        (lookups[1].nxdomain, lookups[1].last_search_index),
        (1, Some(1))
    );
}

/// Replay's false NODATA->NXDOMAIN changes on the synthetic capture: an absolute-first lookup
/// (`svc.ns.svc.cluster.local.` asked with a trailing dot) answered A with an address and AAAA
/// NODATA left its AAAA walk open for the search list, and the client's next lookup of the
/// same name joined it.
#[test]
fn aaaa_nodata_ends_its_walk_when_a_of_the_same_port_resolved() {
    let mut t = tracker(100);
    let name = "api.default.svc.cluster.local.";
    let mut events = vec![
        ev(0, "10.0.0.5", name, QTYPE_A, OK, 1),
        ev(0, "10.0.0.5", name, QTYPE_AAAA, OK, 0),
    ];
    // 200 ms later, a new lookup of the name written without the dot: the full walk.
    for (i, s) in [
        "default.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
    ]
    .iter()
    .enumerate()
    {
        let q = format!("{name}{s}");
        events.push(ev(200 + i as u64, "10.0.0.5", &q, QTYPE_A, NX, 0));
        events.push(ev(200 + i as u64, "10.0.0.5", &q, QTYPE_AAAA, NX, 0));
    }
    events.push(ev(204, "10.0.0.5", name, QTYPE_A, OK, 1));
    events.push(ev(204, "10.0.0.5", name, QTYPE_AAAA, OK, 0));
    let lookups = run(&mut t, &events);
    let aaaa: Vec<u32> = lookups
        .iter()
        .filter(|l| l.qtype == QTYPE_AAAA)
        .map(|l| l.queries)
        .collect();
    assert_eq!(aaaa, [1, 4], "{lookups:#?}");
}

/// Two threads of one pod looking up the same name at once: their candidates interleave, and
/// each walk is still whole (the earlier one is not closed by the second's first candidate).
#[test]
fn concurrent_walks_of_one_name_from_one_client_are_kept_apart() {
    let mut t = tracker(100);
    let mut events = Vec::new();
    for (i, q) in GITHUB_WALK.iter().enumerate() {
        let last = i == GITHUB_WALK.len() - 1;
        let (rc, n) = if last { (OK, 1) } else { (NX, 0) };
        events.push(ev(2 * i as u64, "10.0.0.5", q, QTYPE_A, rc, n));
        events.push(ev(2 * i as u64 + 1, "10.0.0.5", q, QTYPE_A, rc, n));
    }
    let lookups = run(&mut t, &events);
    let q: Vec<u32> = lookups.iter().map(|l| l.queries).collect();
    assert_eq!(q, [5, 5], "{lookups:#?}");
    assert!(lookups.iter().all(|l| l.outcome == Outcome::Resolved));
}

/// Issue 14: with a dead upstream every walk stays open, and one client (a node's busiest pod,
/// or dnsperf) can have 100,000 of them. Placing a query must look at the walks of its own
/// few bases only, not at every walk the client has open: the cost per event stays flat.
#[test]
fn open_walks_of_one_client_do_not_make_each_event_dearer() {
    let mut t = tracker(200_000);
    let walks = 100_000u64;
    let mut ms = 0;
    // Every walk starts (its first candidate SERVFAILs) and none ends.
    for i in 0..walks {
        ms += 1;
        let q = format!("tenant-{i}.s3.eu-west-1.amazonaws.com.default.svc.cluster.local.");
        // Events 1 µs apart: all within the idle window.
        let mut e = ev(0, "10.0.0.1", &q, QTYPE_A, Some(2), 0);
        e.time = Timestamp(e.time.0 + ms);
        t.observe(&e);
    }
    assert_eq!(t.open_walks(), walks as usize);
    let probes_before = t.probes();
    // Each continues with its second candidate: one lookup per event.
    for i in 0..walks {
        ms += 1;
        let q = format!("tenant-{i}.s3.eu-west-1.amazonaws.com.svc.cluster.local.");
        let mut e = ev(0, "10.0.0.1", &q, QTYPE_A, Some(2), 0);
        e.time = Timestamp(e.time.0 + ms);
        t.observe(&e);
    }
    assert_eq!(
        t.open_walks(),
        walks as usize,
        "every query continued its walk"
    );
    let per_event = (t.probes() - probes_before) as f64 / walks as f64;
    assert!(
        per_event <= 2.0,
        "{per_event} open walks looked at per event with {walks} open"
    );
    t.finish();
    let lookups: Vec<Lookup> = t.drain().collect();
    assert_eq!(lookups.len(), walks as usize);
    assert!(lookups.iter().all(|l| l.queries == 2 && l.wasted == 1));
}

/// The live tracker's memory budget: open walks beyond the `tracker_walks` share evict the
/// oldest walk whole (reported as evicted with all its queries), never a part of one.
#[test]
fn walks_beyond_their_budget_share_are_evicted_whole() {
    use crate::budget::{MemoryBudget, Part};
    let budget = std::sync::Arc::new(MemoryBudget::new(crate::budget::MIN_LIMIT));
    let mut t = tracker(1_000_000).with_budget(budget.clone());
    let share = budget.share(Part::TrackerWalks);
    let walks = 50_000u64;
    for i in 0..walks {
        for (k, suffix) in ["default.svc.cluster.local.", "svc.cluster.local."]
            .iter()
            .enumerate()
        {
            let q = format!("tenant-{i}.s3.eu-west-1.amazonaws.com.{suffix}");
            let mut e = ev(0, "10.0.0.1", &q, QTYPE_A, Some(2), 0);
            e.time = Timestamp(e.time.0 + i * 2 + k as u64);
            t.observe(&e);
        }
        assert!(budget.used(Part::TrackerWalks) <= share);
    }
    assert!(t.evictions() > 0 && (t.open_walks() as u64) < walks);
    let evicted: Vec<Lookup> = t.drain().collect();
    assert_eq!(evicted.len() as u64, t.evictions());
    assert!(evicted
        .iter()
        .all(|l| l.outcome == Outcome::Evicted && l.queries == 2));
    t.finish();
    assert_eq!(
        budget.used(Part::TrackerWalks),
        0,
        "closed walks give their bytes back"
    );
}

/// Found in review: the at-once table (16,384 boxed entries, about 9 MB at most) was outside
/// the memory budget, so under a small `server.memory_limit` the tracker could hold several
/// times its share. It is charged to the `tracker_walks` share now, within half of it; keys
/// beyond that take the full path, and every event still makes its lookup.
#[test]
fn the_at_once_table_was_outside_the_memory_budget() {
    use crate::budget::{MemoryBudget, Part};
    let budget = std::sync::Arc::new(MemoryBudget::new(crate::budget::MIN_LIMIT));
    let share = budget.share(Part::TrackerWalks);
    let mut t = tracker(1_000).with_budget(budget.clone());
    let (mut wire, mut lookups, events) = (Vec::new(), 0, 20_000u64);
    for i in 0..events {
        let mut e = ev(i, "10.0.0.1", "", QTYPE_A, Some(0), 1);
        e.client = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
        wire.clear();
        let name = format!("tenant-{i}.s3.eu-west-1.amazonaws.com.");
        crate::wire::encode_name(&name, &mut wire).unwrap();
        t.observe_wire(&mut e, &wire);
        lookups += t.drain().count();
        assert!(
            budget.used(Part::TrackerWalks) <= share,
            "over the share at {i}"
        );
    }
    let (entries, charged) = t.at_once_use();
    assert!(charged <= share / 2, "{charged} of a share of {share}");
    assert!(
        entries > 1_000 && entries < 16_384 && charged > share / 2 - 1_000,
        "the cap, not the slots, stopped the table: {entries} entries, {charged} bytes"
    );
    t.finish();
    lookups += t.drain().count();
    assert_eq!(lookups as u64, events, "every event made its lookup");
    assert_eq!(
        budget.used(Part::TrackerWalks),
        charged,
        "only the table holds bytes"
    );
    drop(t);
    assert_eq!(
        budget.used(Part::TrackerWalks),
        0,
        "a dropped table gives its bytes back"
    );
}

/// Found in review: once the at-once table held its half of the `tracker_walks` share, open
/// walks were evicted for room it kept (6,088 of 10,000 against 2,175 without the table). It
/// gives way now: the same walks are evicted, and the same lookups made, with it or without,
/// and with its lookups held as repeats (the live tracker's way) when it frees their entries.
#[test]
fn open_walks_were_evicted_to_keep_at_once_entries() {
    use crate::budget::MemoryBudget;
    let mut events = Vec::new();
    let cached = |i: u64, ms: u64| {
        let mut e = ev(ms, "10.0.0.1", "", QTYPE_A, Some(0), 1);
        e.client = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
        e.qname = format!("tenant-{i}.s3.eu-west-1.amazonaws.com.");
        e
    };
    // Cached answers, enough to fill the table's half of the share.
    for i in 0..20_000u64 {
        events.push(cached(i, i));
    }
    // Then walks left open (their first candidate NXDOMAIN), from one other client (so the
    // cached answers' clients have none open), each within the idle timeout of the others,
    // between cached answers asked again (held as repeats by a deferring tracker when their
    // entries give way).
    for i in 0..10_000u64 {
        let mut e = ev(40_000, "10.2.0.1", "", QTYPE_A, Some(3), 0);
        e.time = Timestamp(e.time.0 + i * 10);
        e.qname = format!("web-{i}.example.com.default.svc.cluster.local.");
        let mut again = cached(i % 1_000, 40_000);
        again.time = Timestamp(e.time.0 + 5);
        events.extend([e, again]);
    }
    let budgeted = || {
        tracker(1_000_000).with_budget(std::sync::Arc::new(MemoryBudget::new(
            crate::budget::MIN_LIMIT,
        )))
    };
    let mut without = budgeted().without_at_once();
    let full = sorted(run_wire(&mut without, &events));
    let mut with = budgeted();
    let fast = sorted(run_wire(&mut with, &events));
    let mut deferring = budgeted().defer_repeats(SMALL_BUCKET);
    let (deferred, _) = run_deferred(&mut deferring, &events);
    assert!(
        without.evictions() > 0,
        "the share is small enough to evict walks"
    );
    assert_eq!(with.evictions(), without.evictions(), "walks evicted");
    assert_eq!(
        deferring.evictions(),
        without.evictions(),
        "walks evicted, deferring"
    );
    assert_eq!(full.len(), 40_000);
    assert!(
        deferring.at_once_hits() > 1_000,
        "the table was in use while walks opened"
    );
    assert!(fast == full, "the same lookups with the table and without");
    assert!(sorted(deferred) == full, "the same lookups held as repeats");
}

/// The counters that let `observe` skip the walk chains of a client and type with none open
/// must follow every walk opened and closed (continued, ended by an answer, by the other
/// type's answer, restarted, evicted at `max_open_walks`, idle, finished): one too low and a
/// query no longer finds the walk it continues. The chain table is checked after every event
/// too (`check_chains`: each open walk on one chain, each chain newest first under one entry).
#[test]
fn open_walk_counts_follow_every_walk_opened_and_closed() {
    let mut t = tracker(16);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let suffixes = [
        "default.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
        "ec2.internal.",
        "",
    ];
    let mut ms = 0;
    for _ in 0..20_000 {
        ms += next(40);
        let client = format!("10.0.{}.{}", next(2), next(12));
        let base = ["api.github.com", "web", "db.prod", "x.example.org"][next(4) as usize];
        let suffix = suffixes[next(5) as usize];
        let name = if suffix.is_empty() {
            format!("{base}.")
        } else {
            format!("{base}.{suffix}")
        };
        let qtype = [QTYPE_A, QTYPE_AAAA][next(2) as usize];
        let (rcode, answers) = match next(5) {
            0 => (OK, 1),
            1 => (OK, 0),
            2 => (None, 0),
            _ => (NX, 0),
        };
        t.observe(&ev(ms, &client, &name, qtype, rcode, answers));
        assert_eq!(
            t.open_walks_counted(),
            t.open_walks(),
            "after {name} at {ms} ms"
        );
        t.check_chains();
    }
    assert!(t.evictions() > 0, "the walk table filled up");
    t.flush(Timestamp(1_700_000_000_000_000 + (ms + 1_000) * 1000));
    assert_eq!(t.open_walks_counted(), t.open_walks());
    t.check_chains();
    t.finish();
    assert_eq!((t.open_walks(), t.open_walks_counted()), (0, 0));
    t.check_chains();
}

/// Events of a small world, so that names, clients and answers repeat: cached answers asked
/// again (the at-once table's case) between walks, A and AAAA pairs whose other half is NODATA
/// or still open, retries, idle gaps, names in other case, the root, and non-address types.
fn repeating_events(picks: &[(u8, u8, u8, u8, u8, u8)]) -> Vec<QueryEvent> {
    const CLIENTS: [&str; 3] = ["10.2.0.1", "10.2.0.2", "fd00::7"];
    const NAMES: [&str; 10] = [
        "web.default.svc.cluster.local.",
        "web.svc.cluster.local.",
        "web.",
        "WEB.default.svc.cluster.local.",
        "db.prod.svc.cluster.local.",
        "db.default.svc.cluster.local.",
        "api.github.com.cluster.local.",
        "api.github.com.ec2.internal.",
        "api.github.com.",
        ".",
    ];
    let answer = |pick: u8| match pick % 8 {
        0..=3 => (OK, 1),
        4 => (OK, 0),
        5 => (NX, 0),
        6 => (Some(2), 0),
        _ => (None, 0),
    };
    let mut t = 0u64;
    let mut events = Vec::new();
    for &(c, n, ty, answers, source, gap) in picks {
        // Mostly close together; now and then past the 2 s idle window.
        t += match gap % 8 {
            0..=4 => 1,
            5 => 40,
            6 => 700,
            _ => 2500,
        };
        let client = CLIENTS[c as usize % CLIENTS.len()];
        let name = NAMES[n as usize % NAMES.len()];
        // Half the picks are a getaddrinfo pair, each half answered on its own.
        let types: &[u16] = match ty % 6 {
            0..=2 => &[QTYPE_A, QTYPE_AAAA],
            3 => &[QTYPE_A],
            4 => &[QTYPE_AAAA],
            _ => &[16],
        };
        for (i, &qtype) in types.iter().enumerate() {
            let pick = answers >> (4 * i);
            let (rcode, count) = answer(pick);
            let mut e = ev(t, client, name, qtype, rcode, count);
            // The source port a query went from: one of two, or none known (a capture's).
            e.client_port = [Some(40000), Some(40001), None][(gap >> 3) as usize % 3];
            if rcode.is_some() {
                e.source = match source % 8 {
                    0..=4 => Some(AnswerSource::Cache),
                    5 => Some(AnswerSource::Upstream),
                    6 => Some(AnswerSource::Shortcut),
                    _ => None,
                };
                // Now and then no latency known, or a positive answer without a count.
                e.latency =
                    (source & 0x30 != 0x30).then(|| Duration::from_micros(u64::from(source) * 37));
                if rcode == OK && count == 1 && pick & 0x8 != 0 {
                    e.answers = None;
                }
            }
            events.push(e);
        }
    }
    events
}

/// Feed `events` as the live tracker is fed: by their wire names, every seventh by its text
/// (as the answers of spawned queries are); `after` is called after each event, and (with
/// `true`) once the walks are finished.
fn feed_live(
    t: &mut WalkTracker,
    events: &[QueryEvent],
    mut after: impl FnMut(&mut WalkTracker, bool),
) {
    let mut wire = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if i % 7 == 3 {
            t.observe(e);
        } else {
            wire.clear();
            crate::wire::encode_name(&e.qname, &mut wire).unwrap();
            let mut e = e.clone();
            e.qname.clear();
            t.observe_wire(&mut e, &wire);
        }
        after(t, false);
    }
    t.finish();
    after(t, true);
}

/// The lookups of `events` fed as the live tracker is fed.
fn run_wire(t: &mut WalkTracker, events: &[QueryEvent]) -> Vec<Lookup> {
    let mut out = Vec::new();
    feed_live(t, events, |t, _| out.extend(t.drain()));
    out
}

/// `run_wire` with the lookups made from the at-once table held as repeats (a tracker made
/// with `defer_repeats`), handed out as the live tracker does after each message: the
/// repeats when due, then the lookups closed. Returns them in that order, each repeat a
/// lookup of its own, and the repeats by how many were handed out together.
fn run_deferred(t: &mut WalkTracker, events: &[QueryEvent]) -> (Vec<Lookup>, Vec<usize>) {
    let (mut out, mut groups) = (Vec::new(), Vec::new());
    feed_live(t, events, |t, settle| {
        let due = if settle { Due::All } else { t.repeats_due() };
        t.drain_repeats(due, |l, r| {
            out.extend(r.lookups(l));
            groups.push(r.held());
        });
        out.extend(t.drain());
    });
    (out, groups)
}

/// Lookups in an order of their own, to compare two lists as multisets.
fn sorted(mut lookups: Vec<Lookup>) -> Vec<Lookup> {
    lookups.sort_by_cached_key(|l| format!("{l:?}"));
    lookups
}

/// Handed out a few entries at a time (the live tracker offers its core between chunks),
/// the repeats held are every lookup the full path makes, each once, and none stays held:
/// the full entries' (`Due::Full`) and every entry's (`Due::All`).
#[test]
fn repeats_handed_out_in_chunks_are_each_handed_out_once() {
    // Every other pick one of three cached answers asked again (they fill their entries),
    // the rest anything.
    let picks: Vec<(u8, u8, u8, u8, u8, u8)> = (0..3000u32)
        .map(|i| {
            let x = i.wrapping_mul(2_654_435_761);
            let b = |shift: u32| (x >> shift) as u8;
            if i % 2 == 0 {
                ((i / 2 % 3) as u8, 8, 3, 0, 0, 0)
            } else {
                (b(3), b(9), b(15), b(21), b(27), b(1))
            }
        })
        .collect();
    let events = repeating_events(&picks);
    let full = run(&mut tracker(1000), &events);
    // One bucket for all, and the repeats looked at only every 64 events: several entries
    // fill up between two looks, and every entry stays held until the end.
    let mut t = tracker(1000).defer_repeats(Duration::from_secs(3600));
    let (mut out, mut turns) = (Vec::new(), 0);
    let (mut full_chunks_left, mut all_chunks_left) = (0, 0);
    feed_live(&mut t, &events, |t, settle| {
        turns += 1;
        if settle || turns % 64 == 0 {
            let due = if settle { Due::All } else { t.repeats_due() };
            while t.drain_some_repeats(due, 2, |l, r| out.extend(r.lookups(l))) {
                match due {
                    Due::Full => full_chunks_left += 1,
                    _ => all_chunks_left += 1,
                }
            }
        }
        out.extend(t.drain());
    });
    assert!(
        full_chunks_left > 0 && all_chunks_left > 20,
        "too few hand-outs needed a second chunk: {full_chunks_left} of full entries, \
         {all_chunks_left} of all"
    );
    assert!(!t.holds_repeats(), "repeats still held");
    assert_eq!(sorted(out), sorted(full));
}

/// The report's buckets ten to a second of event time: `repeating_events` crosses one
/// every few events.
const SMALL_BUCKET: Duration = Duration::from_micros(2_000);

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    /// The at-once table must make exactly the lookups the full path makes, in the same order.
    #[test]
    fn the_at_once_table_makes_the_lookups_the_full_path_makes(
        picks in proptest::collection::vec(proptest::prelude::any::<(u8, u8, u8, u8, u8, u8)>(), 1..400)
    ) {
        let events = repeating_events(&picks);
        let full = run(&mut tracker(1000), &events);
        let full_wire = run_wire(&mut tracker(1000).without_at_once(), &events);
        let mut fast_tracker = tracker(1000);
        let fast = run_wire(&mut fast_tracker, &events);
        proptest::prop_assert_eq!(&full_wire, &full);
        proptest::prop_assert_eq!(&fast, &full);
    }

    /// Held as repeats, the lookups made from the at-once table are the ones the full path
    /// makes (in another order), and the report of them published as the live tracker does
    /// (repeats by count when due, the rest one by one) is the report of the full path's
    /// lookups added one by one in their order.
    #[test]
    fn lookups_held_as_repeats_are_the_lookups_the_full_path_makes(
        picks in proptest::collection::vec(proptest::prelude::any::<(u8, u8, u8, u8, u8, u8)>(), 1..400),
        chunk in 1usize..4,
    ) {
        let events = repeating_events(&picks);
        let full = run(&mut tracker(1000), &events);
        let (deferred, _) = run_deferred(&mut tracker(1000).defer_repeats(SMALL_BUCKET), &events);
        proptest::prop_assert_eq!(sorted(deferred), sorted(full.clone()));

        let windowed = || Windowed::with_buckets(Timestamp(0), SMALL_BUCKET, SMALL_BUCKET * 1000);
        let mut one_by_one = windowed();
        for l in &full {
            one_by_one.add(l);
        }
        let mut counted = windowed();
        feed_live(&mut tracker(1000).defer_repeats(SMALL_BUCKET), &events, |t, settle| {
            let due = if settle { Due::All } else { t.repeats_due() };
            t.drain_repeats(due, |l, r| counted.add_repeated(l, r));
            for l in t.drain() {
                counted.add(&l);
            }
        });
        // Handed out a few entries at a time, as the live tracker does between offers of its
        // core, the report is the same.
        let mut in_chunks = windowed();
        feed_live(&mut tracker(1000).defer_repeats(SMALL_BUCKET), &events, |t, settle| {
            let due = if settle { Due::All } else { t.repeats_due() };
            while t.drain_some_repeats(due, chunk, |l, r| in_chunks.add_repeated(l, r)) {}
            for l in t.drain() {
                in_chunks.add(&l);
            }
        });
        let now = Timestamp(events.last().map_or(0, |e| e.time.0) + 10_000_000);
        for window in [None, Some(SMALL_BUCKET * 3)] {
            proptest::prop_assert_eq!(
                counted.report(window, now, "t"),
                one_by_one.report(window, now, "t")
            );
            proptest::prop_assert_eq!(
                in_chunks.report(window, now, "t"),
                one_by_one.report(window, now, "t")
            );
        }
    }
}

/// Added as a count, repeats of a lookup whose every figure is set (a walk's: wasted queries,
/// retries, upstream and shortcut answers, suffixes) are what each added alone makes: the
/// at-once lookups of the proptest above have most of these at 0.
#[test]
fn repeats_added_by_count_are_each_repeat_added_alone() {
    let walk: Vec<QueryEvent> = GITHUB_WALK
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let last = i == GITHUB_WALK.len() - 1;
            let mut e = ev(
                i as u64,
                "10.6.0.1",
                n,
                QTYPE_A,
                if last { OK } else { NX },
                1,
            );
            e.source = Some(if i % 2 == 0 {
                AnswerSource::Upstream
            } else {
                AnswerSource::Shortcut
            });
            e
        })
        .collect();
    let lookups = run(&mut tracker(1000), &walk);
    let mut l = lookups
        .into_iter()
        .max_by_key(|l| l.queries)
        .expect("the walk's lookup");
    assert!(
        l.wasted > 0 && l.upstream_wasted > 0 && l.shortcut_answers > 0,
        "{l:?}"
    );
    l.retries = 2; // no figure left at 0
    let l = &l;
    let times = [
        (5_000_000, 300),
        (5_000_100, 0),
        (5_009_000, 990_000),
        (5_000_050, 7),
    ];
    let r = super::at_once::Repeats::of(&times);
    let windowed = || {
        Windowed::with_buckets(
            Timestamp(0),
            Duration::from_secs(10),
            Duration::from_secs(100),
        )
    };
    let (mut counted, mut alone) = (windowed(), windowed());
    counted.add_repeated(l, &r);
    for one in r.lookups(l) {
        alone.add(&one);
    }
    let now = Timestamp(20_000_000);
    assert_eq!(counted.report(None, now, "t"), alone.report(None, now, "t"));
    assert_eq!(counted.report(None, now, "t").lookups, 4);
}

#[test]
fn cached_answers_asked_again_are_held_and_handed_out_by_count() {
    // 2,000 cached answers of ten names from one client in one bucket: the test above would
    // pass with nothing ever held.
    let events: Vec<QueryEvent> = (0..2000u64)
        .map(|i| {
            let n = format!("svc-{}.default.svc.cluster.local.", i % 10);
            ev(i, "10.3.0.1", &n, QTYPE_A, OK, 1)
        })
        .collect();
    let mut t = tracker(1000).defer_repeats(Duration::from_secs(10));
    let (lookups, groups) = run_deferred(&mut t, &events);
    assert_eq!(sorted(lookups), sorted(run(&mut tracker(1000), &events)));
    let held: usize = groups.iter().sum();
    // Every seventh event goes by its text.
    assert!(held > 1600, "{held} held");
    // An entry is handed out when full, alone.
    let full = groups
        .iter()
        .filter(|&&n| n == super::at_once::REPEATS)
        .count();
    assert!(
        full * 8 > groups.len() * 7,
        "{held} lookups in {} hand-outs: {groups:?}",
        groups.len()
    );
}

#[test]
fn the_at_once_table_is_used_for_cached_answers_asked_again() {
    // 1,000 cached answers of ten names from two clients, between walks of the same names:
    // the test above would pass with a table that never hit.
    let mut events = Vec::new();
    for i in 0..1000u64 {
        let c = ["10.3.0.1", "10.3.0.2"][i as usize % 2];
        let n = format!("svc-{}.default.svc.cluster.local.", i % 10);
        events.push(ev(i, c, &n, QTYPE_A, OK, 1));
        if i % 100 == 0 {
            events.extend(glibc_github(c, i));
        }
    }
    let mut fast = tracker(1000);
    let lookups = run_wire(&mut fast, &events);
    assert_eq!(lookups, run(&mut tracker(1000), &events));
    assert!(
        fast.at_once_hits() > 800, // every seventh event goes by its text
        "{} made from the table",
        fast.at_once_hits()
    );
}

#[test]
fn the_at_once_table_forgets_what_the_tracker_forgot_of_a_client() {
    // A client's namespace, learnt from one name, is the namespace of its lookups of names
    // that carry none; once the client is forgotten (more clients than the tracker keeps),
    // the same cached answer's lookup has no namespace, and an entry made before must not
    // bring the old one back.
    let c = "10.4.0.1";
    let mut events = vec![
        ev(0, c, "web.prod.svc.cluster.local.", QTYPE_A, OK, 1),
        ev(1, c, "api.example.com.", QTYPE_A, OK, 1),
        ev(2, c, "api.example.com.", QTYPE_A, OK, 1),
    ];
    for i in 0..1100u64 {
        let other = format!("10.5.{}.{}", i / 250, i % 250 + 1);
        events.push(ev(
            3 + i,
            &other,
            "web.default.svc.cluster.local.",
            QTYPE_A,
            OK,
            1,
        ));
    }
    events.push(ev(2000, c, "api.example.com.", QTYPE_A, OK, 1));
    let mut fast = tracker(1000);
    let lookups = run_wire(&mut fast, &events);
    assert_eq!(lookups, run(&mut tracker(1000), &events));
    let last = lookups.iter().rfind(|l| l.client == ip(c)).unwrap();
    assert_eq!(last.namespace, None, "{last:#?}");
    assert_eq!(lookups[2].namespace.as_deref(), Some("prod"));
    // The second `api.example.com.` was made from the table, the last one was not.
    assert_eq!(fast.at_once_hits(), 1);
}
