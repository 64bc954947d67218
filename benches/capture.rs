//! Capture reader throughput: a synthetic pcap of pods doing ndots:5 walks (A+AAAA per search
//! candidate, every query answered), read from memory and paired into events.
//! Target (issue 5): at least 1,000,000 queries per second on one core. The end-to-end figure
//! against tshark on a multi-million-query file is in benches/README.md.

use std::io::Cursor;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ndots::capture::{self, synth, Format, Options};

const QUERIES: u64 = 200_000;

fn synth_bytes(format: synth::SynthFormat) -> Vec<u8> {
    let cfg = synth::SynthConfig {
        format,
        queries: QUERIES,
        seed: 7,
        ..synth::SynthConfig::default()
    };
    let mut v = Vec::new();
    synth::write(&cfg, &mut v).expect("synth");
    v
}

fn read_all(bytes: Vec<u8>, format: Format) -> u64 {
    let opts = Options {
        format: Some(format),
        ..Options::default()
    };
    let mut c = capture::from_reader(Box::new(Cursor::new(bytes)), &opts).expect("open");
    let n = c.by_ref().filter(|r| r.is_ok()).count() as u64;
    assert_eq!(n, QUERIES);
    n
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("capture");
    g.throughput(Throughput::Elements(QUERIES));
    g.sample_size(10);
    let pcap = synth_bytes(synth::SynthFormat::Pcap);
    g.bench_function("pcap_read_pair", |b| {
        b.iter_batched(
            || pcap.clone(),
            |bytes| read_all(bytes, Format::Pcap),
            BatchSize::LargeInput,
        )
    });
    let log = synth_bytes(synth::SynthFormat::CorednsLog);
    g.bench_function("coredns_log_read", |b| {
        b.iter_batched(
            || log.clone(),
            |bytes| read_all(bytes, Format::CorednsLog),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
