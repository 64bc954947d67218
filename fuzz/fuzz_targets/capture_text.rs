//! Any bytes as each text format (CoreDNS log, JSON lines, dnsperf): no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ndots::capture::{from_reader, Format, Options};

fuzz_target!(|data: &[u8]| {
    for f in [Format::CorednsLog, Format::Jsonl, Format::Dnsperf] {
        let opts = Options {
            format: Some(f),
            ..Options::default()
        };
        // Open fails only on a compression header that does not decode: an error, not a panic.
        let Ok(mut c) = from_reader(Box::new(std::io::Cursor::new(data.to_vec())), &opts) else {
            return;
        };
        for _ in c.by_ref() {}
    }
});
