//! The search model on the hot path: decomposition (tracker, per event) and the shortcut
//! decision (proxy, per cache miss), for the names a pod's walk produces.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ndots::search::{SearchShape, ShortcutPolicy};

fn shape() -> SearchShape {
    SearchShape::from_parts(
        "cluster.local",
        &["*.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        &["eu-west-1.compute.internal"],
    )
}

const NAMES: &[&str] = &[
    "api.github.com.default.svc.cluster.local.",
    "api.github.com.svc.cluster.local.",
    "api.github.com.cluster.local.",
    "api.github.com.eu-west-1.compute.internal.",
    "api.github.com.",
    "web.prod.svc.cluster.local.",
    "_http._tcp.web.prod.svc.cluster.local.",
    "sts.us-east-1.amazonaws.com.default.svc.cluster.local.",
];

fn bench(c: &mut Criterion) {
    let s = shape();
    c.bench_function("decompose/walk of 8 names", |b| {
        b.iter(|| {
            let mut n = 0;
            for q in NAMES {
                n += s.decompose(black_box(q)).count();
            }
            n
        })
    });
    let p = ShortcutPolicy::from_parts(shape(), &["github.com", "amazonaws.com"], true);
    c.bench_function("shortcut/decide of 8 names", |b| {
        b.iter(|| {
            let mut n = 0;
            for q in NAMES {
                n += p.decide(black_box(q), 1).is_some() as usize;
            }
            n
        })
    });
    let e = p
        .decide("api.github.com.default.svc.cluster.local.", 1)
        .unwrap();
    c.bench_function("shortcut/autopath_candidates", |b| {
        b.iter(|| p.autopath_candidates(black_box(&e)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
