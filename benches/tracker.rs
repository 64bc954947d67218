//! Tracker costs per event: walk grouping alone (`observe`), grouping plus aggregation (what
//! the tracker thread does), and `Tracker::record` (what the packet path pays).
//! `tracker_dead_upstream`: the cost per event with 1,000 to 100,000 walks of one client open
//! (issue 14: it must not grow with them).
//! Run: `cargo bench --bench tracker`. Figures go to benches/README.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ndots::amplify::{Aggregate, Tracker, WalkTracker};
use ndots::config::{ClusterConfig, TrackerConfig};
use ndots::event::{AnswerSource, QueryEvent, Timestamp};
use ndots::search::SearchShape;

fn cluster() -> ClusterConfig {
    ClusterConfig {
        node_search: vec!["ec2.internal".into()],
        ..ClusterConfig::kubernetes("cluster.local")
    }
}

fn cfg() -> TrackerConfig {
    TrackerConfig {
        idle: Duration::from_secs(2),
        max_open_walks: 200_000,
        namespace_series: ndots::config::DEFAULT_NAMESPACE_SERIES,
    }
}

/// A realistic mix: 500 clients, each doing glibc A+AAAA walks for an external name (5
/// candidates), an in-cluster `svc.ns` name resolving at the second candidate, and a short
/// name resolving at the first. 1 ms between queries of a walk.
fn stream() -> Vec<QueryEvent> {
    let mut v = Vec::new();
    let mut t = 1_700_000_000_000_000u64;
    let names = ["api.github.com", "web.prod", "redis"];
    for c in 0..500u32 {
        let client = std::net::IpAddr::from([10, 1, (c >> 8) as u8, c as u8]);
        let ns = format!("ns{}", c % 20);
        for name in names {
            let cands = [
                format!("{name}.{ns}.svc.cluster.local."),
                format!("{name}.svc.cluster.local."),
                format!("{name}.cluster.local."),
                format!("{name}.ec2.internal."),
                format!("{name}."),
            ];
            let answer_at = match name {
                "redis" => 0,
                "web.prod" => 1,
                _ => 4,
            };
            for (i, q) in cands.iter().enumerate().take(answer_at + 1) {
                for qtype in [1u16, 28] {
                    t += 1000;
                    v.push(QueryEvent {
                        time: Timestamp(t),
                        client,
                        client_port: Some(40000),
                        qname: q.clone(),
                        qtype,
                        rcode: Some(if i == answer_at { 0 } else { 3 }),
                        answers: Some((i == answer_at) as u16),
                        latency: Some(Duration::from_micros(300)),
                        source: Some(AnswerSource::Upstream),
                    });
                }
            }
        }
    }
    v
}

fn benches(c: &mut Criterion) {
    let events = stream();
    let shape = SearchShape::new(&cluster());
    let mut g = c.benchmark_group("tracker");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("observe", |b| {
        b.iter_batched_ref(
            || WalkTracker::new(shape.clone(), &cfg()),
            |t| {
                for e in &events {
                    t.observe(e);
                    t.drain().for_each(drop);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("observe_and_aggregate", |b| {
        b.iter_batched_ref(
            || {
                (
                    WalkTracker::new(shape.clone(), &cfg()),
                    Aggregate::new(4096),
                )
            },
            |(t, agg)| {
                for e in &events {
                    t.observe(e);
                    for l in t.drain() {
                        agg.add(&l);
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // The packet path: one non-blocking send (the event is cloned here, as the proxy builds
    // one per query).
    let tracker = Tracker::start_named(&cluster(), &cfg(), "bench");
    let mut g = c.benchmark_group("tracker_record");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("record", |b| {
        b.iter(|| {
            i = (i + 1) % events.len();
            tracker.record(events[i].clone());
        })
    });
    g.finish();
}

/// A dead upstream (issue 14): one client (dnsperf, or a node's busiest pod) with `open` walks
/// left open, every query answered SERVFAIL after a timeout. The first candidate of each
/// walk, then the second: the second pass is what is measured.
fn dead_upstream(open: u64) -> (Vec<QueryEvent>, Vec<QueryEvent>) {
    let t0 = 1_700_000_000_000_000u64;
    let client = std::net::IpAddr::from([10, 9, 9, 9]);
    let pass = |suffix: &str, t: u64| -> Vec<QueryEvent> {
        (0..open)
            .map(|i| QueryEvent {
                time: Timestamp(t + i),
                client,
                client_port: Some(40000),
                qname: format!("tenant-{i}.s3.eu-west-1.amazonaws.com.{suffix}"),
                qtype: 1,
                rcode: Some(2),
                answers: Some(0),
                latency: Some(Duration::from_secs(2)),
                source: Some(AnswerSource::Upstream),
            })
            .collect()
    };
    (
        pass("default.svc.cluster.local.", t0),
        pass("svc.cluster.local.", t0 + open),
    )
}

fn dead_upstream_benches(c: &mut Criterion) {
    let shape = SearchShape::new(&cluster());
    let mut g = c.benchmark_group("tracker_dead_upstream");
    g.sample_size(10);
    for open in [1_000u64, 10_000, 100_000] {
        let (first, second) = dead_upstream(open);
        g.throughput(Throughput::Elements(open));
        g.bench_function(format!("observe_with_{open}_open"), |b| {
            b.iter_batched_ref(
                || {
                    let mut t = WalkTracker::new(shape.clone(), &cfg());
                    first.iter().for_each(|e| t.observe(e));
                    t
                },
                |t| {
                    for e in &second {
                        t.observe(e);
                        t.drain().for_each(drop);
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(tracker, benches, dead_upstream_benches);
criterion_main!(tracker);
