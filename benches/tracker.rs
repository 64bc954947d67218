//! Tracker costs per event: walk grouping alone (`observe`), grouping plus aggregation (what
//! the tracker thread does), and `Tracker::record` (what the packet path pays).
//! Run: `cargo bench --bench tracker`. Figures go to benches/README.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ndots::amplify::{Aggregate, Tracker, WalkTracker};
use ndots::config::{ClusterConfig, TrackerConfig};
use ndots::event::{AnswerSource, QueryEvent, Timestamp};
use ndots::search::SearchShape;

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

criterion_group!(tracker, benches);
criterion_main!(tracker);
