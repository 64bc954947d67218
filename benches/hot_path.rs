//! Hot-path costs: question parse, cache-hit answer, and the miss path's synchronous part.
//! Run: `cargo bench --bench hot_path`. Figures go to benches/README.md.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ndots::cache::{Answer, Cache, Key};
use ndots::config::{Config, FileConfig, Overrides};
use ndots::proxy::handler::{Engine, Fast, Proto};
use ndots::wire::{self, build_query, parse_query, parse_response};

fn a_response(query: &[u8], ttl: u32) -> Vec<u8> {
    let q = parse_query(query).unwrap();
    let mut r = query[..q.question.end()].to_vec();
    r[2] |= 0x80;
    r[3] |= 0x80;
    r[6..8].copy_from_slice(&1u16.to_be_bytes());
    r[10..12].copy_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    r.extend_from_slice(&ttl.to_be_bytes());
    r.extend_from_slice(&[0, 4, 10, 0, 0, 1]);
    wire::push_opt(&mut r, false);
    r
}

fn engine() -> Engine {
    let file = FileConfig::parse("listen: [\"127.0.0.1:0\"]").unwrap();
    let o = Overrides {
        upstreams: vec![(".".into(), "127.0.0.1:9".parse().unwrap())],
        ..Default::default()
    };
    let cfg = Config::from_file_config(file, &o).unwrap();
    let cache = Arc::new(Cache::new(cfg.cache.clone()));
    Engine::new(cfg, cache, Arc::new(AtomicUsize::new(0)), None).unwrap()
}

fn benches(c: &mut Criterion) {
    let mut q = Vec::new();
    build_query(0x4242, "web.prod.svc.cluster.local.", 1, true, &mut q).unwrap();
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_query", |b| {
        b.iter(|| parse_query(std::hint::black_box(&q)).unwrap())
    });

    let e = engine();
    let v = parse_query(&q).unwrap();
    let resp = a_response(&q, 3600);
    let info = parse_response(&resp).unwrap();
    e.cache.insert(
        &Key::of_query(&q, &v),
        &Answer::from_response(&resp, &info, e.cache.config()),
        Instant::now(),
    );
    let client = "127.0.0.1:5353".parse().unwrap();
    let mut out = Vec::with_capacity(512);
    g.bench_function("cache_hit_answer", |b| {
        b.iter(|| {
            match e.handle_fast(
                std::hint::black_box(&q),
                Proto::Udp,
                client,
                Instant::now(),
                &mut out,
            ) {
                Fast::Answered => {}
                _ => panic!("expected a hit"),
            }
        })
    });
    let mut miss = Vec::new();
    build_query(0x4243, "nothing-cached.example.com.", 1, true, &mut miss).unwrap();
    g.bench_function("miss_path_sync", |b| {
        b.iter(|| {
            match e.handle_fast(
                std::hint::black_box(&miss),
                Proto::Udp,
                client,
                Instant::now(),
                &mut out,
            ) {
                Fast::Resolve { .. } => {}
                _ => panic!("expected a miss"),
            }
        })
    });
    g.finish();
}

criterion_group!(hot, benches);
criterion_main!(hot);
